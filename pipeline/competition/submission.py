"""The submission format: the sample submission's exact columns and id order, in and out.

``write_submission`` fills the sample's columns from predicted class indices; ``validate_submission``
checks a file against the sample and the train classes. Every failure is one ``SubmissionError``
line naming the file, the row or value, and the fix.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

from .. import artifacts
from ..errors import CompetitionError, SubmissionError
from .load import Competition
from .rules import read_csv

REWRITE = "re-run the ensemble stage (make ensemble) to rewrite it"
TOP_K = 5  # labels per row of a top-k (MAP@5) submission


def write_submission(
    comp: Competition, path: Path, pred: np.ndarray, probs: np.ndarray | None = None
) -> Path:
    """The sample submission's columns and id order, filled in the competition's format:
    ``pred (T,)`` class indices for a label format; ``probs (T, C)`` (classes in
    ``comp.classes`` order) for P(positive) or one probability column per class."""
    cols = list(read_csv(comp.sample_path).columns)
    fmt, classes = comp.task.format, list(comp.classes)
    values = {comp.id_col: comp.test["id"].to_numpy()}
    if fmt == "label":
        values[comp.target_col] = np.array(classes)[pred]
    elif fmt == "label_list":
        values[comp.target_col] = label_sets(probs, classes)
    elif fmt == "top_k":
        top = np.argsort(-np.asarray(probs), axis=1, kind="stable")[:, :TOP_K]
        values[comp.target_col] = [" ".join(np.array(classes)[row]) for row in top]
    elif fmt == "probability":
        values[comp.target_col] = probs[:, classes.index(comp.task.positive)]
    else:
        # a class only the sample has (sample_only_classes = "zero", else refused on loading)
        zero = np.zeros(len(probs))
        values |= {
            c: probs[:, classes.index(c)] if c in classes else zero for c in comp.class_columns
        }
    if sorted(cols) != sorted(values):
        raise SubmissionError(
            f"{comp.sample_path} has columns {cols}; a {fmt} submission fills "
            f"{sorted(values)}; fix the sample submission or competition.toml"
        )
    return artifacts.write_csv(path, pd.DataFrame({c: values[c] for c in cols}))


def label_sets(probs: np.ndarray, classes: list[str]) -> list[str]:
    """Space-separated labels of each row whose probability is at least 1/2; a row with none
    keeps its most probable label."""
    on = np.asarray(probs) >= 0.5
    on[np.arange(len(on)), np.asarray(probs).argmax(axis=1)] |= ~on.any(axis=1)
    names = np.array(classes, dtype=object)
    return [" ".join(names[row]) for row in on]


def validate_for(comp: Competition, sub_path: Path) -> pd.DataFrame:
    """``validate_submission`` with everything it needs taken from ``comp``."""
    return validate_submission(
        sub_path,
        comp.sample_path,
        comp.classes,
        comp.id_col,
        comp.target_col,
        fmt=comp.task.format,
        sum_to_one=comp.task.metric == "log_loss",
    )


def validate_submission(
    sub_path: Path,
    sample_path: Path,
    classes: list[str],
    id_col: str,
    target_col: str,
    fmt: str = "label",
    sum_to_one: bool = False,
) -> pd.DataFrame:
    """Check ``sub_path`` against ``sample_path`` and the train classes; return it parsed.

    ``fmt`` "label": every value a train class; "probability" (``target_col``) and
    "class_probabilities" (every column but the id): numbers in [0, 1], and with
    ``sum_to_one`` each row's class probabilities add up to 1."""
    sub_path, sample_path = Path(sub_path), Path(sample_path)
    sub = _read_submission(sub_path)
    sample = read_csv(sample_path)
    sname, want, got = sample_path.name, list(sample.columns), list(sub.columns)
    if got != want:
        missing, extra = [c for c in want if c not in got], [c for c in got if c not in want]
        what = f"missing [{', '.join(missing)}], extra [{', '.join(extra)}]"
        what = what if missing or extra else "same names, wrong order"
        raise SubmissionError(
            f"{sub_path}: columns differ from {sname} ({what}): expected [{', '.join(want)}], "
            f"found [{', '.join(got)}]; write the header exactly as: {','.join(want)}"
        )
    if len(sub) != len(sample) or len(sub) == 0:
        what = "a header but no rows" if len(sub) == 0 else f"{len(sub)} rows"
        raise SubmissionError(
            f"{sub_path} has {what}; {sname} has {len(sample)} rows; "
            f"write exactly one row per id of {sname} ({REWRITE})"
        )
    _check_ids(sub_path, sname, sub[id_col].tolist(), sample[id_col].tolist())
    if fmt == "label":
        _check_labels(sub_path, sub, classes, id_col, target_col)
    elif fmt in ("label_list", "top_k"):
        _check_label_sets(
            sub_path, sub, classes, id_col, target_col, TOP_K if fmt == "top_k" else 0
        )
    else:
        cols = [target_col] if fmt == "probability" else [c for c in want if c != id_col]
        _check_probabilities(sub_path, sub, id_col, cols, sum_to_one and fmt != "probability")
    return sub


