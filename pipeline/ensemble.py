"""Combine trained runs into one prediction: TTA views, vote/average estimators, submission.

Reads ``folds/<comp>.csv`` and ``models/<comp>/<run>/{oof,test}.npz``; writes
``submissions/<comp>/<name>/{ensemble.json, submission.csv, oof_ensemble.npz, report/}``.
Scores are in-sample on the OOF logits the weights were fitted on (nested CV comes later).
"""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from scipy.optimize import minimize
from scipy.special import softmax as _softmax
from sklearn.metrics import accuracy_score, log_loss

from . import artifacts, report
from .competition import Competition, read_csv
from .errors import PipelineError
from .members import choose_view, find_runs, load_folds, load_member

# Vote shares are rounded to this many decimals so float noise in summed weights cannot break a
# tie; the tie-break (at most 2 * _TIE_EPS) stays below one rounding step so it never outvotes.
_VOTE_DECIMALS = 9
_TIE_EPS = 1e-10
_CLIP = 1e-15


def softmax(logits: np.ndarray, axis: int = -1) -> np.ndarray:
    """Numerically stable softmax along ``axis`` (any shape in, same shape out)."""
    return _softmax(np.asarray(logits, dtype=np.float64), axis=axis)


def _check_members(logits: np.ndarray, n_members: int | None = None) -> np.ndarray:
    logits = np.asarray(logits, dtype=np.float64)
    if logits.ndim != 3 or (n_members is not None and logits.shape[0] != n_members):
        raise ValueError(f"expected logits (M={n_members or 'M'}, N, C), got {logits.shape}")
    return logits


class HardVote:
    """Weighted majority of member argmaxes; ties go to the larger summed softmax probability."""

    def __init__(self, weights: list[float] | np.ndarray | None = None) -> None:
        self.weights = weights

    def fit(self, oof_logits: np.ndarray, y: np.ndarray) -> HardVote:
        """``oof_logits (M, N, C)``, ``y (N,)``: only checks and normalises the weights."""
        m = _check_members(oof_logits).shape[0]
        w = np.ones(m) if self.weights is None else np.asarray(self.weights, dtype=np.float64)
        if w.shape != (m,) or (w < 0).any() or w.sum() <= 0:
            raise ValueError(f"weights must be {m} non-negative numbers with a positive sum: {w}")
        self.weights_ = w / w.sum()
        return self

    def predict_proba(self, logits: np.ndarray) -> np.ndarray:
        """``(M, N, C)`` -> ``(N, C)`` vote shares plus a tiny tie-break; argmax is the winner."""
        logits = _check_members(logits, len(self.weights_))
        _, n, c = logits.shape
        share = np.zeros((n, c))
        for w, vote in zip(self.weights_, logits.argmax(axis=2), strict=True):
            share[np.arange(n), vote] += w  # one vote per row per member
        share = np.round(share, _VOTE_DECIMALS)
        mean_p = softmax(logits).mean(axis=0)
        tied = share == share.max(axis=1, keepdims=True)
        winner = np.where(tied, mean_p, -1.0).argmax(axis=1)  # lowest index on an exact tie
        # The bump on the winner keeps argmax exact where mean probs differ below float precision.
        out = share + _TIE_EPS * (mean_p + np.eye(c)[winner])
        return out / out.sum(axis=1, keepdims=True)


class SoftVote:
    """Unweighted mean of member softmax probabilities."""

    def fit(self, oof_logits: np.ndarray, y: np.ndarray) -> SoftVote:
        m = _check_members(oof_logits).shape[0]
        self.weights_ = np.full(m, 1.0 / m)
        return self

    def predict_proba(self, logits: np.ndarray) -> np.ndarray:
        """``(M, N, C)`` -> ``(N, C)`` mean of softmax probs."""
        return softmax(_check_members(logits, len(self.weights_))).mean(axis=0)


class WeightedSoftVote:
    """Weighted mean of member probs; weights on the simplex minimising OOF log loss (SLSQP)."""

    def fit(self, oof_logits: np.ndarray, y: np.ndarray) -> WeightedSoftVote:
        """``oof_logits (M, N, C)``, ``y (N,)`` int class indices."""
        probs = softmax(_check_members(oof_logits))
        m, n, _ = probs.shape
        p_true = probs[:, np.arange(n), np.asarray(y)]  # (M, N): log loss only needs these

        def loss(w: np.ndarray) -> float:
            return float(-np.log(np.clip(w @ p_true, _CLIP, None)).mean())

        def grad(w: np.ndarray) -> np.ndarray:
            return -(p_true / np.clip(w @ p_true, _CLIP, None)).mean(axis=1)

        uniform = np.full(m, 1.0 / m)
        self.weights_ = uniform
        if m == 1:
            return self
        sum_one = {"type": "eq", "fun": lambda w: w.sum() - 1.0}
        bounds = [(0.0, 1.0)] * m
        res = minimize(
            loss, uniform, jac=grad, method="SLSQP", bounds=bounds, constraints=[sum_one]
        )
        w = np.clip(res.x, 0.0, 1.0)
        w = w / w.sum() if w.sum() > 0 else uniform
        if loss(w) <= loss(uniform):  # never worse than the plain mean, even if SLSQP stalls
            self.weights_ = w
        return self

    def predict_proba(self, logits: np.ndarray) -> np.ndarray:
        """``(M, N, C)`` -> ``(N, C)`` weighted mean of softmax probs."""
        return np.tensordot(self.weights_, softmax(_check_members(logits, len(self.weights_))), 1)


