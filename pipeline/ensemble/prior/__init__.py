"""Label shift: when the test classes come in other proportions than the train classes.

A classifier's probabilities carry the train priors ``p_tr(y)``. If the test set draws its
classes with other priors and the images of each class look alike, the Bayes-optimal test
posterior is the calibrated train posterior reweighted by ``w_y = p_te(y) / p_tr(y)`` and
renormalised. ``make ensemble`` fits the calibration on the OOF rows (``estimators.py``:
bias-corrected temperature scaling), estimates ``p_te`` from the calibrated test posteriors (EM
or BBSE, whichever the check measures better) and saves calibration, estimator and check in
``ensemble_state.json`` (``fit_prior``); ``apply_prior`` re-estimates on any test set with them,
so ``make ensemble``, ``make predict`` and the offline notebook decide alike.

``PRIOR=auto`` (default) applies the correction only when the check (``check.py``) shows that at
this model quality, class count and test size it helps on known-shifted OOF resamples, does no
harm on unshifted ones, and the test set's mean calibrated posterior lies further from the
train priors than unshifted resamples' do; its weights may be shrunk, ``(p_te / p_tr) ** alpha``
with the check's ``alpha``. ``PRIOR=train`` never adjusts; ``PRIOR=em`` always does, in full
(EM on the calibrated posteriors). Multi-label and ordinal tasks refuse ``em``.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from ...errors import PipelineError
from .check import (
    BALANCED_QUANTILE,
    QUANTILE,
    SNAP,
    balanced_mean,
    moment_chi,
    resample_by_class,
    resample_figures,
    summarise,
    weights,
)
from .estimators import (
    Calibration,
    em_priors,
    estimate_priors,
    map_strength,
    reweight,
    soft_confusion,
    total_variation,
)

__all__ = ["PRIORS", "apply_prior", "check_prior", "describe", "em_priors", "fit_prior"]
__all__ += ["balanced_mean", "resample_by_class", "reweight", "top_movers"]

PRIORS = ("auto", "train", "em")
BOOTSTRAP = 30  # test-row resamples for the per-class interval


def check_prior(prior: str, task) -> None:
    if prior not in PRIORS:
        raise PipelineError(f"PRIOR={prior!r}: use one of {', '.join(PRIORS)}")
    if prior == "em" and (task.multilabel or task.kind == "ordinal"):
        raise PipelineError(
            f"PRIOR=em re-weights one class per image; a {task.kind} task's labels are "
            f"{'sets' if task.multilabel else 'ordered grades'}: use PRIOR=train (or auto)"
        )


def fit_prior(
    prior: str, task, y: np.ndarray, probs: np.ndarray, fold: np.ndarray, n_test: int, seed=0
) -> dict[str, Any]:
    """The JSON-able label-shift state ``make ensemble`` saves: ``mode``, train priors,
    calibration fitted on the OOF rows ``y (N,)``/``probs (N, C)``, the estimator (and BBSE's
    confusion matrix), and under ``auto`` the check at ``n_test`` rows (folds ``fold (N,)``)."""
    check_prior(prior, task)
    if task.multilabel or task.kind == "ordinal":
        return {"mode": prior, "why": f"not estimated for {task.kind}"}
    y = np.asarray(y)
    train = np.bincount(y, minlength=probs.shape[1]) / len(y)
    cal = Calibration.fit(probs, y)
    q = cal.apply(probs)
    confusion = soft_confusion(q, y)
    state = {"mode": prior, "train_prior": train.tolist(), "temperature": cal.temperature}
    state |= {"bias": list(cal.bias), "estimator": "em", "form": "calibrated", "alpha": 1.0}
    if prior == "auto":
        state["null_var"] = q.var(axis=0).tolist()
        # what balanced test classes would make the mean calibrated posterior (``+bal``)
        state["balanced_mean"] = balanced_mean(confusion).tolist()
        var = state["null_var"]
        rows = resample_figures(task, y, probs, np.asarray(fold), train, n_test, seed, var)
        state["check"] = {"rows": n_test, **summarise(rows)}
        state |= {k: state["check"][k] for k in ("estimator", "form", "alpha")}
    if state["estimator"].removesuffix(SNAP) == "bbse":
        state["confusion"] = confusion.tolist()
    return state


def apply_prior(
    state: dict[str, Any], task, probs: np.ndarray, bootstrap: int = BOOTSTRAP
) -> tuple[np.ndarray, dict[str, Any]]:
    """``probs (T, C)`` under the saved ``state`` (``fit_prior``), and the record for
    ``ensemble.json``/``predict.json``: estimate with per-class 95 % interval, the check's
    figures, the decision and why. Deterministic: the same probs give the same decision."""
    mode = state.get("mode", "train")
    if "train_prior" not in state:
        return probs, {"prior": mode, "applied": False, "why": state.get("why", "not estimated")}
    train = np.asarray(state["train_prior"])
    cal = Calibration(state["temperature"], tuple(state["bias"]))
    q = cal.apply(probs)
    conf = np.asarray(state["confusion"]) if "confusion" in state else None
    te = estimate_priors(state["estimator"].removesuffix(SNAP), q, train, conf)
    # PRIOR=em is the full correction; auto's may be shrunk, (p_test / p_train) ** alpha
    alpha = float(state.get("alpha", 1.0)) if mode == "auto" else 1.0
    rec = {"prior": mode, "estimator": state["estimator"], "form": state.get("form")}
    rec |= {"temperature": cal.temperature, "alpha": alpha}
    spread = _spread(q, train, conf, te, state, bootstrap)
    if mode == "auto" and state["estimator"].endswith(SNAP):
        te, rec["balanced"] = _snap(state, q, te)
    rec |= {"train_prior": train.tolist(), "test_prior": te.tolist(), "n_test": len(probs)}
    rec |= {"total_variation": total_variation(te, train), **spread}
    applied, why = {"train": (False, "PRIOR=train"), "em": (True, "PRIOR=em")}.get(mode, (None, ""))
    if mode == "auto":
        moment = {"tv": total_variation(q.mean(axis=0), train)}
        if "null_var" in state:
            moment["chi"] = moment_chi(q, train, state["null_var"])
        applied, why, figures = _decide(state, moment, len(probs), task)
        rec["check"] = figures
    w = weights(te, train, alpha)
    out = reweight(q if state.get("form") != "raw" else probs, w) if applied else probs
    if rec.get("balanced", {}).get("snapped"):  # said wherever why is (report, TensorBoard)
        b = rec["balanced"]
        why += (
            f"; the test looks class-balanced ({b['chi']:.3g} from the balanced mean posterior "
            f"in noise units, within {b['limit']:.3g}): balanced priors"
        )
    return out, {**rec, "applied": bool(applied), "why": why}


def _snap(state: dict[str, Any], q: np.ndarray, te: np.ndarray) -> tuple[np.ndarray, dict]:
    """A ``+bal`` estimator's estimate: balanced priors when the test's mean calibrated
    posterior lies within the check's ``BALANCED_QUANTILE`` of balanced resamples' (rescaled
    from the check's rows to the test's), else ``te``; with the figures."""
    check = state["check"]
    limit = float(np.quantile(check["null_balanced_chi"], BALANCED_QUANTILE))
    limit *= check["rows"] / len(q)
    chi = moment_chi(q, np.asarray(state["balanced_mean"]), state["null_var"])
    snapped = chi <= limit
    c = len(te)
    out = np.full(c, 1 / c) if snapped else te
    return out, {"chi": chi, "limit": limit, "snapped": bool(snapped), "free": te.tolist()}


def _spread(q, train, conf, te, state, bootstrap: int) -> dict[str, Any]:
    """Per-class 95 % interval of the estimate over ``bootstrap`` resamples of the test rows
    (fixed seed: make ensemble and make predict print the same)."""
    if not bootstrap:
        return {}
    rng = np.random.default_rng(0)
    q32 = q.astype(np.float32)  # the resamples' cost
    boot, kind = [], state["estimator"].removesuffix(SNAP)
    for _ in range(bootstrap):
        b = q32[rng.integers(0, len(q32), len(q32))]
        if kind != "bbse":
            strength = map_strength(kind)
            boot.append(em_priors(b, train, start=te, tol=1e-5, strength=strength))
        else:
            boot.append(estimate_priors("bbse", b, train, conf))
    lo, hi = np.percentile(np.stack(boot), [2.5, 97.5], axis=0)
    return {"test_prior_95": np.c_[lo, hi].tolist()}


def _decide(state: dict[str, Any], moment: dict, n: int, task) -> tuple[bool, str, dict]:
    """``PRIOR=auto``'s decision and its figures: the check's gain on shifted and unshifted
    resamples, and the distance of the test's mean calibrated posterior from the train priors
    (``moment``: its total variation ``tv`` and ``chi``, ``check.moment_chi``) against the
    null's ``QUANTILE`` of the check's statistic, rescaled from the check's rows to ``n``
    (sampling noise in a mean shrinks as ``1/sqrt(n)``; a sum of squares as ``1/n``)."""
    check = state["check"]
    est = check["estimators"][check["chosen"]]
    stat = check.get("statistic", "tv")
    scale = check["rows"] / n
    null = {"tv": np.asarray(check["null_moment_tv"]) * np.sqrt(scale)}
    if "null_moment_chi" in check:
        null["chi"] = np.asarray(check["null_moment_chi"]) * scale
    limit = {k: float(np.quantile(v, QUANTILE)) for k, v in null.items()}
    outside = moment[stat] > limit[stat]
    figures = dict(est) | {"moment_tv": moment["tv"], "threshold": limit["tv"]}
    if "chi" in limit:
        figures |= {"moment_chi": moment["chi"], "threshold_chi": limit["chi"]}
    figures |= {"rows": check["rows"], "statistic": stat, "outside_null": bool(outside)}
    figures |= {k: check[k] for k in ("oracle_gain", "true_tv", "metric_sd", "chosen")}
    figures["alpha"] = check.get("alpha", 1.0)
    m = task.metric
    where = (
        f"{moment['tv']:.3f} from the train priors (total variation; the unshifted "
        f"{QUANTILE:.0%} quantile {limit['tv']:.3f})"
    )
    if stat == "chi":
        where += (
            f", {moment['chi']:.3g} in noise units, {'beyond' if outside else 'within'} the "
            f"unshifted {QUANTILE:.0%} quantile {limit['chi']:.3g}"
        )
    else:
        where = where.replace("(total variation; the", f"({'beyond' if outside else 'within'} the")
    said = (
        f"on {check['shifted_resamples']} OOF resamples of {check['rows']} rows shifted by "
        f"{check['true_tv']:.2f} {check['chosen']} gains {est['shifted_gain']:+.4f} {m} "
        f"(+-{est['shifted_gain_se']:.4f}; oracle {check['oracle_gain']:+.4f}), on "
        f"{check['null_resamples']} unshifted {est['unshifted_gain']:+.4f} (the quarter that "
        f"look most shifted {est['unshifted_tail_gain']:+.4f}; metric SD "
        f"{check['metric_sd']:.4f}); the test's mean posterior is {where}"
    )
    failed = [
        w
        for w, ok in (
            ("it does not help on shifted resamples", check["helps"]),
            ("it hurts the unshifted resamples that look shifted", check["no_harm"]),
            ("the test looks unshifted", outside),
        )
        if not ok
    ]
    applied = not failed
    return (
        applied,
        ("applied: " if applied else f"not applied ({'; '.join(failed)}): ") + said,
        figures,
    )


def top_movers(rec: dict[str, Any], classes: list[str], k: int = 5) -> list[dict[str, Any]]:
    """The ``k`` classes whose estimated test prior moved furthest from the train prior, with
    the bootstrap interval where there is one."""
    if "test_prior" not in rec:
        return []
    te, tr = np.asarray(rec["test_prior"]), np.asarray(rec["train_prior"])
    ci = rec.get("test_prior_95")
    return [
        {"class": str(classes[j]), "train": float(tr[j]), "test": float(te[j])}
        | ({"lo": ci[j][0], "hi": ci[j][1]} if ci else {})
        for j in np.argsort(-np.abs(te - tr))[:k]
    ]


def describe(rec: dict[str, Any], classes: list[str]) -> str:
    """One console line on the estimated shift and what was done."""
    if "test_prior" not in rec:
        return f"label shift: {rec['why']}"
    moved = ", ".join(
        f"{m['class']} {m['train']:.3f}->{m['test']:.3f}"
        + (f" [{m['lo']:.3f}, {m['hi']:.3f}]" if "lo" in m else "")
        for m in top_movers(rec, classes, 3)
    )
    return (
        f"label shift: test priors by {rec['estimator']} on calibrated posteriors (T = "
        f"{rec['temperature']:.2f}) differ from train by {rec['total_variation']:.3f} (total "
        f"variation; {moved}); "
        + (f"weights (test / train) ** {rec.get('alpha', 1.0):g}; " if rec["applied"] else "")
        + rec["why"]
    )
