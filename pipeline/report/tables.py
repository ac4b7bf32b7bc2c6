"""The report's tables: per-class metrics with intervals, most-confused pairs."""

from __future__ import annotations

import numpy as np
import pandas as pd
from sklearn.metrics import confusion_matrix

from . import analyze

N_PAIRS = 50  # rows kept in confused_pairs.csv
N_PRINT = 10  # worst classes printed


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


def print_worst(table: pd.DataFrame) -> None:
    worst = table.head(N_PRINT)
    w = max(5, *(len(c) for c in worst["class"]))
    print(f"worst {len(worst)} classes:")
    print(f"  {'class':<{w}}  support  accuracy  confused with")
    for r in worst.itertuples(index=False):
        other = f"{r.confused_with} ({r.confused_count})" if r.confused_count else "-"
        print(f"  {r[0]:<{w}}  {r.support:>7}  {r.accuracy:>8.4f}  {other}")
