"""Leak-free soft targets for the students of each fold, from a finished ensemble (the teacher).

A student of fold k is scored on fold k's held-out rows, so nothing it learns from may have been
computed with fold k's labels. Its teacher's OOF logits cannot serve: the OOF logits of a row of
fold j come from fold j's model, which trained on fold k. So, for fold k:

1. each teacher member's **fold-k model** (trained without fold k; refused when fold k's labels
   chose it: a best epoch before the recipe's last, or an early stop) predicts fold k's training
   rows (``<run>/fold<k>/fit.npz``, cached) and the test images (its ``fold<k>/test.npz``);
2. each member speaks through the mean of its TTA views (no view is chosen: a choice would be
   made on labels), and the teacher's method (``ensemble_state.json``) is fitted again on the
   OOF rows of the other folds only: the fit nested CV makes without fold k;
3. that fit combines the fold-k models' logits into probabilities, written with the folds whose
   labels made them (``label_folds``, never k) to ``teachers/<teacher>/fold<k>.npz``.

A method with fitted weights (``weighted``, ``stack``, ...) still sees the OOF logits of the
other folds, made by models that trained on fold k: the second-order route every nested-CV score
accepts. No label of fold k is ever a target of a fit that feeds fold k's student, and with a
fixed rule (``soft``, ``logit``, ``hard``, ``rank``) fold k's targets do not change at all when
fold k's labels do (``tests/test_teacher.py`` retrains a teacher to show it).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch

from .. import artifacts
from ..competition import Competition
from ..disk import faults, locks
from ..ensemble.members import OOF, combine_label_views, combine_views, load_folds, load_member
from ..ensemble.stage import method_factory
from ..errors import ArtifactError, PipelineError
from ..model.infer import normalisation
from ..predict.saved import Member, Saved, load_fold_model, load_saved
from ..train.kinds import get_kind
from ..workspace import Workspace


@dataclass
class Teacher:
    """A saved ensemble read once for all the folds it teaches: its state and members, the
    folds, each member's OOF logits under the mean of its views (nothing chosen on labels),
    and what its members' kinds reuse from fold to fold (a feature member's embeddings)."""

    name: str
    saved: Saved
    oof: OOF
    state_hash: str
    member_oof: dict[str, np.ndarray]  # run -> (N, C)
    memo: dict[Any, Any] = field(default_factory=dict)  # what the members' kinds reuse by fold


def load_teacher(comp: Competition, ws: Workspace, name: str, student: str = "") -> Teacher:
    """Read and check the teacher ``name`` of ``student``: same folds, not its own member."""
    saved = load_saved(ws, name, all_rows=False)  # each fold's model teaches its fold
    oof = load_folds(comp, ws)
    if saved.state["folds_hash"] != oof.folds_hash:
        raise ArtifactError(
            f"teacher {name!r} was fitted on other folds than {ws.folds_csv}; re-run: "
            f"make ensemble COMP={comp.root} NAME={name}"
        )
    if student in saved.state["members"]:
        raise PipelineError(
            f"{student} names teacher {name!r}, which has {student} among its members: a run "
            f"cannot learn from itself; make the teacher without it (make ensemble NAME={name} "
            "RUNS=...) or name another teacher"
        )
    combine = combine_label_views if comp.task.multilabel else combine_views
    member_oof = {
        m.run: combine(load_member(comp, ws, m.run, oof)[0]["logits"]) for m in saved.members
    }
    return Teacher(name, saved, oof, state_hash(ws, name), member_oof)


def teach(comp: Competition, ws: Workspace, device: torch.device, run: str, teacher: str, folds):
    """Write (or reuse) the targets of ``folds`` for student ``run`` of ``teacher``."""
    t = load_teacher(comp, ws, teacher, run)
    for k in folds:
        fold_targets(comp, ws, teacher, k, device, teacher=t)


def state_hash(ws: Workspace, name: str) -> str:
    """What the saved ensemble is: its state files' hashes (a re-made teacher is a new one)."""
    out = ws.submission_dir(name)
    files = [out / "ensemble_state.json", out / "ensemble_state.npz"]
    return artifacts.text_hash("".join(artifacts.file_hash(p) for p in files if p.is_file()))


def fold_targets(
    comp: Competition,
    ws: Workspace,
    name: str,
    fold: int,
    device: torch.device,
    student: str = "",
    teacher: Teacher | None = None,
) -> Path:
    """``teachers/<name>/fold<fold>.npz``: the teacher's probabilities for fold ``fold``'s
    training rows and the test images, from what never saw fold ``fold``'s labels."""
    t = teacher or load_teacher(comp, ws, name, student)
    path, oof = ws.teacher_targets(name, fold), t.oof
    key = {"folds_hash": oof.folds_hash, "state_hash": t.state_hash}
    if _matching(path, key):
        return path
    lock = path.with_name(f".{path.name}.lock")
    with locks.wait_lock(lock, f"teacher {name!r}'s targets for fold {fold}"):
        if not _matching(path, key):  # else written by the process this one waited for
            faults.hold_point(f"teacher:{name}/fold{fold}")
            _write_fold_targets(comp, ws, t, name, fold, device, path)
    return path


