"""The report of an ensemble's OOF predictions: CSVs, plots, contact sheets and one HTML page.

Writes into ``out_dir``: ``per_class.csv`` (metrics with bootstrap 95 % intervals, each member's
accuracy, the ensemble's gain), ``confused_pairs.csv``, ``worst_mistakes.csv``,
``label_issues.csv`` (cleanlab), ``per_class_accuracy.png``, ``confusion_matrix.png``,
``worst_mistakes.png``, ``label_issues.png`` and ``report.html`` (self-contained).
``report_stage`` rebuilds them from ``oof_ensemble.npz``.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402
from sklearn.metrics import confusion_matrix  # noqa: E402

from . import analyze, artifacts  # noqa: E402
from .competition import Competition  # noqa: E402
from .errors import ArtifactError  # noqa: E402
from .html_report import report_page  # noqa: E402
from .sheets import contact_sheet  # noqa: E402

N_PAIRS = 50  # rows kept in confused_pairs.csv
N_PRINT = 10  # worst classes printed
ANNOTATE_MAX = 15  # confusion-matrix cells get counts up to this many classes


def per_class_table(
    y: np.ndarray, pred: np.ndarray, classes: list[str], member_preds: dict[str, np.ndarray]
) -> pd.DataFrame:
    """One row per class (``y``, ``pred``: ``(N,)`` indices), worst accuracy first."""
    c = len(classes)
    cm = confusion_matrix(y, pred, labels=np.arange(c))
    off = cm - np.diag(np.diag(cm))
    n_off, top_off = off.max(axis=1), np.array(classes)[off.argmax(axis=1)]
    df = analyze.per_class_metrics(y, pred, c)
    df.insert(0, "class", classes)
    df["confused_with"] = np.where(n_off > 0, top_off, "")
    df["confused_count"] = n_off
    df = pd.concat([df, analyze.member_table(y, pred, member_preds, c)], axis=1)
    return df.sort_values(["accuracy", "class"], kind="stable").reset_index(drop=True)


def confused_pairs(y: np.ndarray, pred: np.ndarray, classes: list[str]) -> pd.DataFrame:
    """Off-diagonal ``(true, predicted)`` pairs, most frequent first, at most ``N_PAIRS``."""
    cm = confusion_matrix(y, pred, labels=np.arange(len(classes)))
    t, p = np.nonzero(cm - np.diag(np.diag(cm)))
    names = np.array(classes, dtype=object)
    df = pd.DataFrame(
        {
            "true": names[t],
            "predicted": names[p],
            "count": cm[t, p],
            "rate": cm[t, p] / cm.sum(axis=1)[t],
        }
    )
    return (
        df.sort_values(["count", "rate", "true", "predicted"], ascending=[False, False, True, True])
        .head(N_PAIRS)
        .reset_index(drop=True)
    )


def plot_accuracy(table: pd.DataFrame, top: int) -> plt.Figure:
    """Horizontal bars of per-class accuracy, worst on top; only ``top`` bars when more."""
    shown = table.head(top)
    n = len(shown)
    fig, ax = plt.subplots(figsize=(8, 1.2 + 0.28 * n))
    pos = np.arange(n)
    acc = shown["accuracy"].fillna(0).to_numpy()
    err = None
    if "accuracy_lo" in shown:  # bootstrap 95 % interval as whiskers
        err = [acc - shown["accuracy_lo"].fillna(0), shown["accuracy_hi"].fillna(0) - acc]
    ax.barh(pos, acc, color="tab:blue", xerr=err, error_kw={"lw": 0.8, "capsize": 2})
    ax.set_yticks(pos, shown["class"], fontsize=8 if n > 20 else 10)
    ax.invert_yaxis()
    ax.set_xlim(0, 1.25)
    ax.set_xlabel("OOF accuracy")
    for i, (a, s) in enumerate(zip(shown["accuracy"], shown["support"], strict=True)):
        ax.text(1.02, i, f"{a:.2f} (n={s})", va="center", fontsize=7)
    what = f"the {n} worst of {len(table)} classes" if n < len(table) else f"all {n} classes"
    ax.set_title(f"Per-class OOF accuracy with bootstrap 95 % intervals, {what}")
    fig.tight_layout()
    return fig


def plot_confusion(y: np.ndarray, pred: np.ndarray, classes: list[str], top: int) -> plt.Figure:
    """Row-normalised confusion matrix; with more than ``top`` classes, the most confused ones."""
    c = len(classes)
    cm = confusion_matrix(y, pred, labels=np.arange(c))
    rows = np.maximum(cm.sum(axis=1, keepdims=True), 1)
    keep = np.arange(c)
    title = f"Row-normalised OOF confusion matrix ({c} classes)"
    if c > top:
        off = cm - np.diag(np.diag(cm))
        involved = off.sum(axis=0) + off.sum(axis=1)
        keep = np.sort(np.argsort(-involved, kind="stable")[:top])
        title = f"Row-normalised OOF confusion matrix: the {top} of {c} classes in most confusions"
    sub, norm = cm[np.ix_(keep, keep)], (cm / rows)[np.ix_(keep, keep)]
    k = len(keep)
    side = max(5.0, 0.32 * k + 2.5)
    fig, ax = plt.subplots(figsize=(side + 1.2, side))
    im = ax.imshow(norm, cmap="Blues", vmin=0, vmax=1)
    names = [classes[i] for i in keep]
    fs = 8 if k > 20 else 10
    tilt = {"rotation": 90} if k > 10 else {"rotation": 45, "ha": "right"}
    ax.set_xticks(np.arange(k), names, fontsize=fs, **tilt)
    ax.set_yticks(np.arange(k), names, fontsize=fs)
    ax.set_xlabel("predicted")
    ax.set_ylabel("true")
    if k <= ANNOTATE_MAX:
        for i, j in zip(*np.nonzero(sub), strict=True):
            color = "white" if norm[i, j] > 0.5 else "black"
            ax.text(j, i, str(sub[i, j]), ha="center", va="center", fontsize=8, color=color)
    fig.colorbar(im, ax=ax, fraction=0.046, pad=0.04, label="fraction of true class")
    ax.set_title(title, fontsize=10)
    fig.tight_layout()
    return fig


def _print_worst(table: pd.DataFrame) -> None:
    worst = table.head(N_PRINT)
    w = max(5, *(len(c) for c in worst["class"]))
    print(f"worst {len(worst)} classes:")
    print(f"  {'class':<{w}}  support  accuracy  confused with")
    for r in worst.itertuples(index=False):
        other = f"{r.confused_with} ({r.confused_count})" if r.confused_count else "-"
        print(f"  {r[0]:<{w}}  {r.support:>7}  {r.accuracy:>8.4f}  {other}")


def print_members(members: list[dict]) -> None:
    """Print each member's per-view and TTA OOF accuracy and the view it uses."""
    width = max(len(m["run"]) for m in members)
    print("members (OOF accuracy per TTA view):")
    for m in members:
        views = "  ".join(f"{v} {a:.4f}" for v, a in m["views"].items())
        used = f"  -> uses {m['view']}" if "view" in m else ""
        print(f"  {m['run']:<{width}}  {views}  tta {m['tta_accuracy']:.4f}{used}")


