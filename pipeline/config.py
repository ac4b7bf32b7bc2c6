"""Training recipes: one flat frozen dataclass, overridden by ``models/<run>.toml``."""

from __future__ import annotations

import dataclasses
import importlib
import tomllib
from dataclasses import dataclass, fields
from pathlib import Path
from typing import Any

from .errors import RecipeError

# The recipe's vocabulary, defined here once: train/augment.py and model/tta.py implement exactly
# these names (they refuse to import otherwise), and docs/recipes.md is checked against them.
AUGMENT_PRESETS = ("none", "light", "medium", "heavy")
TTA_VIEWS = ("none", "hflip", "vflip", "scale")
# the member kind of a recipe that names none: train/kinds/ registers every kind, this one
# included, and the train stage refuses a name it does not register
DEFAULT_KIND = "finetune"
# fields whose value is one of a few names
CHOICES: dict[str, tuple[str, ...]] = {
    "augment": AUGMENT_PRESETS,
    "pretrained": ("none", "hub"),
    "optimizer": ("adamw", "sgd"),
    "amp": ("auto", "bf16", "fp16", "off"),
    "checkpoint": ("best", "last"),
    "decode": ("reduced", "full"),
}

# fields added after runs were trained: a run's config.toml without one meant this value
ADDED_LATER: dict[str, Any] = {
    "kind": DEFAULT_KIND,
    "teacher": "",
    "distill_weight": 0.5,
    "pseudo_floor": 0.0,
    "checkpoint": "best",
    "train_stages": 1,
    "decode": "full",  # before issue 32 every image was decoded in full, then resized
}


