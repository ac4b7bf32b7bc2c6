"""One (run, fold): set up, train epoch by epoch with exact resume, then predict OOF and test.

Its folder ``models/<comp>/<run>/fold<k>/`` holds ``last.pt`` (resume state, rewritten
atomically each epoch), ``best.pt`` (weights of the best epoch), ``metrics.csv``, ``curves.png``,
``oof.npz``, ``test.npz``, then ``done.json`` (the fold is skipped on re-run).
"""

from __future__ import annotations

import io
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
import torch
from tqdm import tqdm

from .. import artifacts
from ..competition import Competition
from ..competition.task import encode
from ..config import Recipe
from ..layout import Workspace
from . import loop, student
from .backbone import create_model, data_config
from .curves import plot_curves
from .data import CachedImages, Joined, auto_workers, build_cache, loader_transform, make_loader


@dataclass(frozen=True)
class FoldJob:
    """One (run, fold) to train: its inputs, fixed before anything runs."""

    comp: Competition
    ws: Workspace
    folds_df: pd.DataFrame  # the folds file with a ``row`` column: each row's place in comp.train
    fhash: str
    run: str
    recipe: Recipe
    fold: int
    device: torch.device

    @property
    def fdir(self) -> Path:
        return self.ws.fold_dir(self.run, self.fold)

    @property
    def tag(self) -> str:
        return f"{self.run} fold {self.fold}"


@dataclass(frozen=True)
class FoldSetup:
    """What ``setup_fold`` builds for a job: the model and its normalisation, the train decode
    cache, the held-out rows and labels, the training state and the loader."""

    model: torch.nn.Module
    cfg: dict  # timm data config (mean, std, ...)
    norm: tuple[torch.Tensor, torch.Tensor]
    train_imgs: np.ndarray  # (N_train, S, S, 3) uint8, every row of comp.train
    va_rows: np.ndarray  # rows of train_imgs held out in this fold
    y_all: np.ndarray  # (N_train,) class index by train row; -1: not in the folds file
    state: loop.TrainState
    loader: torch.utils.data.DataLoader


def train_fold(
    comp: Competition,
    ws: Workspace,
    folds_df: pd.DataFrame,
    fhash: str,
    run: str,
    recipe: Recipe,
    fold: int,
    device: torch.device,
) -> None:
    """Train one (run, fold) to the end, resuming from ``last.pt`` when a previous call died."""
    t0 = time.perf_counter()
    job = FoldJob(comp, ws, folds_df, fhash, run, recipe, fold, device)
    setup = setup_fold(job)
    history = run_epochs(job, setup)
    finish_fold(job, setup, history, time.perf_counter() - t0)


def setup_fold(job: FoldJob) -> FoldSetup:
    """Model (same initial weights on every restart), decode cache, loader, optimizer state."""
    r, dev, fold, comp = job.recipe, job.device, job.fold, job.comp
    torch.manual_seed(r.seed + fold)
    rows, folds = job.folds_df["row"].to_numpy(), job.folds_df["fold"].to_numpy()
    y = encode(job.folds_df["label"], comp.classes, comp.task.kind)  # (N,) or (N, C) multi-label
    y_all = np.full((len(comp.train), *y.shape[1:]), -1, dtype=np.int64)
    y_all[rows] = y
    model = create_model(r, len(comp.classes)).to(dev)
    cfg = data_config(model, r)
    norm = (torch.tensor(cfg["mean"], device=dev), torch.tensor(cfg["std"], device=dev))
    cache = job.ws.decode_cache("train", r.image_size)
    train_imgs = build_cache(comp.root, comp.train["path"].tolist(), r.image_size, cache)
    va_rows = rows[folds == fold]  # rows of the decode cache, i.e. of comp.train
    aug = loader_transform(r)
    images, tr_rows, labels, soft = train_imgs, rows[folds != fold], y_all, None
    if r.teacher:  # a student: soft targets, and confident test images after the train rows
        images, tr_rows, labels, soft = _student_rows(job, train_imgs, tr_rows, y_all)
    ds = CachedImages(images, tr_rows, labels, aug, seed=r.seed + fold, soft=soft)
    loader = make_loader(ds, r.batch_size, True, r.seed + fold, auto_workers(r, dev), dev)
    state = loop.make_state(
        model, r, norm, dev, len(loader), len(comp.classes), comp.task.multilabel
    )
    return FoldSetup(model, cfg, norm, train_imgs, va_rows, y_all, state, loader)


