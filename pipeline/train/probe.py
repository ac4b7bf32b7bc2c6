"""The time budget's probe: what one run costs on this machine, priced from a few batches.

``probe_run`` decodes a sample of ``SAMPLE`` train images (or reads it from the decode cache;
nothing is written), then times a few batches of the real training loop and of prediction on
it, or for a feature member of embedding and the arithmetic of one head fit, and returns a
``Cost`` that ``plan.make_plan`` prices epochs and runs with.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, replace

import numpy as np
import torch

from ..config import Recipe

SAMPLE = 512  # images the probe decodes (when not cached) and times on
FOLD_OVERHEAD_S = 3.0  # per fold: model creation, checkpoints, metrics, curves
Clock = Callable[[], float]


@dataclass(frozen=True)
class Cost:
    """What one run costs: ``once_s`` (decode, embeddings), ``epoch_s`` (one epoch
    of one fold: training and validation), ``fold_s`` (per fold: OOF and test prediction or a
    head fit, overhead), and what its probe took."""

    kind: str
    once_s: float
    epoch_s: float
    fold_s: float
    probe_s: float
    figures: dict  # the measured rates behind it (images/s), for the plan file

    def seconds(self, epochs: int, k: int) -> float:
        per_fold = (epochs * self.epoch_s if self.kind == "finetune" else 0.0) + self.fold_s
        return self.once_s + k * per_fold


class _First:
    """The first ``warmup + batches`` batches of a loader; the clock starts at batch ``warmup``."""

    def __init__(self, loader, warmup: int, batches: int, clock: Clock):
        self.loader, self.warmup, self.batches, self.clock = loader, warmup, batches, clock
        self.t0 = self.images = 0

    def __len__(self) -> int:
        return self.warmup + self.batches

    def __iter__(self):
        i = 0
        while True:  # a small dataset wraps around
            for batch in self.loader:
                if i == len(self):
                    return
                if i == self.warmup:
                    self.t0 = self.clock()
                if i >= self.warmup:
                    self.images += len(batch[1])
                i += 1
                yield batch


def probe_run(
    comp,
    ws,
    recipe: Recipe,
    y_all: np.ndarray,
    k: int,
    device: torch.device,
    clock: Clock = time.perf_counter,
    batches: int = 4,
    warmup: int = 1,
) -> Cost:
    """Time ``recipe`` on this machine: decoding ``SAMPLE`` images (unless the decode cache
    exists; nothing is written), then a few batches of the real training loop and of prediction
    on them, or of embedding for a feature member."""
    start = clock()
    images, decode_s = _sample_images(comp, ws, recipe.image_size)
    decode_s *= clock() - start  # priced from the sample's time (0 when cached)
    start = clock()
    probe = _probe_features if recipe.kind == "features" else _probe_finetune
    cost = probe(comp, ws, recipe, images, y_all, k, device, clock, batches, warmup)
    once = cost.once_s + decode_s
    figures = {"decode_s": decode_s, **cost.figures}
    return replace(cost, once_s=once, probe_s=clock() - start, figures=figures)


def _sample_images(comp, ws, size: int) -> tuple[np.ndarray, float]:
    """``SAMPLE`` train images (from the decode cache when it exists, else decoded into
    memory) and the factor from the sample's decode time to all train and test images'."""
    from .data import cached, decode_sample

    paths = comp.train["path"].tolist()
    n = min(SAMPLE, len(paths))
    hit = cached(paths, size, ws.decode_cache("train", size))
    if hit is not None:
        return np.asarray(hit[:n]), 0.0
    return decode_sample(comp.root, paths[:n], size), (len(paths) + len(comp.test)) / n


def _timed_predict(model, images, recipe: Recipe, norm, device, clock, batches, warmup) -> float:
    """Images/s of one view of prediction as the fold runs it (same batch size, memory format
    and autocast: channels_last input is 1.8x on this CPU for lite0), after ``warmup`` batches."""
    from . import loop

    pbs = recipe.batch_size * 2
    how = {"dtype": loop.amp_dtype(recipe, device), "channels_last": recipe.channels_last}
    rows = np.arange((warmup + batches) * pbs) % len(images)
    loop.predict(model, images, rows[: warmup * pbs], ("none",), norm, device, pbs, **how)
    t = clock()
    loop.predict(model, images, rows[warmup * pbs :], ("none",), norm, device, pbs, **how)
    return batches * pbs / max(clock() - t, 1e-9)


def _model(recipe: Recipe, n_classes: int, device):
    from .backbone import create_model, data_config

    model = create_model(recipe, n_classes).to(device)
    cfg = data_config(model, recipe)
    return model, (
        torch.tensor(cfg["mean"], device=device),
        torch.tensor(cfg["std"], device=device),
    )


def _probe_features(comp, ws, recipe, images, y_all, k, device, clock, batches, warmup) -> Cost:
    """Embedding speed (unless every view is cached) and one head fit's arithmetic."""
    from . import features

    n_train, n_test, views = len(comp.train), len(comp.test), len(recipe.tta)
    model, norm = _model(recipe, 0, device)
    todo = (n_train + n_test) * (views - len(features.cached_views(comp, ws, recipe)["train"]))
    embed_ips = (
        _timed_predict(model, images, recipe, norm, device, clock, batches, warmup)
        if todo
        else float("inf")
    )
    pseudo = len(comp.test) if recipe.pseudo_floor > 0 else 0  # at most every test image
    n_fit = (n_train * (k - 1) // k + pseudo) * views
    head_s = _head_seconds(n_fit, model.num_features, len(comp.classes), clock)
    path_s = head_s * features.PATH_ITER / features.MAX_ITER * len(features.L2_PATH) * 0.6
    return Cost(
        "features",
        once_s=todo / embed_ips,
        epoch_s=0.0,
        fold_s=head_s + path_s + FOLD_OVERHEAD_S,  # each fold walks its own L2 path
        probe_s=0.0,
        figures={"embed_ips": min(embed_ips, 1e9), "head_fit_s": head_s},
    )


def _probe_finetune(comp, ws, recipe, images, y_all, k, device, clock, batches, warmup) -> Cost:
    """Images/s of the real training loop and of one view of prediction, on the sample."""
    from . import loop
    from .data import CachedImages, auto_workers, loader_transform, make_loader

    n_train, n_classes, n = len(comp.train), len(comp.classes), len(images)
    model, norm = _model(recipe, n_classes, device)
    ds = CachedImages(images, np.arange(n), y_all[:n], loader_transform(recipe), 0)
    workers = auto_workers(recipe, device)
    loader = make_loader(ds, recipe.batch_size, True, recipe.seed, workers, device)
    state = loop.make_state(
        model, recipe, norm, device, len(loader), n_classes, comp.task.multilabel
    )
    timed = _First(loader, warmup, batches, clock)
    loop.train_one_epoch(state, timed, "probe train")
    train_ips = timed.images / max(clock() - timed.t0, 1e-9)
    view_ips = _timed_predict(state.eval_model(), images, recipe, norm, device, clock, batches, 1)
    fold_train, fold_val = n_train * (k - 1) / k, n_train / k
    if recipe.pseudo_floor > 0:  # at most every test image joins a student's training rows
        fold_train += len(comp.test)
    return Cost(
        "finetune",
        once_s=0.0,
        epoch_s=fold_train / train_ips + fold_val / view_ips,
        fold_s=(fold_val + len(comp.test)) * len(recipe.tta) / view_ips + FOLD_OVERHEAD_S,
        probe_s=0.0,
        figures={"train_ips": train_ips, "predict_ips_per_view": view_ips},
    )


def _head_seconds(n: int, d: int, c: int, clock: Clock, evals: int = 3) -> float:
    """One fold's L-BFGS head fit, priced from ``evals`` loss+gradient evaluations of its size
    (about 1.3 evaluations per iteration with the strong-Wolfe line search)."""
    from .features import MAX_ITER

    x = torch.randn(n, d)
    w = torch.zeros(c, d, requires_grad=True)
    y = torch.randint(0, c, (n,))
    t = clock()
    for _ in range(evals):
        loss = torch.nn.functional.cross_entropy(x @ w.T, y)
        loss.backward()
    return (clock() - t) / evals * MAX_ITER * 1.3
