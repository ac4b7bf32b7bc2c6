"""``python -m pipeline.tools <verb>``: developer tooling (``--help`` lists every verb).

Kept apart from the user CLI and never imported by the product: these verbs time and attack the
pipeline rather than run it. ``make bench``, ``make bench-ensemble`` and ``make soak`` call them.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from ..cli import run
from ..config import split_words
from ..workspace import add_workspace_args


def cmd_bench(a):
    from ..cli import open_competition
    from ..config import load_recipe, parse_overrides, recipe_from_dict
    from ..errors import PipelineError
    from ..train.stage import resolve_device
    from .bench import bench_stage

    if a.synthetic:  # no competition: the recipe of --run, or the defaults, with --set
        if a.whole:
            raise PipelineError("WHOLE=1 trains a real fold; it needs COMP=, not SYNTHETIC=1")
        over = parse_overrides(a.set)
        path = Path(a.models) / f"{a.run}.toml"
        recipe = load_recipe(path, over) if a.run else recipe_from_dict(over, "SET")
        dev = resolve_device(a.device)
        bench_stage(None, recipe, dev, batches=a.batches, synthetic=a.images)
        return 0
    if not a.comp or not a.run:
        raise PipelineError("bench needs --comp and --run (or --synthetic)")
    comp, ws = open_competition(a)
    recipe = load_recipe(ws.recipe(a.run), parse_overrides(a.set))
    res = bench_stage(comp, recipe, resolve_device(a.device), batches=a.batches, ws=ws)
    if a.whole:
        from .bench_whole import whole_train

        whole_train(comp, a.run, recipe, res, fold=a.fold, sets=a.set, ws=ws, track=a.track)


def cmd_prepare(a):
    from ..cli import open_competition
    from ..config import parse_overrides
    from ..train.stage import prepare_stage

    comp, ws = open_competition(a)
    prepare_stage(comp, ws, split_words(a.runs), parse_overrides(a.set), a.device)


def cmd_prior_check(a):
    from ..cli import open_competition
    from .prior_check import prior_check

    if a.bench:  # generated cases with a known truth: no competition needed
        from .prior_bench import bench

        bench(a.half, a.only, a.generator)
        return
    comp, ws = open_competition(a)
    prior_check(comp, ws, a.name, a.rows, a.repeats)


def cmd_bench_ensemble(a):
    from .bench_ensemble import bench_ensemble

    if a.whole:
        import tempfile

        from .bench_ensemble import bench_whole

        with tempfile.TemporaryDirectory(prefix="bench-ensemble-", dir=a.work or None) as work:
            bench_whole(Path(work), a.members, a.rows, a.classes, a.test_rows)
        return
    bench_ensemble(a.members, a.rows, a.classes, a.float16)


def cmd_soak(a):
    from .soak import soak_stage

    comp = Path(a.comp) if a.comp else None
    work = Path(a.work) if a.work else None
    runs = split_words(a.runs)
    return soak_stage(comp, runs, a.times, a.k, a.seed, a.set, a.device, work, a.jobs)


def cmd_formats(a):
    from .formats import build

    build(Path(a.source), Path(a.out), a.n, a.test, a.seed)


def cmd_score(a):
    from .formats import score

    score(Path(a.comp), Path(a.answers), Path(a.submission))


def cmd_photo_bench(a):
    from .photo_bench import bench, make_histo, make_photos

    shared = Path(a.source)
    if a.make_photos:
        make_photos(shared, Path(a.make_photos), a.train, a.test, a.classes)
    if a.make_histo:
        make_histo(shared, Path(a.make_histo), a.train, a.test)
    if a.comp:
        bench(Path(a.comp), a.sample, [int(z) for z in a.sizes.split(",")], a.check)


def cmd_plan_check(a):
    from ..cli import open_competition
    from .plan_check import plan_check

    comp, ws = open_competition(a)[:2]
    plan_check(ws, comp)


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m pipeline.tools")
    sub = p.add_subparsers(dest="cmd", required=True, metavar="verb")
    s = sub.add_parser("bench", help="images/s of loader, bare model, real loop, and prediction")
    s.set_defaults(fn=cmd_bench)
    add_workspace_args(s)
    s.add_argument("--run", default="", help="recipe name from models/<run>.toml")
    s.add_argument("--set", default="", help="recipe overrides")
    s.add_argument(
        "--synthetic", action="store_true", help="random images in memory instead of --comp"
    )
    s.add_argument("--images", type=int, default=2048, help="synthetic images (--synthetic)")
    s.add_argument("--device", default="auto")
    s.add_argument("--batches", type=int, default=20, help="timed batches per figure")
    s.add_argument("--whole", action="store_true", help="also time a real train of one fold")
    s.add_argument("--fold", type=int, default=0, help="the fold --whole trains")
    s.add_argument(
        "--track", default=None, help="--whole: TRACK of the timed train (tensorboard, none, ...)"
    )
    s = sub.add_parser("prepare", help="decode caches and embeddings of RUNS, as train builds them")
    s.set_defaults(fn=cmd_prepare)
    add_workspace_args(s)
    s.add_argument("--runs", required=True, help="recipes whose inputs to prepare")
    s.add_argument("--set", default="", help="recipe overrides")
    s.add_argument("--device", default="auto")
    s = sub.add_parser("prior-check", help="the label-shift adjustment on re-weighted OOF rows")
    s.set_defaults(fn=cmd_prior_check)
    add_workspace_args(s)
    s.add_argument("--name", default="ensemble")
    s.add_argument("--rows", type=int, default=2000, help="rows per resample")
    s.add_argument("--repeats", type=int, default=20, help="resamples of each kind")
    s.add_argument("--bench", action="store_true", help="generated cases instead of an ensemble")
    s.add_argument("--half", default="report", choices=("tune", "report", "all"))
    s.add_argument("--only", default="", help="--bench: cases whose label contains this")
    s.add_argument("--generator", default="v2", choices=("v1", "v2"), help="--bench: fold noise")
    s = sub.add_parser("plan-check", help="a budget plan's seconds against the measured ones")
    s.set_defaults(fn=cmd_plan_check)
    add_workspace_args(s)
    s = sub.add_parser("bench-ensemble", help="seconds per ensemble method, synthetic logits")
    s.set_defaults(fn=cmd_bench_ensemble)
    s.add_argument("--members", type=int, default=20)
    s.add_argument("--rows", type=int, default=18353)
    s.add_argument("--classes", type=int, default=176)
    s.add_argument("--float16", action="store_true", help="logits kept as float16")
    s.add_argument(
        "--whole", action="store_true", help="member folders of that size + the real make ensemble"
    )
    s.add_argument("--test-rows", type=int, default=10000, help="test rows (--whole)")
    s.add_argument("--work", default="", help="folder for --whole's files (default: system tmp)")
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
    s.add_argument("--jobs", type=int, default=1, help="JOBS of every train (local workers)")
    s = sub.add_parser("photo-bench", help="decode cost on generated photographs (issue 32)")
    s.set_defaults(fn=cmd_photo_bench)
    s.add_argument("--comp", default="", help="a competition to bench (after --make-*)")
    s.add_argument("--make-photos", default="", help="write 4000x2672 JPEGs here")
    s.add_argument("--make-histo", default="", help="write 96 px TIFFs here")
    s.add_argument("--source", default="../shared/data/tinyimagenet176", help="shared photos")
    s.add_argument("--train", type=int, default=1000, help="train images (--make-*)")
    s.add_argument("--test", type=int, default=250, help="test images (--make-*)")
    s.add_argument("--classes", type=int, default=10, help="source classes (--make-photos)")
    s.add_argument("--sample", type=int, default=40, help="images of the decoder table")
    s.add_argument("--sizes", default="128,160,224", help="cache sizes (the CPU set's)")
    s.add_argument("--check", action="store_true", help="also time make check")
    s = sub.add_parser("formats", help="every supported Kaggle layout, built from an id,label one")
    s.set_defaults(fn=cmd_formats)
    s.add_argument("--source", required=True, help="a labelled competition, e.g. cifar10")
    s.add_argument("--out", required=True, help="folder for the competitions and answers/")
    s.add_argument("--n", type=int, default=1500, help="train images per competition")
    s.add_argument("--test", type=int, default=300, help="held-out test images (answers kept)")
    s.add_argument("--seed", type=int, default=0)
    s = sub.add_parser("score", help="held-out score of a submission against formats' answers")
    s.set_defaults(fn=cmd_score)
    s.add_argument("--comp", required=True)
    s.add_argument("--answers", required=True)
    s.add_argument("--submission", required=True)
    p.description = f"developer tooling: {', '.join(sub.choices)}"  # every verb, as built
    return p


def main(argv: list[str] | None = None) -> int:
    return run(build_parser(), argv)


if __name__ == "__main__":
    sys.exit(main())
