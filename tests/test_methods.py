"""Each ensemble method on a hand-computed case; nested CV never scores a row with its own fit."""

from __future__ import annotations

import numpy as np
import pytest

from pipeline.ensemble.blend import (
    MeanLogits,
    RankAverage,
    TemperatureSoftVote,
    fit_temperature,
    softmax,
)
from pipeline.ensemble.methods import ALIASES, METHODS, canonical, method_class
from pipeline.ensemble.nested import choose, leaderboard, nested_predict
from pipeline.ensemble.optimise import AccuracyWeights, Caruana, _accuracy_curve
from pipeline.ensemble.stacking import Stacking


def _logit(p: float) -> list[float]:
    """Two-class logits whose softmax is ``[p, 1 - p]``."""
    return [np.log(p), np.log(1 - p)]


def test_mean_logits_by_hand():
    logits = np.array([[[2.0, 0.0]], [[0.0, 1.0]]])  # mean logits [1, 0.5]
    p = MeanLogits().fit(logits, np.array([0])).predict_proba(logits)
    np.testing.assert_allclose(p[0, 0], 1 / (1 + np.exp(-0.5)), rtol=1e-12)


def test_geo_is_an_alias_of_mean_logits_which_is_the_geometric_mean_by_hand():
    # "geo" names the same estimator as "logit" and is no leaderboard row of its own
    assert ALIASES == {"geo": "logit"} and canonical("geo") == "logit" and "geo" not in METHODS
    assert method_class("geo") is MeanLogits is method_class("logit")
    # member probs [0.9, 0.1] and [0.2, 0.8]: sqrt products 0.4243 and 0.2828 -> 0.6 / 0.4
    logits = np.array([[_logit(0.9)], [_logit(0.2)]])
    p = method_class("geo")().fit(logits, np.array([0])).predict_proba(logits)
    np.testing.assert_allclose(p[0], [0.6, 0.4], rtol=1e-6)
    shifted = logits + np.array([[[5.0]], [[-3.0]]])  # a per-row shift of a member changes nothing
    np.testing.assert_allclose(MeanLogits().fit(shifted, [0]).predict_proba(shifted), p)
    z = np.random.default_rng(0).normal(size=(3, 20, 5)) * 3  # softmax of the mean log-softmax
    log_softmax = z - np.log(np.exp(z).sum(-1, keepdims=True))
    geometric = np.exp(log_softmax).prod(0) ** (1 / len(z))  # the geometric mean of the probs
    np.testing.assert_allclose(
        MeanLogits().fit(z, [0]).predict_proba(z), softmax(log_softmax.mean(0)), rtol=1e-5
    )
    np.testing.assert_allclose(
        MeanLogits().fit(z, [0]).predict_proba(z),
        geometric / geometric.sum(-1, keepdims=True),
        rtol=1e-5,
    )


def test_rank_average_by_hand():
    # member 0 class-0 column [3, 1, 2] -> ranks [3, 1, 2]/3; class 1 [0, 0, 5] -> [1, 2, 3]/3
    # member 1 class-0 column [0, 9, 1] -> [1, 3, 2]/3;     class 1 [1, 2, 3] -> [1, 2, 3]/3
    logits = np.array([[[3, 0], [1, 0], [2, 5]], [[0, 1], [9, 2], [1, 3]]], dtype=float)
    p = RankAverage().fit(logits, np.zeros(3, int)).predict_proba(logits)
    totals = np.array([[4, 2], [4, 4], [4, 6]]) / 3  # summed ranks per row, then normalised
    np.testing.assert_allclose(p, totals / totals.sum(1, keepdims=True), rtol=1e-6)
    assert p.argmax(1).tolist() == [0, 0, 1]  # row 1 ties, lowest index wins


def test_temperature_recovers_an_overconfident_member():
    rng = np.random.default_rng(0)
    true_logits = rng.normal(size=(4000, 4)) * 1.5
    y = np.array([rng.choice(4, p=p) for p in softmax(true_logits)])
    assert fit_temperature(true_logits * 10, y) == pytest.approx(10, rel=0.15)
    oof = np.stack([true_logits * 10, true_logits])
    est = TemperatureSoftVote().fit(oof, y)
    np.testing.assert_allclose(est.temperatures_, [10, 1], rtol=0.15)
    p = est.predict_proba(oof)
    np.testing.assert_allclose(p, softmax(true_logits), atol=0.05)  # both members now agree


