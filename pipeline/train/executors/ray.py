"""``make train EXECUTOR=ray``: each (run, fold) a Ray Core task.

The driver connects to ``RAY_ADDRESS`` when it is set (an existing cluster), else starts a local
Ray instance with this machine's cores. A task asks for ``THREADS`` CPUs and, on CUDA, one GPU
(Ray sets ``CUDA_VISIBLE_DEVICES``); Ray re-runs a task whose worker dies (``RETRIES``), and the
fold resumes from its ``last.pt``. By default artifacts are written in place, so every node must
see the same ``models/`` folder (a shared filesystem); with ``shared_fs`` False (``SHARED_FS=0``)
a task trains in a scratch folder on its node and returns the fold's files, which the driver
writes atomically (``done.json`` last); a retried task then restarts its fold. Either way every
node needs the pipeline installed and the competition folder at the same path. ``ray`` is an
optional extra: ``pip install -e '.[ray]'``.
"""

from __future__ import annotations

import contextlib
import dataclasses
import fcntl
import hashlib
import os
import tempfile
import time
from pathlib import Path
from typing import TYPE_CHECKING

from ... import artifacts
from ...errors import PipelineError
from ...util.machine import cores
from ...workspace import Workspace
from .base import FORWARDED_ENV, Failure, FoldHeld, Progress, prepare_shared, run_job

if TYPE_CHECKING:
    from ..context import Job, TrainContext
    from . import Dispatch

PROGRESS_S = 60.0  # seconds between the lines on jobs still running or queued
OPTIONS = {
    "shared_fs": True,  # SHARED_FS: every node sees models/; False: tasks return the fold's files
}
# make train's flags of this executor (argparse keywords), read back by ``options``
FLAGS = {
    "--no-shared-fs": {
        "action": "store_true",
        "help": "Ray: tasks train in node scratch and return the fold's files to this driver",
    }
}


def options(a) -> dict:
    """The OPTIONS its flags give (``SHARED_FS=0``)."""
    return {"shared_fs": False} if a.no_shared_fs else {}


def execute(ctx: TrainContext, jobs: list[Job], d: Dispatch) -> list[Failure]:
    shared_fs = d.option("shared_fs")
    if shared_fs:  # else each node builds its own, in its scratch cache
        prepare_shared(ctx, jobs)
    return run_ray(ctx, jobs, d.job_threads(), d.retries, shared_fs)


def refuses(d: Dispatch, what: str) -> str:
    """A task without the shared filesystem sees none of the driver's files."""
    if what == "workspace" and not d.option("shared_fs"):
        return (
            "SHARED_FS=0 tasks cannot see; train it with SHARED_FS=1 (a folder every node "
            "mounts) or EXECUTOR=local"
        )
    return ""


def ray_module():
    try:
        import ray
    except ImportError:
        raise PipelineError(
            "EXECUTOR=ray needs Ray: pip install -e '.[ray]' (or use JOBS=<n> on one machine)"
        ) from None
    return ray


def connect(ray, threads: int) -> None:
    """Join ``RAY_ADDRESS``'s cluster, or start a local instance; reuse one already started."""
    if ray.is_initialized():
        return
    address = os.environ.get("RAY_ADDRESS") or None
    local = {} if address else {"num_cpus": max(threads, cores())}
    ray.init(address=address, include_dashboard=False, log_to_driver=False, **local)


