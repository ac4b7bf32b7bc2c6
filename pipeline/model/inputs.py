"""Model inputs: the uint8 batch -> normalised tensor step, shared by training (the loop) and
inference (``pipeline.predict``). Decoding and the resize to the recipe's size are
``pipeline.competition.images`` (one image path for train and predict)."""

from __future__ import annotations

import torch


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