def test_accuracy_curve_matches_brute_force():
    rng = np.random.default_rng(1)
    for _ in range(20):
        rest, member = rng.random((50, 5)), rng.random((50, 5))
        y = rng.integers(0, 5, 50)
        rival = member.copy()
        rival[np.arange(50), y] = -np.inf
        grid = np.array([0, 0.25, 0.5, 1, 2, 4])
        got = _accuracy_curve(rest, member, rival.max(1), y, grid)
        want = [((rest + t * member).argmax(1) == y).mean() for t in grid]
        np.testing.assert_allclose(got, want)


def test_accuracy_weights_by_hand():
    # y = 0 everywhere. Member 0 is right on rows 0-2 by a hair, wrong on row 3 by a hair;
    # member 1 is confidently wrong on rows 0-1 and right on row 3. Equal weights: rows 2, 3
    # right (0.5). Dropping member 1 (weight 0): rows 0-2 right (0.75), the best possible.
    oof = np.array(
        [
            [_logit(0.55), _logit(0.55), _logit(0.55), _logit(0.45)],
            [_logit(0.05), _logit(0.05), _logit(0.50), _logit(0.95)],
        ]
    )
    y = np.zeros(4, int)
    est = AccuracyWeights().fit(oof, y)
    np.testing.assert_allclose(est.weights_, [1.0, 0.0])
    assert (est.predict_proba(oof).argmax(1) == y).mean() == 0.75


def test_caruana_by_hand():
    # p(true): member A [0.9, 0.5], member B [0.5, 0.9]. Init with the best one alone (a tie:
    # A, the lower index); adding B gives [0.7, 0.7], loss 0.357 < 0.399; then A or B both give
    # 0.361 (worse), so the best prefix is {A, B}: weights 1/2, 1/2.
    oof = np.array([[_logit(0.9), _logit(0.5)], [_logit(0.5), _logit(0.9)]])
    est = Caruana(n_init=1, bags=1, bag_fraction=1.0).fit(oof, np.zeros(2, int))
    np.testing.assert_allclose(est.weights_, [0.5, 0.5])


def test_caruana_finds_the_perfect_member_with_replacement():
    rng = np.random.default_rng(0)
    y = rng.integers(0, 3, 90)
    oof = rng.normal(size=(4, 90, 3)) * 2
    oof[2] = 3.0 * np.eye(3)[y]
    est = Caruana(seed=1).fit(oof, y)
    assert est.weights_.argmax() == 2 and est.weights_[2] > 0.5
    np.testing.assert_array_equal(est.weights_, Caruana(seed=1).fit(oof, y).weights_)


def test_stacking_learns_a_negative_weight():
    # A member that is reliably wrong (the label is its argmin) is useless to every average but
    # perfect information for a stacker, which must learn a negative weight.
    rng = np.random.default_rng(0)
    y = rng.integers(0, 3, 300)
    oof = (-4.0 * np.eye(3)[y] + rng.normal(size=(300, 3)) * 0.5)[None]
    est = Stacking(lambdas=(1e-4,)).fit(oof, y)
    assert (est.coef_ < 0).all()
    assert (est.predict_proba(oof).argmax(1) == y).mean() > 0.95
    assert method_class("soft")().fit(oof, y).predict_proba(oof).argmax(1).tolist() != y.tolist()


def test_stacking_inner_cv_prefers_the_penalty_that_generalises():
    # 10 noisy members, 100 rows, 5 classes: 55 coefficients overfit without a penalty.
    for seed in range(3):
        rng = np.random.default_rng(seed)
        y = rng.integers(0, 5, 100)
        oof = np.eye(5)[y][None] + rng.normal(size=(10, 100, 5))
        assert Stacking(lambdas=(1e-2, 1e-6)).fit(oof, y).lambda_ == 1e-2


