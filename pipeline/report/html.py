"""One self-contained HTML page for a report: tables inline, PNGs embedded as data URIs."""

from __future__ import annotations

import html
from pathlib import Path

import pandas as pd

from .sheets import png_data_uri

STYLE = """
body { font-family: system-ui, sans-serif; margin: 2em auto; max-width: 1200px; color: #222; }
h1 { font-size: 1.5em; } h2 { font-size: 1.2em; margin-top: 2em; border-bottom: 1px solid #ccc; }
table { border-collapse: collapse; font-size: 0.85em; margin: 0.5em 0; }
th, td { border: 1px solid #ddd; padding: 3px 7px; text-align: right; white-space: nowrap; }
th { background: #f3f3f3; } td:first-child, th:first-child { text-align: left; }
img { max-width: 100%; border: 1px solid #eee; } .note { color: #555; font-size: 0.9em; }
.kpi { display: inline-block; margin-right: 2em; } .kpi b { font-size: 1.4em; display: block; }
"""


def table_html(df: pd.DataFrame, max_rows: int = 60, digits: int = 4) -> str:
    """A DataFrame as an HTML table (first ``max_rows`` rows, floats rounded)."""
    shown = df.head(max_rows)
    out = shown.to_html(index=False, float_format=lambda x: f"{x:.{digits}f}", na_rep="-")
    if len(df) > max_rows:
        out += f'<p class="note">first {max_rows} of {len(df)} rows; all in the CSV.</p>'
    return out


def _with_ci(table: pd.DataFrame) -> pd.DataFrame:
    """Per-class table for reading: ``0.9353 [0.898, 0.977]`` cells instead of three columns."""
    out = table[["class", "support", "correct"]].copy()
    for m in ("accuracy", "precision", "f1"):
        out[f"{m} [95 % CI]"] = [
            f"{v:.4f} [{lo:.3f}, {hi:.3f}]" if pd.notna(v) else "-"
            for v, lo, hi in zip(table[m], table[f"{m}_lo"], table[f"{m}_hi"], strict=True)
        ]
    rest = [c for c in table.columns if c.startswith(("confused", "best", "gain"))]
    return pd.concat([out, table[rest]], axis=1)


def image_html(path: Path, alt: str) -> str:
    return f'<p><img src="{png_data_uri(path)}" alt="{html.escape(alt)}"></p>'


def build_page(title: str, kpis: dict[str, str], sections: list[tuple[str, str, str]]) -> str:
    """``sections``: (heading, explanatory note, HTML body); ``kpis``: label -> value."""
    parts = [
        "<!DOCTYPE html>",
        '<html lang="en"><head><meta charset="utf-8">',
        f"<title>{html.escape(title)}</title><style>{STYLE}</style></head><body>",
        f"<h1>{html.escape(title)}</h1>",
        "<div>"
        + "".join(
            f'<span class="kpi">{html.escape(k)}<b>{html.escape(v)}</b></span>'
            for k, v in kpis.items()
        )
        + "</div>",
    ]
    for heading, note, body in sections:
        parts.append(f"<h2>{html.escape(heading)}</h2>")
        if note:
            parts.append(f'<p class="note">{html.escape(note)}</p>')
        parts.append(body)
    parts.append("</body></html>")
    return "\n".join(parts)


def _hints(table: pd.DataFrame, pairs: pd.DataFrame, issues: pd.DataFrame, n: int) -> str:
    """A few data-driven suggestions of what to try next."""
    tips = []
    errors = int((table["support"] - table["correct"]).sum())
    if errors and len(pairs):
        top = pairs.head(10)
        share = top["count"].sum() / errors
        tips.append(
            f"The 10 most-confused pairs hold {share:.0%} of all {errors} errors "
            f"(worst: {top['true'].iloc[0]} → {top['predicted'].iloc[0]}, "
            f"{top['count'].iloc[0]} times): look at them in the contact sheet; higher resolution "
            "or a backbone that wins those classes helps more than a bigger ensemble."
        )
    if "gain_vs_best_member" in table:
        worse = int((table["gain_vs_best_member"] < 0).sum())
        tips.append(
            f"On {worse} of {len(table)} classes the ensemble is below its best member for that "
            "class; per-class stacking (method stack) can use that."
        )
    if n and len(issues) / n > 0.2:
        tips.append(
            f"cleanlab flags {len(issues) / n:.0%} of the rows: with models this weak that says "
            "more about the models than the labels; train stronger members before relabelling."
        )
    elif n and len(issues) / n > 0.01:
        tips.append(
            f"cleanlab flags {len(issues)} rows ({len(issues) / n:.1%}) as possible label errors: "
            "review label_issues.csv and put confirmed fixes in input/<comp>/relabel.csv."
        )
    return "<ul>" + "".join(f"<li>{html.escape(t)}</li>" for t in tips) + "</ul>"


