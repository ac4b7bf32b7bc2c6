"""Ensemble members: find trained runs, read and cross-check their logits, pick each one's view.

``load_members`` returns the folds (``OOF``) and the members' logits under their chosen views
(``Members``): the two values every later step of the ensemble stage works on.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd
from sklearn.metrics import accuracy_score, log_loss

from .. import artifacts
from ..competition import Competition
from ..competition.task import Task, class_order, encode
from ..errors import ArtifactError
from ..workspace import Workspace
from .blend import softmax
from .nested import ACCURACY


@dataclass(frozen=True)
class OOF:
    """The folds file as the ensemble sees it: ``folds`` table, ``y (N,)`` class indices into
    ``comp.classes``, ``fold (N,)``, and the file's hash that every member must carry."""

    folds: pd.DataFrame
    y: np.ndarray
    fold: np.ndarray
    folds_hash: str


# Member logits (OOF + test) above this many bytes in float32 are kept as float16: 50 members x
# 50,000 rows x 200 classes is 1.9 GiB of OOF logits in float32. Every method computes in float32
# blocks of rows (``blend.row_blocks``); tests/test_methods.py checks that float16 keeps the
# chosen method and its nested score within 1e-3. Multi-label members stay float32.
STORE_FLOAT16_ABOVE = 2**30
FLOAT16_MAX = 60000.0  # larger logits (|z|) would overflow float16: those stay float32


@dataclass(frozen=True)
class Members:
    """Trained runs under their chosen views: ``oof (M, N, C)`` and ``test (M, T, C)`` logits
    (float32, or float16 above ``STORE_FLOAT16_ABOVE``), and one summary per member (per-view
    accuracies, the view used)."""

    runs: list[str]
    summaries: list[dict[str, Any]]
    oof: np.ndarray
    test: np.ndarray


def combine_views(logits: np.ndarray) -> np.ndarray:
    """``(V, N, C)`` view logits -> ``(N, C)`` log of the mean over views of softmax probs."""
    from scipy.special import log_softmax, logsumexp

    logits = np.asarray(logits, dtype=np.float64)
    if logits.ndim != 3 or logits.shape[0] == 0:
        raise ValueError(f"expected logits of shape (V, N, C) with V >= 1, got {logits.shape}")
    return logsumexp(log_softmax(logits, axis=-1), axis=0) - np.log(logits.shape[0])


def load_folds(comp: Competition, ws: Workspace) -> OOF:
    """The folds file, checked against the competition's classes."""
    path = ws.folds_csv
    folds = artifacts.read_folds(path, comp.root, comp.task.kind)
    labels = class_order(folds["label"], comp.task.kind)
    if set(labels) != set(comp.classes):
        raise ArtifactError(
            f"{path} has {len(labels)} classes but {comp.train_csv} has {len(comp.classes)} "
            f"(labels changed since the folds were made); re-run: make folds COMP={comp.root}"
        )
    y = encode(folds["label"], comp.classes, comp.task.kind)
    return OOF(folds, y, folds["fold"].to_numpy(), artifacts.file_hash(path))


def find_runs(comp: Competition, ws: Workspace, runs: list[str]) -> list[str]:
    """``runs``, or every trained run when empty."""
    if runs:
        return list(runs)
    found = ws.trained_runs()
    if not found:
        raise ArtifactError(f"no trained runs in {ws.runs_dir}/; run: make train COMP={comp.root}")
    return found


def load_members(comp: Competition, ws: Workspace, runs: list[str]) -> tuple[OOF, Members]:
    """Read every member's logits, cross-check them with the folds, choose each one's view."""
    oof = load_folds(comp, ws)
    runs = find_runs(comp, ws, runs)
    summaries, oofs, tests = [], [], []
    for run in runs:  # float32 at once: a TTA mean is float64, twice the size
        summary, o, t = choose_view(run, *load_member(comp, ws, run, oof), oof.y, comp.task)
        summaries.append(summary)
        oofs.append(o.astype(np.float32))
        tests.append(t.astype(np.float32))
    dtype = store_dtype(oofs, tests, comp.task.multilabel)
    if dtype == np.float16:
        print(
            f"members: {len(runs)} x {oofs[0].shape[0]:,} OOF rows x {oofs[0].shape[1]} classes "
            "kept as float16 (methods compute in float32 blocks of rows)"
        )
    return oof, Members(runs, summaries, stack_as(oofs, dtype), stack_as(tests, dtype))


def store_dtype(oofs: list[np.ndarray], tests: list[np.ndarray], multilabel: bool) -> type:
    """float16 for single-label members whose float32 logits exceed ``STORE_FLOAT16_ABOVE``
    bytes and fit float16's range; float32 otherwise."""
    size = sum(a.nbytes for a in oofs) + sum(a.nbytes for a in tests)
    if multilabel or size <= STORE_FLOAT16_ABOVE:
        return np.float32
    big = max(float(np.abs(a).max()) for a in [*oofs, *tests] if a.size)
    return np.float16 if big <= FLOAT16_MAX else np.float32


def stack_as(arrays: list[np.ndarray], dtype: type) -> np.ndarray:
    """``np.stack(arrays).astype(dtype)`` without the float32 stack in between; empties the
    list as it goes, so the float32 copies are freed member by member."""
    out = np.empty((len(arrays), *arrays[0].shape), dtype=dtype)
    for j in range(len(arrays)):
        out[j], arrays[j] = arrays[j], None
    return out


