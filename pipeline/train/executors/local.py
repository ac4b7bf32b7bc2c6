"""``JOBS=N``: ``N`` worker processes on this machine take the (run, fold) jobs from a queue.

Each worker is spawned (one per attempt) with its own GPU (``GPUS``, round-robin) and thread
count set before torch starts, its output to the job's log; a worker that exits non-zero or is
killed is re-queued (``RETRIES`` times; the fold resumes from ``last.pt``), then reported with
its log. The shared caches are built by the driver before any worker starts.
"""

from __future__ import annotations

import multiprocessing
import os
import signal
import sys
import time
from collections import deque
from dataclasses import dataclass
from multiprocessing.connection import wait
from typing import TYPE_CHECKING

from ...config import split_words
from ...errors import PipelineError
from .base import (
    ERROR_EXIT,
    HELD_EXIT,
    Failure,
    FoldHeld,
    Progress,
    log_tail,
    prepare_shared,
    run_job,
)

if TYPE_CHECKING:
    from ..context import Job, TrainContext
    from . import Dispatch

OPTIONS = {
    "gpus": None,  # GPU ids the workers own (GPUS=0,1); None: every visible one
    "progress_s": 60.0,  # a line per running job this often
}
# make train's flags of this executor (argparse keywords), read back by ``options``
FLAGS = {"--gpus": {"default": "", "help": "GPU ids for the workers, e.g. 0,1 (default all)"}}


def options(a) -> dict:
    """The OPTIONS its flags give (``GPUS=0,1``); a word that is not a number: ValueError."""
    gpus = tuple(int(g) for g in split_words(a.gpus))
    return {"gpus": gpus} if gpus else {}


def execute(ctx: TrainContext, jobs: list[Job], d: Dispatch) -> list[Failure]:
    prepare_shared(ctx, jobs)
    return run_local(ctx, jobs, d, d.job_threads())


@dataclass
class _Running:
    job: Job
    proc: multiprocessing.process.BaseProcess
    slot: int
    attempt: int
    t0: float


def gpu_slots(ctx: TrainContext, d: Dispatch) -> list[int | None]:
    """The GPU each worker slot owns (``GPUS``, default every visible one, round-robin when
    ``JOBS`` exceeds them), or None per slot on CPU."""
    if not ctx.device.startswith("cuda"):
        return [None] * d.jobs
    gpus = d.option("gpus")
    if gpus is None:
        import torch

        gpus = tuple(range(torch.cuda.device_count()))
    if not gpus:
        raise PipelineError("DEVICE is CUDA but no GPU is visible; set GPUS=0,1 or DEVICE=cpu")
    return [gpus[i % len(gpus)] for i in range(d.jobs)]