METHODS: dict[str, type] = {"hard": HardVote, "soft": SoftVote, "weighted": WeightedSoftVote}
_AUTO_ORDER = ("soft", "hard", "weighted")  # tie order when method="auto"


def _fit_methods(oof: np.ndarray, y: np.ndarray) -> tuple[dict[str, Any], dict[str, dict]]:
    """Fit every method on ``oof (M, N, C)``; return fitted estimators and in-sample scores."""
    fitted, scores = {}, {}
    for name, cls in METHODS.items():
        est = cls().fit(oof, y)
        probs = est.predict_proba(oof)
        fitted[name] = est
        scores[name] = {
            "oof_accuracy": float(accuracy_score(y, probs.argmax(axis=1))),
            "oof_log_loss": float(log_loss(y, probs, labels=np.arange(oof.shape[2]))),
        }
    return fitted, scores


def _choose(method: str, scores: dict[str, dict]) -> str:
    """``method`` itself, or for "auto" the best OOF accuracy (ties: soft, hard, weighted)."""
    auto = max(_AUTO_ORDER, key=lambda m: (scores[m]["oof_accuracy"], -_AUTO_ORDER.index(m)))
    return auto if method == "auto" else method


def _write_submission(comp: Competition, path: Path, pred: np.ndarray) -> Path:
    """``pred (T,)`` class indices -> CSV with the sample submission's columns and id order."""
    cols = list(read_csv(comp.sample_path).columns)
    if sorted(cols) != sorted([comp.id_col, comp.target_col]):
        raise PipelineError(
            f"{comp.sample_path} has columns {cols}; only an id column and a label column "
            f"({comp.id_col!r}, {comp.target_col!r}) can be filled in"
        )
    values = {
        comp.id_col: comp.test["id"].to_numpy(),
        comp.target_col: np.array(comp.classes)[pred],
    }
    return artifacts.write_csv(path, pd.DataFrame({c: values[c] for c in cols}))


def _write_outputs(
    comp: Competition,
    out: Path,
    folds: pd.DataFrame,
    y: np.ndarray,
    runs: list[str],
    oof: np.ndarray,
    test: np.ndarray,
    est: Any,
    folds_hash: str,
) -> np.ndarray:
    """Write submission.csv, oof_ensemble.npz and report/; return ``(N, C)`` ensemble OOF probs."""
    oof_probs = est.predict_proba(oof)
    _write_submission(comp, out / "submission.csv", est.predict_proba(test).argmax(axis=1))
    artifacts.write_logits(
        out / "oof_ensemble.npz",
        ids=folds["id"].to_numpy(),
        classes=np.array(comp.classes),
        probs=oof_probs.astype(np.float32),
        members=np.array(runs),
        member_preds=oof.argmax(axis=2).astype(np.int32),
        folds_hash=np.array(folds_hash),
    )
    members = dict(zip(runs, oof, strict=True))  # logits are fine: the report uses argmax only
    report.write_report(out / "report", y, oof_probs, list(comp.classes), members)
    return oof_probs


def ensemble_stage(
    comp: Competition,
    runs: list[str],
    method: str = "auto",
    name: str = "ensemble",
    root: Path = Path("."),
) -> dict[str, Any]:
    """Fit the ensemble on OOF logits, predict test, write ``submissions/<comp>/<name>/``.

    Members are runs; each uses the TTA view (or the mean of its views) best on its OOF rows.
    Returns the ``ensemble.json`` content (scores are in-sample on the OOF rows).
    """
    if method != "auto" and method not in METHODS:
        raise PipelineError(f"unknown method {method!r}; valid: auto, {', '.join(METHODS)}")
    root = Path(root)
    folds, y, folds_hash = load_folds(comp, root)
    runs = find_runs(comp, runs, root)
    loaded = [load_member(comp, run, root, folds, folds_hash) for run in runs]
    chosen_views = [
        choose_view(run, oof, test, y) for run, (oof, test) in zip(runs, loaded, strict=True)
    ]
    members = [m for m, _, _ in chosen_views]
    oof = np.stack([o for _, o, _ in chosen_views])  # (M, N, C)
    test = np.stack([t for _, _, t in chosen_views])  # (M, T, C)
    fitted, scores = _fit_methods(oof, y)
    chosen = _choose(method, scores)
    report.print_ensemble(members, scores, chosen)
    out = root / "submissions" / comp.name / name
    _write_outputs(comp, out, folds, y, runs, oof, test, fitted[chosen], folds_hash)
    summary = {
        "name": name,
        "comp": comp.name,
        "method": chosen,
        "score": "in-sample OOF",
        "members": members,
        "weights": {run: float(w) for run, w in zip(runs, fitted[chosen].weights_, strict=True)},
        "methods": scores,
        "oof_accuracy": scores[chosen]["oof_accuracy"],
        "oof_log_loss": scores[chosen]["oof_log_loss"],
        "folds_hash": folds_hash,
        "n_train": len(folds),
        "n_test": len(comp.test),
        "n_classes": len(comp.classes),
        "created": datetime.now(UTC).isoformat(timespec="seconds"),
    }
    artifacts.write_json(out / "ensemble.json", summary)  # last: its presence means complete
    print(f"wrote {out}/: ensemble.json, submission.csv, oof_ensemble.npz, report/")
    return summary
