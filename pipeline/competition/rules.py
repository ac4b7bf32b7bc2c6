"""The cheap CSV rules every stage runs on a competition folder (no image is opened).

``load_competition`` runs them and stops at the first problem; ``load_competition(root,
strict=False)`` collects them instead, and ``check.check_stage`` adds one line per image that
cannot be decoded, so ``make check`` lists every problem (up to a cap) at once.
"""

from __future__ import annotations

import csv
import os
from collections import Counter
from pathlib import Path

import numpy as np
import pandas as pd

from ..errors import CompetitionError

IMAGE_EXTS = (".jpg", ".jpeg", ".png", ".bmp", ".tif", ".tiff", ".webp", ".gif")
NA_LABELS = ("nan", "<na>", "null")  # missing values written out as text by pandas/numpy/SQL
DELIMITERS = (";", "\t", "|")


def read_csv(path: Path) -> pd.DataFrame:
    """Read every column as text; strip a BOM and stray whitespace from names and values."""
    try:
        df = pd.read_csv(path, dtype=str, keep_default_na=False, encoding="utf-8-sig")
    except pd.errors.EmptyDataError:
        raise CompetitionError(f"{path} is empty; re-download the competition files") from None
    except UnicodeDecodeError:
        raise CompetitionError(_not_utf8(path)) from None
    except pd.errors.ParserError as e:
        raise CompetitionError(
            f"{path} is not a readable CSV ({str(e).splitlines()[0].strip()}); fix that line: "
            'a value containing a comma needs "quotes"'
        ) from None
    df.columns = [str(c).strip() for c in df.columns]
    sep = [d for d in DELIMITERS if len(df.columns) == 1 and d in df.columns[0]]
    if sep:
        raise CompetitionError(
            f"{path} separates columns with {sep[0]!r} (header: {df.columns[0]!r}); Kaggle CSVs "
            "are comma-separated: re-save it with ',' between columns"
        )
    return df.fillna("").apply(lambda s: s.str.strip())


def _not_utf8(path: Path) -> str:
    raw = path.read_bytes()
    if raw[:2] in (b"\xff\xfe", b"\xfe\xff"):
        return f"{path} is UTF-16 text, not UTF-8; re-save it as UTF-8 (Excel: CSV UTF-8)"
    try:
        raw.decode("utf-8")
        where = "somewhere"
    except UnicodeDecodeError as e:
        line = raw[: e.start].count(b"\n") + 1
        where = f"line {line}: byte 0x{raw[e.start]:02x}"
    return (
        f"{path} is not UTF-8 text ({where}); re-save it as UTF-8, "
        f"e.g. iconv -f latin1 -t utf-8 {path.name} > fixed.csv"
    )


def read_csv_header(path: Path) -> list[str]:
    """Column names from the first line (quotes and a BOM removed) without reading the rows."""
    with open(path, encoding="utf-8-sig", errors="replace", newline="") as f:
        row = next(csv.reader([f.readline()]), [])
    return [c.strip() for c in row]


def _rows(path: Path, rows: np.ndarray, text) -> list[str]:
    """One line per offending row: ``text(i)`` for 0-based row ``i`` (the file's line i + 2)."""
    return [f"{path} row {i + 2}: {text(i)}" for i in rows]


def id_problems(path: Path, ids: pd.Series) -> list[str]:
    """Empty and repeated ids; ids stay text, so '001' and '1' are two different ids."""
    ids = ids.reset_index(drop=True)
    first = ids.drop_duplicates()
    first_row = pd.Series(first.index.to_numpy(), index=first.to_numpy())
    dup = np.flatnonzero(ids.duplicated().to_numpy() & ids.ne("").to_numpy())
    return _rows(
        path, np.flatnonzero(ids.eq("").to_numpy()), lambda i: "empty id; fill in or delete the row"
    ) + _rows(
        path,
        dup,
        lambda i: (
            f"duplicate id {ids[i]!r} (also on row {first_row[ids[i]] + 2}); "
            "each id must appear once: delete one of the rows"
        ),
    )


def train_problems(path: Path, df: pd.DataFrame, id_col: str, target: str) -> list[str]:
    """Rows of the train CSV that cannot be trained on. A header-only file is refused at once."""
    if len(df) == 0:
        raise CompetitionError(
            f"{path} has a header but no rows; re-download the competition files"
        )
    df = df.reset_index(drop=True)
    ids, labels = df[id_col], df[target]
    empty = labels.eq("").to_numpy()
    na = labels.str.lower().isin(NA_LABELS).to_numpy()

    def no_label(i: int) -> str:
        what = f"empty {target!r}"
        if labels[i]:
            what = f"{target!r} is {labels[i]!r} (a missing value written as text)"
        return f"{what} for id {ids[i]!r}; fill in or delete the row"

    out = id_problems(path, ids) + _rows(path, np.flatnonzero(empty | na), no_label)
    good = labels[~(empty | na)].unique()
    if len(good) == 1:
        out.append(
            f"{path}: every row has {target!r} = {good[0]!r}; a classifier needs at least 2 "
            f"classes: check the file, or set target_column in {path.parent}/competition.toml"
        )
    return out


