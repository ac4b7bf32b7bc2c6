"""Train CSV columns that look like a group key (a patient, a site, a source image): images that
share one value are often near-copies, so rows of one value in different folds let the OOF
scores leak. ``make folds`` names such a column and how to group by it; it does not group by
itself, because only the user knows whether the test set shares those values.

A column is named when, among the rows with a value (the id, the target and the sample's class
columns never count):

- it has more than ``MIN_VALUES`` distinct values, more than the number of classes, and at least
  the square root of the row count (a low-cardinality field such as sex, age or an image size
  is metadata, not a group);
- at least ``SHARED`` of its values are on several rows (most values on one row is an id);
- its values are not class names or sets of them (a second label or multi-label column), and
  not 0/1 (one-hot).
"""

from __future__ import annotations

import math

import pandas as pd

from ..competition import Competition
from ..competition.rules import read_csv

MIN_VALUES = 10
SHARED = 0.5  # share of a column's distinct values found on two or more rows


def group_like_columns(comp: Competition) -> list[tuple[str, int, float]]:
    """``(column, distinct values, share of them on several rows)`` of each train CSV column
    that looks like a group key; ``[]`` for class-folder layouts (no CSV)."""
    path = comp.train_csv
    if path is None or not path.is_file() or path.suffix.lower() != ".csv":
        return []
    df = read_csv(path)
    if comp.id_col in df.columns:
        df = df[df[comp.id_col].isin(set(comp.train["id"].astype(str)))]
    skip = {comp.id_col, comp.target_col, *comp.class_columns}
    found = []
    for col in [c for c in df.columns if c not in skip]:
        values = df[col].astype(str).str.strip()
        values = values[values != ""]
        counts = values.value_counts()
        n = len(counts)
        if n <= max(MIN_VALUES, len(comp.classes)) or n < math.sqrt(len(values)):
            continue
        shared = float((counts >= 2).mean())
        if shared >= SHARED and not _label_like(counts.index, comp.classes):
            found.append((col, n, shared))
    return found


def _label_like(values: pd.Index, classes: list[str]) -> bool:
    """Values that are mostly class names, or space-separated sets of them."""
    names = set(map(str, classes))
    tokens = [v.split() for v in map(str, values)]
    return sum(bool(t) and set(t) <= names for t in tokens) >= len(tokens) / 2


def leak_notes(comp: Competition) -> list[str]:
    """One line per group-like column, naming it and how to group by it."""
    toml = comp.root / "competition.toml"
    return [
        f"note: {comp.train_csv.name} column {col!r} looks like a group key ({n} values, "
        f"{shared:.0%} of them on several rows): rows of one {col} in different folds let OOF "
        f'scores leak; to keep them in one fold put group_column = "{col}" in {toml} and run '
        "make folds again (GROUPS=0 or a group_column silences this)"
        for col, n, shared in group_like_columns(comp)
    ]
