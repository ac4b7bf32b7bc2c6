"""The user's fix list ``input/<comp>/relabel.csv``: ``id,new_label`` rows, new_label a class or
``drop``. Checked against the train set; its sha goes into the folds file."""

from __future__ import annotations

import difflib
import hashlib

import numpy as np
import pandas as pd

from ..competition import Competition, read_csv
from ..errors import PipelineError

RELABEL = "relabel.csv"


def read_relabel(comp: Competition) -> tuple[pd.DataFrame, str]:
    """``input/<comp>/relabel.csv`` checked against the train set, and ``sha256:<16 hex>`` of
    its bytes; no file gives an empty table and ``""``."""
    path = comp.root / RELABEL
    if not path.is_file():
        return pd.DataFrame({"id": [], "new_label": []}, dtype=str), ""
    df = read_csv(path)
    if not {"id", "new_label"} <= set(df.columns):
        raise PipelineError(
            f"{path} has columns [{', '.join(df.columns)}] but needs id,new_label "
            "(new_label: a class name, or 'drop' to leave the image out)"
        )
    rows = pd.Series(np.arange(len(df)) + 2, index=df.index)  # file row numbers (header = 1)
    dup = df["id"].duplicated()
    if dup.any():
        i = df.index[dup][0]
        raise PipelineError(
            f"{path} row {rows[i]}: id {df['id'][i]!r} is listed again; keep one row per id"
        )
    unknown = df[~df["id"].isin(comp.train["id"])]
    if len(unknown):
        i, name = unknown.index[0], comp.train_csv.name
        test = " (it is a test id)" if df["id"][i] in set(comp.test["id"]) else ""
        raise PipelineError(
            f"{path} row {rows[i]}: id {df['id'][i]!r} is not in {name}{test}; "
            f"{len(unknown)} such rows; write train ids exactly as {name} has them"
        )
    bad = df[~df["new_label"].isin([*comp.classes, "drop"])]
    if len(bad):
        i, label = bad.index[0], bad["new_label"].iloc[0]
        near = difflib.get_close_matches(label, comp.classes, n=1)
        hint = f"did you mean {near[0]!r}? " if near else ""
        some = ", ".join(comp.classes[:20]) + (", ..." if len(comp.classes) > 20 else "")
        raise PipelineError(
            f"{path} row {rows[i]}: new_label {label!r} for id {df['id'][i]!r} is not a class; "
            f"{hint}write one of the {len(comp.classes)} classes of {comp.train_csv.name} "
            f"({some}) or 'drop'"
        )
    return df[["id", "new_label"]], "sha256:" + hashlib.sha256(path.read_bytes()).hexdigest()[:16]


def apply_relabel(comp: Competition, k: int) -> tuple[pd.DataFrame, str]:
    """The train table (id, label, path) after relabel.csv, in train-CSV order, and its sha."""
    fixes, sha = read_relabel(comp)
    fix = dict(zip(fixes["id"], fixes["new_label"], strict=True))
    train = comp.train.assign(label=[fix.get(i, x) for i, x in comp.train[["id", "label"]].values])
    train = train[train["label"] != "drop"].reset_index(drop=True)
    counts = train["label"].value_counts().reindex(comp.classes, fill_value=0)
    if sha and (counts < k).any():
        c = counts[counts < k].index[0]
        left = "no images left" if counts[c] == 0 else f"{counts[c]} image(s) left"
        raise PipelineError(
            f"after {comp.root / RELABEL}, class {c!r} has {left} but K={k} folds need at least "
            f"{k} per class (every class stays: the test set may hold it); delete some of the "
            f"rows that drop or relabel its images"
        )
    return train, sha
