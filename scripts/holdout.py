"""Carve a class-balanced holdout from a competition's train set, as a competition of its own.

    python scripts/holdout.py <competition> <per class> <out>

Writes ``<out>/`` in the Classify Leaves layout: ``train.csv`` (image,label: train without the
holdout), ``test.csv`` (the holdout's images), ``sample_submission.csv``, the image folders
(hard links); and beside it ``<out>.holdout.csv`` (image,label), which no stage can read. ``per class`` images of
every class are drawn with seed 0, so the pipeline and the strongest simple script
(``scripts/strong_script.py``) are scored on the same rows:

    python scripts/holdout.py ../shared/data/tinyimagenet176 20 /tmp/acc/tin20
    make folds train ensemble COMP=/tmp/acc/tin20 BUDGET=20m
    python scripts/holdout.py --score /tmp/acc/tin20 <submission.csv>
"""

from __future__ import annotations

import os
import shutil
import sys
from pathlib import Path

import numpy as np
import pandas as pd

from pipeline.competition.load import load_competition


def _link(a: str, b: str) -> None:
    """A hard link (the loader refuses links that point outside the folder), else a copy."""
    try:
        os.link(a, b)
    except OSError:
        shutil.copy2(a, b)


def labels_of(out: Path) -> Path:
    return out.parent / f"{out.name}.holdout.csv"


def carve(root: str, per_class: int, out: str) -> None:
    comp = load_competition(root)
    src, dst = Path(root).resolve(), Path(out)
    dst.mkdir(parents=True, exist_ok=True)
    train = comp.train.copy()
    rel = [(src / p).resolve().relative_to(src).as_posix() for p in train["path"]]
    train["image"] = rel
    rng = np.random.default_rng(0)
    hold = np.concatenate(
        [
            rng.choice(np.flatnonzero(train["label"].to_numpy() == c), per_class, replace=False)
            for c in comp.classes
        ]
    )
    mask = np.zeros(len(train), bool)
    mask[hold] = True
    for top in sorted({r.split("/", 1)[0] for r in rel}):
        link = dst / top
        if not link.exists():
            shutil.copytree(src / top, link, copy_function=_link)
    train.loc[~mask, ["image", "label"]].to_csv(dst / "train.csv", index=False)
    held = train.loc[mask, ["image", "label"]].sample(frac=1.0, random_state=0)
    held.to_csv(labels_of(dst), index=False)
    held[["image"]].to_csv(dst / "test.csv", index=False)
    sub = held[["image"]].assign(label=comp.classes[0])
    sub.to_csv(dst / "sample_submission.csv", index=False)
    print(f"{dst}: {int((~mask).sum()):,} train, {len(held):,} held back ({per_class} per class)")


def score(out: str, submission: str) -> float:
    truth = pd.read_csv(labels_of(Path(out)))
    sub = pd.read_csv(submission).set_index("image").loc[truth["image"], "label"].to_numpy()
    acc = float((sub == truth["label"].to_numpy()).mean())
    se = (acc * (1 - acc) / len(truth)) ** 0.5
    print(f"{submission}: holdout accuracy {acc:.4f} +- {se:.4f} ({len(truth):,} images)")
    return acc


if __name__ == "__main__":
    if sys.argv[1] == "--score":
        score(sys.argv[2], sys.argv[3])
    else:
        carve(sys.argv[1], int(sys.argv[2]), sys.argv[3])
