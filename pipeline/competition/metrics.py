"""Kaggle's image-classification metrics, computed exactly as Kaggle's graders compute them.

Every metric takes the truth and the prediction in one of two shapes:

- single-label tasks (multi-class, binary, ordinal): ``y (N,)`` class indices and ``probs (N, C)``
  (rows of probabilities; binary tasks have C = 2, the positive class at index 1);
- multi-label tasks: ``y (N, C)`` 0/1 indicators and ``probs (N, C)`` independent probabilities.

``METRICS`` names each one with its traits (whether higher is better, the formats it scores, how
the ensemble treats it): every list of metrics elsewhere is derived from it.
Torch-free: the ensemble, report and submit stages all score with these.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import NamedTuple

import numpy as np

EPS = 1e-15  # Kaggle's log-loss clip


def accuracy(y: np.ndarray, probs: np.ndarray) -> float:
    """Share of rows whose most probable class is the true one."""
    return float((np.asarray(probs).argmax(axis=1) == np.asarray(y)).mean())


def log_loss(y: np.ndarray, probs: np.ndarray) -> float:
    """Multi-class log loss as Kaggle computes it: clip to [1e-15, 1 - 1e-15], renormalise each
    row to sum 1, then the mean of -log p(true class). scikit-learn's ``log_loss`` (1.9) clips at
    float64's epsilon and does not renormalise, so a confident miss costs it 36.0 where Kaggle
    charges 34.5: they differ on exactly the rows that decide a log-loss leaderboard."""
    p = np.clip(np.asarray(probs, dtype=np.float64), EPS, 1 - EPS)
    p /= p.sum(axis=1, keepdims=True)
    return float(-np.log(p[np.arange(len(p)), np.asarray(y)]).mean())


def binary_log_loss(y: np.ndarray, p1: np.ndarray) -> float:
    """Binary log loss of ``p1 (N,)``, the probability of class 1, clipped like Kaggle's."""
    p = np.clip(np.asarray(p1, dtype=np.float64), EPS, 1 - EPS)
    y = np.asarray(y, dtype=np.float64)
    return float(-(y * np.log(p) + (1 - y) * np.log(1 - p)).mean())


def macro_f1(y: np.ndarray, probs: np.ndarray) -> float:
    """Unweighted mean over classes of F1 of the argmax prediction (absent classes count 0)."""
    from sklearn.metrics import f1_score  # lazy: the CLI starts without it

    c = np.asarray(probs).shape[1]
    pred = np.asarray(probs).argmax(axis=1)
    return float(f1_score(y, pred, labels=np.arange(c), average="macro", zero_division=0))


def micro_f1(y: np.ndarray, probs: np.ndarray) -> float:
    """Micro-averaged F1 of the argmax prediction; for single-label rows it equals accuracy."""
    from sklearn.metrics import f1_score  # lazy: the CLI starts without it

    return float(f1_score(y, np.asarray(probs).argmax(axis=1), average="micro"))


def roc_auc(y: np.ndarray, probs: np.ndarray) -> float:
    """Binary ROC AUC of the class-1 column (``probs (N, 2)``) or of ``probs (N,)`` itself."""
    from sklearn.metrics import roc_auc_score  # lazy: the CLI starts without it

    p = np.asarray(probs)
    return float(roc_auc_score(np.asarray(y), p[:, 1] if p.ndim == 2 else p))


def mean_column_auc(y: np.ndarray, probs: np.ndarray) -> float:
    """Mean over columns of each column's ROC AUC (plant-pathology-2020, RANZCR). ``y`` is
    ``(N, C)`` indicators, or ``(N,)`` class indices turned into one-hot columns."""
    from sklearn.metrics import roc_auc_score  # lazy: the CLI starts without it

    p = np.asarray(probs)
    y = np.asarray(y)
    if y.ndim == 1:
        y = np.eye(p.shape[1], dtype=np.int64)[y]
    return float(np.mean([roc_auc_score(y[:, j], p[:, j]) for j in range(p.shape[1])]))


def quadratic_kappa(y: np.ndarray, pred: np.ndarray) -> float:
    """Quadratic weighted kappa of ordered grades (APTOS). ``pred`` is ``(N,)`` grades, or
    ``(N, C)`` probabilities whose argmax is the grade (cut points come later, fitted on OOF)."""
    from sklearn.metrics import cohen_kappa_score  # lazy: the CLI starts without it

    pred = np.asarray(pred)
    grades = pred.argmax(axis=1) if pred.ndim == 2 else pred
    return float(cohen_kappa_score(np.asarray(y), grades, weights="quadratic"))


