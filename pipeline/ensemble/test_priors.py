"""Choices made under the test's class priors, once a label-shift correction is applied.

The leaderboard's nested scores weigh the OOF rows as the train classes come. When the
label-shift check accepts an estimate of the test priors (``prior/``), the submission is scored
on different classes, so ``make ensemble`` also (1) fits every method that learns weights again
on the OOF rows weighted to those priors (``<method>@test``: each row counts ``p_test(y) /
p_train(y)``), and (2) scores members and methods on OOF rows resampled to those priors and
corrected as the submission is (``nested_score_test_priors``); ``METHOD=auto`` takes the best
there when it beats the train priors' choice by more than one standard error. Nested honesty:
fold k's rows are weighted, drawn and corrected by priors estimated without fold k's labels
(``fold_priors``).
"""

from __future__ import annotations

import inspect
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd
from tqdm.auto import tqdm

from .blend import softmax
from .members import OOF
from .nested import nested_predict, ranked, scored_row, test_prior_resamples
from .post import WithPost

SUFFIX = "@test"  # the name of a method fitted on OOF rows weighted to the test priors


@dataclass
class Board:
    """The leaderboard and what it was made of: ``table``, the all-rows fits ``fitted``, the
    nested probs ``nested`` and the factories ``makers`` (method name to estimator)."""

    table: pd.DataFrame
    fitted: dict[str, Any]
    nested: dict[str, np.ndarray]
    makers: dict[str, Callable[[], Any]]


def fold_priors(comp, state: dict, oof: OOF, oof_probs, test_probs) -> np.ndarray:
    """``(K, C)``: the test priors as the label-shift state estimates them with its
    calibration (and balanced mean) refitted without fold k's rows: what scoring fold k's
    rows under the test priors may use without their labels."""
    from .prior import apply_prior
    from .prior.estimators import Calibration, soft_confusion

    out = []
    for k in np.unique(oof.fold):
        keep = oof.fold != k
        cal = Calibration.fit(oof_probs[keep], oof.y[keep])
        mean = soft_confusion(cal.apply(oof_probs[keep]), oof.y[keep]).mean(axis=1)
        fold_state = {**state, "temperature": cal.temperature, "bias": list(cal.bias)}
        fold_state["balanced_mean"] = mean.tolist()
        out.append(apply_prior(fold_state, comp.task, test_probs, bootstrap=0)[1]["test_prior"])
    return np.asarray(out)


def weighable(est: Any) -> bool:
    """Whether a method learns weights from row-weighted OOF rows: its ``fit`` takes
    ``sample_weight``, and it is no metric climb (``Caruana(metric=...)``) or method with a
    post-processing step (whose step is fitted on the rows as they come)."""
    if isinstance(est, WithPost) or getattr(est, "metric", None) is not None:
        return False
    return "sample_weight" in inspect.signature(est.fit).parameters


def fit_under_test_priors(comp, board: Board, members, oof: OOF, shift: dict, priors) -> None:
    """Add ``<method>@test`` to ``board`` for every weighable method: fitted on all OOF rows
    weighted by the applied estimate's ``p_test / p_train``, nested-scored with fold k's copy
    weighted by ``priors[k]`` (estimated without fold k's labels)."""
    train = np.clip(np.asarray(shift["train_prior"], dtype=np.float64), 1e-12, None)
    full = np.asarray(shift["test_prior"], dtype=np.float64) / train
    per_fold = np.asarray(priors, dtype=np.float64) / train
    names = [n for n, make in board.makers.items() if weighable(make())]
    rows = []
    for name in tqdm(names, desc="fitted under the test priors", unit="method"):
        make, variant = board.makers[name], name + SUFFIX
        est = make().fit(members.oof, oof.y, sample_weight=full[oof.y])
        held, _ = nested_predict(make(), members.oof, oof.y, oof.fold, per_fold)
        board.fitted[variant], board.nested[variant] = est, held
        inside = est.predict_proba(members.oof)
        rows.append(scored_row(variant, oof.y, oof.fold, inside, held, comp.task))
    if rows:
        board.table = ranked(pd.concat([board.table, pd.DataFrame(rows)]), comp.task)
        print(
            f"fitted on OOF rows weighted to the estimated test priors: "
            f"{', '.join(n + SUFFIX for n in names)}"
        )


def under_test_priors(comp, board: Board, members, oof, shift, priors, chosen, auto) -> str:
    """The leaderboard scored as the test set's classes come (the applied label-shift
    estimate): ``nested_score_test_priors`` per member (its OOF rows) and method (its nested
    rows), fold k's rows drawn at and corrected by ``priors[k]``, estimated without fold k's
    labels (``fold_priors``). Returns the best method there when it beats ``chosen`` (the
    train priors' choice) by more than one standard error (the paired gain's spread over the
    resamples, each a bootstrap of the rows) and ``auto`` (METHOD=auto), else ``chosen``."""
    nested, table = board.nested, board.table
    probs = {r: softmax(lg) for r, lg in zip(members.runs, members.oof, strict=True)} | nested
    tr, alpha = np.asarray(shift["train_prior"]), float(shift.get("alpha", 1.0))
    each = test_prior_resamples(comp.task, oof.y, probs, tr, priors, alpha, fold=oof.fold)
    sign = 1.0 if comp.task.greater_is_better else -1.0
    table["nested_score_test_priors"] = table["name"].map({k: v.mean() for k, v in each.items()})
    best = max(nested, key=lambda n: sign * each[n].mean())
    gain = sign * (each[best] - each[chosen])
    se = float(gain.std(ddof=1))
    switch = auto and gain.mean() > se
    top = sorted(each, key=lambda n: -sign * each[n].mean())[:5]
    verdict = (
        f"chosen {best} (under the train priors {chosen}; {gain.mean():+.4f} +- {se:.4f})"
        if switch
        else f"{chosen} stays"
        + (f" ({best} leads by {gain.mean():+.4f} +- {se:.4f})" if best != chosen else "")
    )
    print(
        "under the estimated test priors (resampled OOF rows, corrected as the submission): "
        + ", ".join(f"{n} {each[n].mean():.4f}" for n in top)
        + f"; {verdict}"
    )
    return best if switch else chosen
