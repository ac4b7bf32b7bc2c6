"""Throughput of one recipe: the loader alone, the model's bare speed, and the real loops.

``bench_stage`` measures images/s for

(a) the real training DataLoader (``make_loader`` over every train row, same augmentation and
    workers as ``train_fold``) including ``to_input`` on the device;
(b) the bare training step: forward, loss, backward and ``train_loop.optimizer_step`` (optimizer, schedule,
    EMA) of the same ``TrainState`` on random tensors already on the device, with no per-batch sync;
(c) the real training loop: ``train_loop.train_one_epoch`` on that DataLoader, so augmentation,
    collation, ``to_input``, mixup, ``loss.item()``, the scheduler and the progress bar are all
    in the timing; and (d)/(e) the same pair for TTA prediction (bare forwards of every view on
    random tensors, then ``model.infer.predict`` over cached images).

Warm-up batches run through the same code path first and are left out of the timing: for (a)
and (c) the clock starts when the loop asks for batch ``warmup``, within the same pass, so worker
start-up, first-iteration allocations and per-epoch set-up are not counted (they amortise over a
real epoch). c/b and e/d say how much of the model's bare speed the real loops keep.
"""

from __future__ import annotations

import os
import time
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from .. import artifacts
from ..config import Recipe
from ..model.backbone import create_model, data_config
from ..model.device import amp_dtype, autocast
from ..model.infer import predict
from ..model.inputs import to_input
from ..model.tta import apply_view
from ..train import loop as train_loop
from ..train.augment import loader_transform
from ..train.cache import build_cache
from ..train.loader import CachedImages, auto_workers, make_loader
from ..util.machine import cores
from ..workspace import Workspace


def bench_stage(
    comp,
    recipe: Recipe,
    device: torch.device,
    batches: int = 20,
    warmup: int = 3,
    ws: Workspace | None = None,
    synthetic: int = 0,
) -> dict:
    """Print and return images/s of the loader, bare and real training, bare and real TTA
    predict. ``comp`` None: ``synthetic`` random images in memory, 100 classes (no competition,
    nothing written)."""
    device = torch.device(device)
    batches, warmup = max(1, int(batches)), max(0, int(warmup))
    r, bs = recipe, recipe.batch_size
    pbs = bs * 2  # train_fold predicts val/OOF/test with batch_size * 2
    torch.manual_seed(r.seed)
    load_start = os.getloadavg()[0]

    if comp is None:
        images, labels, classes = synthetic_images(synthetic or 4 * bs, r.image_size, r.seed)
        name, cache_path, build_s = "synthetic", "(in memory)", None
    else:
        cache_path = (ws or Workspace(comp.name)).decode_cache("train", r.image_size)
        images, build_s = _cache(comp, r.image_size, cache_path)
        labels = artifacts.label_indices(comp.train["label"], comp.classes)
        name, classes = comp.name, list(comp.classes)

    model = create_model(r, len(classes)).to(device)
    cfg = data_config(model, r)
    norm = (torch.tensor(cfg["mean"], device=device), torch.tensor(cfg["std"], device=device))
    workers = auto_workers(r, device)
    aug = loader_transform(r)
    ds = CachedImages(images, np.arange(len(images)), labels, aug, seed=r.seed)
    loader = make_loader(ds, bs, True, r.seed, workers, device)
    loop = train_loop.make_state(model, r, norm, device, len(loader), len(classes))
    train_loop.set_frozen(model, False)  # a typical (unfrozen) epoch

    res: dict = {
        "comp": name,
        "device": str(device),
        "threads": torch.get_num_threads(),
        "backbone": r.backbone,
        "image_size": r.image_size,
        "batch_size": bs,
        "predict_batch_size": pbs,
        "workers": workers,
        "views": list(r.tta),
        "amp": str(amp_dtype(r, device) or "off").replace("torch.", ""),
        "batches": batches,
        "warmup": warmup,
        "train_images": len(images),
        "cache_path": str(cache_path),
        "cache_build_s": build_s,
        "cores": cores(),
    }
    res["loader_ips"] = _loader_ips(loader, loop, warmup, batches)
    res["bare_train_ips"] = _bare_train_ips(loop, bs, len(classes), warmup, batches)
    res["memory_format"] = "channels_last" if r.channels_last else "contiguous"
    res["other_format_ips"] = _other_format_ips(loop, bs, len(classes), warmup, batches)
    res["train_ips"] = _train_ips(loop, loader, warmup, batches)
    res["bare_predict_ips"] = _bare_predict_ips(loop, pbs, warmup, batches)
    res["predict_ips"] = _predict_ips(loop, images, pbs, warmup, batches)
    res["load_avg"] = (load_start, os.getloadavg()[0])
    res["train_ratio"] = res["train_ips"] / res["bare_train_ips"]
    res["predict_ratio"] = res["predict_ips"] / res["bare_predict_ips"]
    print(format_bench(res))
    return res


