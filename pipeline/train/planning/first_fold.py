"""What a run's first folds measured, for the re-plan's value check (``Replanner.first_folds``):
its score on those folds' held-out rows, and what it adds there to the runs already trained
(their OOF on the same rows), blended as the planner's value model blends (``value.blended``).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from ... import artifacts
from ...competition.task import encode
from .value import blended, signed_score


@dataclass(frozen=True)
class Measured:
    """On ``rows`` held-out images of the first folds: the run's score, and the blend's with
    and without it (``gain``: what the run adds; its score where no run is trained yet), all
    higher-is-better (``value.signed_score``)."""

    score: float
    gain: float
    rows: int
    base: tuple[str, ...]  # the trained runs it was blended with


def _probs(task, logits: np.ndarray) -> np.ndarray:
    return np.mean([task.probabilities(lg) for lg in logits], axis=0)  # views' mean


def measure(ctx, run: str, folds: list[int], trained: list[str]) -> Measured:
    """``run``'s ``folds`` held-out logits (their ``oof.npz``) against the labels of the folds
    file, alone and blended with the ``trained`` runs' ``oof.npz`` on the same rows (a run
    without one is left out). ``ctx``: the train stage's ``TrainContext``."""
    comp, ws, folds_df = ctx.comp, ctx.ws, ctx.folds_df
    task, rerun = comp.task, f"make train COMP={comp.root} RUNS={run}"
    parts = [artifacts.read_logits(ws.fold_dir(run, f) / "oof.npz", "oof", rerun) for f in folds]
    ids = np.concatenate([p["ids"].astype(str) for p in parts])
    pos = {i: n for n, i in enumerate(folds_df["id"].to_numpy().astype(str))}
    at = np.array([pos[i] for i in ids])
    y = encode(folds_df["label"], comp.classes, task.kind)[at]
    own = np.concatenate([_probs(task, p["logits"]) for p in parts])
    base, others = [], []
    for name in trained:
        path = ws.run_dir(name) / "oof.npz"
        if not path.is_file():
            continue
        oof = artifacts.read_logits(path, "oof", f"make train COMP={comp.root} RUNS={name}")
        where = {i: n for n, i in enumerate(oof["ids"].astype(str))}
        others.append(_probs(task, oof["logits"][:, [where[i] for i in ids]]))
        base.append(name)
    score = signed_score(task, y, own)
    if not others:
        return Measured(score, score, len(y), ())
    without = signed_score(task, y, blended(task, y, np.stack(others)))
    with_run = signed_score(task, y, blended(task, y, np.stack([*others, own])))
    return Measured(score, with_run - without, len(y), tuple(base))
