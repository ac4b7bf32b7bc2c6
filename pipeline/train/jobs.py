"""(run, fold) jobs and the executors that run them: in this process one after another
(``JOBS=1``), in ``JOBS`` worker processes on this machine, or as Ray tasks (``ray_executor.py``).

Every executor runs the same function, ``run_job``, on the same ``TrainContext`` (the competition,
folds and recipes resolved once by the driver), with the torch thread count set explicitly, so at
equal ``THREADS`` the logits are bit-identical whatever the executor. Shared work (the decode
caches) is done once by the driver before any job starts (``prepare_shared``). This module loads
no torch at import: a worker sets its environment (GPU, threads) before torch starts.
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
from pathlib import Path

import pandas as pd

from ..competition import Competition
from ..config import Recipe
from ..errors import PipelineError
from ..layout import Workspace

EXECUTORS = ("local", "ray")
# environment variables a worker gets from the driver (Ray workers do not inherit them)
FORWARDED_ENV = ("PIPELINE_KILL_AT", "PIPELINE_KILL_ONCE")


@dataclass(frozen=True)
class Job:
    """One (run, fold) to train."""

    run: str
    fold: int

    @property
    def tag(self) -> str:
        return f"{self.run} fold {self.fold}"


@dataclass(frozen=True)
class TrainContext:
    """What every job of one ``make train`` shares, resolved once by the driver: a worker
    receives it whole (pickled) and never re-reads a recipe or the folds file."""

    comp: Competition
    ws: Workspace
    folds_df: pd.DataFrame  # the folds file with a ``row`` column (see assemble.train_rows)
    fhash: str
    recipes: dict[str, Recipe]
    device: str  # "cpu", "cuda", "cuda:1"; a worker that owns one GPU sees it as "cuda"

    def done(self, job: Job) -> bool:
        return (self.ws.fold_dir(job.run, job.fold) / "done.json").is_file()

    def log(self, job: Job) -> Path:
        return self.ws.job_log(job.run, job.fold)


@dataclass(frozen=True)
class Dispatch:
    """How to run the jobs: ``make train EXECUTOR= JOBS= THREADS= GPUS= RETRIES=``."""

    executor: str = "local"
    jobs: int = 1  # worker processes (local); 1 = in this process, one job after another
    threads: int | None = None  # torch threads per job; None: default_threads(jobs)
    gpus: tuple[int, ...] | None = None  # GPU ids for the local workers; None: all visible
    retries: int = 1  # a job that dies is run again this many times (resuming from last.pt)
    progress_s: float = 60.0  # a line per running job this often
    shared_fs: bool = True  # Ray: nodes share models/; False: tasks return the fold's files

    def __post_init__(self) -> None:
        if self.executor not in EXECUTORS:
            raise PipelineError(f"EXECUTOR={self.executor}: use one of {', '.join(EXECUTORS)}")
        if self.jobs < 1 or (self.threads is not None and self.threads < 1) or self.retries < 0:
            raise PipelineError(
                f"JOBS={self.jobs} THREADS={self.threads} RETRIES={self.retries}: "
                "JOBS and THREADS must be >= 1, RETRIES >= 0"
            )

    def job_threads(self) -> int:
        return self.threads or default_threads(self.jobs)


def default_threads(jobs: int) -> int:
    """Torch threads per job when ``THREADS`` is not given: the cores this process may use
    divided among ``jobs``, and no more than ``OMP_NUM_THREADS`` when that is set."""
    share = max(1, len(os.sched_getaffinity(0)) // jobs)
    omp = os.environ.get("OMP_NUM_THREADS", "")
    return min(share, int(omp)) if omp.isdigit() and int(omp) > 0 else share


def run_job(ctx: TrainContext, job: Job, threads: int, device: str | None = None) -> None:
    """Train one (run, fold) in this process with ``threads`` torch threads (every executor's
    worker calls this); ``device`` overrides ``ctx.device`` (a worker that owns one GPU)."""
    import torch

    from .features import train_features_fold
    from .fold import train_fold

    torch.set_num_threads(threads)
    dev = torch.device(device or ctx.device)
    recipe = ctx.recipes[job.run]
    fit = train_features_fold if recipe.kind == "features" else train_fold
    fit(ctx.comp, ctx.ws, ctx.folds_df, ctx.fhash, job.run, recipe, job.fold, dev)


def prepare_shared(ctx: TrainContext, jobs: list[Job]) -> None:
    """Build the decode caches the jobs read (train and test, each image size once) and the
    feature members' embeddings before any job starts, so that parallel jobs never write the
    same cache."""
    import torch

    from .data import build_cache
    from .features import embeddings

    comp = ctx.comp
    for size in sorted({ctx.recipes[j.run].image_size for j in jobs}):
        for split, frame in (("train", comp.train), ("test", comp.test)):
            build_cache(comp.root, frame["path"].tolist(), size, ctx.ws.decode_cache(split, size))
    for run in dict.fromkeys(j.run for j in jobs):
        if ctx.recipes[run].kind == "features":
            for split in ("train", "test"):
                embeddings(comp, ctx.ws, ctx.recipes[run], split, torch.device(ctx.device))


@dataclass(frozen=True)
class Failure:
    job: Job
    why: str  # "exit 1", "killed by SIGKILL", a Ray error's first line
    log: Path


def run_sequential(ctx: TrainContext, jobs: list[Job], threads: int) -> list[Failure]:
    """Today's loop: each job in this process, one after another; an error stops the stage."""
    for job in jobs:
        run_job(ctx, job, threads)
    return []


