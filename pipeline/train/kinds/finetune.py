"""Fine-tuned members (the default kind): the whole timm network trained per fold.

One fold: set up (model with the same initial weights on every restart, decode cache, loader,
optimizer state), train epoch by epoch with exact resume from ``last.pt``, keep the best epoch
(or the last, ``checkpoint = "last"``) in ``best.pt``, then predict the held-out rows and the
test images under every TTA view. A student (``teacher`` in the recipe) trains on its teacher's
soft targets, confident test images joining its training rows (``kinds/student.py``).
"""

from __future__ import annotations

import time
from dataclasses import dataclass, fields

import numpy as np
import pandas as pd
import torch
from tqdm import tqdm

from ... import artifacts
from ...config import Recipe
from ...model.backbone import create_model, data_config
from ...model.infer import normalisation, predict_as_trained
from .. import loop
from ..augment import loader_transform
from ..cache import Joined, build_cache
from ..context import FoldJob
from ..epoch_plots import plot_curves
from ..fold import (
    epoch_score,
    load_best,
    run_epochs,
    save_torch,
    write_fold_logits,
)
from ..loader import CachedImages, auto_workers, make_loader
from . import student
from .base import Kind
from .pricing import FOLD_OVERHEAD_S, Cost, First, ProbeInput, model_and_norm, timed_predict


@dataclass(frozen=True)
class FoldSetup:
    """What ``setup_fold`` builds for a job: the model and its normalisation, the train decode
    cache, the held-out rows, the training state and the loader."""

    model: torch.nn.Module
    cfg: dict  # timm data config (mean, std, ...)
    norm: tuple[torch.Tensor, torch.Tensor]
    train_imgs: np.ndarray  # (N_train, S, S, 3) uint8, every row of comp.train
    va_rows: np.ndarray  # rows of train_imgs held out in this fold
    state: loop.TrainState
    loader: torch.utils.data.DataLoader


class Finetune(Kind):
    name = "finetune"
    scales_epochs = True
    fields = frozenset(f.name for f in fields(Recipe))  # every field is a fine-tune's

    def fit_fold(self, job: FoldJob) -> None:
        """Train one (run, fold) to the end, resuming from ``last.pt`` when a call died."""
        t0 = time.perf_counter()
        setup = setup_fold(job)
        history = run_epochs(job, setup.state, lambda e, h: train_epoch(job, setup, e, h))
        finish_fold(job, setup, history, time.perf_counter() - t0)

    def probe(self, p: ProbeInput) -> Cost:
        """Images/s of the real training loop and of one view of prediction, on the sample."""
        comp, recipe, images, device = p.comp, p.recipe, p.images, p.device
        n_train, n_classes, n = len(comp.train), len(comp.classes), len(images)
        model, norm = model_and_norm(recipe, n_classes, device)
        ds = CachedImages(images, np.arange(n), p.y_all[:n], loader_transform(recipe), 0)
        workers = auto_workers(recipe, device)
        loader = make_loader(ds, recipe.batch_size, True, recipe.seed, workers, device)
        state = loop.make_state(
            model, recipe, norm, device, len(loader), n_classes, comp.task.multilabel
        )
        timed = First(loader, p.warmup, p.batches, p.clock)
        loop.train_one_epoch(state, timed, "probe train")
        train_ips = timed.images / max(p.clock() - timed.t0, 1e-9)
        view_ips = timed_predict(
            state.eval_model(), images, recipe, norm, device, p.clock, p.batches, 1
        )
        fold_train, fold_val = n_train * (p.k - 1) / p.k, n_train / p.k
        if recipe.pseudo_floor > 0:  # at most every test image joins a student's training rows
            fold_train += len(comp.test)
        return Cost(
            self.name,
            once_s=0.0,
            epoch_s=fold_train / train_ips + fold_val / view_ips,
            fold_s=(fold_val + len(comp.test)) * len(recipe.tta) / view_ips + FOLD_OVERHEAD_S,
            probe_s=0.0,
            figures={"train_ips": train_ips, "predict_ips_per_view": view_ips},
        )

    def holdout_reason(self, done: artifacts.FoldDone, recipe: Recipe, fold: int) -> str:
        used = done.holdout_used
        if used is None:  # an older done.json: the best epoch says it
            used = done.best_epoch != recipe.epochs
        if not used:
            return ""
        return (
            f"its best.pt is epoch {done.best_epoch} of {recipe.epochs}, picked on that fold's "
            'held-out rows: retrain it with checkpoint = "last" (and patience = 0)'
        )


