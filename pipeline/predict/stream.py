"""One pass of ``make predict`` over the test images: each image decoded as training decoded
it (``decode_sizes``: one decode for the members' sizes that share a DCT scale, on every core),
every (member, fold, view) run on the batch, the fold mean of each view's logits written to
``logits/<run>.npy`` on disk (memory stays flat); after the first batches, the time budget
decides what to drop (``budget.py``), and an unreadable image is recorded (``bad_images.py``)
when the policy allows."""

from __future__ import annotations

from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import numpy as np
import torch
from tqdm import tqdm

from ..competition.images import ImageError, cores, decode_sizes
from ..disk.space import reserve_file
from ..model.device import amp_dtype, autocast
from ..model.infer import normalisation
from ..model.inputs import to_input
from ..model.tta import apply_view
from . import budget
from .bad_images import BadImages
from .saved import Member, Saved, load_fold_model

PROBE_BATCHES = 2  # batches timed with every view before the time budget decides


class Pass:
    """One pass over the test images: every member's fold models loaded once, logits on disk."""

    def __init__(
        self,
        saved: Saved,
        dev: torch.device,
        precision: str,
        batch: int,
        where: Path,
        n: int,
        bad: BadImages,
    ) -> None:
        self.saved, self.dev, self.batch, self.where, self.bad = saved, dev, batch, where, bad
        c = len(saved.classes)
        self.models = {
            m.run: [load_fold_model(m, f, c, dev) for f in range(len(m.weights))]
            for m in saved.members
        }
        self.dtype = {m.run: _dtype(precision, m, dev) for m in saved.members}
        self.norm = {m.run: normalisation(m.mean, m.std, dev) for m in saved.members}
        where.mkdir(parents=True, exist_ok=True)
        self.logits = {
            m.run: np.lib.format.open_memmap(
                where / f"{m.run}.npy", mode="w+", dtype=np.float32, shape=(len(m.views), n, c)
            )
            for m in saved.members
        }
        for run in self.logits:  # sparse until reserved: a full disk would be a SIGBUS later
            path = where / f"{run}.npy"
            try:
                reserve_file(path, path.stat().st_size)
            except BaseException:
                self.discard()
                raise

    def discard(self) -> None:
        """Leave no partial logits behind (a failed pass)."""
        for run in list(self.logits):
            del self.logits[run]
            (self.where / f"{run}.npy").unlink(missing_ok=True)

    def stream(
        self, paths: list[Path], start: float, limit: float, clock: Callable[[], float]
    ) -> dict[str, Any]:
        """Decode, forward, write; after ``PROBE_BATCHES`` batches apply the time budget."""
        members = self.saved.members
        active = {(m.run, v) for m in members for v in m.views}
        costs = dict.fromkeys(active, 0.0)
        decode_s, probed, dropped, estimate = 0.0, 0, [], None
        starts = list(range(0, len(paths), self.batch))
        pool = ThreadPoolExecutor(max_workers=cores())
        t_pass = clock()
        try:
            pending = self._decode(pool, paths, starts[0]) if starts else None
            bar = tqdm(total=len(paths), desc="predict", unit="img", disable=None, leave=False)
            for i, s in enumerate(starts):
                t0 = clock()
                images = self._results(pending, s)
                if i + 1 < len(starts):  # decode the next batch while this one runs
                    pending = self._decode(pool, paths, starts[i + 1])
                probe = i < PROBE_BATCHES
                decode_s += clock() - t0 if probe else 0.0
                batch = {z: np.stack([im[z] for im in images]) for z in images[0]}
                for m in members:
                    self._forward(m, batch, s, active, costs if probe else None, clock)
                probed += len(images) if probe else 0
                bar.update(len(images))
                if i + 1 == PROBE_BATCHES and i + 1 < len(starts):
                    left = limit - budget.margin_for(limit) - (clock() - start)
                    per = {k: v / probed for k, v in costs.items()}
                    n_left = len(paths) - probed
                    estimate = n_left * (decode_s / probed + sum(per.values()))
                    dropped = self._drops(per, decode_s / probed, n_left, left)
                    active -= {(r, v) for r, v in dropped if v != "*"}
                    active -= {k for r, v in dropped if v == "*" for k in active if k[0] == r}
                    print(_budget_line(estimate, left, dropped), flush=True)
            bar.close()
        finally:
            pool.shutdown(wait=True, cancel_futures=True)
        for a in self.logits.values():
            a.flush()
        seconds = max(clock() - t_pass, 1e-9)
        return {
            "img_per_s": len(paths) / seconds,
            "pass_seconds": round(seconds, 3),
            "time_limit_s": limit,
            "estimate_s": estimate,
            "dropped": [{"run": r, "view": v} for r, v in dropped],
            "members": [m.run for m in members],
            "views": {m.run: list(m.views) for m in members},
        }

    def _drops(self, per, decode, n_left, left) -> list[tuple[str, str]]:
        tta = {m.run: m.views for m in self.saved.members if m.view == "tta"}
        return budget.drops(per, decode, n_left, left, tta, self.saved.weakest_first())

    def keys(self) -> dict[str, list[int]]:
        """The members' image sizes by how their runs were trained to decode (``Recipe.decode``):
        a batch holds ``(decode, size) -> (B, S, S, 3) uint8``."""
        out: dict[str, set[int]] = {}
        for m in self.saved.members:
            out.setdefault(m.recipe.decode, set()).add(m.recipe.image_size)
        return {how: sorted(z) for how, z in out.items()}

    def _decode(self, pool: ThreadPoolExecutor, paths: list[Path], s: int) -> list:
        """Futures of ``{(decode, size): (S, S, 3) uint8}`` per image, decoded in the worker
        exactly as the decode caches were (only small copies are held, however large the file)."""
        keys = self.keys()

        def one(path: Path | None) -> dict[tuple[str, int], np.ndarray] | ImageError:
            if path is None:  # no file: already recorded by predict_stage
                return {(h, z): np.zeros((z, z, 3), np.uint8) for h, zs in keys.items() for z in zs}
            try:
                return {
                    (how, z): img
                    for how, sizes in keys.items()
                    for z, img in decode_sizes(path, sizes, how).items()
                }
            except ImageError as e:
                if not self.bad.fallback:
                    raise
                return e

        return [pool.submit(one, p) for p in paths[s : s + self.batch]]

    def _results(self, pending: list, s: int) -> list[dict[tuple[str, int], np.ndarray]]:
        """The decoded batch starting at test row ``s``; an unreadable image (fallback) is
        recorded and replaced by a black one, whose logits are overwritten after the pass."""
        out = []
        for j, f in enumerate(pending):
            got = f.result()
            if isinstance(got, ImageError):
                self.bad.add(s + j, got.reason)
                got = {
                    (h, z): np.zeros((z, z, 3), np.uint8)
                    for h, zs in self.keys().items()
                    for z in zs
                }
            out.append(got)
        return out

    @torch.inference_mode()
    def _forward(self, m: Member, batch: dict, s: int, active: set, costs, clock) -> None:
        """The fold mean of each active view's logits for one batch (``batch``: size ->
        ``(decode, size) -> (B, S, S, 3) uint8``), into ``logits[m.run]``."""
        views = [v for v in m.views if (m.run, v) in active]
        if not views:
            return
        images = batch[(m.recipe.decode, m.recipe.image_size)]
        x = to_input(torch.from_numpy(images), *self.norm[m.run], self.dev, m.recipe.channels_last)
        dtype = self.dtype[m.run]
        for v in views:
            t0 = clock()
            acc = None
            for model in self.models[m.run]:
                with autocast(self.dev, dtype):
                    out = model(apply_view(v, x)).float().cpu().numpy()
                acc = out if acc is None else acc + out  # as np.mean over folds adds them
            self.logits[m.run][m.views.index(v), s : s + len(images)] = acc / len(
                self.models[m.run]
            )
            if costs is not None:
                costs[(m.run, v)] += clock() - t0


def _dtype(precision: str, m: Member, dev: torch.device) -> torch.dtype | None:
    if precision == "auto":
        return amp_dtype(m.recipe, dev)
    return {"fp32": None, "fp16": torch.float16, "bf16": torch.bfloat16}[precision]


def _budget_line(estimate: float, left: float, dropped: list[tuple[str, str]]) -> str:
    what = ", ".join(f"{r} (whole member)" if v == "*" else f"{r} view {v}" for r, v in dropped)
    head = f"time budget: the rest needs ~{estimate:.0f} s of {left:.0f} s left"
    return f"{head}; dropped {what}" if dropped else f"{head}; nothing dropped"
