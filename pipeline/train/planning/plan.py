"""The time budget's arithmetic: which runs to train and their epochs, from each run's ``Cost``.

``make train BUDGET=20m`` times a short probe of every run (``probe.py``: a few training
batches, prediction, or for feature members embedding and one head fit's arithmetic), prices
the whole train stage from it (``Cost``: seconds once per run, per epoch of a fold, per fold),
keeps the set of runs with the best estimated value that fits (``value.py``), scales the
fine-tuned runs' epochs by one common factor so the total fits (``EPOCHS=auto``, the default
with a budget; ``EPOCHS=recipe`` keeps them and only checks), prints the plan
(``format_plan``) and writes it to ``<models>/<comp>/plan.toml`` (``plan_file.py``). Re-runs,
resumes and every executor read that file instead of planning again (``resolve.py``); the
plan and the measured seconds go into each run's ``config.toml``.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass, replace

from ...errors import PipelineError
from ...util.durations import format_duration
from ..kinds import get_kind
from ..kinds.pricing import Cost

MAX_SCALE = 2.0  # EPOCHS=auto never more than doubles a recipe's epochs


@dataclass(frozen=True)
class Plan:
    budget_s: float
    k: int
    epochs: dict[str, int]  # run -> planned epochs (feature members: 1)
    recipe_epochs: dict[str, int]
    costs: dict[str, Cost]

    def run_seconds(self, run: str) -> float:
        return self.costs[run].seconds(self.epochs[run], self.k)

    @property
    def total_s(self) -> float:
        return sum(self.run_seconds(r) + self.costs[r].probe_s for r in self.costs)


MAX_SUBSETS_OF = 14  # candidates up to which every subset is weighed by its estimated value
VALUE_TIE = 0.005  # estimated values this close are a tie (about 1 of the probe's 256 images)


def run_of(candidate: str) -> str:
    """The run of a plan candidate: ``run``, or ``run[view]`` for it with one TTA view."""
    return candidate.split("[", 1)[0]


def make_plan(
    costs: dict[str, Cost],
    recipe_epochs: dict[str, int],
    k: int,
    budget_s: float,
    auto: bool,
    value: Callable[[tuple[str, ...]], float] | None = None,
) -> Plan:
    """The runs to train and their epochs. With ``value`` (the estimated score of a set of
    runs, higher is better) and an estimate for every run: the set with the best value whose
    plan fits ``budget_s`` (``best_subset``: near-ties to more runs, then to whole runs, then to
    the dearer plan), so
    a strong late run is never dropped for an early weak one. Without: runs in ``costs`` order
    (``in_order``). Then the largest common epoch scale (at most ``MAX_SCALE``; with ``auto``
    False, the recipes' epochs) whose total fits. Refuses, naming the smallest plan, when not
    even one run fits."""
    if value is not None and len(costs) <= MAX_SUBSETS_OF:
        plan = best_subset(costs, recipe_epochs, k, budget_s, auto, value)
    else:
        plan = in_order(costs, recipe_epochs, k, budget_s, auto)
    if plan is None:
        fewest = {r: fewest_epochs(c, recipe_epochs[r]) for r, c in costs.items()}
        smallest = Plan(budget_s, k, fewest, recipe_epochs, costs)
        raise PipelineError(budget_too_small(smallest, "" if auto else "with the recipes' epochs"))
    return plan


def best_subset(
    costs: dict[str, Cost],
    recipe_epochs: dict[str, int],
    k: int,
    budget_s: float,
    auto: bool,
    value: Callable[[tuple[str, ...]], float],
    base: tuple[str, ...] = (),
) -> Plan | None:
    """The subset of ``costs`` (a run once, in one variant) whose plan fits ``budget_s`` with
    the best ``value(base + subset)``. Values within ``VALUE_TIE`` of the best count as a tie
    (the probe's few hundred held-out images cannot tell them apart): then more runs, then
    more runs with all their TTA views (so two runs sharing one trunk pass keep the same views
    rather than paying for it twice), then the dearer plan, which spends the budget the user
    gave on members and epochs the ensemble stage can still weigh. With ``base`` (runs already trained) the empty subset competes too, so
    nothing is added that the estimate says lowers the ensemble (an empty plan is returned
    then); without, None when nothing fits."""
    fits: list[tuple[float, int, int, float, Plan]] = []
    runs = list(costs)
    for mask in range(0 if base else 1, 2 ** len(runs)):
        subset = tuple(r for i, r in enumerate(runs) if mask >> i & 1)
        if len({run_of(r) for r in subset}) < len(subset):  # a run once, in one variant
            continue
        chosen = shared({r: costs[r] for r in subset})
        plan = _epochs_plan(chosen, recipe_epochs, k, budget_s, auto)
        if plan is not None:
            whole = sum(r == run_of(r) and costs[r].fewer is not None for r in subset)
            fits.append((value(base + subset), len(subset), whole, plan.total_s, plan))
    if not fits:
        return None
    top = max(f[0] for f in fits)
    return max((f for f in fits if f[0] >= top - VALUE_TIE), key=lambda f: f[1:4])[4]


def in_order(
    costs: dict[str, Cost], recipe_epochs: dict[str, int], k: int, budget_s: float, auto: bool
) -> Plan | None:
    """Runs in ``costs`` order (priority) while each still fits at one epoch after the ones
    kept before it, then the epochs scaled to fit; None when not even the first fits."""
    kept: dict[str, Cost] = {}
    for run, cost in costs.items():
        trial = shared({**kept, run: cost})
        if _epochs_plan(trial, recipe_epochs, k, budget_s, auto) is not None:
            kept = trial
    return _epochs_plan(kept, recipe_epochs, k, budget_s, auto) if kept else None


def shared(costs: dict[str, Cost]) -> dict[str, Cost]:
    """The costs of runs planned together: a run whose once-per-run work another run of the
    set writes (a partial run's trunk pass writes its backbone's embeddings, so a feature
    member of that backbone embeds nothing) pays nothing once. The run that writes it trains
    first (``stage.by_estimate``)."""
    out = dict(costs)
    for name, cost in costs.items():
        given = frozenset().union(*(c.provides for n, c in costs.items() if n != name))
        if cost.needs and cost.needs <= given and cost.once_s > 0:
            out[name] = replace(cost, once_s=0.0)
    return out


def _epochs_plan(costs, recipe_epochs, k, budget_s, auto) -> Plan | None:
    if not costs:
        return Plan(budget_s, k, {}, recipe_epochs, {})
    tune = [r for r in costs if get_kind(costs[r].kind).scales_epochs]

    def epochs_at(scale: float) -> dict[str, int]:
        e = {r: 1 for r in costs}
        e.update(
            {
                r: max(
                    fewest_epochs(costs[r], recipe_epochs[r]),
                    math.floor(recipe_epochs[r] * scale + 1e-9),
                )
                for r in tune
            }
        )
        return e

    scales = sorted(
        {
            e / recipe_epochs[r]
            for r in tune
            for e in range(1, int(recipe_epochs[r] * MAX_SCALE) + 1)
        }
        | {1.0},
        reverse=True,
    )
    for s in scales if auto else [1.0]:
        plan = Plan(budget_s, k, epochs_at(s), recipe_epochs, costs)
        if plan.total_s <= budget_s:
            return plan
    return None


def yardstick(plan: Plan, costs: dict[str, Cost], value, sign: float, auto: bool) -> dict:
    """What ``plan.toml`` weighs the plan against: the planned set's estimated value and the
    best single run the same budget would train alone (its epochs scaled to fill it), both in
    the metric's direction; empty without a value model."""
    if value is None:
        return {}
    out = {"value": round(sign * value(tuple(plan.costs)), 4)} if plan.costs else {}
    alone = []
    for c, cost in costs.items():
        one = _epochs_plan({c: cost}, plan.recipe_epochs, plan.k, plan.budget_s, auto)
        if cost.estimate is not None and one is not None:
            alone.append((value((c,)), c, one))
    if alone:
        v, c, one = max(alone, key=lambda a: a[0])
        out["best_single"] = {
            "run": c,
            "estimate": round(sign * v, 4),
            "epochs": one.epochs[c],
            "planned_s": round(one.total_s, 1),
        }
    return out


def fewest_epochs(cost: Cost, recipe_epochs: int) -> int:
    """The fewest epochs the planner gives a run: 1, or its kind's ``min_epoch_scale`` of the
    recipe's epochs (a partial member keeps them all)."""
    return max(1, math.ceil(recipe_epochs * get_kind(cost.kind).min_epoch_scale - 1e-9))


def _fewest(smallest: Plan) -> str:
    if all(e == 1 for e in smallest.epochs.values()):
        return "(1 epoch each)"
    return (
        "(each at its fewest epochs: "
        + ", ".join(f"{r} {e}" for r, e in smallest.epochs.items())
        + ")"
    )


def _est(c: Cost) -> str:
    return f"{c.estimate.score:.3f}" if c.estimate is not None else "-"


def budget_too_small(smallest: Plan, how: str) -> str:
    """The one line for a budget not even the first run fits: each run's smallest minutes."""
    each = ", ".join(f"{r} {smallest.run_seconds(r) / 60:.1f} min" for r in smallest.costs)
    probes = sum(c.probe_s for c in smallest.costs.values())
    return (
        f"BUDGET={format_duration(smallest.budget_s)} is too small for any run {how or _fewest(smallest)}: "
        f"{each} (probes {probes:.0f} s); raise BUDGET or name cheaper RUNS"
    )


def format_plan(
    plan: Plan,
    n_train: int,
    n_test: int,
    device: str,
    dropped: tuple[str, ...] = (),
    costs: dict[str, Cost] | None = None,
    chosen_by: str = "",
) -> str:
    w = max([22, *(len(r) + 2 for r in [*plan.costs, *dropped])])
    lines = [
        f"plan for BUDGET={format_duration(plan.budget_s)} on {device}: K={plan.k}, {n_train:,} train / "
        f"{n_test:,} test images",
        f"  {'run':<{w}}{'kind':<10}{'epochs':>10}{'once':>9}{'/epoch':>9}{'/fold':>8}{'total':>10}"
        f"{'est.':>8}",
    ]
    every = costs or plan.costs
    for run, c in plan.costs.items():
        e, scales = plan.epochs[run], get_kind(c.kind).scales_epochs
        ep = f"{e} ({plan.recipe_epochs[run]})" if scales else "-"
        per_epoch = f"{c.epoch_s:.0f}s" if scales else "-"
        lines.append(
            f"  {run:<{w}}{c.kind:<10}{ep:>10}{c.once_s:>8.0f}s{per_epoch:>9}{c.fold_s:>7.0f}s"
            f"{plan.run_seconds(run) / 60:>8.1f}min{_est(c):>8}"
        )
    for run in dropped:
        why = "not in the best set that fits" if chosen_by else "does not fit after the runs above"
        lines.append(
            f"  {run:<{w}}left out: {why} (RUNS= to choose){'':>4}{_est(every[run]) if run in every else '':>8}"
        )
    if chosen_by:
        lines.append(f"  {chosen_by}")
    probes = sum(c.probe_s for c in plan.costs.values())
    lines.append(
        f"  probes {probes:.0f} s; total {plan.total_s / 60:.1f} min of {plan.budget_s / 60:g} min "
        "(epochs: planned (recipe); once = embeddings; /epoch and /fold per fold)"
    )
    return "\n".join(lines)
