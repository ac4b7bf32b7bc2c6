"""Ensemble estimators on hand-computed cases, and ensemble_stage end-to-end on synthetic files."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from pipeline import artifacts
from pipeline.competition import Competition
from pipeline.competition.task import Task
from pipeline.ensemble.blend import HardVote, SoftVote, softmax
from pipeline.ensemble.members import combine_views
from pipeline.ensemble.methods import METHODS, method_class
from pipeline.ensemble.optimise import WeightedSoftVote
from pipeline.ensemble.stage import ensemble_stage
from pipeline.errors import ArtifactError, PipelineError
from pipeline.report.stage import report_stage
from pipeline.workspace import Workspace

CLASSES = ["cat", "dog", "fox"]

# 3 members x 4 rows x 3 classes. Row 0: votes 0,0,1 -> 0. Row 1: all vote 2. Row 2: one vote
# each; member 1 is by far the most confident (class 1), so the summed probability picks 1.
# Row 3: one vote each with mirror-image logits: exact tie everywhere -> lowest index 0.
LOGITS = np.array(
    [
        [[2.0, 1.0, 0.0], [0.0, 0.0, 1.0], [2.0, 0.0, 0.0], [1.0, 0.0, 0.0]],
        [[3.0, 0.0, 0.0], [0.0, 1.0, 2.0], [0.0, 5.0, 0.0], [0.0, 1.0, 0.0]],
        [[0.0, 1.0, 0.0], [1.0, 0.0, 3.0], [0.0, 0.0, 1.0], [0.0, 0.0, 1.0]],
    ]
)


def test_softmax_is_stable_and_normalised():
    p = softmax(np.array([[1000.0, 1000.0, -1000.0], [0.0, 0.0, 0.0]]))
    np.testing.assert_allclose(p, [[0.5, 0.5, 0.0], [1 / 3, 1 / 3, 1 / 3]], atol=1e-12)


def test_combine_views_is_log_mean_of_probs():
    logits = np.array([[[2.0, 0.0]], [[0.0, 2.0]]])  # two views that disagree symmetrically
    np.testing.assert_allclose(np.exp(combine_views(logits)), [[0.5, 0.5]], atol=1e-12)
    x = np.random.default_rng(0).normal(size=(3, 5, 4)) * 50
    expected = np.log(softmax(x).mean(axis=0))
    np.testing.assert_allclose(combine_views(x), expected, rtol=1e-9)
    np.testing.assert_allclose(softmax(combine_views(x[:1])), softmax(x[0]), atol=1e-12)


def test_hard_vote_majority_and_ties():
    est = HardVote().fit(LOGITS, np.zeros(4, dtype=int))
    np.testing.assert_allclose(est.weights_, [1 / 3] * 3)
    p = est.predict_proba(LOGITS)
    assert p.argmax(axis=1).tolist() == [0, 2, 1, 0]
    np.testing.assert_allclose(p.sum(axis=1), 1.0)
    np.testing.assert_allclose(p[0], [2 / 3, 1 / 3, 0.0], atol=1e-8)  # vote share
    summed = softmax(LOGITS[:, 2]).sum(axis=0)
    assert summed.argmax() == 1  # the hand-made tie really is decided by summed probability


def test_hard_vote_weights_change_the_winner():
    # Row 0 votes are 0,0,1; giving member 2 more weight than the other two together flips it.
    p = HardVote(weights=[1, 1, 3]).fit(LOGITS, np.zeros(4, dtype=int)).predict_proba(LOGITS)
    assert p[0].argmax() == 1
    with pytest.raises(ValueError, match="non-negative"):
        HardVote(weights=[1, -1, 1]).fit(LOGITS, np.zeros(4, dtype=int))


def test_soft_vote_is_mean_of_softmax():
    est = SoftVote().fit(LOGITS, np.zeros(4, dtype=int))
    np.testing.assert_allclose(est.predict_proba(LOGITS), softmax(LOGITS).mean(axis=0))
    np.testing.assert_allclose(est.weights_, [1 / 3] * 3)


def test_weighted_soft_vote_finds_the_perfect_member():
    rng = np.random.default_rng(0)
    y = rng.integers(0, 3, size=60)
    perfect = 5.0 * np.eye(3)[y]
    noise = rng.normal(size=(2, 60, 3)) * 2
    oof = np.concatenate([noise[:1], perfect[None], noise[1:]])
    est = WeightedSoftVote().fit(oof, y)
    assert est.weights_.min() >= 0 and est.weights_.sum() == pytest.approx(1.0)
    assert est.weights_[1] > 0.95
    again = WeightedSoftVote().fit(oof, y)
    np.testing.assert_array_equal(est.weights_, again.weights_)  # deterministic
    np.testing.assert_allclose(est.predict_proba(oof).sum(axis=1), 1.0)


def test_one_member_works_for_every_method():
    for name in METHODS:
        est = method_class(name)().fit(LOGITS[:1], np.zeros(4, dtype=int))
        assert est.weights_.tolist() == [1.0]
        if name not in ("rank", "stack"):  # these two re-score classes, the others keep argmax
            assert est.predict_proba(LOGITS[:1]).argmax(axis=1).tolist() == [0, 2, 0, 0], name


# ---------------------------------------------------------------- ensemble_stage end to end

N, T = 30, 8
TEST_IDS = ["s5", "s2", "s7", "s0", "s1", "s3", "s6", "s4"]  # sample order, deliberately unsorted
TEST_Y = np.arange(T) % 3


def _logits(y: np.ndarray, strength: float, seed: int, views: int = 2) -> np.ndarray:
    rng = np.random.default_rng(seed)
    return strength * np.eye(3)[y][None] + rng.normal(size=(views, len(y), 3))


def make_toy(tmp_path: Path, runs: dict[str, float] | None = None) -> Competition:
    """Competition, folds file and one oof/test pair per run (name -> signal strength)."""
    comp_root = tmp_path / "input" / "toy"
    comp_root.mkdir(parents=True)
    sample = comp_root / "sample_submission.csv"
    pd.DataFrame({"image": TEST_IDS, "label": "cat"}).to_csv(sample, index=False)
    ids = [f"t{i}" for i in range(N)]
    y = np.arange(N) % 3
    labels = [CLASSES[i] for i in y]
    folds = pd.DataFrame({"id": ids, "label": labels, "fold": np.arange(N) % 3})
    fpath = artifacts.write_folds(Workspace.under(tmp_path, "toy").folds_csv, folds)
    fhash = artifacts.file_hash(fpath)
    runs = {"a": 4.0, "b": 1.0} if runs is None else runs
    for k, (run, strength) in enumerate(runs.items()):
        d = tmp_path / "models" / "toy" / run
        common = {"classes": CLASSES, "views": ["none", "hflip"], "folds_hash": np.array(fhash)}
        artifacts.write_logits(
            d / "oof.npz", ids=ids, fold=folds["fold"], logits=_logits(y, strength, k), **common
        )
        artifacts.write_logits(
            d / "test.npz", ids=TEST_IDS, logits=_logits(TEST_Y, 8.0, 10 + k), **common
        )
    train = pd.DataFrame({"id": ids, "label": labels, "path": [f"{i}.png" for i in ids]})
    test = pd.DataFrame({"id": TEST_IDS, "path": [f"{i}.png" for i in TEST_IDS]})
    return Competition(
        root=comp_root, name="toy", slug="toy", id_col="image", target_col="label",
        sample_path=sample, train_csv=comp_root / "train.csv", train=train, test=test,
        classes=list(CLASSES),
    )  # fmt: skip


def _ws(tmp_path: Path) -> Workspace:
    return Workspace.under(tmp_path, "toy")


def test_ensemble_stage_end_to_end(tmp_path, capsys):
    comp = make_toy(tmp_path)
    summary = ensemble_stage(comp, _ws(tmp_path), [])
    out = tmp_path / "submissions" / "toy" / "ensemble"
    on_disk = json.loads((out / "ensemble.json").read_text())
    assert on_disk == summary
    for key in ("name", "comp", "method", "chosen_by", "members", "weights", "leaderboard",
                "oof_accuracy", "oof_log_loss", "nested_accuracy", "nested_log_loss",
                "folds_hash", "n_train", "n_test", "n_classes", "created"):  # fmt: skip
        assert key in summary, key
    assert summary["chosen_by"] == "nested accuracy"
    assert [m["run"] for m in summary["members"]] == ["a", "b"]
    assert set(summary["members"][0]["views"]) == {"none", "hflip"}
    board = pd.read_csv(out / "leaderboard.csv")
    pd.testing.assert_frame_equal(board, pd.DataFrame(summary["leaderboard"]))
    assert set(board["name"]) == {"a", "b", *METHODS}
    assert summary["method"] in METHODS
    assert sum(summary["weights"].values()) == pytest.approx(1.0)
    assert (summary["n_train"], summary["n_test"], summary["n_classes"]) == (N, T, 3)
    methods = board[board["kind"] == "method"]
    assert summary["nested_accuracy"] == methods["nested_accuracy"].max()
    assert summary["method"] == methods["name"].iloc[0]

    sub = pd.read_csv(out / "submission.csv", dtype=str)
    assert list(sub.columns) == ["image", "label"]
    assert sub["image"].tolist() == TEST_IDS
    assert sub["label"].tolist() == [CLASSES[i] for i in TEST_Y]

    with np.load(out / "oof_ensemble.npz") as z:
        assert z["probs"].shape == (N, 3) and z["probs"].dtype == np.float32
        assert z["ids"].tolist() == [f"t{i}" for i in range(N)]
    printed = capsys.readouterr().out
    assert "<- chosen" in printed and "tta" in printed and "nested acc" in printed

    assert not (out / "report").exists()  # the report is its own stage (the CLI chains it)
    report = report_stage(comp, _ws(tmp_path))
    assert report["accuracy"] == pytest.approx(summary["oof_accuracy"])
    for f in ("per_class.csv", "confused_pairs.csv", "per_class_accuracy.png",
              "confusion_matrix.png"):  # fmt: skip
        assert (out / "report" / f).stat().st_size > 0, f
    assert "acc_a" in pd.read_csv(out / "report" / "per_class.csv").columns

    # label shift: the decision and its figures in ensemble.json, the saved state
    # make predict re-decides with, and the report page
    shift = summary["label_shift"]
    assert shift["prior"] == "auto" and isinstance(shift["applied"], bool)
    assert {"moment_tv", "threshold", "shifted_gain", "unshifted_gain"} <= set(shift["check"])
    assert len(shift["top_movers"]) == 3 and shift["why"] in printed
    state = json.loads((out / "ensemble_state.json").read_text())["label_shift"]
    assert {"temperature", "bias", "estimator", "form", "check"} <= set(state)
    assert len(state["check"]["null_moment_tv"]) == 200
    page = (out / "report" / "report.html").read_text()
    assert "<h2>Label shift</h2>" in page and shift["why"][:40] in page

    again = report_stage(comp, _ws(tmp_path))  # make report rebuilds from oof_ensemble.npz
    assert again["accuracy"] == pytest.approx(summary["oof_accuracy"])


def test_ensemble_stage_named_method_and_one_run(tmp_path):
    comp = make_toy(tmp_path)
    summary = ensemble_stage(comp, _ws(tmp_path), ["b"], method="weighted", name="only_b")
    assert summary["method"] == "weighted" and summary["weights"] == {"b": 1.0}
    assert summary["chosen_by"] == "user"
    assert (tmp_path / "submissions" / "toy" / "only_b" / "submission.csv").is_file()


def test_unknown_method(tmp_path):
    comp = make_toy(tmp_path)
    with pytest.raises(
        PipelineError,
        match=r"unknown method 'best'; valid: auto, soft, hard, logit, rank, .*, geo \(= logit\)",
    ):
        ensemble_stage(comp, _ws(tmp_path), [], method="best")
    with pytest.raises(PipelineError, match=r"unknown method 'vote'; valid: auto, soft"):
        ensemble_stage(comp, _ws(tmp_path), [], methods=["soft", "vote"])


def test_methods_subset_and_named_method(tmp_path):
    comp = make_toy(tmp_path)
    summary = ensemble_stage(comp, _ws(tmp_path), [], method="caruana", methods=["soft"])
    assert summary["method"] == "caruana" and summary["chosen_by"] == "user"
    assert {r["name"] for r in summary["leaderboard"]} == {"a", "b", "soft", "caruana"}


def test_no_runs(tmp_path):
    comp = make_toy(tmp_path, runs={})
    with pytest.raises(
        ArtifactError, match=r"no trained runs in .*models/toy/; run: make train COMP="
    ):
        ensemble_stage(comp, _ws(tmp_path), [])


def test_missing_run(tmp_path):
    comp = make_toy(tmp_path)
    with pytest.raises(ArtifactError, match=r"zzz/oof\.npz not found; run: make train .*RUNS=zzz"):
        ensemble_stage(comp, _ws(tmp_path), ["a", "zzz"])


def test_oof_ids_mismatch(tmp_path):
    comp = make_toy(tmp_path)
    path = tmp_path / "models" / "toy" / "a" / "oof.npz"
    with np.load(path) as z:
        data = {k: z[k] for k in z.files}
    data["ids"], data["fold"], data["logits"] = (
        data["ids"][1:],
        data["fold"][1:],
        data["logits"][:, 1:],
    )
    artifacts.write_logits(path, **data)
    with pytest.raises(ArtifactError, match=r"a/oof\.npz has 29 ids .* make train COMP=.* RUNS=a"):
        ensemble_stage(comp, _ws(tmp_path), [])


def test_stale_folds_hash(tmp_path):
    comp = make_toy(tmp_path)
    fpath = _ws(tmp_path).folds_csv
    fpath.write_text(fpath.read_text() + "\n")  # same rows, different bytes
    with pytest.raises(ArtifactError, match=r"was trained on folds .* make train COMP=.* RUNS=a"):
        ensemble_stage(comp, _ws(tmp_path), [])


def test_classes_mismatch(tmp_path):
    comp = make_toy(tmp_path)
    comp.classes = [*CLASSES, "emu"]
    with pytest.raises(ArtifactError, match=r"toy\.csv has 3 classes .* has 4.*make folds COMP="):
        ensemble_stage(comp, _ws(tmp_path), [])


def test_sample_with_extra_columns(tmp_path):
    comp = make_toy(tmp_path)
    pd.DataFrame({"image": TEST_IDS, "label": "cat", "x": 0}).to_csv(comp.sample_path, index=False)
    with pytest.raises(PipelineError, match=r"sample_submission\.csv has columns .*'x'"):
        ensemble_stage(comp, _ws(tmp_path), [])


def test_submission_keeps_sample_column_order(tmp_path):
    comp = make_toy(tmp_path)
    pd.DataFrame({"label": "cat", "image": TEST_IDS}).to_csv(comp.sample_path, index=False)
    ensemble_stage(comp, _ws(tmp_path), [], method="hard")
    sub = pd.read_csv(tmp_path / "submissions" / "toy" / "ensemble" / "submission.csv", dtype=str)
    assert list(sub.columns) == ["label", "image"] and sub["image"].tolist() == TEST_IDS


def test_test_label_trick_is_opt_in_and_recorded(tmp_path, monkeypatch):
    import pipeline.ensemble.stage as stage

    comp = make_toy(tmp_path)
    plain = ensemble_stage(comp, _ws(tmp_path), [], method="soft")
    assert plain["test_label_trick"] == {"enabled": False}
    # s5 (predicted cat) duplicates a train "fox"; s7 (predicted fox) a fox: one change
    monkeypatch.setattr(stage, "duplicate_test_labels", lambda c, ws: {"s5": "fox", "s7": "fox"})
    summary = ensemble_stage(comp, _ws(tmp_path), [], method="soft", name="trick", dup_labels=True)
    assert summary["test_label_trick"] == {
        "enabled": True, "n_test_duplicates": 2, "changed_ids": ["s5"]
    }  # fmt: skip
    sub = pd.read_csv(tmp_path / "submissions" / "toy" / "trick" / "submission.csv", dtype=str)
    expected = [CLASSES[i] for i in TEST_Y]
    expected[0] = "fox"
    assert sub["label"].tolist() == expected


def test_an_accepted_label_shift_scores_the_leaderboard_under_the_test_priors(tmp_path, capsys):
    """A planted shift: train classes 70/10/10, test balanced. Member "major" says class 0
    for every image, "minor" knows classes 1 and 2 well and class 0 a little: under the train priors major leads, under the
    estimated (balanced) test priors minor does, and METHOD=auto takes the best method by
    ``nested_score_test_priors``."""
    from pipeline.ensemble.nested import test_prior_resamples

    def test_prior_scores(*args, **kwargs):
        return {k: v.mean() for k, v in test_prior_resamples(*args, **kwargs).items()}

    rng = np.random.default_rng(0)
    y = np.repeat([0, 1, 2], [70, 10, 10])

    def planted(rows, member: str) -> np.ndarray:
        """major: class 0 for every row (surely on class 0's); minor: the true class, surely
        on classes 1 and 2, faintly on class 0."""
        if member == "major":
            signal = np.eye(3)[np.zeros_like(rows)] * np.where(rows == 0, 6.0, 2.0)[:, None]
        else:
            signal = np.eye(3)[rows] * np.where(rows == 0, 0.5, 6.0)[:, None]
        return rng.normal(size=(2, len(rows), 3)) + signal[None]

    major, minor = planted(y, "major"), planted(y, "minor")
    task = Task("multiclass", "label", "accuracy")
    train, flat = np.array([0.7, 0.1, 0.1]) / 0.9, np.full(3, 1 / 3)
    probs = {"major": softmax(major[0]), "minor": softmax(minor[0])}
    same = test_prior_scores(task, y, probs, train, train, alpha=0.0)
    shifted = test_prior_scores(task, y, probs, train, flat)
    assert same["major"] > same["minor"] and shifted["minor"] > shifted["major"]
    assert test_prior_scores(task, y, probs, train, flat) == shifted  # paired, seeded

    comp = make_toy(tmp_path, runs={})  # the toy's layout; the planted members below
    folds = pd.DataFrame(
        {"id": [f"t{i}" for i in range(len(y))], "label": [CLASSES[i] for i in y],
         "fold": np.arange(len(y)) % 3}
    )  # fmt: skip
    fpath = artifacts.write_folds(_ws(tmp_path).folds_csv, folds)
    common = {"classes": CLASSES, "views": ["none", "hflip"]}
    common["folds_hash"] = np.array(artifacts.file_hash(fpath))
    test_y = np.arange(30) % 3
    test_ids = [f"s{i}" for i in range(30)]
    for run, logits in (("major", major), ("minor", minor)):
        d = tmp_path / "models" / "toy" / run
        artifacts.write_logits(
            d / "oof.npz", ids=folds["id"], fold=folds["fold"], logits=logits, **common
        )
        test = planted(test_y, run)
        artifacts.write_logits(d / "test.npz", ids=test_ids, logits=test, **common)
    pd.DataFrame({"image": test_ids, "label": "cat"}).to_csv(comp.sample_path, index=False)
    comp = dataclasses.replace(
        comp,
        train=pd.DataFrame({"id": folds["id"], "label": folds["label"], "path": "x.png"}),
        test=pd.DataFrame({"id": test_ids, "path": "x.png"}),
    )
    summary = ensemble_stage(comp, _ws(tmp_path), ["major", "minor"], prior="em")
    board = pd.DataFrame(summary["leaderboard"]).set_index("name")
    assert board.loc["major", "nested_score"] > board.loc["minor", "nested_score"]
    assert (
        board.loc["minor", "nested_score_test_priors"]
        > board.loc["major", "nested_score_test_priors"]
    )
    methods = board[board["kind"] == "method"]
    out = capsys.readouterr().out
    best = methods["nested_score_test_priors"].max()
    assert methods.loc[summary["method"], "nested_score_test_priors"] == best
    assert summary["chosen_by"] == "nested accuracy under the estimated test priors"
    assert "under the estimated test priors (resampled OOF rows" in out
    # the methods that learn weights, fitted again on OOF rows weighted to the test priors
    assert {f"{m}@test" for m in ("weighted", "accuracy", "caruana", "stack", "temp")} <= set(
        methods.index
    )
    assert (
        board.loc[[m for m in methods.index if "@" in m], "nested_score_test_priors"].notna().all()
    )
    assert "fitted on OOF rows weighted to the estimated test priors: temp@test, " in out

    # nested: the priors fold k's rows are scored at never saw fold k's labels
    from types import SimpleNamespace

    from pipeline.ensemble.prior import fit_prior
    from pipeline.ensemble.test_priors import fold_priors as _fold_priors

    fold, p = np.arange(len(y)) % 3, softmax(minor.mean(axis=0))
    test_p = softmax(planted(test_y, "minor").mean(axis=0))
    state = fit_prior("em", task, y, p, fold, len(test_p))
    before = _fold_priors(comp, state, SimpleNamespace(fold=fold, y=y), p, test_p)
    y2 = y.copy()
    y2[fold == 0] = rng.permutation(y2[fold == 0])  # fold 0's labels shuffled
    after = _fold_priors(comp, state, SimpleNamespace(fold=fold, y=y2), p, test_p)
    assert before.shape == (3, 3) and np.allclose(before.sum(axis=1), 1)
    assert np.allclose(after[0], before[0]) and not np.allclose(after[1], before[1])


def test_methods_fitted_under_the_test_priors_weigh_rows_by_them_and_stay_nested():
    """``<method>@test``: the all-rows fit weighs each OOF row by ``p_test / p_train`` of its
    class, fold k's nested copy by the priors estimated without fold k's labels; the member
    the shifted test favours gains weight."""
    from types import SimpleNamespace

    from pipeline.ensemble.nested import leaderboard
    from pipeline.ensemble.test_priors import Board, fit_under_test_priors

    rng = np.random.default_rng(1)
    y = np.repeat([0, 1, 2], [140, 30, 30])
    fold = np.arange(len(y)) % 4
    # member 0 knows class 0 only, member 1 classes 1 and 2 only
    sure = np.where(y == 0, [[3.0], [0.3]], [[0.3], [3.0]])
    oof = np.stack([np.eye(3)[y] * sure[m][:, None] + rng.normal(size=(len(y), 3)) for m in (0, 1)])
    seen = []

    class Recorder(WeightedSoftVote):
        def fit(self, logits, labels, sample_weight=None):
            seen.append((labels.copy(), None if sample_weight is None else sample_weight.copy()))
            return super().fit(logits, labels, sample_weight=sample_weight)

    task = Task("multiclass", "label", "accuracy")
    makers = {"weighted": Recorder, "soft": method_class("soft")}
    table, fitted, nested = leaderboard(["a", "b"], oof, y, fold, makers, False, task)
    seen.clear()
    train = np.bincount(y) / len(y)
    shift = {"train_prior": train.tolist(), "test_prior": [1 / 3] * 3}
    priors = np.array([[0.3, 0.35, 0.35], [0.32, 0.34, 0.34], [1 / 3] * 3, [0.4, 0.3, 0.3]])
    board = Board(table, fitted, nested, makers)
    comp = SimpleNamespace(task=task)
    fit_under_test_priors(
        comp,
        board,
        SimpleNamespace(oof=oof, runs=["a", "b"]),
        SimpleNamespace(y=y, fold=fold),
        shift,
        priors,
    )

    assert "weighted@test" in set(board.table["name"]) and "soft@test" not in set(
        board.table["name"]
    )
    (all_y, all_w), *per_fold = seen
    np.testing.assert_allclose(all_w, (np.full(3, 1 / 3) / train)[all_y])
    for k, (labels, w) in enumerate(per_fold):
        np.testing.assert_allclose(w, (priors[k] / train)[labels])  # never the full estimate
    assert board.nested["weighted@test"].shape == (len(y), 3)
    assert board.fitted["weighted@test"].weights_[1] > board.fitted["weighted"].weights_[1]
    # a teacher refits the saved method on train rows, which come as the train classes do
    from pipeline.ensemble.stage import method_factory

    assert method_factory("weighted@test", task) is WeightedSoftVote
