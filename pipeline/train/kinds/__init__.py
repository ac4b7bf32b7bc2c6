"""The member kinds' registry: a recipe's ``kind`` names one of these (``config.DEFAULT_KIND``
when it names none). Each module named below holds one kind and ends with ``KIND = <its Kind>``
(``base.Kind`` says what a kind does); adding one is that module and one line below. The other
modules here are the kinds' helpers: ``pricing.py`` (what a kind's probe returns, which the
planner reads, and the probes' timing helpers), and ``embed.py``, ``activations.py``,
``heads.py`` and ``student.py``, which only kinds use.

Modules are imported by name when a kind is first asked for, so that reading the registry
(the CLI, the docs) loads no torch."""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING

from ...config import Recipe
from ...errors import RecipeError

if TYPE_CHECKING:
    from .base import Kind

# name -> module holding its KIND (".name": a module of this package; else an absolute name)
KINDS: dict[str, str] = {
    "finetune": ".finetune",  # train the whole network per fold (timm, Albumentations)
    "features": ".features",  # frozen pretrained backbone: embed once, a linear head per fold
    "partial": ".partial",  # frozen trunk cached once, its last stage(s) and head tuned per fold
}


def register(name: str, module: str) -> None:
    """Add kind ``name``, whose ``KIND`` lives in ``module`` (an importable module name): what
    a plug-in or a test does instead of a line in ``KINDS``."""
    KINDS[name] = module


def get_kind(name: str) -> Kind:
    """The registered kind ``name``; an unknown name lists the registered ones."""
    if name not in KINDS:
        raise RecipeError(
            f"kind = {name!r} is not a registered member kind; use one of "
            + ", ".join(f'"{k}"' for k in KINDS)
            + " (pipeline/train/kinds/ registers them)"
        )
    mod = importlib.import_module(KINDS[name], package=__name__)
    kind = mod.KIND
    if kind.name != name:
        raise RecipeError(f"{mod.__name__}.KIND is named {kind.name!r}, registered as {name!r}")
    return kind


def check_recipe(recipe: Recipe, source: str) -> Kind:
    """The recipe's kind, once it has checked the recipe (``RecipeError`` naming ``source``);
    prints a note for each field the recipe sets that the kind does not read."""
    try:
        kind = get_kind(recipe.kind)
    except RecipeError as e:
        raise RecipeError(f"{source}: {e}") from None
    kind.check(recipe, source)
    if ignored := kind.ignored_fields(recipe):
        print(f"note: {source}: kind {kind.name!r} does not read {', '.join(ignored)} (ignored)")
    return kind
