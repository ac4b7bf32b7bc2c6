"""``make train RUNS=<run> SET="..." AS=<new>``: a trained run's variant saved as a recipe of its
own, ``<models>/<new>.toml`` (the resolved recipe, with a comment naming its parent and the
overrides), so a variant needs no hand-copied file and its parent's folds stay as trained."""

from __future__ import annotations

import time
import tomllib

from .. import artifacts
from ..config import load_recipe, recipe_from_dict, to_toml
from ..errors import RecipeError
from ..workspace import Workspace


def write_variant(ws: Workspace, run: str, set_text: str, overrides: dict, new: str) -> str:
    """Write ``<models>/<new>.toml``: ``run``'s recipe with ``overrides`` (``SET=set_text``),
    every field resolved. Re-running the same command finds the same file and goes on; a
    ``<new>`` that already holds another recipe is refused. Returns ``new``."""
    if not overrides:
        raise RecipeError(
            f'AS={new} saves a variant of {run}: give its changes, e.g. SET="epochs=6"'
        )
    parent = ws.recipe(run)
    recipe = load_recipe(parent, overrides)
    path = ws.recipe(new)
    if path.is_file():
        try:
            old = recipe_from_dict(tomllib.loads(path.read_text(encoding="utf-8")), str(path))
        except (tomllib.TOMLDecodeError, RecipeError):
            old = None
        if old != recipe:
            raise RecipeError(
                f"AS={new}: {path} exists and holds another recipe; choose another AS= name "
                f"(or delete {path})"
            )
        print(f'{new}: {path} is {run} with SET="{set_text}" already; training it')
        return new
    head = (
        f'# {new}: a variant of {run} ({parent}) with SET="{set_text}", written by make train '
        f"AS={new} on {time.strftime('%Y-%m-%d %H:%M')}; every field resolved\n"
    )
    artifacts.atomic_write_text(path, head + to_toml(recipe.to_dict()))
    print(f"{new}: wrote {path} ({run} with {set_text}); training it")
    return new
