"""What a member kind's probe (``Kind.probe``) returns and the helpers those probes share.

The planner (``train/planning/``) times every run of a budget through its kind's probe on a
sample of train images (``planning/probe.py``): a few batches of the real training loop and
prediction, or embedding and the arithmetic of one head fit. This module holds the ``Cost``
that the probe returns and ``planning/plan.py`` prices epochs and runs with, the
``Estimate`` of its score that ``planning/value.py`` blends, the ``ProbeInput`` it times on,
and the timing helpers.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from ...config import Recipe

FOLD_OVERHEAD_S = 3.0  # per fold: model creation, checkpoints, metrics, curves
SPLIT_SEED = 0  # the probe sample's fit/held-out halves for score estimates
Clock = Callable[[], float]


@dataclass(frozen=True)
class Estimate:
    """A run's score estimated by its probe: a head fitted on half of the probe's sample and
    ``probs (n_val, C)`` on the other half (``val``: positions in the sample, the same for
    every run, so the planner can blend the runs' estimates into an ensemble's)."""

    score: float
    probs: np.ndarray
    val: np.ndarray


def halves(n: int) -> tuple[np.ndarray, np.ndarray]:
    """The fit and held-out positions of an ``n``-image probe sample: one fixed shuffle, so
    every run of a plan is estimated on the same held-out images."""
    order = np.random.default_rng(SPLIT_SEED).permutation(n)
    return np.sort(order[: n // 2]), np.sort(order[n // 2 :])


@dataclass(frozen=True)
class Cost:
    """What one run costs: ``once_s`` (its once-per-run work: embeddings, a trunk pass; the
    decoding is priced apart, ``planning/decoding.py``), ``epoch_s`` (one epoch of one fold:
    training and validation), ``fold_s`` (per fold: OOF and test prediction or a head fit,
    overhead), and what its probe took."""

    kind: str  # the member kind's name (train/kinds/), for plan.toml
    once_s: float
    epoch_s: float
    fold_s: float
    probe_s: float
    figures: dict  # the measured rates behind it (images/s), for the plan file
    estimate: Estimate | None = None  # the kind's score estimate (Kind.estimate_score)
    fewer: Cost | None = None  # the same run with its first TTA view only, if it has more
    # what its once-per-run work builds ("embeddings:<key>:<view>") when another run of the plan
    # may write it first (needs), and what it writes for others beside its own (provides)
    needs: frozenset[str] = frozenset()
    provides: frozenset[str] = frozenset()

    def seconds(self, epochs: int, k: int) -> float:
        """All ``k`` folds at ``epochs`` epochs (a kind without epochs has ``epoch_s`` 0)."""
        return self.once_s + k * (epochs * self.epoch_s + self.fold_s)


@dataclass(frozen=True)
class ProbeInput:
    """What a kind's probe times on (``Kind.probe``): ``images (n, S, S, 3) uint8``, the first
    ``planning.probe.SAMPLE`` train images, and ``y_all`` their labels by train row (0 where
    none)."""

    comp: Any
    ws: Any
    recipe: Recipe
    images: np.ndarray
    y_all: np.ndarray
    k: int
    device: torch.device
    clock: Clock
    batches: int
    warmup: int


class First:
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


def timed_predict(
    model, images, recipe: Recipe, norm, device, clock, batches, warmup, outputs: list | None = None
) -> float:
    """Images/s of one view of prediction as the fold runs it (same batch size, memory format
    and autocast, whose speed differs a lot: docs/performance.md), after ``warmup`` batches.
    ``outputs`` (a list) receives the model's ``(len(images), D)`` outputs on every image."""
    from ...model.device import amp_dtype
    from ...model.infer import predict

    # a sample smaller than a batch is timed in batches of its size, as the run predicts it
    # (wrapping a 12-image sample into 256-image batches cost a tiny competition minutes)
    pbs = min(recipe.batch_size * 2, len(images))
    how = {"dtype": amp_dtype(recipe, device), "channels_last": recipe.channels_last}
    rows = np.arange((warmup + batches) * pbs) % len(images)
    first = predict(model, images, rows[: warmup * pbs], ("none",), norm, device, pbs, **how)
    t = clock()
    timed = predict(model, images, rows[warmup * pbs :], ("none",), norm, device, pbs, **how)
    ips = batches * pbs / max(clock() - t, 1e-9)
    if outputs is not None:
        out = np.concatenate([first[0], timed[0]])[: len(images)]
        if len(out) < len(images):  # a small batch: the rest, untimed
            more = np.arange(len(out), len(images))
            out = np.concatenate(
                [out, predict(model, images, more, ("none",), norm, device, pbs, **how)[0]]
            )
        outputs.append(out)
    return ips


def model_and_norm(recipe: Recipe, n_classes: int, device):
    """The recipe's model on ``device`` and its input normalisation, as a fold builds them."""
    from ...model.backbone import create_model, data_config
    from ...model.infer import normalisation

    model = create_model(recipe, n_classes).to(device)
    cfg = data_config(model, recipe)
    return model, normalisation(cfg["mean"], cfg["std"], device)
