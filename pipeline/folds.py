"""Stratified K folds, written once so every model sees the same splits.

``make folds`` applies the user's fix list ``input/<comp>/relabel.csv`` (``id,new_label``, where
new_label is a class or ``drop``), keeps each duplicate cluster (``duplicates.py``) inside one
fold, and writes ``folds/<comp>.csv`` plus ``folds/<comp>.duplicates.csv``.
"""

from __future__ import annotations

import difflib
import hashlib
from pathlib import Path

import numpy as np
import pandas as pd
from sklearn.model_selection import StratifiedGroupKFold, StratifiedKFold

from . import artifacts, duplicates
from .competition import Competition, read_csv
from .errors import PipelineError

RELABEL = "relabel.csv"


def make_folds(
    labels: pd.Series,
    ids: pd.Series,
    k: int = 5,
    seed: int = 42,
    groups: np.ndarray | None = None,
) -> pd.DataFrame:
    """Assign each row a fold in ``0..k-1``; ``(n_rows,)`` in, same order out.

    With ``groups`` ``(n_rows,)`` that put some rows together (duplicate clusters), rows of a
    group share a fold (StratifiedGroupKFold) and the result has a ``group`` column. Without
    any group of 2 or more rows it is plain StratifiedKFold, so a competition without duplicates
    gets the same folds file as before groups existed.
    """
    if k < 2:
        raise PipelineError(f"K={k}: need at least 2 folds")
    counts = labels.value_counts()
    small = counts[counts < k]
    if len(small):
        raise PipelineError(
            f"class {small.index[0]!r} has {small.iloc[0]} image(s) but K={k} folds need at least "
            f"{k} per class ({len(small)} such classes); use K={max(2, int(counts.min()))} or add images"
        )
    grouped = groups is not None and pd.Series(groups).duplicated().any()
    if grouped and len(set(groups)) < k:
        raise PipelineError(
            f"the {len(labels)} images form only {len(set(groups))} groups of duplicates, too few "
            f"for K={k} folds; use a smaller K, or GROUPS=0 to split duplicates apart"
        )
    fold = np.full(len(labels), -1, dtype=np.int64)
    if grouped:
        splitter = StratifiedGroupKFold(n_splits=k, shuffle=True, random_state=seed)
    else:
        splitter = StratifiedKFold(n_splits=k, shuffle=True, random_state=seed)
    split = splitter.split(np.zeros(len(labels)), labels.to_numpy(), groups if grouped else None)
    for f, (_, held) in enumerate(split):
        fold[held] = f
    df = pd.DataFrame({"id": ids.to_numpy(), "label": labels.to_numpy(), "fold": fold})
    return df.assign(group=groups) if grouped else df


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


def folds_stage(
    comp: Competition,
    k: int = 5,
    seed: int = 42,
    root: Path = Path("."),
    groups: bool = True,
    near_distance: int = duplicates.NEAR_DISTANCE,
) -> Path:
    """Write ``folds/<comp>.csv`` (byte-identical for the same inputs), the duplicates report,
    and print fold sizes and the duplicate summary.

    The folds file has ``id,label,fold``, then ``group`` when duplicate clusters were kept
    together, then ``relabel_sha`` when relabel.csv exists: that column repeats the file's sha
    so any edit of relabel.csv changes the folds hash that trained runs are tied to.
    """
    train, sha = apply_relabel(comp, k)
    cache = Path(root) / "models" / comp.name / ".cache" / "hashes_phash.csv"
    report = duplicates.find_duplicates(comp.root, train, comp.test, cache, near_distance)
    group = duplicates.train_groups(report, train["id"]) if groups else None
    df = make_folds(train["label"], train["id"], k=k, seed=seed, groups=group)
    if sha:
        df["relabel_sha"] = sha
    dpath = artifacts.write_csv(duplicates.duplicates_path(comp.name, root), report)
    path = artifacts.write_folds(artifacts.folds_path(comp.name, root), df)
    sizes = df["fold"].value_counts().sort_index().tolist()
    before = comp.train.set_index("id")["label"][df["id"]].to_numpy()
    changed, dropped = int((df["label"].to_numpy() != before).sum()), len(comp.train) - len(df)
    fixed = f" ({changed} relabelled, {dropped} dropped by {RELABEL})" if sha else ""
    kept = ", duplicate clusters kept in one fold" if "group" in df else ""
    print(
        f"wrote {path}: {len(df)} images{fixed}, {len(comp.classes)} classes, K={k} folds of "
        f"{min(sizes)}..{max(sizes)} images{kept}, seed {seed}, hash {artifacts.file_hash(path)}"
    )
    print(duplicates.summarize(report, dpath, near_distance))
    return path
