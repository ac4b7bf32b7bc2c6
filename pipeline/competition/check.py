"""``make check``: decode every train and test image and list every problem found at once."""

from __future__ import annotations

import sys
import time
from collections import Counter
from pathlib import Path

from ..errors import CompetitionError
from .images import ImageError, inspect_image, parallel
from .load import Competition

MAX_PROBLEMS = 50  # problem lines `make check` prints before it stops listing


def check_stage(comp: Competition, workers: int | None = None) -> str:
    """Decode every train and test image of ``comp`` (from ``load_competition(strict=False)``).

    Prints each problem (CSV rows and images, at most MAX_PROBLEMS) as one ``error:`` line on
    stderr and raises ``CompetitionError``; else prints and returns a one-line summary. Every
    byte of every image is decoded (a truncated tail shows only then; a JPEG at 1/8 scale,
    ``images.inspect_image``), on ``workers`` threads (every core by default)."""
    for note in comp.notes:
        print(note)
    splits = (("train", comp.train, comp.train_csv), ("test", comp.test, comp.sample_path))
    jobs = [
        (s, c, n, r) for s, df, c in splits for n, r in enumerate(df["path"]) if isinstance(r, str)
    ]

    def inspect(job: tuple) -> tuple:
        try:
            (w, h), mode = inspect_image(comp.root / job[3])
            return f"{w}x{h}", mode, None
        except ImageError as e:
            return None, None, e.reason

    start = time.perf_counter()
    results = list(parallel(inspect, jobs, "check images", workers))
    problems = comp.problems + [
        _image_line(comp.root, job, reason)
        for job, (_, _, reason) in zip(jobs, results, strict=True)
        if reason
    ]
    if len(problems) > 1:
        for line in problems[:MAX_PROBLEMS]:
            print(f"error: {line}", file=sys.stderr)
        shown = "listed above" if len(problems) <= MAX_PROBLEMS else f"first {MAX_PROBLEMS} above"
        raise CompetitionError(
            f"{comp.root}: {len(problems)} problems ({shown}); fix them and re-run: "
            f"make check COMP={comp.root}"
        )
    if problems:
        raise CompetitionError(problems[0])
    sizes = Counter(size for size, _, _ in results)
    modes = Counter(mode for _, mode, _ in results)
    line = _summary(comp, len(jobs), time.perf_counter() - start, sizes, modes)
    line += "; " + comp.task.brief(str(comp.root))  # what was detected, and how to change it
    print(line)
    return line


def _image_line(root: Path, job: tuple, reason: str) -> str:
    split, csv_path, n, rel = job
    fix = (
        f"replace it with a good copy, or delete row {n + 2} of {csv_path.name}"
        if split == "train"
        else "replace it with a good copy (re-download); Kaggle expects every test id"
    )
    return f"{root / rel} ({csv_path.name} row {n + 2}): {reason}; {fix}"


def _summary(comp: Competition, n: int, seconds: float, sizes: Counter, modes: Counter) -> str:
    per_class = comp.train["label"].value_counts()
    size_text = ", ".join(f"{s} ({k})" for s, k in sizes.most_common(3))
    if len(sizes) > 3:
        size_text += f" and {len(sizes) - 3} other sizes"
    return (
        f"{comp.root}: OK - {comp.train_csv.name}: {len(comp.train)} images, "
        f"{len(per_class)} classes ({per_class.min()}..{per_class.max()} images each, so K <= "
        f"{per_class.min()} folds); {comp.sample_path.name}: {len(comp.test)} test images; "
        f"{n} images decoded in {seconds:.1f} s; sizes {size_text}; modes "
        + ", ".join(f"{m} ({k})" for m, k in modes.most_common())
    )
