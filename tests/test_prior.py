"""Label shift: calibrate, then estimate; PRIOR=auto applies the correction only when
its check at this model quality, class count and test size says it helps, does no harm, and the
test set looks shifted; the saved state makes make predict decide the same way."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from scipy.special import softmax

from pipeline.competition.task import Task
from pipeline.ensemble import prior
from pipeline.ensemble.prior.estimators import (
    Calibration,
    bbse_priors,
    em_priors,
    estimate_priors,
    reweight,
    soft_confusion,
    total_variation,
)
from pipeline.errors import PipelineError

MULTICLASS = Task("multiclass", "label", "accuracy")
# the trap (uncalibrated EM "corrects" a test set that is not shifted), made by
# prior_bench.simulate(Case("weak", 10, 256, "none", 106)): a weak, overconfident 10-class
# member (768 OOF rows from one fold model each, OOF accuracy 0.37) and 256 test rows drawn at
# the train's priors (the mean of 5 fold models' logits)
WEAK_UNSHIFTED = Path(__file__).parent / "prior_weak_unshifted.npz"


def calibrated(n: int, test_prior: np.ndarray, train_prior: np.ndarray, seed: int = 0):
    """Rows drawn with ``test_prior``, and their exact posteriors under ``train_prior``: each
    class emits a Gaussian feature with its own mean (so the Bayes posterior is known)."""
    rng = np.random.default_rng(seed)
    c = len(test_prior)
    means = np.random.default_rng(99).normal(0, 1.5, (c, 4))  # one model for every call
    y = rng.choice(c, size=n, p=test_prior)
    x = means[y] + rng.normal(0, 1, (n, 4))
    log_lik = -0.5 * ((x[:, None, :] - means[None]) ** 2).sum(axis=2)
    post = np.exp(log_lik - log_lik.max(axis=1, keepdims=True)) * train_prior
    return y, post / post.sum(axis=1, keepdims=True)


def test_map_estimate_shrinks_towards_the_train_priors_by_its_pseudo_rows():
    """``mapA`` adds A pseudo-rows per class at the train priors to EM's soft counts: with few
    test rows it stays closer to the train priors than EM, with many it agrees with EM, and
    ``map0`` is EM itself."""
    train = np.array([0.55, 0.25, 0.1, 0.1])
    test = np.full(4, 0.25)
    for n, closer in ((80, True), (20_000, False)):
        _, q = calibrated(n, test, train, seed=3)
        em, map10 = em_priors(q, train, tol=1e-6), estimate_priors("map10", q, train)
        assert np.allclose(estimate_priors("map0", q, train), em)
        if closer:  # 40 pseudo-rows against 80 rows: well inside EM's estimate
            assert total_variation(map10, train) < 0.75 * total_variation(em, train)
        else:
            assert total_variation(map10, em) < 0.01
            assert total_variation(map10, test) < 0.03


def overconfident(probs: np.ndarray, tau: float = 2.0) -> np.ndarray:
    return softmax(tau * np.log(np.clip(probs, 1e-12, None)), axis=1)


def test_calibration_then_em_and_bbse_recover_known_priors():
    train = np.array([0.55, 0.25, 0.1, 0.1])
    test = np.full(4, 0.25)  # a balanced test set after imbalanced train classes
    y, probs = calibrated(6000, train, train, seed=1)
    yt, test_probs = calibrated(6000, test, train, seed=2)
    test = np.bincount(yt) / len(yt)  # the test rows' own shares
    cal = Calibration.fit(overconfident(probs), y)
    assert cal.temperature == pytest.approx(2.0, rel=0.1)
    q = cal.apply(overconfident(test_probs))
    assert np.abs(em_priors(q, train) - test).max() < 0.03
    conf = soft_confusion(cal.apply(overconfident(probs)), y)
    assert np.abs(bbse_priors(q, conf, train) - test).max() < 0.03
    raw = em_priors(overconfident(test_probs), train)  # uncalibrated: EM overshoots
    assert total_variation(raw, test) > 2 * total_variation(em_priors(q, train), test)


def _weak_unshifted():
    z = np.load(WEAK_UNSHIFTED)
    p, pt = (softmax(z[k].astype(np.float64), axis=1) for k in ("oof_logits", "test_logits"))
    return z["y"].astype(int), p, z["fold"].astype(int), z["test_y"].astype(int), pt


def test_a_weak_member_on_unshifted_data_is_not_corrected():
    y, p, fold, yt, pt = _weak_unshifted()
    train = np.bincount(y, minlength=10) / len(y)
    raw = em_priors(pt, train)  # the trap is real: uncalibrated EM drifts and costs 5 points
    assert total_variation(raw, train) > 0.2
    assert MULTICLASS.score(yt, reweight(pt, raw / train)) < MULTICLASS.score(yt, pt) - 0.04
    state = prior.fit_prior("auto", MULTICLASS, y, p, fold, len(pt))
    out, rec = prior.apply_prior(state, MULTICLASS, pt, bootstrap=0)
    assert out is pt and not rec["applied"]
    assert rec["why"].startswith("not applied (") and "the test looks unshifted" in rec["why"]
    check = rec["check"]
    assert check["statistic"] == "chi" and not check["outside_null"]
    assert check["moment_chi"] < check["threshold_chi"] and "in noise units, within" in rec["why"]
    forced, rec = prior.apply_prior({**state, "mode": "em"}, MULTICLASS, pt, bootstrap=0)
    assert rec["applied"] and rec["why"] == "PRIOR=em" and forced is not pt


def _planted(seed: int = 3):
    """A strong, overconfident member: 3,000 OOF rows at the train priors, 2,000 test rows at
    planted priors."""
    train = np.array([0.4, 0.3, 0.1, 0.1, 0.1])
    test = np.array([0.1, 0.1, 0.3, 0.3, 0.2])
    y, p = calibrated(3000, train, train, seed=seed)
    yt, pt = calibrated(2000, test, train, seed=seed + 1)
    return test, y, overconfident(p), np.arange(len(y)) % 5, yt, overconfident(pt)


def test_a_strong_member_on_a_planted_shift_is_corrected():
    test, y, p, fold, yt, pt = _planted()
    state = prior.fit_prior("auto", MULTICLASS, y, p, fold, len(pt))
    out, rec = prior.apply_prior(state, MULTICLASS, pt)
    assert rec["applied"] and rec["why"].startswith("applied: on 20 OOF resamples of 2000 rows")
    assert np.abs(np.array(rec["test_prior"]) - test).max() < 0.04
    lo, hi = np.array(rec["test_prior_95"]).T
    assert (lo <= hi).all() and (hi - lo).max() < 0.1
    assert MULTICLASS.score(yt, out) > MULTICLASS.score(yt, pt) + 0.02
    movers = prior.top_movers(rec, list("abcde"), 2)
    assert {m["class"] for m in movers} <= {"a", "c", "d"} and "lo" in movers[0]
    line = prior.describe(rec, list("abcde"))
    assert line.startswith("label shift: test priors by ") and "; applied: on 20" in line
    same, off = prior.apply_prior({**state, "mode": "train"}, MULTICLASS, pt, bootstrap=0)
    assert same is pt and not off["applied"] and off["why"] == "PRIOR=train"


def test_a_shrunken_correction_is_the_checks_choice_and_replayed():
    """auto's correction may be shrunk, weights (p_test / p_train) ** alpha with the alpha the
    check chose on its shifted resamples; PRIOR=em is always the full correction."""
    from pipeline.ensemble.prior.check import ALPHAS, weights

    assert 1.0 in ALPHAS and min(ALPHAS) > 0
    w = weights(np.array([0.5, 0.3, 0.2]), np.array([0.2, 0.3, 0.5]), 0.5)
    assert np.allclose(w, [np.sqrt(2.5), 1.0, np.sqrt(0.4)])
    test, y, p, fold, yt, pt = _planted(seed=7)
    state = prior.fit_prior("auto", MULTICLASS, y, p, fold, len(pt))
    check = state["check"]
    assert state["alpha"] == check["alpha"] in ALPHAS
    assert set(check["estimators"]) >= {"em/calibrated", "em/calibrated^0.5", "bbse/raw^0.25"}
    best = check["estimators"][check["chosen"]]
    assert best["no_harm"] and all(
        best["shifted_gain"] - best["shifted_gain_se"] >= e["shifted_gain"] - e["shifted_gain_se"]
        for e in check["estimators"].values()
        if e["no_harm"]
    )
    half = {**state, "alpha": 0.5, "estimator": "em", "form": "calibrated"}
    out, rec = prior.apply_prior(half, MULTICLASS, pt, bootstrap=0)
    assert rec["applied"] and rec["alpha"] == 0.5 and rec["check"]["alpha"] == check["alpha"]
    q = Calibration(state["temperature"], tuple(state["bias"])).apply(pt)
    w = (np.array(rec["test_prior"]) / np.array(rec["train_prior"])) ** 0.5
    assert np.allclose(out, reweight(q, w))
    full, rec = prior.apply_prior({**half, "mode": "em"}, MULTICLASS, pt, bootstrap=0)
    assert rec["alpha"] == 1.0 and np.allclose(full, reweight(q, w**2))
    assert "weights (test / train) ** 1; PRIOR=em" in prior.describe(rec, list("abcde"))
    _, rec = prior.apply_prior({**half, "mode": "train"}, MULTICLASS, pt, bootstrap=0)
    assert "weights" not in prior.describe(rec, list("abcde"))


def test_the_saved_state_decides_the_same_way_after_json():
    """make predict re-decides from ensemble_state.json: the same test rows, the same
    decision, estimate and probabilities; a smaller hidden test set rescales the null."""
    _, y, p, fold, _, pt = _planted(seed=5)
    state = prior.fit_prior("auto", MULTICLASS, y, p, fold, len(pt))
    saved = json.loads(json.dumps(state))
    a, rec_a = prior.apply_prior(state, MULTICLASS, pt, bootstrap=5)
    b, rec_b = prior.apply_prior(saved, MULTICLASS, pt, bootstrap=5)
    assert rec_a == rec_b and np.array_equal(a, b) and rec_a["applied"]
    _, small = prior.apply_prior(saved, MULTICLASS, pt[:500], bootstrap=0)
    assert small["check"]["threshold"] == pytest.approx(2 * rec_a["check"]["threshold"])
    assert small["check"]["threshold_chi"] == pytest.approx(4 * rec_a["check"]["threshold_chi"])
    assert len(saved["null_var"]) == 5 and saved["check"]["statistic"] == "chi"


@pytest.mark.parametrize(
    ("task", "word"),
    [
        (Task("multilabel", "label_list", "samples_f1"), "sets"),
        (Task("ordinal", "label", "quadratic_kappa"), "ordered grades"),
    ],
)
def test_prior_em_is_refused_where_it_has_no_meaning(task, word):
    with pytest.raises(
        PipelineError,
        match=rf"PRIOR=em re-weights one class per image; a {task.kind} task's labels are {word}: use PRIOR=train",
    ):
        prior.check_prior("em", task)
    probs = np.full((3, 2), 0.5)
    state = prior.fit_prior("auto", task, np.zeros((3, 2)), probs, np.arange(3), 3)
    out, rec = prior.apply_prior(state, task, probs)
    assert out is probs and not rec["applied"] and rec["why"] == f"not estimated for {task.kind}"
    with pytest.raises(PipelineError, match="PRIOR='flat': use one of auto, train, em"):
        prior.check_prior("flat", MULTICLASS)


def test_prior_check_validates_on_reweighted_oof_resamples():
    """The tool on a saved ensemble's arithmetic: class-balanced resamples of calibrated rows
    gain from the correction; iid ones are left alone."""
    from pipeline.tools.prior_check import resample_scores

    train = np.array([0.55, 0.25, 0.1, 0.1])
    y, probs = calibrated(6000, train, train, seed=2)
    rows = resample_scores(y, probs, np.arange(6000) % 4, MULTICLASS, n=1500, repeats=3)
    balanced = rows[rows["resample"] == "balanced"]
    iid = rows[rows["resample"] == "iid"]
    assert (balanced["auto"] > balanced["plain"]).all() and balanced["auto_applied"].all()
    assert (iid["auto_applied"] == 0).all() and (iid["auto"] == iid["plain"]).all()


def test_a_bal_estimator_snaps_to_balanced_classes_only_where_the_test_looks_balanced():
    """``+bal`` candidates take balanced priors when the test's mean calibrated posterior lies
    within the check's balanced null (Kaggle's test sets often are balanced: one hypothesis
    instead of C - 1 noisy shares), and the free estimate elsewhere; saved and replayed."""
    train = np.array([0.4, 0.3, 0.1, 0.1, 0.1])
    y, p = calibrated(3000, train, train, seed=11)
    fold = np.arange(len(y)) % 5
    state = prior.fit_prior("auto", MULTICLASS, y, overconfident(p), fold, 2000)
    assert {"em+bal/calibrated", "bbse+bal/raw^0.5"} <= set(state["check"]["estimators"])
    assert len(state["check"]["null_balanced_chi"]) == 200
    snap = json.loads(json.dumps({**state, "estimator": "em+bal", "form": "calibrated"}))
    yt, pt = calibrated(2000, np.full(5, 0.2), train, seed=12)
    out, rec = prior.apply_prior(snap, MULTICLASS, overconfident(pt), bootstrap=0)
    assert rec["applied"] and rec["balanced"]["snapped"]
    assert np.allclose(rec["test_prior"], 0.2) and rec["balanced"]["chi"] < rec["balanced"]["limit"]
    assert "; the test looks class-balanced (" in rec["why"]  # the report and TensorBoard show why
    assert "the test looks class-balanced (" in prior.describe(rec, list("abcde"))
    assert total_variation(rec["balanced"]["free"], np.full(5, 0.2)) > 0.005  # EM's own noise
    shifted = np.array([0.05, 0.1, 0.3, 0.3, 0.25])
    _, ps = calibrated(2000, shifted, train, seed=13)
    _, rec = prior.apply_prior(snap, MULTICLASS, overconfident(ps), bootstrap=0)
    assert not rec["balanced"]["snapped"] and rec["test_prior"] == rec["balanced"]["free"]
    assert np.abs(np.array(rec["test_prior"]) - shifted).max() < 0.05
