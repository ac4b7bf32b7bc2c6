"""Test-time augmentation: named views applied to a normalised ``(B, 3, H, W)`` batch."""

from __future__ import annotations

from collections.abc import Callable

import torch
import torch.nn.functional as F

from ..config import TTA_VIEWS


def _scale(x: torch.Tensor, crop: float = 0.875) -> torch.Tensor:
    """Centre crop ``crop`` of the side, resized back: a zoomed-in view."""
    h, w = x.shape[-2:]
    ch, cw = max(1, round(h * crop)), max(1, round(w * crop))
    top, left = (h - ch) // 2, (w - cw) // 2
    patch = x[..., top : top + ch, left : left + cw]
    return F.interpolate(patch, size=(h, w), mode="bilinear", align_corners=False)


# one function per name of config.TTA_VIEWS (the recipe's vocabulary), in that order
VIEWS: dict[str, Callable[[torch.Tensor], torch.Tensor]] = {
    "none": lambda x: x,
    "hflip": lambda x: torch.flip(x, dims=[-1]),
    "vflip": lambda x: torch.flip(x, dims=[-2]),
    "scale": _scale,
}
if tuple(VIEWS) != TTA_VIEWS:
    raise ImportError(f"TTA views {TTA_VIEWS} have no code here: {tuple(VIEWS)}")


def apply_view(name: str, x: torch.Tensor) -> torch.Tensor:
    return VIEWS[name](x)
