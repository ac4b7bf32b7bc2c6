"""``JOBS=1``: every job in this process, one after another; an error stops the stage (and a
re-run resumes the fold it stopped in)."""

from __future__ import annotations

from typing import TYPE_CHECKING

from .base import Failure, FoldHeld, run_job

if TYPE_CHECKING:
    from ..context import Job, TrainContext
    from . import Dispatch

OPTIONS: dict = {}


def execute(ctx: TrainContext, jobs: list[Job], d: Dispatch) -> list[Failure]:
    threads, held = d.job_threads(), []
    for job in jobs:
        try:
            run_job(ctx, job, threads)
        except FoldHeld as e:  # another process trains it: the others go on
            print(f"skipped: {e}", flush=True)
            held.append(Failure(job, str(e), None, held=True))
    return held
