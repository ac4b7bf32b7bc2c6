"""Fixed-rule ensembles of member logits: votes and averages (sklearn-style estimators).

Every estimator takes member logits ``(M, N, C)`` (M members, N rows, C classes):
``fit(oof_logits, y)`` returns self and sets ``weights_ (M,)``; ``predict_proba(logits)`` returns
``(N, C)`` rows that sum to 1. Work is done in float32 where the result only feeds an argmax or a
log loss, member by member and in blocks of ``BLOCK_ROWS`` rows (``mean_probs``,
``member_probs``, ``true_class_probs``): 50 members x 50,000 rows x 200 classes is 1.9 GiB of
float32 logits (0.9 GiB as the float16 the ensemble stage keeps that many in), and a method that
made a softmax copy of all of them would double the memory it needs.
"""

from __future__ import annotations

import numpy as np
import torch
from scipy.optimize import minimize_scalar
from scipy.special import softmax as _softmax

# Vote shares are rounded to this many decimals so float noise in summed weights cannot break a
# tie; the tie-break (at most 2 * _TIE_EPS) stays below one rounding step so it never outvotes.
_VOTE_DECIMALS = 9
_TIE_EPS = 1e-10
CLIP = 1e-15


def softmax(logits: np.ndarray, axis: int = -1) -> np.ndarray:
    """Numerically stable softmax along ``axis`` in float64 (any shape in, same shape out)."""
    return _softmax(np.asarray(logits, dtype=np.float64), axis=axis)


BLOCK_ROWS = 8192  # rows per block of a member: (8192, 200) float32 is 6.5 MB


def row_blocks(n: int, block: int | None = None) -> list[slice]:
    """``slice``s covering ``range(n)`` in blocks of ``block`` (default ``BLOCK_ROWS``) rows."""
    block = block or BLOCK_ROWS
    return [slice(i, min(i + block, n)) for i in range(0, n, block)]


def _block(logits: np.ndarray, j: int, rows: slice) -> torch.Tensor:
    """Member ``j``'s logits of ``rows`` as a float32 tensor (a copy only for other dtypes)."""
    return torch.from_numpy(np.ascontiguousarray(logits[j, rows], dtype=np.float32))


def mean_probs(
    logits: np.ndarray, weights: np.ndarray | None = None, temperatures: np.ndarray | None = None
) -> np.ndarray:
    """``(M, N, C)`` logits -> ``(N, C)`` float64 ``sum_m w_m softmax(z_m / T_m)`` (``w``
    default ``1/M``, ``T`` default 1), member by member in blocks of rows: no ``(M, N, C)``
    copy, whatever the logits' dtype."""
    m, n, _ = logits.shape
    w = np.full(m, 1.0 / m) if weights is None else np.asarray(weights, dtype=np.float64)
    out = np.zeros(logits.shape[1:], dtype=np.float64)
    for j in range(m):
        if w[j] == 0:
            continue
        t = 1.0 if temperatures is None else float(temperatures[j])
        for rows in row_blocks(n):
            z = _block(logits, j, rows)
            out[rows] += w[j] * torch.softmax(z / t if t != 1.0 else z, dim=-1).double().numpy()
    return out


def member_probs(logits: np.ndarray) -> np.ndarray:
    """``(M, N, C)`` logits -> float32 softmax probabilities of each member, written block by
    block into one array (the only ``(M, N, C)`` array made)."""
    m, n, _ = logits.shape
    out = np.empty(logits.shape, dtype=np.float32)
    for j in range(m):
        for rows in row_blocks(n):
            out[j, rows] = torch.softmax(_block(logits, j, rows), dim=-1).numpy()
    return out