@dataclass(frozen=True)
class Recipe:
    """Every field has a default; a recipe file overrides only what it names."""

    kind: str = DEFAULT_KIND  # member kind registered in train/kinds/ (docs/recipes.md: kinds)
    backbone: str = "resnet18"  # any timm model name (timm.list_models())
    pretrained: str = "none"  # "none" (random init) or "hub" (timm download; needs internet)
    pretrained_file: str = ""  # local timm-format .safetensors/.pth; classifier re-initialised
    image_size: int = 32  # px, square; images are resized once into the decode cache
    # "reduced": a JPEG DCT-scaled towards image_size before the resize (competition/images.py);
    # "full": every pixel decoded first, as runs trained before issue 32 (make predict only)
    decode: str = "reduced"
    epochs: int = 10  # full passes over the fold's training images
    batch_size: int = 64  # images per optimizer step
    optimizer: str = "adamw"  # "adamw" or "sgd" (momentum 0.9, nesterov)
    lr: float = 1e-3  # peak learning rate of the backbone, per batch_size images
    head_lr_mult: float = 1.0  # classifier LR = lr * this (the Classify Leaves winners used 10)
    weight_decay: float = 0.05  # decoupled (AdamW) or L2 (SGD); not applied to norms/biases
    warmup_epochs: float = 0.0  # epochs of linear warmup from lr/100 to lr (at most half the run)
    min_lr_ratio: float = 0.05  # cosine ends at lr * this (eta_min = lr/20 in the 0.987 solution)
    label_smoothing: float = 0.1  # cross-entropy target smoothing
    drop_rate: float = 0.0  # dropout before the classifier (timm drop_rate)
    augment: str = "light"  # Albumentations preset: none, light, medium or heavy
    tta: tuple[str, ...] = ("none", "hflip")  # test-time views: none, hflip, vflip, scale
    seed: int = 42  # seeds torch, numpy and Albumentations for each fold
    num_workers: int = -1  # DataLoader workers; -1 = auto (0 on CPU, min(8, cores) on CUDA)
    layer_decay: float = 1.0  # LR x this per block from the head down (timm groups); 1.0 = off
    ema_decay: float = 0.0  # EMA of weights per step, e.g. 0.999; EMA model evaluated and saved
    mixup_alpha: float = 0.0  # timm Mixup beta(alpha, alpha); 0 = off
    cutmix_alpha: float = 0.0  # timm CutMix beta(alpha, alpha); 0 = off
    mix_prob: float = 1.0  # fraction of batches mixed when mixup/cutmix is on
    accum_steps: int = 1  # gradient accumulation: one optimizer step per this many batches
    clip_grad: float = 0.0  # max global gradient norm; 0 = off
    patience: int = 0  # stop after this many epochs without a val score gain (the metric); 0 = off
    checkpoint: str = "best"  # best.pt = the best val epoch, or "last" (a teacher's fold model)
    freeze_epochs: int = 0  # first N epochs train only the head (linear probe), then everything
    train_stages: int = 1  # kind "partial": the backbone's last N stages (and head) tuned per fold
    amp: str = "auto"  # CUDA mixed precision: auto (bf16 if supported, else fp16), bf16, fp16, off
    channels_last: bool = True  # NHWC memory format, CPU and CUDA (docs/performance.md)
    compile: bool = False  # torch.compile the model on CUDA (ignored on CPU); eager if it fails
    device_augment: bool = False  # the preset's crop + flip per batch on the device, not the loader
    custom_augment: tuple = ()  # extra Albumentations ops after the preset: [{name = "CLAHE", p = 0.3}]
    teacher: str = ""  # a finished ensemble (make ensemble NAME=...) whose soft targets it learns
    distill_weight: float = 0.5  # with a teacher: target = (1 - this) * label + this * teacher
    pseudo_floor: float = 0.0  # with a teacher: test images this sure join training; 0 = none

    def __post_init__(self) -> None:
        for name, valid in CHOICES.items():
            if getattr(self, name) not in valid:
                raise RecipeError(
                    f"{name} = {getattr(self, name)!r}; use one of "
                    + ", ".join(f'"{v}"' for v in valid)
                    + (" (or pretrained_file)" if name == "pretrained" else "")
                )
        bad = [v for v in self.tta if v not in TTA_VIEWS]
        if bad or not self.tta:
            raise RecipeError(
                f"tta = {list(self.tta)!r}: unknown view {bad[0] if bad else '(empty list)'}; "
                f"use views from {', '.join(TTA_VIEWS)}"
            )
        for name in ("image_size", "epochs", "batch_size", "train_stages"):
            if getattr(self, name) < 1:
                raise RecipeError(f"{name} = {getattr(self, name)} must be at least 1")
        if not 0 < self.layer_decay <= 1 or not 0 <= self.ema_decay < 1:
            raise RecipeError("layer_decay must be in (0, 1] and ema_decay in [0, 1)")
        if (self.mixup_alpha > 0 or self.cutmix_alpha > 0) and self.batch_size % 2:
            raise RecipeError(f"batch_size = {self.batch_size} must be even for mixup/cutmix")
        if self.accum_steps < 1:
            raise RecipeError(f"accum_steps = {self.accum_steps} must be at least 1")
        if not self.kind.isidentifier():
            raise RecipeError(
                f"kind = {self.kind!r} is not a member kind's name; see docs/recipes.md for kinds"
            )
        if not 0 <= self.distill_weight <= 1 or not 0 <= self.pseudo_floor < 1:
            raise RecipeError(
                f"distill_weight = {self.distill_weight} must be in [0, 1] and pseudo_floor = "
                f"{self.pseudo_floor} in [0, 1)"
            )
        if self.pseudo_floor > 0 and not self.teacher:
            raise RecipeError(
                f"pseudo_floor = {self.pseudo_floor} needs teacher = the name of a finished "
                'ensemble (make ensemble NAME=...), e.g. teacher = "ensemble"'
            )
        if self.teacher and (self.mixup_alpha > 0 or self.cutmix_alpha > 0):
            raise RecipeError(
                f"teacher = {self.teacher!r} with mixup/cutmix: mixing soft targets is not "
                "supported; set mixup_alpha = 0 and cutmix_alpha = 0 in a student recipe"
            )
        if self.lr <= 0:
            raise RecipeError(f"lr = {self.lr} must be positive")

    def to_dict(self) -> dict[str, Any]:
        d = dataclasses.asdict(self)
        d["tta"] = list(self.tta)
        d["custom_augment"] = [dict(t) for t in self.custom_augment]
        return d


def recipe_from_dict(
    values: dict[str, Any], source: str = "recipe", check_augment: bool = True
) -> Recipe:
    """Build a Recipe; unknown keys and wrong types are errors naming ``source``.
    ``check_augment`` False keeps ``custom_augment`` unchecked: inference never augments and
    runs where Albumentations is not installed (a Kaggle notebook)."""
    valid = {f.name: f for f in fields(Recipe)}
    unknown = sorted(set(values) - set(valid))
    if unknown:
        raise RecipeError(f"{source}: unknown key {unknown[0]!r}; valid keys: {', '.join(valid)}")
    clean: dict[str, Any] = {}
    defaults = Recipe()
    for key, value in values.items():
        want = type(getattr(defaults, key))
        if key == "custom_augment":
            value = _custom_augment(value, source) if check_augment else tuple(value)
        elif want is tuple:
            if isinstance(value, str):
                value = [v.strip() for v in value.split(",") if v.strip()]
            if not isinstance(value, list | tuple):
                raise RecipeError(f"{source}: {key} must be a list of strings, got {value!r}")
            value = tuple(str(v) for v in value)
        elif want is float and isinstance(value, int | float) and not isinstance(value, bool):
            value = float(value)
        elif want is int and isinstance(value, str) and value.lstrip("-").isdigit():
            value = int(value)
        elif want is float and isinstance(value, str):
            try:
                value = float(value)
            except ValueError:
                raise RecipeError(f"{source}: {key} must be a number, got {value!r}") from None
        if not isinstance(value, want) or isinstance(value, bool) != (want is bool):
            raise RecipeError(
                f"{source}: {key} must be {want.__name__}, got {value!r} ({type(value).__name__})"
            )
        clean[key] = value
    try:
        return Recipe(**clean)
    except RecipeError as e:
        raise RecipeError(f"{source}: {e}") from None


