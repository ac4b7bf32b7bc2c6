"""How good was the plan? ``plan.toml``'s seconds per run against what the folds measured."""

from __future__ import annotations

from ..artifacts import read_run_config
from ..errors import PipelineError
from ..util.durations import format_duration
from ..workspace import Workspace


def plan_check(ws: Workspace) -> list[dict]:
    """Print and return, per planned run, the planned and measured seconds and their ratio,
    then the whole train stage's (probes included) against the last ``make train`` call."""
    saved = read_run_config(ws.plan)
    if saved is None:
        raise PipelineError(f"{ws.plan} not found; make train BUDGET=<minutes>m writes it")
    rows, wall = [], 0.0
    for run, entry in saved["runs"].items():
        cfg = read_run_config(ws.run_dir(run) / "config.toml") or {}
        measured = cfg.get("wall", {}).get("folds_s")
        wall = max(wall, cfg.get("wall", {}).get("last_train_call_s", 0.0))
        rows.append({"run": run, "planned_s": entry["planned_s"], "measured_s": measured})
    print(f"plan {ws.plan}: BUDGET={format_duration(saved['budget_s'])} on {saved['device']}")
    print(f"  {'run':<24}{'planned':>10}{'measured':>10}{'ratio':>8}")
    for r in rows:
        m = r["measured_s"]
        got = f"{m:>9.0f}s{m / r['planned_s']:>8.2f}" if m else f"{'(not trained)':>18}"
        print(f"  {r['run']:<24}{r['planned_s']:>9.0f}s{got}")
    if wall:
        print(
            f"  {'train stage':<24}{saved['total_s']:>9.0f}s{wall:>9.0f}s"
            f"{wall / saved['total_s']:>8.2f}   (probes included; the last make train call)"
        )
    print("  measured = the folds' done.json seconds (a feature member's embedding included)")
    return rows
