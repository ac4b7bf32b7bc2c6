"""What decoding costs a time budget (``make train BUDGET=``): priced, refused when decoding
alone exceeds the budget, then every decode cache the runs read built at once, before the
probes (which read them): one decode per image for all the sizes of the runs (``build_caches``).
"""

from __future__ import annotations

import time

import numpy as np

from ...competition.images import cores
from ...errors import PipelineError
from ...util.durations import format_duration
from ..cache import build_caches, cached, decode_into

PRICE_SAMPLE = 32  # train images decoded (for every size at once, on every core) to price it


def decode_for_budget(
    comp, ws, sizes: list[int], budget_s: float, clock=time.perf_counter
) -> float:
    """Build the train and test decode caches of ``sizes`` (missing ones only) and return the
    seconds it took. Priced first from ``PRICE_SAMPLE`` train images decoded for every missing
    size; a price over ``budget_s`` is refused in one line before any cache is written."""
    splits = {"train": comp.train["path"].tolist(), "test": comp.test["path"].tolist()}
    missing = {
        sp: [z for z in sizes if cached(p, z, ws.decode_cache(sp, z)) is None]
        for sp, p in splits.items()
    }
    n = sum(len(splits[sp]) for sp, m in missing.items() if m)
    if not n:
        return 0.0
    want = sorted({z for m in missing.values() for z in m})
    sample = splits["train"][:PRICE_SAMPLE]
    t0 = clock()
    outs = {z: np.empty((len(sample), z, z, 3), dtype=np.uint8) for z in want}
    decode_into(outs, comp.root, sample, "price decoding")
    per = (clock() - t0) / max(len(sample), 1)
    what = f"{n:,} images at {', '.join(map(str, want))} px"
    rate = f"{per * 1000:.0f} ms an image on {cores()} cores, one decode for every size"
    if per * n > budget_s:
        raise PipelineError(
            f"BUDGET={format_duration(budget_s)} is less than decoding alone: {what} take about "
            f"{per * n / 60:.1f} min here ({rate}); raise BUDGET above {per * n / 60 * 1.5:.0f}m, "
            "or train smaller images (SET=image_size=...)"
        )
    print(f"plan: decoding {what}: about {per * n / 60:.1f} min ({rate})", flush=True)
    t0 = clock()
    build_caches(comp.root, splits, sizes, ws.decode_cache)
    return clock() - t0
