"""The value model: the estimated score of a set of runs, as the ensemble stage would blend
them (``ensemble_value``), from each run's probe estimate (``kinds.pricing.Estimate``). The
planner keeps the set with the best value that fits the budget (``plan.best_subset``).
"""

from __future__ import annotations

import numpy as np

from ..kinds.pricing import Cost, halves


def mixture_weights(p_true: np.ndarray, steps: int = 100) -> np.ndarray:
    """Simplex weights maximising the mean log of ``w @ p_true`` (``p_true (M, n)``: each run's
    probability of the true class): the maximum-likelihood mixture, by its EM fixed point
    ``w <- w * mean(p / (w @ p))``. A weak run gets a small weight instead of half the vote."""
    p = np.clip(p_true, 1e-12, None)
    w = np.full(len(p), 1.0 / len(p))
    for _ in range(steps):
        w = w * (p / (w @ p)).mean(axis=1)
    return w / w.sum()


def ensemble_value(task, costs: dict[str, Cost], y_all: np.ndarray):
    """The estimated score of a set of runs (higher is better, whatever the metric's
    direction), as the ensemble stage would blend them: the competition's metric, on the
    probe's shared held-out images, of their probabilities mixed with weights fitted by maximum
    likelihood on one half of those images and applied to the other, and the other way round
    (so a weak run is worth what it adds, and no weight is scored on the images it was fitted
    on). Multi-label runs are averaged. None unless every run has an estimate on the same
    images."""
    ests = [c.estimate for c in costs.values()]
    if not ests or any(e is None for e in ests) or len({tuple(e.val) for e in ests}) != 1:
        return None
    y = y_all[ests[0].val]
    sign = 1.0 if task.greater_is_better else -1.0
    a, b = halves(len(y))

    def blend(subset: tuple[str, ...]) -> np.ndarray:
        stack = np.stack([costs[r].estimate.probs for r in subset])  # (M, n, C)
        if len(subset) == 1 or task.multilabel:
            return stack.mean(axis=0)
        p_true = stack[:, np.arange(len(y)), y]
        out = np.empty(stack.shape[1:])
        for fit, use in ((a, b), (b, a)):
            out[use] = np.tensordot(mixture_weights(p_true[:, fit]), stack[:, use], 1)
        return out

    def value(subset: tuple[str, ...]) -> float:
        probs = blend(subset)
        try:
            return sign * float(task.score(y, probs))
        except ValueError:  # undefined on these images (a class missing): no preference
            return -np.inf

    return value
