"""Error analysis of OOF predictions: per-class table, confused pairs, and two plots.

Writes into ``out_dir``: ``per_class.csv``, ``confused_pairs.csv``, ``per_class_accuracy.png``
and ``confusion_matrix.png``. ``report_stage`` rebuilds them from ``oof_ensemble.npz``.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402
from sklearn.metrics import confusion_matrix, precision_recall_fscore_support  # noqa: E402

from . import artifacts  # noqa: E402
from .competition import Competition  # noqa: E402
from .errors import ArtifactError  # noqa: E402

N_PAIRS = 50  # rows kept in confused_pairs.csv
N_PRINT = 10  # worst classes printed
ANNOTATE_MAX = 15  # confusion-matrix cells get counts up to this many classes


def per_class_table(
    y: np.ndarray, pred: np.ndarray, classes: list[str], member_preds: dict[str, np.ndarray]
) -> pd.DataFrame:
    """One row per class (``y``, ``pred``: ``(N,)`` indices), worst accuracy first."""
    c = len(classes)
    cm = confusion_matrix(y, pred, labels=np.arange(c))
    support = cm.sum(axis=1)
    correct = np.diag(cm)
    off = cm - np.diag(correct)
    n_off, top_off = off.max(axis=1), np.array(classes)[off.argmax(axis=1)]
    prec, rec, f1, _ = precision_recall_fscore_support(
        y, pred, labels=np.arange(c), zero_division=0
    )
    df = pd.DataFrame(
        {
            "class": classes,
            "support": support,
            "correct": correct,
            "accuracy": np.divide(correct, support, out=np.full(c, np.nan), where=support > 0),
            "precision": prec,
            "recall": rec,
            "f1": f1,
            "confused_with": np.where(n_off > 0, top_off, ""),
            "confused_count": n_off,
        }
    )
    if member_preds:
        acc = {}
        for run, mp in member_preds.items():
            hits = np.bincount(y, weights=(mp == y).astype(float), minlength=c)
            acc[run] = np.divide(hits, support, out=np.full(c, np.nan), where=support > 0)
            df[f"acc_{run}"] = acc[run]
        table = np.nan_to_num(np.stack(list(acc.values()), axis=1), nan=-1.0)
        df["best_member"] = np.array(list(acc))[table.argmax(axis=1)]  # first run wins ties
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
    ax.barh(pos, shown["accuracy"].fillna(0), color="tab:blue")
    ax.set_yticks(pos, shown["class"], fontsize=8 if n > 20 else 10)
    ax.invert_yaxis()
    ax.set_xlim(0, 1.12)
    ax.set_xlabel("OOF accuracy")
    for i, (a, s) in enumerate(zip(shown["accuracy"], shown["support"], strict=True)):
        ax.text(min(np.nan_to_num(a), 1.0) + 0.01, i, f"{a:.2f} (n={s})", va="center", fontsize=7)
    what = f"the {n} worst of {len(table)} classes" if n < len(table) else f"all {n} classes"
    ax.set_title(f"Per-class OOF accuracy, {what}")
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


def write_report(
    out_dir: Path,
    y: np.ndarray,
    probs: np.ndarray,
    classes: list[str],
    member_probs: dict[str, np.ndarray] | None = None,
    top: int = 30,
) -> dict[str, Any]:
    """Write the report for ``y (N,)`` class indices and ``probs (N, C)``; return a summary.

    ``member_probs`` maps run name to that member's ``(N, C)`` probs (or logits: only the argmax
    is used) and adds an ``acc_<run>`` column per member and ``best_member`` to ``per_class.csv``.
    """
    out_dir = Path(out_dir)
    y, pred = np.asarray(y), np.asarray(probs).argmax(axis=1)
    members = {run: np.asarray(p).argmax(axis=1) for run, p in (member_probs or {}).items()}
    table = per_class_table(y, pred, classes, members)
    artifacts.write_csv(out_dir / "per_class.csv", table)
    artifacts.write_csv(out_dir / "confused_pairs.csv", confused_pairs(y, pred, classes))
    for fname, fig in (
        ("per_class_accuracy.png", plot_accuracy(table, top)),
        ("confusion_matrix.png", plot_confusion(y, pred, classes, top)),
    ):
        artifacts.savefig(out_dir / fname, fig)
        plt.close(fig)
    _print_worst(table)
    worst = table.head(N_PRINT)
    return {
        "accuracy": float((pred == y).mean()),
        "n": len(y),
        "n_classes": len(classes),
        "worst_classes": [
            {
                "class": r["class"],
                "support": int(r["support"]),
                "accuracy": float(r["accuracy"]),
                "confused_with": r["confused_with"],
            }
            for _, r in worst.iterrows()
        ],
    }


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
    if "member_preds" in data:  # one-hot rows: write_report only uses each member's argmax
        eye = np.eye(len(classes), dtype=np.float32)
        preds = zip(data["members"], data["member_preds"], strict=True)
        members = {str(run): eye[p] for run, p in preds}
    return write_report(out / "report", y, data["probs"], classes, members)
