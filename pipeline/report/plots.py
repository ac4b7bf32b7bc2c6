"""The report's plots: per-class accuracy bars with intervals, the confusion matrix."""

from __future__ import annotations

from typing import Any

import numpy as np
import pandas as pd
from sklearn.metrics import confusion_matrix

from ..util.figures import pyplot

ANNOTATE_MAX = 15  # confusion-matrix cells get counts up to this many classes


def plot_accuracy(table: pd.DataFrame, top: int) -> Any:
    """Horizontal bars of per-class accuracy, worst on top; only ``top`` bars when more."""
    plt = pyplot()
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


def plot_confusion(y: np.ndarray, pred: np.ndarray, classes: list[str], top: int) -> Any:
    """Row-normalised confusion matrix; with more than ``top`` classes, the most confused ones."""
    plt = pyplot()
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
