"""One round of the train stage: a run's folds trained (a fresh run's first folds first, then
the value check of ``planning/first_fold.py``), its all-rows model and assembly, and the
re-plan after it. ``stage.py`` drives the rounds.
"""

from __future__ import annotations

import time

from .assemble import assemble_run
from .context import Job, TrainContext
from .executors import Dispatch, execute
from .kinds import get_kind
from .planning.first_fold import measure
from .planning.resolve import record_wall
from .run_summary import track_run


def train_round(ctx, jobs: list[Job], k: int, d, replanner, clocks) -> tuple[list, int, bool]:
    """Train a round's ``jobs``; with a ``replanner``, a fresh run's first folds first and the
    rest only when the value check keeps the run (``check_first_folds``). Returns the failed
    jobs, how many jobs ran and whether the run was cut."""
    first = first_folds(jobs, k, d) if replanner else []
    if first:
        failed, cut = check_first_folds(ctx, replanner, first, d, clocks)
        if cut or failed:
            return failed, len(first), cut
        rest = [j for j in jobs if j not in first]
        return (execute(ctx, rest, d) if rest else []), len(jobs), False
    return (execute(ctx, jobs, d) if jobs else []), len(jobs), False


def finish_run(ctx, run: str, k: int, dev, cut: bool, plan, stage_s: float) -> None:
    """After a run's round: its all-rows model and its assembly (a cut run keeps its finished
    folds, unassembled), its measured seconds beside its plan, its summary to the trackers."""
    scores = None
    if not cut:
        fit_all_rows(ctx, run, k, dev)
        scores = assemble_run(ctx.ws.run_dir(run), ctx.folds_df, ctx.comp, ctx.fhash, k, run)
    record_wall(ctx.ws.run_dir(run), stage_s)
    if scores is not None and ctx.track:
        track_run(ctx, run, scores, plan)


def replan_after(ctx, replanner, run: str, cut: bool, clocks) -> tuple[dict, list[str]]:
    """``Replanner.after`` the round of ``run``, with its OOF measured when it was assembled."""
    whole = None
    if not cut and (ctx.ws.run_dir(run) / "oof.npz").is_file():
        k = int(ctx.folds_df["fold"].max()) + 1
        whole = measure(ctx, run, list(range(k)), replanner.trained())
    (t_batch, t_start), now = clocks, time.perf_counter()
    return replanner.after(run, now - t_batch, now - t_start, whole)


def check_first_folds(ctx, replanner, first: list[Job], d, clocks) -> tuple[list, bool]:
    """Train a fresh run's ``first`` folds, then ask the re-planner whether the rest pays
    (``Replanner.first_folds``, on their held-out rows): the failed jobs, and True when the
    run is cut."""
    failed = execute(ctx, first, d)
    if failed:
        return failed, False
    run, (t_batch, t_start), now = first[0].run, clocks, time.perf_counter()
    folds = [j.fold for j in first]
    got = measure(ctx, run, folds, replanner.trained())
    return [], replanner.first_folds(run, len(folds), now - t_batch, got, now - t_start)


def first_folds(jobs: list[Job], k: int, d: Dispatch) -> list[Job]:
    """The jobs to train before the value check of a fresh run (one round: as many folds as
    the executor runs at once): none when the run has a finished fold already (a resumed
    run was checked when it started) or when they would be all its folds."""
    if len(jobs) < k:
        return []
    first = jobs[: max(1, d.jobs)]
    return first if len(first) < len(jobs) else []


def fit_all_rows(ctx: TrainContext, run: str, k: int, dev) -> None:
    """Once every fold of ``run`` is done, its kind's all-rows model (``Kind.fit_all_rows``)."""
    if run in ctx.recipes and all(
        (ctx.ws.fold_dir(run, f) / "done.json").is_file() for f in range(k)
    ):
        if line := get_kind(ctx.recipes[run].kind).fit_all_rows(ctx, run, dev):
            print(line)
