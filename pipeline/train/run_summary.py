"""A trained run's summary for the trackers (``TRACK``): when all its folds are assembled, the
TensorBoard run ``<run>`` gets the OOF score per TTA view, the wall time, the plan against the
measured seconds, and the recipe as HParams with the OOF score as their metric (the ensemble
stage adds the nested score later). ``TRACK=mlflow`` logs the same to an MLflow run of the run,
its folds as child runs with their epochs (``metrics.csv``) and curves.

Written again whole on each assembling call: the run's earlier summary files go first, so a
re-run neither doubles nor keeps a stale value.
"""

from __future__ import annotations

import pandas as pd

from .. import artifacts
from ..track.board import Board
from ..track.mlflow_store import guarded_mlflow, mlflow_client, mlflow_experiment
from .context import TrainContext
from .fold import epoch_scalars

SUMMARY_SUFFIX = ".run"  # events.out.tfevents.*.run: the run summary's own event files


def track_run(ctx: TrainContext, run: str, scores: dict[str, float], plan: dict | None) -> None:
    """The run's summary to TensorBoard (and MLflow with ``TRACK=mlflow``)."""
    rdir, metric = ctx.ws.run_dir(run), ctx.comp.task.metric
    recipe = ctx.recipes[run]
    k = int(ctx.folds_df["fold"].max()) + 1
    dones = [artifacts.read_done(rdir / f"fold{f}" / "done.json", "make train") for f in range(k)]
    seconds = sum(d.seconds for d in dones)
    values = {f"oof/{metric}/{view}": v for view, v in scores.items()}
    values["time/train_s"] = seconds
    if plan:
        values["time/planned_s"] = plan.get("planned_s")
        if plan.get("planned_s"):
            values["time/measured_over_planned"] = seconds / plan["planned_s"]
    best = max(scores.values()) if ctx.comp.task.greater_is_better else min(scores.values())
    params = {"run": run, **recipe.to_dict()}
    if "tensorboard" in ctx.track:
        with Board(rdir, suffix=SUMMARY_SUFFIX, replace=True) as board:
            board.scalars(values, 0)
            board.hparams(params, {f"hparam/oof_{metric}": best})
            board.text("recipe", _table(params))
        with Board(ctx.ws.runs_dir, suffix=".experiment", replace=True) as root:
            root.experiment(
                compared(ctx, params), [f"hparam/oof_{metric}", f"hparam/nested_{metric}"]
            )
    if "mlflow" in ctx.track:
        guarded_mlflow(_mlflow_run, ctx, run, params, values, best, dones)


ALWAYS = ("kind", "backbone", "image_size", "epochs")  # HParams columns even when all agree


def compared(ctx: TrainContext, params: dict) -> dict:
    """The HParams the dashboard shows: ``ALWAYS`` and every recipe field on which the
    competition's trained runs (their ``config.toml``) differ; each run's session keeps all."""
    recipes = [params]
    for path in sorted(ctx.ws.runs_dir.glob("*/config.toml")):
        cfg = artifacts.read_run_config(path) or {}
        if "recipe" in cfg:
            recipes.append({"run": cfg.get("run", path.parent.name), **cfg["recipe"]})
    differ = {k for k in params if len({repr(r.get(k)) for r in recipes}) > 1}
    keep = [*ALWAYS, *sorted(differ - set(ALWAYS))]
    return {k: params[k] for k in keep if k in params}


def _table(params: dict) -> str:
    rows = "\n".join(f"| {k} | {v} |" for k, v in params.items())
    return f"| field | value |\n|---|---|\n{rows}"


def _mlflow_run(ctx: TrainContext, run: str, params: dict, values: dict, best, dones) -> None:
    """One MLflow run per trained run (tag ``pipeline.run``), its folds as child runs with every
    epoch of ``metrics.csv``; an earlier MLflow run of the same run is replaced, not doubled."""
    from mlflow.entities import Metric, Param

    models, metric, rdir = ctx.ws.models, ctx.comp.task.metric, ctx.ws.run_dir(run)
    client = mlflow_client(models)
    exp = mlflow_experiment(client, models, ctx.comp.name)
    old = client.search_runs([exp], f"tags.`pipeline.run` = '{run}'")
    for r in old:  # children and the parent of an earlier assembling call
        client.delete_run(r.info.run_id)
    parent = client.create_run(
        exp, run_name=run, tags={"pipeline.run": run, "pipeline.kind": "run"}
    )
    pid = parent.info.run_id
    client.log_batch(
        pid,
        params=[Param(k, str(v)[:6000]) for k, v in params.items()],
        metrics=[
            Metric(k.replace("/", "_"), float(v), 0, 0)
            for k, v in {**values, f"oof_{metric}": best}.items()
            if v is not None
        ],
    )
    for f, done in enumerate(dones):
        fdir = rdir / f"fold{f}"
        child = client.create_run(
            exp,
            run_name=f"{run}/fold{f}",
            tags={"pipeline.run": run, "pipeline.fold": str(f), "mlflow.parentRunId": pid},
        )
        cid = child.info.run_id
        metrics = pd.read_csv(fdir / "metrics.csv")
        rows = []
        for i, row in enumerate(metrics.to_dict("records")):
            step = int(row.get("epoch", i + 1))
            for tag, v in epoch_scalars(row, metric).items():
                if pd.notna(v):
                    rows.append(Metric(tag.replace("/", "_"), float(v), 0, step))
        rows.append(Metric("seconds", float(done.seconds), 0, 0))
        client.log_batch(cid, metrics=rows)
        if (fdir / "curves.png").is_file():
            client.log_artifact(cid, str(fdir / "curves.png"))
        client.set_terminated(cid)
    client.set_terminated(pid)