def test_csv_problems(
    csvs: list[Path], skip: tuple[Path, ...], sample_path: Path, sample_ids: pd.Series, id_col: str
) -> list[str]:
    """``test*.csv`` (when it has the id column) must list the sample submission's ids."""
    out: list[str] = []
    for path in csvs:
        if path in skip or "test" not in path.name.lower() or id_col not in read_csv_header(path):
            continue
        ids = read_csv(path)[id_col].reset_index(drop=True)
        out += id_problems(path, ids)
        for a, a_ids, b, b_ids in (
            (path, ids, sample_path, sample_ids),
            (sample_path, sample_ids, path, ids),
        ):
            extra = np.flatnonzero(~a_ids.isin(set(b_ids)).to_numpy())
            if len(extra):
                out.append(
                    f"{a} row {extra[0] + 2}: id {a_ids.iloc[extra[0]]!r} is not in {b.name} "
                    f"({len(extra)} such ids); both must list the same test ids: re-download them"
                )
    return out


def overlap_problems(root: Path, train_paths: list, test_paths: list) -> list[str]:
    """Train and test sharing image files means swapped or empty folders (or a leak)."""
    shared = set(train_paths) & set(test_paths) - {None}
    if not shared:
        return []
    first = next(p for p in test_paths if p in shared)
    return [
        f"{root}: {len(shared)} test images are also train images (first: {first}); are the "
        "train and test folders swapped or one of them empty? fix the folders or set "
        f"train_images / test_images in {root}/competition.toml"
    ]


def file_problem(root: Path, base: str, rel: str) -> str | None:
    """``outside`` (``base``: ``os.path.realpath(root)``), ``missing``, or None for a usable file."""
    path = os.path.join(root, rel)  # os.path: twice as fast as pathlib on 27k files
    real = os.path.realpath(path)  # follows symlinks; a loop stays unresolved and is not a file
    if real != base and not real.startswith(base + os.sep):
        return "outside"
    return None if os.path.isfile(path) else "missing"


def unique_lower(names: dict[str, str]) -> dict[str, str]:
    """``{key.lower(): value}`` for keys that stay unique when lower-cased."""
    count = Counter(k.lower() for k in names)
    return {k.lower(): v for k, v in names.items() if count[k.lower()] == 1}


def case_match(root: Path, rel: str, listings: dict[str, dict[str, str]]) -> str | None:
    """``rel`` with its file name in the case found on disk (CSV made on Windows or macOS)."""
    parent, name = os.path.split(rel)
    if parent not in listings:
        d = root / parent
        listings[parent] = unique_lower({n: n for n in os.listdir(d)} if d.is_dir() else {})
    found = listings[parent].get(name.lower())
    return None if found is None else os.path.join(parent, found)


def image_problems(
    root: Path, split: str, csv_path: Path, bad: list[tuple[int, str, str]], folder: str | None
) -> list[str]:
    """One line per ``(row, why, path)`` from ``resolve_images``."""
    for d in sorted({os.path.dirname(p) for _, why, p in bad if why == "missing"}):
        if folder is None and d and not (root / d).is_dir():
            raise CompetitionError(
                f"{root / d} does not exist but {split} ids point into it (first: "
                f"{next(p for _, _, p in bad if p.startswith(d))!r}); unzip the images into it"
            )
    exts = "|".join(e[1:] for e in IMAGE_EXTS)
    what = {
        "outside": lambda p: (
            f"{p!r} points outside {root} (to {(root / p).resolve()}); ids "
            "must stay inside the competition folder: copy the image in"
        ),
        "missing": lambda p: f"image {root / p} not found; re-download or unzip the images",
        "no_image": lambda p: (
            f"no image {folder}/{p}.<{exts}>; add it, or set {split}_images "
            f"in {root}/competition.toml"
        ),
    }
    info = {n: (why, p) for n, why, p in bad}
    return _rows(csv_path, np.array(list(info), dtype=int), lambda n: what[info[n][0]](info[n][1]))


def first_problem(root: Path, problems: list[str]) -> str:
    """What every stage shows: the first problem and how many more ``make check`` would list."""
    more = f"; {len(problems) - 1} more problem(s): make check COMP={root} lists them all"
    return problems[0] + (more if len(problems) > 1 else "")
