"""Model inputs without Albumentations: the resize every decoded image gets, the uint8 batch ->
normalised tensor step and the batch-level device augmentation. Shared by training (``data``)
and inference (``pipeline.predict``), whose import closure must stay within what a Kaggle
notebook ships."""

from __future__ import annotations

import cv2
import numpy as np
import torch


def resize_square(img: np.ndarray, size: int) -> np.ndarray:
    if img.shape[0] == size and img.shape[1] == size:
        return img
    shrink = img.shape[0] > size or img.shape[1] > size
    return cv2.resize(
        img, (size, size), interpolation=cv2.INTER_AREA if shrink else cv2.INTER_CUBIC
    )


def to_input(
    images: torch.Tensor,
    mean: torch.Tensor,
    std: torch.Tensor,
    device: torch.device,
    channels_last: bool = False,
) -> torch.Tensor:
    """``(B, S, S, 3) uint8`` -> normalised ``(B, 3, S, S) float32`` on ``device``."""
    x = images.to(device, non_blocking=True).permute(0, 3, 1, 2).float().div_(255.0)
    x = (x - mean.view(1, 3, 1, 1)) / std.view(1, 3, 1, 1)
    return x.contiguous(memory_format=torch.channels_last) if channels_last else x.contiguous()


# random-resized-crop scale range of each augment preset (the loader's and device_augment's)
CROP_SCALE = {"light": (0.7, 1.0), "medium": (0.5, 1.0), "heavy": (0.35, 1.0)}


def device_augment(x: torch.Tensor, preset: str, ratio: tuple[float, float] = (0.8, 1.25)):
    """Random resized crop (the preset's scale range, ``ratio`` aspect range) and horizontal flip
    of a normalised ``(B, 3, S, S)`` batch on its own device, one affine resample for the whole
    batch. Draws from torch's CPU generator (seeded per epoch by ``fold.seed_epoch``), so a run
    is reproducible and resumable and the draws do not depend on the device."""
    if preset == "none":
        return x
    b = x.shape[0]
    lo, hi = CROP_SCALE[preset]
    area = torch.empty(b).uniform_(lo, hi)
    aspect = torch.empty(b).uniform_(np.log(ratio[0]), np.log(ratio[1])).exp()
    w, h = (area * aspect).sqrt().clamp(max=1.0), (area / aspect).sqrt().clamp(max=1.0)
    cx = (torch.rand(b) * 2 - 1) * (1 - w)  # crop centre in [-1, 1] coordinates
    cy = (torch.rand(b) * 2 - 1) * (1 - h)
    flip = torch.where(torch.rand(b) < 0.5, -1.0, 1.0)
    zero = torch.zeros(b)
    theta = torch.stack([torch.stack([w * flip, zero, cx], 1), torch.stack([zero, h, cy], 1)], 1)
    theta = theta.to(device=x.device, dtype=x.dtype)
    grid = torch.nn.functional.affine_grid(theta, list(x.shape), align_corners=False)
    out = torch.nn.functional.grid_sample(x, grid, "bilinear", "reflection", align_corners=False)
    return out.contiguous(memory_format=torch.channels_last) if _is_nhwc(x) else out


def _is_nhwc(x: torch.Tensor) -> bool:
    return x.dim() == 4 and x.is_contiguous(memory_format=torch.channels_last)
