"""What ``EXECUTOR=kaggle`` does with a notebook's pulled output: a finished fold verified
(``done.json``, ``best.pt``'s sha256, the logits' shapes, ids, classes and views) and written
where a local run writes it (``ray.write_back``: atomically, ``done.json`` last); a half-done
fold's ``last.pt`` kept as the local resume state. Every refusal names the file."""

from __future__ import annotations

import json
from pathlib import Path
from typing import TYPE_CHECKING

from ... import artifacts
from ...errors import ArtifactError
from . import kaggle_files as files
from .ray import write_back

if TYPE_CHECKING:
    from ..context import Job, TrainContext


def read_status(pulled: Path | None) -> dict:
    """``status.json`` of a pulled output: how each job of the notebook ended ({} if none)."""
    try:
        return json.loads((pulled / files.STATUS).read_text()) if pulled else {}
    except (OSError, ValueError):
        return {}


def install(ctx: TrainContext, job: Job, got: Path | None) -> None:
    """Verify a pulled finished fold (``verify``), then write its files where a local run
    writes them, ``done.json`` last, and append its log to the job's log."""
    fdir = got / f"fold{job.fold}"
    verify(ctx, job, fdir)
    found = {p.name: p.read_bytes() for p in fdir.iterdir() if p.is_file() and p.name != "last.pt"}
    log = got / "logs" / f"fold{job.fold}.log"
    write_back(ctx, job, {"files": found, "log": log.read_text() if log.is_file() else ""})


def verify(ctx: TrainContext, job: Job, fdir: Path) -> None:
    """A pulled fold is what its notebook wrote: ``done.json`` readable, ``best.pt``'s sha256
    the one it records, ``oof.npz``/``test.npz`` of the fold's held-out and test ids, the
    competition's classes and the recipe's views. Each failure names the file."""
    import numpy as np

    from ...model.checkpoint import read_checkpoint

    rerun = "re-run make train EXECUTOR=kaggle: the fold trains again in a notebook"
    done = artifacts.read_done(fdir / "done.json", rerun)
    if done.best_sha256 or (fdir / "best.pt").exists():
        read_checkpoint(fdir / "best.pt", "cpu", rerun, done.best_sha256)
    fold_job = ctx.fold_job(job, "cpu")
    ids = ctx.comp.train["id"].to_numpy()
    classes, views = np.array(ctx.comp.classes), list(ctx.recipes[job.run].tta)
    for name, want in (("oof", ids[fold_job.held_out]), ("test", ctx.comp.test["id"].to_numpy())):
        path = fdir / f"{name}.npz"
        data = artifacts.read_logits(path, name, rerun)
        artifacts.check_logits_match(data, path, want, classes, rerun, ctx.fhash)
        if data["views"].astype(str).tolist() != views:
            raise ArtifactError(f"{path} has views {data['views'].tolist()}, not {views}; {rerun}")


def keep_partial(ctx: TrainContext, job: Job, got: Path | None) -> bool:
    """A stopped notebook's half-done fold, when its ``last.pt`` came back readable: its files
    written into the local fold folder (the resume state a local run would have too)."""
    from ...model.checkpoint import read_checkpoint

    fdir = got / f"fold{job.fold}" if got else None
    if fdir is None or not (fdir / "last.pt").is_file():
        return (ctx.ws.fold_dir(job.run, job.fold) / "last.pt").is_file()
    try:
        read_checkpoint(fdir / "last.pt", "cpu", "")
    except ArtifactError:  # a half-written pull: restart the fold instead
        return False
    dst = ctx.ws.fold_dir(job.run, job.fold)
    for f in sorted(p for p in fdir.iterdir() if p.is_file() and p.name != "done.json"):
        artifacts.atomic_write_bytes(dst / f.name, f.read_bytes())
    return True
