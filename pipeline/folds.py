"""Stratified K folds, written once so every model sees the same splits."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
from sklearn.model_selection import StratifiedKFold

from . import artifacts
from .competition import Competition
from .errors import PipelineError


def make_folds(labels: pd.Series, ids: pd.Series, k: int = 5, seed: int = 42) -> pd.DataFrame:
    """Assign each row a fold in ``0..k-1``; ``(n_rows,)`` in, same order out."""
    if k < 2:
        raise PipelineError(f"K={k}: need at least 2 folds")
    counts = labels.value_counts()
    small = counts[counts < k]
    if len(small):
        raise PipelineError(
            f"class {small.index[0]!r} has {small.iloc[0]} image(s) but K={k} folds need at least "
            f"{k} per class ({len(small)} such classes); use K={max(2, int(counts.min()))} or add images"
        )
    fold = np.full(len(labels), -1, dtype=np.int64)
    skf = StratifiedKFold(n_splits=k, shuffle=True, random_state=seed)
    for f, (_, held) in enumerate(skf.split(np.zeros(len(labels)), labels.to_numpy())):
        fold[held] = f
    return pd.DataFrame({"id": ids.to_numpy(), "label": labels.to_numpy(), "fold": fold})


def folds_stage(comp: Competition, k: int = 5, seed: int = 42, root: Path = Path(".")) -> Path:
    """Write ``folds/<comp>.csv`` (byte-identical for the same inputs) and print fold sizes."""
    df = make_folds(comp.train["label"], comp.train["id"], k=k, seed=seed)
    path = artifacts.write_folds(artifacts.folds_path(comp.name, root), df)
    sizes = df["fold"].value_counts().sort_index().tolist()
    print(
        f"wrote {path}: {len(df)} images, {len(comp.classes)} classes, K={k} folds of "
        f"{min(sizes)}..{max(sizes)} images, seed {seed}, hash {artifacts.file_hash(path)}"
    )
    return path
