"""Whole-train overhead: a real ``python -m pipeline train`` of one fold against the model's bare
speed, i.e. how close the pipeline gets to "images processed / bare images per second".

Images processed by one fold of E epochs with V TTA views: training rows x E at the bare
forward+backward speed (b), plus the predictions at the bare predict speed per view: the
validation rows once per epoch (1 view), then OOF rows and test rows under V views. The real run
is a subprocess in a scratch folder (the folds file and recipe copied, the decode cache and the
pretrained weights linked), so its wall time includes Python and torch start-up, model creation,
weight loading, checkpoints, metrics, plots and every artifact write: all of ``make train``.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from .. import artifacts
from ..config import Recipe
from ..errors import PipelineError
from ..workspace import Workspace


def _scratch(ws: Workspace, run: str, tmp: Workspace) -> None:
    """Folds file and recipe copied; decode cache and pretrained weights linked, not rebuilt."""
    tmp.folds_dir.mkdir(parents=True)
    shutil.copy(ws.folds_csv, tmp.folds_csv)
    tmp.runs_dir.mkdir(parents=True)
    shutil.copy(ws.recipe(run), tmp.recipe(run))
    ws.cache.mkdir(parents=True, exist_ok=True)
    tmp.cache.symlink_to(ws.cache.resolve())
    if (Path(ws.models) / "pretrained").is_dir():  # recipes name models/pretrained/<file>
        (Path(tmp.models) / "pretrained").symlink_to((Path(ws.models) / "pretrained").resolve())


def whole_train(
    comp,
    run: str,
    recipe: Recipe,
    bench: dict,
    fold: int = 0,
    sets: str = "",
    ws: Workspace | None = None,
    track: str | None = None,
) -> dict:
    """Time one real fold; compare with the ideal from ``bench`` (``bench_stage``'s result).
    ``track``: the timed train's TRACK (default: the train's own default)."""
    ws = ws or Workspace(comp.name)
    folds = artifacts.read_folds(ws.folds_csv, comp.root)
    n_val = int((folds["fold"] == fold).sum())
    n_train, n_test, views = len(folds) - n_val, len(comp.test), len(recipe.tta)
    epochs = recipe.epochs
    per_view_ips = bench["bare_predict_ips"] * views  # bench's d counts images, all views each
    ideal_train = n_train * epochs / bench["bare_train_ips"]
    ideal_predict = (n_val * epochs + (n_val + n_test) * views) / per_view_ips
    with tempfile.TemporaryDirectory(prefix="bench_whole_") as d:
        tmp = Path(d)
        _scratch(ws, run, Workspace.under(tmp, comp.name))
        cmd = [
            sys.executable,
            "-m",
            "pipeline",
            "train",
            "--comp",
            str(Path(comp.root).resolve()),
            "--runs",
            run,
            "--folds",
            str(fold),
            "--set",
            sets,
            "--device",
            bench["device"],
            *(["--track", track] if track else []),
        ]
        env = {**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[2])}
        t0 = time.perf_counter()
        proc = subprocess.run(cmd, cwd=tmp, env=env, capture_output=True, text=True)
        wall = time.perf_counter() - t0
    if proc.returncode != 0:
        tail = (proc.stderr or proc.stdout).strip().splitlines()[-1:]
        raise PipelineError(f"bench: the timed train failed: {' '.join(tail)}")
    ideal = ideal_train + ideal_predict
    res = {
        "fold": fold,
        "epochs": epochs,
        "n_train": n_train,
        "n_val": n_val,
        "n_test": n_test,
        "views": views,
        "ideal_train_s": ideal_train,
        "ideal_predict_s": ideal_predict,
        "ideal_s": ideal,
        "wall_s": wall,
        "whole_ratio": wall / ideal,
    }
    print(
        f"whole train, fold {fold} ({epochs} epochs, {n_train} train / {n_val} val / {n_test} test "
        f"images, {views} views): wall {wall:.1f} s; ideal {ideal:.0f} s = train "
        f"{ideal_train:.0f} s at {bench['bare_train_ips']:.0f} img/s + predict "
        f"{ideal_predict:.0f} s at {per_view_ips:.0f} img-views/s; wall/ideal = "
        f"{res['whole_ratio']:.2f} (target <= 1.15)"
    )
    return res
