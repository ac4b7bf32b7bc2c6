"""Inference: a model's logits under named TTA views, batch by batch, on uint8 images.

The one place a trained or frozen model predicts: every fold's OOF and test pass, the
frozen-feature embeddings, a teacher's fold models and the budget probe call ``predict`` (or
``predict_as_trained``, which takes the recipe's batch, autocast and memory format)."""

from __future__ import annotations

import numpy as np
import torch
from tqdm import tqdm

from ..config import Recipe
from .device import amp_dtype, autocast
from .inputs import to_input
from .tta import apply_view


@torch.inference_mode()
def predict(
    model,
    images: np.ndarray,
    rows: np.ndarray,
    views: tuple[str, ...],
    norm,
    device: torch.device,
    batch_size: int,
    *,
    desc: str = "predict",
    dtype: torch.dtype | None = None,
    channels_last: bool = False,
) -> np.ndarray:
    """Logits ``(V, len(rows), C) float32`` for each TTA view, in ``rows`` order."""
    model.eval()
    chunks: list[np.ndarray] = []
    for start in tqdm(
        range(0, len(rows), batch_size), desc=desc, leave=False, disable=None, dynamic_ncols=True
    ):
        batch = torch.from_numpy(np.ascontiguousarray(images[rows[start : start + batch_size]]))
        x = to_input(batch, *norm, device, channels_last)
        with autocast(device, dtype):
            out = [model(apply_view(v, x)).float() for v in views]
        chunks.append(torch.stack(out).cpu().numpy())
    return np.concatenate(chunks, axis=1).astype(np.float32)


def predict_as_trained(model, images, rows, views, norm, device, recipe: Recipe, desc: str):
    """``predict`` with the recipe's settings (batch ``2 x batch_size``, its autocast and
    memory format): how every fold, embedding and teacher pass predicts."""
    dtype = amp_dtype(recipe, device)
    batch = recipe.batch_size * 2
    kw = {"desc": desc, "dtype": dtype, "channels_last": recipe.channels_last}
    return predict(model, images, rows, views, norm, device, batch, **kw)


def normalisation(mean, std, device: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
    """``(mean, std)`` of a data config (or ``done.json``) as tensors on ``device``."""
    return torch.tensor(mean, device=device), torch.tensor(std, device=device)
