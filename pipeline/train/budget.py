"""The time budget as the train stage uses it: probe each run (``probe_run``, through its
member kind), value a set of runs by their estimates (``ensemble_value``), plan once or read
``plan.toml`` (``resolve_plan``), and record the measured seconds (``record_wall``). The plan's
arithmetic and its file are ``plan.py``.
"""

from __future__ import annotations

import time
from dataclasses import replace
from pathlib import Path

import numpy as np

from .. import artifacts
from ..config import Recipe, to_toml
from .kinds import get_kind
from .plan import format_plan, make_plan, planned_epochs, read_plan, run_of, write_plan
from .probe import Clock, Cost, ProbeInput, sample_images


def ensemble_value(task, costs: dict[str, Cost], y_all: np.ndarray):
    """The estimated score of a set of runs (higher is better, whatever the metric's
    direction): the competition's metric of their mean probabilities on the probe's shared
    held-out images. None unless every run has an estimate on the same images."""
    ests = [c.estimate for c in costs.values()]
    if not ests or any(e is None for e in ests) or len({tuple(e.val) for e in ests}) != 1:
        return None
    y = y_all[ests[0].val]
    sign = 1.0 if task.greater_is_better else -1.0

    def value(subset: tuple[str, ...]) -> float:
        probs = np.mean([costs[r].estimate.probs for r in subset], axis=0)
        try:
            return sign * float(task.score(y, probs))
        except ValueError:  # undefined on these images (a class missing): no preference
            return -np.inf

    return value


def probe_run(
    comp,
    ws,
    recipe: Recipe,
    y_all: np.ndarray,
    k: int,
    device,
    clock: Clock = time.perf_counter,
    batches: int = 4,
    warmup: int = 1,
) -> Cost:
    """Time ``recipe`` on this machine: decoding ``SAMPLE`` images (unless the decode cache
    exists; nothing is written), then its kind's probe (``Kind.probe``) on them."""
    start = clock()
    images, decode_s = sample_images(comp, ws, recipe.image_size)
    decode_s *= clock() - start  # priced from the sample's time (0 when cached)
    start = clock()
    p = ProbeInput(comp, ws, recipe, images, y_all, k, device, clock, batches, warmup)
    cost = get_kind(recipe.kind).probe(p)
    probe_s = clock() - start

    def priced(c: Cost) -> Cost:
        figures = {"decode_s": decode_s, **c.figures}
        return replace(c, once_s=c.once_s + decode_s, probe_s=probe_s, figures=figures)

    fewer = priced(cost.fewer) if cost.fewer is not None else None
    return replace(priced(cost), fewer=fewer)


def resolve_plan(
    comp, ws, recipes: dict, labels: np.ndarray, k: int, device, budget_s, auto: bool
) -> tuple[dict, list[str]]:
    """``{run: plan entry}`` for the runs a plan covers, and the runs it left out: planned now
    (``budget_s`` given and no ``plan.toml`` yet) or read from ``plan.toml``; ``{}`` and ``[]``
    without either. ``labels``: by train row (``context.labels_by_row``)."""
    path = ws.plan
    saved = read_plan(path)
    if saved is None:
        if budget_s is None:
            return {}, []
        y_all = np.maximum(labels, 0)  # a row the folds file dropped trains as class 0
        costs, sizes, epochs = {}, set(), {}
        for run, recipe in recipes.items():
            print(f"plan: probing {run} ...", flush=True)
            c = probe_run(comp, ws, recipe, y_all, k, device)
            for name, cost in ((run, c), (f"{run}[{recipe.tta[0]}]", c.fewer)):
                if cost is None:
                    continue
                if recipe.image_size in sizes:  # an earlier run decodes this size's cache
                    cost = replace(cost, once_s=cost.once_s - cost.figures["decode_s"])
                costs[name], epochs[name] = cost, recipe.epochs
            sizes.add(recipe.image_size)
        value = ensemble_value(comp.task, costs, y_all)
        if value is None:  # no estimates: the runs as the recipes have them, in RUNS order
            costs = {r: c for r, c in costs.items() if r in recipes}
        plan = make_plan(costs, epochs, k, budget_s, auto, value)
        kept = {run_of(n) for n in plan.costs}
        dropped = tuple(r for r in recipes if r not in kept)
        chosen_by = (
            f"chosen by the estimated ensemble {comp.task.metric}: "
            f"{value(tuple(plan.costs)) * (1 if comp.task.greater_is_better else -1):.3f} "
            f"(the runs' mean probabilities on the probe's "
            f"held-out half, {len(next(iter(costs.values())).estimate.val)} images)"
            if value is not None
            else ""
        )
        print(
            format_plan(
                plan, len(comp.train), len(comp.test), str(device), dropped, costs, chosen_by
            )
        )
        write_plan(path, plan, str(device), dropped, costs)
        print(f"wrote {path}: re-runs and resumes use these epochs (delete it to plan again)")
        saved = read_plan(path)
    else:
        print(f"plan: {path} (BUDGET={saved['budget_s'] / 60:g}m, {saved['total_s'] / 60:.1f} min)")
    epochs = planned_epochs(saved, path, list(recipes), budget_s)
    entries = {
        run: {"budget_s": saved["budget_s"], **saved["runs"][run], "epochs": e}
        for run, e in epochs.items()
    }
    return entries, [r for r in recipes if r in saved.get("left_out", [])]


def record_wall(rdir: Path, stage_s: float) -> None:
    """Add the measured seconds (each fold's ``done.json``, and this ``make train`` call's wall
    time) to the run's ``config.toml`` next to its plan."""
    path = rdir / "config.toml"
    cfg = artifacts.read_run_config(path)
    if cfg is None:
        return
    folds = sorted(rdir.glob("fold*/done.json"))
    secs = [artifacts.read_done(p, "make train").seconds for p in folds]
    cfg["wall"] = {
        "folds_s": round(sum(secs), 1),
        "fold_s": [round(x, 1) for x in secs],
        "last_train_call_s": round(stage_s, 1),
    }
    artifacts.atomic_write_text(path, to_toml(cfg))
