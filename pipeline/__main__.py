"""Thin CLI: ``python -m pipeline <stage> ...``; each subcommand calls one library function."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from .errors import PipelineError


def _split(text: str) -> list[str]:
    return [t for t in text.replace(",", " ").split() if t]


def _folds(text: str) -> list[int] | None:
    try:
        return [int(t) for t in _split(text)] or None
    except ValueError:
        raise PipelineError(f"FOLDS={text!r}: use fold numbers like FOLDS=0,1") from None


def cmd_check(a):
    from .check import check_stage
    from .competition import load_competition

    check_stage(load_competition(a.comp, strict=False), workers=a.workers)


def cmd_folds(a):
    from .competition import load_competition
    from .duplicates import NEAR_DISTANCE
    from .folds import folds_stage

    folds_stage(
        load_competition(a.comp),
        k=a.k,
        seed=a.seed,
        groups=not a.no_groups,
        near_distance=NEAR_DISTANCE if a.near_distance is None else a.near_distance,
    )


def cmd_train(a):
    from .competition import load_competition
    from .config import parse_overrides
    from .train import train_stage

    runs = _split(a.runs)
    if not runs:
        raise PipelineError("no recipes to train: put one in models/<run>.toml or pass RUNS=<run>")
    train_stage(load_competition(a.comp), runs, _folds(a.folds), parse_overrides(a.set), a.device)


def cmd_ensemble(a):
    from .competition import load_competition
    from .ensemble import ensemble_stage

    ensemble_stage(
        load_competition(a.comp),
        _split(a.runs),
        method=a.method,
        name=a.name,
        methods=_split(a.methods) or None,
        dup_labels=a.dup_labels,
    )


def cmd_report(a):
    from .competition import load_competition
    from .report import report_stage

    report_stage(load_competition(a.comp), name=a.name)


def cmd_submit(a):
    from .competition import load_competition
    from .submit import submit_stage

    comp = load_competition(a.comp)
    return submit_stage(comp, Path("submissions") / comp.name / a.name, dry_run=a.dry_run)


def cmd_weights(a):
    from .weights import import_weights

    import_weights(a.name, Path(a.out), Path(a.source) if a.source else None)


def cmd_bench(a):
    from .bench import bench_stage
    from .competition import load_competition
    from .config import load_recipe, parse_overrides
    from .train import resolve_device

    recipe = load_recipe(Path("models") / f"{a.run}.toml", parse_overrides(a.set))
    comp = load_competition(a.comp)
    res = bench_stage(comp, recipe, resolve_device(a.device), batches=a.batches)
    if a.whole:
        from .bench_whole import whole_train

        whole_train(comp, a.run, recipe, res, fold=a.fold, sets=a.set)


def cmd_bench_ensemble(a):
    from .bench_ensemble import bench_ensemble

    bench_ensemble(a.members, a.rows, a.classes)


def cmd_demo_data(a):
    from .demo import write_digits

    write_digits(Path(a.out))


def cmd_soak(a):
    from .soak import soak_stage

    comp = Path(a.comp) if a.comp else None
    work = Path(a.work) if a.work else None
    return soak_stage(comp, _split(a.runs), a.times, a.k, a.seed, a.set, a.device, work)


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m pipeline", description=__doc__)
    sub = p.add_subparsers(dest="cmd", required=True)

    def stage(name, fn, help_):
        s = sub.add_parser(name, help=help_)
        s.set_defaults(fn=fn)
        if name not in ("demo-data", "weights", "bench-ensemble"):
            s.add_argument("--comp", required=True, help="competition folder, e.g. input/leaves")
        return s

    _data_stages(stage)
    _model_stages(stage)
    _tool_stages(stage, sub)
    return p


def _data_stages(stage) -> None:
    """check, folds."""
    s = stage("check", cmd_check, "validate the CSVs and decode every image; list all problems")
    s.add_argument("--workers", type=int, default=2, help="decoding threads")
    s = stage("folds", cmd_folds, "write folds/<comp>.csv and folds/<comp>.duplicates.csv")
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
        help="max phash Hamming distance (of 64 bits) of near duplicates; -1: exact only "
        "(default: duplicates.NEAR_DISTANCE)",
    )


def _model_stages(stage) -> None:
    """train, ensemble, report, submit."""
    s = stage("train", cmd_train, "train every (run, fold) not yet done")
    s.add_argument(
        "--runs", default="", help="recipe names from models/<run>.toml, comma/space separated"
    )
    s.add_argument("--folds", default="", help="subset of folds, e.g. 0,1 (default: all)")
    s.add_argument("--set", default="", help='recipe overrides, e.g. "epochs=1 image_size=32"')
    s.add_argument("--device", default="auto", help="auto, cpu, cuda, cuda:1")
    s = stage("ensemble", cmd_ensemble, "fit ensembles on OOF logits, write submission.csv")
    s.add_argument("--runs", default="", help="members (default: every trained run)")
    s.add_argument(
        "--method",
        default="auto",
        help="auto (best nested accuracy), soft, hard, logit, geo, rank, temp, weighted, "
        "accuracy, caruana, stack",
    )
    s.add_argument("--name", default="ensemble")
    s.add_argument("--methods", default="", help="methods to try (default all): 'soft caruana'")
    s.add_argument(
        "--dup-labels",
        action="store_true",
        help="test images that duplicate train images of one label get that label",
    )
    s = stage("report", cmd_report, "per-class report of an ensemble")
    s.add_argument("--name", default="ensemble")
    s = stage("submit", cmd_submit, "validate submission.csv and send it to Kaggle")
    s.add_argument("--name", default="ensemble")
    s.add_argument("--dry-run", action="store_true", help="print the kaggle command, send nothing")


def _tool_stages(stage, sub) -> None:
    """bench, bench-ensemble, weights, demo-data, soak."""
    s = stage("bench", cmd_bench, "images/s of loader, bare model, real loop, and prediction")
    s.add_argument("--run", required=True, help="recipe name from models/<run>.toml")
    s.add_argument("--set", default="", help="recipe overrides")
    s.add_argument("--device", default="auto")
    s.add_argument("--batches", type=int, default=20, help="timed batches per figure")
    s.add_argument("--whole", action="store_true", help="also time a real train of one fold")
    s.add_argument("--fold", type=int, default=0, help="the fold --whole trains")
    s = stage("bench-ensemble", cmd_bench_ensemble, "seconds per ensemble method, synthetic logits")
    s.add_argument("--members", type=int, default=20)
    s.add_argument("--rows", type=int, default=18353)
    s.add_argument("--classes", type=int, default=176)
    s = stage("weights", cmd_weights, "import offline pretrained weights: weights import <name>")
    s.add_argument("action", choices=["import"])
    s.add_argument("name", help="efficientnet_lite0, efficientnet_lite1 or efficientnet_lite2")
    s.add_argument("--out", default="models/pretrained")
    s.add_argument("--source", default="", help="a .pth to convert instead of the PyPI package's")
    s = stage("demo-data", cmd_demo_data, "write the embedded digits competition")
    s.add_argument("--out", default="input/digits")
    s = sub.add_parser("soak", help="kill train at random moments; resume; compare")
    s.set_defaults(fn=cmd_soak)
    s.add_argument("--comp", default="", help="competition folder (default: the built-in digits)")
    s.add_argument("--runs", default="", help="recipes in models/ (default: a tiny built-in one)")
    s.add_argument("--times", type=int, default=20, help="experiments, each in a fresh folder")
    s.add_argument("--k", type=int, default=2, help="folds")
    s.add_argument("--seed", type=int, default=0, help="folds seed and kill-moment RNG seed")
    s.add_argument("--set", default="", help="recipe overrides for train")
    s.add_argument("--device", default="cpu")
    s.add_argument("--work", default="", help="work folder (default: a new temp folder)")


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return int(args.fn(args) or 0)
    except PipelineError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("interrupted; re-run the same command to continue where it stopped", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