def label_shift_section(rec: dict | None) -> list[tuple[str, str, str]]:
    """The label-shift section from ``ensemble.json``'s ``label_shift``: the decision and why,
    the top movers with their intervals, and PRIOR=auto's check figures."""
    if not rec or "test_prior" not in rec:
        return []
    movers = pd.DataFrame(rec.get("top_movers", []))
    check = rec.get("check", {})
    figures = {k: v for k, v in check.items() if isinstance(v, (int, float, str, bool))}
    body = (
        f"<p><b>{'applied' if rec['applied'] else 'not applied'}</b> (PRIOR={rec['prior']}, "
        f"{html.escape(rec['estimator'])} on calibrated posteriors, T = {rec['temperature']:.2f}, "
        f"total variation from the train priors {rec['total_variation']:.3f}): "
        f"{html.escape(rec['why'])}</p>"
        + (table_html(movers) if len(movers) else "")
        + (table_html(pd.DataFrame([figures])) if figures else "")
    )
    note = (
        "test class priors estimated from the unlabelled test posteriors; lo/hi: bootstrap 95 % "
        "interval; the check resamples held-out OOF rows to the test's size, shifted and not."
    )
    return [("Label shift", note, body)]


def report_page(
    out_dir: Path,
    summary: dict,
    table: pd.DataFrame,
    pairs: pd.DataFrame,
    mistakes: pd.DataFrame,
    issues: pd.DataFrame,
    board: pd.DataFrame | None,
    label_shift: dict | None = None,
) -> str:
    """The report's HTML: every table and the PNGs already written into ``out_dir``."""
    mistakes, issues = (df.drop(columns="row", errors="ignore") for df in (mistakes, issues))
    kpis = {
        **(
            {f"OOF {summary['metric']}": f"{summary['score']:.4f}"}
            if summary.get("metric", "accuracy") != "accuracy"
            else {}
        ),
        "OOF accuracy": f"{summary['accuracy']:.4f}",
        "rows": str(summary["n"]),
        "classes": str(summary["n_classes"]),
        "label-issue candidates": str(summary["n_label_issues"]),
    }
    sections = [("What to try next", "", _hints(table, pairs, issues, summary["n"]))]
    if board is not None:
        best = board[board["kind"] == "method"].iloc[0]
        score = best.get("nested_score", best["nested_accuracy"])
        kpis["best nested"] = f"{best['name']} {score:.4f}"
        sections.append(
            (
                "Leaderboard",
                "nested = fitted on K-1 folds' OOF rows, scored on the "
                "held-out fold; OOF = fitted and scored on all rows (optimistic).",
                table_html(board, 100),
            )
        )
    sections += label_shift_section(label_shift)
    sections += [
        (
            "Per-class accuracy",
            "worst first; accuracy is recall; whiskers and brackets are "
            "bootstrap 95 % intervals (400 Poisson replicates; all columns in per_class.csv).",
            image_html(out_dir / "per_class_accuracy.png", "per-class accuracy")
            + table_html(_with_ci(table)),
        ),
        (
            "Confusions",
            "row-normalised; with many classes only the most-confused ones are drawn.",
            image_html(out_dir / "confusion_matrix.png", "confusion matrix")
            + table_html(pairs, 30),
        ),
        (
            "Members per class",
            "each member's OOF accuracy per class, worst classes first.",
            table_html(table[["class", *[c for c in table.columns if c.startswith("acc_")]]], 40),
        ),
        (
            "Worst mistakes",
            "the most confident wrong OOF predictions.",
            image_html(out_dir / "worst_mistakes.png", "worst mistakes") + table_html(mistakes, 40),
        ),
        (
            "Label-issue candidates",
            "cleanlab find_label_issues on the ensemble's OOF probabilities"
            "; copy confirmed rows to input/<comp>/relabel.csv as id,new_label (or drop) and re-run "
            "make folds.",
            image_html(out_dir / "label_issues.png", "label issues") + table_html(issues, 40),
        ),
    ]
    return build_page("Ensemble OOF report", kpis, sections)
