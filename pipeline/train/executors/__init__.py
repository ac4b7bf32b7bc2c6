"""The executors' registry: how ``make train`` runs its (run, fold) jobs.

Every executor is a module here with one signature, ``execute(ctx, jobs, dispatch) ->
failures``, and ``OPTIONS``, the settings that belong to it alone with their defaults (a
``Dispatch`` carries them in ``options``); one with flags of its own declares them (``FLAGS``,
argparse keywords) and reads them back (``options(args)``). Adding one is that module and one
line below.

- ``inline``: in this process, one job after another (``JOBS=1``, the default);
- ``local``: ``JOBS`` spawned worker processes on this machine (``GPUS``);
- ``ray``: each job a Ray task on ``RAY_ADDRESS``'s cluster or a local Ray (``SHARED_FS``);
- ``kaggle``: batches of jobs in private Kaggle notebooks (``KAGGLE_SLOTS``, ``OWNER``, ``GPU``).
"""

from __future__ import annotations

import importlib
from dataclasses import dataclass, field
from types import ModuleType
from typing import TYPE_CHECKING, Any

from ...errors import PipelineError
from .base import Failure, default_threads

if TYPE_CHECKING:
    import argparse

    from ..context import Job, TrainContext

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


def add_dispatch_args(s: argparse.ArgumentParser) -> None:
    """``make train``'s ``EXECUTOR JOBS THREADS RETRIES``, then every executor's own flags."""
    s.add_argument("--executor", default="local", help="local (this machine), ray or kaggle")
    s.add_argument("--jobs", type=int, default=1, help="local worker processes (1: in-process)")
    s.add_argument("--threads", default="", help="torch threads per job (default cores / jobs)")
    s.add_argument("--retries", type=int, default=1, help="re-runs of a job that dies")
    for name in EXECUTORS:
        for flag, kwargs in getattr(executor_module(name), "FLAGS", {}).items():
            s.add_argument(flag, **kwargs)


def dispatch_from_args(a: argparse.Namespace) -> Dispatch:
    """The ``Dispatch`` of ``add_dispatch_args``' flags: the executor options given only, each
    executor reading its own (``options(args)``)."""
    try:
        hooks = [getattr(executor_module(n), "options", None) for n in EXECUTORS]
        options = {k: v for read in hooks if read for k, v in read(a).items()}
        threads = int(a.threads) if str(a.threads).strip() else None
    except ValueError:
        raise PipelineError(
            f"GPUS={a.gpus!r} THREADS={a.threads!r}: use GPUS=0,1 and THREADS=<n>"
        ) from None
    return Dispatch(a.executor, a.jobs, threads, a.retries, options)


def jobs_device(a: argparse.Namespace) -> str:
    """The device the jobs train on (``RECIPES=auto`` picks its set by it): the executor's own
    where it has one (a Kaggle notebook's GPU), else ``DEVICE``."""
    own = (
        getattr(executor_module(a.executor), "jobs_device", None)
        if a.executor in EXECUTORS
        else None
    )
    return (own and own(a)) or a.device


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