def _preds(member_preds: dict[str, np.ndarray] | None) -> dict[str, np.ndarray]:
    """run -> ``(N,)`` argmax, from ``(N,)`` predictions or ``(N, C)`` probs/logits."""
    return {
        r: (p.argmax(axis=1) if np.ndim(p) == 2 else np.asarray(p))
        for r, p in (member_preds or {}).items()
    }


def _write_sheets(
    out_dir: Path, mistakes: pd.DataFrame, issues: pd.DataFrame, paths: dict[str, Path], n: int
) -> None:
    """``worst_mistakes.png`` and ``label_issues.png``: the first ``n`` rows of each table."""
    sheets = (
        ("worst_mistakes.png", mistakes, "Most confident wrong OOF predictions",
         lambda r: f"{r['id']}\ngiven {r['given_label']}\npred {r['predicted']} {r['confidence']:.2f}"),
        ("label_issues.png", issues, "Label-issue candidates (cleanlab), most suspicious first",
         lambda r: f"{r['id']}\ngiven {r['given_label']} {r['self_confidence']:.2f}"
         f"\nsuggest {r['suggested_label']}"),
    )  # fmt: skip
    for fname, rows, title, caption in sheets:
        fig = contact_sheet(
            rows.head(n), paths, caption, f"{title} ({min(n, len(rows))} of {len(rows)})"
        )
        artifacts.savefig(out_dir / fname, fig)
        plt.close(fig)


