"""The re-plan after each trained run (``Replanner``): the runs not yet started planned again
for the budget that is left, at the pace measured so far; ``repriced`` is a candidate's cost
once the runs before it have written what it would compute once.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field, replace
from pathlib import Path

from ..kinds import get_kind
from ..kinds.pricing import Cost
from .plan import MAX_SUBSETS_OF, Plan, best_subset, in_order, run_of
from .plan_file import plan_entries, read_plan, write_plan


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
