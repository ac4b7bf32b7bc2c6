"""Read a competition folder exactly as Kaggle ships it.

Finds the sample submission, the train CSV, the id and target columns, and each image file,
whether ids are relative paths (Classify Leaves: ``images/0.jpg``) or bare ids whose files sit in
a folder (CIFAR-10: ``train/<id>.png``). Where detection cannot decide, an optional
``competition.toml`` in the folder says it; the error lists what was found.
"""

from __future__ import annotations

import os
import re
import tomllib
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd

from .errors import CompetitionError

IMAGE_EXTS = (".jpg", ".jpeg", ".png", ".bmp", ".tif", ".tiff", ".webp", ".gif")
SETTINGS = {
    "slug": "Kaggle competition slug for `kaggle competitions submit -c` (default: folder name)",
    "train_csv": "train CSV file name, e.g. trainLabels.csv",
    "sample_submission": "sample submission CSV file name",
    "id_column": "id column name (shared by train CSV and sample submission)",
    "target_column": "label column name",
    "train_images": "folder (relative to the competition) holding train images named <id>.<ext>",
    "test_images": "folder holding test images named <id>.<ext>",
}


@dataclass
class Competition:
    """A parsed competition. ``train``: id, label, path; ``test``: id, path in sample order."""

    root: Path
    name: str
    slug: str
    id_col: str
    target_col: str
    sample_path: Path
    train_csv: Path
    train: pd.DataFrame
    test: pd.DataFrame
    classes: list[str] = field(default_factory=list)


def load_competition(root: str | Path) -> Competition:
    root = Path(root)
    if not root.is_dir():
        raise CompetitionError(
            f"competition folder {root} not found; download it with "
            f"`kaggle competitions download -c <slug>` and unzip it into {root}/"
        )
    settings = _read_settings(root)
    csvs = sorted(p for p in root.glob("*.csv") if p.is_file())
    sample_path = _find_sample(root, csvs, settings)
    sample = read_csv(sample_path)
    id_col, target_col = _sample_columns(sample_path, sample, settings)
    train_csv = _find_train_csv(root, csvs, sample_path, id_col, target_col, settings)
    train_df = read_csv(train_csv)
    for col in (id_col, target_col):
        if col not in train_df.columns:
            raise CompetitionError(
                f"{train_csv} has no column {col!r} (columns: {', '.join(train_df.columns)}); "
                f"set id_column/target_column in {root}/competition.toml"
            )
    train_df = _clean_train(train_csv, train_df, id_col, target_col)
    test_ids = _clean_ids(sample_path, sample[id_col])
    train_paths = resolve_images(
        root, train_df[id_col].tolist(), "train", settings.get("train_images")
    )
    test_paths = resolve_images(root, test_ids, "test", settings.get("test_images"))
    train = pd.DataFrame(
        {"id": train_df[id_col], "label": train_df[target_col], "path": train_paths}
    )
    test = pd.DataFrame({"id": test_ids, "path": test_paths})
    return Competition(
        root=root,
        name=root.name,
        slug=settings.get("slug", root.name),
        id_col=id_col,
        target_col=target_col,
        sample_path=sample_path,
        train_csv=train_csv,
        train=train,
        test=test,
        classes=sorted(train["label"].unique().tolist()),
    )


def read_csv(path: Path) -> pd.DataFrame:
    """Read every column as text; strip a BOM and stray whitespace from names and values."""
    try:
        df = pd.read_csv(path, dtype=str, keep_default_na=False, encoding="utf-8-sig")
    except pd.errors.EmptyDataError:
        raise CompetitionError(f"{path} is empty; re-download the competition files") from None
    except (pd.errors.ParserError, UnicodeDecodeError) as e:
        raise CompetitionError(f"{path} is not a readable CSV ({str(e).splitlines()[0]})") from None
    df.columns = [str(c).strip() for c in df.columns]
    return df.apply(lambda s: s.str.strip())


def _read_settings(root: Path) -> dict[str, str]:
    path = root / "competition.toml"
    if not path.is_file():
        return {}
    try:
        settings = tomllib.loads(path.read_text(encoding="utf-8"))
    except tomllib.TOMLDecodeError as e:
        raise CompetitionError(f"{path} is not valid TOML ({e})") from None
    unknown = sorted(set(settings) - set(SETTINGS))
    if unknown:
        raise CompetitionError(
            f"{path}: unknown key {unknown[0]!r}; valid keys: {', '.join(SETTINGS)}"
        )
    return {k: str(v) for k, v in settings.items()}


def _find_sample(root: Path, csvs: list[Path], settings: dict[str, str]) -> Path:
    if "sample_submission" in settings:
        path = root / settings["sample_submission"]
        if not path.is_file():
            raise CompetitionError(
                f"{root}/competition.toml names sample_submission {path.name!r}, which does not exist"
            )
        return path
    found = [p for p in csvs if re.search(r"sample.?submission", p.name, re.I)]
    if len(found) != 1:
        what = "no sample submission" if not found else f"{len(found)} sample submissions"
        raise CompetitionError(
            f"{root}: found {what} among CSVs [{', '.join(p.name for p in csvs) or 'none'}]; "
            f'set sample_submission = "<file>.csv" in {root}/competition.toml'
        )
    return found[0]


def _sample_columns(path: Path, sample: pd.DataFrame, settings: dict[str, str]) -> tuple[str, str]:
    cols = list(sample.columns)
    id_col = settings.get("id_column", cols[0] if cols else "")
    target = settings.get("target_column", cols[1] if len(cols) == 2 else "")
    if not target:
        raise CompetitionError(
            f"{path} has columns {cols}; cannot tell the label column (expected id,label); "
            f'set target_column = "<name>" in {path.parent}/competition.toml'
        )
    for col in (id_col, target):
        if col not in cols:
            raise CompetitionError(f"{path} has no column {col!r} (columns: {', '.join(cols)})")
    return id_col, target


