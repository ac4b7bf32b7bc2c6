"""The training loader: rows of a decode cache as batches, augmented in the loader (seeded per
batch from ``(seed, epoch, batch)``, so a run is reproducible whatever the number of workers and
resumes at an epoch boundary with identical results).
"""

from __future__ import annotations

import os

import albumentations as A
import numpy as np
import torch

from ..config import Recipe


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
