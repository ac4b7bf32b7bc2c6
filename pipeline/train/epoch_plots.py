"""Per-fold training curves: loss, accuracy and learning rate against epoch."""

from __future__ import annotations

from pathlib import Path

import pandas as pd

from .. import artifacts
from ..util.figures import pyplot


def plot_curves(metrics: pd.DataFrame, path: Path, title: str) -> Path:
    """Three panels (loss, accuracy, learning rate) from a fold's ``metrics.csv`` rows."""
    plt = pyplot()
    fig, axes = plt.subplots(1, 3, figsize=(13, 3.6))
    ep = metrics["epoch"]
    for ax, key, label in ((axes[0], "loss", "loss"), (axes[1], "acc", "accuracy")):
        ax.plot(ep, metrics[f"train_{key}"], "o-", label="train")
        ax.plot(ep, metrics[f"val_{key}"], "o-", label="val (held-out fold)")
        ax.set_xlabel("epoch")
        ax.set_ylabel(label)
        ax.grid(alpha=0.3)
        ax.legend()
    best = metrics["val_acc"].idxmax()
    axes[1].axvline(ep[best], color="grey", ls="--", lw=1)
    axes[1].set_title(f"best val acc {metrics['val_acc'][best]:.4f} @ epoch {ep[best]}")
    axes[2].plot(ep, metrics["lr"], "o-", color="tab:green")
    axes[2].set_xlabel("epoch")
    axes[2].set_ylabel("learning rate (end of epoch)")
    axes[2].grid(alpha=0.3)
    fig.suptitle(title)
    out = artifacts.savefig(path, fig)
    plt.close(fig)
    return out