def _find_train_csv(
    root: Path,
    csvs: list[Path],
    sample_path: Path,
    id_col: str,
    target_col: str,
    settings: dict[str, str],
) -> Path:
    if "train_csv" in settings:
        path = root / settings["train_csv"]
        if not path.is_file():
            raise CompetitionError(
                f"{root}/competition.toml names train_csv {path.name!r}, which does not exist"
            )
        return path
    found = []
    for p in csvs:
        if p == sample_path:
            continue
        cols = [c.strip() for c in read_csv_header(p)]
        if id_col in cols and target_col in cols:
            found.append(p)
    if len(found) > 1:
        found = [p for p in found if "train" in p.name.lower()] or found
    if len(found) != 1:
        listing = "; ".join(f"{p.name}: {', '.join(read_csv_header(p))}" for p in csvs)
        raise CompetitionError(
            f"{root}: expected one train CSV with columns {id_col!r} and {target_col!r} "
            f"(from {sample_path.name}), found {len(found)} [{listing}]; "
            f'set train_csv = "<file>.csv" in {root}/competition.toml'
        )
    return found[0]


def read_csv_header(path: Path) -> list[str]:
    with open(path, encoding="utf-8-sig", errors="replace") as f:
        return [c.strip() for c in f.readline().rstrip("\r\n").split(",")]


def _clean_train(path: Path, df: pd.DataFrame, id_col: str, target_col: str) -> pd.DataFrame:
    if len(df) == 0:
        raise CompetitionError(
            f"{path} has a header but no rows; re-download the competition files"
        )
    _clean_ids(path, df[id_col])
    empty = np.flatnonzero(df[target_col].eq("").to_numpy())
    if len(empty):
        raise CompetitionError(
            f"{path} row {empty[0] + 2}: empty {target_col!r} for id {df[id_col].iloc[empty[0]]!r} "
            f"({len(empty)} such rows); fill in or delete those rows"
        )
    return df.reset_index(drop=True)


def _clean_ids(path: Path, ids: pd.Series) -> list[str]:
    empty = np.flatnonzero(ids.eq("").to_numpy())
    if len(empty):
        raise CompetitionError(f"{path} row {empty[0] + 2}: empty id; fill in or delete that row")
    dup = ids[ids.duplicated()]
    if len(dup):
        row = int(dup.index[0]) + 2
        raise CompetitionError(
            f"{path} row {row}: duplicate id {dup.iloc[0]!r} ({len(dup)} duplicates); "
            "each id must appear once"
        )
    return ids.tolist()


def resolve_images(root: Path, ids: list[str], split: str, folder: str | None = None) -> list[str]:
    """Map ids to image paths relative to ``root``, refusing any path outside it."""
    base = root.resolve()
    if folder is None and _is_path_layout(root, ids):
        rel = ids
    else:
        sub = folder if folder is not None else _best_folder(root, ids, split)
        index = _stem_index(root / sub)
        rel, missing = [], []
        for i in ids:
            name = index.get(i)
            (
                missing.append(i)
                if name is None
                else rel.append(f"{sub}/{name}" if sub != "." else name)
            )
        if missing:
            raise CompetitionError(
                f"{root}/{sub}: {len(missing)} of {len(ids)} {split} ids have no image "
                f"(first: {missing[0]!r}, looked for {missing[0]}.<{'|'.join(e[1:] for e in IMAGE_EXTS)}>); "
                f'add the files or set {split}_images = "<folder>" in {root}/competition.toml'
            )
    for i, r in zip(ids, rel, strict=True):
        p = (root / r).resolve()
        if not p.is_relative_to(base):
            raise CompetitionError(
                f"{split} id {i!r} points outside {root}; ids must stay inside the competition folder"
            )
    missing = [r for r in rel if not (root / r).is_file()]
    if missing:
        raise CompetitionError(
            f"{root}: {len(missing)} of {len(ids)} {split} images are missing (first: {missing[0]}); "
            "re-download or unzip the competition images"
        )
    return list(rel)


def _is_path_layout(root: Path, ids: list[str]) -> bool:
    """Ids are file paths (``images/0.jpg``) when they carry an image extension."""
    return bool(ids) and all(os.path.splitext(i)[1].lower() in IMAGE_EXTS for i in ids[:50])


def _stem_index(folder: Path) -> dict[str, str]:
    if not folder.is_dir():
        return {}
    return {
        os.path.splitext(e.name)[0]: e.name
        for e in os.scandir(folder)
        if e.is_file() and os.path.splitext(e.name)[1].lower() in IMAGE_EXTS
    }


def _best_folder(root: Path, ids: list[str], split: str) -> str:
    """The folder holding most of ``ids`` as ``<id>.<ext>``; ties go to a name with the split."""
    wanted = set(ids)
    best: tuple[int, int, str] | None = None
    for dirpath, dirnames, _ in os.walk(root):
        dirnames[:] = sorted(d for d in dirnames if not d.startswith("."))
        rel = os.path.relpath(dirpath, root).replace(os.sep, "/")
        hits = len(wanted & _stem_index(Path(dirpath)).keys())
        if hits:
            key = (hits, int(split in rel.lower()), rel)
            best = key if best is None or key[:2] > best[:2] else best
    if best is None:
        raise CompetitionError(
            f"{root}: no image file named <id>.<ext> for any {split} id (first id: {ids[0]!r}); "
            f'set {split}_images = "<folder>" in {root}/competition.toml'
        )
    return best[2]
