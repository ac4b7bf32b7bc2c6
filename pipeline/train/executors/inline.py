"""``JOBS=1``: every job in this process, one after another; an error stops the stage (and a
re-run resumes the fold it stopped in)."""

from __future__ import annotations

from typing import TYPE_CHECKING

from .base import Failure, run_job

if TYPE_CHECKING:
    from ..context import Job, TrainContext
    from . import Dispatch

OPTIONS: dict = {}


def execute(ctx: TrainContext, jobs: list[Job], d: Dispatch) -> list[Failure]:
    threads = d.job_threads()
    for job in jobs:
        run_job(ctx, job, threads)
    return []