def map_at_k(y: np.ndarray, probs: np.ndarray, k: int = 5) -> float:
    """Mean average precision at ``k`` with one true label per row: 1/rank of the true class
    among the ``k`` most probable (ties broken by lower class index), 0 when not among them."""
    p = np.asarray(probs)
    top = np.argsort(-p, axis=1, kind="stable")[:, :k]
    hit = top == np.asarray(y)[:, None]
    return float((hit / np.arange(1, top.shape[1] + 1)).sum(axis=1).mean())


def samples_f1(y: np.ndarray, probs: np.ndarray, threshold: float = 0.5) -> float:
    """Row-wise mean F1 of multi-label predictions ``probs >= threshold`` (plant-pathology-2021:
    ``f1_score(average="samples")``); a row with no true and no predicted label scores 0."""
    from sklearn.metrics import f1_score  # lazy: the CLI starts without it

    pred = (np.asarray(probs) >= threshold).astype(np.int64)
    return float(f1_score(np.asarray(y).astype(np.int64), pred, average="samples", zero_division=0))


class Metric(NamedTuple):
    """A metric and its traits. Every list of metrics is read from ``METRICS`` (the formats a
    sample submission allows, the ``competition.toml`` help, the ensemble's choices), as
    scikit-learn's scorer carries ``greater_is_better`` and ``response_method``:

    - ``formats``: the submission formats (``task.FORMATS``) it scores; ``default_for``: those
      it is inferred for when ``competition.toml`` names no metric;
    - ``multilabel``: it scores multi-label tasks (label sets, or a probability per label);
    - ``direct``: Caruana climbs it directly (a ranking metric log loss stands in for poorly);
    - ``post``: the post-processing it rewards (a key of ``ensemble.post.POSTS``), on the task
      kinds ``post_kinds`` (empty: every kind);
    - ``needs_every_label``: undefined on a held-out fold that lacks a label (ROC AUC per label).
    """

    fn: Callable[[np.ndarray, np.ndarray], float]
    greater_is_better: bool
    help: str
    formats: tuple[str, ...] = ()
    default_for: tuple[str, ...] = ()
    multilabel: bool = False
    direct: bool = False
    post: str | None = None
    post_kinds: tuple[str, ...] = ()
    needs_every_label: bool = False

    def post_for(self, kind: str) -> str | None:
        """The post-processing this metric rewards on a ``kind`` task, or None."""
        return self.post if self.post and (not self.post_kinds or kind in self.post_kinds) else None


LABEL, PROB, CLASS_PROBS = ("label",), ("probability",), ("class_probabilities",)
METRICS: dict[str, Metric] = {
    "accuracy": Metric(
        accuracy, True, "share of rows whose argmax is the true class", LABEL, LABEL
    ),
    "log_loss": Metric(
        log_loss,
        False,
        "multi-class log loss, clipped and renormalised",
        PROB + CLASS_PROBS,
        CLASS_PROBS,
        post="temp",
    ),
    "macro_f1": Metric(macro_f1, True, "mean over classes of F1", LABEL),
    "micro_f1": Metric(
        micro_f1, True, "F1 over all rows (= accuracy for one label per row)", LABEL
    ),
    "roc_auc": Metric(
        roc_auc, True, "binary ROC AUC of the positive class", PROB, PROB, direct=True
    ),
    "mean_column_auc": Metric(
        mean_column_auc,
        True,
        "mean over columns of ROC AUC",
        CLASS_PROBS,
        multilabel=True,
        direct=True,
        needs_every_label=True,
    ),
    "quadratic_kappa": Metric(
        quadratic_kappa,
        True,
        "quadratic weighted kappa of grades",
        LABEL,
        direct=True,
        post="cuts",
        post_kinds=("ordinal",),
    ),
    "map_at_5": Metric(
        map_at_k, True, "mean average precision of the top 5 labels", ("top_k",), ("top_k",)
    ),
    "samples_f1": Metric(
        samples_f1,
        True,
        "row-wise mean F1 of label sets",
        ("label_list",),
        ("label_list",),
        multilabel=True,
        post="threshold",
        post_kinds=("multilabel",),
    ),
}


def scoring(fmt: str) -> tuple[str, ...]:
    """The metrics that can score a ``fmt`` submission, the one inferred for it first."""
    names = [n for n, m in METRICS.items() if fmt in m.formats]
    return tuple(sorted(names, key=lambda n: fmt not in METRICS[n].default_for))


def metric_names() -> str:
    """Every metric's name, comma-separated: the help texts' list."""
    return ", ".join(METRICS)
