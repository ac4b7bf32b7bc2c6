"""The optimizer and its schedule: parameter groups (head LR, layer decay, no decay on norms and
biases), AdamW or SGD, per-step warmup then cosine."""

from __future__ import annotations

import math

import torch

from ..config import Recipe
from ..errors import RecipeError


def make_optimizer(model: torch.nn.Module, recipe: Recipe) -> torch.optim.Optimizer:
    groups = param_groups(model, recipe)
    if recipe.optimizer == "sgd":
        return torch.optim.SGD(groups, lr=recipe.lr, momentum=0.9, nesterov=True)
    return torch.optim.AdamW(groups, lr=recipe.lr)


def make_scheduler(opt: torch.optim.Optimizer, recipe: Recipe, steps_per_epoch: int):
    """Per-step linear warmup then cosine to ``lr * min_lr_ratio``.

    LambdaLR multiplies each group's own LR, so the head keeps its ``head_lr_mult`` ratio (and
    each block its layer-decay scale) through the whole schedule; timm's CosineLRScheduler takes
    one absolute ``lr_min`` for all groups.
    """
    total = max(1, recipe.epochs * steps_per_epoch)
    # warmup never takes more than half the schedule (e.g. SET="epochs=1" on a 1-epoch warmup)
    warm = min(int(recipe.warmup_epochs * steps_per_epoch), total // 2)

    def factor(step: int) -> float:
        if step < warm:
            return 0.01 + 0.99 * step / warm
        t = min(1.0, (step - warm) / max(1, total - warm))
        return recipe.min_lr_ratio + (1 - recipe.min_lr_ratio) * 0.5 * (1 + math.cos(math.pi * t))

    return torch.optim.lr_scheduler.LambdaLR(opt, factor)


def param_groups(model: torch.nn.Module, recipe: Recipe) -> list[dict]:
    """Groups by (head?, no-decay?, layer scale): head LR x ``head_lr_mult``, blocks scaled by
    timm's layer-wise decay, and no weight decay on norms and biases."""
    head_ids = {id(p) for p in model.get_classifier().parameters()}
    scale = _layer_scales(model, recipe.layer_decay)
    groups: dict[tuple[bool, bool, float], list] = {}
    for p in model.parameters():
        key = (id(p) in head_ids, p.ndim <= 1, scale.get(id(p), 1.0))
        groups.setdefault(key, []).append(p)
    out = []
    for (is_head, no_decay, s), params in sorted(groups.items(), key=lambda kv: kv[0]):
        lr = recipe.lr * s * (recipe.head_lr_mult if is_head else 1.0)
        wd = 0.0 if no_decay else recipe.weight_decay
        out.append(
            {"params": params, "lr": lr, "initial_lr": lr, "weight_decay": wd, "is_head": is_head}
        )
    return out


def _layer_scales(model: torch.nn.Module, layer_decay: float) -> dict[int, float]:
    """``id(param) -> lr scale`` from timm's ``param_groups_layer_decay`` (empty when off)."""
    if layer_decay >= 1.0:
        return {}
    from timm.optim import param_groups_layer_decay

    try:
        groups = param_groups_layer_decay(model, layer_decay=layer_decay)
    except (AttributeError, NotImplementedError):
        raise RecipeError(
            f"layer_decay needs a timm model with group_matcher; {type(model).__name__} has none; "
            "set layer_decay = 1.0"
        ) from None
    return {id(p): g.get("lr_scale", 1.0) for g in groups for p in g["params"]}
