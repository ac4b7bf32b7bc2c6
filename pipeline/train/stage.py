"""The train stage: plan -> jobs -> executor -> assemble. Every (run, fold) not yet done is a
``Job`` (``context.py``) that an executor (``executors/``: in this process, in ``JOBS`` local
workers or as Ray tasks) hands to the run's member kind (``kinds/``) to fit; then each run's
fold outputs are assembled into ``models/<comp>/<run>/{oof,test}.npz`` (``assemble.py``).

A fold with ``done.json`` is skipped; a run's ``config.toml`` (the resolved recipe and the folds
hash) is written once and every later call must agree with it.
"""

from __future__ import annotations

import dataclasses
import platform
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import timm
import torch

from .. import artifacts
from ..competition import Competition
from ..config import ADDED_LATER, Recipe, to_toml
from ..errors import ArtifactError, PipelineError
from ..model.device import resolve_device as resolve_device
from ..model.pretrained import ensure_pretrained
from ..util.durations import format_duration
from ..workspace import Workspace
from .assemble import load_recipes, read_training_folds
from .context import Job, TrainContext, labels_by_row
from .executors import Dispatch, why_refused
from .executors.base import Failure, prepare_shared
from .kinds import get_kind
from .planning.plan_file import read_plan
from .planning.resolve import resolve_plan
from .rounds import finish_run, replan_after, train_round


def train_stage(
    comp: Competition,
    ws: Workspace,
    runs: list[str],
    folds: list[int] | None = None,
    overrides: dict | None = None,
    device: str = "auto",
    dispatch: Dispatch | None = None,
    budget_s: float | None = None,
    auto_epochs: bool = True,
    teach: Callable[[str, str, list[int]], None] | None = None,
    track: frozenset[str] = frozenset(),
) -> None:
    """Train ``folds`` (default all) of every recipe in ``runs`` (``<models>/<run>.toml`` with
    ``overrides``) on ``device`` with the executor of ``dispatch`` (default: this process, one
    job after another); assemble each run whose folds are all done. ``budget_s``: plan the
    epochs to fit (``planning/``); a written ``plan.toml`` is used whenever it exists. ``teach(run,
    teacher, folds)`` writes a student's targets before its folds train (``pipeline/teach``).
    ``track``: TRACK's trackers (``pipeline/track/``): each fold's epochs and each assembled
    run's summary go to TensorBoard (and MLflow)."""
    t_start = time.perf_counter()
    folds_df, fhash = read_training_folds(comp, ws)
    k = int(folds_df["fold"].max()) + 1
    todo = _folds_asked(ws, folds, k)
    dev = resolve_device(device)
    recipes = load_recipes(ws, runs, overrides)
    ensure_pretrained({r: recipes[r] for r in recipes if _pending(ws, r, todo, quiet=True)})
    labels = labels_by_row(comp, folds_df)
    plans, left_out, replanner = resolve_plan(
        comp, ws, recipes, labels, k, dev, budget_s, auto_epochs
    )
    every = dict(recipes)  # a re-plan may add a run the first plan left out
    plans_made = dict(plans)
    for run in left_out:
        print(f"{run}: left out by the plan {ws.plan} ({_why_left_out(ws, run)}); not trained")
        del recipes[run]
    d = dispatch or Dispatch()
    ctx = TrainContext(comp, ws, folds_df, fhash, recipes, str(dev), labels, frozenset(track))
    # A plan made now is revised after each run, so runs train one after another, best
    # estimate first; otherwise every pending fold of every run goes to the executor at once.
    rounds = [[r] for r in by_estimate(recipes, plans)] if replanner else [list(recipes)]
    failed, total = [], 0
    while rounds:
        batch, t_batch = rounds.pop(0), time.perf_counter()
        jobs = _start_round(ctx, batch, plans, todo, d, teach)
        ran, n, cut = train_round(ctx, jobs, k, d, replanner, (t_batch, t_start))
        failed, total = failed + ran, total + n
        for run in batch:
            finish_run(ctx, run, k, dev, cut, plans.get(run), time.perf_counter() - t_start)
        if replanner and not failed:
            plans, left = replan_after(ctx, replanner, batch[0], cut, (t_batch, t_start))
            for run in left:
                recipes.pop(run, None)
            recipes.update({run: every[run] for run in plans})
            rounds = [[r] for r in by_estimate(plans, plans)]
    line = _budget_line(plans_made, replanner, time.perf_counter() - t_start)
    if line and total:
        print(line)
    if failed:
        raise PipelineError(failure_line(failed, total))


