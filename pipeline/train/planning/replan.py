"""The re-plan after each trained run (``Replanner``): the runs not yet started planned again
for the budget that is left, at the pace measured so far; ``repriced`` is a candidate's cost
once the runs before it have written what it would compute once.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field, replace
from pathlib import Path

import numpy as np

from ..kinds import get_kind
from ..kinds.pricing import Cost
from .first_fold import Measured, first_folds_line, measured_only_line, r4, unweighable
from .plan import MAX_SUBSETS_OF, VALUE_TIE, Plan, best_subset, in_order, run_of, yardstick
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
    sign: float = 1.0  # the metric's direction: values are higher-is-better, reports are not
    done: dict[str, float] = field(default_factory=dict)  # candidate -> seconds it took
    history: list[dict] = field(default_factory=list)
    # what was measured against the probe: each measured run's score off its estimate (the
    # probe's small-sample heads score on another level) and what it adds to the blend off
    # what the level-corrected estimates say it adds
    off: dict[str, float] = field(default_factory=dict)
    delta: dict[str, float] = field(default_factory=dict)
    singles: dict[str, float] = field(default_factory=dict)  # the probe's value of each run alone
    cut: dict[str, dict] = field(default_factory=dict)  # run -> what its first folds measured
    part_s: dict[str, float] = field(default_factory=dict)  # a cut run's planned seconds spent

    def valued(self, subset: tuple[str, ...]) -> float:
        """The value of ``subset`` on the measured level: its best run's measured-level score
        (the probe's estimate moved by the run's offset: its own when measured, else the
        mean of its kind's measured runs, else of all measured runs) plus what the probe's
        blend adds over its best estimate, plus each measured run's marginal discrepancy.
        A set's value never climbs with the number of runs offset upwards."""
        single = [self._single(c) for c in subset]
        level = max(v + self._off(c) for v, c in zip(single, subset, strict=True))
        v = self.value(subset) - max(single) + level
        return v + sum(self.delta.get(c, 0.0) for c in subset)

    def _single(self, c: str) -> float:
        if c not in self.singles:
            self.singles[c] = self.value((c,))
        return self.singles[c]

    def _off(self, c: str) -> float:
        if c in self.off:
            return self.off[c]
        kind = self.costs[c].kind
        same = [v for n, v in self.off.items() if self.costs[n].kind == kind]
        seen = same or list(self.off.values())
        return float(np.mean(seen)) if seen else 0.0

    def _record(self, name: str, measured: Measured, base: tuple[str, ...]) -> float:
        """Record what ``name`` measured (with ``base`` trained before it); returns the gain
        the probe estimated for it (on the probe's level)."""
        self.delta.pop(name, None)
        self.off[name] = measured.score - self.value((name,))
        level = self.valued((*base, name)) - (self.valued(base) if base else 0.0)
        self.delta[name] = measured.gain - level
        return self.value((*base, name)) - (self.value(base) if base else 0.0)

    def trained(self) -> list[str]:
        """The runs trained by this call and kept (not cut)."""
        return [run_of(c) for c in self._base()]

    def _base(self) -> tuple[str, ...]:
        return tuple(c for c in self.done if run_of(c) not in self.cut)

    def _rest(self, pace: float, but: str = "") -> dict:
        trained = {run_of(c) for c in self.done} | {but}
        fresh = self.reprice or (lambda c, cost: cost)
        return {
            c: _scaled(fresh(c, cost), pace)
            for c, cost in self.costs.items()
            if run_of(c) not in trained
        }

    def _pace(self, extra: tuple[float, float] = (0.0, 0.0)) -> float:
        """Seconds taken / seconds planned of the runs done (and ``extra``: first folds')."""
        planned = sum(
            self.part_s[c] if c in self.part_s else self.plan.run_seconds(c) for c in self.done
        )
        took = sum(self.done.values()) + extra[0]
        return min(MAX_PACE, max(MIN_PACE, took / max(planned + extra[1], 1e-9)))

    def first_folds(
        self, run: str, folds: int, seconds: float, measured: Measured, elapsed_s: float
    ) -> bool:
        """After ``run``'s first ``folds`` folds (``seconds``, with ``elapsed_s`` of the budget
        spent): is the rest of it worth its minutes? Its value is moved to what the folds
        measured (``valued``), its remaining folds priced at their measured pace, and two plans
        for the budget left are weighed: the run finished and the best set of runs not started
        in the minutes after it, against the best set in all of them. True (the run is cut,
        its finished folds kept) when cutting is worth more by over ``VALUE_TIE``; the check
        and the decision go into the re-plan history and ``plan.toml``."""
        name = next(c for c in self.plan.costs if run_of(c) == run)
        cost, k, base = self.plan.costs[name], self.plan.k, self._base()
        per_fold = (self.plan.run_seconds(name) - cost.once_s) / k
        first_s = cost.once_s + folds * per_fold
        step = {"first_folds": run, "folds": folds, "took_s": round(seconds, 1)}
        step["rows"] = measured.rows
        rest = self._rest(self._pace((seconds, first_s)), but=run)
        why = unweighable(self.value, measured, len(rest))
        if why:
            return self._measured_only(step, measured, why)
        rest_s = seconds / max(first_s, 1e-9) * (k - folds) * per_fold
        est = self.value((name,))
        est_gain = self._record(name, measured, base)
        left_s = self.plan.budget_s - elapsed_s
        go = self._best((*base, name), rest, left_s - rest_s)
        stop = self._best(base, rest, left_s)
        cut = stop[0] > go[0] + VALUE_TIE
        step |= {
            "estimate": round(self.sign * est, 4),
            "measured": round(self.sign * measured.score, 4),
            "gain_estimate": round(self.sign * est_gain, 4),
            "gain_measured": round(self.sign * measured.gain, 4),
            "rest_s": round(rest_s, 1),
            "continue": {"value": r4(self.sign * go[0]), "then": list(go[1])},
            "cut": {"value": r4(self.sign * stop[0]), "then": list(stop[1])},
            "decision": "cut" if cut else "continue",
        }
        self.history.append(step)
        print(first_folds_line(step, k, measured.base))
        if cut:
            kept = ("folds", "took_s", "rows", "estimate", "measured", "gain_measured")
            self.cut[run] = {key: step[key] for key in kept}
            self.cut[run]["planned_s"] = round(self.plan.run_seconds(name), 1)
            self.part_s[name] = first_s
        return cut

    def _measured_only(self, step: dict, measured: Measured, why: str) -> bool:
        """The check's line and record when nothing can be weighed (``why``): continued."""
        if measured.scored:
            step["measured"] = round(self.sign * measured.score, 4)
            step["gain_measured"] = round(self.sign * measured.gain, 4)
        self.history.append({**step, "decision": "continue"})
        print(measured_only_line(step, self.plan.k, measured.base, why))
        return False

    def _best(self, base: tuple, rest: dict, left_s: float) -> tuple[float, tuple[str, ...]]:
        """The best value reachable from ``base`` with ``rest`` in ``left_s``, and its runs."""
        plan = (
            best_subset(
                rest, self.epochs, self.plan.k, max(left_s, 0.0), self.auto, self.valued, base
            )
            if left_s > 0 or base
            else None
        )
        if plan is None:
            return (self.valued(base) if base else -np.inf), ()
        got = tuple(plan.costs)
        return (self.valued(base + got) if base + got else -np.inf), got

    def after(
        self, run: str, seconds: float, elapsed_s: float, measured: Measured | None = None
    ) -> tuple[dict, list[str]]:
        """Record that ``run`` took ``seconds`` (and, when it was assembled, what its OOF
        ``measured``); with ``elapsed_s`` of the budget spent (probes included), plan the rest
        again, rewrite ``plan.toml`` and return its ``{run: entry}`` for the runs still to
        train, in the order to train them, and the runs left out."""
        name = next(c for c in self.plan.costs if run_of(c) == run)
        if measured is not None and measured.scored and self.value is not None:
            if run not in self.cut:
                self._record(name, measured, self._base())
        self.done[name] = seconds
        pace = self._pace()
        rest = self._rest(pace)
        left_s = self.plan.budget_s - elapsed_s
        epochs, k, auto = self.epochs, self.plan.k, self.auto
        if self.value is not None and len(rest) <= MAX_SUBSETS_OF:
            new = best_subset(rest, epochs, k, left_s, auto, self.valued, self._base())
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
        base = self._base()
        self.plan = Plan(
            self.plan.budget_s,
            k,
            {**{c: self.plan.epochs[c] for c in base}, **new.epochs},
            epochs,
            {**{c: self.plan.costs[c] for c in base}, **new.costs},
        )
        kept = {run_of(c) for c in self.plan.costs}
        left_out = tuple(r for r in self.runs if r not in kept)
        valued = self.valued if self.value is not None else None
        weighed = yardstick(self.plan, self.costs, valued, self.sign, self.auto)
        write_plan(
            self.path, self.plan, self.device, left_out, self.costs, self.history, self.cut, weighed
        )
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