def _write_fold_targets(comp, ws, t: Teacher, name: str, fold: int, device, path: Path) -> None:
    oof, task = t.oof, comp.task
    if fold not in set(oof.fold.tolist()):
        raise PipelineError(f"fold {fold} is not in {ws.folds_csv}")
    fit = oof.fold != fold
    on_fit, on_test = _fold_model_logits(comp, ws, t, fold, device)
    method = str(t.saved.state["method"])
    on_oof = np.stack([t.member_oof[m.run] for m in t.saved.members])
    est = method_factory(method, task)().fit(on_oof[:, fit], oof.y[fit])
    score = float(task.score(oof.y[~fit], est.predict_proba(on_oof[:, ~fit])))
    label_folds = np.unique(oof.fold[fit])
    artifacts.write_logits(
        path,
        ids=oof.folds["id"].astype(str).to_numpy()[fit],
        probs=est.predict_proba(on_fit).astype(np.float32),
        test_ids=comp.test["id"].astype(str).to_numpy(),
        test_probs=est.predict_proba(on_test).astype(np.float32),
        classes=np.array(comp.classes),
        folds_hash=np.array(oof.folds_hash),
        state_hash=np.array(t.state_hash),
        fold=np.array(fold),
        label_folds=label_folds,
        members=np.array(t.saved.state["members"]),
        method=np.array(method),
        held_score=np.array(score),
    )
    print(
        f"teacher {name!r} for fold {fold}: {method} of {len(on_oof)} members' fold-{fold} "
        f"models, fitted on folds {', '.join(map(str, label_folds))} ({int(fit.sum())} rows); "
        f"on fold {fold} itself (never used) it scores {task.metric} {score:.4f}; wrote {path}"
    )


def _fold_model_logits(
    comp: Competition, ws: Workspace, t: Teacher, fold: int, device: torch.device
) -> tuple[np.ndarray, np.ndarray]:
    """``(M, n, C)`` and ``(M, T, C)``: each member's fold-``fold`` model on that fold's training
    rows and on the test images, under the mean of its views."""
    combine = combine_label_views if comp.task.multilabel else combine_views
    fit = t.oof.fold != fold
    ids = t.oof.folds["id"].astype(str).to_numpy()[fit]
    rows = pd.Index(comp.train["id"].astype(str)).get_indexer(ids)
    on_fit, on_test = [], []
    for m in t.saved.members:
        rerun = f"make train COMP={comp.root} RUNS={m.run}"
        test = artifacts.read_logits(ws.fold_dir(m.run, fold) / "test.npz", "test", rerun)
        on_fit.append(combine(fit_logits(comp, ws, m, fold, ids, rows, t, device)))
        on_test.append(combine(test["logits"]))
    return np.stack(on_fit), np.stack(on_test)


def _matching(path: Path, key: dict[str, str]) -> dict[str, np.ndarray] | None:
    """The arrays of a cached ``.npz`` whose ``key`` entries all match, else None (absent,
    unreadable, older or made from other inputs: made again)."""
    if not path.is_file():
        return None
    try:
        with np.load(path, allow_pickle=False) as z:
            if all(k in z.files and str(z[k]) == v for k, v in key.items()):
                return {k: z[k] for k in z.files}
    except Exception:
        pass
    return None


def fit_logits(
    comp: Competition,
    ws: Workspace,
    m: Member,
    fold: int,
    ids: np.ndarray,
    rows: np.ndarray,
    t: Teacher,
    device: torch.device,
) -> np.ndarray:
    """``(V, len(rows), C)``: fold ``fold``'s model of member ``m`` on rows ``rows`` of
    ``comp.train`` (its own training rows), under each of its views; cached in ``fit.npz``."""
    rerun = f"make train COMP={comp.root} RUNS={m.run}"
    done = artifacts.read_done(ws.fold_dir(m.run, fold) / "done.json", rerun)
    kind = get_kind(m.recipe.kind)
    if why := kind.holdout_reason(done, m.recipe, fold):
        raise PipelineError(
            f"teacher member {m.run} fold {fold} cannot teach fold {fold}'s student: {why}; or "
            "leave the run out of the teacher (make ensemble NAME=... RUNS=...)"
        )
    path = ws.fit_logits(m.run, fold)
    ckpt = artifacts.file_hash(m.weights[fold])
    key = {"checkpoint": ckpt, "folds_hash": t.oof.folds_hash}
    cached = _matching(path, key)
    if cached is not None and cached["ids"].astype(str).tolist() == list(ids):
        return cached["logits"]
    model = load_fold_model(m, fold, len(comp.classes), device)
    norm = normalisation(m.mean, m.std, device)
    desc = f"teacher {m.run} fold {fold}: its training rows"
    logits = kind.logits_on_rows(comp, ws, m.recipe, model, norm, rows, device, t.memo, desc)
    key = {k: np.array(v) for k, v in key.items()}
    artifacts.write_logits(path, ids=ids, views=np.array(m.recipe.tta), logits=logits, **key)
    return logits