def synthetic_images(n: int, size: int, seed: int) -> tuple[np.ndarray, np.ndarray, list[str]]:
    """``n`` random ``(size, size, 3) uint8`` images and labels of 100 classes, in memory: what
    the loader and the model see of a real decode cache."""
    rng = np.random.default_rng(seed)
    images = rng.integers(0, 256, (n, size, size, 3), dtype=np.uint8)
    return images, rng.integers(0, 100, n), [f"c{i}" for i in range(100)]


def format_bench(res: dict) -> str:
    nv = len(res["views"])
    head = (
        f"bench {res['backbone']} @{res['image_size']}px batch {res['batch_size']} on "
        f"{res['device']} ({res['threads']} threads, {res['workers']} workers), {res['comp']}"
    )
    sub = (
        f"  {res['batches']} batches timed after {res['warmup']} warm-up, amp {res['amp']}, "
        f"predict batch {res['predict_batch_size']} views {','.join(res['views'])}"
    )
    busy = max(res["load_avg"])
    if busy > res["cores"] + 0.5:  # ours counts for about 1 (or ``threads``)
        sub += (
            f"\n  ! load average {busy:.1f} on {res['cores']} cores: other processes compete for "
            "the CPU, so these figures (and their ratios) are not reliable"
        )
    if res["cache_build_s"] is not None:
        sub += (
            f"\n  decode cache built in {res['cache_build_s']:.1f} s "
            f"({res['train_images']} images) -> {res['cache_path']}"
        )
    rows = [
        ("loader alone (+ to_input)", res["loader_ips"], ""),
        (f"bare fwd+bwd, {res['memory_format']}", res["bare_train_ips"], ""),
        (
            f"bare fwd+bwd, {_other(res['memory_format'])}",
            res["other_format_ips"],
            f"chosen/other = {res['bare_train_ips'] / res['other_format_ips']:.2f}",
        ),
        ("real training loop", res["train_ips"], f"c/b = {res['train_ratio']:.2f}"),
        (f"bare predict x{nv} views", res["bare_predict_ips"], ""),
        (f"real predict x{nv} views", res["predict_ips"], f"e/d = {res['predict_ratio']:.2f}"),
    ]
    body = [f"  {name:<30}{ips:>9.0f} img/s   {extra}".rstrip() for name, ips, extra in rows]
    return "\n".join([head, sub, *body])


def _other(fmt: str) -> str:
    return "contiguous" if fmt == "channels_last" else "channels_last"


def _cache(comp, size: int, cache_path: Path) -> tuple[np.ndarray, float | None]:
    """The train decode cache as ``train_fold`` builds it; seconds spent if it had to be built."""
    meta = cache_path.with_suffix(".json")
    before = _stamp(meta)
    t0 = time.perf_counter()
    images = build_cache(comp.root, comp.train["path"].tolist(), size, cache_path)
    secs = time.perf_counter() - t0
    return images, (secs if _stamp(meta) != before else None)


def _stamp(path: Path) -> tuple[int, int] | None:
    try:
        st = path.stat()
    except FileNotFoundError:
        return None
    return st.st_mtime_ns, st.st_ino


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def _epochs(loader, epoch: int) -> Iterator:
    """Batches of ``loader`` epoch after epoch (small datasets wrap around)."""
    while True:
        loader.sampler.set_epoch(epoch)
        yield from loader
        epoch += 1


class _Timed:
    """``warmup + batches`` batches from ``loader``; the clock starts (after a device sync) when
    batch ``warmup`` is requested, i.e. once the warm-up batches have gone through the loop body.
    Counts the timed images. ``len`` is what ``train_one_epoch`` and its progress bar see."""

    def __init__(self, loader, warmup: int, batches: int, device: torch.device, epoch: int):
        self.loader, self.warmup, self.batches = loader, warmup, batches
        self.device, self.epoch = device, epoch
        self.t0, self.images = 0.0, 0

    def __len__(self) -> int:
        return self.warmup + self.batches

    def __iter__(self):
        it = _epochs(self.loader, self.epoch)
        try:
            for i in range(len(self)):
                if i == self.warmup:
                    _sync(self.device)
                    self.t0 = time.perf_counter()
                batch = next(it)
                if i >= self.warmup:
                    self.images += len(batch[1])
                yield batch
        finally:
            it.close()

    def ips(self) -> float:
        _sync(self.device)
        return self.images / max(time.perf_counter() - self.t0, 1e-9)


