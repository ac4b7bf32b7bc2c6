"""Stratified K folds, written once so every model sees the same splits.

``make folds`` applies the user's fix list ``input/<comp>/relabel.csv`` (``id,new_label``, where
new_label is a class or ``drop``), keeps each duplicate cluster (``duplicates.py``) inside one
fold, and writes ``folds/<comp>.csv`` plus ``folds/<comp>.duplicates.csv``.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
from sklearn.model_selection import StratifiedGroupKFold, StratifiedKFold

from .. import artifacts
from ..competition import Competition
from ..competition.metrics import METRICS
from ..competition.task import encode
from ..errors import PipelineError
from ..workspace import Workspace
from . import duplicates
from .leaks import leak_notes
from .relabel import RELABEL, apply_relabel


def make_folds(
    labels: pd.Series,
    ids: pd.Series,
    k: int = 5,
    seed: int = 42,
    groups: np.ndarray | None = None,
    y: np.ndarray | None = None,
) -> pd.DataFrame:
    """Assign each row a fold in ``0..k-1``; ``(n_rows,)`` in, same order out.

    With ``groups`` ``(n_rows,)`` that put some rows together (duplicate clusters, a patient),
    rows of a group share a fold (StratifiedGroupKFold) and the result has a ``group`` column.
    Without any group of 2 or more rows it is plain StratifiedKFold, so a competition without
    duplicates gets the same folds file as before groups existed. Multi-label rows pass ``y (N,
    C)`` 0/1: iterative stratification (``MultilabelStratifiedKFold``) keeps each label's share
    alike in every fold, whole groups stratified by the labels present in them.
    """
    if k < 2:
        raise PipelineError(f"K={k}: need at least 2 folds")
    if y is None:
        counts = labels.value_counts()
        if len(small := counts[counts < k]):
            raise PipelineError(
                f"class {small.index[0]!r} has {small.iloc[0]} image(s) but K={k} folds need at "
                f"least {k} per class ({len(small)} such classes); use "
                f"K={max(2, int(counts.min()))} or add images"
            )
    grouped = groups is not None and pd.Series(groups).duplicated().any()
    if grouped and len(set(groups)) < k:
        raise PipelineError(
            f"the {len(labels)} images form only {len(set(groups))} groups of duplicates, too few "
            f"for K={k} folds; use a smaller K, or GROUPS=0 to split duplicates apart"
        )
    if y is not None:
        fold = _multilabel_split(y, groups if grouped else np.arange(len(y)), k, seed)
    else:
        fold = np.full(len(labels), -1, dtype=np.int64)
        cls = StratifiedGroupKFold if grouped else StratifiedKFold
        splitter = cls(n_splits=k, shuffle=True, random_state=seed)
        rows = np.zeros(len(labels))
        for f, (_, held) in enumerate(
            splitter.split(rows, labels.to_numpy(), groups if grouped else None)
        ):
            fold[held] = f
    df = pd.DataFrame({"id": ids.to_numpy(), "label": labels.to_numpy(), "fold": fold})
    return df.assign(group=groups) if grouped else df


def _multilabel_split(y: np.ndarray, groups: np.ndarray, k: int, seed: int) -> np.ndarray:
    """``(N,)`` fold of each row: groups stratified by the labels present in them."""
    from iterstrat.ml_stratifiers import MultilabelStratifiedKFold

    codes, uniq = pd.factorize(pd.Series(groups))
    present = np.zeros((len(uniq), y.shape[1]))
    np.add.at(present, codes, y)
    splitter = MultilabelStratifiedKFold(n_splits=k, shuffle=True, random_state=seed)
    group_fold = np.full(len(uniq), -1, dtype=np.int64)
    for f, (_, held) in enumerate(splitter.split(np.zeros(len(uniq)), (present > 0).astype(int))):
        group_fold[held] = f
    return group_fold[codes]


def rare_labels(comp: Competition, train: pd.DataFrame, y: np.ndarray, k: int) -> None:
    """Multi-label labels carried by fewer than ``k`` rows: allowed, with one warning each
    naming the label and its rows (some held-out folds hold none of it), except under a metric
    that is undefined on such a fold (ROC AUC per label needs both classes): refused."""
    counts = y.sum(axis=0)
    for j in np.flatnonzero(counts < k):
        rows = np.flatnonzero(y[:, j])
        where = "ids " + ", ".join(repr(train["id"].iloc[r]) for r in rows[:5])
        label, n = comp.classes[j], len(rows)
        if METRICS[comp.task.metric].needs_every_label:
            raise PipelineError(
                f"label {label!r} is on {n} row(s) of {comp.train_csv.name} ({where}) but K={k}: "
                f"{comp.task.metric} (ROC AUC of each label) is undefined on a held-out fold "
                f"without it; use K={max(2, n)} or fewer folds, or add images of {label!r}"
            )
        print(
            f"warning: label {label!r} is on only {n} row(s) of {comp.train_csv.name} ({where}), "
            f"fewer than K={k}: the folds that hold none of it cannot score it, and its OOF "
            "score rests on those rows"
        )


def join_groups(ids: pd.Series, given: pd.Series, clusters: np.ndarray | None) -> np.ndarray:
    """``(N,)`` group of each row: rows sharing a ``given`` group (a patient) or a duplicate
    cluster are one group, named after its first id in train-CSV order."""
    pairs = []
    for labels in (given.to_numpy(), clusters):
        if labels is None:
            continue
        first: dict = {}
        for n, g in enumerate(labels):
            pairs.append((first.setdefault(g, n), n))
    root = duplicates.union_find(len(ids), pairs)
    return ids.to_numpy()[root].astype(str)


def folds_stage(
    comp: Competition,
    ws: Workspace,
    k: int = 5,
    seed: int = 42,
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
    report = duplicates.find_duplicates(comp.root, train, comp.test, ws.hash_cache, near_distance)
    group = duplicates.train_groups(report, train["id"]) if groups else None
    if "group" in train:  # the competition's own groups, joined with the duplicate clusters
        group = join_groups(train["id"], train["group"], group)
    if comp.task.multilabel:
        y = encode(train["label"], comp.classes, "multilabel")
        rare_labels(comp, train, y, k)
        df = make_folds(train["label"], train["id"], k=k, seed=seed, groups=group, y=y)
    else:
        df = make_folds(train["label"], train["id"], k=k, seed=seed, groups=group)
    if sha:
        df["relabel_sha"] = sha
    if comp.task.kind != "multiclass":  # recorded so later stages refuse another task's folds
        df["task"] = comp.task.kind
    duplicates.refuse_changed(report, ws.duplicates_csv, ws.folds_csv)  # before any write
    dpath = artifacts.write_csv(ws.duplicates_csv, report)
    path = artifacts.write_folds(ws.folds_csv, df)
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
    if groups and "group" not in train:  # a set group_column or GROUPS=0: the user chose
        for line in leak_notes(comp):
            print(line)
    return path
