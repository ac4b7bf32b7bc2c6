"""Where and how a model runs: the device, mixed precision (autocast) and the memory format.

``DEVICE=auto`` is CUDA where present, else Apple's ``mps`` (Apple silicon), else the CPU. On
``mps`` the model runs in fp32 (no autocast) and in the contiguous memory format: MPS kernels
for channels-last tensors have been slower or wrong in several torch releases, and it is one
knob fewer to differ between Apple users' train and predict.
"""

from __future__ import annotations

import contextlib

import torch

from ..config import Recipe
from ..errors import PipelineError


def resolve_device(name: str = "auto") -> torch.device:
    if name == "auto":
        if torch.cuda.is_available():
            return torch.device("cuda")
        return torch.device("mps" if mps_available() else "cpu")
    if name.startswith("cuda") and not torch.cuda.is_available():
        raise PipelineError(f"DEVICE={name} but CUDA is not available here; use DEVICE=cpu")
    if name == "mps" and not mps_available():
        raise PipelineError("DEVICE=mps but Apple's MPS is not available here; use DEVICE=cpu")
    return torch.device(name)


def mps_available() -> bool:
    mps = getattr(torch.backends, "mps", None)
    return bool(mps is not None and mps.is_available())


def channels_last(wanted: bool, device: torch.device) -> bool:
    """The recipe's ``channels_last`` where the device runs it well (not on ``mps``)."""
    return wanted and device.type != "mps"


def amp_dtype(recipe: Recipe, device: torch.device) -> torch.dtype | None:
    """bf16/fp16 autocast on CUDA only; CPU trains in fp32 (CPU autocast is slower here)."""
    if device.type != "cuda" or recipe.amp == "off":
        return None
    if recipe.amp == "auto":
        return torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
    return torch.bfloat16 if recipe.amp == "bf16" else torch.float16


def autocast(device: torch.device, dtype: torch.dtype | None):
    """Autocast to ``dtype`` on ``device``; no context at all (fp32) when ``dtype`` is None, so
    a device without autocast support (``mps`` in some torch releases) never meets one."""
    if dtype is None:
        return contextlib.nullcontext()
    return torch.autocast(device.type, dtype=dtype)
