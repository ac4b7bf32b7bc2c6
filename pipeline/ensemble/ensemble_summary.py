"""An ensemble for the trackers (``TRACK``), from the files ``make ensemble`` just wrote: the
TensorBoard run ``ensembles/<name>`` (under ``models/<comp>/``, beside the runs) gets every
method's in-sample and nested score, the chosen method, the per-class accuracy and the report's
figures; each member's run gets its nested score as an HParams metric. ``TRACK=mlflow`` logs
the same as an MLflow run of its own.

Each call rewrites what an earlier call with the same name wrote (its event files go first).
"""

from __future__ import annotations

import json
from pathlib import Path

import pandas as pd

from ..competition import Competition
from ..track.board import ENSEMBLES, Board
from ..track.mlflow_store import guarded_mlflow, mlflow_client, mlflow_experiment
from ..workspace import Workspace

FIGURES = ("per_class_accuracy", "confusion_matrix", "worst_mistakes", "label_issues")


def track_ensemble(comp: Competition, ws: Workspace, name: str, track: frozenset[str]) -> None:
    sdir = ws.submission_dir(name)
    summary = json.loads((sdir / "ensemble.json").read_text())
    board_dir = ws.runs_dir / ENSEMBLES / name
    table = pd.read_csv(sdir / "leaderboard.csv")
    per_class = _per_class(ws.report_dir(name))
    metric = comp.task.metric
    values: dict[str, float] = {}
    for row in table.to_dict("records"):
        values[f"leaderboard/{row['name']}/oof_{metric}"] = row["oof_score"]
        values[f"leaderboard/{row['name']}/nested_{metric}"] = row["nested_score"]
    values[f"chosen/nested_{metric}"] = summary["nested_score"]
    values[f"chosen/oof_{metric}"] = summary["oof_score"]
    if per_class is not None:
        values.update({f"per_class_accuracy/{c}": a for c, a in per_class.items()})
    shift = summary.get("label_shift") or {}
    if "total_variation" in shift:
        values["label_shift/total_variation"] = shift["total_variation"]
        values["label_shift/applied"] = float(shift["applied"])
        for key in ("moment_tv", "threshold", "shifted_gain", "unshifted_gain", "oracle_gain"):
            if key in shift.get("check", {}):
                values[f"label_shift/{key}"] = shift["check"][key]
    figures = [p for f in FIGURES if (p := ws.report_dir(name) / f"{f}.png").is_file()]
    chosen = (
        f"**{summary['method']}** ({summary.get('chosen_by', '')}): nested {metric} "
        f"{summary['nested_score']:.4f}, members {', '.join(m['run'] for m in summary['members'])}"
    )
    if "tensorboard" in track:
        with Board(board_dir, suffix=".ensemble", replace=True) as board:
            board.scalars(values, 0)
            board.text("chosen", chosen)
            board.text("leaderboard", _markdown(table))
            if "total_variation" in shift:
                board.text("label_shift", _shift_markdown(shift))
            for png in figures:
                board.image(f"report/{png.stem}", png)
        _member_metrics(ws, summary, table, metric, name)
    if "mlflow" in track:
        guarded_mlflow(_mlflow, comp, ws, name, summary, values, figures, sdir)


def _per_class(report_dir: Path) -> dict[str, float] | None:
    path = report_dir / "per_class.csv"
    if not path.is_file():
        return None
    df = pd.read_csv(path)
    if "accuracy" not in df or "class" not in df:
        return None
    return dict(zip(df["class"].astype(str), df["accuracy"].astype(float), strict=True))


def _markdown(table: pd.DataFrame) -> str:
    cols = [c for c in ("name", "kind", "oof_score", "nested_score") if c in table]
    head = "| " + " | ".join(cols) + " |\n|" + "---|" * len(cols)
    rows = [
        "| "
        + " | ".join(f"{r[c]:.4f}" if isinstance(r[c], float) else str(r[c]) for c in cols)
        + " |"
        for r in table.to_dict("records")
    ]
    return "\n".join([head, *rows])


def _member_metrics(ws: Workspace, summary: dict, table: pd.DataFrame, metric: str, name: str):
    """Each member run's nested score in this ensemble, as the HParams metric
    ``hparam/nested_<metric>`` of its TensorBoard run (one event file per ensemble name)."""
    nested = dict(zip(table["name"].astype(str), table["nested_score"], strict=True))
    for m in summary["members"]:
        run = m["run"]
        rdir = ws.run_dir(run)
        if run in nested and rdir.is_dir():
            with Board(rdir, suffix=f".{name}", replace=True) as board:
                board.scalars({f"hparam/nested_{metric}": nested[run]}, 0)


def _mlflow(comp, ws: Workspace, name: str, summary: dict, values: dict, figures, sdir: Path):
    from mlflow.entities import Metric, Param

    client = mlflow_client(ws.models)
    exp = mlflow_experiment(client, ws.models, comp.name)
    for r in client.search_runs([exp], f"tags.`pipeline.ensemble` = '{name}'"):
        client.delete_run(r.info.run_id)
    run = client.create_run(
        exp,
        run_name=f"ensemble/{name}",
        tags={"pipeline.ensemble": name, "pipeline.kind": "ensemble"},
    )
    rid = run.info.run_id
    params = {
        "method": summary["method"],
        "members": " ".join(m["run"] for m in summary["members"]),
        "metric": summary.get("metric", ""),
    }
    metrics = [
        Metric(_key(k), float(v), 0, 0) for k, v in values.items() if v is not None and v == v
    ]
    client.log_batch(
        rid, params=[Param(k, str(v)[:6000]) for k, v in params.items()], metrics=metrics
    )
    for path in [sdir / "leaderboard.csv", sdir / "ensemble.json", *figures]:
        client.log_artifact(rid, str(path))
    report = ws.report_dir(name) / "report.html"
    if report.is_file():
        client.log_artifact(rid, str(report))
    client.set_terminated(rid)


def _key(tag: str) -> str:
    """An MLflow metric name: letters, digits, ``_-. /`` only."""
    return "".join(ch if ch.isalnum() or ch in "_-. /" else "_" for ch in tag)


def _shift_markdown(shift: dict) -> str:
    """The label-shift decision, why, and the top movers with their intervals."""
    rows = [
        f"| {m['class']} | {m['train']:.3f} | {m['test']:.3f} | "
        f"{m.get('lo', float('nan')):.3f}-{m.get('hi', float('nan')):.3f} |"
        for m in shift.get("top_movers", [])
    ]
    head = "| class | train prior | test prior | 95 % |\n|---|---|---|---|"
    verdict = "applied" if shift["applied"] else "not applied"
    return "\n".join([f"**{verdict}** (PRIOR={shift['prior']}): {shift['why']}", "", head, *rows])
