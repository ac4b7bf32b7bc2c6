"""The time budget as the train stage uses it: probe each run (``probe_run``, through its
member kind), value a set of runs by their estimates (``ensemble_value``), plan once or read
``plan.toml`` (``resolve_plan``), and record the measured seconds (``record_wall``). The plan's
arithmetic and its file are ``plan.py``.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from pathlib import Path

import numpy as np

from .. import artifacts
from ..config import Recipe, to_toml
from ..disk import faults, locks
from ..util.durations import format_duration
from .decoding import decode_for_budget
from .kinds import get_kind
from .plan import (
    MAX_SUBSETS_OF,
    Plan,
    best_subset,
    format_plan,
    in_order,
    make_plan,
    planned_epochs,
    read_plan,
    run_of,
    write_plan,
)
from .probe import Clock, Cost, ProbeInput, halves, sample_images


def mixture_weights(p_true: np.ndarray, steps: int = 100) -> np.ndarray:
    """Simplex weights maximising the mean log of ``w @ p_true`` (``p_true (M, n)``: each run's
    probability of the true class): the maximum-likelihood mixture, by its EM fixed point
    ``w <- w * mean(p / (w @ p))``. A weak run gets a small weight instead of half the vote."""
    p = np.clip(p_true, 1e-12, None)
    w = np.full(len(p), 1.0 / len(p))
    for _ in range(steps):
        w = w * (p / (w @ p)).mean(axis=1)
    return w / w.sum()


def ensemble_value(task, costs: dict[str, Cost], y_all: np.ndarray):
    """The estimated score of a set of runs (higher is better, whatever the metric's
    direction), as the ensemble stage would blend them: the competition's metric, on the
    probe's shared held-out images, of their probabilities mixed with weights fitted by maximum
    likelihood on one half of those images and applied to the other, and the other way round
    (so a weak run is worth what it adds, and no weight is scored on the images it was fitted
    on). Multi-label runs are averaged. None unless every run has an estimate on the same
    images."""
    ests = [c.estimate for c in costs.values()]
    if not ests or any(e is None for e in ests) or len({tuple(e.val) for e in ests}) != 1:
        return None
    y = y_all[ests[0].val]
    sign = 1.0 if task.greater_is_better else -1.0
    a, b = halves(len(y))

    def blend(subset: tuple[str, ...]) -> np.ndarray:
        stack = np.stack([costs[r].estimate.probs for r in subset])  # (M, n, C)
        if len(subset) == 1 or task.multilabel:
            return stack.mean(axis=0)
        p_true = stack[:, np.arange(len(y)), y]
        out = np.empty(stack.shape[1:])
        for fit, use in ((a, b), (b, a)):
            out[use] = np.tensordot(mixture_weights(p_true[:, fit]), stack[:, use], 1)
        return out

    def value(subset: tuple[str, ...]) -> float:
        probs = blend(subset)
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
    """Time ``recipe`` on this machine: its kind's probe (``Kind.probe``) on ``SAMPLE`` train
    images read from the decode cache (``decoding.decode_for_budget`` priced and built it)."""
    images = sample_images(comp, ws, recipe.image_size)
    start = clock()
    p = ProbeInput(comp, ws, recipe, images, y_all, k, device, clock, batches, warmup)
    cost = get_kind(recipe.kind).probe(p)
    probe_s = clock() - start

    def priced(c: Cost) -> Cost:
        return replace(c, probe_s=probe_s)

    fewer = priced(cost.fewer) if cost.fewer is not None else None
    return replace(priced(cost), fewer=fewer)


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
        costs, epochs = {}, {}
        sizes = sorted({r.image_size for r in recipes.values()})
        decode_s = decode_for_budget(comp, ws, sizes, budget_s)  # spent now, for every run
        for run, recipe in recipes.items():
            print(f"plan: probing {run} ...", flush=True)
            c = probe_run(comp, ws, recipe, y_all, k, device)
            for name, cost in ((run, c), (f"{run}[{recipe.tta[0]}]", c.fewer)):
                if cost is not None:
                    costs[name], epochs[name] = cost, recipe.epochs
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
        chosen_by = (
            f"chosen by the estimated ensemble {comp.task.metric}: "
            f"{value(tuple(plan.costs)) * (1 if comp.task.greater_is_better else -1):.3f} "
            f"(the runs' probabilities on the probe's held-out half, "
            f"{len(next(iter(costs.values())).estimate.val)} images, blended with weights "
            "fitted on half of them and scored on the other)"
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
        )
    else:
        print(
            f"plan: {path} (BUDGET={format_duration(saved['budget_s'])}, {saved['total_s'] / 60:.1f} min)"
        )
    entries, left_out = plan_entries(saved, path, list(recipes), budget_s)
    return entries, left_out, replanner


def repriced(comp, ws, recipes: dict, candidate: str, cost: Cost) -> Cost:
    """``cost`` with nothing to pay once when the run's embeddings or activations (its
    candidate's views) are on disk now: a partial run's trunk pass embeds for the feature
    member of its backbone."""
    recipe = recipes[run_of(candidate)]
    if candidate != run_of(candidate):  # run[view]: that view only
        recipe = replace(recipe, tta=(candidate.split("[", 1)[1].rstrip("]"),))
    if cost.once_s > 0 and get_kind(recipe.kind).cached_once(comp, ws, recipe):
        return replace(cost, once_s=0.0)
    return cost


def plan_entries(saved: dict, path: Path, runs: list[str], budget_s) -> tuple[dict, list[str]]:
    """``{run: plan entry}`` for the runs ``plan.toml`` trains, in its order, and the runs it
    leaves out."""
    epochs = planned_epochs(saved, path, runs, budget_s)
    entries = {
        run: {"budget_s": saved["budget_s"], **saved["runs"][run], "epochs": epochs[run]}
        for run in saved["runs"]
        if run in epochs
    }
    return entries, [r for r in runs if r in saved.get("left_out", [])]


MIN_PACE, MAX_PACE = 0.5, 2.0  # the measured/planned factor a re-plan prices the rest with


@dataclass
class Replanner:
    """Revises the plan after each trained run (``after``): the runs not yet started and the
    ones left out are planned again for the budget that is left, priced by the probe's costs
    times the pace measured so far (seconds taken / seconds planned of the runs done), and
    valued together with the runs already trained. So a probe that overpriced leaves no
    minutes unspent (another member, the other views of one, more epochs of a fine-tune that
    has not started) and one that underpriced drops what would overrun. Only the call that
    planned re-plans (the probe's estimates live in its memory); a resumed call follows the
    ``plan.toml`` the last re-plan wrote."""

    path: Path
    plan: Plan
    costs: dict  # every candidate the probe priced (runs and their one-view variants)
    epochs: dict[str, int]  # recipe epochs per candidate
    auto: bool
    value: Callable[[tuple[str, ...]], float] | None
    device: str
    runs: list[str]  # the runs of this call, in RUNS order
    # a candidate's cost as its run's once-per-run work stands now (cached by a run before it)
    reprice: Callable[[str, Cost], Cost] | None = None
    done: dict[str, float] = field(default_factory=dict)  # candidate -> seconds it took
    history: list[dict] = field(default_factory=list)

    def after(self, run: str, seconds: float, elapsed_s: float) -> tuple[dict, list[str]]:
        """Record that ``run`` took ``seconds``; with ``elapsed_s`` of the budget spent (probes
        included), plan the rest again, rewrite ``plan.toml`` and return its ``{run: entry}``
        for the runs still to train, in the order to train them, and the runs left out."""
        name = next(c for c in self.plan.costs if run_of(c) == run)
        self.done[name] = seconds
        planned = sum(self.plan.run_seconds(c) for c in self.done)
        pace = min(MAX_PACE, max(MIN_PACE, sum(self.done.values()) / max(planned, 1e-9)))
        trained = {run_of(c) for c in self.done}
        fresh = self.reprice or (lambda c, cost: cost)
        rest = {
            c: _scaled(fresh(c, cost), pace)
            for c, cost in self.costs.items()
            if run_of(c) not in trained
        }
        left_s = self.plan.budget_s - elapsed_s
        epochs, k, auto = self.epochs, self.plan.k, self.auto
        if self.value is not None and len(rest) <= MAX_SUBSETS_OF:
            new = best_subset(rest, epochs, k, left_s, auto, self.value, tuple(self.done))
        else:  # no estimates: the runs still planned first, then the left-out ones, in order
            order = [c for c in self.plan.costs if c in rest]
            order += [c for c in rest if c not in order and c in self.runs]
            new = in_order({c: rest[c] for c in order}, epochs, k, left_s, auto)
        new = new or Plan(left_s, k, {}, epochs, {})
        before = [c for c in self.plan.costs if c not in self.done]
        self.history.append(
            {
                "after": run,
                "took_s": round(seconds, 1),
                "pace": round(pace, 3),
                "left_s": round(left_s, 1),
                "kept": [c for c in new.costs if c in before],
                "added": [c for c in new.costs if c not in before],
                "dropped": [c for c in before if c not in new.costs],
            }
        )
        self.plan = Plan(
            self.plan.budget_s,
            k,
            {**{c: self.plan.epochs[c] for c in self.done}, **new.epochs},
            epochs,
            {**{c: self.plan.costs[c] for c in self.done}, **new.costs},
        )
        kept = {run_of(c) for c in self.plan.costs}
        left_out = tuple(r for r in self.runs if r not in kept)
        write_plan(self.path, self.plan, self.device, left_out, self.costs, self.history)
        print(replan_line(self.history[-1], new, self.value))
        saved = read_plan(self.path)
        entries, _ = plan_entries(saved, self.path, self.runs, self.plan.budget_s)
        return {run_of(c): entries[run_of(c)] for c in new.costs}, list(left_out)


def _scaled(cost: Cost, pace: float) -> Cost:
    """``cost`` at the measured pace; its probe is spent already."""
    return replace(
        cost,
        once_s=cost.once_s * pace,
        epoch_s=cost.epoch_s * pace,
        fold_s=cost.fold_s * pace,
        probe_s=0.0,
    )


SAYS = (("adds", "added"), ("keeps", "kept"), ("drops", "dropped"))


def replan_line(step: dict, new: Plan, value) -> str:
    """One line per re-plan: the pace, what is left, and what changed."""
    what = [f"{verb} {', '.join(step[key])}" for verb, key in SAYS if step[key]]
    if not step["added"] and not step["kept"]:
        what.append("nothing more to train")
    return (
        f"re-plan after {step['after']} ({step['took_s'] / 60:.1f} min, pace {step['pace']:.2f} "
        f"x the probe's price): {step['left_s'] / 60:.1f} min left; {'; '.join(what)}"
        f"{f' (planned {new.total_s / 60:.1f} min)' if new.costs else ''}"
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
