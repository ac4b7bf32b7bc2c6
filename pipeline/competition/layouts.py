"""Where a competition's train labels live, beyond a CSV with a label column: one-hot or
multi-hot class columns, one folder per class, a CSV whose images sit in class folders, and the
layouts that are not read (with how to convert them). ``load.py`` calls these."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

from ..errors import CompetitionError
from . import classes as class_checks
from . import paths
from .rules import read_csv, read_csv_header


def class_column_tables(
    root: Path,
    csvs: list[Path],
    sample_path: Path,
    id_col: str,
    class_cols: list[str],
    settings: dict[str, str],
) -> tuple[Path, pd.DataFrame, str, str, tuple[str, ...]]:
    """A sample with one probability column per class: the train CSV either has the same
    columns one-hot (plant-pathology-2020) or one column whose values are those classes
    (dog-breed-identification). Returns ``(train_csv, train_df, target_col, layout, drop)``:
    a label column that also holds classes the sample has no column for is refused naming
    them, or with ``train_only_classes = "drop"`` those classes are ``drop``, whose rows
    ``load`` leaves out."""
    wanted = set(class_cols)
    cands = [p for p in csvs if p != sample_path and id_col in read_csv_header(p)]
    if "train_csv" in settings:
        cands = [root / settings["train_csv"]]
    near = []  # (classes shared with the sample, path, df, col): label columns with extra classes
    for path in cands:
        df = read_csv(path)
        if wanted <= set(df.columns):
            table = from_one_hot(path, df, id_col, class_cols)
            multi = table["label"].str.contains(" ", regex=False).any()
            return path, table, "label", "multi-hot" if multi else "one-hot", ()
        for col in df.columns:
            values = set(df[col].unique()) - {""}
            if col != id_col and values and values <= wanted:
                return path, df, col, "csv", ()
            shared = len(values & wanted)
            if col != id_col and shared >= max(2, len(wanted) / 2):
                near.append((shared, path, df, col))
    if near:
        _, path, df, col = max(near, key=lambda c: c[0])
        drop = class_checks.train_only(path, df, col, class_cols, sample_path, settings)
        return path, df, col, "csv", drop
    listing = "; ".join(f"{p.name}: {', '.join(read_csv_header(p))}" for p in csvs)
    raise CompetitionError(
        f"{sample_path} has columns [{id_col}, {', '.join(class_cols[:5])}"
        f"{', ...' if len(class_cols) > 5 else ''}]: cannot tell the label column (expected "
        f"id,label), and no CSV with {id_col!r} has the other {len(class_cols)} as class "
        f"columns (one-hot, or as the values of a label column) [{listing}]; "
        f'set target_column = "<name>" (or train_csv) in {root}/competition.toml'
    )


def from_one_hot(path: Path, df: pd.DataFrame, id_col: str, class_cols: list[str]) -> pd.DataFrame:
    """One label per row from 0/1 class columns; several 1s is multi-label (not supported)."""
    hot = df[class_cols].apply(pd.to_numeric, errors="coerce")
    bad = hot.isna().any(axis=1) | ~hot.isin([0, 1]).all(axis=1)
    if bad.any():
        i = int(bad.idxmax())
        raise CompetitionError(
            f"{path} row {i + 2}: values other than 0/1 in the class columns for id "
            f"{df[id_col][i]!r}; one-hot labels are 0 or 1"
        )
    # several 1s in a row: multi-label (RANZCR); the row's label is its set, space-separated
    names = np.array(class_cols, dtype=object)
    label = [" ".join(names[row == 1]) for row in hot.to_numpy()]  # none set: an empty label
    return pd.DataFrame({id_col: df[id_col].to_numpy(), "label": label})


def has_train_csv(
    csvs: list[Path], sample_path: Path, id_col: str, target_col: str, settings: dict[str, str]
) -> bool:
    """Whether some CSV could be the train CSV (else the labels may be class folders)."""
    if "train_csv" in settings:
        return True
    for p in csvs:
        cols = [c.strip() for c in read_csv_header(p)] if p != sample_path else []
        if id_col in cols and target_col in cols:
            return True
    return False


def class_folders(root: Path, settings: dict[str, str]) -> str | None:
    """The train folder holding one sub-folder of images per class (plant-seedlings), if any."""
    names = (
        [settings["train_images"]]
        if "train_images" in settings
        else sorted(d.name for d in root.iterdir() if d.is_dir() and "train" in d.name.lower())
    )
    for name in names:
        subs = (
            [d for d in sorted((root / name).iterdir()) if d.is_dir()]
            if (root / name).is_dir()
            else []
        )
        with_images = [d for d in subs if paths.stem_index(d)]
        if len(with_images) >= 2:
            return name
    return None


def folder_table(root: Path, folder: str, id_col: str, target_col: str) -> pd.DataFrame:
    """One row per image of ``root/folder/<class>/``: id = its path, label = the class."""
    rows = [
        (f"{folder}/{d.name}/{name}", d.name)
        for d in sorted((root / folder).iterdir())
        if d.is_dir()
        for name in sorted(set(paths.stem_index(d).values()))
    ]
    return pd.DataFrame(rows, columns=[id_col, target_col])


def not_served(root: Path, found: list[Path]) -> str:
    """When no train CSV is found: the layouts that are refused, and how to convert them."""
    if found:
        return ""
    jsons = sorted(p.name for p in root.glob("*.json"))
    what = f" (found {', '.join(jsons[:3])}: COCO-style JSON is not read)" if jsons else ""
    return (
        f"; labels in file names, JSON annotations{what}, one image split over channel files, "
        "and box, mask or regression targets are not read: convert to a train CSV with an id "
        "and a label column"
    )
