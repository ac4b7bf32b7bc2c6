"""Validate the label-shift adjustment without test labels (``python -m pipeline.tools
prior-check``): resample the OOF rows of a saved ensemble so their class priors differ from the
train priors (class-balanced, and random Dirichlet priors) or not at all (iid), estimate the
priors by EM from the OOF posteriors of the resample only (logits that never saw those rows),
and score plain, ``PRIOR=em`` and ``PRIOR=auto`` predictions under the competition's metric."""

from __future__ import annotations

import numpy as np
import pandas as pd

from .. import artifacts
from ..ensemble import prior
from ..errors import PipelineError


def resample_scores(
    y: np.ndarray, probs: np.ndarray, task, n: int = 2000, repeats: int = 20, seed: int = 0
) -> pd.DataFrame:
    """One row per resample: its kind (balanced, dirichlet, iid), the total variation of its
    priors from the train priors, and the metric of plain, em-adjusted and auto predictions."""
    rng = np.random.default_rng(seed)
    c = probs.shape[1]
    train = np.bincount(y, minlength=c) / len(y)
    rows = []
    for kind in ("balanced", "dirichlet", "iid"):
        for r in range(repeats):
            if kind == "iid":
                idx = rng.integers(0, len(y), n)
            else:
                want = np.full(c, 1 / c) if kind == "balanced" else rng.dirichlet(np.ones(c))
                idx = prior.resample_by_class(y, want, n, rng)
            ys, ps = y[idx], probs[idx]
            rest = np.ones(len(y), dtype=bool)
            rest[idx] = False  # auto's own OOF check sees none of the scored rows' labels
            em, rec_em = prior.adjust("em", task, train, ps, bootstrap=0)
            auto, rec = prior.adjust(
                "auto", task, train, ps, bootstrap=0, oof=(y[rest], probs[rest])
            )
            actual = np.bincount(ys, minlength=c) / len(ys)
            rows.append(
                {
                    "resample": kind,
                    "repeat": r,
                    "shift": float(0.5 * np.abs(actual - train).sum()),
                    "estimated_shift": rec_em["total_variation"],
                    "plain": task.score(ys, ps),
                    "adjusted": task.score(ys, em),
                    "auto": task.score(ys, auto),
                    "auto_applied": int(rec["applied"]),
                }
            )
    return pd.DataFrame(rows)


def prior_check(comp, ws, name: str, n: int, repeats: int) -> pd.DataFrame:
    """Print and return the resample table of ensemble ``name``'s OOF posteriors."""
    from ..ensemble.members import load_folds

    oof = load_folds(comp, ws)
    path = ws.submission_dir(name) / "oof_ensemble.npz"
    data = artifacts.read_npz(path, {"ids", "probs"}, f"make ensemble NAME={name}")
    if data["ids"].astype(str).tolist() != oof.folds["id"].astype(str).tolist():
        raise PipelineError(f"{path} was made for other folds; re-run: make ensemble NAME={name}")
    probs = data["probs"].astype(np.float64)
    table = resample_scores(oof.y, probs, comp.task, n=min(n, len(oof.y)), repeats=repeats)
    summary = table.groupby("resample")[
        ["shift", "estimated_shift", "plain", "adjusted", "auto", "auto_applied"]
    ].mean()
    print(
        f"prior-check of {name}: {repeats} resamples of {min(n, len(oof.y))} OOF rows each, {comp.task.metric}"
    )
    print(summary.round(4).to_string())
    return table
