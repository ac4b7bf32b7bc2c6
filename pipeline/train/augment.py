"""Training augmentation: the Albumentations presets (and a recipe's ``custom_augment``) the
loader's workers apply to uint8 images, and the same preset's crop and flip as one batch op on the
device (``device_augment``). Inference never imports this module."""

from __future__ import annotations

import albumentations as A
import numpy as np
import torch

from ..config import AUGMENT_PRESETS, Recipe

# random-resized-crop scale range of each augment preset (the loader's and device_augment's)
CROP_SCALE = {"light": (0.7, 1.0), "medium": (0.5, 1.0), "heavy": (0.35, 1.0)}


def device_augment(x: torch.Tensor, preset: str, ratio: tuple[float, float] = (0.8, 1.25)):
    """Random resized crop (the preset's scale range, ``ratio`` aspect range) and horizontal flip
    of a normalised ``(B, 3, S, S)`` batch on its own device, one affine resample for the whole
    batch. Draws from torch's CPU generator (seeded per epoch by ``kinds.finetune.seed_epoch``), so a run
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


# the names are config.AUGMENT_PRESETS': each preset but "none" (which adds no op) has a crop range
if ("none", *CROP_SCALE) != AUGMENT_PRESETS:
    raise ImportError(f"augment presets {AUGMENT_PRESETS} have no code here: {tuple(CROP_SCALE)}")


def train_transform(preset: str, size: int, custom: tuple = ()) -> A.Compose | None:
    """Albumentations preset, then the recipe's ``custom_augment`` ops, on uint8 images at ``size``.

    Normalisation happens later on the device (``to_input``), so workers move uint8 only.
    """
    extra = [getattr(A, t["name"])(**{k: v for k, v in t.items() if k != "name"}) for t in custom]
    ops = _preset(preset, size) + extra
    return A.Compose(ops) if ops else None


def loader_transform(recipe: Recipe) -> A.Compose | None:
    """What the loader's workers apply: the preset and ``custom_augment``, or with
    ``device_augment`` only ``custom_augment`` (the crop and flip run on the device)."""
    preset = "none" if recipe.device_augment else recipe.augment
    return train_transform(preset, recipe.image_size, recipe.custom_augment)


def _preset(preset: str, size: int) -> list:
    if preset == "none":
        return []
    ops: list[A.BasicTransform] = [
        A.RandomResizedCrop(size=(size, size), scale=CROP_SCALE[preset], ratio=(0.8, 1.25)),
        A.HorizontalFlip(p=0.5),
    ]
    if preset in ("medium", "heavy"):
        ops += [
            A.Affine(rotate=(-15, 15), p=0.5),
            A.ColorJitter(brightness=0.2, contrast=0.2, saturation=0.2, hue=0.05, p=0.5),
        ]
    if preset == "heavy":
        ops += [
            A.OneOf(
                [A.GaussianBlur(blur_limit=(3, 5)), A.GaussNoise(std_range=(0.02, 0.08))], p=0.25
            ),
            A.CoarseDropout(
                num_holes_range=(1, 4),
                hole_height_range=(0.1, 0.25),
                hole_width_range=(0.1, 0.25),
                p=0.5,
            ),
        ]
    return ops
