"""The records of one ``make train``: ``TrainContext`` (what every job shares, resolved once by
the driver), ``Job`` (one (run, fold), the unit an executor queues) and ``FoldJob`` (a job made
concrete on a device: what a member kind fits). This module loads no torch at import: a worker
sets its environment (GPU, threads) before torch starts."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import pandas as pd

from ..competition import Competition
from ..competition.task import encode
from ..config import Recipe
from ..workspace import Workspace

if TYPE_CHECKING:
    import torch


@dataclass(frozen=True)
class Job:
    """One (run, fold) to train."""

    run: str
    fold: int

    @property
    def tag(self) -> str:
        return f"{self.run} fold {self.fold}"


def labels_by_row(comp: Competition, folds_df: pd.DataFrame) -> np.ndarray:
    """``(N_train,)`` class index (``(N_train, C)`` 0/1 for multi-label) of each row of
    ``comp.train`` from the folds file's labels (relabel.csv's count); -1 for a row the folds file
    does not carry (dropped by relabelling)."""
    y = encode(folds_df["label"], comp.classes, comp.task.kind)
    out = np.full((len(comp.train), *y.shape[1:]), -1, dtype=np.int64)
    out[folds_df["row"].to_numpy()] = y
    return out


@dataclass(frozen=True)
class TrainContext:
    """What every job of one ``make train`` shares, resolved once by the driver: a worker
    receives it whole (pickled) and never re-reads a recipe or the folds file."""

    comp: Competition
    ws: Workspace
    folds_df: pd.DataFrame  # the folds file with a ``row`` column (see assemble.train_rows)
    fhash: str
    recipes: dict[str, Recipe]
    device: str  # "cpu", "cuda", "cuda:1"; a worker that owns one GPU sees it as "cuda"
    labels: np.ndarray = field(repr=False)  # labels_by_row(comp, folds_df)
    track: frozenset[str] = frozenset()  # TRACK's trackers (pipeline/track/); none by default

    @classmethod
    def build(cls, comp, ws, folds_df, fhash, recipes, device: str) -> TrainContext:
        return cls(comp, ws, folds_df, fhash, recipes, device, labels_by_row(comp, folds_df))

    def done(self, job: Job) -> bool:
        return (self.ws.fold_dir(job.run, job.fold) / "done.json").is_file()

    def log(self, job: Job) -> Path:
        return self.ws.job_log(job.run, job.fold)

    def fold_job(self, job: Job, device: torch.device) -> FoldJob:
        return FoldJob(self, job.run, job.fold, device)


@dataclass(frozen=True)
class FoldJob:
    """One (run, fold) on a device: the context it belongs to and what follows from it."""

    ctx: TrainContext
    run: str
    fold: int
    device: torch.device

    @property
    def comp(self) -> Competition:
        return self.ctx.comp

    @property
    def ws(self) -> Workspace:
        return self.ctx.ws

    @property
    def recipe(self) -> Recipe:
        return self.ctx.recipes[self.run]

    @property
    def y_all(self) -> np.ndarray:
        """Labels by row of ``comp.train`` (-1: not in the folds file)."""
        return self.ctx.labels

    @property
    def rows(self) -> np.ndarray:
        """Every folds-file row's place in ``comp.train`` (and in the decode cache)."""
        return self.ctx.folds_df["row"].to_numpy()

    @property
    def folds(self) -> np.ndarray:
        """The fold of each folds-file row."""
        return self.ctx.folds_df["fold"].to_numpy()

    @property
    def train_rows(self) -> np.ndarray:
        return self.rows[self.folds != self.fold]

    @property
    def held_out(self) -> np.ndarray:
        """Rows of ``comp.train`` held out in this fold (scored, never trained on)."""
        return self.rows[self.folds == self.fold]

    @property
    def fdir(self) -> Path:
        return self.ws.fold_dir(self.run, self.fold)

    @property
    def tag(self) -> str:
        return f"{self.run} fold {self.fold}"
