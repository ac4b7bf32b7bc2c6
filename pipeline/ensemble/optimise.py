"""Ensembles whose member weights are searched on OOF rows (sklearn-style estimators).

``WeightedSoftVote`` minimises log loss with SLSQP, ``AccuracyWeights`` climbs OOF accuracy one
weight at a time, ``Caruana`` is greedy forward selection with replacement (Caruana et al. 2004,
"Ensemble selection from libraries of models") with best-N initialisation and bagged rounds.
All predict the weighted mean of member softmax probabilities. Log-loss searches only need each
member's probability of the true label, ``(M, N)``, which is what makes them fast.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
from scipy.optimize import minimize

from ..competition.metrics import METRICS
from .blend import (
    CLIP,
    check_members,
    mean_probs,
    member_probs,
    normalise,
    row_weights,
    true_class_probs,
)


class _WeightedMean:
    """Base: predict the ``weights_``-weighted mean of member softmax probabilities."""

    def predict_proba(self, logits: np.ndarray) -> np.ndarray:
        """``(M, N, C)`` -> ``(N, C)``."""
        return normalise(mean_probs(check_members(logits, len(self.weights_)), self.weights_))


def _log_loss(w: np.ndarray, p_true: np.ndarray, rows: np.ndarray | None = None) -> float:
    """Mean log loss of the ``w``-weighted blend; ``rows (N,)``: per-row weights summing to 1."""
    loss = -np.log(np.clip(w @ p_true, CLIP, None))
    return float(loss.mean() if rows is None else loss @ rows)


class WeightedSoftVote(_WeightedMean):
    """Weights on the simplex minimising OOF log loss (SLSQP); never worse than equal weights."""

    def fit(self, oof_logits: np.ndarray, y: np.ndarray, sample_weight=None) -> WeightedSoftVote:
        """``oof_logits (M, N, C)``, ``y (N,)`` int class indices, ``sample_weight (N,)``."""
        p_true = true_class_probs(check_members(oof_logits), y)  # (M, N)
        m, rows = len(p_true), row_weights(sample_weight, len(y))
        uniform = np.full(m, 1.0 / m)
        self.weights_ = uniform
        if m == 1:
            return self

        def grad(w: np.ndarray, p_true: np.ndarray, rows) -> np.ndarray:
            g = p_true / np.clip(w @ p_true, CLIP, None)
            return -(g.mean(axis=1) if rows is None else g @ rows)

        res = minimize(
            _log_loss,
            uniform,
            args=(p_true, rows),
            jac=grad,
            method="SLSQP",
            bounds=[(0.0, 1.0)] * m,
            constraints=[{"type": "eq", "fun": lambda w: w.sum() - 1.0}],
        )
        w = np.clip(res.x, 0.0, 1.0)
        w = w / w.sum() if w.sum() > 0 else uniform
        if _log_loss(w, p_true, rows) <= _log_loss(uniform, p_true, rows):  # a stalled SLSQP
            self.weights_ = w
        return self


def _accuracy_curve(
    rest: np.ndarray,
    member: np.ndarray,
    bmax: np.ndarray,
    y: np.ndarray,
    grid: np.ndarray,
    rows_w: np.ndarray | None = None,
) -> np.ndarray:
    """Exact OOF accuracy of ``argmax(rest + t * member)`` for each ``t`` in ``grid`` (t >= 0),
    each row counting ``rows_w (N,)`` (mean 1; all ones keep the sums exact integers).

    Rows whose outcome cannot change over the grid are decided from two bounds on the best rival
    class, ``max_c rest_c + t * max_c member_c`` and ``rest_c* + t * member_c*``; only the
    remaining rows are evaluated in full. ``bmax (N,)`` is the member's best rival probability.
    """
    n = len(y)
    rows = np.arange(n)
    rows_w = np.ones(n) if rows_w is None else rows_w
    a_y, b_y = rest[rows, y], member[rows, y]
    rival = rest.copy()
    rival[rows, y] = -np.inf
    c_star = rival.argmax(axis=1)
    a_max = rival[rows, c_star]
    t = grid[:, None]
    surely_right = (a_y + t * b_y > a_max + t * bmax).all(axis=0)
    surely_wrong = (a_y + t * b_y < a_max + t * member[rows, c_star]).all(axis=0)
    open_rows = np.flatnonzero(~surely_right & ~surely_wrong)
    hits = np.full(len(grid), rows_w[surely_right].sum())
    if len(open_rows):
        r, m, yo, wo = rest[open_rows], member[open_rows], y[open_rows], rows_w[open_rows]
        for i, ti in enumerate(grid):
            hits[i] += float(wo[(r + ti * m).argmax(axis=1) == yo].sum())
    return hits / n


class AccuracyWeights(_WeightedMean):
    """Coordinate ascent on OOF accuracy: each member's weight in turn takes the grid value that
    maximises accuracy with the others fixed, until a full pass changes nothing. Accuracy is a
    step function, so gradients are useless; ties keep the current weight (fewest changes)."""

    def __init__(self, grid: tuple[float, ...] = (0, 0.25, 0.5, 1, 1.5, 2, 3, 4), passes: int = 3):
        self.grid = grid
        self.passes = passes

    def fit(self, oof_logits: np.ndarray, y: np.ndarray, sample_weight=None) -> AccuracyWeights:
        probs = member_probs(check_members(oof_logits))  # (M, N, C) float32
        y = np.asarray(y)
        rows_w = row_weights(sample_weight, len(y))
        rows_w = np.ones(len(y)) if rows_w is None else rows_w * len(y)
        w = np.ones(len(probs), dtype=np.float32)
        total = probs.sum(axis=0)
        bmax = np.empty(probs.shape[:2], dtype=np.float32)
        for j, member in enumerate(probs):  # each member's best rival probability, once
            rival = member.copy()
            rival[np.arange(len(y)), y] = -np.inf
            bmax[j] = rival.max(axis=1)
        grid = np.asarray(self.grid, dtype=np.float32)
        for _ in range(self.passes):
            changed = False
            for j, member in enumerate(probs):
                rest = total - w[j] * member
                acc = _accuracy_curve(rest, member, bmax[j], y, np.append(grid, w[j]), rows_w)
                here, acc = acc[-1], acc[:-1]
                if w.sum() - w[j] <= 0:  # all others at 0: this weight must stay positive
                    acc = np.where(grid > 0, acc, -1.0)
                best = int(np.argmax(acc))
                if acc[best] > here:
                    total = rest + grid[best] * member
                    w[j], changed = grid[best], True
            if not changed:
                break
        self.weights_ = w.astype(np.float64) / w.sum()
        return self


class Caruana(_WeightedMean):
    """Greedy ensemble selection with replacement on OOF log loss, or on ``metric``.

    Each of ``bags`` rounds draws a random ``bag_fraction`` of the members, starts from the
    ``n_init`` best of them (by their own log loss), then adds, up to ``max_steps`` times, the
    member (repeats allowed) that most lowers the bag's log loss, stopping ``patience`` steps after
    the last improvement; the bag keeps the prefix with the lowest loss. Weights are the selection counts averaged over bags. Bagging and best-N init are
    the paper's cures for overfitting the hill-climb to the OOF rows.

    ``metric`` (a name of ``competition.metrics.METRICS``) makes the climb optimise that
    score of the bag's mean probabilities instead, as Caruana et al. did for each target metric:
    slower (a metric call per candidate), for metrics log loss is a poor stand-in for (ranking
    metrics such as ROC AUC, quadratic kappa).
    """

    def __init__(
        self,
        n_init: int = 3,
        max_steps: int = 40,
        patience: int = 5,
        bags: int = 20,
        bag_fraction: float = 0.5,
        seed: int = 0,
        metric: str | None = None,
    ) -> None:
        self.n_init, self.max_steps, self.bags = n_init, max_steps, bags
        self.patience = patience
        self.bag_fraction, self.seed = bag_fraction, seed
        self.metric = metric

    def _one_bag_metric(self, probs: np.ndarray, y: np.ndarray, members: np.ndarray) -> np.ndarray:
        """The greedy climb on ``metric`` of the mean of ``probs (M, N, C)``; ``(M,)`` weights."""
        metric = METRICS[self.metric]
        sign = 1.0 if metric.greater_is_better else -1.0

        def gain(total: np.ndarray, k: float) -> float:
            return sign * metric.fn(y, total / k)

        own = [gain(probs[j], 1.0) for j in members]
        counts = np.zeros(len(probs))
        for j in np.argsort(-np.array(own), kind="stable")[: self.n_init]:
            counts[members[j]] += 1
        total = np.tensordot(counts[members], probs[members], axes=1)
        k = counts.sum()
        best, best_counts, since_best = gain(total, k), counts.copy(), 0
        for _ in range(self.max_steps):
            if since_best >= self.patience:
                break
            tries = [gain(total + probs[j], k + 1) for j in members]
            j = members[int(np.argmax(tries))]  # lowest index on ties
            counts[j] += 1
            total, k, since_best = total + probs[j], k + 1, since_best + 1
            if max(tries) > best + 1e-12:
                best, best_counts, since_best = max(tries), counts.copy(), 0
        return best_counts / best_counts.sum()

    def _one_bag(self, p_true: np.ndarray, members: np.ndarray, rows=None) -> np.ndarray:
        """``p_true (M, N)`` clipped away from 0, ``rows (N,)`` row weights summing to 1 (None:
        the mean); returns this bag's ``(M,)`` weights."""
        bag = p_true[members]  # (B, N)

        def mean(a: np.ndarray) -> np.ndarray:  # over rows (the last axis)
            return a.mean(axis=-1) if rows is None else a @ rows.astype(a.dtype)

        counts = np.zeros(len(p_true))
        for j in np.argsort(-mean(np.log(bag)), kind="stable")[: self.n_init]:
            counts[members[j]] += 1
        total = counts[members].astype(np.float32) @ bag  # (N,) summed true-class probs
        k = counts.sum()
        best_loss, best_counts, since_best = -mean(np.log(total / k)), counts.copy(), 0
        for _ in range(self.max_steps):
            if since_best >= self.patience:
                break
            # Mean log of (total + p) / (k + 1): the constant 1 / (k + 1) cannot change the pick.
            j = int(np.argmax(mean(np.log(total[None, :] + bag))))  # lowest index on ties
            counts[members[j]] += 1
            total, k = total + bag[j], k + 1
            loss, since_best = -mean(np.log(total / k)), since_best + 1
            if loss < best_loss - 1e-9:
                best_loss, best_counts, since_best = loss, counts.copy(), 0
        return best_counts / best_counts.sum()

    def fit(self, oof_logits: np.ndarray, y: np.ndarray, sample_weight=None) -> Caruana:
        """``sample_weight (N,)``: the log-loss climb's row weights (a metric climb has none)."""
        logits = check_members(oof_logits)
        rows = row_weights(sample_weight, len(y))
        if self.metric is not None:
            if rows is not None:
                raise ValueError(f"Caruana(metric={self.metric!r}) climbs without row weights")
            probs = member_probs(logits).astype(np.float64)
            return self._fit_bags(len(probs), lambda mem: self._one_bag_metric(probs, y, mem))
        p_true = true_class_probs(logits, y)  # (M, N)
        p_true = np.clip(p_true, CLIP, None).astype(np.float32)  # float32 keeps 1e-15 (> 1e-38)
        return self._fit_bags(len(p_true), lambda mem: self._one_bag(p_true, mem, rows))

    def _fit_bags(self, m: int, one_bag: Callable[[np.ndarray], np.ndarray]) -> Caruana:
        rng = np.random.default_rng(self.seed)
        # Bagging is for libraries of many models; with 5 or fewer, a bag without the best member
        # only forces weight onto weak ones (3 members: every bag of 2 lacks one of them).
        size = m if m <= 5 else max(2, round(self.bag_fraction * m))
        weights = np.zeros(m)
        for _ in range(self.bags if size < m else 1):  # bags of everyone would all be equal
            members = np.sort(rng.choice(m, size=size, replace=False))
            weights += one_bag(members)
        self.weights_ = weights / weights.sum()
        return self
