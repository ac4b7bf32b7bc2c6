"""What every kind's fold shares: its folder ``models/<comp>/<run>/fold<k>/`` and the files that
are its contract with the rest of the pipeline, whatever kind fitted it.

``best.pt`` (the whole model, loadable by ``model.backbone.create_model``), ``oof.npz`` and
``test.npz`` (``(V, n, C)`` logits under the recipe's views, ``write_fold_logits``),
``metrics.csv``, then ``done.json`` (``artifacts.FoldDone``) last: a fold with it is skipped on
re-run. A kind that trains in epochs also keeps ``last.pt``, the resume state, rewritten
atomically each epoch and removed when the fold is done: ``run_epochs`` is the one epoch loop
of every such kind (resume, epoch, its events on disk before ``last.pt``, progress line).
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import numpy as np
from tqdm import tqdm

from .. import artifacts
from ..model.checkpoint import checkpoint_bytes, read_checkpoint
from ..track.board import Board
from .context import FoldJob


def logits_fields(comp, views, fhash: str) -> dict[str, np.ndarray]:
    """What every logits file of a run carries beside its ids and logits."""
    return {
        "classes": np.array(comp.classes),
        "views": np.array(views),
        "folds_hash": np.array(fhash),
        "task": np.array(comp.task.kind),
    }


def write_fold_logits(job: FoldJob, va_rows: np.ndarray, oof: np.ndarray, test: np.ndarray) -> None:
    """The fold's ``oof.npz`` (its held-out rows ``va_rows`` of ``comp.train``) and ``test.npz``,
    ``(V, n, C)`` logits under the recipe's views: the contract of every kind of fold."""
    comp = job.comp
    common = logits_fields(comp, job.recipe.tta, job.ctx.fhash)
    artifacts.write_logits(
        job.fdir / "oof.npz",
        ids=comp.train["id"].to_numpy()[va_rows],
        fold=np.full(len(va_rows), job.fold),
        logits=oof,
        **common,
    )
    artifacts.write_logits(
        job.fdir / "test.npz", ids=comp.test["id"].to_numpy(), logits=test, **common
    )


def save_torch(path: Path, obj: dict) -> str:
    """``torch.save`` through an atomic write: a kill never leaves half a checkpoint. Returns
    the file's sha256 (``done.json``'s ``best_sha256`` for ``best.pt``)."""
    data, digest = checkpoint_bytes(obj)
    artifacts.atomic_write_bytes(path, data)
    return digest


def damaged_fix(job: FoldJob, path: Path) -> str:
    """What to do about a damaged checkpoint of the fold: retrain it."""
    if path.name == "last.pt":
        return (
            f"delete it (the fold restarts from its first epoch) or delete {job.fdir} to retrain "
            "the fold, then re-run make train"
        )
    return f"delete {job.fdir} and re-run make train: that fold is retrained"


def load_resume(job: FoldJob, state) -> dict:
    """Load the fold's ``last.pt`` (checked: ``model.checkpoint``) into ``state``
    (``loop.TrainState``); returns what it held (epoch, history), or {} if none."""
    path = job.fdir / "last.pt"
    if not path.is_file():
        return {}
    saved, _ = read_checkpoint(path, state.device, damaged_fix(job, path))
    state.load_state_dict(saved)
    print(f"resuming {path.parent} after epoch {saved['epoch'] + 1}")
    return saved


def load_best(job: FoldJob, device) -> tuple[dict, str]:
    """The fold's ``best.pt`` (checked) and its sha256, for ``done.json``."""
    path = job.fdir / "best.pt"
    return read_checkpoint(path, device, damaged_fix(job, path))


def epoch_score(row: dict) -> float:
    """An epoch's held-out score under the competition's metric (``metrics.csv``/``last.pt``
    history rows); rows of runs trained before the metric drove epochs have accuracy only."""
    return row.get("val_score", row["val_acc"])


# metrics.csv column -> TensorBoard tag of a fold's epoch (val_score: the competition's metric)
EPOCH_TAGS = {
    "train_loss": "train/loss",
    "train_acc": "train/accuracy",
    "val_loss": "val/loss",
    "val_acc": "val/accuracy",
    "lr": "lr",
    "img_per_s": "img_per_s",
}


def fold_board(job: FoldJob, first_step: int) -> Board:
    """The fold's TensorBoard run ``<run>/fold<k>``: event files in the fold folder itself (a
    Ray task's return carries the fold folder's files), off unless ``TRACK`` has tensorboard.
    ``first_step``: the first epoch this call writes; steps from there that a killed call wrote
    are purged."""
    return Board(job.fdir, "tensorboard" in job.ctx.track, purge_step=first_step)


def epoch_scalars(row: dict, metric: str) -> dict[str, float]:
    """A ``metrics.csv`` row as TensorBoard scalars: ``EPOCH_TAGS`` and ``val/<metric>``."""
    out = {tag: row[col] for col, tag in EPOCH_TAGS.items() if col in row}
    if "val_score" in row:
        out[f"val/{metric}"] = row["val_score"]
    return out


# trains and validates epoch e (0-based) after the history so far: its metrics.csv row (with
# "epoch": e + 1 first) and its progress line, or None to stop early
Epoch = Callable[[int, list[dict]], tuple[dict, str] | None]


def run_epochs(
    job: FoldJob, state, epoch: Epoch, extra: Callable[[], dict] | None = None
) -> list[dict]:
    """Train the fold from its last finished epoch to the recipe's last: resume ``state``
    (``state_dict``, ``load_state_dict``, ``device``) from ``last.pt`` (``load_resume``), then
    for each epoch left call ``epoch`` (None: an early stop). Each row joins the history and
    goes to the fold's TensorBoard run at step = epoch; its events are on disk before
    ``last.pt`` (the state, ``epoch``, ``history``, then ``extra()``'s entries) says the epoch
    is done: a kill between them re-runs the epoch, and the resumed call's purge drops what it
    wrote. Then the epoch's progress line. Returns the history, every epoch's row."""
    saved = load_resume(job, state)
    history: list[dict] = saved.get("history", [])
    with fold_board(job, len(history) + 1) as board:
        for e in range(saved.get("epoch", -1) + 1, job.recipe.epochs):
            done = epoch(e, history)
            if done is None:
                break
            row, line = done
            history.append(row)
            more = extra() if extra is not None else {}
            board.scalars(epoch_scalars(row, job.comp.task.metric), e + 1)
            board.flush()
            last = {**state.state_dict(), "epoch": e, "history": history, **more}
            save_torch(job.fdir / "last.pt", last)
            tqdm.write(line)
    return history
