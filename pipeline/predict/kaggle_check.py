"""Is a pulled notebook output what this ensemble predicts? ``make package`` checks each version.

The notebook's ``submission.csv`` is validated against the competition's sample submission, and
its probabilities (``probs.npy``) are compared with ``make predict`` of the same saved ensemble
on the competition's public test images, run here: the same labels, except where the local
top-2 margin is under ``MARGIN`` (a tie that fp16 weights may break either way), and every
probability within ``TOLERANCE`` (fp16 weights, another device).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from ..competition import load_competition
from ..competition.submission import validate_for
from ..errors import SubmissionError
from ..workspace import Workspace

MARGIN = 1e-3
TOLERANCE = 2e-3


def check_output(ws: Workspace, comp_root: Path, params: dict, pulled: Path) -> str:
    """Validate ``pulled/submission.csv`` and compare it with a local predict written to
    ``pulled/local/``; returns what agreed, or raises one line naming the file."""
    from .stage import predict_stage

    sub = pulled / "submission.csv"
    if not sub.is_file():
        raise SubmissionError(
            f"{sub} not found: the notebook completed without writing submission.csv; "
            "open its log on Kaggle (kernels output saved it beside) and re-run make package"
        )
    frame = validate_for(load_competition(comp_root), sub)
    local = pulled / "local" / "submission.csv"
    predict_stage(
        ws, params["name"], comp_root, local, precision=params["precision"],
        time_limit=params["time_limit"], on_bad_image="fallback", max_bad=params["max_bad"],
    )  # fmt: skip
    theirs = _probs(pulled)
    same = compare(theirs, np.load(local.parent / "logits" / "probs.npy"), _probs_path(pulled))
    return f"valid ({len(frame)} rows); {same}"


def compare(theirs: np.ndarray, ours: np.ndarray, where: Path | str) -> str:
    """Labels and probabilities of the notebook (``theirs``) against the local predict."""
    if theirs.shape != ours.shape:
        raise SubmissionError(
            f"{where}: shape {theirs.shape}, the local make predict's is {ours.shape}: the "
            "notebook predicted another test set or ensemble; re-run make package"
        )
    top2 = np.sort(ours, axis=1)[:, -2:] if ours.shape[1] > 1 else np.zeros((len(ours), 2))
    tied = (top2[:, 1] - top2[:, 0]) < MARGIN
    flips = theirs.argmax(1) != ours.argmax(1)
    diff = float(np.abs(theirs - ours).max()) if ours.size else 0.0
    bad = np.flatnonzero(flips & ~tied)
    problems = [f"{len(bad)} labels differ (rows {bad[:5].tolist()})"] if len(bad) else []
    if diff > TOLERANCE:
        problems.append(f"max |p - p_local| = {diff:.2e} > {TOLERANCE:g}")
    if problems:
        raise SubmissionError(
            f"{where}: {', '.join(problems)} against the local make predict of the same ensemble; the "
            "notebook did not run what was packaged (another dataset version mounted?): check "
            "its inputs on Kaggle and re-run make package"
        )
    return (
        f"labels agree with the local make predict ({int(flips.sum())} flips at a top-2 margin "
        f"under {MARGIN:g}), max |p - p_local| = {diff:.1e}"
    )


def _probs_path(pulled: Path) -> Path:
    # kernels output may flatten the notebook's logits/ folder; accept either place
    nested = pulled / "logits" / "probs.npy"
    return nested if nested.is_file() else pulled / "probs.npy"


def _probs(pulled: Path) -> np.ndarray:
    path = _probs_path(pulled)
    try:
        return np.load(path, allow_pickle=False).astype(np.float64)
    except (OSError, ValueError) as e:
        raise SubmissionError(
            f"{path}: cannot read the notebook's probabilities ({e}); re-run make package"
        ) from None
