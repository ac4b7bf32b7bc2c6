"""The train labels checked against what the competition asks for, before anything trains:
the sample submission's class columns against the train classes, an ordinal task's grades, and
the separator of multi-label sets. Each problem is one line naming the file, the row, the id or
the class, and a fix that keeps the data right; ``competition.toml`` keys opt in to the two
repairs that are safe (``sample_only_classes = "zero"``, ``train_only_classes = "drop"``).
"""

from __future__ import annotations

from pathlib import Path

import pandas as pd

from ..errors import CompetitionError
from .task import class_order

SAMPLE_ONLY = "sample_only_classes"  # "zero": a class only the sample has gets probability 0
TRAIN_ONLY = "train_only_classes"  # "drop": train rows of a class the sample lacks are dropped
SET_SEPARATORS = (",", ";", "|")  # what a label set is written with instead of spaces


def read_as_task(
    path: Path, df: pd.DataFrame, id_col: str, col: str, layout: str, settings
) -> tuple[pd.DataFrame, list[str]]:
    """The train labels as the task reads them: an ordinal task's grades checked, label sets
    written with another separator read as sets (or refused); and the notes on what was read."""
    notes = []
    if settings.get("task") == "ordinal":
        ordinal_grades(path, df, id_col, col)
    if layout == "csv" and settings.get("task", "multilabel") == "multilabel":
        df, note = label_set_separators(path, df, id_col, col)
        notes += [note] if note else []
    return df, notes


def settle(
    train: pd.DataFrame,
    drop: tuple[str, ...],
    kind: str,
    train_csv: Path,
    sample_path: Path,
    class_columns: list[str],
    settings,
    notes: list[str],
) -> tuple[pd.DataFrame, list[str], list[str]]:
    """``(train, classes, sample-only columns)`` once every row was checked under its own row
    number: the rows of ``drop`` (``train_only_classes``) left out, the classes, and the
    sample's columns no train row carries (``sample_only``); a note in ``notes`` for each."""
    if drop:
        n = int(train["label"].isin(drop).sum())
        train = train[~train["label"].isin(drop)].reset_index(drop=True)
        notes.append(
            f"note: {train_csv.name}: {n} rows of {len(drop)} classes without a column in "
            f'{sample_path.name} left out ({", ".join(drop[:5])}; {TRAIN_ONLY} = "drop")'
        )
    classes = class_order(train["label"][train["label"] != ""], kind)
    only = sample_only(sample_path, train_csv, class_columns, classes, settings)
    if only:
        notes.append(
            f"note: {sample_path.name} columns {', '.join(only)} get probability 0: no train "
            f'row carries them ({SAMPLE_ONLY} = "zero")'
        )
    return train, classes, only


def sample_only(
    sample_path: Path, train_csv: Path, class_columns: list[str], classes: list[str], settings
) -> list[str]:
    """The sample's class columns that no train row carries: refused (no model can learn them,
    and ``make ensemble`` would stop after the whole training), unless ``competition.toml`` says
    ``sample_only_classes = "zero"``; then returned, to be written with probability 0."""
    only = [c for c in class_columns if c not in set(classes)]
    if not only:
        return []
    choice = settings.get(SAMPLE_ONLY)
    if choice == "zero":
        return only
    if choice is not None:
        raise CompetitionError(
            f"{sample_path.parent}/competition.toml: {SAMPLE_ONLY} = {choice!r}; the one value "
            'is "zero"'
        )
    more = f" ({len(only)} such columns: {', '.join(only[:5])}{', ...' if len(only) > 5 else ''})"
    raise CompetitionError(
        f"{sample_path.name} has a column for class {only[0]!r} that no row of "
        f"{train_csv.name} carries{more if len(only) > 1 else ''}; no model can learn it: add "
        f'train images of it, or set {SAMPLE_ONLY} = "zero" in {sample_path.parent}/'
        "competition.toml to write probability 0 in its column"
    )


