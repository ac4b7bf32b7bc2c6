"""The honest check behind ``PRIOR=auto``: does the correction help at this model's quality,
class count and test-set size, and what does an unshifted test set's estimate look like?

Held-out OOF rows (their calibration fitted on the other folds) are resampled, with replacement
and by class, to test sets of the real test's size: ``NULL`` of them unshifted (priors drawn
as the train counts leave the population's priors uncertain, ``Dirichlet(counts)``) and
``SHIFTED`` at Dirichlet draws around the train priors (a known shift). Each
estimator estimates the priors from a resample's posteriors alone, as it would on the test set;
the figures are its estimation error, the metric's change against the uncorrected posteriors
(the submission without correction), and the distance of its estimate from the train priors on
unshifted resamples: the null that the test set's own distance is compared with.

Test posteriors are the mean over K fold models, OOF posteriors come from one fold model each:
averaging removes model noise, so under the OOF calibration the test posteriors are
underconfident, and EM (and BBSE, whose confusion matrix is the OOF one) on underconfident
posteriors of a weak model drifts far from the train priors on an unshifted test set (a
10-class weak member, 9,000 unshifted test rows: EM's distance 0.19 against 0.04 true, 0.11 at
the OOF null's edge; ``tools prior-check --bench`` makes its test posteriors so). The mean of
the calibrated posteriors barely moves with the temperature (0.019-0.033 over temperatures
1.5-3 on that case), so "is the test shifted?" is asked of that mean's distance from the train
priors (``moment_chi``: each class's deviation in units of its OOF noise, more powerful on a
weak member than the total variation ``moment_tv`` it replaced), and EM or BBSE only size the
correction once it is. The correction may be shrunk, weights ``(p_test / p_train) ** alpha``:
the check scores every estimator x form x ``ALPHAS`` and keeps the best that does no harm.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from .estimators import (
    ESTIMATORS,
    Calibration,
    estimate_priors,
    reweight,
    soft_confusion,
    total_variation,
)

NULL, SHIFTED = 40, 20  # resamples without and with a known shift, scored
NULL_MOMENT = 200  # unshifted resamples for the null of the test's distance (cheap: a mean)
CONCENTRATION = 2.0  # Dirichlet(CONCENTRATION * C * p_train): about 0.2-0.3 total variation
# every BALANCED-th shifted resample has balanced classes instead (Kaggle's test sets often are:
# a shift whose gain is small, where a noisy correction costs more than it brings)
BALANCED = 4
QUANTILE = 0.99  # the test's distance must exceed this quantile of the null's
HELP_SE = 2.0  # helps: the mean gain on shifted resamples above HELP_SE standard errors
# no harm: on the quarter of unshifted resamples that look most shifted (where a false alarm
# fires; the null's quantile keeps its rate near 1 %) the change stays above -HARM metric SDs
HARM = 1.0
# "is the test shifted?" asks how far the mean calibrated posterior m lies from the train
# priors: "chi", sum_k (m_k - p_k)^2 / v_k with v_k the OOF calibrated posteriors' variance
# (each class's deviation in its own noise units: a weak member's rare classes move little but
# their noise is smaller still), or "tv", its total variation (before)
STATISTIC = "chi"
SELECT_SE = 1.0  # the choice among candidates: mean gain on shifted resamples less this many SEs
FORMS = ("calibrated", "raw")  # the posteriors the weights reweight
MAX_POOL = 20_000  # OOF rows resampled at most (the check's cost)
# shrunken corrections: weights (p_test / p_train) ** alpha; 1 is the full Bayes correction.
# The estimate's size is what goes wrong (a weak member's EM overshoots), and a correction
# shrunk towards none is the check's own choice, on the same shifted resamples
ALPHAS = (0.25, 0.5, 0.75, 1.0)
# "+bal": the estimate snaps to balanced classes when the rows' mean calibrated posterior is
# within the BALANCED_QUANTILE of what balanced resamples give (Kaggle's test sets often are
# balanced; an estimate of C - 1 free shares then adds noise that the one hypothesis does not)
SNAP = "+bal"
KINDS = ESTIMATORS + tuple(k + SNAP for k in ESTIMATORS)
BALANCED_QUANTILE = 0.95


def candidate(kind: str, form: str, alpha: float) -> str:
    """The check's name of an estimator, the posteriors it reweights and its shrinkage."""
    return f"{kind}/{form}" + ("" if alpha == 1 else f"^{alpha:g}")


def weights(test_prior: np.ndarray, train_prior: np.ndarray, alpha: float = 1.0) -> np.ndarray:
    """``(p_test / p_train) ** alpha``: the Bayes weights, shrunk towards 1 for ``alpha < 1``."""
    w = np.asarray(test_prior, dtype=np.float64) / np.asarray(train_prior, dtype=np.float64)
    return w if alpha == 1 else np.clip(w, 1e-12, None) ** alpha


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


