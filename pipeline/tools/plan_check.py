"""How good was the plan? ``plan.toml``'s seconds and estimated value per run against what the
folds measured (a run cut after its first folds: what those measured), the planned set's
estimate against the ensemble's nested score, and the best single run the same minutes would
have trained."""

from __future__ import annotations

import json

import numpy as np

from .. import artifacts
from ..artifacts import read_run_config
from ..errors import PipelineError
from ..util.durations import format_duration
from ..workspace import Workspace


def _oof_score(comp, ws: Workspace, run: str) -> float | None:
    """The run's OOF score (its views' mean probabilities), or None before it is assembled."""
    path = ws.run_dir(run) / "oof.npz"
    if comp is None or not path.is_file():
        return None
    from ..competition.task import encode

    oof = artifacts.read_logits(path, "oof", f"make train RUNS={run}")
    folds = artifacts.read_folds(ws.folds_csv, comp.root, comp.task.kind).set_index("id")
    y = encode(folds.loc[oof["ids"].astype(str), "label"], comp.classes, comp.task.kind)
    probs = np.mean([comp.task.probabilities(lg) for lg in oof["logits"]], axis=0)
    return float(comp.task.score(y, probs))


def plan_check(ws: Workspace, comp=None) -> list[dict]:
    """Print and return, per planned run (and per run cut after its first folds), the planned
    and measured seconds and their ratio, the probe's estimate and the measured score (OOF; a
    cut run: its first folds'); then the whole train stage's seconds (probes included) against
    the last ``make train`` call, and the planned set's estimate and the best single run's in
    the same budget against the ensemble's nested score. ``comp``: scores the OOF files."""
    saved = read_run_config(ws.plan)
    if saved is None:
        raise PipelineError(f"{ws.plan} not found; make train BUDGET=<minutes>m writes it")
    rows, wall = [], 0.0
    cut = saved.get("cut", {})
    for run, entry in [*saved["runs"].items(), *cut.items()]:
        cfg = read_run_config(ws.run_dir(run) / "config.toml") or {}
        measured = cfg.get("wall", {}).get("folds_s")
        wall = max(wall, cfg.get("wall", {}).get("last_train_call_s", 0.0))
        score = entry["measured"] if run in cut else _oof_score(comp, ws, run)
        rows.append(
            {
                "run": run,
                "planned_s": entry["planned_s"],
                "measured_s": measured,
                "estimate": entry.get("estimate"),
                "score": score,
                "cut": run in cut,
            }
        )
    print(f"plan {ws.plan}: BUDGET={format_duration(saved['budget_s'])} on {saved['device']}")
    print(f"  {'run':<24}{'planned':>10}{'measured':>10}{'ratio':>8}{'est.':>9}{'score':>9}")
    for r in rows:
        m = r["measured_s"]
        got = f"{m:>9.0f}s{m / r['planned_s']:>8.2f}" if m else f"{'(not trained)':>18}"
        est = f"{r['estimate']:>9.4f}" if r["estimate"] is not None else f"{'-':>9}"
        score = f"{r['score']:>9.4f}" if r["score"] is not None else f"{'-':>9}"
        note = ""
        if r["cut"]:
            c = cut[r["run"]]
            note = f"  cut after {c['folds']} fold(s): score on their {c['rows']:,} held-out rows"
        print(f"  {r['run']:<24}{r['planned_s']:>9.0f}s{got}{est}{score}{note}")
    if wall:
        print(
            f"  {'train stage':<24}{saved['total_s']:>9.0f}s{wall:>9.0f}s"
            f"{wall / saved['total_s']:>8.2f}   (probes included; the last make train call)"
        )
    print("  measured = the folds' done.json seconds (a feature member's embedding included)")
    print("  est. = the probe's estimate; score = OOF under the metric (the views' mean)")
    _weighed(ws, saved)
    return rows


def _weighed(ws: Workspace, saved: dict) -> None:
    """The planned set's estimate, the ensemble's nested score, the best single run's estimate."""
    made = ws.submission_dir("ensemble") / "ensemble.json"
    nested = json.loads(made.read_text()).get("nested_score") if made.is_file() else None
    if "value" in saved:
        got = f"; the ensemble's nested score {nested:.4f}" if nested is not None else ""
        print(f"  the planned set's estimated blend: {saved['value']:.4f}{got}")
    if best := saved.get("best_single"):
        print(
            f"  the best single run in the same budget: {best['run']} alone at {best['epochs']} "
            f"epoch(s), {best['planned_s'] / 60:.1f} min, estimated {best['estimate']:.4f}"
        )
