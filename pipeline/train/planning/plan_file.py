"""``plan.toml``: the plan written once beside the models (``write_plan``), read back by re-runs,
resumes and every executor (``read_plan``), and the epochs it fixed for each run
(``planned_epochs``, ``plan_entries``).
"""

from __future__ import annotations

import time
from dataclasses import asdict
from pathlib import Path

from ... import artifacts
from ...config import to_toml
from ...errors import PipelineError
from ...util.durations import format_duration
from .plan import Plan, run_of


def write_plan(
    path: Path,
    plan: Plan,
    device: str,
    left_out: tuple[str, ...] = (),
    costs: dict | None = None,
    replans: list[dict] | None = None,
    cut: dict[str, dict] | None = None,
    weighed: dict | None = None,
) -> None:
    """``plan.toml``; ``costs`` (every probed run) adds the left-out runs' smallest seconds and
    probe figures under ``[left_out_costs]``, so a user sees what a larger budget would buy;
    ``replans`` is what each re-plan after a trained run (and each check after a run's first
    folds) measured and changed; ``cut`` the runs such a check stopped (also left out, so a
    resumed call does not train them), with what their first folds measured; ``weighed`` the
    set's estimated value and the best single run's in the same minutes (``plan.yardstick``).
    A run planned with its first TTA view only (``run[view]``) is written under its run with
    ``tta``, which the train stage then trains it with."""
    runs = {
        run_of(r): {
            **({"tta": [r.split("[", 1)[1].rstrip("]")]} if r != run_of(r) else {}),
            "kind": c.kind,
            "epochs": plan.epochs[r],
            "recipe_epochs": plan.recipe_epochs[r],
            "planned_s": round(plan.run_seconds(r), 1),
            **{k: round(v, 3) for k, v in asdict(c).items() if isinstance(v, float)},
            **{k: round(v, 2) for k, v in c.figures.items()},
            **({"estimate": round(c.estimate.score, 4)} if c.estimate is not None else {}),
        }
        for r, c in plan.costs.items()
    }
    meta = {
        "budget_s": plan.budget_s,
        "k": plan.k,
        "device": device,
        "total_s": round(plan.total_s, 1),
        "left_out": list(left_out),
        "created": time.strftime("%Y-%m-%d %H:%M:%S"),
        **({"replans": replans} if replans else {}),
        **({"cut": cut} if cut else {}),
        **(weighed or {}),
        "runs": runs,
    }
    if left_out and costs:
        meta["left_out_costs"] = {
            r: {
                "smallest_s": round(costs[r].seconds(1, plan.k), 1),
                **{k: round(v, 2) for k, v in costs[r].figures.items()},
                **(
                    {"estimate": round(costs[r].estimate.score, 4)}
                    if costs[r].estimate is not None
                    else {}
                ),
            }
            for r in left_out
        }
    artifacts.atomic_write_text(path, to_toml(meta))


def read_plan(path: Path) -> dict | None:
    return artifacts.read_run_config(path)


def planned_epochs(saved: dict, path: Path, runs: list[str], budget_s: float | None) -> dict:
    """The epochs a written plan fixed; refuses a different budget or a run it does not cover."""
    if budget_s is not None and abs(saved["budget_s"] - budget_s) > 0.5:
        raise PipelineError(
            f"{path} was planned for BUDGET={format_duration(saved['budget_s'])}, not "
            f"{format_duration(budget_s)}; delete it to plan again (trained folds keep their epochs)"
        )
    missing = [r for r in runs if r not in saved["runs"] and r not in saved.get("left_out", [])]
    if budget_s is not None and missing:
        raise PipelineError(
            f"{path} does not plan run {missing[0]!r}; delete it to plan again with these RUNS"
        )
    return {r: int(saved["runs"][r]["epochs"]) for r in runs if r in saved["runs"]}


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
