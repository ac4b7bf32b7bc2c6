"""Where and how a model runs: the device, mixed precision (autocast) and the memory format."""

from __future__ import annotations

import torch

from ..config import Recipe
from ..errors import PipelineError


def resolve_device(name: str = "auto") -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name.startswith("cuda") and not torch.cuda.is_available():
        raise PipelineError(f"DEVICE={name} but CUDA is not available here; use DEVICE=cpu")
    return torch.device(name)


def amp_dtype(recipe: Recipe, device: torch.device) -> torch.dtype | None:
    """bf16/fp16 autocast on CUDA only; CPU trains in fp32 (CPU autocast is slower here)."""
    if device.type != "cuda" or recipe.amp == "off":
        return None
    if recipe.amp == "auto":
        return torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
    return torch.bfloat16 if recipe.amp == "bf16" else torch.float16


def autocast(device: torch.device, dtype: torch.dtype | None):
    """Autocast to ``dtype`` on ``device``; an inactive context (fp32) when ``dtype`` is None."""
    return torch.autocast(device.type, dtype=dtype or torch.float32, enabled=dtype is not None)