@pytest.mark.parametrize("name", list(METHODS))
def test_every_method_is_sklearn_style(name):
    rng = np.random.default_rng(0)
    y = rng.integers(0, 4, 40)
    oof = 2.0 * np.eye(4)[y][None] + rng.normal(size=(3, 40, 4))
    est = method_class(name)()
    assert est.fit(oof, y) is est
    assert est.weights_.shape == (3,) and est.weights_.sum() == pytest.approx(1.0)
    p = est.predict_proba(oof[:, :7])
    assert p.shape == (7, 4) and np.allclose(p.sum(1), 1.0) and (p >= 0).all()
    with pytest.raises(ValueError, match="expected logits"):
        est.predict_proba(oof[:2])


class Memorise:
    """1-nearest-neighbour on the concatenated member logits: perfect on rows it was fitted on,
    chance on pure-noise rows it has not seen. In-sample it looks perfect; nested CV must not."""

    def fit(self, oof, y):
        self.x_, self.y_ = oof.transpose(1, 0, 2).reshape(oof.shape[1], -1), np.asarray(y)
        self.weights_ = np.full(len(oof), 1 / len(oof))
        self.rows_seen_ = {tuple(r) for r in self.x_.round(9)}
        return self

    def predict_proba(self, logits):
        x = logits.transpose(1, 0, 2).reshape(logits.shape[1], -1)
        near = ((x[:, None] - self.x_[None]) ** 2).sum(-1).argmin(1)
        self.asked_ = {tuple(r) for r in x.round(9)}
        return np.eye(logits.shape[2])[self.y_[near]]


def test_nested_cv_never_fits_on_the_rows_it_scores():
    rng = np.random.default_rng(0)
    n, c = 200, 4
    y = rng.integers(0, c, n)
    oof = rng.normal(size=(2, n, c))  # noise: nothing real to learn
    fold = np.arange(n) % 5
    _, fitted = nested_predict(Memorise(), oof, y, fold)
    for k, model in enumerate(fitted):
        held = {tuple(r) for r in oof[:, fold == k].transpose(1, 0, 2).reshape(-1, 2 * c).round(9)}
        assert not (held & model.rows_seen_), f"fold {k} rows leaked into their own fit"
        assert len(model.rows_seen_) == (fold != k).sum()

    table, _, nested = leaderboard(["a", "b"], oof, y, fold, {"memorise": Memorise}, False)
    row = table.set_index("name").loc["memorise"]
    assert row["oof_accuracy"] == 1.0  # the planted leak: in-sample it is perfect
    assert row["nested_accuracy"] < 0.4  # honest: about chance (0.25)
    assert nested["memorise"].shape == (n, c)


def test_leaderboard_orders_by_nested_score_and_auto_picks_a_method():
    rng = np.random.default_rng(0)
    y = rng.integers(0, 3, 120)
    oof = np.stack([3.0 * np.eye(3)[y] + rng.normal(size=(120, 3)) * s for s in (1.0, 2.0)])
    fold = np.arange(120) % 4
    methods = {"soft": method_class("soft"), "memorise": Memorise}
    table, fitted, _ = leaderboard(["a", "b"], oof, y, fold, methods, False)
    assert list(table.columns) == [
        "name", "kind", "metric", "oof_score", "nested_score", "oof_accuracy", "oof_log_loss",
        "nested_accuracy", "nested_log_loss", "nested_fold_std",
    ]  # fmt: skip
    assert (table["metric"] == "accuracy").all()
    assert table["nested_score"].equals(table["nested_accuracy"])
    assert table["nested_accuracy"].is_monotonic_decreasing
    assert choose(table, "auto") == "soft"  # memorise wins in-sample, loses nested
    assert choose(table, "memorise") == "memorise"
    assert set(fitted) == {"soft", "memorise"}