def write_report(
    out_dir: Path,
    y: np.ndarray,
    probs: np.ndarray,
    classes: list[str],
    member_preds: dict[str, np.ndarray] | None = None,
    ids: np.ndarray | None = None,
    paths: dict[str, Path] | None = None,
    leaderboard: pd.DataFrame | None = None,
    top: int = 30,
    n_sheet: int = 40,
) -> dict[str, Any]:
    """Write the report for ``y (N,)`` class indices and ``probs (N, C)``; return a summary.

    ``member_preds`` maps run -> ``(N,)`` predictions (or ``(N, C)`` probs/logits) and adds each
    member's per-class accuracy, the best member and the ensemble's gain. ``ids (N,)`` name the
    rows and ``paths`` maps id -> image file for the contact sheets."""
    out_dir = Path(out_dir)
    y, probs = np.asarray(y), np.asarray(probs, dtype=np.float64)
    pred = probs.argmax(axis=1)
    ids = np.arange(len(y)).astype(str) if ids is None else np.asarray(ids).astype(str)
    table = per_class_table(y, pred, classes, _preds(member_preds))
    pairs = confused_pairs(y, pred, classes)
    mistakes = analyze.worst_mistakes(ids, y, probs, classes, 200)
    issues = analyze.label_issues(ids, y, probs, classes)
    for fname, df in (("per_class.csv", table), ("confused_pairs.csv", pairs),
                      ("worst_mistakes.csv", mistakes), ("label_issues.csv", issues)):  # fmt: skip
        artifacts.write_csv(out_dir / fname, df.drop(columns="row", errors="ignore"))
    for fname, fig in (
        ("per_class_accuracy.png", plot_accuracy(table, top)),
        ("confusion_matrix.png", plot_confusion(y, pred, classes, top)),
    ):
        artifacts.savefig(out_dir / fname, fig)
        plt.close(fig)
    _write_sheets(out_dir, mistakes, issues, paths or {}, n_sheet)
    summary = {
        "accuracy": float((pred == y).mean()),
        "n": len(y),
        "n_classes": len(classes),
        "n_label_issues": len(issues),
        "worst_classes": table.head(N_PRINT)[["class", "support", "accuracy", "confused_with"]]
        .astype({"support": int, "accuracy": float})
        .to_dict(orient="records"),
    }
    page = report_page(out_dir, summary, table, pairs, mistakes, issues, leaderboard)
    artifacts.atomic_write_bytes(out_dir / "report.html", page.encode("utf-8"))
    _print_worst(table)
    print(f"{len(issues)} label-issue candidates -> {out_dir / 'label_issues.csv'}; report: "
          f"{out_dir / 'report.html'}")  # fmt: skip
    return summary


def report_stage(comp: Competition, name: str = "ensemble", root: Path = Path(".")) -> dict:
    """Rebuild ``submissions/<comp>/<name>/report/`` from ``oof_ensemble.npz`` and the folds."""
    root = Path(root)
    out = root / "submissions" / comp.name / name
    path, rerun = out / "oof_ensemble.npz", f"make ensemble COMP={comp.root}"
    data = artifacts.read_npz(path, {"ids", "classes", "probs"}, rerun)
    folds = artifacts.read_folds(artifacts.folds_path(comp.name, root))
    classes = [str(c) for c in data["classes"]]
    same_ids = np.array_equal(data["ids"].astype(str), folds["id"].to_numpy().astype(str))
    if not same_ids or not set(folds["label"]) <= set(classes):
        raise ArtifactError(
            f"{path} has {len(data['ids'])} ids / {len(classes)} classes that do not match "
            f"{artifacts.folds_path(comp.name, root)}; re-run: {rerun}"
        )
    y = pd.Index(classes).get_indexer(folds["label"])
    members = None
    if "member_preds" in data:
        members = dict(zip(data["members"].astype(str), data["member_preds"], strict=True))
    board = None
    if (out / "leaderboard.csv").is_file():
        board = pd.read_csv(out / "leaderboard.csv")
    return write_report(
        out / "report", y, data["probs"], classes, members, folds["id"].to_numpy(),
        image_paths(comp), board,
    )  # fmt: skip


def image_paths(comp: Competition) -> dict[str, Path]:
    """Train id -> image file, for the contact sheets."""
    return {
        str(i): comp.root / p for i, p in zip(comp.train["id"], comp.train["path"], strict=True)
    }
