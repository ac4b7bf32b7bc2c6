"""What a competition asks for: the task, the submission format and the metric.

Detected from the files where they decide it (the sample submission's columns and values, the
train labels), settled by ``competition.toml`` (``task``, ``metric``, ``positive_label``) where
they cannot: histopathologic-cancer-detection (``id,label``, scored by ROC AUC) and
aptos2019-blindness-detection (``id_code,diagnosis``, grades scored by quadratic kappa) look
exactly like an ``id,label`` accuracy competition. ``Task.describe`` is the line every stage
prints first: what was detected and which key changes it.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd
from scipy.special import expit, softmax

from ..errors import CompetitionError
from .metrics import METRICS, scoring

# single-label tasks (every row has one class), and multi-label (a row has a set of labels)
TASKS = ("multiclass", "binary", "ordinal", "multilabel")
# submission formats: one label per row; P(positive) per row; one probability column per class;
# a space-separated set of labels per row; the k most probable labels per row, best first
FORMATS = ("label", "probability", "class_probabilities", "label_list", "top_k")
# the metrics each format can be scored by are the metrics' own trait: metrics.scoring(fmt)


@dataclass(frozen=True)
class Task:
    """``kind`` (one of TASKS), submission ``format`` (one of FORMATS), ``metric`` (a key of
    ``metrics.METRICS``), the ``positive`` class of a binary probability format, and how each
    of them was decided (``why``: field -> "detected: ..." or "competition.toml")."""

    kind: str
    format: str
    metric: str
    positive: str | None = None
    why: tuple[tuple[str, str], ...] = ()

    @property
    def greater_is_better(self) -> bool:
        return METRICS[self.metric].greater_is_better

    @property
    def multilabel(self) -> bool:
        return self.kind == "multilabel"

    def score(self, y: np.ndarray, probs: np.ndarray) -> float:
        """The competition's metric of ``probs (N, C)`` against ``y``: ``(N,)`` class indices,
        or ``(N, C)`` 0/1 indicators for a multi-label task (``probs`` then per label)."""
        return METRICS[self.metric].fn(y, probs)

    def probabilities(self, logits: np.ndarray) -> np.ndarray:
        """``(N, C)`` logits to probabilities: softmax over classes, or sigmoid per label."""
        z = np.asarray(logits, dtype=np.float64)
        return expit(z) if self.multilabel else softmax(z, axis=-1)

    def better(self, a: float, b: float) -> bool:
        """Whether score ``a`` beats ``b`` under this metric's direction."""
        return a > b if self.greater_is_better else a < b

    def describe(self, comp_root: str) -> str:
        """``<root>: task ... (why); submission ...; metric ...; change with ...``: one line."""
        return f"{comp_root}: {self.brief(comp_root)}"

    def brief(self, comp_root: str) -> str:
        why = dict(self.why)
        parts = [
            f"task {self.kind} ({why.get('task', 'detected')})",
            f"submission {self.format} ({why.get('format', 'detected')})",
            f"metric {self.metric} ({why.get('metric', 'detected')})",
        ]
        if self.positive is not None:
            parts.append(f"positive class {self.positive!r} ({why.get('positive', 'detected')})")
        return (
            "; ".join(parts) + f"; change with task/metric/positive_label in "
            f"{comp_root}/competition.toml"
        )


