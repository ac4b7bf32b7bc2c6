"""Validate the label-shift correction (``python -m pipeline.tools prior-check``).

On a saved ensemble: its OOF rows split by fold parity, the label-shift state fitted on the
even folds as ``make ensemble`` fits it (calibration, check, null), and the odd folds' rows
resampled class-balanced, at random Dirichlet priors and iid (no shift); each resample is
decided and corrected as a test set would be, and scored plain, forced (``PRIOR=em``) and
``PRIOR=auto`` under the competition's metric. ``--bench``: the generated cases of
``prior_bench.py`` instead, with a known truth.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from .. import artifacts
from ..ensemble import prior
from ..errors import PipelineError


def resample_scores(
    y: np.ndarray, probs: np.ndarray, fold: np.ndarray, task, n: int = 2000, repeats: int = 20
) -> pd.DataFrame:
    """One row per resample of the odd folds' rows: its kind (balanced, dirichlet, iid), the
    total variation of its priors from the train priors, the estimate's, and the metric of
    plain, em-forced and auto predictions (state fitted on the even folds' rows)."""
    rng = np.random.default_rng(0)
    c = probs.shape[1]
    fit = fold % 2 == 0
    state = prior.fit_prior("auto", task, y[fit], probs[fit], fold[fit], n)
    forced = {**state, "mode": "em", "estimator": "em", "form": "calibrated"}
    train = np.asarray(state["train_prior"])
    ys, ps = y[~fit], probs[~fit]
    rows = []
    for kind in ("balanced", "dirichlet", "iid"):
        for r in range(repeats):
            if kind == "iid":
                idx = rng.integers(0, len(ys), n)
            else:
                want = np.full(c, 1 / c) if kind == "balanced" else rng.dirichlet(np.ones(c))
                idx = prior.resample_by_class(ys, want, n, rng)
            em, _ = prior.apply_prior(forced, task, ps[idx], bootstrap=0)
            auto, rec = prior.apply_prior(state, task, ps[idx], bootstrap=0)
            actual = np.bincount(ys[idx], minlength=c) / len(idx)
            rows.append(
                {
                    "resample": kind,
                    "repeat": r,
                    "shift": float(0.5 * np.abs(actual - train).sum()),
                    "estimated_shift": rec["total_variation"],
                    "plain": task.score(ys[idx], ps[idx]),
                    "adjusted": task.score(ys[idx], em),
                    "auto": task.score(ys[idx], auto),
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
    n = min(n, int((oof.fold % 2 == 1).sum()))
    table = resample_scores(oof.y, probs, oof.fold, comp.task, n=n, repeats=repeats)
    summary = table.groupby("resample")[
        ["shift", "estimated_shift", "plain", "adjusted", "auto", "auto_applied"]
    ].mean()
    print(f"prior-check of {name}: {repeats} resamples of {n} OOF rows each, {comp.task.metric}")
    print(summary.round(4).to_string())
    return table