def _student_rows(job: FoldJob, train_imgs: np.ndarray, tr_rows: np.ndarray, y_all: np.ndarray):
    """A student's training data: ``(images, rows, labels, soft targets)``, where images and
    rows reach past the train cache into the test cache for the pseudo-labelled images."""
    comp, r = job.comp, job.recipe
    taught = student.lesson(comp, job.ws, r, job.fold, job.fhash, tr_rows, y_all)
    tqdm.write(f"{job.tag}: {student.describe(taught, r, len(comp.test))}")
    if not len(taught.pseudo):
        return train_imgs, tr_rows, y_all, taught.soft
    size, n = r.image_size, len(comp.train)
    test_imgs = build_cache(
        comp.root, comp.test["path"].tolist(), size, job.ws.decode_cache("test", size)
    )
    t_probs = taught.pseudo_soft
    t_labels = (t_probs > 0.5).astype(np.int64) if comp.task.multilabel else t_probs.argmax(1)
    labels = np.full((n + len(comp.test), *y_all.shape[1:]), -1, dtype=np.int64)
    labels[:n] = y_all
    labels[n + taught.pseudo] = t_labels  # what train accuracy counts for a pseudo-label
    soft = np.zeros((n + len(comp.test), taught.soft.shape[1]), dtype=np.float32)
    soft[:n] = taught.soft
    soft[n + taught.pseudo] = t_probs
    return Joined(train_imgs, test_imgs), np.r_[tr_rows, n + taught.pseudo], labels, soft


def run_epochs(job: FoldJob, setup: FoldSetup) -> list[dict]:
    """Train from the last finished epoch; keep the best epoch; checkpoint every epoch."""
    r, fdir, state = job.recipe, job.fdir, setup.state
    task = job.comp.task
    saved = load_resume(fdir / "last.pt", state)
    history: list[dict] = saved.get("history", [])
    best = None  # (score, val loss) of the best epoch so far
    for h in history:
        if _improves(task, h, best):
            best = (h.get("val_score", h["val_acc"]), h["val_loss"])  # older runs: accuracy
    for epoch in range(saved.get("epoch", -1) + 1, r.epochs):
        if stale := epochs_since_best(history, r.patience, task.greater_is_better):
            tqdm.write(f"{job.tag}: early stop, no val {task.metric} gain for {stale} epochs")
            break
        seed_epoch(r.seed + job.fold, epoch)
        setup.loader.sampler.set_epoch(epoch)
        loop.set_frozen(setup.model, epoch < r.freeze_epochs)
        row = loop.train_one_epoch(state, setup.loader, f"{job.tag} epoch {epoch + 1}/{r.epochs}")
        va = _predict(job, setup, state.eval_model(), setup.train_imgs, setup.va_rows, "val")[0]
        y_va = setup.y_all[setup.va_rows]
        row.update(zip(("val_loss", "val_acc"), loop.loss_and_accuracy(va, y_va), strict=True))
        row["val_score"] = task.score(y_va, task.probabilities(va))  # picks the best epoch
        history.append({"epoch": epoch + 1, **row})
        if improved := _improves(task, row, best) or r.checkpoint == "last":
            best = (row["val_score"], row["val_loss"])
            weights = {"model": state.eval_model().state_dict(), "epoch": epoch + 1}
            save_torch(fdir / "best.pt", weights)
        save_torch(fdir / "last.pt", {**state.state_dict(), "epoch": epoch, "history": history})
        tqdm.write(format_epoch(job.run, job.fold, history[-1], r.epochs, improved))
    return history


def seed_epoch(seed: int, epoch: int) -> None:
    """Seed torch (dropout, mixup masks) and numpy (timm Mixup) from (seed, epoch): a run resumed
    at an epoch boundary draws exactly what an uninterrupted run would."""
    s = (seed * 1_000_003 + epoch * 7919) % 2**32
    torch.manual_seed(s)
    np.random.seed(s)


def _improves(task, row: dict, best: tuple[float, float] | None) -> bool:
    """Whether an epoch's val score beats the best so far. A tie goes to the lower val loss,
    except under accuracy (the first best epoch stays, as it always has): ranking metrics such
    as ROC AUC often sit at 1.0 on a small fold from the first epoch, while the probabilities,
    which pooled OOF rows and blends depend on, keep improving."""
    score = row.get("val_score", row["val_acc"])
    if best is None or task.better(score, best[0]):
        return True
    return task.metric != "accuracy" and score == best[0] and row["val_loss"] < best[1]


def epochs_since_best(history: list[dict], patience: int, greater: bool = True) -> int:
    """Epochs since the best val score (the competition's metric; ``greater``: higher is better)
    when that reaches ``patience`` (> 0), else 0."""
    if patience <= 0 or not history:
        return 0
    scores = np.array([h.get("val_score", h["val_acc"]) for h in history])
    stale = len(scores) - 1 - int(np.argmax(scores if greater else -scores))
    return stale if stale >= patience else 0


