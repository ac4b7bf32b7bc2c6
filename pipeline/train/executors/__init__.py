"""The executors' registry: how ``make train`` runs its (run, fold) jobs.

Every executor is a module here with one signature, ``execute(ctx, jobs, dispatch) ->
failures``, and ``OPTIONS``, the settings that belong to it alone with their defaults (a
``Dispatch`` carries them in ``options``). Adding one is that module and one line below.

- ``inline``: in this process, one job after another (``JOBS=1``, the default);
- ``local``: ``JOBS`` spawned worker processes on this machine (``GPUS``);
- ``ray``: each job a Ray task on ``RAY_ADDRESS``'s cluster or a local Ray (``SHARED_FS``);
- ``kaggle``: batches of jobs in private Kaggle notebooks (``KAGGLE_SLOTS``, ``OWNER``, ``GPU``).
"""

from __future__ import annotations

import importlib
from dataclasses import dataclass, field
from types import ModuleType
from typing import Any

from ...errors import PipelineError
from ..context import Job, TrainContext
from .base import Failure, default_threads

# name -> module of this package
EXECUTORS: dict[str, str] = {
    "inline": "inline",
    "local": "local",
    "ray": "ray",
    "kaggle": "kaggle",
}


def executor_module(name: str) -> ModuleType:
    if name not in EXECUTORS:
        valid = ", ".join(n for n in EXECUTORS if n != "inline")
        raise PipelineError(f"EXECUTOR={name}: use one of {valid}")
    return importlib.import_module(f"{__name__}.{EXECUTORS[name]}")


@dataclass(frozen=True)
class Dispatch:
    """How to run the jobs: ``make train EXECUTOR= JOBS= THREADS= RETRIES=`` and the
    executor's own options (``GPUS=`` for local workers, ``SHARED_FS=`` for Ray)."""

    executor: str = "local"  # "local" with jobs 1 runs inline, in this process
    jobs: int = 1  # worker processes (local); 1 = in this process, one job after another
    threads: int | None = None  # torch threads per job; None: default_threads(jobs)
    retries: int = 1  # a job that dies is run again this many times (resuming from last.pt)
    options: dict[str, Any] = field(default_factory=dict)  # the executor's OPTIONS

    def __post_init__(self) -> None:
        if self.jobs < 1 or (self.threads is not None and self.threads < 1) or self.retries < 0:
            raise PipelineError(
                f"JOBS={self.jobs} THREADS={self.threads} RETRIES={self.retries}: "
                "JOBS and THREADS must be >= 1, RETRIES >= 0"
            )
        own = executor_module(self.name).OPTIONS
        if bad := [k for k in self.options if k not in own]:
            have = ", ".join(k.upper() for k in own) or "none"
            raise PipelineError(
                f"{bad[0].upper()} is not an option of EXECUTOR={self.executor}"
                f"{' JOBS=1' if self.name == 'inline' else ''} (its options: {have}); "
                "drop it or choose the executor it belongs to"
            )

    @property
    def name(self) -> str:
        """The executor that runs the jobs: ``local`` with one job runs them inline."""
        return "inline" if self.executor == "local" and self.jobs == 1 else self.executor

    def option(self, key: str) -> Any:
        return self.options.get(key, executor_module(self.name).OPTIONS[key])

    def job_threads(self) -> int:
        return self.threads or default_threads(self.jobs)


def execute(ctx: TrainContext, jobs: list[Job], d: Dispatch) -> list[Failure]:
    """Run ``jobs`` with the executor ``d`` names; returns the jobs that failed every attempt."""
    if not jobs:
        return []
    return executor_module(d.name).execute(ctx, jobs, d)


def why_refused(d: Dispatch, what: str) -> str:
    """Why the executor cannot run a job that needs ``what`` (``"workspace"``: files the
    driver wrote before dispatch, as a student's teacher targets), or ""."""
    check = getattr(executor_module(d.name), "refuses", None)
    return check(d, what) if check else ""