def setup_fold(job: FoldJob) -> FoldSetup:
    """Model (same initial weights on every restart), decode cache, loader, optimizer state."""
    r, dev, fold, comp = job.recipe, job.device, job.fold, job.comp
    torch.manual_seed(r.seed + fold)
    model = create_model(r, len(comp.classes)).to(dev)
    cfg = data_config(model, r)
    norm = normalisation(cfg["mean"], cfg["std"], dev)
    cache = job.ws.decode_cache("train", r.image_size)
    train_imgs = build_cache(comp.root, comp.train["path"].tolist(), r.image_size, cache)
    aug = loader_transform(r)
    images, tr_rows, labels, soft = train_imgs, job.train_rows, job.y_all, None
    if r.teacher:  # a student: soft targets, and confident test images after the train rows
        images, tr_rows, labels, soft = _student_rows(job, train_imgs)
    ds = CachedImages(images, tr_rows, labels, aug, seed=r.seed + fold, soft=soft)
    loader = make_loader(ds, r.batch_size, True, r.seed + fold, auto_workers(r, dev), dev)
    state = loop.make_state(
        model, r, norm, dev, len(loader), len(comp.classes), comp.task.multilabel
    )
    return FoldSetup(model, cfg, norm, train_imgs, job.held_out, state, loader)


def _student_rows(job: FoldJob, train_imgs: np.ndarray):
    """A student's training data: ``(images, rows, labels, soft targets)``, where images and
    rows reach past the train cache into the test cache for the pseudo-labelled images."""
    comp, r, y_all, tr_rows = job.comp, job.recipe, job.y_all, job.train_rows
    taught = student.lesson(comp, job.ws, r, job.fold, job.ctx.fhash, tr_rows, y_all)
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


def train_epoch(
    job: FoldJob, setup: FoldSetup, epoch: int, history: list[dict]
) -> tuple[dict, str] | None:
    """Epoch ``epoch`` for ``fold.run_epochs``: stop early once ``patience`` epochs passed
    without a gain (None), else train, validate (view none) and keep the epoch in ``best.pt``
    when it is the best so far (or every epoch, ``checkpoint = "last"``); its row and line."""
    r, state, task = job.recipe, setup.state, job.comp.task
    if stale := epochs_since_best(history, r.patience, task.greater_is_better):
        tqdm.write(f"{job.tag}: early stop, no val {task.metric} gain for {stale} epochs")
        return None
    seed_epoch(r.seed + job.fold, epoch)
    setup.loader.sampler.set_epoch(epoch)
    loop.set_frozen(setup.model, epoch < r.freeze_epochs)
    row = loop.train_one_epoch(state, setup.loader, f"{job.tag} epoch {epoch + 1}/{r.epochs}")
    va = _predict(job, setup, state.eval_model(), setup.train_imgs, setup.va_rows, "val")[0]
    y_va = job.y_all[setup.va_rows]
    row.update(zip(("val_loss", "val_acc"), loop.loss_and_accuracy(va, y_va), strict=True))
    row["val_score"] = task.score(y_va, task.probabilities(va))  # picks the best epoch
    row = {"epoch": epoch + 1, **row}
    if improved := improves(task, row, best_so_far(task, history)) or r.checkpoint == "last":
        weights = {"model": state.eval_model().state_dict(), "epoch": epoch + 1}
        save_torch(job.fdir / "best.pt", weights)
    return row, format_epoch(job.run, job.fold, row, r.epochs, improved)