def finish_fold(job: FoldJob, setup: FoldSetup, history: list[dict], seconds: float = 0.0) -> None:
    """Best weights -> OOF and test logits under every TTA view, metrics, curves, done marker."""
    comp, fdir = job.comp, job.fdir
    best = torch.load(fdir / "best.pt", map_location=job.device, weights_only=True)
    setup.model.load_state_dict(best["model"])
    size = job.recipe.image_size
    test_paths = comp.test["path"].tolist()
    test_imgs = build_cache(comp.root, test_paths, size, job.ws.decode_cache("test", size))
    oof = _predict(job, setup, setup.model, setup.train_imgs, setup.va_rows, "oof")
    test = _predict(job, setup, setup.model, test_imgs, np.arange(len(test_imgs)), "test")
    write_fold_logits(job, setup.va_rows, oof, test)
    metrics = pd.DataFrame(history)
    artifacts.write_csv(fdir / "metrics.csv", metrics)
    plot_curves(metrics, fdir / "curves.png", f"{comp.name} / {job.run} / fold {job.fold}")
    done = {
        "best_epoch": int(best["epoch"]),
        "val_acc": float(metrics["val_acc"].max()),
        "metric": comp.task.metric,
        "val_score": float(metrics.set_index("epoch")["val_score"][int(best["epoch"])]),
        "mean": setup.cfg["mean"],
        "std": setup.cfg["std"],
        "epochs": len(metrics),
        "threads": torch.get_num_threads(),  # float sums differ with the thread count
        "seconds": round(seconds, 1),  # this process's part (a resumed fold's last attempt)
        # whether the held-out labels chose this model: a best epoch before the recipe's last
        # (or an early stop); such a fold model cannot teach its fold's student
        "holdout_used": int(best["epoch"]) != job.recipe.epochs,
    }
    artifacts.write_json(fdir / "done.json", done)
    (fdir / "last.pt").unlink(missing_ok=True)  # the fold is final; best.pt is the checkpoint


def write_fold_logits(job: FoldJob, va_rows: np.ndarray, oof: np.ndarray, test: np.ndarray) -> None:
    """The fold's ``oof.npz`` (its held-out rows ``va_rows`` of ``comp.train``) and ``test.npz``,
    ``(V, n, C)`` logits under the recipe's views: the contract of every kind of fold."""
    comp = job.comp
    common = {
        "classes": np.array(comp.classes),
        "views": np.array(job.recipe.tta),
        "folds_hash": np.array(job.fhash),
        "task": np.array(comp.task.kind),
    }
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


def _predict(
    job: FoldJob, setup: FoldSetup, model, images: np.ndarray, rows: np.ndarray, what: str
) -> np.ndarray:
    """``(V, len(rows), C)`` logits of ``model``; validation (``what`` "val") uses view none."""
    r = job.recipe
    views = ("none",) if what == "val" else r.tta
    desc = f"{job.tag} {what}" if what != "val" else "val"
    return loop.predict_as_trained(model, images, rows, views, setup.norm, job.device, r, desc)


def load_resume(path: Path, state: loop.TrainState) -> dict:
    """Load ``last.pt`` into ``state``; returns what it held (epoch, history), or {} if none."""
    if not path.is_file():
        return {}
    saved = torch.load(path, map_location=state.device, weights_only=True)
    state.load_state_dict(saved)
    print(f"resuming {path.parent} after epoch {saved['epoch'] + 1}")
    return saved


def save_torch(path: Path, obj: dict) -> None:
    """``torch.save`` through an atomic write: a kill never leaves half a checkpoint."""
    buf = io.BytesIO()
    torch.save(obj, buf)
    artifacts.atomic_write_bytes(path, buf.getvalue())


def format_epoch(run: str, fold: int, h: dict, epochs: int, improved: bool) -> str:
    """The console line of one finished epoch; ``*`` marks a new best."""
    score = (
        "" if h.get("val_score", h["val_acc"]) == h["val_acc"] else f" score {h['val_score']:.4f}"
    )
    return (
        f"{run} fold {fold} epoch {h['epoch']}/{epochs}  train loss {h['train_loss']:.3f} "
        f"acc {h['train_acc']:.3f}  val loss {h['val_loss']:.3f} acc {h['val_acc']:.4f}{score}  "
        f"lr {h['lr']:.2e}  {h['img_per_s']:.0f} img/s{'  *' if improved else ''}"
    )