def _check_probabilities(
    path: Path, sub: pd.DataFrame, id_col: str, cols: list[str], sum_to_one: bool
) -> None:
    """Numbers in [0, 1] in ``cols``; with ``sum_to_one`` rows adding up to 1 (within 1e-3)."""
    values = sub[cols].apply(pd.to_numeric, errors="coerce").to_numpy(dtype=np.float64)
    bad = ~np.isfinite(values) | (values < 0) | (values > 1)
    if bad.any():
        r, c = map(int, np.argwhere(bad)[0])
        raise SubmissionError(
            f"{path} row {r + 2}: {cols[c]!r} is {sub[cols[c]].iloc[r]!r} for id "
            f"{sub[id_col].iloc[r]!r} ({int(bad.any(axis=1).sum())} such rows); write a "
            f"probability between 0 and 1 ({REWRITE})"
        )
    if sum_to_one:
        off = np.abs(values.sum(axis=1) - 1) > 1e-3
        if off.any():
            r = int(np.argmax(off))
            raise SubmissionError(
                f"{path} row {r + 2}: the {len(cols)} class probabilities of id "
                f"{sub[id_col].iloc[r]!r} add up to {values[r].sum():.4f}, not 1 "
                f"({int(off.sum())} such rows); normalise each row ({REWRITE})"
            )


def _read_submission(path: Path) -> pd.DataFrame:
    if not path.is_file():
        raise SubmissionError(f"{path} not found; {REWRITE}, or pass the right submission folder")
    if not path.read_bytes().removeprefix(b"\xef\xbb\xbf").strip():
        raise SubmissionError(f"{path} is empty (no header, no rows); {REWRITE}")
    try:
        return read_csv(path)
    except CompetitionError as e:
        raise SubmissionError(f"{' '.join(str(e).split())}; {REWRITE}") from None


def _check_ids(path: Path, sname: str, ids: list[str], sample_ids: list[str]) -> None:
    """Empty, duplicate and unknown ids (first offending row), then the sample's order."""
    known, first_row = set(sample_ids), {}
    for row, value in enumerate(ids, start=2):
        if value == "":
            problem, fix = "empty id", f"every row needs an id from {sname}"
        elif value in first_row:
            problem = f"duplicate id {value!r} (first at row {first_row[value]})"
            fix = "each id must appear exactly once"
        elif value not in known:
            problem = f"id {value!r} is not in {sname}"
            fix = f"use the ids of {sname} unchanged (same spelling, leading zeros, extension)"
        else:
            first_row[value] = row
            continue
        raise SubmissionError(f"{path} row {row}: {problem}; {fix}")
    for row, (value, expected) in enumerate(zip(ids, sample_ids, strict=True), start=2):
        if value != expected:
            raise SubmissionError(
                f"{path} row {row}: ids are in a different order from {sname}: expected "
                f"{expected!r}, found {value!r}; write the rows in {sname} order"
            )


def _check_labels(path: Path, sub: pd.DataFrame, classes: list[str], id_col: str, col: str) -> None:
    labels, valid = sub[col].tolist(), set(classes)
    bad = [i for i, v in enumerate(labels) if v not in valid]
    empty = [i for i in bad if labels[i] == ""]
    if empty:
        raise SubmissionError(
            f"{path} row {empty[0] + 2}: empty {col!r} for id {sub[id_col].iloc[empty[0]]!r} "
            f"({len(empty)} such rows); every row needs a predicted class"
        )
    if not bad:
        return
    shown = ", ".join(repr(c) for c in classes[:5]) + (", ..." if len(classes) > 5 else "")
    index_like = all(labels[i].isdigit() for i in bad) and not all(c.isdigit() for c in classes)
    fix = "write one of the train labels exactly"
    if index_like:
        fix = "it looks like a class index: map index k to classes[k] (the sorted train labels)"
    raise SubmissionError(
        f"{path} row {bad[0] + 2}: label {labels[bad[0]]!r} is not a train class "
        f"({len(bad)} such rows; valid: {shown} - {len(classes)} in all); {fix}"
    )


def _check_label_sets(
    path: Path, sub: pd.DataFrame, classes: list[str], id_col: str, col: str, k: int = 0
) -> None:
    """Every row a non-empty space-separated set of train labels (at most ``k``, all different,
    for a ranked top-k row)."""
    valid = set(classes)
    for row, text in enumerate(sub[col].tolist(), start=2):
        tokens = str(text).split()
        bad = [t for t in tokens if t not in valid]
        over = k and (len(tokens) > k or len(set(tokens)) < len(tokens))
        if not tokens or bad or over:
            what = f"label {bad[0]!r} is not a train label" if bad else f"empty {col!r}"
            if over and not bad and tokens:
                what = f"{len(tokens)} labels with repeats or more than {k}"
            shown = ", ".join(repr(c) for c in classes[:5]) + (", ..." if len(classes) > 5 else "")
            raise SubmissionError(
                f"{path} row {row}: {what} for id {sub[id_col].iloc[row - 2]!r}; write one or "
                f"more of the train labels ({shown}) separated by spaces ({REWRITE})"
            )
