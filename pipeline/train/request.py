"""What ``make train`` is asked for, read from its make variables: the runs (``RUNS``,
``RECIPES``, ``AS``), the folds (``FOLDS``), the budget and epochs (``BUDGET``, ``EPOCHS``).

The CLI parses the flags; this module says what they mean, with the message a user can act on.
"""

from __future__ import annotations

from pathlib import Path

from ..config import parse_overrides, select_runs, split_words
from ..errors import PipelineError
from ..util.durations import parse_duration
from ..workspace import Workspace


def train_runs(
    ws: Workspace, runs: str, sets: str, as_: str, recipes: str, device: str
) -> tuple[list[str], dict]:
    """The runs ``train`` trains and the overrides it applies: ``RUNS`` (``-<run>`` leaves one
    out of the shipped set ``recipes`` picks for ``device``), or one run's variant saved by
    ``AS=`` (trained without overrides: they are in its file)."""
    words, overrides = split_words(runs), parse_overrides(sets)
    if as_:
        from .variants import write_variant

        if len(words) != 1 or words[0].startswith("-"):
            raise PipelineError(
                f'AS={as_} saves a variant of one run: make train RUNS=<run> SET="..." AS={as_}'
            )
        return [write_variant(ws, words[0], sets, overrides, as_)], {}
    if any(not w.startswith("-") for w in words):  # runs named (mixed with -<run>: refused)
        return select_runs(words, [], ""), overrides
    name, shipped = recipe_set(ws, recipes, device)
    chosen = select_runs(words, shipped, f"the {name} set")
    without = f" without {', '.join(w[1:] for w in words)}" if words else ""
    print(
        f"RUNS{'=' + ' '.join(words) if words else ' not given'}: the {name} set{without}, "
        f"{' '.join(chosen)}"
    )
    return chosen, overrides


def recipe_set(ws: Workspace, name: str, device: str) -> tuple[str, list[str]]:
    """The shipped recipes of set ``name`` (``<models>/<name>/``, one of ``RECIPE_SETS``);
    ``auto``: the offline GPU set only where the device is CUDA (``EXECUTOR=kaggle``'s GPU
    notebooks included), so a CPU (or Apple's mps) never picks up the GPU set and no default
    needs internet."""
    if name == "auto":
        import torch

        cuda = device.startswith("cuda") or (device == "auto" and torch.cuda.is_available())
        name = "gpu" if cuda else "cpu"
    if name not in ws.RECIPE_SETS:
        raise PipelineError(f"RECIPES={name!r}: use auto, {', '.join(ws.RECIPE_SETS)}")
    runs = sorted(p.stem for p in (Path(ws.models) / name).glob("*.toml"))
    if not runs:
        raise PipelineError(
            f"no recipes to train: {ws.models}/{name}/ has none; put one in {ws.models}/<run>.toml "
            "and pass RUNS=<run>"
        )
    return name, runs


def budget_epochs(budget: str, epochs: str) -> tuple[float | None, bool]:
    """``BUDGET`` in seconds (None: none) and whether ``EPOCHS`` scales them to it (auto)."""
    if epochs not in ("auto", "recipe"):
        raise PipelineError(f"EPOCHS={epochs!r}: use auto (fit BUDGET) or recipe")
    return (parse_duration(budget, "BUDGET") if budget else None), epochs == "auto"


def parse_folds(text: str) -> list[int] | None:
    """``FOLDS=0,1``: the fold numbers, or None for every fold."""
    try:
        return [int(t) for t in split_words(text)] or None
    except ValueError:
        raise PipelineError(f"FOLDS={text!r}: use fold numbers like FOLDS=0,1") from None
