"""What a student (a recipe with ``teacher = "<ensemble>"``) learns from in one fold.

The teacher's soft targets for fold k are an artifact, ``<models>/<comp>/teachers/<teacher>/
fold<k>.npz``, written before training by ``pipeline/teach`` from what never saw fold k's
labels: the teacher members' fold-k models, combined by the teacher's method fitted on the OOF
rows of the other folds. This module reads it, checks it is the one for these folds and this
fold, and mixes it with the labels:

* on the fold's training rows, ``(1 - distill_weight) * label + distill_weight * teacher``
  (the label smoothed by the recipe's ``label_smoothing``; for multi-label, per label);
* test images whose teacher confidence reaches ``pseudo_floor`` (> 0) join training with the
  teacher's probabilities as their targets (soft pseudo-labels).

Fold k's held-out rows get nothing: they are scored, never taught.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from ... import artifacts
from ...competition import Competition
from ...config import Recipe
from ...errors import ArtifactError
from ...workspace import Workspace

TARGET_KEYS = {"ids", "probs", "test_ids", "test_probs", "classes", "folds_hash", "label_folds"}


@dataclass(frozen=True)
class Lesson:
    """Targets of one student fold: ``soft (N_train, C)`` by row of ``comp.train`` (zero
    outside the fold's training rows), and the test images that join training (``pseudo``,
    indices into ``comp.test``) with their targets ``pseudo_soft (P, C)``."""

    soft: np.ndarray
    pseudo: np.ndarray
    pseudo_soft: np.ndarray


def confidence(probs: np.ndarray, multilabel: bool) -> np.ndarray:
    """How sure the teacher is of each row: the top class probability, or for multi-label the
    least sure label's ``max(p, 1 - p)``."""
    if multilabel:
        return np.maximum(probs, 1 - probs).min(axis=1)
    return probs.max(axis=1)


def lesson(
    comp: Competition,
    ws: Workspace,
    recipe: Recipe,
    fold: int,
    fhash: str,
    tr_rows: np.ndarray,
    y_all: np.ndarray,
) -> Lesson:
    """The fold's targets from ``recipe.teacher``'s artifact, mixed with the labels of
    ``tr_rows`` (rows of ``comp.train``; ``y_all`` their class index, or 0/1 per label)."""
    path = ws.teacher_targets(recipe.teacher, fold)
    rerun = f"make train COMP={comp.root} (it writes the teacher's targets before training)"
    t = artifacts.read_npz(path, TARGET_KEYS, rerun)
    if str(t["folds_hash"]) != fhash:
        raise ArtifactError(f"{path} was made for other folds; delete it and re-run: {rerun}")
    if fold in set(t["label_folds"].tolist()):  # the line a leak would have to cross
        raise ArtifactError(
            f"{path} lists fold {fold} among the folds whose labels made it: it cannot teach "
            f"fold {fold}; delete it and re-run: {rerun}"
        )
    if t["classes"].astype(str).tolist() != list(comp.classes):
        raise ArtifactError(f"{path} has other classes than the competition; re-run: {rerun}")
    ids = comp.train["id"].astype(str).to_numpy()
    pos = {i: n for n, i in enumerate(t["ids"].astype(str))}
    missing = [ids[r] for r in tr_rows if ids[r] not in pos]
    if missing:
        raise ArtifactError(
            f"{path} has no target for train id {missing[0]!r} of fold {fold}'s training rows; "
            f"delete it and re-run: {rerun}"
        )
    if t["test_ids"].astype(str).tolist() != comp.test["id"].astype(str).tolist():
        raise ArtifactError(f"{path} was made for other test images; delete it and re-run: {rerun}")
    multilabel = comp.task.multilabel
    n_classes = len(comp.classes)
    teacher = t["probs"][[pos[ids[r]] for r in tr_rows]].astype(np.float32)
    s = recipe.label_smoothing
    if multilabel:
        hard = y_all[tr_rows].astype(np.float32) * (1 - s) + s / 2
    else:
        hard = np.full((len(tr_rows), n_classes), s / n_classes, dtype=np.float32)
        hard[np.arange(len(tr_rows)), y_all[tr_rows]] += 1 - s
    w = recipe.distill_weight
    soft = np.zeros((len(comp.train), n_classes), dtype=np.float32)
    soft[tr_rows] = (1 - w) * hard + w * teacher
    test_probs = t["test_probs"].astype(np.float32)
    if recipe.pseudo_floor > 0:
        pseudo = np.flatnonzero(confidence(test_probs, multilabel) >= recipe.pseudo_floor)
    else:
        pseudo = np.zeros(0, dtype=np.int64)
    return Lesson(soft, pseudo, test_probs[pseudo])


def describe(lesson_: Lesson, recipe: Recipe, n_test: int) -> str:
    """One console line: what the student of a fold learns from."""
    pseudo = (
        f"; {len(lesson_.pseudo)} of {n_test} test images at confidence >= "
        f"{recipe.pseudo_floor:g} join as soft pseudo-labels"
        if recipe.pseudo_floor > 0
        else ""
    )
    return f"teacher {recipe.teacher!r}: targets {1 - recipe.distill_weight:g} label + " + (
        f"{recipe.distill_weight:g} teacher{pseudo}"
    )
