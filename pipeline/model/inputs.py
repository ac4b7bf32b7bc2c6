"""Model inputs: the resize every decoded image gets and the uint8 batch -> normalised tensor
step, shared by training (the decode cache, the loop) and inference (``pipeline.predict``)."""

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
    if channels_last and device_type(device) != "mps":  # mps: contiguous (model/device.py)
        return x.contiguous(memory_format=torch.channels_last)
    return x.contiguous()


def device_type(device) -> str:
    return torch.device(device).type
