"""Images decoded once into a uint8 memory-mapped cache, Albumentations presets, loaders.

Epochs never decode JPEGs again: ``build_cache`` writes ``(N, S, S, 3) uint8`` at the recipe's
size, shared by every recipe with that size. Augmentation is reseeded per batch from
``(seed, epoch, batch)``, so a run is reproducible whatever the number of workers and can be
resumed at an epoch boundary with identical results.
"""

from __future__ import annotations

import hashlib
import json
import os
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import albumentations as A
import numpy as np
import torch
from tqdm import tqdm

from .. import artifacts
from ..competition.images import ImageError, load_rgb
from ..config import AUGMENT_PRESETS, Recipe
from ..errors import CompetitionError
from .inputs import CROP_SCALE, resize_square
from .inputs import device_augment as device_augment

# RandomResizedCrop scale range of each preset but "none" (which adds no op)
if ("none", *CROP_SCALE) != AUGMENT_PRESETS:  # the names are config.AUGMENT_PRESETS'
    raise ImportError(f"augment presets {AUGMENT_PRESETS} have no code here: {tuple(CROP_SCALE)}")


def cached(rel_paths: list[str], size: int, cache_path: Path) -> np.memmap | None:
    """The decode cache of ``rel_paths`` at ``size`` when it exists and is up to date."""
    key = hashlib.sha256(("\n".join(rel_paths) + f"|{size}").encode()).hexdigest()[:16]
    meta_path = cache_path.with_suffix(".json")
    shape = (len(rel_paths), size, size, 3)
    if cache_path.is_file() and meta_path.is_file():
        if json.loads(meta_path.read_text()).get("key") == key:
            return np.memmap(cache_path, dtype=np.uint8, mode="r", shape=shape)
    return None


def decode_sample(root: Path, rel_paths: list[str], size: int) -> np.ndarray:
    """The first images of ``rel_paths`` decoded into memory as a cache build would (threads,
    resize), without writing a cache: what the time-budget probe times and trains on."""
    out = np.empty((len(rel_paths), size, size, 3), dtype=np.uint8)
    _decode_into(out, root, rel_paths, size, f"probe decode @{size}px")
    return out


def build_cache(root: Path, rel_paths: list[str], size: int, cache_path: Path) -> np.memmap:
    """Decode ``rel_paths`` (relative to ``root``) into ``cache_path``; reuse it if up to date."""
    if (hit := cached(rel_paths, size, cache_path)) is not None:
        return hit
    key = hashlib.sha256(("\n".join(rel_paths) + f"|{size}").encode()).hexdigest()[:16]
    meta_path = cache_path.with_suffix(".json")
    shape = (len(rel_paths), size, size, 3)
    cache_path.parent.mkdir(parents=True, exist_ok=True)
    tmp = cache_path.with_name(f".{cache_path.name}.tmp")
    out = np.memmap(tmp, dtype=np.uint8, mode="w+", shape=shape)
    try:
        _decode_into(out, root, rel_paths, size, f"decode {cache_path.stem} @{size}px")
        out.flush()
    except BaseException:  # a bad image or Ctrl-C: leave no partial cache behind
        del out
        tmp.unlink(missing_ok=True)
        raise
    tmp.replace(cache_path)
    artifacts.atomic_write_text(meta_path, json.dumps({"key": key, "shape": list(shape)}))
    return np.memmap(cache_path, dtype=np.uint8, mode="r", shape=shape)


def _decode_into(out: np.ndarray, root: Path, rel_paths: list[str], size: int, desc: str) -> None:
    """Fill ``out (N, S, S, 3)``; the first bad image stops every pending decode."""

    def decode(i: int) -> None:
        out[i] = resize_square(load_rgb(root / rel_paths[i]), size)

    pool = ThreadPoolExecutor(max_workers=4)
    try:
        jobs = pool.map(decode, range(len(rel_paths)))
        list(tqdm(jobs, total=len(rel_paths), desc=desc, leave=False, disable=None))
    except ImageError as e:
        raise CompetitionError(f"{e}; `make check COMP={root}` lists every bad image") from None
    finally:
        pool.shutdown(wait=True, cancel_futures=True)


def train_transform(preset: str, size: int, custom: tuple = ()) -> A.Compose | None:
    """Albumentations preset, then the recipe's ``custom_augment`` ops, on uint8 images at ``size``.

    Normalisation happens later on the device (``to_input``), so workers move uint8 only.
    """
    extra = [getattr(A, t["name"])(**{k: v for k, v in t.items() if k != "name"}) for t in custom]
    ops = _preset(preset, size) + extra
    return A.Compose(ops) if ops else None


def loader_transform(recipe: Recipe) -> A.Compose | None:
    """What the loader's workers apply: the preset and ``custom_augment``, or with
    ``device_augment`` only ``custom_augment`` (the crop and flip run on the device)."""
    preset = "none" if recipe.device_augment else recipe.augment
    return train_transform(preset, recipe.image_size, recipe.custom_augment)


