"""Read a competition folder exactly as Kaggle ships it.

Finds the sample submission, the train labels, the id and target columns, and each image file.
Train labels come from a CSV with a label column (Classify Leaves, dog-breed-identification),
from one-hot class columns (plant-pathology-2020), or from class folders without a CSV
(plant-seedlings: ``train/<class>/<file>``). Ids are relative paths (``images/0.jpg``), bare ids
or file names in some folder (CIFAR-10: ``train/<id>.png``; aerial-cactus: ``train/<id>``).
What the competition asks for (task, submission format, metric) is in ``task.py``. Where
detection cannot decide, an optional ``competition.toml`` in the folder says it; the error lists
what was found.
"""

from __future__ import annotations

import re
import tomllib
from dataclasses import dataclass, field
from pathlib import Path
from typing import NamedTuple

import pandas as pd

from ..errors import CompetitionError
from . import classes as class_checks
from . import layouts, rules
from .metrics import metric_names
from .paths import resolve_images
from .rules import read_csv, read_csv_header
from .task import Task, detect_task

# competition.toml's keys and their meaning (``setting_help`` fills in the metric names)
SETTINGS = {
    "slug": "Kaggle competition slug for `kaggle competitions submit -c` (default: folder name)",
    "train_csv": "train CSV file name, e.g. trainLabels.csv",
    "sample_submission": "sample submission CSV file name",
    "id_column": "id column name (shared by train CSV and sample submission)",
    "target_column": "label column name",
    "train_images": "folder (relative to the competition) holding train images named <id>.<ext>, "
    "or holding one folder of images per class when there is no train CSV",
    "test_images": "folder holding test images named <id>.<ext>",
    "task": "multiclass, binary or ordinal (integer grades); default: detected",
    "metric": "the competition's metric ({metrics}); default: inferred from the sample submission",
    "positive_label": "binary probability submissions: the class whose probability is written",
    "group_column": "train CSV column whose rows must share a fold (a patient, a driver)",
    "sample_only_classes": '"zero": write probability 0 in the sample\'s columns of classes no '
    "train row carries (default: refused)",
    "train_only_classes": '"drop": leave out the train rows of classes the sample submission has '
    "no column for (default: refused)",
}


def setting_help(key: str) -> str:
    """What ``competition.toml``'s ``key`` means; the metric key's list read from the registry."""
    return SETTINGS[key].replace("{metrics}", metric_names())


class Tables(NamedTuple):
    """What the CSVs (or class folders) hold, before any image is looked up."""

    sample_path: Path
    sample: pd.DataFrame
    train_csv: Path  # the train CSV, or the class-folders folder
    train_df: pd.DataFrame  # the id column and one label per row in ``target_col``
    id_col: str
    target_col: str
    class_columns: list[str]  # the sample's probability columns (empty for one target)
    layout: str  # "csv", "one-hot", "multi-hot" or "class-folders"
    drop: tuple[str, ...] = ()  # classes whose rows are left out (train_only_classes = "drop")


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
    problems: list[str] = field(default_factory=list)  # only with strict=False; else raised
    task: Task = field(default_factory=lambda: Task("multiclass", "label", "accuracy"))
    class_columns: list[str] = field(default_factory=list)  # sample's probability columns
    layout: str = "csv"  # "csv", "one-hot" or "class-folders": where the train labels come from
    # sample class columns no train row carries, written with probability 0 (sample_only_classes)
    sample_only: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)  # what was read differently, for the CLI


def load_competition(root: str | Path, strict: bool = True) -> Competition:
    """Parse a competition folder without opening any image (``make check`` decodes them).

    ``strict``: the first problem raises ``CompetitionError``; otherwise problems a user can fix
    row by row are collected in ``problems`` (unusable rows get no path) and only problems that
    stop parsing raise. ``train``: id, label, path; ``test``: id, path in sample order.
    """
    root = Path(root)
    if not root.is_dir():
        raise CompetitionError(
            f"competition folder {root} not found; download it with "
            f"`kaggle competitions download -c <slug>` and unzip it into {root}/"
        )
    settings = _read_settings(root)
    csvs = sorted(p for p in root.glob("*.csv") if p.is_file())
    t = _read_tables(root, csvs, settings)
    test_ids = t.sample[t.id_col]
    problems = rules.train_problems(t.train_csv, t.train_df, t.id_col, t.target_col)
    problems += rules.id_problems(t.sample_path, test_ids)
    problems += rules.test_csv_problems(
        csvs, (t.sample_path, t.train_csv), t.sample_path, test_ids, t.id_col
    )
    if problems and strict:
        raise CompetitionError(rules.first_problem(root, problems))
    df, notes = class_checks.read_as_task(
        t.train_csv, t.train_df, t.id_col, t.target_col, t.layout, settings
    )
    t = t._replace(train_df=df)
    labels = t.train_df[t.target_col]
    labels = labels[(labels != "") & ~labels.isin(t.drop)]
    task = detect_task(
        settings, t.sample, t.id_col, labels, t.class_columns, t.sample_path.name, t.layout
    )
    paths = _image_paths(root, settings, t, test_ids, problems)
    if problems and strict:
        raise CompetitionError(rules.first_problem(root, problems))
    train = _train_table(root, settings, t, paths["train"])
    train, classes, only = class_checks.settle(
        train, t.drop, task.kind, t.train_csv, t.sample_path, t.class_columns, settings, notes
    )
    return Competition(
        root=root,
        name=root.name,
        slug=settings.get("slug", root.name),
        id_col=t.id_col,
        target_col=t.target_col,
        sample_path=t.sample_path,
        train_csv=t.train_csv,
        train=train,
        test=pd.DataFrame({"id": test_ids, "path": paths["test"]}),
        classes=classes,
        problems=problems,
        task=task,
        class_columns=t.class_columns,
        layout=t.layout,
        sample_only=only,
        notes=notes,
    )