def held_out_calibrated(probs: np.ndarray, y: np.ndarray, fold: np.ndarray) -> np.ndarray:
    """``(N, C)`` calibrated posteriors, each fold's rows by a calibration fitted on the other
    folds: the check scores what calibration does on rows it never saw."""
    out = np.empty_like(probs, dtype=np.float64)
    for f in np.unique(fold):
        rows = fold == f
        out[rows] = Calibration.fit(probs[~rows], y[~rows]).apply(probs[rows])
    return out


def moment_chi(probs: np.ndarray, train_prior: np.ndarray, var) -> float:
    """``sum_k (m_k - p_k)^2 / var_k`` of the rows' mean posterior ``m`` against ``p``."""
    m = np.asarray(probs).mean(axis=0, dtype=np.float64)
    return float(((m - train_prior) ** 2 / np.clip(np.asarray(var), 1e-12, None)).sum())


def signed(task, new: float, old: float) -> float:
    """The metric's improvement from ``old`` to ``new`` (positive: better)."""
    return new - old if task.greater_is_better else old - new


def balanced_mean(confusion: np.ndarray) -> np.ndarray:
    """The mean calibrated posterior balanced classes would give: ``confusion @ (1/C)``."""
    return np.asarray(confusion).mean(axis=1)


def looks_balanced(probs, confusion, var, limit: float) -> bool:
    """Whether the rows' mean calibrated posterior lies within ``limit`` (``moment_chi``) of
    what balanced classes give: then ``+bal`` estimators take balanced priors."""
    return moment_chi(probs, balanced_mean(confusion), var) <= limit


def _one(task, y, raw, cal, target, train_prior, confusion, var, bal_limit) -> dict[str, Any]:
    """One resample's figures per estimator: distance of the estimate from the train priors,
    error against ``target``, and the metric's change when its weights reweight the calibrated
    or the raw posteriors (and the oracle's, the better form at ``target``); a ``+bal``
    estimator's estimate is balanced where the rows look balanced (``bal_limit``)."""
    plain = task.score(y, raw)
    oracle = [task.score(y, reweight(p, target / train_prior)) for p in (cal, raw)]
    out = {"plain": plain, "oracle": max(signed(task, o, plain) for o in oracle)}
    out["moment_tv"] = total_variation(cal.mean(axis=0), train_prior)
    out["moment_chi"] = moment_chi(cal, train_prior, var)
    out["looks_balanced"] = looks_balanced(cal, confusion, var, bal_limit)
    gains: dict[bytes, dict[str, float]] = {}  # the figures of one estimate, scored once
    free = {k: estimate_priors(k, cal, train_prior, confusion) for k in ESTIMATORS}
    for kind in KINDS:
        snap = kind.endswith(SNAP) and out["looks_balanced"]
        te = (
            np.full(len(train_prior), 1 / len(train_prior))
            if snap
            else free[kind.removesuffix(SNAP)]
        )
        out[f"{kind}_tv"] = total_variation(te, train_prior)
        out[f"{kind}_error"] = total_variation(te, target)
        key = te.tobytes()
        if key not in gains:
            gains[key] = {
                f"{form}^{alpha}": signed(
                    task, task.score(y, reweight(p, weights(te, train_prior, alpha))), plain
                )
                for form, p in zip(FORMS, (cal, raw), strict=True)
                for alpha in ALPHAS
            }
        for form in FORMS:
            for alpha in ALPHAS:
                out[f"{candidate(kind, form, alpha)}_gain"] = gains[key][f"{form}^{alpha}"]
    return out


