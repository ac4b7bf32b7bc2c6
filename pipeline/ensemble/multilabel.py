"""Blending methods for multi-label members: each label is an independent sigmoid.

The same sklearn-style contract as the single-label methods, over ``(M, N, C)`` member logits
with ``y (N, C)`` 0/1: ``fit(oof_logits, y) -> self``, ``predict_proba(logits) -> (N, C)``
probabilities per label (rows do not sum to 1), ``weights_``. The registry in ``methods.py`` maps
the method names that make sense for multi-label rows to these; the others are left off the
leaderboard with the reason.
"""

from __future__ import annotations

import numpy as np
from scipy.optimize import minimize
from scipy.special import expit, logit
from scipy.stats import rankdata

from .blend import EqualWeights, check_members

EPS = 1e-6


class LabelMean(EqualWeights):
    """Mean over members of each label's sigmoid probability."""

    def predict_proba(self, logits: np.ndarray) -> np.ndarray:
        return expit(np.asarray(logits, dtype=np.float64)).mean(axis=0)


class LabelLogitMean(EqualWeights):
    """Sigmoid of the mean logit of each label."""

    def predict_proba(self, logits: np.ndarray) -> np.ndarray:
        return expit(np.asarray(logits, dtype=np.float64).mean(axis=0))


class LabelRank(EqualWeights):
    """Mean over members of each label column's percentile rank among the predicted rows: the
    column-AUC blend (scores are comparable within a column only)."""

    def predict_proba(self, logits: np.ndarray) -> np.ndarray:
        z = np.asarray(logits, dtype=np.float64)
        return np.mean([rankdata(m, axis=0) / len(m) for m in z], axis=0)


class LabelWeighted:
    """Simplex weights over members of the sigmoid probabilities, minimising OOF binary
    cross-entropy (SLSQP)."""

    def fit(self, oof_logits: np.ndarray, y: np.ndarray) -> LabelWeighted:
        p = np.clip(expit(np.asarray(check_members(oof_logits), dtype=np.float64)), EPS, 1 - EPS)
        y = np.asarray(y, dtype=np.float64)
        m = len(p)

        def loss(w: np.ndarray) -> float:
            q = np.clip(np.tensordot(w, p, axes=1), EPS, 1 - EPS)
            return float(-(y * np.log(q) + (1 - y) * np.log(1 - q)).mean())

        res = minimize(
            loss,
            np.full(m, 1.0 / m),
            method="SLSQP",
            bounds=[(0.0, 1.0)] * m,
            constraints=({"type": "eq", "fun": lambda w: w.sum() - 1.0},),
        )
        w = np.clip(res.x, 0, None)
        self.weights_ = w / w.sum() if w.sum() > 0 else np.full(m, 1.0 / m)
        return self

    def predict_proba(self, logits: np.ndarray) -> np.ndarray:
        return np.tensordot(self.weights_, expit(np.asarray(logits, dtype=np.float64)), axes=1)


class Threshold:
    """One threshold for every label, searched on OOF rows for the best row-wise mean F1, with
    the rule that a row keeps at least its most probable label (every plant-pathology image has
    one). ``transform`` moves probabilities so that 1/2 is the threshold: ``p >= 1/2`` after it
    is ``p >= t`` before."""

    def __init__(self, grid: int = 37) -> None:
        self.grid = grid

    def fit(self, probs: np.ndarray, y: np.ndarray) -> Threshold:
        from ..competition.metrics import samples_f1

        best = (-1.0, 0.5)
        for t in np.linspace(0.05, 0.95, self.grid):
            self.threshold_ = float(t)
            best = max(best, (samples_f1(y, self.transform(probs)), float(t)))
        self.threshold_ = best[1]
        return self

    def transform(self, probs: np.ndarray) -> np.ndarray:
        p = np.clip(np.asarray(probs, dtype=np.float64), EPS, 1 - EPS)
        out = expit(logit(p) - logit(self.threshold_))
        rows = np.arange(len(out))
        top = out.argmax(axis=1)
        out[rows, top] = np.maximum(out[rows, top], 0.5)  # at least one label per row
        return out