def load_member(
    comp: Competition, ws: Workspace, run: str, oof: OOF
) -> tuple[dict[str, np.ndarray], dict[str, np.ndarray]]:
    """Read and cross-check one run's ``oof.npz`` and ``test.npz``."""
    rerun = f"make train COMP={comp.root} RUNS={run}"
    run_dir = ws.run_dir(run)
    data = {}
    for kind, ids in (("oof", oof.folds["id"]), ("test", comp.test["id"])):
        path = run_dir / f"{kind}.npz"
        data[kind] = artifacts.read_logits(path, kind, rerun)
        artifacts.check_logits_match(
            data[kind], path, ids.to_numpy(), np.array(comp.classes), rerun, oof.folds_hash
        )
    oof, test = data["oof"], data["test"]
    made_for = str(oof["task"]) if "task" in oof else "multiclass"
    if made_for != comp.task.kind:
        raise ArtifactError(
            f"{run_dir / 'oof.npz'} was trained for a {made_for} task but the competition is "
            f"now {comp.task.kind}; re-run: {rerun}"
        )
    if list(test["views"].astype(str)) != list(oof["views"].astype(str)):
        raise ArtifactError(
            f"{run_dir / 'test.npz'} has views {list(test['views'])} but oof.npz has "
            f"{list(oof['views'])}; re-run: {rerun}"
        )
    return oof, test


def choose_view(
    run: str,
    oof: dict[str, np.ndarray],
    test: dict[str, np.ndarray],
    y: np.ndarray,
    task: Task = ACCURACY,
) -> tuple[dict[str, Any], np.ndarray, np.ndarray]:
    """Score each TTA view and the mean of all views ("tta") on the OOF rows; keep the best.

    Best = best OOF score under ``task``'s metric, ties to "tta" (then lower log loss). Returns
    the member summary, and its ``(N, C)`` OOF and ``(T, C)`` test logits under the chosen view.
    """
    names = [str(v) for v in oof["views"]]
    cands = {v: (oof["logits"][i], test["logits"][i]) for i, v in enumerate(names)}
    combine = combine_label_views if task.multilabel else combine_views
    if len(names) > 1:
        cands["tta"] = (combine(oof["logits"]), combine(test["logits"]))
    sign = 1.0 if task.greater_is_better else -1.0
    score, key = {}, {}
    for v, (o, _) in cands.items():
        _, loss = _accuracy_and_loss(o, y, task)
        score[v] = task.score(y, task.probabilities(o))
        key[v] = (sign * score[v], v == "tta", -loss)
    best = max(key, key=lambda v: key[v])
    summary = {
        "run": run,
        "metric": task.metric,
        "views": {v: score[v] for v in names},
        "tta_score": score.get("tta", score[names[0]]),
        "view": best,
        "oof_score": score[best],
        "oof_accuracy": _accuracy_and_loss(cands[best][0], y, task)[0],
    }
    return summary, cands[best][0], cands[best][1]


def _accuracy_and_loss(logits: np.ndarray, y: np.ndarray, task: Task) -> tuple[float, float]:
    """Accuracy and log loss of one member's ``(N, C)`` logits; per label (at 1/2, and binary
    cross-entropy) for multi-label members."""
    if task.multilabel:
        p = np.clip(task.probabilities(logits), 1e-15, 1 - 1e-15)
        loss = -(y * np.log(p) + (1 - y) * np.log(1 - p)).mean()
        return float(((p >= 0.5) == (y > 0)).mean()), float(loss)
    p = softmax(logits, axis=1)
    labels = np.arange(logits.shape[1])
    return float(accuracy_score(y, logits.argmax(1))), float(log_loss(y, p, labels=labels))


def combine_label_views(logits: np.ndarray) -> np.ndarray:
    """``(V, N, C)`` multi-label view logits -> ``(N, C)`` logit of the mean sigmoid."""
    from scipy.special import expit, logit

    p = np.clip(expit(np.asarray(logits, dtype=np.float64)).mean(axis=0), 1e-12, 1 - 1e-12)
    return logit(p)


def print_members(members: list[dict]) -> None:
    """Print each member's per-view and TTA OOF score and the view it uses."""
    width = max(len(m["run"]) for m in members)
    metric = members[0].get("metric", "accuracy")
    print(f"members (OOF {metric} per TTA view):")
    for m in members:
        views = "  ".join(f"{v} {a:.4f}" for v, a in m["views"].items())
        used = f"  -> uses {m['view']}" if "view" in m else ""
        print(f"  {m['run']:<{width}}  {views}  tta {m['tta_score']:.4f}{used}")


def duplicate_test_labels(comp: Competition, ws: Workspace) -> dict[str, str]:
    """``{test_id: train_label}`` for test images that duplicate train images of one label.

    Reads ``folds/<comp>.duplicates.csv`` (written by ``make folds``, labels after relabel.csv).
    Clusters whose train images disagree on the label are skipped. The caller decides whether
    to overwrite predictions with these labels (the opt-in "test-label trick").
    """
    df = artifacts.read_duplicates(
        ws.duplicates_csv,
        set(comp.train["id"]),
        set(comp.test["id"]),
        comp.classes,
        f"make folds COMP={comp.root}",
        train_csv=comp.train_csv,
    )
    train = df[df["split"] == "train"]
    labels = train.groupby("cluster")["label"].unique()
    sure = {c: v[0] for c, v in labels.items() if len(v) == 1}
    test = df[(df["split"] == "test") & df["cluster"].isin(sure)]
    return {i: str(sure[c]) for i, c in zip(test["id"], test["cluster"], strict=True)}
