"""The planner's probe: what one run costs on this machine, priced from a few batches.

``probe_run`` reads a sample of ``SAMPLE`` train images from the decode cache (built for every
size of the plan before the probes, ``decoding.py``), then asks the run's member kind
(``Kind.probe``, with the helpers of ``kinds/pricing.py``) to time a few batches of its work on
it: the real training loop and prediction, or embedding and the arithmetic of one head fit. The
``Cost`` it returns is what ``plan.make_plan`` prices epochs and runs with.
"""

from __future__ import annotations

import time
from dataclasses import replace

import numpy as np

from ...config import Recipe
from ..kinds import get_kind
from ..kinds.pricing import Clock, Cost, ProbeInput

SAMPLE = 512  # train images the probe reads from the decode cache and times on


def sample_images(comp, ws, size: int) -> np.ndarray:
    """``(SAMPLE, S, S, 3) uint8``: the first train images, read from the decode cache (built
    here if ``decoding.decode_for_budget`` has not: a probe never decodes on its own)."""
    from ..cache import build_cache

    paths = comp.train["path"].tolist()
    imgs = build_cache(comp.root, paths, size, ws.decode_cache("train", size))
    return np.asarray(imgs[: min(SAMPLE, len(paths))])


def probe_run(
    comp,
    ws,
    recipe: Recipe,
    y_all: np.ndarray,
    k: int,
    device,
    clock: Clock = time.perf_counter,
    batches: int = 4,
    warmup: int = 1,
) -> Cost:
    """Time ``recipe`` on this machine: its kind's probe (``Kind.probe``) on ``SAMPLE`` train
    images read from the decode cache (``decoding.decode_for_budget`` priced and built it)."""
    images = sample_images(comp, ws, recipe.image_size)
    start = clock()
    p = ProbeInput(comp, ws, recipe, images, y_all, k, device, clock, batches, warmup)
    cost = get_kind(recipe.kind).probe(p)
    probe_s = clock() - start

    def priced(c: Cost) -> Cost:
        return replace(c, probe_s=probe_s)

    fewer = priced(cost.fewer) if cost.fewer is not None else None
    return replace(priced(cost), fewer=fewer)