def detect_task(
    settings: dict[str, str],
    sample: pd.DataFrame,
    id_col: str,
    labels: pd.Series,
    class_columns: list[str],
    sample_path: str,
    layout: str = "csv",
) -> Task:
    """The task of a competition whose train ``labels`` (one class name per row, or a
    space-separated set of them for multi-label rows) are known and whose sample submission has
    ``class_columns`` (one probability column per class) or one target column besides
    ``id_col``: the kind, then the format, the metric and the positive class."""
    _refuse_regression(labels, sample_path)
    why: dict[str, str] = {}
    sets = layout == "multi-hot" or (
        layout == "csv"
        and settings.get("task", "multilabel") == "multilabel"
        and _label_sets(labels)
    )
    values = class_order(labels, "multilabel" if sets else "multiclass")
    fmt = _format(sample, id_col, class_columns, sample_path, why)
    kind = _kind(settings, sets, layout, values, why)
    if kind == "multilabel":
        return _multilabel(settings, fmt, values, why)
    fmt, metric = _metric(settings, fmt, kind, layout, why)
    positive = _positive(settings, values, kind, sample_path, why) if fmt == "probability" else None
    return Task(kind, fmt, metric, positive, tuple(why.items()))


def _format(
    sample: pd.DataFrame, id_col: str, class_columns: list[str], sample_path: str, why: dict
) -> str:
    """What the sample submission's columns and values say the format is."""
    if class_columns:
        why["format"] = f"{len(class_columns)} class columns in {sample_path}"
        return "class_probabilities"
    target = [c for c in sample.columns if c != id_col][0]
    why["format"] = f"{target!r} values in {sample_path}"
    return "probability" if _looks_like_probabilities(sample[target]) else "label"


def _kind(settings: dict, sets: bool, layout: str, values: list[str], why: dict) -> str:
    """The task: competition.toml's, else multi-label for label sets, binary for 2 classes."""
    kind = settings.get("task")
    if kind is not None:
        why["task"] = "competition.toml"
    elif sets:
        kind = "multilabel"
        why["task"] = "rows with several labels" + (" set to 1" if layout == "multi-hot" else "")
    else:
        kind = "binary" if len(values) == 2 else "multiclass"
        why["task"] = f"{len(values)} classes"
    if kind not in TASKS:
        raise CompetitionError(f"competition.toml: task = {kind!r}; valid: {', '.join(TASKS)}")
    if kind == "ordinal" and not all(_is_int(v) for v in values):
        raise CompetitionError(
            f"task = 'ordinal' needs integer grades as labels, found {values[:5]}; "
            "use task = 'multiclass'"
        )
    return kind


def _metric(settings: dict, fmt: str, kind: str, layout: str, why: dict) -> tuple[str, str]:
    """``(format, metric)``: competition.toml's metric (which may turn a label sample into a
    probability or top-k one), else the one the format and layout imply."""
    metric = settings.get("metric")
    if metric is not None:
        why["metric"] = "competition.toml"
        valid = sorted(n for n, m in METRICS.items() if m.formats)
        if metric not in valid:
            raise CompetitionError(
                f"competition.toml: metric = {metric!r}; valid: {', '.join(valid)}"
            )
        for other, what in (("probability", "probabilities"), ("top_k", "ranked labels")):
            if fmt == "label" and metric in scoring(other):
                fmt, why["format"] = other, f"metric {metric} scores {what}"
    elif fmt == "class_probabilities" and layout == "one-hot":
        metric, why["metric"] = "mean_column_auc", "one-hot train columns, as plant-pathology"
    else:
        ordinal = kind == "ordinal" and fmt == "label"
        metric = "quadratic_kappa" if ordinal else scoring(fmt)[0]
        why["metric"] = f"inferred from the {fmt} format"
    if metric not in scoring(fmt):
        raise CompetitionError(
            f"metric {metric} cannot score a {fmt} submission ({why['format']}); "
            f"with this sample submission use one of {', '.join(scoring(fmt))}"
        )
    return fmt, metric


def _positive(settings: dict, values: list[str], kind: str, sample_path: str, why: dict) -> str:
    """The class whose probability a binary probability submission holds."""
    if kind != "binary" or len(values) != 2:
        raise CompetitionError(
            f"{sample_path}: one probability per row needs 2 classes, the train labels have "
            f"{len(values)} ({', '.join(values[:5])}); set task/metric in competition.toml"
        )
    positive = settings.get("positive_label")
    if positive is not None:
        why["positive"] = "competition.toml"
    else:
        positive = "1" if "1" in values else values[1]
        why["positive"] = "label 1" if positive == "1" else "the second class in sorted order"
    if positive not in values:
        raise CompetitionError(
            f"competition.toml: positive_label = {positive!r} is not a train label "
            f"({', '.join(values)})"
        )
    return positive


