"""The report stage: an ensemble's OOF predictions as CSVs, plots, contact sheets and one page.

``report_stage`` reads ``submissions/<comp>/<name>/oof_ensemble.npz`` (and ``leaderboard.csv``)
and writes into ``report/``: ``per_class.csv`` (metrics with bootstrap 95 % intervals, each
member's accuracy, the ensemble's gain), ``confused_pairs.csv``, ``worst_mistakes.csv``,
``label_issues.csv`` (cleanlab), ``per_class_accuracy.png``, ``confusion_matrix.png``,
``worst_mistakes.png``, ``label_issues.png`` and ``report.html`` (self-contained).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from .. import artifacts
from ..competition import Competition
from ..competition.task import Task, encode
from ..errors import ArtifactError
from ..util.figures import pyplot
from ..workspace import Workspace
from . import analyze
from .html import report_page
from .labels import write_label_report
from .plots import plot_accuracy, plot_confusion
from .sheets import contact_sheet
from .tables import N_PRINT, confused_pairs, per_class_table, print_worst


@dataclass(frozen=True)
class Predictions:
    """What a report is about: ``y (N,)`` true class indices, ``probs (N, C)`` of the ensemble,
    the ``classes``, row ``ids (N,)`` (default 0..N-1) and each member's ``(N,)`` argmax."""

    y: np.ndarray
    probs: np.ndarray
    classes: list[str]
    ids: np.ndarray | None = None
    member_preds: dict[str, np.ndarray] = field(default_factory=dict)
    task: Task | None = None  # the competition's metric is shown beside accuracy


def _write_sheets(
    out_dir: Path, mistakes: pd.DataFrame, issues: pd.DataFrame, paths: dict[str, Path], n: int
) -> None:
    """``worst_mistakes.png`` and ``label_issues.png``: the first ``n`` rows of each table."""
    sheets = (
        (
            "worst_mistakes.png",
            mistakes,
            "Most confident wrong OOF predictions",
            lambda r: (
                f"{r['id']}\ngiven {r['given_label']}\npred {r['predicted']} {r['confidence']:.2f}"
            ),
        ),
        (
            "label_issues.png",
            issues,
            "Label-issue candidates (cleanlab), most suspicious first",
            lambda r: (
                f"{r['id']}\ngiven {r['given_label']} {r['self_confidence']:.2f}"
                f"\nsuggest {r['suggested_label']}"
            ),
        ),
    )
    for fname, rows, title, caption in sheets:
        fig = contact_sheet(
            rows.head(n), paths, caption, f"{title} ({min(n, len(rows))} of {len(rows)})"
        )
        artifacts.savefig(out_dir / fname, fig)
        pyplot().close(fig)