def true_class_probs(logits: np.ndarray, y: np.ndarray) -> np.ndarray:
    """``(M, N, C)`` logits, ``(N,)`` labels -> ``(M, N)`` float64 softmax prob of the label."""
    m, n, _ = logits.shape
    yt = torch.as_tensor(np.asarray(y, dtype=np.int64))
    out = np.empty((m, n), dtype=np.float64)
    for j in range(m):
        for rows in row_blocks(n):
            z = _block(logits, j, rows)
            log_p = z.gather(1, yt[rows, None])[:, 0] - torch.logsumexp(z, dim=1)
            out[j, rows] = np.exp(log_p.double().numpy())
    return out


def check_members(logits: np.ndarray, n_members: int | None = None) -> np.ndarray:
    """Validate ``(M, N, C)`` logits (and M when known); return them as an array."""
    logits = np.asarray(logits)
    if logits.ndim != 3 or (n_members is not None and logits.shape[0] != n_members):
        raise ValueError(f"expected logits (M={n_members or 'M'}, N, C), got {logits.shape}")
    return logits


def normalise(p: np.ndarray) -> np.ndarray:
    """Rows of ``(N, C)`` non-negative scores -> rows summing to 1, float64."""
    p = np.asarray(p, dtype=np.float64)
    return p / p.sum(axis=1, keepdims=True)


class EqualWeights:
    """Base: ``fit`` only records equal weights; subclasses define ``_combine`` (or, as the
    multi-label blends do, ``predict_proba``)."""

    def fit(self, oof_logits: np.ndarray, y: np.ndarray) -> EqualWeights:
        m = check_members(oof_logits).shape[0]
        self.weights_ = np.full(m, 1.0 / m)
        return self

    def predict_proba(self, logits: np.ndarray) -> np.ndarray:
        return self._combine(check_members(logits, len(self.weights_)))


class HardVote:
    """Weighted majority of member argmaxes; ties go to the larger summed softmax probability,
    then to the lowest class index, so the result never depends on member order or float noise."""

    def __init__(self, weights: list[float] | np.ndarray | None = None) -> None:
        self.weights = weights

    def fit(self, oof_logits: np.ndarray, y: np.ndarray) -> HardVote:
        """``oof_logits (M, N, C)``, ``y (N,)``: only checks and normalises the weights."""
        m = check_members(oof_logits).shape[0]
        w = np.ones(m) if self.weights is None else np.asarray(self.weights, dtype=np.float64)
        if w.shape != (m,) or (w < 0).any() or w.sum() <= 0:
            raise ValueError(f"weights must be {m} non-negative numbers with a positive sum: {w}")
        self.weights_ = w / w.sum()
        return self

    def predict_proba(self, logits: np.ndarray) -> np.ndarray:
        """``(M, N, C)`` -> ``(N, C)`` vote shares plus a tiny tie-break; argmax is the winner."""
        logits = check_members(logits, len(self.weights_))
        _, n, c = logits.shape
        share = np.zeros((n, c))
        for w, vote in zip(self.weights_, logits.argmax(axis=2), strict=True):
            share[np.arange(n), vote] += w  # one vote per row per member
        share = np.round(share, _VOTE_DECIMALS)
        mean_p = mean_probs(logits)
        tied = share == share.max(axis=1, keepdims=True)
        winner = np.where(tied, mean_p, -1.0).argmax(axis=1)  # lowest index on an exact tie
        # The bump on the winner keeps argmax exact where mean probs differ below float precision.
        out = share + _TIE_EPS * mean_p
        out[np.arange(n), winner] += _TIE_EPS
        return normalise(out)


class SoftVote(EqualWeights):
    """Mean of member softmax probabilities."""

    def _combine(self, logits: np.ndarray) -> np.ndarray:
        return normalise(mean_probs(logits))


class MeanLogits(EqualWeights):
    """Softmax of the mean of member logits: a member with larger logits (sharper) counts more."""

    def _combine(self, logits: np.ndarray) -> np.ndarray:
        return softmax(logits.mean(axis=0, dtype=np.float64))