def test_the_metric_changes_the_chosen_weights():
    """Member 0 is right more often but wildly overconfident when wrong; member 1 is right
    less often but calibrated. Climbing accuracy keeps member 0 alone; climbing log loss mixes
    member 1 in, since it softens member 0's confident misses."""
    rng = np.random.default_rng(0)
    n, c = 400, 3
    y = rng.integers(0, c, n)
    sharp = np.full((n, c), -10.0)
    right = rng.random(n) < 0.9
    sharp[np.arange(n), np.where(right, y, (y + 1) % c)] = 10.0  # 90 % right, at 1e-9 when wrong
    calm = np.zeros((n, c))
    right = rng.random(n) < 0.8
    calm[np.arange(n), np.where(right, y, (y + 1) % c)] = 1.5  # 80 % right, p = 0.69 when right
    logits = np.stack([sharp, calm])
    by_acc = Caruana(metric="accuracy", bags=1, n_init=1).fit(logits, y).weights_
    by_loss = Caruana(metric="log_loss", bags=1, n_init=1).fit(logits, y).weights_
    assert by_acc.tolist() == [1.0, 0.0] and 0 < by_loss[1] < 1, (by_acc, by_loss)
    # and the leaderboard ranks by the competition's metric: log loss is lower-is-better
    from pipeline.competition.task import Task

    fold = np.arange(n) % 4
    loss_task = Task("multiclass", "class_probabilities", "log_loss")
    table, _, _ = leaderboard(["sharp", "calm"], logits, y, fold, {}, False, task=loss_task)
    assert list(table["name"]) == ["calm", "sharp"]
    table, _, _ = leaderboard(["sharp", "calm"], logits, y, fold, {}, False)
    assert list(table["name"]) == ["sharp", "calm"]


@pytest.mark.parametrize(
    "make",
    [
        lambda: method_class("soft")(),
        lambda: method_class("temp")(),
        lambda: method_class("caruana")(metric="roc_auc"),
        lambda: method_class("stack")(),
        lambda: __import__("pipeline.ensemble.post", fromlist=["x"]).WithPost(
            method_class("weighted")(),
            __import__("pipeline.ensemble.post", fromlist=["x"]).CutPoints(),
        ),
    ],
)
def test_saved_state_applies_to_new_logits_without_pickle(tmp_path, make):
    from pipeline.ensemble.state import load_state, save_state

    rng = np.random.default_rng(0)
    y = rng.integers(0, 2, 120)
    oof = np.stack([2.0 * np.eye(2)[y] + rng.normal(size=(120, 2)) * s for s in (1.0, 2.0, 3.0)])
    est = make().fit(oof, y)
    save_state(tmp_path, "m", est, {"members": ["a", "b", "c"]})
    raw = (tmp_path / "ensemble_state.npz").read_bytes()
    assert b"pickle" not in raw and np.load(tmp_path / "ensemble_state.npz", allow_pickle=False)
    state, again = load_state(tmp_path, "make ensemble")
    assert state["members"] == ["a", "b", "c"] and state["version"] == 1
    new = rng.normal(size=(3, 30, 2))
    np.testing.assert_allclose(again.predict_proba(new), est.predict_proba(new), rtol=1e-6)


def test_float16_members_keep_the_chosen_method_and_its_score(monkeypatch):
    """Above ``STORE_FLOAT16_ABOVE`` bytes the ensemble stage keeps member logits as float16 and
    every method computes in float32 blocks of rows: the leaderboard must choose the same
    method, every nested score within 1e-3 of float32's."""
    from pipeline.ensemble import blend, members
    from pipeline.tools.bench_ensemble import synthetic_members

    logits, y = synthetic_members(6, 3000, 20, seed=1)
    fold = np.arange(3000) % 5
    runs = [f"m{j}" for j in range(6)]
    methods = {n: method_class(n) for n in METHODS}
    t32, _, _ = leaderboard(runs, logits, y, fold, methods, False)
    monkeypatch.setattr(blend, "BLOCK_ROWS", 700)  # several blocks per member and fold
    t16, fitted, _ = leaderboard(runs, logits.astype(np.float16), y, fold, methods, False)
    assert choose(t16, "auto") == choose(t32, "auto")
    both = t32.merge(t16, on="name", suffixes=("", "_16"))
    gap = (both["nested_score"] - both["nested_score_16"]).abs()
    assert gap.max() <= 1e-3, gap.to_dict()
    p16 = fitted["soft"].predict_proba(logits.astype(np.float16))
    np.testing.assert_allclose(p16.sum(axis=1), 1.0, rtol=1e-12)

    small = [logits[0], logits[1]]
    assert members.store_dtype(small, small, multilabel=False) is np.float32
    monkeypatch.setattr(members, "STORE_FLOAT16_ABOVE", 0)
    assert members.store_dtype(small, small, multilabel=False) is np.float16
    assert members.store_dtype(small, small, multilabel=True) is np.float32
    assert members.store_dtype([logits[0] * 1e5], small, multilabel=False) is np.float32
    stacked = members.stack_as(list(small), np.float16)
    assert stacked.dtype == np.float16 and stacked.shape == (2, 3000, 20)


