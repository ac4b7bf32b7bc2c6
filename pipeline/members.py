"""Ensemble members: find trained runs, read and cross-check their logits, pick each one's view."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from sklearn.metrics import accuracy_score, log_loss

from . import artifacts
from .competition import Competition
from .errors import ArtifactError


def combine_views(logits: np.ndarray) -> np.ndarray:
    """``(V, N, C)`` view logits -> ``(N, C)`` log of the mean over views of softmax probs."""
    from scipy.special import log_softmax, logsumexp

    logits = np.asarray(logits, dtype=np.float64)
    if logits.ndim != 3 or logits.shape[0] == 0:
        raise ValueError(f"expected logits of shape (V, N, C) with V >= 1, got {logits.shape}")
    return logsumexp(log_softmax(logits, axis=-1), axis=0) - np.log(logits.shape[0])


def load_folds(comp: Competition, root: Path) -> tuple[pd.DataFrame, np.ndarray, str]:
    """Folds file, ``y (N,)`` class indices into ``comp.classes``, and the file's hash."""
    path = artifacts.folds_path(comp.name, root)
    folds = artifacts.read_folds(path)
    labels = sorted(folds["label"].unique().tolist())
    if labels != list(comp.classes):
        raise ArtifactError(
            f"{path} has {len(labels)} classes but {comp.train_csv} has {len(comp.classes)} "
            f"(labels changed since the folds were made); re-run: make folds COMP={comp.root}"
        )
    y = artifacts.label_indices(folds["label"], comp.classes)
    return folds, y, artifacts.file_hash(path)


def find_runs(comp: Competition, runs: list[str], root: Path) -> list[str]:
    if runs:
        return list(runs)
    found = sorted(p.parent.name for p in (root / "models" / comp.name).glob("*/oof.npz"))
    if not found:
        raise ArtifactError(
            f"no trained runs in {root / 'models' / comp.name}/; run: make train COMP={comp.root}"
        )
    return found


def load_member(
    comp: Competition, run: str, root: Path, folds: pd.DataFrame, folds_hash: str
) -> tuple[dict[str, np.ndarray], dict[str, np.ndarray]]:
    """Read and cross-check one run's ``oof.npz`` and ``test.npz``."""
    rerun = f"make train COMP={comp.root} RUNS={run}"
    run_dir = root / "models" / comp.name / run
    data = {}
    for kind, ids in (("oof", folds["id"]), ("test", comp.test["id"])):
        path = run_dir / f"{kind}.npz"
        data[kind] = artifacts.read_logits(path, kind, rerun)
        artifacts.check_logits_match(
            data[kind], path, ids.to_numpy(), np.array(comp.classes), rerun, folds_hash
        )
    oof, test = data["oof"], data["test"]
    if list(test["views"].astype(str)) != list(oof["views"].astype(str)):
        raise ArtifactError(
            f"{run_dir / 'test.npz'} has views {list(test['views'])} but oof.npz has "
            f"{list(oof['views'])}; re-run: {rerun}"
        )
    return oof, test


def choose_view(
    run: str, oof: dict[str, np.ndarray], test: dict[str, np.ndarray], y: np.ndarray
) -> tuple[dict[str, Any], np.ndarray, np.ndarray]:
    """Score each TTA view and the mean of all views ("tta") on the OOF rows; keep the best.

    Best = highest OOF accuracy, ties to "tta" (then lower log loss). Returns the member summary,
    and its ``(N, C)`` OOF and ``(T, C)`` test logits under the chosen view.
    """
    names = [str(v) for v in oof["views"]]
    cands = {v: (oof["logits"][i], test["logits"][i]) for i, v in enumerate(names)}
    if len(names) > 1:
        cands["tta"] = (combine_views(oof["logits"]), combine_views(test["logits"]))
    labels = np.arange(oof["logits"].shape[2])
    score = {}
    for v, (o, _) in cands.items():
        p = np.exp(o - np.logaddexp.reduce(o, axis=1, keepdims=True))
        score[v] = (
            float(accuracy_score(y, o.argmax(1))),
            v == "tta",
            -float(log_loss(y, p, labels=labels)),
        )
    best = max(score, key=lambda v: score[v])
    summary = {
        "run": run,
        "views": {v: score[v][0] for v in names},
        "tta_accuracy": score.get("tta", score[names[0]])[0],
        "view": best,
        "oof_accuracy": score[best][0],
    }
    return summary, cands[best][0], cands[best][1]
