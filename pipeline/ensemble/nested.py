"""Honest ensemble scores: nested cross-validation over the folds, and the leaderboard table.

An ensemble fitted on all OOF rows and scored on the same rows reports its own overfitting as
skill (weights, selections and stacking coefficients were chosen to fit exactly those rows).
Nested CV fits the ensemble on the OOF rows of K-1 folds and scores the held-out fold, for each
fold in turn, so no row ever influences the weights it is scored with.
"""

from __future__ import annotations

import copy
from collections.abc import Callable
from typing import Any

import numpy as np
import pandas as pd
from sklearn.metrics import log_loss
from tqdm.auto import tqdm

from ..competition.task import Task
from .blend import softmax


def nested_predict(
    est: Any, oof: np.ndarray, y: np.ndarray, fold: np.ndarray, class_weight=None
) -> tuple[np.ndarray, list[Any]]:
    """``(N, C)`` probs where each fold's rows come from a copy of ``est`` fitted on the others.

    ``oof (M, N, C)``, ``y (N,)``, ``fold (N,)``; ``class_weight (K, C)``: the copy that
    predicts fold k is fitted with each row weighted by ``class_weight[k]`` of its class (priors
    estimated without fold k's labels). Also returns the fitted copies, fold order."""
    probs = np.zeros(oof.shape[1:], dtype=np.float64)
    fitted = []
    for i, k in enumerate(np.unique(fold)):
        held = fold == k
        kw = {} if class_weight is None else {"sample_weight": class_weight[i][y[~held]]}
        model = copy.deepcopy(est).fit(oof[:, ~held], y[~held], **kw)
        probs[held] = model.predict_proba(oof[:, held])
        fitted.append(model)
    return probs, fitted


ACCURACY = Task("multiclass", "label", "accuracy")


def _scores(y: np.ndarray, probs: np.ndarray, fold: np.ndarray, task: Task) -> dict[str, float]:
    """The competition's metric of ``probs (N, C)`` (and its spread over folds), accuracy and
    log loss. Probabilities that are decoded grades (ordinal cut points) score as such."""
    if task.multilabel:  # accuracy per label at 1/2, binary cross-entropy
        hit = ((probs >= 0.5) == (y > 0)).mean(axis=1)
        q = np.clip(probs, 1e-15, 1 - 1e-15)
        out = {
            "accuracy": float(hit.mean()),
            "log_loss": float(-(y * np.log(q) + (1 - y) * np.log(1 - q)).mean()),
        }
    else:
        hit = probs.argmax(axis=1) == y
        clipped = np.clip(probs, 1e-15, 1.0)
        out = {
            "accuracy": float(hit.mean()),
            "log_loss": float(
                log_loss(
                    y, clipped / clipped.sum(1, keepdims=True), labels=np.arange(probs.shape[1])
                )
            ),
        }
    per_fold = [task.score(y[fold == k], probs[fold == k]) for k in np.unique(fold)]
    out["score"] = task.score(y, probs)
    out["fold_std"] = float(np.std(per_fold))
    return out


def leaderboard(
    members: list[str],
    oof: np.ndarray,
    y: np.ndarray,
    fold: np.ndarray,
    methods: dict[str, Callable[[], Any]],
    progress: bool = True,
    task: Task = ACCURACY,
) -> tuple[pd.DataFrame, dict[str, Any], dict[str, np.ndarray]]:
    """Score every member and every method; return the table, fitted methods, nested probs.

    Members are single models, so their OOF score already is held-out. Each method gets an
    in-sample score (fitted on all rows, scored on them) and a nested score under ``task``'s
    metric. Rows are sorted by nested score (best first), then nested log loss; ``fitted`` maps
    method to the all-rows fit.
    """
    rows, fitted, nested = [], {}, {}
    for name, logits in zip(members, oof, strict=True):
        s = _scores(
            y, task.probabilities(logits) if task.multilabel else softmax(logits), fold, task
        )
        rows.append(_row(name, "member", s, s, task))
    bar = tqdm(methods.items(), desc="nested CV", unit="method", disable=not progress)
    for name, make in bar:
        bar.set_postfix_str(name)
        fitted[name] = make().fit(oof, y)
        inside = _scores(y, fitted[name].predict_proba(oof), fold, task)
        nested[name], _ = nested_predict(make(), oof, y, fold)
        rows.append(_row(name, "method", inside, _scores(y, nested[name], fold, task), task))
    return ranked(pd.DataFrame(rows), task), fitted, nested


