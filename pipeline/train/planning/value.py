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


def blended(task, y: np.ndarray, stack: np.ndarray) -> np.ndarray:
    """``stack (M, n, C)`` (M runs' probabilities of the same n images, labels ``y``) blended
    as the ensemble stage would: mixture weights fitted by maximum likelihood on one half of
    the images and applied to the other, and the other way round (no weight is scored on the
    images it was fitted on). One run, or multi-label runs: their mean."""
    if len(stack) == 1 or task.multilabel:
        return stack.mean(axis=0)
    a, b = halves(len(y))
    p_true = stack[:, np.arange(len(y)), y]
    out = np.empty(stack.shape[1:])
    for fit, use in ((a, b), (b, a)):
        out[use] = np.tensordot(mixture_weights(p_true[:, fit]), stack[:, use], 1)
    return out


def signed_score(task, y: np.ndarray, probs: np.ndarray) -> float:
    """The competition's metric, higher is better whatever its direction; -inf where it is
    undefined on these images (a class missing): no preference."""
    try:
        return (1.0 if task.greater_is_better else -1.0) * float(task.score(y, probs))
    except ValueError:
        return -np.inf


def ensemble_value(task, costs: dict[str, Cost], y_all: np.ndarray):
    """The estimated score of a set of runs (higher is better, whatever the metric's
    direction), as the ensemble stage would blend them (``blended``), from their probe
    probabilities on the probe's shared held-out images (so a weak run is worth what it adds).
    None unless every run has an estimate on the same images."""
    ests = [c.estimate for c in costs.values()]
    if not ests or any(e is None for e in ests) or len({tuple(e.val) for e in ests}) != 1:
        return None
    y = y_all[ests[0].val]

    def value(subset: tuple[str, ...]) -> float:
        stack = np.stack([costs[r].estimate.probs for r in subset])  # (M, n, C)
        return signed_score(task, y, blended(task, y, stack))

    return value
