"""The report of a multi-label ensemble: per-label precision, recall, F1 and ROC AUC."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from sklearn.metrics import roc_auc_score

from .. import artifacts
from ..util.figures import pyplot
from .html import build_page, image_html, table_html


def per_label_table(y: np.ndarray, probs: np.ndarray, classes: list[str]) -> pd.DataFrame:
    """One row per label of ``y (N, C)`` 0/1 against ``probs (N, C)`` (cut at 1/2), worst F1
    first: support, predicted, precision, recall, F1 and the label's ROC AUC."""
    pred = probs >= 0.5
    tp = (pred & (y > 0)).sum(axis=0)
    support, predicted = y.sum(axis=0), pred.sum(axis=0)
    with np.errstate(divide="ignore", invalid="ignore"):
        precision = np.where(predicted > 0, tp / predicted, 0.0)
        recall = np.where(support > 0, tp / support, np.nan)
        f1 = np.where(precision + recall > 0, 2 * precision * recall / (precision + recall), 0.0)
    auc = [
        roc_auc_score(y[:, j], probs[:, j]) if 0 < support[j] < len(y) else np.nan
        for j in range(len(classes))
    ]
    df = pd.DataFrame(
        {
            "label": classes,
            "support": support,
            "predicted": predicted,
            "precision": precision,
            "recall": recall,
            "f1": f1,
            "roc_auc": auc,
        }
    )
    return df.sort_values(["f1", "label"], kind="stable").reset_index(drop=True)


def write_label_report(
    out_dir: Path,
    y: np.ndarray,
    probs: np.ndarray,
    classes: list[str],
    summary: dict[str, Any],
    leaderboard: pd.DataFrame | None,
) -> dict[str, Any]:
    """``per_label.csv``, ``per_label_f1.png`` and ``report.html`` into ``out_dir``."""
    table = per_label_table(y, probs, classes)
    artifacts.write_csv(out_dir / "per_label.csv", table)
    _plot_f1(table, out_dir / "per_label_f1.png")
    kpis = {
        f"OOF {summary['metric']}": f"{summary['score']:.4f}",
        "rows": str(len(y)),
        "labels": str(len(classes)),
        "mean labels per row": f"{y.sum(1).mean():.2f}",
    }
    note = (
        "precision, recall and F1 with each label cut at 1/2 (the submission's threshold may "
        "differ: see the leaderboard's +threshold rows); ROC AUC per label."
    )
    body = image_html(out_dir / "per_label_f1.png", "per-label F1") + table_html(table)
    sections = [("Per-label", note, body)]
    if leaderboard is not None:
        nested = "nested = fitted on K-1 folds, scored on the held-out fold."
        sections.insert(0, ("Leaderboard", nested, table_html(leaderboard, 100)))
    page = build_page("Ensemble OOF report (multi-label)", kpis, sections)
    artifacts.atomic_write_bytes(out_dir / "report.html", page.encode("utf-8"))
    worst = table.head(5)
    print(
        "worst labels by OOF F1: " + ", ".join(f"{r.label} {r.f1:.3f}" for r in worst.itertuples())
    )
    print(f"report: {out_dir / 'report.html'}")
    return {**summary, "worst_labels": worst.to_dict(orient="records")}


def _plot_f1(table: pd.DataFrame, path: Path) -> None:
    """Horizontal bars of per-label F1, worst on top."""
    plt = pyplot()
    fig, ax = plt.subplots(figsize=(8, 1.2 + 0.28 * len(table)))
    ax.barh(np.arange(len(table)), table["f1"], color="tab:blue")
    ax.set_yticks(np.arange(len(table)), table["label"])
    ax.invert_yaxis()
    ax.set_xlim(0, 1)
    ax.set_xlabel("OOF F1 at 1/2")
    ax.set_title("Per-label OOF F1, worst first")
    fig.tight_layout()
    artifacts.savefig(path, fig)
    plt.close(fig)
