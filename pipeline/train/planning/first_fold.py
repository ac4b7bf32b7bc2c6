"""What a run's first folds measured, for the re-plan's value check (``Replanner.first_folds``):
its score on those folds' held-out rows, and what it adds there to the runs already trained
(their OOF on the same rows), blended as the planner's value model blends (``value.blended``);
and the check's one-line reports.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from ... import artifacts
from ...competition.task import encode
from .plan import MAX_SUBSETS_OF
from .value import blended, signed_score


@dataclass(frozen=True)
class Measured:
    """On ``rows`` held-out images of the first folds: the run's score, and the blend's with
    and without it (``gain``: what the run adds; its score where no run is trained yet), all
    higher-is-better (``value.signed_score``)."""

    score: float
    gain: float
    rows: int
    base: tuple[str, ...]  # the trained runs it was blended with

    @property
    def scored(self) -> bool:
        """False where the metric is undefined on these rows (a class missing)."""
        return bool(np.isfinite(self.score) and np.isfinite(self.gain))


def _probs(task, logits: np.ndarray) -> np.ndarray:
    return np.mean([task.probabilities(lg) for lg in logits], axis=0)  # views' mean


def measure(ctx, run: str, folds: list[int], trained: list[str]) -> Measured:
    """``run``'s ``folds`` held-out logits (their ``oof.npz``) against the labels of the folds
    file, alone and blended with the ``trained`` runs' ``oof.npz`` on the same rows (a run
    without one is left out). ``ctx``: the train stage's ``TrainContext``."""
    comp, ws, folds_df = ctx.comp, ctx.ws, ctx.folds_df
    task, rerun = comp.task, f"make train COMP={comp.root} RUNS={run}"
    parts = [artifacts.read_logits(ws.fold_dir(run, f) / "oof.npz", "oof", rerun) for f in folds]
    ids = np.concatenate([p["ids"].astype(str) for p in parts])
    pos = {i: n for n, i in enumerate(folds_df["id"].to_numpy().astype(str))}
    at = np.array([pos[i] for i in ids])
    y = encode(folds_df["label"], comp.classes, task.kind)[at]
    own = np.concatenate([_probs(task, p["logits"]) for p in parts])
    base, others = [], []
    for name in trained:
        path = ws.run_dir(name) / "oof.npz"
        if not path.is_file():
            continue
        oof = artifacts.read_logits(path, "oof", f"make train COMP={comp.root} RUNS={name}")
        where = {i: n for n, i in enumerate(oof["ids"].astype(str))}
        others.append(_probs(task, oof["logits"][:, [where[i] for i in ids]]))
        base.append(name)
    score = signed_score(task, y, own)
    if not others:
        return Measured(score, score, len(y), ())
    without = signed_score(task, y, blended(task, y, np.stack(others)))
    with_run = signed_score(task, y, blended(task, y, np.stack([*others, own])))
    return Measured(score, with_run - without, len(y), tuple(base))


def r4(v: float) -> float | str:
    return round(v, 4) if np.isfinite(v) else "none"


def unweighable(value, measured: Measured, candidates: int) -> str:
    """Why a first-folds check cannot weigh the run, or "" when it can."""
    if not measured.scored:
        return f"the metric is undefined on its {measured.rows:,} held-out rows"
    if value is None:  # a fine-tune's probe estimates nothing
        return "no probe estimate to weigh it against"
    if candidates > MAX_SUBSETS_OF:
        return f"{candidates} runs left are more than the plan weighs by value"
    return ""


def _adds(step: dict, base: tuple[str, ...], estimated: str) -> str:
    if not base:
        return ""
    return f"; adds {step['gain_measured']:+.4f} to the blend of {', '.join(base)}{estimated}"


def measured_only_line(step: dict, k: int, base: tuple[str, ...], why: str) -> str:
    """One line for a check that could not weigh the run (``why``): what was measured."""
    got = why
    if "measured" in step:
        got = f"{step['measured']:.4f} on {step['rows']:,} held-out rows{_adds(step, base, '')}; {why}"
    return (
        f"{step['first_folds']} after {step['folds']} of {k} folds "
        f"({step['took_s'] / 60:.1f} min): {got}: continued"
    )


def first_folds_line(step: dict, k: int, base: tuple[str, ...]) -> str:
    """One line for the check after a run's first folds: measured against the estimate, and
    the decision with both plans' values."""
    adds = _adds(step, base, f" (estimated {step['gain_estimate']:+.4f})")

    def then(plan: dict) -> str:
        v = plan["value"]
        return f"{', '.join(plan['then']) or 'nothing more'} is worth " + (
            f"{v:.4f}" if isinstance(v, float) else "nothing"
        )

    verdict = (
        f"cut (its finished folds kept), its {step['rest_s'] / 60:.1f} min re-planned"
        if step["decision"] == "cut"
        else "continued"
    )
    return (
        f"{step['first_folds']} after {step['folds']} of {k} folds ({step['took_s'] / 60:.1f} min): "
        f"{step['measured']:.4f} on {step['rows']:,} held-out rows against the probe's estimate "
        f"{step['estimate']:.4f}{adds}; finishing it then {then(step['continue'])}, cutting it "
        f"for {then(step['cut'])}: {verdict}"
    )