def run_local(ctx: TrainContext, jobs: list[Job], d: Dispatch, threads: int) -> list[Failure]:
    """``d.jobs`` worker processes (spawned, one per attempt) take jobs from a queue; a worker
    that exits non-zero or is killed is re-queued (``d.retries`` times; it resumes from
    ``last.pt``), then reported with its log. The other jobs go on."""
    mp = multiprocessing.get_context("spawn")
    slots = gpu_slots(ctx, d)
    queue, free = deque(jobs), list(range(d.jobs))
    running: dict[int, _Running] = {}
    attempts: dict[Job, int] = {}
    failures: list[Failure] = []
    progress = Progress(len(jobs), d.option("progress_s"))
    try:
        while queue or running:
            while queue and free:
                job, slot = queue.popleft(), free.pop(0)
                attempts[job] = attempts.get(job, 0) + 1
                gpu = slots[slot]
                log = ctx.log(job)
                log.parent.mkdir(parents=True, exist_ok=True)
                args = (ctx, job, threads, gpu, str(log), attempts[job])
                proc = mp.Process(target=_worker, args=args, name=f"pipeline {job.tag}")
                proc.start()
                running[proc.sentinel] = _Running(job, proc, slot, attempts[job], time.time())
                where = f"GPU {gpu}" if gpu is not None else ctx.device
                progress.line(
                    f"start {job.tag} (attempt {attempts[job]}, {threads} threads, {where}); "
                    f"log {log}"
                )
            ready = wait(list(running), timeout=d.option("progress_s"))
            if not ready:
                progress.heartbeat(ctx, [(r.job, r.t0) for r in running.values()])
            for sentinel in ready:
                r = running.pop(sentinel)
                r.proc.join()
                free.append(r.slot)
                why = exit_reason(r.proc.exitcode)
                if r.proc.exitcode == 0 and ctx.done(r.job):
                    progress.finished(r.job, time.time() - r.t0, len(running))
                elif r.proc.exitcode == HELD_EXIT:  # another process trains it: not retried
                    line = error_line(ctx.log(r.job)) or f"{r.job.tag} is held by another process"
                    failures.append(Failure(r.job, line, ctx.log(r.job), held=True))
                    progress.line(f"skipped: {line}")
                elif r.proc.exitcode == ERROR_EXIT:  # a user-fixable error: retrying repeats it
                    line = error_line(ctx.log(r.job)) or why
                    failures.append(Failure(r.job, line, ctx.log(r.job)))
                    progress.failed(r.job, line, attempts[r.job], ctx.log(r.job))
                elif attempts[r.job] <= d.retries:
                    progress.line(f"{r.job.tag} died ({why}); retrying, see {ctx.log(r.job)}")
                    queue.appendleft(r.job)
                else:
                    failures.append(Failure(r.job, why, ctx.log(r.job)))
                    progress.failed(r.job, why, attempts[r.job], ctx.log(r.job))
    finally:  # Ctrl-C or an error here: take the workers down with us
        for r in running.values():
            r.proc.kill()
            r.proc.join()
    return failures


def visible_device(gpu: int, env) -> str:
    """``CUDA_VISIBLE_DEVICES`` for a worker that owns GPU ``gpu`` as the driver's torch numbers
    it: the ``gpu``-th entry of the driver's own ``CUDA_VISIBLE_DEVICES`` when that is set."""
    ids = [v.strip() for v in env.get("CUDA_VISIBLE_DEVICES", "").split(",") if v.strip()]
    if not ids:
        return str(gpu)
    if gpu >= len(ids):
        raise PipelineError(f"GPUS has {gpu} but CUDA_VISIBLE_DEVICES={','.join(ids)}")
    return ids[gpu]


def exit_reason(code: int | None) -> str:
    if code is not None and code < 0:
        try:
            return f"killed by {signal.Signals(-code).name}"
        except ValueError:
            return f"killed by signal {-code}"
    return f"exit {code}"


def _worker(ctx: TrainContext, job: Job, threads: int, gpu: int | None, log: str, attempt: int):
    """A spawned worker: own GPU and thread count set before torch starts, output to ``log``."""
    if gpu is not None:
        os.environ["CUDA_VISIBLE_DEVICES"] = visible_device(gpu, os.environ)
    os.environ["OMP_NUM_THREADS"] = str(threads)
    fd = os.open(log, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o666)
    os.dup2(fd, 1)
    os.dup2(fd, 2)
    os.close(fd)
    sys.stdout.reconfigure(line_buffering=True)
    sys.stderr.reconfigure(line_buffering=True)
    print(
        f"== {job.tag}: attempt {attempt}, pid {os.getpid()}, {threads} threads, "
        f"{'GPU ' + str(gpu) if gpu is not None else ctx.device}, "
        f"{time.strftime('%Y-%m-%d %H:%M:%S')} =="
    )
    try:
        run_job(ctx, job, threads, "cuda" if gpu is not None else None)
    except FoldHeld as e:
        print(f"held: {e}", flush=True)
        sys.exit(HELD_EXIT)
    except PipelineError as e:
        print(f"error: {e}", flush=True)
        sys.exit(ERROR_EXIT)


def error_line(log) -> str:
    """The worker's own last ``error:``/``held:`` line in its log, without the prefix."""
    lines = [t.split(": ", 1)[1] for t in log_tail(log) if t.startswith(("error: ", "held: "))]
    return lines[-1] if lines else ""
