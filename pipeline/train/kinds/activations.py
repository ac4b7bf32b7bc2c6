"""Cached activations of a frozen trunk: what a partial member (``kind = "partial"``) trains its
tail on. ``(N, C, H, W) float16`` per image of a split under each TTA view, memory-mapped, for
one (backbone, weights, image size, stages tuned); built once, read by every fold
(``<models>/<comp>/embeddings/<backbone>_<size>_<weights>/acts<stages>_<split>_<view>.npy``,
beside the embeddings the same pass writes for feature members of that backbone).

A timm network is split at its stages: EfficientNet, MobileNet and their kin keep them in
``blocks`` after ``conv_stem``/``bn1``; ConvNeXt and others in ``stages`` after ``stem``. The
trunk is the stem and every stage but the last ``n``; the tail is the same network with the
stem replaced by an identity and only the last ``n`` stages, sharing the model's modules, so
training the tail trains the model that ``best.pt`` saves whole.
"""

from __future__ import annotations

import copy
import glob
import json
import os
import time

import numpy as np
import torch
from tqdm import tqdm

from ... import artifacts
from ...competition import Competition
from ...config import Recipe
from ...disk import faults, locks, space
from ...errors import RecipeError
from ...model.backbone import create_model, data_config
from ...model.device import amp_dtype, autocast
from ...model.infer import normalisation
from ...model.inputs import to_input
from ...model.tta import apply_view
from ...workspace import Workspace
from ..cache import build_cache
from .embed import _key as embedding_key

# (attribute holding the stages, the modules before them), in the order they are tried
LAYOUTS = (("blocks", ("conv_stem", "bn1")), ("stages", ("stem",)))


def split_model(model: torch.nn.Module, n: int) -> tuple[torch.nn.Module, torch.nn.Module]:
    """``(trunk, tail)`` of a timm network sharing its modules: ``tail(trunk(x))`` is
    ``model(x)``. Refuses a network whose stages it cannot find, or ``n`` outside them."""
    for stages_attr, stem in LAYOUTS:
        stages = getattr(model, stages_attr, None)
        if isinstance(stages, torch.nn.Sequential) and all(hasattr(model, s) for s in stem):
            break
    else:
        raise RecipeError(
            f'kind = "partial" splits a network at its stages (timm EfficientNet/MobileNet '
            f"`blocks`, ConvNeXt-style `stages`); {type(model).__name__} has neither: use "
            'kind = "features" or "finetune" for it'
        )
    if not 1 <= n < len(stages):
        raise RecipeError(
            f"train_stages = {n}: {type(model).__name__} has {len(stages)} stages; tune between "
            f"1 and {len(stages) - 1} (the rest is the frozen trunk)"
        )
    trunk = torch.nn.Sequential(*(getattr(model, s) for s in stem), *stages[: len(stages) - n])
    tail = copy.copy(model)
    tail._modules = dict(model._modules)
    tail._parameters = dict(model._parameters)
    tail._buffers = dict(model._buffers)
    for s in stem:
        setattr(tail, s, torch.nn.Identity())
    setattr(tail, stages_attr, stages[len(stages) - n :])
    return trunk, tail


def tail_of(model: torch.nn.Module, n: int) -> torch.nn.Module:
    return split_model(model, n)[1]


def check_split(recipe: Recipe) -> None:
    """That the recipe's network splits, and that trunk then tail computes what the whole
    network does (a random-weight network on one small image; no weights are read)."""
    model = create_model(recipe, 3, pretrained=False).eval()
    trunk, tail = split_model(model, recipe.train_stages)
    x = torch.randn(1, 3, 64, 64)
    with torch.no_grad():
        whole, parts = model(x), tail(trunk(x))
    if not torch.allclose(whole, parts, atol=1e-4, rtol=1e-3):
        raise RecipeError(
            f'kind = "partial": {recipe.backbone} does not compute stem, stages, head in that '
            'order, so its stages cannot be cached; use kind = "features" or "finetune"'
        )


def _path(ws: Workspace, key: str, stages: int, split: str, view: str):
    return ws.embedding(key, split, view).with_name(f"acts{stages}_{split}_{view}.npy")


def _read(path, ids_hash: str) -> np.ndarray | None:
    """The cached activations, or None when absent, incomplete or made for other ids."""
    meta = path.with_suffix(".json")
    if not path.is_file() or not meta.is_file():
        return None
    try:
        info = json.loads(meta.read_text())
        arr = np.load(path, mmap_mode="r")
    except (OSError, ValueError) as e:  # a bad header, or shorter than its header says
        print(f"activation cache {path} is damaged ({e}); rebuilding it", flush=True)
        return None
    if info.get("ids_hash") != ids_hash or list(arr.shape) != info.get("shape"):
        return None
    return arr


def cached_activation_views(comp: Competition, ws: Workspace, recipe: Recipe) -> dict:
    """Per split, the recipe's views whose activations are on disk."""
    out = {}
    for split in ("train", "test"):
        key, ids_hash = embedding_key(comp, recipe, split)
        out[split] = [
            v
            for v in recipe.tta
            if _read(_path(ws, key, recipe.train_stages, split, v), ids_hash) is not None
        ]
    return out


