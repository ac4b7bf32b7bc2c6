"""Post-processing fitted on OOF rows: ordinal cut points (quadratic kappa), temperature (log
loss), a label threshold (multi-label F1).

``WithPost(method, post)`` is itself an estimator: ``fit`` fits the method, then the
post-processing on the method's predictions for the same rows, so inside nested CV both are fitted
without the held-out fold and the gain is scored honestly. The leaderboard shows each method with
and without it (``stack`` and ``stack+cuts``).
"""

from __future__ import annotations

from typing import Any

import numpy as np
from scipy.optimize import minimize_scalar
from scipy.special import log_softmax, softmax

from ..competition.metrics import METRICS, quadratic_kappa


class CutPoints:
    """Ordinal grades from the expected grade ``E = sum_k k p_k`` cut at ``C - 1`` thresholds,
    each searched in turn (coordinate ascent, ``rounds`` passes) over the quantiles of E for the
    best quadratic kappa; starting at k + 0.5, which is rounding the expected grade."""

    def __init__(self, rounds: int = 3, grid: int = 64) -> None:
        self.rounds, self.grid = rounds, grid

    def fit(self, probs: np.ndarray, y: np.ndarray) -> CutPoints:
        c = probs.shape[1]
        e = probs @ np.arange(c)
        cuts = np.arange(c - 1) + 0.5
        cands = np.unique(np.quantile(e, np.linspace(0, 1, self.grid)))
        best = quadratic_kappa(y, np.searchsorted(cuts, e))
        for _ in range(self.rounds):
            for i in range(c - 1):
                lo = cuts[i - 1] if i else -np.inf
                hi = cuts[i + 1] if i + 1 < c - 1 else np.inf
                for t in cands[(cands > lo) & (cands < hi)]:
                    trial = cuts.copy()
                    trial[i] = t
                    score = quadratic_kappa(y, np.searchsorted(trial, e))
                    if score > best + 1e-12:
                        best, cuts = score, trial
        self.cuts_ = cuts
        return self

    def transform(self, probs: np.ndarray) -> np.ndarray:
        """One-hot ``(N, C)`` of the decoded grade (its argmax is the grade)."""
        grade = np.searchsorted(self.cuts_, probs @ np.arange(probs.shape[1]))
        return np.eye(probs.shape[1])[grade]


class Temperature:
    """One temperature T for the blended probabilities, ``softmax(log p / T)``, minimising OOF
    log loss: blends are often over- or under-confident, which log loss charges for."""

    def fit(self, probs: np.ndarray, y: np.ndarray) -> Temperature:
        logp = np.log(np.clip(probs, 1e-15, 1.0))
        rows = np.arange(len(y))

        def loss(log_t: float) -> float:
            return float(-log_softmax(logp / np.exp(log_t), axis=1)[rows, y].mean())

        self.temperature_ = float(np.exp(minimize_scalar(loss, bounds=(-3, 3), method="bounded").x))
        return self

    def transform(self, probs: np.ndarray) -> np.ndarray:
        return softmax(np.log(np.clip(probs, 1e-15, 1.0)) / self.temperature_, axis=1)


def _threshold():
    from .multilabel import Threshold

    return Threshold()


POSTS = {"cuts": CutPoints, "temp": Temperature, "threshold": _threshold}


class WithPost:
    """A blending method followed by a post-processing step, fitted together."""

    def __init__(self, method: Any, post: Any) -> None:
        self.method, self.post = method, post

    def fit(self, oof_logits: np.ndarray, y: np.ndarray) -> WithPost:
        self.method.fit(oof_logits, y)
        self.post.fit(self.method.predict_proba(oof_logits), np.asarray(y))
        return self

    def predict_proba(self, logits: np.ndarray) -> np.ndarray:
        return self.post.transform(self.method.predict_proba(logits))

    @property
    def weights_(self) -> np.ndarray:
        return self.method.weights_


def post_for(metric: str, kind: str) -> str | None:
    """The post-processing a metric rewards on a ``kind`` task (its ``post`` trait): cut points
    for kappa on grades, temperature for log loss, a threshold for label-set F1; else None."""
    return METRICS[metric].post_for(kind)