def resample_figures(task, y, raw, fold, train_prior, n: int, seed: int = 0, var=None) -> list:
    """Every resample's figures (``_one``), ``NULL`` unshifted then ``SHIFTED`` shifted; BBSE's
    confusion matrix comes from the half of the rows a resample is not drawn from; ``var``:
    the calibrated posteriors' variance per class that ``moment_chi`` divides by."""
    rng = np.random.default_rng(seed)
    if len(y) > MAX_POOL:
        keep = np.sort(rng.choice(len(y), MAX_POOL, replace=False))
        y, raw, fold = y[keep], raw[keep], fold[keep]
    cal = held_out_calibrated(raw, y, fold)
    var = cal.var(axis=0) if var is None else np.asarray(var)
    half = rng.permutation(len(y)) % 2
    conf = [soft_confusion(cal[half != h], y[half != h]) for h in (0, 1)]
    pool = [np.flatnonzero(half == h) for h in (0, 1)]
    c, rows = len(train_prior), []
    # the null of "balanced?": balanced resamples' distance from the balanced mean posterior
    uniform = np.full(c, 1 / c)
    bal_null = []
    for _ in range(NULL_MOMENT):
        h = int(rng.integers(2))
        idx = pool[h][resample_by_class(y[pool[h]], uniform, n, rng)]
        bal_null.append(moment_chi(cal[idx], balanced_mean(conf[h]), var))
    bal_limit = float(np.quantile(bal_null, BALANCED_QUANTILE))
    for r in range(NULL + SHIFTED):
        shifted = r >= NULL
        # unshifted: the population's priors as the train counts leave them uncertain (a test
        # set of the train's population is not drawn at the train rows' own shares)
        alpha = CONCENTRATION * c * train_prior if shifted else len(y) * train_prior
        target = rng.dirichlet(alpha + 1e-3)
        if shifted and BALANCED and (r - NULL) % BALANCED == BALANCED - 1:
            target = np.full(c, 1 / c)
        h = r % 2
        idx = pool[h][resample_by_class(y[pool[h]], target, n, rng)]
        one = _one(task, y[idx], raw[idx], cal[idx], target, train_prior, conf[h], var, bal_limit)
        rows.append({"shifted": shifted, "true_tv": total_variation(target, train_prior), **one})
    for _ in range(NULL_MOMENT - NULL):  # the null of the test's distance: a mean is cheap
        h = int(rng.integers(2))
        target = rng.dirichlet(len(y) * train_prior + 1e-3)
        idx = pool[h][resample_by_class(y[pool[h]], target, n, rng)]
        moment = total_variation(cal[idx].mean(axis=0), train_prior)
        chi = moment_chi(cal[idx], train_prior, var)
        rows.append({"shifted": False, "moment_only": True, "moment_tv": moment, "moment_chi": chi})
    rows.append({"shifted": False, "balanced_null": bal_null})
    return rows


def summarise(rows: list[dict]) -> dict[str, Any]:
    """The check's figures per estimator, form and shrinkage, and the one chosen: the larger
    gain on shifted resamples (mean less one standard error) among those that do no harm on
    unshifted ones."""
    bal_null = next((r["balanced_null"] for r in rows if "balanced_null" in r), [])
    rows = [r for r in rows if "balanced_null" not in r]
    null = [r for r in rows if not r["shifted"] and not r.get("moment_only")]
    shift = [r for r in rows if r["shifted"]]
    # the unshifted resamples that look most shifted: where a false alarm would do its harm
    tail = sorted(null, key=lambda r: r[f"moment_{STATISTIC}"])[-max(1, len(null) // 4) :]
    sd = float(np.std([r["plain"] for r in null], ddof=1))
    per = {}
    for kind, form, alpha in ((k, f, a) for k in KINDS for f in FORMS for a in ALPHAS):
        name = candidate(kind, form, alpha)
        g1 = np.array([r[f"{name}_gain"] for r in shift])
        g0 = np.array([r[f"{name}_gain"] for r in null])
        g_tail = float(np.mean([r[f"{name}_gain"] for r in tail]))
        per[name] = {
            "shifted_gain": float(g1.mean()),
            "shifted_gain_se": float(g1.std(ddof=1) / np.sqrt(len(g1))),
            "shifted_error": float(np.mean([r[f"{kind}_error"] for r in shift])),
            "unshifted_gain": float(g0.mean()),
            "unshifted_tail_gain": g_tail,
            "helps": bool(g1.mean() - HELP_SE * g1.std(ddof=1) / np.sqrt(len(g1)) > 0),
            "no_harm": bool(g_tail >= -HARM * sd),
        }
    ok = [k for k in per if per[k]["no_harm"]] or list(per)
    chosen = max(ok, key=lambda k: per[k]["shifted_gain"] - SELECT_SE * per[k]["shifted_gain_se"])
    return {
        "chosen": chosen,
        "estimator": chosen.split("/")[0],
        "form": chosen.split("/")[1].split("^")[0],
        "alpha": float(chosen.split("^")[1]) if "^" in chosen else 1.0,
        "metric_sd": sd,
        "oracle_gain": float(np.mean([r["oracle"] for r in shift])),
        "true_tv": float(np.mean([r["true_tv"] for r in shift])),
        "estimators": per,
        "helps": per[chosen]["helps"],
        "no_harm": per[chosen]["no_harm"],
        "statistic": STATISTIC,
        "null_moment_tv": [float(r["moment_tv"]) for r in rows if not r["shifted"]],
        "null_moment_chi": [float(r["moment_chi"]) for r in rows if not r["shifted"]],
        "null_balanced_chi": [float(v) for v in bal_null],
        "null_resamples": len(null),
        "shifted_resamples": len(shift),
    }