def trunk_batches(trunk, images, norm, device, recipe: Recipe, view="none", tail=None, desc=""):
    """``(float16 (B, C, H, W), float32 (B, D) or None)`` per batch of ``images``: the trunk's
    activations under ``view`` and, with ``tail`` (the frozen network without a classifier),
    their pooled features; the recipe's batch size, autocast and memory format."""
    dtype, batch = amp_dtype(recipe, device), recipe.batch_size * 2
    trunk.eval()
    if tail is not None:
        tail.eval()
    steps = range(0, len(images), batch)
    for s in tqdm(steps, desc=desc or "trunk", leave=False, disable=True if not desc else None):
        x = torch.from_numpy(np.array(images[s : s + batch]))
        with torch.inference_mode(), autocast(device, dtype):
            a = trunk(apply_view(view, to_input(x, *norm, device, recipe.channels_last)))
            f = tail(a).float().cpu().numpy() if tail is not None else None
        yield a.float().contiguous().cpu().numpy().astype(np.float16), f


def trunk_pass(trunk, images, norm, device, recipe: Recipe, view="none") -> np.ndarray:
    """``(N, C, H, W) float16``: the trunk's activations on ``images`` in memory (the probe's
    sample)."""
    return np.concatenate([a for a, _ in trunk_batches(trunk, images, norm, device, recipe, view)])


def activations(
    comp: Competition, ws: Workspace, recipe: Recipe, split: str, device: torch.device
) -> list[np.ndarray]:
    """``[(N, C, H, W) float16 memmap per view]`` of every ``split`` image (built on first use,
    with the pooled embeddings of the views that have none yet)."""
    key, ids_hash = embedding_key(comp, recipe, split)
    n = recipe.train_stages
    out: dict[str, np.ndarray] = {}
    missing = []
    for v in recipe.tta:
        got = _read(_path(ws, key, n, split, v), ids_hash)
        if got is None:
            missing.append(v)
        else:
            out[v] = got
    if missing:
        # the lock of this key's embeddings (embed.py): the trunk pass writes those too, so a
        # feature run of the backbone waits for it rather than embedding the images again
        lock = _path(ws, key, n, split, "").with_name(f".{split}.lock")
        with locks.wait_lock(lock, f"the {split} activations of {key}"):
            _build_missing(comp, ws, recipe, split, device, missing, out)
    return [out[v] for v in recipe.tta]


def _build_missing(comp, ws, recipe, split, device, missing: list[str], out: dict) -> None:
    """The activations (and pooled embeddings) of the ``missing`` views into ``out``, under
    the split's lock: those another process built while this one waited are read."""
    key, ids_hash = embedding_key(comp, recipe, split)
    n = recipe.train_stages
    for v in list(missing):
        if (got := _read(_path(ws, key, n, split, v), ids_hash)) is not None:
            out[v] = got
            missing.remove(v)
    if missing:
        faults.hold_point(f"activations:{split}")
        table = comp.train if split == "train" else comp.test
        size = recipe.image_size
        imgs = build_cache(comp.root, table["path"].tolist(), size, ws.decode_cache(split, size))
        model = create_model(recipe, 0).to(device)  # num_classes 0: pooled features
        cfg = data_config(model, recipe)
        trunk, tail = split_model(model, n)
        norm = normalisation(cfg["mean"], cfg["std"], device)
        t0 = time.perf_counter()
        for v in missing:  # one view at a time: a view's activations are written as they come
            path = _path(ws, key, n, split, v)
            desc = f"activations {split} {key} {v}"
            feats = _build(trunk, tail, imgs, norm, device, recipe, v, path, ids_hash, desc)
            emb = ws.embedding(key, split, v)
            if artifacts.read_embedding(emb, ids_hash) is None:
                artifacts.write_embedding(emb, feats, ids_hash)
            out[v] = _read(path, ids_hash)
        secs = time.perf_counter() - t0
        print(
            f"cached {recipe.backbone} @{size}px trunk activations (all but {n} stage(s)) of "
            f"{len(imgs)} {split} images x {len(missing)} views in {secs:.0f} s "
            f"({len(imgs) * len(missing) / secs:.0f} img/s)"
        )


def _build(trunk, tail, imgs, norm, device, recipe, view, path, ids_hash, desc) -> np.ndarray:
    """Write the activations of ``imgs`` under ``view`` straight into a memory-mapped ``.npy``
    (a temporary file, renamed when complete, then its ``.json``: ids and shape, so a kill
    leaves nothing that reads as complete); return the pooled features ``(N, D)``."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    for old in path.parent.glob(f".{glob.escape(path.name)}.*.tmp"):
        old.unlink(missing_ok=True)  # a killed builder's (the builder holds the split's lock)
    feats, out, at, needed = [], None, 0, None
    try:
        for a, f in trunk_batches(trunk, imgs, norm, device, recipe, view, tail, desc):
            if out is None:
                shape = (len(imgs), *a.shape[1:])
                out = np.lib.format.open_memmap(tmp, mode="w+", dtype=np.float16, shape=shape)
                needed = tmp.stat().st_size
                space.reserve_file(tmp, needed, path)  # sparse until reserved: SIGBUS when full
            out[at : at + len(a)] = a
            at += len(a)
            feats.append(f)
        out.flush()
        del out
        os.replace(tmp, path)
    except BaseException as e:
        tmp.unlink(missing_ok=True)
        if space.is_disk_full(e):
            raise space.disk_full(path, needed) from None
        raise
    artifacts.atomic_write_text(
        path.with_suffix(".json"), json.dumps({"ids_hash": ids_hash, "shape": list(shape)})
    )
    return np.concatenate(feats)
