"""The user CLI, ``python -m pipeline <verb>`` (the Makefile's targets call it): it parses and
dispatches, nothing else.

Every verb (``cli.verbs`` declares them and their flags) calls one stage function from its
``cmd_<verb>`` here; what a flag means lives with the stage (``train.request``;
``train.executors``, where each executor declares its own flags). Every verb that takes a
competition declares it and its workspace roots with ``workspace.add_workspace_args``, and
``workspace.default_comp`` resolves a left-out ``--comp``. Errors a user can fix print one
``error:`` line and exit with status 2. Imports are lazy so that ``--help`` and the torch-free
stages start fast. Developer tooling has its own entry point: ``python -m pipeline.tools``.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from ..config import split_words
from ..disk.space import disk_full, is_disk_full
from ..errors import PipelineError
from ..workspace import Workspace, add_workspace_args, default_comp

DESCRIPTION = (
    "Kaggle image classification: make download folds train ensemble submit SLUG=<slug> "
    "(or COMP=input/<name>)"
)


def open_competition(a, strict: bool = True):
    """The competition of ``--comp`` and the workspace of ``--models``/``--output``; prints
    what was detected (task, format, metric) first, except for a non-strict read (check)."""
    from ..competition import load_competition

    comp = load_competition(a.comp, strict=strict)
    if strict:
        print(comp.task.describe(str(comp.root)), flush=True)
        for note in comp.notes:
            print(note, flush=True)
    cache = Path(a.cache) if a.cache else None
    return comp, Workspace(comp.name, Path(a.models), Path(a.output), cache)


def resolve_comp(a) -> None:
    """``--comp`` left out: ``workspace.default_comp`` (``input/<slug>`` once the slug is checked,
    else make demo's competition)."""
    if getattr(a, "comp", "") is None:
        slug = getattr(a, "slug", "")
        if slug:
            from ..submit.download import check_slug

            check_slug(slug)
        a.comp = default_comp(None, slug)


def resolve_track(value: str | None) -> frozenset[str]:
    """TRACK's trackers; TRACK=mlflow without mlflow installed is refused before any work."""
    from ..track.board import resolve
    from ..track.mlflow_store import require_mlflow

    track = resolve(value)
    if "mlflow" in track:
        require_mlflow()
    return track


def cmd_download(a):
    from ..submit.download import download_stage

    download_stage(a.slug, Path(a.comp) if a.comp else None, workers=a.workers)


def cmd_check(a):
    from ..competition.check import check_stage

    check_stage(open_competition(a, strict=False)[0], workers=a.workers)


def cmd_folds(a):
    from ..folds import NEAR_DISTANCE, folds_stage

    comp, ws = open_competition(a)
    near = NEAR_DISTANCE if a.near_distance is None else a.near_distance
    folds_stage(comp, ws, k=a.k, seed=a.seed, groups=not a.no_groups, near_distance=near)


def cmd_train(a):
    from ..teach import student_targets
    from ..train import train_stage
    from ..train.executors import jobs_device
    from ..train.request import budget_epochs, parse_folds, train_runs

    comp, ws = open_competition(a)
    runs, overrides = train_runs(ws, a.runs, a.set, a.as_, a.recipes, jobs_device(a))
    dispatch = _dispatch(a)
    budget_s, auto_epochs = budget_epochs(a.budget, a.epochs)
    plan = {"budget_s": budget_s, "auto_epochs": auto_epochs}
    folds, teach = parse_folds(a.folds), student_targets(comp, ws, a.device)
    track = resolve_track(a.track)
    train_stage(
        comp, ws, runs, folds, overrides, a.device, dispatch, teach=teach, track=track, **plan
    )


def _dispatch(a):
    """The executor settings of ``train`` (``train.executors.dispatch_from_args``); with
    ``EXECUTOR=kaggle``, make package's Kaggle helpers handed in (train may not import them)."""
    from ..train.executors import dispatch_from_args

    dispatch = dispatch_from_args(a)
    if a.executor == "kaggle":
        from ..predict import kaggle_loop, shipping
        from ..submit import kaggle
        from ..train.executors import kaggle as executor

        executor.use(executor.Commands(kaggle, kaggle_loop, shipping))
    return dispatch


def cmd_curve(a):
    from ..config import parse_overrides
    from ..train.learning_curve import curve_stage

    fractions = tuple(float(f) for f in split_words(a.fractions))
    comp, ws = open_competition(a)
    curve_stage(comp, ws, a.run, fractions, a.fold, parse_overrides(a.set), a.device)


def cmd_ensemble(a):
    from ..config import select_runs
    from ..ensemble import ensemble_name, ensemble_stage

    comp, ws = open_competition(a)
    methods, track = split_words(a.methods) or None, resolve_track(a.track)
    words = split_words(a.runs)
    runs = select_runs(words, ws.trained_runs(), "the trained runs") if words else []
    a.name = ensemble_name(ws, a.name)
    ensemble_stage(comp, ws, runs, a.method, a.name, methods, a.dup_labels, a.prior)
    _chain_report(comp, ws, a.name, not a.no_report, track)


def _chain_report(comp, ws, name: str, report: bool, track: frozenset[str]) -> None:
    """What ``make ensemble`` runs after the stage: the report stage, which reads what the
    ensemble stage just wrote, then the tracking of both (the leaderboard, per-class accuracy
    and the report's figures)."""
    if report:
        from ..report import report_stage

        report_stage(comp, ws, name=name)
    if track:
        from ..ensemble.ensemble_summary import track_ensemble

        track_ensemble(comp, ws, name, track)


def cmd_report(a):
    from ..report import report_stage

    report_stage(*open_competition(a), name=a.name)


def cmd_submit(a):
    from ..submit import submit_stage

    return submit_stage(
        *open_competition(a), name=a.name, dry_run=a.dry_run, kernel=a.kernel, version=a.version
    )


def cmd_lb(a):
    from ..submit.ledger import lb_stage

    lb_stage(*open_competition(a))


def cmd_board(a):
    """TensorBoard on the competition's runs, folds and ensembles (127.0.0.1)."""
    from ..track.board import serve_tensorboard

    comp, ws = open_competition(a)
    serve_tensorboard(ws.runs_dir, a.port)


def cmd_mlflow(a):
    """The MLflow UI on the local store TRACK=mlflow writes under ``--models`` (127.0.0.1)."""
    from ..track.mlflow_store import serve_mlflow

    serve_mlflow(Path(a.models), a.port)


def cmd_predict(a):
    from ..predict.args import run_predict

    run_predict(a)


def cmd_package(a):
    from ..predict.package import package_stage

    comp = Path(a.comp)  # its public test images: what the notebook's output is checked on
    ws = Workspace(comp.name, Path(a.models), Path(a.output))
    settings = (a.precision, not a.no_gpu, a.time_limit, a.dry_run, a.max_bad)
    package_stage(ws, a.name, a.slug, a.owner, *settings, comp)


def cmd_weights(a):
    from ..model.pretrained import import_weights

    if a.source and len(a.names) != 1:
        raise PipelineError("weights --source converts one file: name one backbone with it")
    for name in a.names:
        import_weights(name, Path(a.out), Path(a.source) if a.source else None)


def cmd_demo_data(a):
    from ..competition.demo import write_digits

    write_digits(Path(a.out))


def build_parser() -> argparse.ArgumentParser:
    """Every verb of ``cli.verbs``, each calling ``cmd_<verb>`` of this module."""
    from .verbs import declare_verbs

    p = argparse.ArgumentParser(prog="python -m pipeline", description=DESCRIPTION)
    sub = p.add_subparsers(dest="cmd", required=True, metavar="verb")

    def verb(name: str, help_: str, comp: bool = True) -> argparse.ArgumentParser:
        s = sub.add_parser(name, help=help_, description=help_)
        s.set_defaults(fn=globals()[f"cmd_{name.replace('-', '_')}"])
        if comp:
            add_workspace_args(s)
        return s

    declare_verbs(verb)
    return p


def run(parser: argparse.ArgumentParser, argv: list[str] | None) -> int:
    """Parse ``argv``, call the verb; a ``PipelineError`` is one line and exit status 2."""
    args = parser.parse_args(argv)
    try:
        resolve_comp(args)
        return int(args.fn(args) or 0)
    except PipelineError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    except OSError as e:  # a full disk where no artifact write caught it (a library's own file)
        if not is_disk_full(e):
            raise
        print(f"error: {disk_full(e.filename or _models_root(args))}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("interrupted; re-run the same command to continue where it stopped", file=sys.stderr)
        return 130


def _models_root(args) -> str:
    """Where a stage writes (for a full disk that named no file): its ``MODELS`` folder."""
    return str(getattr(args, "models", None) or "models")


def main(argv: list[str] | None = None) -> int:
    return run(build_parser(), argv)