# ------------------------------------------------------------------------------ local queue
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
    gpus = d.gpus
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
    progress = Progress(len(jobs), d.progress_s)
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
            ready = wait(list(running), timeout=d.progress_s)
            if not ready:
                progress.heartbeat(ctx, [(r.job, r.t0) for r in running.values()])
            for sentinel in ready:
                r = running.pop(sentinel)
                r.proc.join()
                free.append(r.slot)
                why = exit_reason(r.proc.exitcode)
                if r.proc.exitcode == 0 and ctx.done(r.job):
                    progress.finished(r.job, time.time() - r.t0, len(running))
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
    run_job(ctx, job, threads, "cuda" if gpu is not None else None)


# ------------------------------------------------------------------------------ progress
class Progress:
    """One line per job event, each finished job with the total done and an ETA."""

    def __init__(self, total: int, every_s: float) -> None:
        self.total, self.every_s = total, every_s
        self.ended, self.t0 = 0, time.time()

    def line(self, text: str) -> None:
        print(f"[train {time.strftime('%H:%M:%S')}] {text}", flush=True)

    def finished(self, job: Job, secs: float, running: int) -> None:
        self.ended += 1
        self.line(f"done {job.tag} in {_hms(secs)}; {self.summary(running)}")

    def failed(self, job: Job, why: str, attempts: int, log: Path) -> None:
        self.ended += 1
        self.line(f"FAILED {job.tag} ({why}) after {attempts} attempt(s); log {log}")

    def summary(self, running: int) -> str:
        elapsed = time.time() - self.t0
        left = self.total - self.ended
        eta = elapsed / self.ended * left if self.ended else float("nan")
        return (
            f"{self.ended}/{self.total} jobs ended, {running} running, elapsed {_hms(elapsed)}, "
            f"ETA {_hms(eta) if left else '0s'}"
        )

    def heartbeat(self, ctx: TrainContext, running: list[tuple[Job, float]]) -> None:
        for job, t0 in running:
            self.line(f"{job.tag}: {last_epoch(ctx.log(job))} (running {_hms(time.time() - t0)})")


def last_epoch(log: Path) -> str:
    """The last finished-epoch line of a job's log (``format_epoch``), or "starting"."""
    try:
        with open(log, "rb") as f:
            f.seek(max(0, f.seek(0, 2) - 8192))
            tail = f.read().decode("utf-8", "replace").splitlines()
    except OSError:
        return "starting"
    epochs = [t for t in tail if " epoch " in t and " img/s" in t]
    return epochs[-1].split(" epoch ", 1)[1].strip() if epochs else "starting"


def _hms(secs: float) -> str:
    if secs != secs:  # nan: nothing finished yet
        return "?"
    m, s = divmod(int(secs), 60)
    h, m = divmod(m, 60)
    return f"{h}h{m:02d}m" if h else f"{m}m{s:02d}s" if m else f"{s}s"
