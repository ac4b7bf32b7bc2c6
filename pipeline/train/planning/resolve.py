"""The train stage's entry to planning: plan once (decode, probe each run, value and plan,
write ``plan.toml``) or read the ``plan.toml`` a call before wrote (``resolve_plan``), and record
the measured seconds beside the plan (``record_wall``).
"""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import numpy as np

from ... import artifacts
from ...config import to_toml
from ...disk import faults, locks
from ...util.durations import format_duration
from .decoding import decode_for_budget
from .plan import format_plan, make_plan, run_of, yardstick
from .plan_file import plan_entries, read_plan, write_plan
from .probe import probe_run
from .replan import Replanner, repriced
from .value import ensemble_value


def resolve_plan(
    comp, ws, recipes: dict, labels: np.ndarray, k: int, device, budget_s, auto: bool
) -> tuple[dict, list[str], Replanner | None]:
    """``_resolve_plan`` with the probe under a lock beside ``plan.toml``: a second ``make
    train`` waits for the first one's plan, then trains by it."""
    if budget_s is None or ws.plan.is_file():
        return _resolve_plan(comp, ws, recipes, labels, k, device, budget_s, auto)
    lock = ws.plan.with_name(f".{ws.plan.name}.lock")
    with locks.wait_lock(lock, f"the time-budget probe writing {ws.plan}"):
        faults.hold_point("plan")
        return _resolve_plan(comp, ws, recipes, labels, k, device, budget_s, auto)


def _resolve_plan(
    comp, ws, recipes: dict, labels: np.ndarray, k: int, device, budget_s, auto: bool
) -> tuple[dict, list[str], Replanner | None]:
    """``{run: plan entry}`` for the runs a plan covers, the runs it left out, and, when the
    plan was made by this call, the ``Replanner`` that revises it after each run: planned now
    (``budget_s`` given and no ``plan.toml`` yet) or read from ``plan.toml``; ``{}``, ``[]``
    and None without either. ``labels``: by train row (``context.labels_by_row``)."""
    path = ws.plan
    saved = read_plan(path)
    replanner = None
    if saved is None:
        if budget_s is None:
            return {}, [], None
        y_all = np.maximum(labels, 0)  # a row the folds file dropped trains as class 0
        sizes = sorted({r.image_size for r in recipes.values()})
        decode_s = decode_for_budget(comp, ws, sizes, budget_s)  # spent now, for every run
        costs, epochs = _probe_all(comp, ws, recipes, y_all, k, device)
        value = ensemble_value(comp.task, costs, y_all)
        if value is None:  # no estimates: the runs as the recipes have them, in RUNS order
            costs = {r: c for r, c in costs.items() if r in recipes}
        # the decoding already spent comes off the budget; plan.toml keeps BUDGET itself
        plan = replace(
            make_plan(costs, epochs, k, budget_s - decode_s, auto, value), budget_s=budget_s
        )
        if decode_s:
            print(f"plan: decode caches built in {decode_s:.0f} s, planned within the rest")
        kept = {run_of(n) for n in plan.costs}
        dropped = tuple(r for r in recipes if r not in kept)
        chosen_by = _chosen_by(comp.task, value, plan, costs)
        print(
            format_plan(
                plan, len(comp.train), len(comp.test), str(device), dropped, costs, chosen_by
            )
        )
        sign = 1.0 if comp.task.greater_is_better else -1.0
        weighed = yardstick(plan, costs, value, sign, auto)
        write_plan(path, plan, str(device), dropped, costs, weighed=weighed)
        print(f"wrote {path}: re-runs and resumes use these epochs (delete it to plan again)")
        saved = read_plan(path)
        replanner = Replanner(
            path,
            plan,
            costs,
            epochs,
            auto,
            value,
            str(device),
            list(recipes),
            reprice=lambda c, cost, every=dict(recipes): repriced(comp, ws, every, c, cost),
            sign=sign,
        )
    else:
        print(
            f"plan: {path} (BUDGET={format_duration(saved['budget_s'])}, {saved['total_s'] / 60:.1f} min)"
        )
    entries, left_out = plan_entries(saved, path, list(recipes), budget_s)
    return entries, left_out, replanner


def _probe_all(comp, ws, recipes: dict, y_all: np.ndarray, k: int, device) -> tuple[dict, dict]:
    """``({name: Cost}, {name: epochs})``: each run probed, and its one-view variant
    ``<run>[<first view>]`` where the kind prices one."""
    costs, epochs = {}, {}
    for run, recipe in recipes.items():
        print(f"plan: probing {run} ...", flush=True)
        c = probe_run(comp, ws, recipe, y_all, k, device)
        for name, cost in ((run, c), (f"{run}[{recipe.tta[0]}]", c.fewer)):
            if cost is not None:
                costs[name], epochs[name] = cost, recipe.epochs
    return costs, epochs


def _chosen_by(task, value, plan, costs: dict) -> str:
    """The plan's line on how its runs were chosen (empty without a value model)."""
    if value is None:
        return ""
    return (
        f"chosen by the estimated ensemble {task.metric}: "
        f"{value(tuple(plan.costs)) * (1 if task.greater_is_better else -1):.3f} "
        f"(the runs' probabilities on the probe's held-out half, "
        f"{len(next(iter(costs.values())).estimate.val)} images, blended with weights "
        "fitted on half of them and scored on the other)"
    )


def record_wall(rdir: Path, stage_s: float) -> None:
    """Add the measured seconds (each fold's ``done.json``, and this ``make train`` call's wall
    time) to the run's ``config.toml`` next to its plan. A read-modify-write, so under the
    file's lock: a second ``make train`` assembling the same run at once loses nothing."""
    path = rdir / "config.toml"
    with locks.wait_lock(rdir / ".config.toml.lock", f"{path}"):
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
