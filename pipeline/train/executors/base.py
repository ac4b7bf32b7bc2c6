"""What every executor shares: the one function a worker runs for a job (``run_job``), the
shared work done once before any job starts (``prepare_shared``), a failed job's record and the
progress lines. Every executor runs ``run_job`` on the same ``TrainContext`` with the torch
thread count set explicitly, so at equal ``THREADS`` the logits are bit-identical whatever the
executor. This module loads no torch at import: a worker sets its environment (GPU, threads)
before torch starts.
"""

from __future__ import annotations

import os
import time
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from ...disk import faults, locks
from ...errors import PipelineError
from ...util.machine import cores

if TYPE_CHECKING:
    from ..context import Job, TrainContext

# environment variables a worker gets from the driver (Ray workers do not inherit them)
FORWARDED_ENV = (
    "PIPELINE_KILL_AT",
    "PIPELINE_KILL_ONCE",
    "PIPELINE_KILL_GROUP",
    "PIPELINE_FAIL_AT",
    "PIPELINE_HOLD_AT",
    "PIPELINE_HOLD_DIR",
)


def default_threads(jobs: int) -> int:
    """Torch threads per job when ``THREADS`` is not given: the cores this process may use
    divided among ``jobs``, and no more than ``OMP_NUM_THREADS`` when that is set."""
    share = max(1, cores() // jobs)
    omp = os.environ.get("OMP_NUM_THREADS", "")
    return min(share, int(omp)) if omp.isdigit() and int(omp) > 0 else share


class FoldHeld(PipelineError):
    """Another live process holds the fold's lock: it is training that fold now."""


HELD_EXIT = 75  # a local worker's exit status when another process holds its fold
ERROR_EXIT = 2  # a local worker's exit status after a PipelineError (its line is in the log)


def run_job(ctx: TrainContext, job: Job, threads: int, device: str | None = None) -> None:
    """Train one (run, fold) in this process with ``threads`` torch threads (every executor's
    worker calls this); ``device`` overrides ``ctx.device`` (a worker that owns one GPU). The
    fold's lock is held throughout; ``FoldHeld`` when another process holds it. A fold that
    the other process finished while this one queued is skipped."""
    import torch

    lock = ctx.ws.run_dir(job.run) / f".fold{job.fold}.lock"
    held = locks.try_lock(lock, "make train")
    if held is None:
        raise FoldHeld(f"{job.tag} is being trained by {locks.owner(lock)}")
    with held:
        if ctx.done(job):
            print(f"{job.tag}: finished by another process meanwhile; skipped")
            return
        faults.hold_point(f"fold:{job.run}/fold{job.fold}")
        torch.set_num_threads(threads)
        fold_job = ctx.fold_job(job, torch.device(device or ctx.device))
        from ..kinds import get_kind

        get_kind(fold_job.recipe.kind).fit_fold(fold_job)


def prepare_shared(ctx: TrainContext, jobs: list[Job]) -> None:
    """Build the decode caches the jobs read (train and test, each image size once), then what
    each run's kind prepares once (``Kind.prepare``: a feature member's embeddings) before any
    job starts, so that parallel jobs never write the same cache."""
    import torch

    from ..cache import build_caches
    from ..kinds import get_kind

    comp = ctx.comp
    sizes = sorted({ctx.recipes[j.run].image_size for j in jobs})
    splits = {"train": comp.train["path"].tolist(), "test": comp.test["path"].tolist()}
    build_caches(comp.root, splits, sizes, ctx.ws.decode_cache)  # one decode for every size
    for run in dict.fromkeys(j.run for j in jobs):
        get_kind(ctx.recipes[run].kind).prepare(ctx, run, torch.device(ctx.device))


@dataclass(frozen=True)
class Failure:
    job: Job
    why: str  # "exit 1", "killed by SIGKILL", a Ray error's first line, the error's line
    log: Path | None
    held: bool = False  # not run: another process holds the fold (``why`` names it)


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


def log_tail(log: Path) -> list[str]:
    """The last lines (8 KB) of a job's log; none when it cannot be read."""
    try:
        with open(log, "rb") as f:
            f.seek(max(0, f.seek(0, 2) - 8192))
            return f.read().decode("utf-8", "replace").splitlines()
    except OSError:
        return []


def last_epoch(log: Path) -> str:
    """The last finished-epoch line of a job's log (``format_epoch``), or "starting"."""
    epochs = [t for t in log_tail(log) if " epoch " in t and " img/s" in t]
    return epochs[-1].split(" epoch ", 1)[1].strip() if epochs else "starting"


def _hms(secs: float) -> str:
    if secs != secs:  # nan: nothing finished yet
        return "?"
    m, s = divmod(int(secs), 60)
    h, m = divmod(m, 60)
    return f"{h}h{m:02d}m" if h else f"{m}m{s:02d}s" if m else f"{s}s"