def _loader_ips(loader, loop: train_loop.TrainState, warmup: int, batches: int) -> float:
    """(a) The training DataLoader and ``to_input``, nothing else."""
    dev, r = loop.device, loop.recipe
    timed = _Timed(loader, warmup, batches, dev, epoch=0)
    for images, labels in timed:
        to_input(images, *loop.norm, dev, r.channels_last)
        labels.to(dev, non_blocking=True)
    return timed.ips()


def _other_format_ips(
    loop: train_loop.TrainState, bs: int, classes: int, warmup: int, batches: int
) -> float:
    """(b) again in the other memory format (NCHW if the recipe uses channels_last, else NHWC),
    so the bench shows what the chosen format buys on this device; the model is restored."""
    chosen = loop.recipe.channels_last
    other = torch.contiguous_format if chosen else torch.channels_last
    loop.model.to(memory_format=other)
    try:
        return _bare_train_ips(loop, bs, classes, warmup, batches, channels_last=not chosen)
    finally:
        loop.model.to(memory_format=torch.channels_last if chosen else torch.contiguous_format)


def _bare_train_ips(
    loop: train_loop.TrainState,
    bs: int,
    classes: int,
    warmup: int,
    batches: int,
    channels_last: bool | None = None,
) -> float:
    """(b) Forward, loss, backward and ``train_loop.optimizer_step`` on random device tensors, as the real loop
    does them (same autocast, loss, grad scaler, accumulation) minus data, mixup and host syncs."""
    r, dev = loop.recipe, loop.device
    dtype = amp_dtype(r, dev)
    s = r.image_size
    x = torch.randn(bs, 3, s, s, device=dev)
    if r.channels_last if channels_last is None else channels_last:
        x = x.contiguous(memory_format=torch.channels_last)
    y = torch.randint(0, classes, (bs,), device=dev)
    loop.model.train()
    t0 = 0.0
    for i in range(warmup + batches):
        if i == warmup:
            _sync(dev)
            t0 = time.perf_counter()
        with autocast(dev, dtype):
            logits = loop.forward(x)
            loss = F.cross_entropy(logits.float(), y, label_smoothing=r.label_smoothing)
        loop.scaler.scale(loss / r.accum_steps).backward()
        if (i + 1) % r.accum_steps == 0:
            train_loop.optimizer_step(loop)
    _sync(dev)
    loop.opt.zero_grad(set_to_none=True)
    return batches * bs / max(time.perf_counter() - t0, 1e-9)


def _train_ips(loop: train_loop.TrainState, loader, warmup: int, batches: int) -> float:
    """(c) ``train_loop.train_one_epoch`` over ``warmup + batches`` batches of the real loader."""
    timed = _Timed(loader, warmup, batches, loop.device, epoch=1000)
    train_loop.train_one_epoch(loop, timed, "bench train")
    return timed.ips()


def _bare_predict_ips(loop: train_loop.TrainState, pbs: int, warmup: int, batches: int) -> float:
    """(d) Forward of every TTA view on random device tensors, under the same autocast as
    ``finish_fold``'s OOF/test prediction."""
    dev, s = loop.device, loop.recipe.image_size
    dtype = amp_dtype(loop.recipe, dev)
    model = loop.eval_model()
    model.eval()
    x = torch.randn(pbs, 3, s, s, device=dev)
    if loop.recipe.channels_last:  # as predict's to_input makes it
        x = x.contiguous(memory_format=torch.channels_last)
    t0 = 0.0
    with torch.inference_mode(), autocast(dev, dtype):
        for i in range(warmup + batches):
            if i == warmup:
                _sync(dev)
                t0 = time.perf_counter()
            for v in loop.recipe.tta:
                model(apply_view(v, x)).float()
    _sync(dev)
    return batches * pbs / max(time.perf_counter() - t0, 1e-9)


def _predict_ips(
    loop: train_loop.TrainState, images: np.ndarray, pbs: int, warmup: int, batches: int
):
    """(e) ``model.infer.predict`` with every TTA view over cached train images (wrapping around)."""
    dev, views = loop.device, loop.recipe.tta
    dtype = amp_dtype(loop.recipe, dev)
    model = loop.eval_model()
    rows = np.arange((warmup + batches) * pbs) % len(images)
    common = (loop.norm, dev, pbs)
    timed = rows[warmup * pbs :]
    how = {"dtype": dtype, "channels_last": loop.recipe.channels_last}
    if warmup:
        predict(model, images, rows[: warmup * pbs], views, *common, desc="warm-up", **how)
    _sync(dev)
    t0 = time.perf_counter()
    predict(model, images, timed, views, *common, desc="bench predict", **how)
    _sync(dev)
    return len(timed) / max(time.perf_counter() - t0, 1e-9)


__all__ = ["bench_stage", "format_bench"]
