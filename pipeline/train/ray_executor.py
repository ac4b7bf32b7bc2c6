"""``make train EXECUTOR=ray``: each (run, fold) a Ray Core task.

The driver connects to ``RAY_ADDRESS`` when it is set (an existing cluster), else starts a local
Ray instance with this machine's cores. A task asks for ``THREADS`` CPUs and, on CUDA, one GPU
(Ray sets ``CUDA_VISIBLE_DEVICES``); Ray re-runs a task whose worker dies (``RETRIES``), and the
fold resumes from its ``last.pt``. Artifacts are written in place, so every node must see the
same ``models/`` folder (a shared filesystem) and have the pipeline installed. ``ray`` is an
optional extra: ``pip install -e '.[ray]'``.
"""

from __future__ import annotations

import contextlib
import os
import time

from ..errors import PipelineError
from .jobs import FORWARDED_ENV, Failure, Job, Progress, TrainContext, run_job


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
    local = {} if address else {"num_cpus": max(threads, len(os.sched_getaffinity(0)))}
    ray.init(address=address, include_dashboard=False, log_to_driver=False, **local)


def run_ray(ctx: TrainContext, jobs: list[Job], threads: int, retries: int) -> list[Failure]:
    """Submit every job as a task and wait for them all; returns those that failed."""
    ray = ray_module()
    connect(ray, threads)
    gpus = 1 if ctx.device.startswith("cuda") else 0
    task = ray.remote(_task).options(
        num_cpus=threads, num_gpus=gpus, max_retries=retries, retry_exceptions=False
    )
    env = {k: os.environ[k] for k in FORWARDED_ENV if k in os.environ}
    shared = ray.put(ctx)
    progress = Progress(len(jobs), 0)
    pending = {}
    for job in jobs:
        ref = task.remote(shared, job, threads, "cuda" if gpus else None, env)
        pending[ref] = (job, time.time())
        progress.line(f"submitted {job.tag} ({threads} CPUs, {gpus} GPU); log {ctx.log(job)}")
    failures = []
    while pending:
        ready, _ = ray.wait(list(pending), num_returns=1)
        job, t0 = pending.pop(ready[0])
        try:
            ray.get(ready[0])
        except ray.exceptions.RayError as e:
            why = (str(e).strip().splitlines() or [type(e).__name__])[-1][:200]
            failures.append(Failure(job, f"{type(e).__name__}: {why}", ctx.log(job)))
            progress.failed(job, type(e).__name__, retries + 1, ctx.log(job))
            continue
        progress.finished(job, time.time() - t0, len(pending))
    return failures


def _task(ctx: TrainContext, job: Job, threads: int, device: str | None, env: dict) -> str:
    """One (run, fold) in a Ray worker (reused between tasks): ``env`` from the driver, output
    appended to the job's log, the worker's environment restored afterwards."""
    saved = {k: os.environ.get(k) for k in env}
    os.environ.update(env)
    log = ctx.log(job)
    log.parent.mkdir(parents=True, exist_ok=True)
    try:
        with open(log, "a", buffering=1) as f, contextlib.redirect_stdout(f):
            with contextlib.redirect_stderr(f):
                print(
                    f"== {job.tag}: Ray task, pid {os.getpid()}, {threads} threads, "
                    f"{device or ctx.device}, {time.strftime('%Y-%m-%d %H:%M:%S')} =="
                )
                run_job(ctx, job, threads, device)
    finally:
        for k, v in saved.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v
    return job.tag
