"""Optimizer, schedule, one training epoch, evaluation and TTA prediction."""

from __future__ import annotations

import math
import time

import numpy as np
import torch
import torch.nn.functional as F
from tqdm import tqdm

from .backbone import param_groups
from .config import Recipe
from .data import to_input
from .tta import apply_view


def make_optimizer(model: torch.nn.Module, recipe: Recipe) -> torch.optim.Optimizer:
    groups = param_groups(model, recipe)
    if recipe.optimizer == "sgd":
        return torch.optim.SGD(groups, lr=recipe.lr, momentum=0.9, nesterov=True)
    return torch.optim.AdamW(groups, lr=recipe.lr)


def make_scheduler(opt: torch.optim.Optimizer, recipe: Recipe, steps_per_epoch: int):
    """Per-step linear warmup then cosine to ``lr * min_lr_ratio``.

    LambdaLR multiplies each group's own LR, so the head keeps its ``head_lr_mult`` ratio through
    the whole schedule; timm's CosineLRScheduler takes one absolute ``lr_min`` for all groups.
    """
    total = max(1, recipe.epochs * steps_per_epoch)
    warm = int(recipe.warmup_epochs * steps_per_epoch)

    def factor(step: int) -> float:
        if step < warm:
            return 0.01 + 0.99 * step / warm
        t = min(1.0, (step - warm) / max(1, total - warm))
        return recipe.min_lr_ratio + (1 - recipe.min_lr_ratio) * 0.5 * (1 + math.cos(math.pi * t))

    return torch.optim.lr_scheduler.LambdaLR(opt, factor)


def autocast(device: torch.device):
    """bf16 autocast on CUDA; plain fp32 on CPU (CPU autocast is slower for these convs)."""
    return torch.autocast(device.type, dtype=torch.bfloat16, enabled=device.type == "cuda")


def train_one_epoch(model, loader, opt, sched, recipe: Recipe, norm, device, desc: str) -> dict:
    """One pass over ``loader``; returns mean loss, accuracy, images/s and the last LR."""
    model.train()
    loss_sum, correct, seen, t0 = 0.0, 0, 0, time.perf_counter()
    bar = tqdm(loader, desc=desc, leave=False, disable=None, dynamic_ncols=True)
    for images, labels in bar:
        x = to_input(images, *norm, device)
        y = labels.to(device, non_blocking=True)
        with autocast(device):
            logits = model(x)
            loss = F.cross_entropy(logits, y, label_smoothing=recipe.label_smoothing)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        sched.step()
        n = len(y)
        loss_sum += loss.item() * n
        correct += (logits.argmax(1) == y).sum().item()
        seen += n
        bar.set_postfix(loss=f"{loss_sum / seen:.3f}", refresh=False)
    secs = time.perf_counter() - t0
    return {
        "train_loss": loss_sum / max(1, seen),
        "train_acc": correct / max(1, seen),
        "lr": opt.param_groups[0]["lr"],
        "img_per_s": seen / max(secs, 1e-9),
    }


@torch.inference_mode()
def predict(
    model,
    images: np.ndarray,
    rows: np.ndarray,
    views: tuple[str, ...],
    norm,
    device: torch.device,
    batch_size: int,
    desc: str = "predict",
) -> np.ndarray:
    """Logits ``(V, len(rows), C) float32`` for each TTA view, in ``rows`` order."""
    model.eval()
    chunks: list[np.ndarray] = []
    for start in tqdm(
        range(0, len(rows), batch_size), desc=desc, leave=False, disable=None, dynamic_ncols=True
    ):
        batch = torch.from_numpy(np.ascontiguousarray(images[rows[start : start + batch_size]]))
        x = to_input(batch, *norm, device)
        with autocast(device):
            out = [model(apply_view(v, x)).float() for v in views]
        chunks.append(torch.stack(out).cpu().numpy())
    return np.concatenate(chunks, axis=1).astype(np.float32)


def score(logits: np.ndarray, labels: np.ndarray) -> tuple[float, float]:
    """Cross-entropy and accuracy of ``(N, C)`` logits against ``(N,)`` labels."""
    t = torch.from_numpy(logits)
    loss = F.cross_entropy(t, torch.from_numpy(labels)).item()
    return loss, float((logits.argmax(1) == labels).mean())
