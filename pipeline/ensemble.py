"""Combine trained runs into one prediction: TTA views, every blending method, nested scores.

Reads ``folds/<comp>.csv`` and ``models/<comp>/<run>/{oof,test}.npz``; writes
``submissions/<comp>/<name>/{ensemble.json, leaderboard.csv, submission.csv, oof_ensemble.npz,
report/}``. The estimators live in ``blend`` (fixed rules), ``optimise`` (searched weights) and
``stacking``; ``nested`` scores each one by nested CV over the folds, and "auto" picks the best
nested accuracy.
"""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from . import artifacts, report
from .blend import (
    GeometricMean,
    HardVote,
    MeanLogits,
    RankAverage,
    SoftVote,
    TemperatureSoftVote,
    softmax,
)
from .competition import Competition, read_csv
from .errors import PipelineError
from .members import choose_view, find_runs, load_folds, load_member
from .nested import choose, leaderboard, print_leaderboard
from .optimise import AccuracyWeights, Caruana, WeightedSoftVote
from .stacking import Stacking

__all__ = ["METHODS", "ensemble_stage", "softmax", "HardVote", "SoftVote", "WeightedSoftVote"]

# name -> estimator class, in the order ties are broken (simpler first). Every class takes
# (M, N, C) member logits: fit(oof_logits, y) -> self, predict_proba(logits) -> (N, C).
METHODS: dict[str, type] = {
    "soft": SoftVote,  # mean of probabilities
    "hard": HardVote,  # majority of argmaxes
    "logit": MeanLogits,  # softmax of the mean logit
    "geo": GeometricMean,  # normalised geometric mean of probabilities
    "rank": RankAverage,  # mean percentile rank per class column
    "temp": TemperatureSoftVote,  # per-member temperature, then mean of probabilities
    "weighted": WeightedSoftVote,  # simplex weights minimising OOF log loss (SLSQP)
    "accuracy": AccuracyWeights,  # weights by coordinate ascent on OOF accuracy
    "caruana": Caruana,  # greedy selection with replacement, bagged
    "stack": Stacking,  # logistic regression on member logits, L2 by inner CV
}


def _write_submission(comp: Competition, path: Path, pred: np.ndarray) -> Path:
    """``pred (T,)`` class indices -> CSV with the sample submission's columns and id order."""
    cols = list(read_csv(comp.sample_path).columns)
    if sorted(cols) != sorted([comp.id_col, comp.target_col]):
        raise PipelineError(
            f"{comp.sample_path} has columns {cols}; only an id column and a label column "
            f"({comp.id_col!r}, {comp.target_col!r}) can be filled in"
        )
    values = {
        comp.id_col: comp.test["id"].to_numpy(),
        comp.target_col: np.array(comp.classes)[pred],
    }
    return artifacts.write_csv(path, pd.DataFrame({c: values[c] for c in cols}))


def _write_outputs(
    comp: Competition,
    out: Path,
    folds: pd.DataFrame,
    y: np.ndarray,
    runs: list[str],
    oof: np.ndarray,
    test: np.ndarray,
    est: Any,
    folds_hash: str,
    board: pd.DataFrame,
) -> np.ndarray:
    """Write submission.csv (``test (T,)`` class indices), oof_ensemble.npz and report/."""
    oof_probs = est.predict_proba(oof)
    _write_submission(comp, out / "submission.csv", test)
    artifacts.write_logits(
        out / "oof_ensemble.npz",
        ids=folds["id"].to_numpy(),
        classes=np.array(comp.classes),
        probs=oof_probs.astype(np.float32),
        members=np.array(runs),
        member_preds=oof.argmax(axis=2).astype(np.int32),
        folds_hash=np.array(folds_hash),
    )
    members = dict(zip(runs, oof, strict=True))  # logits are fine: the report uses argmax only
    ids = folds["id"].to_numpy()
    paths = report.image_paths(comp)
    report.write_report(
        out / "report", y, oof_probs, list(comp.classes), members, ids, paths, board
    )
    return oof_probs


def _dup_labels(comp: Competition, root: Path, pred: np.ndarray) -> tuple[np.ndarray, dict]:
    """The opt-in test-label trick: a test image that duplicates train images of one label gets
    that label (``folds/<comp>.duplicates.csv`` from make folds). Returns new ``pred (T,)`` and
    what changed, for ensemble.json."""
    from .duplicates import duplicate_test_labels

    known = duplicate_test_labels(comp, root)
    pos = pd.Index(comp.test["id"].astype(str)).get_indexer(list(known))
    new = artifacts.label_indices(pd.Series(list(known.values())), comp.classes)
    out = pred.copy()
    out[pos] = new
    changed = [str(i) for i, p, n in zip(known, pred[pos], new, strict=True) if p != n]
    print(
        f"test-label trick: {len(known)} test images duplicate a train image; {len(changed)} changed"
    )
    return out, {"enabled": True, "n_test_duplicates": len(known), "changed_ids": changed}