def _folds_asked(ws: Workspace, folds: list[int] | None, k: int) -> list[int]:
    """FOLDS (default: all ``k``), each checked against the folds file."""
    todo = folds if folds is not None else list(range(k))
    if bad := [f for f in todo if not 0 <= f < k]:
        raise PipelineError(f"FOLDS has fold {bad[0]} but {ws.folds_csv} has folds 0..{k - 1}")
    return todo


def _why_left_out(ws: Workspace, run: str) -> str:
    cut = (read_plan(ws.plan) or {}).get("cut", {}).get(run)
    if cut is None:
        return "over budget"
    return (
        f"cut after its first {cut['folds']} fold(s) measured {cut['measured']:.4f} against the "
        f"probe's {cut['estimate']:.4f}; its finished folds are kept"
    )


def _start_round(ctx: TrainContext, batch: list[str], plans: dict, todo, d, teach) -> list[Job]:
    """The runs of ``batch`` as planned, their ``config.toml`` written (or checked), their
    students' targets written: the jobs of their pending folds."""
    jobs = []
    for run in batch:
        if run in plans:
            ctx.recipes[run] = as_planned(ctx.recipes[run], plans[run])
        rdir = ctx.ws.run_dir(run)
        write_or_verify_config(rdir, ctx.recipes[run], ctx.fhash, run, ctx.comp, plans.get(run))
        jobs += _pending(ctx.ws, run, todo)
    _teach_students(ctx.ws, ctx.recipes, jobs, d, teach)
    return jobs


def _budget_line(plans: dict, replanner, took_s: float) -> str:
    """``train took ... of BUDGET=...`` when a plan drove this call, else ""."""
    if not plans:
        return ""
    if replanner is not None:
        planned, budget = replanner.plan.total_s, replanner.plan.budget_s
    else:
        planned = sum(e["planned_s"] + e["probe_s"] for e in plans.values())
        budget = next(iter(plans.values()))["budget_s"]
    return (
        f"train took {took_s / 60:.1f} min; planned {planned / 60:.1f} min of "
        f"BUDGET={format_duration(budget)}"
    )


def by_estimate(runs, plans: dict) -> list[str]:
    """``runs`` with the best probe estimate first (their order where there is none): when
    time runs short, the members worth most are trained already. On a tie, a run whose
    once-per-run pass writes embeddings (``Kind.writes_embeddings``) goes first: a feature
    member of its backbone then embeds nothing."""

    def key(r: str) -> tuple[float, bool]:
        entry = plans.get(r, {})
        feeds = "kind" in entry and get_kind(entry["kind"]).writes_embeddings
        return -entry.get("estimate", -np.inf), not feeds

    return sorted(runs, key=key)


def as_planned(recipe: Recipe, entry: dict) -> Recipe:
    """The recipe as its ``plan.toml`` entry trains it: the planned epochs (a kind whose epochs
    scale) and, when the plan keeps one view, that view."""
    if get_kind(recipe.kind).scales_epochs:
        recipe = dataclasses.replace(recipe, epochs=int(entry["epochs"]))
    if "tta" in entry:
        recipe = dataclasses.replace(recipe, tta=tuple(entry["tta"]))
    return recipe