def _custom_augment(value: Any, source: str) -> tuple:
    """A list of ``{name = "<Albumentations class>", ...kwargs}`` tables."""
    # by name, so that the import graph of pipeline.predict (which calls recipe_from_dict with
    # check_augment=False) holds no Albumentations: the kaggle-offline contract in pyproject.toml
    A = importlib.import_module("albumentations")

    if not isinstance(value, list | tuple):
        raise RecipeError(
            f'{source}: custom_augment must be a list like [{{name = "CLAHE", p = 0.3}}]'
        )
    for t in value:
        name = t.get("name") if isinstance(t, dict) else None
        if not isinstance(name, str) or not isinstance(getattr(A, name, None), type):
            raise RecipeError(
                f"{source}: custom_augment entry {t!r} needs name = an Albumentations transform "
                "class, e.g. CLAHE, RandomBrightnessContrast"
            )
    return tuple(dict(t) for t in value)


def split_words(text: str) -> list[str]:
    """A make variable's words, comma or space separated (``RUNS=a,b``, ``GPUS=0 1``)."""
    return [t for t in text.replace(",", " ").split() if t]


def parse_overrides(text: str) -> dict[str, Any]:
    """Parse ``"epochs=2 image_size=32"`` (the Makefile's SET=) into raw values."""
    out: dict[str, Any] = {}
    for item in text.split():
        if "=" not in item:
            raise RecipeError(f"override {item!r} must look like key=value, e.g. epochs=2")
        key, value = item.split("=", 1)
        try:
            out[key] = tomllib.loads(f"v = {value}")["v"]
        except tomllib.TOMLDecodeError:
            out[key] = value  # bare strings: backbone=resnet18
    return out


def select_runs(words: list[str], default: list[str], what: str) -> list[str]:
    """``RUNS=`` as given: the named runs; none: ``default``; only ``-<run>`` words: ``default``
    without those (``what`` names the default in errors, e.g. "the cpu set")."""
    drop = [w[1:] for w in words if w.startswith("-")]
    keep = [w for w in words if not w.startswith("-")]
    if keep and drop:
        raise RecipeError(
            f"RUNS={' '.join(words)!r} mixes runs and exclusions; name the runs to use, or only "
            "-<run> words to leave runs out of the default"
        )
    if keep:
        return keep
    base = list(default)
    if unknown := [r for r in drop if r not in base]:
        raise RecipeError(
            f"RUNS=-{unknown[0]}: {unknown[0]!r} is not in {what} ({', '.join(base) or 'none'})"
        )
    runs = [r for r in base if r not in drop]
    if drop and not runs:
        raise RecipeError(f"RUNS={' '.join(words)!r} leaves none of {what}; name a run to use")
    return runs


def load_recipe(path: str | Path, overrides: dict[str, Any] | None = None) -> Recipe:
    """Read ``models/<run>.toml`` and apply overrides (later wins)."""
    path = Path(path)
    if not path.is_file():
        avail = sorted(p.stem for p in path.parent.glob("*.toml")) if path.parent.is_dir() else []
        raise RecipeError(
            f"{path} not found; recipes available in {path.parent}/: {', '.join(avail) or 'none'}"
        )
    try:
        values = tomllib.loads(path.read_text(encoding="utf-8"))
    except tomllib.TOMLDecodeError as e:
        raise RecipeError(f"{path}: not valid TOML ({e}); fix the line it names") from None
    values.update(overrides or {})
    return recipe_from_dict(values, source=str(path))


def to_toml(d: dict[str, Any]) -> str:
    """Write a flat (one level of tables) dict as TOML; enough for resolved recipes."""
    scalars = {k: v for k, v in d.items() if not isinstance(v, dict)}
    tables = {k: v for k, v in d.items() if isinstance(v, dict)}
    lines = [f"{k} = {_toml_value(v)}" for k, v in scalars.items()]
    for name, table in tables.items():
        lines += ["", f"[{name}]"] + [f"{k} = {_toml_value(v)}" for k, v in table.items()]
    return "\n".join(lines) + "\n"


def _toml_value(v: Any) -> str:
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, int | float):
        return repr(v)
    if isinstance(v, list | tuple):
        return "[" + ", ".join(_toml_value(x) for x in v) + "]"
    if isinstance(v, dict):
        return "{" + ", ".join(f"{k} = {_toml_value(x)}" for k, x in v.items()) + "}"
    if v is None:
        return '""'
    s = str(v).replace("\\", "\\\\").replace('"', '\\"')
    return f'"{s}"'
