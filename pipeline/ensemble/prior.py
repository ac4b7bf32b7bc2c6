"""Label shift: when the test classes come in other proportions than the train classes.

A classifier's probabilities carry the train priors ``p_tr(y)``. If the test set draws its
classes with other priors (a balanced test set after imbalanced train classes, say) and the
images of each class look alike, the Bayes-optimal test posterior is the train posterior
reweighted by ``w_y = p_te(y) / p_tr(y)`` and renormalised. ``em_priors`` estimates ``p_te``
from the unlabelled test posteriors by EM (Saerens, Latinne and Decaestecker 2002); the same
paper's likelihood-ratio statistic tests "no shift" (chi-square with C-1 degrees of freedom).

``PRIOR=auto`` (default) adjusts only when that test rejects "no shift" at ``ALPHA`` and the
adjustment helps on the OOF rows resampled to the estimated test priors (EM needs calibrated
posteriors: on overconfident ones it overshoots, and re-weighting then costs accuracy);
``PRIOR=train`` never adjusts; ``PRIOR=em`` always does. Multi-label and ordinal tasks refuse
``em`` (their labels are not one draw of one class per image, or the grades are scored by their
order). ``tools prior-check`` validates the adjustment on re-weighted resamples of the OOF rows.
"""

from __future__ import annotations

from typing import Any

import numpy as np
from scipy.stats import chi2

from ..errors import PipelineError

PRIORS = ("auto", "train", "em")
ALPHA = 0.01  # "no shift" is rejected below this p-value (PRIOR=auto)
BOOTSTRAP = 50  # test-row resamples for the interval (8,800 x 176 probabilities: about 15 s)
MAX_ITER, TOL = 200, 1e-8


def check_prior(prior: str, task) -> None:
    if prior not in PRIORS:
        raise PipelineError(f"PRIOR={prior!r}: use one of {', '.join(PRIORS)}")
    if prior == "em" and (task.multilabel or task.kind == "ordinal"):
        raise PipelineError(
            f"PRIOR=em re-weights one class per image; a {task.kind} task's labels are "
            f"{'sets' if task.multilabel else 'ordered grades'}: use PRIOR=train (or auto)"
        )


def reweight(probs: np.ndarray, w: np.ndarray) -> np.ndarray:
    """``probs (N, C)`` times the class weights ``w (C,)``, renormalised per row."""
    out = probs * np.asarray(w, dtype=probs.dtype)
    return out / np.clip(out.sum(axis=1, keepdims=True), 1e-300, None)


def em_priors(
    probs: np.ndarray, train_prior: np.ndarray, start: np.ndarray | None = None, tol: float = TOL
) -> np.ndarray:
    """The test priors that make the reweighted posteriors' mean equal to themselves (EM of
    Saerens et al. 2002), starting from ``train_prior``; ``probs (N, C)`` are posteriors under
    the train priors."""
    p = np.clip(np.asarray(probs, dtype=np.float64), 1e-12, None)
    tr = np.asarray(train_prior, dtype=np.float64)
    te = tr.copy() if start is None else np.asarray(start, dtype=np.float64)
    for _ in range(MAX_ITER):
        new = reweight(p, te / tr).mean(axis=0)
        if np.abs(new - te).max() < tol:
            return new
        te = new
    return te


def log_likelihood_ratio(probs: np.ndarray, train_prior: np.ndarray, test_prior) -> float:
    """``2 * sum_i log(sum_y p(y|x_i) w_y)``: the test set's log-likelihood under the shifted
    priors against the train priors (both up to the same constant)."""
    p = np.clip(np.asarray(probs, dtype=np.float64), 1e-12, None)
    w = np.asarray(test_prior) / np.asarray(train_prior)
    return float(2 * np.log((p * w).sum(axis=1)).sum())


def estimate(
    probs: np.ndarray, train_prior: np.ndarray, seed: int = 0, bootstrap: int = BOOTSTRAP
) -> dict[str, Any]:
    """The test priors by EM with a bootstrap 95 % interval per class (``bootstrap``
    resamples; 0: none), the total-variation distance to the train priors (and its 95 % range
    over the resamples, which sampling noise inflates: a distance is never negative) and the
    p-value of "no shift", the statistic to read for whether there is a shift."""
    te = em_priors(probs, train_prior)
    lr = log_likelihood_ratio(probs, train_prior, te)
    p_value = float(chi2.sf(max(lr, 0.0), df=len(te) - 1))
    out = {
        "train_prior": [float(x) for x in train_prior],
        "test_prior": [float(x) for x in te],
        "total_variation": float(0.5 * np.abs(te - train_prior).sum()),
        "lr_statistic": lr,
        "p_value_no_shift": p_value,
    }
    if not bootstrap:
        return out
    rng = np.random.default_rng(seed)
    p = np.clip(np.asarray(probs, dtype=np.float32), 1e-12, None)  # float32: the resamples' cost
    boot = np.stack(
        [
            em_priors(p[rng.integers(0, len(p), len(p))], train_prior, start=te, tol=1e-5)
            for _ in range(bootstrap)
        ]
    )
    tv = 0.5 * np.abs(boot - train_prior).sum(axis=1)
    lo, hi = np.percentile(boot, [2.5, 97.5], axis=0)
    out["test_prior_95"] = [[float(a), float(b)] for a, b in zip(lo, hi, strict=True)]
    out["total_variation_bootstrap_95"] = [
        float(np.percentile(tv, 2.5)),
        float(np.percentile(tv, 97.5)),
    ]
    return out


