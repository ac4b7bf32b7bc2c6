"""timm model creation, pretrained weights (hub or local file), and its data config."""

from __future__ import annotations

import json
from pathlib import Path

import timm
import torch

from ..config import Recipe
from ..errors import RecipeError


def create_model(recipe: Recipe, num_classes: int, pretrained: bool = True) -> torch.nn.Module:
    """A timm model with a fresh ``num_classes`` head; backbone weights per the recipe, or none
    with ``pretrained`` False (inference loads a trained checkpoint and must not download)."""
    if recipe.backbone not in timm.list_models() and not timm.is_model(recipe.backbone):
        close = timm.list_models(f"*{recipe.backbone.split('_')[0]}*")[:8]
        raise RecipeError(
            f"backbone {recipe.backbone!r} is not a timm model; similar: {', '.join(close) or 'none'}"
        )
    hub = pretrained and recipe.pretrained == "hub"
    try:
        model = timm.create_model(
            recipe.backbone, pretrained=hub, num_classes=num_classes, drop_rate=recipe.drop_rate
        )
    except (OSError, RuntimeError, ValueError) as e:  # no network, no such tag, a bad file
        if not hub:
            raise
        why = str(e).strip().splitlines()[0][:160] if str(e).strip() else type(e).__name__
        raise RecipeError(
            f'backbone {recipe.backbone!r}: pretrained = "hub" could not fetch its weights '
            f"from the Hugging Face hub ({why}); this needs internet (on Kaggle: Internet on), "
            "or set pretrained_file to a local copy (docs/recipes.md#pretrained-weights-without-internet)"
        ) from None
    if not pretrained:
        return model
    if recipe.pretrained_file:
        load_backbone_weights(model, Path(recipe.pretrained_file))
    if recipe.pretrained == "hub" or recipe.pretrained_file:
        small_head(model)
    return model


def small_head(model: torch.nn.Module) -> None:
    """Start a fresh classifier on pretrained features near zero (normal, std 0.01; bias 0).

    timm's EfficientNet/MobileNet init draws head weights from U(+-1/sqrt(num_classes)): fine
    for 1000 ImageNet classes, but for 2-5 classes the starting logits have a standard
    deviation near 7 on pretrained features (docs/performance.md), so the first epochs
    are spent undoing it (a 5-class fine-tune began at train loss 5.2 against ln 5 = 1.6).
    Models trained from scratch keep timm's init."""
    head = model.get_classifier()
    if isinstance(head, torch.nn.Linear):
        torch.nn.init.normal_(head.weight, std=0.01)
        torch.nn.init.zeros_(head.bias)


def load_backbone_weights(model: torch.nn.Module, path: Path) -> None:
    """Load a timm-format state dict, skipping the classifier (re-initialised for our classes)."""
    if not path.is_file():
        raise RecipeError(
            f"pretrained_file {path} not found; create it with `python -m pipeline weights import "
            "<name>` or point the recipe at a timm .safetensors/.pth file"
        )
    state = read_state_dict(path)
    own = model.state_dict()
    head = {k for k in own if k.startswith(_classifier_prefix(model))}
    keep = {k: v for k, v in state.items() if k in own and k not in head}
    bad = [k for k, v in keep.items() if v.shape != own[k].shape]
    missing = [
        k for k in own if k not in keep and k not in head and not k.endswith("num_batches_tracked")
    ]
    if bad or missing:
        k = (bad or missing)[0]
        found = tuple(state[k].shape) if k in state else "absent"
        raise RecipeError(
            f"{path} does not fit {type(model).__name__}: tensor {k!r} expected "
            f"{tuple(own[k].shape)}, found {found} ({len(bad)} mismatched, {len(missing)} missing); "
            "use weights made for this backbone"
        )
    model.load_state_dict(keep, strict=False)


def read_state_dict(path: Path) -> dict[str, torch.Tensor]:
    if path.suffix == ".safetensors":
        from safetensors.torch import load_file

        return load_file(str(path))
    state = torch.load(path, map_location="cpu", weights_only=True)
    for key in ("state_dict", "model", "state_dict_ema"):
        if isinstance(state, dict) and isinstance(state.get(key), dict):
            state = state[key]
    return state


def _classifier_prefix(model: torch.nn.Module) -> str:
    name = (
        model.pretrained_cfg.get("classifier", "fc") if hasattr(model, "pretrained_cfg") else "fc"
    )
    return name if isinstance(name, str) else name[0]


def data_config(model: torch.nn.Module, recipe: Recipe) -> dict:
    """Mean/std from timm (or the weights' sidecar JSON), size from the recipe."""
    cfg = timm.data.resolve_model_data_config(model)
    mean, std = list(cfg["mean"]), list(cfg["std"])
    sidecar = Path(recipe.pretrained_file).with_suffix(".json") if recipe.pretrained_file else None
    if sidecar is not None and sidecar.is_file():
        norm = json.loads(sidecar.read_text())
        mean, std = norm.get("mean", mean), norm.get("std", std)
    return {"mean": mean, "std": std, "input_size": [3, recipe.image_size, recipe.image_size]}