class RankAverage(EqualWeights):
    """Mean over members of each class column's percentile rank among the predicted rows.

    Rank averaging (the Kaggle blend for AUC metrics) ignores calibration entirely: only the
    order of the rows within each member's class column counts. Ranks are taken within the set
    being predicted, so test rows are ranked among test rows."""

    def _combine(self, logits: np.ndarray) -> np.ndarray:
        n = logits.shape[1]
        # integer ranks: sums stay exact, ties too; (C, N): each class column sorts contiguously
        steps = torch.arange(1, n + 1, dtype=torch.int64).expand(logits.shape[2], n)
        total = torch.zeros(logits.shape[:0:-1], dtype=torch.int64)
        for member in logits:  # torch's sort: 2.3x numpy's argsort here (50,000 rows)
            cols = torch.from_numpy(np.ascontiguousarray(member.T, dtype=np.float32))
            order = torch.sort(cols, dim=1, stable=True).indices  # ties broken by row order
            total.scatter_add_(1, order, steps)
        return normalise(total.T.numpy() / n)


def row_weights(sample_weight, n: int) -> np.ndarray | None:
    """``sample_weight (N,)`` normalised to sum to 1 (None stays None: every row alike).
    Every method that learns weights takes one, so that it can be fitted on OOF rows weighted
    to the test's class priors (``ensemble/stage.py``: fitted under the test priors)."""
    if sample_weight is None:
        return None
    w = np.asarray(sample_weight, dtype=np.float64)
    if w.shape != (n,) or (w < 0).any() or w.sum() <= 0:
        raise ValueError(f"sample_weight: {n} non-negative weights, not all 0, expected")
    return w / w.sum()


TEMPERATURE_ROWS = 10_000  # one number per member: this many rows pin it down


def fit_temperature(
    logits: np.ndarray, y: np.ndarray, max_rows: int = TEMPERATURE_ROWS, sample_weight=None
) -> float:
    """Temperature ``T`` minimising the log loss of ``softmax(logits / T)``; ``(N, C)``, ``(N,)``.

    A 1-D bounded search over log T in [-3, 3] (T from 0.05 to 20), float32 for speed, on at
    most ``max_rows`` rows (a fixed random draw): one parameter needs no more, and the search
    evaluates the loss about 25 times; ``sample_weight (N,)``: the log loss's row weights."""
    y = np.asarray(y, dtype=np.int64)
    w = row_weights(sample_weight, len(y))
    if len(y) > max_rows:
        rows = np.sort(np.random.default_rng(0).choice(len(y), max_rows, replace=False))
        logits, y, w = logits[rows], y[rows], None if w is None else w[rows]
    z = torch.as_tensor(np.asarray(logits, dtype=np.float32))
    target = torch.as_tensor(y)
    wt = None if w is None else torch.as_tensor(w / w.sum(), dtype=torch.float32)

    def loss(log_t: float) -> float:
        if wt is None:
            return float(torch.nn.functional.cross_entropy(z / float(np.exp(log_t)), target))
        each = torch.nn.functional.cross_entropy(z / float(np.exp(log_t)), target, reduction="none")
        return float(each @ wt)

    res = minimize_scalar(loss, bounds=(-3.0, 3.0), method="bounded", options={"xatol": 1e-3})
    return float(np.exp(res.x))


class TemperatureSoftVote:
    """Each member's logits divided by its own temperature (fitted on OOF log loss), then the
    mean of the calibrated probabilities: an over-confident member no longer dominates."""

    def fit(self, oof_logits: np.ndarray, y: np.ndarray, sample_weight=None) -> TemperatureSoftVote:
        logits = check_members(oof_logits)
        self.temperatures_ = np.array(
            [fit_temperature(m, np.asarray(y), sample_weight=sample_weight) for m in logits]
        )
        self.weights_ = np.full(len(logits), 1.0 / len(logits))
        return self

    def predict_proba(self, logits: np.ndarray) -> np.ndarray:
        logits = check_members(logits, len(self.weights_))
        return normalise(mean_probs(logits, temperatures=self.temperatures_))
