"""Label shift: EM recovers known test priors from calibrated posteriors, the no-shift test
leaves unshifted data alone, and PRIOR is refused where it has no meaning."""

from __future__ import annotations

import numpy as np
import pytest

from pipeline.competition.task import Task
from pipeline.ensemble import prior
from pipeline.errors import PipelineError

MULTICLASS = Task("multiclass", "label", "accuracy")


def calibrated(n: int, test_prior: np.ndarray, train_prior: np.ndarray, seed: int = 0):
    """Rows drawn with ``test_prior``, and their exact posteriors under ``train_prior``: each
    class emits a Gaussian feature with its own mean (so the Bayes posterior is known)."""
    rng = np.random.default_rng(seed)
    c = len(test_prior)
    means = rng.normal(0, 1.5, (c, 4))
    y = rng.choice(c, size=n, p=test_prior)
    x = means[y] + rng.normal(0, 1, (n, 4))
    log_lik = -0.5 * ((x[:, None, :] - means[None]) ** 2).sum(axis=2)
    post = np.exp(log_lik - log_lik.max(axis=1, keepdims=True)) * train_prior
    return y, post / post.sum(axis=1, keepdims=True)


def test_em_recovers_known_priors_and_adjusting_helps():
    train = np.array([0.55, 0.25, 0.1, 0.1])
    test = np.full(4, 0.25)  # a balanced test set after imbalanced train classes
    y, probs = calibrated(6000, test, train)
    est = prior.estimate(probs, train)
    assert np.abs(np.array(est["test_prior"]) - test).max() < 0.03
    lo, hi = np.array(est["test_prior_95"]).T
    assert ((lo <= test) & (test <= hi)).all() or np.abs(
        np.array(est["test_prior"]) - test
    ).max() < 0.02
    assert est["p_value_no_shift"] < 1e-6 and est["total_variation"] > 0.2
    adjusted, rec = prior.adjust("auto", MULTICLASS, train, probs)
    assert rec["applied"] and rec["why"].startswith("p = ")
    acc = (probs.argmax(1) == y).mean()
    assert (adjusted.argmax(1) == y).mean() > acc + 0.01
    assert np.allclose(adjusted.sum(axis=1), 1)


def test_auto_applies_a_shift_only_where_its_oof_check_says_it_helps(monkeypatch):
    """The OOF rows resampled to the estimated test priors decide: on calibrated posteriors the
    check measures a gain and auto applies it; when the check finds none (overconfident
    posteriors: the digits ensemble in docs/ensembles-report.md), auto leaves the submission."""
    train = np.array([0.55, 0.25, 0.1, 0.1])
    y, probs = calibrated(6000, train, train, seed=3)
    _, test = calibrated(3000, np.array([0.05, 0.05, 0.45, 0.45]), train, seed=4)
    out, rec = prior.adjust("auto", MULTICLASS, train, test, bootstrap=0, oof=(y, probs))
    check = rec["self_check"]
    assert rec["p_value_no_shift"] < prior.ALPHA and check["repeats"] == prior.SELF_CHECK
    assert check["gain"] > 0.05 and rec["applied"] and out is not test
    assert "on OOF rows resampled to these priors it helps (accuracy" in rec["why"]
    monkeypatch.setattr(prior, "self_check", lambda *a, **k: {**check, "helps": False})
    out, rec = prior.adjust("auto", MULTICLASS, train, test, bootstrap=0, oof=(y, probs))
    assert out is test and not rec["applied"] and "it does not help" in rec["why"]
    # make predict has no OOF rows: the ensemble's check decides
    out, rec = prior.adjust("auto", MULTICLASS, train, test, bootstrap=0, helps=False)
    assert out is test and "the ensemble's OOF check said it does not help" in rec["why"]


def test_auto_leaves_unshifted_data_alone():
    train = np.array([0.55, 0.25, 0.1, 0.1])
    y, probs = calibrated(4000, train, train, seed=1)  # the test drawn like the train
    adjusted, rec = prior.adjust("auto", MULTICLASS, train, probs)
    assert not rec["applied"] and rec["p_value_no_shift"] > prior.ALPHA
    assert adjusted is probs
    lo, hi = rec["total_variation_bootstrap_95"]
    assert rec["total_variation"] < 0.03 and lo < 0.05
    same, rec = prior.adjust("train", MULTICLASS, train, probs)
    assert same is probs and not rec["applied"] and rec["why"] == "PRIOR=train"
    forced, rec = prior.adjust("em", MULTICLASS, train, probs)
    assert rec["applied"] and np.abs(forced - probs).max() < 0.1  # little to move
    assert "label shift: test priors by EM differ from train by" in prior.describe(
        rec, list("abcd")
    )


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
    out, rec = prior.adjust("auto", task, np.array([0.5, 0.5]), probs)
    assert out is probs and not rec["applied"]
    with pytest.raises(PipelineError, match="PRIOR='flat': use one of auto, train, em"):
        prior.check_prior("flat", MULTICLASS)


def test_prior_check_validates_on_reweighted_oof_resamples():
    """The tool's arithmetic: on class-balanced resamples of rows whose train posteriors are
    calibrated, the adjusted accuracy is higher; on iid resamples auto changes nothing."""
    from pipeline.tools.prior_check import resample_scores

    train = np.array([0.55, 0.25, 0.1, 0.1])
    y, probs = calibrated(6000, train, train, seed=2)  # OOF rows: drawn like the train
    rows = resample_scores(y, probs, MULTICLASS, n=2000, repeats=5, seed=0)
    balanced = rows[rows["resample"] == "balanced"]
    iid = rows[rows["resample"] == "iid"]
    assert (balanced["adjusted"] > balanced["plain"]).mean() >= 0.8
    assert (iid["auto_applied"] == 0).all() and (iid["auto"] == iid["plain"]).all()