SELF_CHECK = 5  # OOF resamples at the estimated test priors that PRIOR=auto scores


def resample_by_class(y: np.ndarray, target: np.ndarray, n: int, rng) -> np.ndarray:
    """Row positions of ``n`` rows drawn (with replacement) so that their classes follow the
    priors ``target``: what a test set with those priors would look like among rows ``y``."""
    counts = rng.multinomial(n, np.asarray(target) / np.sum(target))
    by_class = [np.flatnonzero(y == k) for k in range(len(counts))]
    return np.concatenate(
        [
            rng.choice(by_class[k], counts[k])
            for k in range(len(counts))
            if counts[k] and len(by_class[k])
        ]
    )


def self_check(
    y: np.ndarray, probs: np.ndarray, task, target: np.ndarray, n: int, repeats: int = SELF_CHECK
) -> dict[str, Any]:
    """Whether re-weighting helps where it would be used: the OOF rows ``y``/``probs``
    resampled (``n`` rows, by class) to the priors ``target``, their priors estimated by EM
    from their own posteriors, and the metric with and without the re-weighting."""
    rng = np.random.default_rng(0)
    train = np.bincount(y, minlength=probs.shape[1]) / len(y)
    plain, adjusted = [], []
    for _ in range(repeats):
        idx = resample_by_class(y, target, n, rng)
        te = em_priors(probs[idx], train, tol=1e-6)
        plain.append(task.score(y[idx], probs[idx]))
        adjusted.append(task.score(y[idx], reweight(probs[idx], te / train)))
    gain = float(np.mean(adjusted) - np.mean(plain))
    helps = task.better(float(np.mean(adjusted)), float(np.mean(plain)))
    return {
        "plain": float(np.mean(plain)),
        "adjusted": float(np.mean(adjusted)),
        "gain": gain,
        "helps": bool(helps),
        "repeats": repeats,
        "rows": n,
    }


def adjust(
    prior: str,
    task,
    train_prior: np.ndarray,
    probs: np.ndarray,
    bootstrap: int = BOOTSTRAP,
    oof: tuple[np.ndarray, np.ndarray] | None = None,
    helps: bool | None = None,
) -> tuple[np.ndarray, dict[str, Any]]:
    """``probs (T, C)`` with the test priors ``PRIOR`` picks, and the record for
    ``ensemble.json``/``predict.json``: what was estimated, tested and applied. Under
    ``auto`` a detected shift is applied when ``self_check`` on ``oof`` (labels, posteriors)
    says it helps, or, without ``oof`` (``make predict``), when ``helps`` (the ensemble's own
    check) says so."""
    check_prior(prior, task)
    if task.multilabel or task.kind == "ordinal":
        return probs, {"prior": prior, "applied": False, "why": f"not estimated for {task.kind}"}
    shift = estimate(probs, train_prior, bootstrap=bootstrap)
    shifted = shift["p_value_no_shift"] < ALPHA
    why = {
        "em": "PRIOR=em",
        "train": "PRIOR=train",
        "auto": f"p = {shift['p_value_no_shift']:.2g} {'<' if shifted else '>='} {ALPHA}",
    }[prior]
    applied = prior == "em" or (prior == "auto" and shifted)
    if prior == "auto" and shifted and oof is not None:
        check = self_check(
            *oof, task, np.asarray(shift["test_prior"]), min(len(oof[0]), len(probs))
        )
        shift["self_check"] = check
        applied = check["helps"]
        why += (
            f"; on OOF rows resampled to these priors it {'helps' if applied else 'does not help'}"
            f" ({task.metric} {check['plain']:.4f} -> {check['adjusted']:.4f})"
        )
    elif prior == "auto" and shifted and helps is not None:
        applied = helps
        why += f"; the ensemble's OOF check said it {'helps' if helps else 'does not help'}"
    out = reweight(probs, np.asarray(shift["test_prior"]) / train_prior) if applied else probs
    return out, {"prior": prior, "applied": applied, "why": why, **shift}


def describe(rec: dict[str, Any], classes: list[str]) -> str:
    """One console line on the estimated shift and what was done."""
    if "test_prior" not in rec:
        return f"label shift: {rec['why']}"
    lo, hi = rec.get("total_variation_bootstrap_95", (np.nan, np.nan))
    diff = np.asarray(rec["test_prior"]) - np.asarray(rec["train_prior"])
    top = np.argsort(-np.abs(diff))[:3]
    moved = ", ".join(
        f"{classes[k]} {rec['train_prior'][k]:.3f}->{rec['test_prior'][k]:.3f}" for k in top
    )
    return (
        f"label shift: test priors by EM differ from train by {rec['total_variation']:.3f} "
        f"(total variation; {lo:.3f}-{hi:.3f} over bootstrap resamples, whose noise inflates "
        f"it; {moved}); no-shift test p = "
        f"{rec['p_value_no_shift']:.2g}; {'applied' if rec['applied'] else 'not applied'} "
        f"({rec['why']})"
    )