def seed_epoch(seed: int, epoch: int) -> None:
    """Seed torch (dropout, mixup masks) and numpy (timm Mixup) from (seed, epoch): a run resumed
    at an epoch boundary draws exactly what an uninterrupted run would."""
    s = (seed * 1_000_003 + epoch * 7919) % 2**32
    torch.manual_seed(s)
    np.random.seed(s)


def improves(task, row: dict, best: tuple[float, float] | None) -> bool:
    """Whether an epoch's val score beats the best so far. A tie goes to the lower val loss,
    except under accuracy (the first best epoch stays, as it always has): ranking metrics such
    as ROC AUC often sit at 1.0 on a small fold from the first epoch, while the probabilities,
    which pooled OOF rows and blends depend on, keep improving."""
    score = epoch_score(row)
    if best is None or task.better(score, best[0]):
        return True
    return task.metric != "accuracy" and score == best[0] and row["val_loss"] < best[1]


def best_so_far(task, history: list[dict]) -> tuple[float, float] | None:
    """(score, val loss) of the best epoch of ``history`` (``improves``), None before any."""
    best = None
    for h in history:
        if improves(task, h, best):
            best = (epoch_score(h), h["val_loss"])
    return best


def epochs_since_best(history: list[dict], patience: int, greater: bool = True) -> int:
    """Epochs since the best val score (the competition's metric; ``greater``: higher is better)
    when that reaches ``patience`` (> 0), else 0."""
    if patience <= 0 or not history:
        return 0
    scores = np.array([epoch_score(h) for h in history])
    stale = len(scores) - 1 - int(np.argmax(scores if greater else -scores))
    return stale if stale >= patience else 0


def finish_fold(job: FoldJob, setup: FoldSetup, history: list[dict], seconds: float = 0.0) -> None:
    """Best weights -> OOF and test logits under every TTA view, metrics, curves, done marker."""
    comp, fdir = job.comp, job.fdir
    best, best_sha = load_best(job, job.device)
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
    best_epoch = int(best["epoch"])
    done = artifacts.FoldDone(
        kind=Finetune.name,
        best_epoch=best_epoch,
        epochs=len(metrics),
        metric=comp.task.metric,
        val_score=float(metrics.set_index("epoch")["val_score"][best_epoch]),
        val_acc=float(metrics["val_acc"].max()),
        mean=setup.cfg["mean"],
        std=setup.cfg["std"],
        threads=torch.get_num_threads(),
        seconds=round(seconds, 1),
        # a best epoch before the recipe's last (or an early stop): the held-out labels chose
        # it, and such a fold model cannot teach its fold's student
        holdout_used=best_epoch != job.recipe.epochs,
        best_sha256=best_sha,
    )
    artifacts.write_done(fdir / "done.json", done)
    (fdir / "last.pt").unlink(missing_ok=True)  # the fold is final; best.pt is the checkpoint


def _predict(
    job: FoldJob, setup: FoldSetup, model, images: np.ndarray, rows: np.ndarray, what: str
) -> np.ndarray:
    """``(V, len(rows), C)`` logits of ``model``; validation (``what`` "val") uses view none."""
    r = job.recipe
    views = ("none",) if what == "val" else r.tta
    desc = f"{job.tag} {what}" if what != "val" else "val"
    return predict_as_trained(model, images, rows, views, setup.norm, job.device, r, desc)


def format_epoch(run: str, fold: int, h: dict, epochs: int, improved: bool) -> str:
    """The console line of one finished epoch; ``*`` marks a new best."""
    score = "" if epoch_score(h) == h["val_acc"] else f" score {h['val_score']:.4f}"
    return (
        f"{run} fold {fold} epoch {h['epoch']}/{epochs}  train loss {h['train_loss']:.3f} "
        f"acc {h['train_acc']:.3f}  val loss {h['val_loss']:.3f} acc {h['val_acc']:.4f}{score}  "
        f"lr {h['lr']:.2e}  {h['img_per_s']:.0f} img/s{'  *' if improved else ''}"
    )


KIND = Finetune()