def _image_paths(
    root: Path, settings: dict[str, str], t: Tables, test_ids: pd.Series, problems: list[str]
) -> dict[str, list[str | None]]:
    """Each split's image paths; the rows without a usable image are added to ``problems``."""
    paths = {}
    for split, csv_path, ids in (
        ("train", t.train_csv, t.train_df[t.id_col].tolist()),
        ("test", t.sample_path, test_ids.tolist()),
    ):
        paths[split], bad, sub = resolve_images(root, ids, split, settings.get(f"{split}_images"))
        problems += rules.image_problems(root, split, csv_path, bad, sub)
    problems += rules.overlap_problems(root, paths["train"], paths["test"])
    return paths


def _train_table(
    root: Path, settings: dict[str, str], t: Tables, paths: list[str | None]
) -> pd.DataFrame:
    """``id, label, path`` per train row, and ``group`` when competition.toml names a column
    whose rows (a patient, a driver) must share a fold."""
    df = t.train_df
    train = pd.DataFrame({"id": df[t.id_col], "label": df[t.target_col], "path": paths})
    if "group_column" in settings:
        col = settings["group_column"]
        if col not in df.columns:
            raise CompetitionError(
                f"{root}/competition.toml: group_column = {col!r} is not a column of "
                f"{t.train_csv.name} (columns: {', '.join(df.columns)})"
            )
        train["group"] = df[col].to_numpy()
    return train


def _read_tables(root: Path, csvs: list[Path], settings: dict[str, str]) -> Tables:
    """``(sample_path, sample, train_csv, train_df, id_col, target_col, class_columns, layout)``.

    ``train_df`` has the id column and one label per row in ``target_col``, whatever the layout;
    ``class_columns`` are the sample's probability columns (empty for a one-target sample)."""
    sample_path = _find_sample(root, csvs, settings)
    sample = read_csv(sample_path)
    if len(sample) == 0:
        raise CompetitionError(
            f"{sample_path} has a header but no rows; re-download the competition files"
        )
    cols = list(sample.columns)
    if len(cols) > 2 and "target_column" not in settings:
        id_col = settings.get("id_column", cols[0])
        if id_col not in cols:
            raise CompetitionError(
                f"{sample_path} has no column {id_col!r} (columns: {', '.join(cols)})"
            )
        class_cols = [c for c in cols if c != id_col]
        train_csv, train_df, target, layout, drop = layouts.class_column_tables(
            root, csvs, sample_path, id_col, class_cols, settings
        )
        return Tables(
            sample_path, sample, train_csv, train_df, id_col, target, class_cols, layout, drop
        )
    id_col, target_col = _sample_columns(sample_path, sample, settings)
    folder = (
        layouts.class_folders(root, settings)
        if not layouts.has_train_csv(csvs, sample_path, id_col, target_col, settings)
        else None
    )
    if folder is not None:
        train_df = layouts.folder_table(root, folder, id_col, target_col)
        return Tables(
            sample_path, sample, root / folder, train_df, id_col, target_col, [], "class-folders"
        )
    train_csv = _find_train_csv(root, csvs, sample_path, id_col, target_col, settings)
    train_df = read_csv(train_csv)
    for col in (id_col, target_col):
        if col not in train_df.columns:
            raise CompetitionError(
                f"{train_csv} has no column {col!r} (columns: {', '.join(train_df.columns)}); "
                f"set id_column/target_column in {root}/competition.toml"
            )
    return Tables(sample_path, sample, train_csv, train_df, id_col, target_col, [], "csv")


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


def _named_file(root: Path, settings: dict[str, str], key: str) -> Path | None:
    """The file ``competition.toml`` names under ``key``, if it names one; it must exist."""
    if key not in settings:
        return None
    path = root / settings[key]
    if not path.is_file():
        raise CompetitionError(
            f"{root}/competition.toml names {key} {path.name!r}, which does not exist"
        )
    return path


def _find_sample(root: Path, csvs: list[Path], settings: dict[str, str]) -> Path:
    if (path := _named_file(root, settings, "sample_submission")) is not None:
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
    if (path := _named_file(root, settings, "train_csv")) is not None:
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
    for p in csvs if not found else []:
        if p != sample_path:
            read_csv(p)  # says why if the train CSV is empty, ';'-separated, not UTF-8, ...
    if len(found) != 1:
        listing = "; ".join(f"{p.name}: {', '.join(read_csv_header(p))}" for p in csvs)
        raise CompetitionError(
            f"{root}: expected one train CSV with columns {id_col!r} and {target_col!r} "
            f"(from {sample_path.name}), found {len(found)} [{listing}]; "
            f'set train_csv = "<file>.csv" in {root}/competition.toml{layouts.not_served(root, found)}'
        )
    return found[0]