def test_blocks_of_rows_change_no_method(monkeypatch):
    """Every method predicts the same from one block as from many, and the fits that read the
    members in blocks (their probabilities, or of the true class) find the same weights."""
    from pipeline.ensemble import blend
    from pipeline.tools.bench_ensemble import synthetic_members

    logits, y = synthetic_members(4, 900, 7, seed=2)
    whole = {n: method_class(n)().fit(logits, y) for n in METHODS}
    p_whole = {n: e.predict_proba(logits) for n, e in whole.items()}
    monkeypatch.setattr(blend, "BLOCK_ROWS", 128)
    for n in METHODS:
        p = whole[n].predict_proba(logits)
        np.testing.assert_allclose(p, p_whole[n], rtol=1e-6, atol=1e-12, err_msg=n)
    for n in ("weighted", "accuracy", "caruana"):
        w = method_class(n)().fit(logits, y).weights_
        np.testing.assert_allclose(w, whole[n].weights_, rtol=1e-6, atol=1e-9, err_msg=n)


def test_stacking_leaves_the_members_logits_alone():
    """The design matrix is a copy: centring it must not shift the caller's logits (rank
    averaging, unlike a softmax, would see the shift)."""
    from pipeline.tools.bench_ensemble import synthetic_members

    for dtype in (np.float32, np.float16):
        logits, y = synthetic_members(3, 300, 5, seed=4)
        logits = logits.astype(dtype)
        before = logits.copy()
        Stacking().fit(logits, y).predict_proba(logits)
        np.testing.assert_array_equal(logits, before)


@pytest.mark.parametrize(
    "make",
    [
        lambda: method_class("weighted")(),
        AccuracyWeights,
        Caruana,
        lambda: Stacking(lambdas=(1e-3,)),  # one strength: no inner split to differ
        TemperatureSoftVote,
    ],
    ids=["weighted", "accuracy", "caruana", "stack", "temp"],
)
def test_integer_row_weights_fit_as_the_rows_repeated(make):
    """``sample_weight`` (the fit under the test priors, ensemble/test_priors.py): a row of
    weight 3 counts as three copies of it, a row of weight 0 as none, and weights that differ
    by class move the fit."""
    rng = np.random.default_rng(0)
    n, c = 240, 3
    y = rng.integers(0, c, n)
    # member 0 knows class 0 well, member 1 classes 1 and 2
    strong = np.where(y[:, None] == 0, [3.0, 0.5, 0.5], [0.5, 3.0, 3.0])
    oof = np.stack([np.eye(c)[y] * strong[:, m][:, None] + rng.normal(size=(n, c)) for m in (0, 1)])
    w = rng.integers(0, 4, n).astype(float)
    rep = np.repeat(np.arange(n), w.astype(int))
    a = make().fit(oof, y, sample_weight=w)
    b = make().fit(oof[:, rep], y[rep])
    np.testing.assert_allclose(a.weights_, b.weights_, atol=2e-3)
    np.testing.assert_allclose(a.predict_proba(oof), b.predict_proba(oof), atol=2e-3)
    if isinstance(a, TemperatureSoftVote):
        return  # equal weights by construction: only the temperatures move
    on_0 = make().fit(oof, y, sample_weight=np.where(y == 0, 10.0, 0.1)).weights_[0]
    off_0 = make().fit(oof, y, sample_weight=np.where(y == 0, 0.1, 10.0)).weights_[0]
    assert on_0 > off_0  # rows of class 0 weighted up: the member that knows it counts more
    with pytest.raises(ValueError, match="non-negative"):
        make().fit(oof, y, sample_weight=-w)