def train_only(
    path: Path, df: pd.DataFrame, col: str, class_columns: list[str], sample: Path, settings
) -> tuple[str, ...]:
    """The classes of ``df``'s label column ``col`` that the sample has no column for, when
    ``train_only_classes = "drop"`` says to leave their rows out (Kaggle scores only the
    sample's columns); without it such a class is refused naming it and its rows."""
    extra = df[col][~df[col].isin(class_columns) & (df[col] != "")]
    if extra.empty:
        return ()
    choice = settings.get(TRAIN_ONLY)
    if choice == "drop":
        return tuple(sorted(set(extra)))
    if choice is not None:
        raise CompetitionError(
            f'{sample.parent}/competition.toml: {TRAIN_ONLY} = {choice!r}; the one value is "drop"'
        )
    counts = extra.value_counts()
    first, n = counts.index[0], int(counts.iloc[0])
    others = f"; {len(counts)} such classes, {len(extra)} rows" if len(counts) > 1 else ""
    raise CompetitionError(
        f"{path.name} column {col!r}: class {first!r} ({n} row{'s' * (n != 1)}, first row "
        f"{int(extra.index[extra == first][0]) + 2}) has no column in {sample.name}{others}; "
        f'Kaggle scores only the sample\'s columns: set {TRAIN_ONLY} = "drop" in '
        f"{sample.parent}/competition.toml to leave those rows out, or use the competition's "
        "own sample submission if this one lacks the column"
    )


def ordinal_grades(path: Path, df: pd.DataFrame, id_col: str, col: str) -> None:
    """An ordinal task's labels must all be integer grades: the first row that is not is
    refused with its id and value (a text grade is a typo to fix, not a class to add)."""
    labels = df[col][df[col] != ""].astype(str)
    bad = labels[~labels.str.strip().str.fullmatch(r"[+-]?\d+")]
    if bad.empty:
        return
    i = bad.index[0]
    grades = sorted(set(labels) - set(bad), key=int)
    more = f" ({len(bad)} such rows)" if len(bad) > 1 else ""
    raise CompetitionError(
        f"{path} row {i + 2}: grade {bad[i]!r} for id {df[id_col][i]!r} is not an integer"
        f"{more}; task = 'ordinal' needs integer grades as labels (the others are "
        f"{', '.join(grades[:8])}): write that row's grade as one of them"
    )


def label_set_separators(
    path: Path, df: pd.DataFrame, id_col: str, col: str
) -> tuple[pd.DataFrame, str]:
    """Multi-label sets are space-separated. A row written with ``,``/``;``/``|`` while the
    rest use spaces is read as a set when every part is a label seen elsewhere (a note says so),
    else refused naming its row. Returns the table and the note ("" when none)."""
    labels = df[col].astype(str)
    odd = labels[labels.str.contains("|".join(f"\\{s}" for s in SET_SEPARATORS), regex=True)]
    plain = labels[~labels.index.isin(odd.index)]
    if odd.empty or not plain.str.contains(" ", regex=False).any():
        return df, ""  # no label sets to compare with: names with commas stay names
    known = {t for text in plain for t in text.split()}
    fixed = {}
    for i, text in odd.items():
        sep = next(s for s in SET_SEPARATORS if s in text)
        parts = [p.strip() for p in text.replace(sep, " ").split()]
        if not set(parts) <= known:
            unknown = next(p for p in parts if p not in known)
            raise CompetitionError(
                f"{path} row {i + 2}: labels {text!r} for id {df[id_col][i]!r} are separated by "
                f"{sep!r}, the other rows by spaces, and {unknown!r} is no label of theirs; write "
                f"the set space-separated, e.g. {' '.join(parts)!r}"
            )
        fixed[i] = " ".join(parts)
    out = df.copy()
    out.loc[list(fixed), col] = list(fixed.values())
    first = next(iter(fixed))
    note = (
        f"note: {path} row {first + 2}: labels {odd[first]!r} read as the set "
        f"{fixed[first]!r} (the other rows separate labels with spaces; {len(fixed)} such rows)"
    )
    return out, note