def _load(comp: Competition, runs: list[str], root: Path) -> tuple:
    """Folds, labels, hash, runs, member summaries and stacked ``(M, N, C)``/``(M, T, C)`` logits."""
    folds, y, folds_hash = load_folds(comp, root)
    runs = find_runs(comp, runs, root)
    loaded = [load_member(comp, run, root, folds, folds_hash) for run in runs]
    chosen_views = [
        choose_view(run, oof, test, y) for run, (oof, test) in zip(runs, loaded, strict=True)
    ]
    members = [m for m, _, _ in chosen_views]
    oof = np.stack([o for _, o, _ in chosen_views]).astype(np.float32)  # (M, N, C)
    test = np.stack([t for _, _, t in chosen_views]).astype(np.float32)  # (M, T, C)
    return folds, y, folds_hash, runs, members, oof, test


def _summary(
    comp: Competition,
    name: str,
    chosen: str,
    method: str,
    members: list[dict],
    runs: list[str],
    est: Any,
    table: pd.DataFrame,
    folds: pd.DataFrame,
) -> dict[str, Any]:
    """The ``ensemble.json`` content (without the trick record and folds hash)."""
    row = table.set_index("name").loc[chosen]
    return {
        "name": name,
        "comp": comp.name,
        "method": chosen,
        "chosen_by": "nested accuracy" if method == "auto" else "user",
        "members": members,
        "weights": {run: float(w) for run, w in zip(runs, est.weights_, strict=True)},
        "leaderboard": table.to_dict(orient="records"),
        "oof_accuracy": float(row["oof_accuracy"]),
        "oof_log_loss": float(row["oof_log_loss"]),
        "nested_accuracy": float(row["nested_accuracy"]),
        "nested_log_loss": float(row["nested_log_loss"]),
        "n_train": len(folds),
        "n_test": len(comp.test),
        "n_classes": len(comp.classes),
        "created": datetime.now(UTC).isoformat(timespec="seconds"),
    }


def ensemble_stage(
    comp: Competition,
    runs: list[str],
    method: str = "auto",
    name: str = "ensemble",
    root: Path = Path("."),
    methods: list[str] | None = None,
    dup_labels: bool = False,
) -> dict[str, Any]:
    """Fit every method on the OOF logits, score it by nested CV, write ``submissions/<comp>/<name>/``.

    Members are runs; each uses the TTA view (or the mean of its views) best on its OOF rows.
    ``method`` "auto" takes the best nested accuracy; ``methods`` limits which are tried.
    ``dup_labels`` turns on the test-label trick (see ``_dup_labels``).
    Returns the ``ensemble.json`` content.
    """
    tried = list(methods or METHODS)
    for m in [*tried, *([] if method == "auto" else [method])]:
        if m not in METHODS:
            raise PipelineError(f"unknown method {m!r}; valid: auto, {', '.join(METHODS)}")
    if method != "auto" and method not in tried:
        tried.append(method)
    root = Path(root)
    folds, y, folds_hash, runs, members, oof, test = _load(comp, runs, root)
    fold = folds["fold"].to_numpy()
    table, fitted, _ = leaderboard(runs, oof, y, fold, {m: METHODS[m] for m in tried})
    chosen = choose(table, method)
    report.print_members(members)
    print("leaderboard (nested = fitted on K-1 folds, scored on the held-out fold):")
    print_leaderboard(table, chosen)
    out = root / "submissions" / comp.name / name
    artifacts.write_csv(out / "leaderboard.csv", table)
    test_pred = fitted[chosen].predict_proba(test).argmax(axis=1)
    trick = {"enabled": False}
    if dup_labels:
        test_pred, trick = _dup_labels(comp, root, test_pred)
    _write_outputs(comp, out, folds, y, runs, oof, test_pred, fitted[chosen], folds_hash, table)
    summary = _summary(comp, name, chosen, method, members, runs, fitted[chosen], table, folds)
    summary.update(test_label_trick=trick, folds_hash=folds_hash)
    artifacts.write_json(out / "ensemble.json", summary)  # last: its presence means complete
    print(
        f"wrote {out}/: ensemble.json, leaderboard.csv, submission.csv, oof_ensemble.npz, report/"
    )
    return summary