def run_ray(
    ctx: TrainContext, jobs: list[Job], threads: int, retries: int, shared_fs: bool = True
) -> list[Failure]:
    """Submit every job as a task and wait for them all; returns those that failed."""
    ray = ray_module()
    connect(ray, threads)
    gpus = 1 if ctx.device.startswith("cuda") else 0
    task = ray.remote(_task).options(
        num_cpus=threads, num_gpus=gpus, max_retries=retries, retry_exceptions=False
    )
    env = {k: os.environ[k] for k in FORWARDED_ENV if k in os.environ}
    shared = ray.put(ctx)
    progress = Progress(len(jobs), PROGRESS_S)
    pending = {}
    for job in jobs:
        ref = task.remote(shared, job, threads, "cuda" if gpus else None, env, shared_fs)
        pending[ref] = (job, time.time())
        progress.line(f"submitted {job.tag} ({threads} CPUs, {gpus} GPU); log {ctx.log(job)}")
    failures = []
    while pending:
        ready, _ = ray.wait(list(pending), num_returns=1, timeout=PROGRESS_S)
        if not ready:  # a line per job not yet done: its last epoch, from its log
            progress.heartbeat(ctx, list(pending.values()) if shared_fs else [])
            continue
        job, t0 = pending.pop(ready[0])
        try:
            result = ray.get(ready[0])
        except ray.exceptions.RayError as e:
            why = (str(e).strip().splitlines() or [type(e).__name__])[-1][:200]
            failures.append(Failure(job, f"{type(e).__name__}: {why}", ctx.log(job)))
            progress.failed(job, type(e).__name__, retries + 1, ctx.log(job))
            continue
        if result is not None and "held" in result:  # another process trains it
            failures.append(Failure(job, result["held"], ctx.log(job), held=True))
            progress.line(f"skipped: {result['held']}")
            continue
        if result is not None:  # no shared filesystem: the fold's files came back
            write_back(ctx, job, result)
        progress.finished(job, time.time() - t0, len(pending))
    return failures


def write_back(ctx: TrainContext, job: Job, result: dict) -> None:
    """Write a fold's returned files atomically into its folder, ``done.json`` last; append the
    task's console output to the job's log."""
    fdir = ctx.ws.fold_dir(job.run, job.fold)
    files = result["files"]
    for name in sorted(files, key=lambda n: n == "done.json"):
        artifacts.atomic_write_bytes(fdir / name, files[name])
    (fdir / "last.pt").unlink(missing_ok=True)  # from an earlier, shared-filesystem attempt
    log = ctx.log(job)
    log.parent.mkdir(parents=True, exist_ok=True)
    with open(log, "a") as f:
        f.write(result["log"])


def _task(
    ctx: TrainContext, job: Job, threads: int, device: str | None, env: dict, shared_fs: bool
) -> dict | None:
    """One (run, fold) in a Ray worker (reused between tasks): ``env`` from the driver, the
    worker's environment restored afterwards. With a shared filesystem the fold is written in
    place and its output appended to the job's log; without, see ``_train_in_scratch``."""
    saved = {k: os.environ.get(k) for k in env}
    os.environ.update(env)
    try:
        if not shared_fs:
            return _train_in_scratch(ctx, job, threads, device)
        _logged(ctx.log(job), ctx, job, threads, device)
        return None
    except FoldHeld as e:
        return {"held": str(e)}
    finally:
        for k, v in saved.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v


def _logged(log: Path, ctx: TrainContext, job: Job, threads: int, device: str | None) -> None:
    """``run_job`` with its output appended to ``log``."""
    log.parent.mkdir(parents=True, exist_ok=True)
    with open(log, "a", buffering=1) as f, contextlib.redirect_stdout(f):
        with contextlib.redirect_stderr(f):
            print(
                f"== {job.tag}: Ray task, pid {os.getpid()}, {threads} threads, "
                f"{device or ctx.device}, {time.strftime('%Y-%m-%d %H:%M:%S')} =="
            )
            run_job(ctx, job, threads, device)


def _train_in_scratch(ctx: TrainContext, job: Job, threads: int, device: str | None) -> dict:
    """Train the fold from scratch in a temporary folder on this node (decode caches in a
    node-local folder, built under a lock), then return its files (not ``last.pt``) and log."""
    where = hashlib.sha256(str(Path(ctx.comp.root).resolve()).encode()).hexdigest()[:12]
    cache = Path(tempfile.gettempdir()) / "pipeline-cache" / f"{ctx.comp.name}-{where}"
    cache.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix="pipeline-job-") as scratch:
        ws = Workspace(ctx.comp.name, Path(scratch) / "models", Path(scratch), cache)
        local = dataclasses.replace(ctx, ws=ws)
        with open(cache / ".lock", "w") as lock:  # one builder per node and cache folder
            fcntl.flock(lock, fcntl.LOCK_EX)
            prepare_shared(local, [job])
        log = Path(scratch) / "job.log"
        _logged(log, local, job, threads, device)
        fdir = ws.fold_dir(job.run, job.fold)
        files = {p.name: p.read_bytes() for p in fdir.iterdir() if p.is_file()}
        files.pop("last.pt", None)
        return {"files": files, "log": log.read_text()}