def write_report(
    out_dir: Path,
    preds: Predictions,
    paths: dict[str, Path] | None = None,
    leaderboard: pd.DataFrame | None = None,
    top: int = 30,
    n_sheet: int = 40,
    label_shift: dict | None = None,
) -> dict[str, Any]:
    """Write the report of ``preds`` into ``out_dir``; return a summary.

    Member predictions add each member's per-class accuracy, the best member and the
    ensemble's gain; ``paths`` maps id -> image file for the contact sheets; ``leaderboard``
    (the ensemble's table) and ``label_shift`` (its record) are shown on the page; ``top``
    classes at most in the plots."""
    out_dir, classes = Path(out_dir), preds.classes
    y, probs = np.asarray(preds.y), np.asarray(preds.probs, dtype=np.float64)
    pred = probs.argmax(axis=1)
    ids = np.arange(len(y)) if preds.ids is None else np.asarray(preds.ids)
    ids = ids.astype(str)
    table = per_class_table(y, pred, classes, dict(preds.member_preds))
    pairs = confused_pairs(y, pred, classes)
    mistakes = analyze.worst_mistakes(ids, y, probs, classes, 200)
    issues = analyze.label_issues(ids, y, probs, classes)
    for fname, df in (
        ("per_class.csv", table),
        ("confused_pairs.csv", pairs),
        ("worst_mistakes.csv", mistakes),
        ("label_issues.csv", issues),
    ):
        artifacts.write_csv(out_dir / fname, df.drop(columns="row", errors="ignore"))
    for fname, fig in (
        ("per_class_accuracy.png", plot_accuracy(table, top)),
        ("confusion_matrix.png", plot_confusion(y, pred, classes, top)),
    ):
        artifacts.savefig(out_dir / fname, fig)
        pyplot().close(fig)
    _write_sheets(out_dir, mistakes, issues, paths or {}, n_sheet)
    task = preds.task or Task("multiclass", "label", "accuracy")
    summary = {
        "metric": task.metric,
        "score": task.score(y, probs),
        "accuracy": float((pred == y).mean()),
        "n": len(y),
        "n_classes": len(classes),
        "n_label_issues": len(issues),
        "worst_classes": table.head(N_PRINT)[["class", "support", "accuracy", "confused_with"]]
        .astype({"support": int, "accuracy": float})
        .to_dict(orient="records"),
    }
    page = report_page(out_dir, summary, table, pairs, mistakes, issues, leaderboard, label_shift)
    artifacts.atomic_write_bytes(out_dir / "report.html", page.encode("utf-8"))
    print_worst(table)
    print(
        f"{len(issues)} label-issue candidates -> {out_dir / 'label_issues.csv'}; report: "
        f"{out_dir / 'report.html'}"
    )
    return summary


def report_stage(comp: Competition, ws: Workspace, name: str = "ensemble") -> dict[str, Any]:
    """Build ``submissions/<comp>/<name>/report/`` from ``oof_ensemble.npz`` and the folds."""
    out = ws.submission_dir(name)
    path, rerun = out / "oof_ensemble.npz", f"make ensemble COMP={comp.root} NAME={name}"
    data = artifacts.read_npz(path, {"ids", "classes", "probs"}, rerun)
    folds = artifacts.read_folds(ws.folds_csv, comp.root, comp.task.kind)
    classes = [str(c) for c in data["classes"]]
    same_ids = np.array_equal(data["ids"].astype(str), folds["id"].to_numpy().astype(str))
    labels = (
        {t for x in folds["label"] for t in str(x).split()}
        if comp.task.multilabel
        else set(folds["label"])
    )
    if not same_ids or not labels <= set(classes):
        raise ArtifactError(
            f"{path} has {len(data['ids'])} ids / {len(classes)} classes that do not match "
            f"{ws.folds_csv}; re-run: {rerun}"
        )
    board = artifacts.read_leaderboard(out / "leaderboard.csv")
    if comp.task.multilabel:  # label sets: a per-label report, no confusion matrix
        y = encode(folds["label"], classes, "multilabel")
        probs = np.asarray(data["probs"], dtype=np.float64)
        summary = {"metric": comp.task.metric, "score": comp.task.score(y, probs)}
        return write_label_report(ws.report_dir(name), y, probs, classes, summary, board)
    members = {}
    if "member_preds" in data:
        members = dict(zip(data["members"].astype(str), data["member_preds"], strict=True))
    preds = Predictions(
        y=pd.Index(classes).get_indexer(folds["label"]),
        probs=data["probs"],
        classes=classes,
        ids=folds["id"].to_numpy(),
        member_preds=members,
        task=comp.task,
    )
    shift = None  # the ensemble's label-shift record, when ensemble.json has one
    if (out / "ensemble.json").is_file():
        shift = artifacts.read_json(out / "ensemble.json", rerun).get("label_shift")
    return write_report(ws.report_dir(name), preds, image_paths(comp), board, label_shift=shift)


def image_paths(comp: Competition) -> dict[str, Path]:
    """Train id -> image file, for the contact sheets."""
    return {
        str(i): comp.root / p for i, p in zip(comp.train["id"], comp.train["path"], strict=True)
    }