def _preset(preset: str, size: int) -> list:
    if preset == "none":
        return []
    ops: list[A.BasicTransform] = [
        A.RandomResizedCrop(size=(size, size), scale=CROP_SCALE[preset], ratio=(0.8, 1.25)),
        A.HorizontalFlip(p=0.5),
    ]
    if preset in ("medium", "heavy"):
        ops += [
            A.Affine(rotate=(-15, 15), p=0.5),
            A.ColorJitter(brightness=0.2, contrast=0.2, saturation=0.2, hue=0.05, p=0.5),
        ]
    if preset == "heavy":
        ops += [
            A.OneOf(
                [A.GaussianBlur(blur_limit=(3, 5)), A.GaussNoise(std_range=(0.02, 0.08))], p=0.25
            ),
            A.CoarseDropout(
                num_holes_range=(1, 4),
                hole_height_range=(0.1, 0.25),
                hole_width_range=(0.1, 0.25),
                p=0.5,
            ),
        ]
    return ops


class Joined:
    """Two ``(N, S, S, 3) uint8`` caches read as one (train rows, then test rows): what a
    student with pseudo-labels trains on. Indexed by an array of rows, like a memmap."""

    def __init__(self, first: np.ndarray, second: np.ndarray) -> None:
        self.first, self.second = first, second
        self.shape = (len(first) + len(second), *first.shape[1:])

    def __len__(self) -> int:
        return self.shape[0]

    def __getitem__(self, rows) -> np.ndarray:
        rows = np.asarray(rows)
        out = np.empty((len(rows), *self.shape[1:]), dtype=np.uint8)
        head = rows < len(self.first)
        out[head] = self.first[rows[head]]
        out[~head] = self.second[rows[~head] - len(self.first)]
        return out


class CachedImages(torch.utils.data.Dataset):
    """Rows of a uint8 cache. Keys are ``epoch * len(self) + i`` (see ``EpochSampler``).
    With ``soft (N, C)`` (a student's targets by row) batches carry them as a third tensor."""

    def __init__(
        self,
        images: np.ndarray,
        rows: np.ndarray,
        labels: np.ndarray | None,
        transform: A.Compose | None = None,
        seed: int = 0,
        soft: np.ndarray | None = None,
    ) -> None:
        self.images, self.rows, self.labels = images, np.asarray(rows), labels
        self.transform, self.seed, self.soft = transform, seed, soft

    def __len__(self) -> int:
        return len(self.rows)

    def __getitem__(self, key: int):
        return self.__getitems__([key])

    def __getitems__(self, keys: list[int]) -> tuple[torch.Tensor, ...]:
        """One batch ``(B, S, S, 3) uint8``, labels ``(B,)`` (and soft targets ``(B, C)``);
        augmentation seeded per batch."""
        epoch, first = divmod(int(keys[0]), len(self))
        idx = np.asarray([k % len(self) for k in keys])
        batch = np.ascontiguousarray(self.images[self.rows[idx]])
        if self.transform is not None:
            self.transform.set_random_seed(self.seed * 1_000_003 + epoch * 10_007 + first)
            batch = np.stack([self.transform(image=img)["image"] for img in batch])
        labels = self.labels[self.rows[idx]] if self.labels is not None else np.zeros(len(idx))
        out = (torch.from_numpy(batch), torch.from_numpy(np.asarray(labels, dtype=np.int64)))
        if self.soft is None:
            return out
        return *out, torch.from_numpy(np.asarray(self.soft[self.rows[idx]], dtype=np.float32))


class EpochSampler(torch.utils.data.Sampler):
    """Yields ``epoch * n + i``; shuffles with a generator seeded by ``(seed, epoch)``."""

    def __init__(self, n: int, seed: int, shuffle: bool) -> None:
        self.n, self.seed, self.shuffle, self.epoch = n, seed, shuffle, 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def __len__(self) -> int:
        return self.n

    def __iter__(self):
        if self.shuffle:
            g = torch.Generator().manual_seed(self.seed * 7919 + self.epoch)
            order = torch.randperm(self.n, generator=g).tolist()
        else:
            order = range(self.n)
        return iter(self.epoch * self.n + i for i in order)


def make_loader(
    ds: CachedImages, batch_size: int, shuffle: bool, seed: int, workers: int, device: torch.device
) -> torch.utils.data.DataLoader:
    return torch.utils.data.DataLoader(
        ds,
        batch_size=batch_size,
        sampler=EpochSampler(len(ds), seed, shuffle),
        drop_last=shuffle and len(ds) > batch_size,
        collate_fn=_identity,
        num_workers=workers,
        persistent_workers=workers > 0,
        pin_memory=device.type == "cuda",
    )


def _identity(batch):
    return batch


def auto_workers(recipe: Recipe, device: torch.device) -> int:
    """Loader worker processes: the recipe's ``num_workers``, or for -1 (auto) up to 8 on CUDA
    and 0 on CPU (the decode cache makes batches cheap; workers would compete for the cores)."""
    if recipe.num_workers >= 0:
        return recipe.num_workers
    return min(8, os.cpu_count() or 1) if device.type == "cuda" else 0