def _multilabel(settings: dict[str, str], fmt: str, values: list[str], why: dict) -> Task:
    """A multi-label task: label sets per row (``label_list``) or a probability per label."""
    if fmt == "label":
        fmt = "label_list"
    elif fmt == "probability":
        raise CompetitionError(
            "a multi-label competition needs a sample with a label-set column or one column per "
            "label, not one probability per row"
        )
    valid = [m for m in scoring(fmt) if METRICS[m].multilabel]
    metric = settings.get("metric")
    if metric is None:
        metric = valid[0]  # samples_f1 for label sets, mean_column_auc for label columns
        why["metric"] = f"inferred from the {fmt} format"
    else:
        why["metric"] = "competition.toml"
    if metric not in valid:
        raise CompetitionError(
            f"metric {metric} cannot score a multi-label {fmt} submission; use {', '.join(valid)}"
        )
    return Task("multilabel", fmt, metric, None, tuple(why.items()))


def class_order(labels: pd.Series, kind: str) -> list[str]:
    """The classes as the logits' class axis orders them: sorted, numerically for grades; for
    multi-label rows, every label of every row's set."""
    if kind == "multilabel":
        return sorted({t for text in labels for t in str(text).split()})
    values = labels.unique().tolist()
    return sorted(values, key=int) if kind == "ordinal" else sorted(values)


def encode(labels: pd.Series, classes: list[str], kind: str) -> np.ndarray:
    """Targets of ``labels``: ``(N,)`` int64 class indices, or for a multi-label task ``(N, C)``
    uint8 indicators of each row's space-separated label set."""
    index = {c: i for i, c in enumerate(classes)}
    if kind != "multilabel":
        idx = pd.Index(classes).get_indexer(labels).astype(np.int64)
        if (idx < 0).any():
            bad = pd.Series(labels)[idx < 0].iloc[0]
            raise ValueError(f"label {bad!r} is not one of the {len(classes)} classes")
        return idx
    y = np.zeros((len(labels), len(classes)), dtype=np.uint8)
    for n, text in enumerate(labels):
        for t in str(text).split():
            y[n, index[t]] = 1
    return y


def _refuse_regression(labels: pd.Series, sample_path: str) -> None:
    """A target of many distinct fractional numbers is a regression target, not classes."""
    values = pd.to_numeric(pd.Series(labels.unique()), errors="coerce")
    if values.notna().all() and len(values) > 20 and (values % 1 != 0).mean() > 0.5:
        raise CompetitionError(
            f"the train labels for {sample_path} are {len(values)} distinct numbers such as "
            f"{', '.join(map(str, values[:3]))}: a regression target, which this pipeline does "
            "not fit; it serves classification (label, probability, class probability columns, "
            "label sets, top-k labels)"
        )


def _label_sets(labels: pd.Series) -> bool:
    """Space-separated label sets (plant-pathology-2021 ``rust scab``), not class names with a
    space in them (plant-seedlings ``Common wheat``): some row with several words has every
    word also appearing alone as a whole label elsewhere."""
    alone = set(labels[~labels.str.contains(" ", regex=False)])
    return any(set(x.split()) <= alone for x in labels if " " in x)


def _looks_like_probabilities(col: pd.Series) -> bool:
    """Sample values such as 0.5: numbers in [0, 1] not all of them integers."""
    v = pd.to_numeric(col, errors="coerce")
    return bool(v.notna().all() and v.between(0, 1).all() and (v % 1 != 0).any())


def _is_int(text: str) -> bool:
    try:
        int(text)
    except ValueError:
        return False
    return True