def ranked(table: pd.DataFrame, task: Task) -> pd.DataFrame:
    """The leaderboard sorted by nested score (best first), then nested log loss; stable: ties
    keep members first, then METHODS order."""
    table = table.sort_values(
        ["nested_score", "nested_log_loss"],
        ascending=[not task.greater_is_better, True],
        kind="stable",
    )
    return table.reset_index(drop=True)


def scored_row(name: str, y, fold, inside, held, task: Task) -> dict[str, Any]:
    """A method's leaderboard row from its in-sample probs ``inside`` and nested ``held``."""
    return _row(name, "method", _scores(y, inside, fold, task), _scores(y, held, fold, task), task)


RESAMPLES = 20  # class-stratified resamples of the OOF rows at the test priors (paired)


def test_prior_resamples(
    task: Task,
    y: np.ndarray,
    probs: dict[str, np.ndarray],
    train_prior: np.ndarray,
    test_prior: np.ndarray,
    alpha: float = 1.0,
    seed: int = 0,
    fold: np.ndarray | None = None,
) -> dict[str, np.ndarray]:
    """``(RESAMPLES,)`` scores per entry: each entry's score as a test set with classes at ``test_prior`` would see it: the mean
    of ``task``'s metric over ``RESAMPLES`` resamples of the rows by class at those priors
    (the same rows for every entry: a paired comparison, for any metric), each entry's
    held-out ``probs (N, C)`` corrected as the submission is (weights ``(p_test / p_train) **
    alpha``). With ``fold (N,)``, ``test_prior`` is ``(K, C)``: fold k's rows are drawn at,
    and corrected by, the priors estimated without fold k's labels (nested)."""
    from .prior import resample_by_class, reweight

    rng = np.random.default_rng(seed)
    fold = np.zeros(len(y), dtype=int) if fold is None else np.asarray(fold)
    folds = np.unique(fold)
    priors = np.asarray(test_prior, dtype=np.float64).reshape(-1, len(train_prior))
    priors = np.broadcast_to(priors, (len(folds), len(train_prior)))
    where = [np.flatnonzero(fold == k) for k in folds]
    rows = [
        np.concatenate(
            [
                w[resample_by_class(y[w], te, len(w), rng)]
                for w, te in zip(where, priors, strict=True)
            ]
        )
        for _ in range(RESAMPLES)
    ]
    weight = np.empty((len(y), len(train_prior)))
    for w, te in zip(where, priors, strict=True):
        weight[w] = (te / np.clip(train_prior, 1e-12, None)) ** alpha
    out = {}
    for name, p in probs.items():
        q = reweight(np.asarray(p, dtype=np.float64) * weight, np.ones(len(train_prior)))
        out[name] = np.array([task.score(y[r], q[r]) for r in rows])
    return out


def _row(name: str, kind: str, inside: dict, held: dict, task: Task) -> dict[str, Any]:
    return {
        "name": name,
        "kind": kind,
        "metric": task.metric,
        "oof_score": inside["score"],
        "nested_score": held["score"],
        "oof_accuracy": inside["accuracy"],
        "oof_log_loss": inside["log_loss"],
        "nested_accuracy": held["accuracy"],
        "nested_log_loss": held["log_loss"],
        "nested_fold_std": held["fold_std"],
    }


def choose(table: pd.DataFrame, method: str) -> str:
    """``method`` itself, or for "auto" the method with the best nested score (table order)."""
    if method != "auto":
        return method
    return str(table.loc[table["kind"] == "method", "name"].iloc[0])


def print_leaderboard(table: pd.DataFrame, chosen: str) -> None:
    """Console table, best nested score first; gap = in-sample minus nested score."""
    metric = str(table["metric"].iloc[0]) if "metric" in table else "accuracy"
    short = "acc" if metric == "accuracy" else metric
    w, m = max(8, *(len(n) for n in table["name"])), max(7, len(short) + 4)
    print(
        f"  {'name':<{w}}  {'kind':<6}  {'OOF ' + short:>{m}}  {'OOF loss':>8}  "
        f"{'nested ' + short:>{m + 3}}  {'± folds':>7}  {'nested loss':>11}  {'gap':>7}"
    )
    for r in table.itertuples(index=False):
        mark = "  <- chosen" if r.name == chosen else ""
        gap = r.oof_score - r.nested_score
        print(
            f"  {r.name:<{w}}  {r.kind:<6}  {r.oof_score:>{m}.4f}  {r.oof_log_loss:>8.4f}  "
            f"{r.nested_score:>{m + 3}.4f}  {r.nested_fold_std:>7.4f}  {r.nested_log_loss:>11.4f}  "
            f"{gap:>+7.4f}{mark}"
        )
