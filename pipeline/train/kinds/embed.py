"""Frozen-backbone embeddings, computed once and shared: ``(N, D) float32`` per image of a split,
under each TTA view, for one (backbone, weights, image size). Every fold and every head of that
backbone reads them (``<models>/<comp>/embeddings/<backbone>_<size>_<weights>/<split>_<view>.npz``),
whatever member kind fits on them."""

from __future__ import annotations

import contextlib
import time

import numpy as np
import torch

from ... import artifacts
from ...competition import Competition
from ...config import Recipe
from ...disk import faults, locks
from ...model.backbone import create_model, data_config
from ...model.infer import normalisation, predict_as_trained
from ...workspace import Workspace
from ..cache import build_cache


def weights_tag(recipe: Recipe) -> str:
    """What the backbone's weights are, for the embedding key: a file's hash, hub or random."""
    if recipe.pretrained_file:
        return artifacts.file_hash(recipe.pretrained_file)[:12]
    return recipe.pretrained


def embeddings(
    comp: Competition, ws: Workspace, recipe: Recipe, split: str, device: torch.device
) -> tuple[np.ndarray, dict]:
    """``(V, N, D) float32`` embeddings of every ``split`` image under each of the recipe's views
    (cached; built on first use) and the backbone's data config."""
    key, ids_hash = _key(comp, recipe, split)
    out, missing = {}, []
    for view in recipe.tta:
        got = artifacts.read_embedding(ws.embedding(key, split, view), ids_hash)
        if got is None:
            missing.append(view)
        else:
            out[view] = got
    model = create_model(recipe, 0).to(device).eval()  # num_classes 0: pooled features
    cfg = data_config(model, recipe)
    with contextlib.ExitStack() as held:
        if missing:  # one process embeds; another waits, then reads what it wrote
            lock = ws.embedding(key, split, "").with_name(f".{split}.lock")
            held.enter_context(locks.wait_lock(lock, f"the {split} embeddings of {key}"))
        _embed_missing(comp, ws, recipe, split, device, model, cfg, missing, out)
    return np.stack([out[v] for v in recipe.tta]), cfg


def _embed_missing(comp, ws, recipe, split, device, model, cfg, missing, out) -> None:
    """Embed the ``missing`` views into ``out`` and their files (under the split's lock);
    those another process wrote while this one waited are read."""
    key, ids_hash = _key(comp, recipe, split)
    table = comp.train if split == "train" else comp.test
    for view in list(missing):
        got = artifacts.read_embedding(ws.embedding(key, split, view), ids_hash)
        if got is not None:
            out[view] = got
            missing.remove(view)
    if missing:
        faults.hold_point(f"embeddings:{split}")
        size = recipe.image_size
        imgs = build_cache(comp.root, table["path"].tolist(), size, ws.decode_cache(split, size))
        norm = normalisation(cfg["mean"], cfg["std"], device)
        t0 = time.perf_counter()
        desc = f"embed {split} {key} {'+'.join(missing)}"
        feats = predict_as_trained(
            model, imgs, np.arange(len(imgs)), tuple(missing), norm, device, recipe, desc
        )
        secs = time.perf_counter() - t0
        print(
            f"embedded {len(imgs)} {split} images x {len(missing)} views with {recipe.backbone} "
            f"@{size}px in {secs:.0f} s ({len(imgs) * len(missing) / secs:.0f} img/s)"
        )
        for view, f in zip(missing, feats, strict=True):
            artifacts.write_embedding(ws.embedding(key, split, view), f, ids_hash)
            out[view] = f


def _key(comp: Competition, recipe: Recipe, split: str) -> tuple[str, str]:
    """The embeddings' folder name and the hash of the ``split`` ids they must be made for."""
    key = f"{recipe.backbone}_{recipe.image_size}_{weights_tag(recipe)}"
    table = comp.train if split == "train" else comp.test
    return key, artifacts.text_hash("\n".join(table["id"].astype(str).tolist()))


def embedding_keys(comp: Competition, recipe: Recipe, views) -> frozenset[str]:
    """What a run's embeddings under ``views`` are, for the planner: ``embeddings:<key>:<view>``
    (a partial run's trunk pass writes what a feature run of the same backbone reads)."""
    key = _key(comp, recipe, "train")[0]
    return frozenset(f"embeddings:{key}:{v}" for v in views)


def all_cached(comp: Competition, ws: Workspace, recipe: Recipe) -> bool:
    """Whether every view's train and test embeddings of ``recipe`` are on disk."""
    have = cached_views(comp, ws, recipe)
    return all(v in have[s] for s in have for v in recipe.tta)


def cached_views(comp: Competition, ws: Workspace, recipe: Recipe) -> dict[str, list[str]]:
    """Per split, the recipe's views whose embeddings are already on disk (the planner's use)."""
    out = {}
    for split in ("train", "test"):
        key, ids_hash = _key(comp, recipe, split)
        out[split] = [
            v
            for v in recipe.tta
            if artifacts.read_embedding(ws.embedding(key, split, v), ids_hash) is not None
        ]
    return out