def _pending(ws: Workspace, run: str, folds: list[int], quiet: bool = False) -> list[Job]:
    """The folds of ``run`` without ``done.json`` (a done fold is skipped and said so)."""
    jobs = []
    for fold in folds:
        fdir = ws.fold_dir(run, fold)
        if (fdir / "done.json").is_file():
            if quiet:
                continue
            print(f"{run} fold {fold}: done, skipped (delete {fdir} to retrain)")
            # left when a kill fell between done.json and its removal in finish_fold
            (fdir / "last.pt").unlink(missing_ok=True)
            continue
        jobs.append(Job(run, fold))
    return jobs


def prepare_stage(
    comp: Competition, ws: Workspace, runs: list[str], overrides: dict | None, device: str
) -> None:
    """What ``make train`` builds before any job starts, alone: the decode caches of the runs'
    image sizes and what their kinds prepare (embeddings), e.g. before timing a train stage."""
    folds_df, fhash = read_training_folds(comp, ws)
    recipes = load_recipes(ws, runs, overrides)
    ensure_pretrained(recipes)
    ctx = TrainContext.build(comp, ws, folds_df, fhash, recipes, str(resolve_device(device)))
    prepare_shared(ctx, [Job(run, 0) for run in runs])
    sizes = sorted({r.image_size for r in recipes.values()})
    print(f"prepared {', '.join(runs)}: decode caches at {sizes} px in {ws.cache}")


def _teach_students(ws: Workspace, recipes: dict, jobs: list[Job], d: Dispatch, teach) -> None:
    """Have each student's targets written (``teach``) for the folds it is about to train."""
    for run, recipe in recipes.items():
        pending = [j.fold for j in jobs if j.run == run]
        if not (recipe.teacher and pending):
            continue
        if why := why_refused(d, "workspace"):
            raise PipelineError(
                f"{run} is a student of {recipe.teacher!r}: its folds read the teacher's targets "
                f"from {ws.runs_dir}/teachers/, which {why}"
            )
        if teach is not None:
            teach(run, recipe.teacher, pending)


def failure_line(failed: list[Failure], total: int) -> str:
    """One line for the jobs that failed every attempt (which, why, their logs) and those
    skipped because another process holds them."""
    held = [f for f in failed if f.held]
    failed = [f for f in failed if not f.held]
    parts = []
    if failed:
        what = "; ".join(f"{f.job.tag} ({f.why}, log {f.log})" for f in failed)
        parts.append(
            f"{len(failed)} of {total} train jobs failed: {what}; the other folds are kept, "
            "re-run the same command to retry these"
        )
    if held:
        what = "; ".join(f.why for f in held)
        parts.append(
            f"{len(held)} of {total} train jobs skipped, held by another live process: {what}; "
            "re-run the same command once it has finished (its folds are then skipped as done)"
        )
    return "; ".join(parts)


def write_or_verify_config(
    rdir: Path, recipe: Recipe, fhash: str, run: str, comp: Competition, plan: dict | None = None
) -> None:
    """Write the resolved recipe once; refuse to mix folds trained with another recipe/folds."""
    path = rdir / "config.toml"
    old = artifacts.read_run_config(path)
    if old is not None:
        was = {**ADDED_LATER, **old.get("recipe", {})}
        diff = [k for k, v in recipe.to_dict().items() if was.get(k) != v]
        if diff or old.get("folds_hash") != fhash:
            what = f"recipe field {diff[0]!r}" if diff else "folds file"
            fix = (
                f'train the change as a variant: make train RUNS={run} SET="..." AS=<new name> '
                f"(or delete {rdir} to retrain it)"
                if diff
                else f"delete {rdir} to retrain it"
            )
            raise ArtifactError(
                f"{path}: the {what} changed since this run's folds were trained; {fix}"
            )
        return
    meta = {
        "run": run,
        "comp": comp.name,
        "folds_hash": fhash,
        "created": time.strftime("%Y-%m-%d %H:%M:%S"),
        "versions": {
            "torch": torch.__version__,
            "timm": timm.__version__,
            "python": platform.python_version(),
        },
        "recipe": recipe.to_dict(),
    }
    if plan:
        meta["plan"] = plan
    artifacts.atomic_write_text(path, to_toml(meta))
