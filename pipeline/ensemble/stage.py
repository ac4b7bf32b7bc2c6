"""The ensemble stage: combine trained runs into one prediction, every method scored honestly.

Reads ``folds/<comp>.csv`` and ``models/<comp>/<run>/{oof,test}.npz``; writes
``submissions/<comp>/<name>/{leaderboard.csv, submission.csv, oof_ensemble.npz, ensemble.json}``.
The estimators live in ``blend`` (fixed rules), ``optimise`` (searched weights) and
``stacking``; ``nested`` scores each one by nested CV over the folds, and "auto" picks the best
nested score under the competition's metric. The report stage reads ``oof_ensemble.npz`` afterwards (the CLI chains it).
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime
from functools import partial
from typing import Any

import numpy as np
import pandas as pd

from .. import artifacts
from ..competition import Competition
from ..competition.metrics import METRICS
from ..competition.submission import write_submission
from ..competition.task import Task
from ..errors import PipelineError
from ..workspace import Workspace
from .members import OOF, Members, duplicate_test_labels, load_members, print_members
from .methods import METHODS, MULTILABEL, canonical, method_class
from .nested import choose, leaderboard, print_leaderboard
from .post import POSTS, WithPost, post_for
from .prior import apply_prior, check_prior, describe, fit_prior, top_movers
from .state import save_state
from .test_priors import SUFFIX, Board, fit_under_test_priors, fold_priors, under_test_priors

OUTPUTS = (
    "ensemble.json",
    "leaderboard.csv",
    "submission.csv",
    "oof_ensemble.npz",
    "ensemble_state.{json,npz}",
)


def ensemble_stage(
    comp: Competition,
    ws: Workspace,
    runs: list[str] | None = None,
    method: str = "auto",
    name: str = "ensemble",
    methods: list[str] | None = None,
    dup_labels: bool = False,
    prior: str = "auto",
) -> dict[str, Any]:
    """Fit every method on the OOF logits, score it by nested CV, write ``submissions/<comp>/<name>/``.

    Members are ``runs`` (default: every trained run); each uses the TTA view (or the mean of its
    views) best on its OOF rows. ``method`` "auto" takes the best nested score; ``methods``
    limits which are tried (aliases such as "geo" count as their method). ``dup_labels`` turns
    on the test-label trick (see ``_dup_labels``). ``prior``: the test priors the submission
    uses (``prior.py``: auto adjusts only when a shift is detected). Returns the
    ``ensemble.json`` content.
    """
    check_prior(prior, comp.task)
    tried = list(dict.fromkeys(canonical(m) for m in (methods or METHODS)))
    post = ""
    if method != "auto":
        method, _, post = method.partition("+")
        method = canonical(method)
        tried += [] if method in tried else [method]
    oof, members = load_members(comp, ws, list(runs or []))
    makers = _candidates(tried, comp.task)
    table, fitted, nested = leaderboard(
        members.runs, members.oof, oof.y, oof.fold, makers, task=comp.task
    )
    if post and f"{method}+{post}" not in set(table["name"]):
        raise PipelineError(
            f"METHOD={method}+{post}: no such post-processing for metric {comp.task.metric} "
            f"(the leaderboard has {', '.join(table['name'][table['kind'] == 'method'])})"
        )
    chosen = choose(table, f"{method}+{post}" if post else method)
    print_members(members.summaries)
    print("leaderboard (nested = fitted on K-1 folds, scored on the held-out fold):")
    print_leaderboard(table, chosen)
    train_prior = class_prior(oof.y, len(comp.classes), comp.task)
    board = Board(table, fitted, nested, makers)
    chosen, est, oof_probs, test_probs, shift, prior_state = _prior_and_choice(
        comp, prior, method == "auto", board, members, oof, chosen
    )
    table = board.table
    out = ws.submission_dir(name)
    artifacts.write_csv(out / "leaderboard.csv", table)  # with the test priors' column
    test_pred = test_probs.argmax(axis=1)
    trick = {"enabled": False}
    if dup_labels:
        if comp.task.format != "label" or comp.task.multilabel:
            raise PipelineError(
                f"DUP_LABELS=1 sets labels, but {comp.sample_path.name} wants "
                f"{comp.task.format.replace('_', ' ')}; run without DUP_LABELS"
            )
        test_pred, trick = _dup_labels(comp, ws, test_pred)
    write_submission(comp, out / "submission.csv", test_pred, test_probs)
    _write_oof(comp, ws, name, oof, members, oof_probs)
    meta = _state_meta(comp, ws, members, oof, dup_labels)
    meta.update(
        prior=prior,
        train_prior=None if train_prior is None else train_prior.tolist(),
        label_shift=prior_state,  # calibration, estimator, check: make predict decides alike
    )
    save_state(out, chosen, est, meta)
    summary = _summary(comp, name, chosen, method, members, est, table)
    summary.update(test_label_trick=trick, folds_hash=oof.folds_hash, label_shift=shift)
    if method == "auto" and "nested_score_test_priors" in table:
        summary["chosen_by"] += " under the estimated test priors"
    artifacts.write_json(out / "ensemble.json", summary)  # last: its presence means complete
    print(f"wrote {out}/: {', '.join(OUTPUTS)}")
    return summary


def ensemble_name(ws: Workspace, name: str) -> str:
    """``NAME``, or the next of its series when the ledger records that folder as sent to
    Kaggle (``artifacts.kept_name``): said in one line."""
    new = artifacts.kept_name(ws.ledger, name)
    if new != name:
        print(
            f"{ws.submission_dir(name)} was sent to Kaggle at "
            f"{artifacts.sent_to_kaggle(ws.ledger, name)} ({ws.ledger}): kept as sent; this "
            f"ensemble goes to {ws.submission_dir(new)} (make submit NAME={new})"
        )
    return new


def class_prior(y: np.ndarray, n_classes: int, task: Task) -> np.ndarray | None:
    """The train class priors of the OOF rows (None for multi-label: no single class)."""
    if task.multilabel:
        return None
    return np.bincount(np.asarray(y), minlength=n_classes) / len(y)


def _candidates(tried: list[str], task: Task) -> dict[str, Callable[[], Any]]:
    """Factories of the methods to score: each tried method, plus each with the metric's
    post-processing (``stack+cuts``) where it has one; Caruana climbs the metrics whose
    ``direct`` trait says so (ranking metrics) directly."""
    direct = METRICS[task.metric].direct
    out: dict[str, Callable[[], Any]] = {}
    if task.multilabel:
        left = [m for m in tried if m not in MULTILABEL]
        tried = [m for m in tried if m in MULTILABEL]
        if left:
            print(f"left off for multi-label members (single-label methods): {', '.join(left)}")
        if not tried:
            raise PipelineError(
                f"none of the methods tried works on multi-label members; use METHODS with "
                f"some of {', '.join(MULTILABEL)}"
            )
    for m in tried:
        cls = method_class(m, task.multilabel)
        out[m] = partial(cls, metric=task.metric) if m == "caruana" and direct else cls
    post = post_for(task.metric, task.kind)
    if post is not None:
        for m in tried:
            out[f"{m}+{post}"] = partial(lambda make, p: WithPost(make(), POSTS[p]()), out[m], post)
    return out


def method_factory(name: str, task: Task) -> Callable[[], Any]:
    """A factory of the method ``name`` as the leaderboard scored it (``logit``, ``stack+cuts``,
    ...): what refitting a saved ensemble on other rows needs (a student's teacher per fold).
    ``<method>@test`` refits as ``<method>``: a teacher's targets are train rows, which come
    as the train classes do."""
    name = name.removesuffix(SUFFIX)
    base = canonical(name.partition("+")[0])
    candidates = _candidates([base], task)
    if name not in candidates:
        raise PipelineError(f"method {name!r} is not one this pipeline fits for {task.metric}")
    return candidates[name]


def _state_meta(
    comp: Competition, ws: Workspace, members: Members, oof: OOF, dup_labels: bool
) -> dict[str, Any]:
    """What applying the saved ensemble to new logits must match: members, views, classes, and
    what predicting new test images needs (each member's recipe, the folds, the sample's
    columns, the members' OOF scores for dropping the weakest under a time limit)."""
    recipes = {}
    for run in members.runs:
        cfg = artifacts.read_run_config(ws.run_dir(run) / "config.toml") or {}
        recipes[run] = cfg.get("recipe", {})
    return {
        "comp": comp.name,
        "slug": comp.slug,
        "members": members.runs,
        "views": [m["view"] for m in members.summaries],
        "member_scores": [m["oof_score"] for m in members.summaries],
        "recipes": recipes,
        "k": int(oof.fold.max()) + 1,
        "id_col": comp.id_col,
        "target_col": comp.target_col,
        "class_columns": list(comp.class_columns),
        "classes": list(comp.classes),
        "task": comp.task.kind,
        "format": comp.task.format,
        "metric": comp.task.metric,
        "positive": comp.task.positive,
        "folds_hash": oof.folds_hash,
        "greater_is_better": comp.task.greater_is_better,
        "dup_labels": dup_labels,
    }


def _prior_and_choice(comp, prior, auto, board: Board, members, oof, chosen):
    """The chosen method under ``PRIOR`` (``_with_prior``); when a label-shift correction is
    applied, the weighted methods fitted again on OOF rows weighted to the estimated test
    priors (``<method>@test``), the leaderboard scored under those priors, and with ``auto``
    the method they favour (its own label-shift state). Returns the method, its fitted
    estimator, OOF and corrected test probabilities, the label-shift record and state; the
    board's table gains the rows and the column."""
    est = board.fitted[chosen]
    oof_probs, test_raw = est.predict_proba(members.oof), est.predict_proba(members.test)
    test_probs, shift, state = _with_prior(comp, prior, oof, oof_probs, test_raw)
    if shift.get("applied") and "test_prior" in shift:
        priors = fold_priors(comp, state, oof, oof_probs, test_raw)
        fit_under_test_priors(comp, board, members, oof, shift, priors)
        again = under_test_priors(comp, board, members, oof, shift, priors, chosen, auto)
        if again != chosen:  # the shifted test favours it: it is the submission
            chosen, est = again, board.fitted[again]
            oof_probs, test_raw = est.predict_proba(members.oof), est.predict_proba(members.test)
            test_probs, shift, state = _with_prior(comp, prior, oof, oof_probs, test_raw)
    return chosen, est, oof_probs, test_probs, shift, state


def _with_prior(comp, prior: str, oof: OOF, oof_probs, test):
    """The chosen method's test probabilities ``test`` under ``PRIOR``, the label-shift record
    (with the top movers) and the state ``make predict`` re-decides with (``prior.fit_prior``,
    its check on the method's OOF probabilities at the test set's size); one line on it."""
    state = fit_prior(prior, comp.task, oof.y, oof_probs, oof.fold, len(test))
    probs, shift = apply_prior(state, comp.task, test)
    shift["top_movers"] = top_movers(shift, comp.classes)
    print(describe(shift, comp.classes))
    return probs, shift, state


def _write_oof(
    comp: Competition, ws: Workspace, name: str, oof: OOF, members: Members, oof_probs
) -> None:
    """``oof_ensemble.npz``: the chosen method's OOF probs and each member's OOF argmax, which
    is all the report stage needs."""
    artifacts.write_logits(
        ws.submission_dir(name) / "oof_ensemble.npz",
        ids=oof.folds["id"].to_numpy(),
        classes=np.array(comp.classes),
        probs=np.asarray(oof_probs, dtype=np.float32),
        members=np.array(members.runs),
        member_preds=members.oof.argmax(axis=2).astype(np.int32),
        folds_hash=np.array(oof.folds_hash),
    )


def _dup_labels(comp: Competition, ws: Workspace, pred: np.ndarray) -> tuple[np.ndarray, dict]:
    """The opt-in test-label trick: a test image that duplicates train images of one label gets
    that label (``folds/<comp>.duplicates.csv`` from make folds). Returns new ``pred (T,)`` and
    what changed, for ensemble.json."""
    known = duplicate_test_labels(comp, ws)
    pos = pd.Index(comp.test["id"].astype(str)).get_indexer(list(known))
    new = artifacts.label_indices(pd.Series(list(known.values())), comp.classes)
    out = pred.copy()
    out[pos] = new
    changed = [str(i) for i, p, n in zip(known, pred[pos], new, strict=True) if p != n]
    print(
        f"test-label trick: {len(known)} test images duplicate a train image; {len(changed)} changed"
    )
    return out, {"enabled": True, "n_test_duplicates": len(known), "changed_ids": changed}


def _summary(
    comp: Competition, name: str, chosen: str, method: str, members: Members, est: Any, table
) -> dict[str, Any]:
    """The ``ensemble.json`` content (without the trick record and folds hash)."""
    row = table.set_index("name").loc[chosen]
    return {
        "name": name,
        "comp": comp.name,
        "method": chosen,
        "chosen_by": f"nested {comp.task.metric}" if method == "auto" else "user",
        "task": comp.task.kind,
        "format": comp.task.format,
        "metric": comp.task.metric,
        "oof_score": float(row["oof_score"]),
        "nested_score": float(row["nested_score"]),
        "members": members.summaries,
        "weights": {run: float(w) for run, w in zip(members.runs, est.weights_, strict=True)},
        "leaderboard": table.to_dict(orient="records"),
        "oof_accuracy": float(row["oof_accuracy"]),
        "oof_log_loss": float(row["oof_log_loss"]),
        "nested_accuracy": float(row["nested_accuracy"]),
        "nested_log_loss": float(row["nested_log_loss"]),
        "n_train": members.oof.shape[1],
        "n_test": len(comp.test),
        "n_classes": len(comp.classes),
        "created": datetime.now(UTC).isoformat(timespec="seconds"),
    }
