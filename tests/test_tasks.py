"""Task, format and metric detection; the submission formats and their validator; the
post-processing each metric rewards."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from pipeline import artifacts
from pipeline.competition import load_competition
from pipeline.competition.metrics import log_loss, quadratic_kappa
from pipeline.competition.submission import validate_for, write_submission
from pipeline.ensemble.blend import SoftVote
from pipeline.ensemble.post import CutPoints, Temperature, WithPost
from pipeline.errors import ArtifactError, CompetitionError, SubmissionError

from .test_formats import aerial_cactus, aptos, dog_breed, histopathologic, plant_pathology_2020


@pytest.mark.parametrize(
    "build, kind, fmt, metric",
    [
        (dog_breed, "multiclass", "class_probabilities", "log_loss"),
        (aerial_cactus, "binary", "probability", "roc_auc"),
        (histopathologic, "binary", "probability", "roc_auc"),
        (aptos, "ordinal", "label", "quadratic_kappa"),
        (plant_pathology_2020, "multiclass", "class_probabilities", "mean_column_auc"),
    ],
)
def test_detection(tmp_path, build, kind, fmt, metric):
    build(tmp_path / "c")
    comp = load_competition(tmp_path / "c")
    assert (comp.task.kind, comp.task.format, comp.task.metric) == (kind, fmt, metric)
    assert "change with task/metric/positive_label in" in comp.task.describe(str(comp.root))


def test_histopathologic_without_toml_is_accuracy_and_says_how_to_change_it(tmp_path):
    histopathologic(tmp_path / "c")
    (tmp_path / "c" / "competition.toml").unlink()
    comp = load_competition(tmp_path / "c")
    assert (comp.task.format, comp.task.metric) == ("label", "accuracy")
    line = comp.task.describe(str(comp.root))
    assert "metric accuracy (inferred from the label format)" in line and "competition.toml" in line


def test_aptos_grades_are_ordered_numerically(tmp_path):
    aptos(tmp_path / "c")
    assert load_competition(tmp_path / "c").classes == ["0", "1", "2", "3", "4"]


@pytest.mark.parametrize(
    "toml, message",
    [
        ('metric = "dice"\n', r"metric = 'dice'; valid: accuracy, log_loss"),
        (
            'task = "regression"\n',
            r"task = 'regression'; valid: multiclass, binary, ordinal, multilabel",
        ),
        (
            'metric = "log_loss"\npositive_label = "7"\n',
            r"positive_label = '7' is not a train label",
        ),
    ],
)
def test_bad_competition_toml(tmp_path, toml, message):
    histopathologic(tmp_path / "c")
    (tmp_path / "c" / "competition.toml").write_text(toml)
    with pytest.raises(CompetitionError, match=message):
        load_competition(tmp_path / "c")


def test_ordinal_needs_integer_grades(tmp_path):
    dog_breed(tmp_path / "c")
    (tmp_path / "c" / "competition.toml").write_text('task = "ordinal"\n')
    with pytest.raises(CompetitionError, match="task = 'ordinal' needs integer grades"):
        load_competition(tmp_path / "c")


def test_one_hot_columns_that_are_not_0_1_are_refused_in_one_line(tmp_path):
    plant_pathology_2020(tmp_path / "c")
    df = pd.read_csv(tmp_path / "c" / "train.csv")
    df.loc[3, "rust"] = 2
    df.to_csv(tmp_path / "c" / "train.csv", index=False)
    with pytest.raises(CompetitionError, match=r"train.csv row 5: values other than 0/1"):
        load_competition(tmp_path / "c")


def test_submission_formats_written_and_validated(tmp_path):
    for build in (dog_breed, aerial_cactus, plant_pathology_2020):
        root = tmp_path / build.__name__
        build(root)
        comp = load_competition(root)
        t, c = len(comp.test), len(comp.classes)
        probs = np.random.default_rng(0).dirichlet(np.ones(c), t)
        path = write_submission(comp, tmp_path / f"{build.__name__}.csv", probs.argmax(1), probs)
        sub = validate_for(comp, path)
        cols = comp.class_columns or [comp.target_col]
        assert list(sub.columns) == list(pd.read_csv(comp.sample_path).columns)
        got = sub[cols].astype(float).to_numpy()
        want = (
            probs[:, [comp.classes.index(x) for x in cols]] if comp.class_columns else probs[:, 1:]
        )
        np.testing.assert_allclose(got, want, rtol=1e-6)


def test_probability_validator_messages(tmp_path):
    dog_breed(tmp_path / "c")
    comp = load_competition(tmp_path / "c")
    probs = np.full((len(comp.test), 3), 1 / 3)
    path = write_submission(comp, tmp_path / "s.csv", probs.argmax(1), probs)
    df = pd.read_csv(path, dtype=str)
    bad = df.copy()
    bad.loc[2, "pug"] = "1.5"
    bad.to_csv(path, index=False)
    with pytest.raises(SubmissionError, match=r"row 4: 'pug' is '1.5' for id .* between 0 and 1"):
        validate_for(comp, path)
    bad = df.copy()
    bad.loc[0, "pug"] = "0.9"
    bad.to_csv(path, index=False)
    with pytest.raises(
        SubmissionError, match=r"row 2: the 3 class probabilities .* add up to 1.5667"
    ):
        validate_for(comp, path)


def test_folds_of_another_task_are_refused(tmp_path):
    aptos(tmp_path / "c")
    comp = load_competition(tmp_path / "c")
    path = tmp_path / "folds.csv"
    artifacts.write_folds(path, pd.DataFrame({"id": ["a"], "label": ["0"], "fold": [0]}))
    with pytest.raises(
        ArtifactError, match="made for a multiclass task but the competition is now ordinal"
    ):
        artifacts.read_folds(path, comp.root, comp.task.kind)


def test_cut_points_beat_argmax_on_skewed_grades():
    rng = np.random.default_rng(0)
    y = rng.integers(0, 5, 600)
    # probabilities centred one grade too low: argmax is biased, the expected grade is not
    centre = np.clip(y - 0.6 + rng.normal(0, 0.5, len(y)), 0, 4)
    probs = np.exp(-((np.arange(5)[None, :] - centre[:, None]) ** 2))
    probs /= probs.sum(1, keepdims=True)
    cuts = CutPoints().fit(probs, y)
    assert quadratic_kappa(y, cuts.transform(probs)) > quadratic_kappa(y, probs) + 0.02
    assert np.all(np.diff(cuts.cuts_) > 0)


def test_temperature_lowers_log_loss_of_an_overconfident_blend():
    rng = np.random.default_rng(1)
    y = rng.integers(0, 3, 500)
    logits = rng.normal(size=(500, 3))
    logits[np.arange(500), y] += 1.0
    probs = np.exp(4 * logits) / np.exp(4 * logits).sum(1, keepdims=True)  # far too sharp
    t = Temperature().fit(probs, y)
    assert t.temperature_ > 2 and log_loss(y, t.transform(probs)) < log_loss(y, probs) - 0.3


def test_with_post_fits_both_on_the_same_rows():
    rng = np.random.default_rng(2)
    y = rng.integers(0, 3, 90)
    logits = np.stack([np.eye(3)[y] * 8 + rng.normal(size=(90, 3)) * 3 for _ in range(2)])
    est = WithPost(SoftVote(), Temperature()).fit(logits, y)
    assert est.weights_.tolist() == [0.5, 0.5]
    np.testing.assert_allclose(est.predict_proba(logits).sum(1), 1.0)


def test_multilabel_detection_folds_and_label_sets(tmp_path):
    from pipeline.competition.submission import label_sets
    from pipeline.competition.task import encode
    from pipeline.folds.stage import make_folds

    from .test_formats import plant_pathology_2021

    plant_pathology_2021(tmp_path / "c")
    comp = load_competition(tmp_path / "c")
    assert (comp.task.kind, comp.task.format, comp.task.metric) == (
        "multilabel", "label_list", "samples_f1",
    )  # fmt: skip
    assert comp.classes == ["complex", "healthy", "rust", "scab"]
    y = encode(comp.train["label"], comp.classes, "multilabel")
    assert y.shape == (96, 4) and y.sum() == 96 + 32  # two of six sets have 2 labels
    folds = make_folds(comp.train["label"], comp.train["id"], k=4, seed=0, y=y)
    shares = np.stack([y[folds["fold"] == f].mean(0) for f in range(4)])
    assert np.ptp(shares, axis=0).max() < 0.1  # every label's share alike in every fold
    probs = np.array([[0.9, 0.6, 0.1, 0.0], [0.2, 0.3, 0.4, 0.1]])
    assert label_sets(probs, comp.classes) == ["complex healthy", "rust"]  # none: the top one
    path = tmp_path / "s.csv"
    pd.DataFrame({"image": comp.test["id"], "labels": "rust mildew"}).to_csv(path, index=False)
    with pytest.raises(SubmissionError, match=r"row 2: label 'mildew' is not a train label"):
        validate_for(comp, path)


def test_multi_hot_columns_are_multilabel_scored_by_column_auc(tmp_path):
    plant_pathology_2020(tmp_path / "c")
    df = pd.read_csv(tmp_path / "c" / "train.csv")
    df.loc[3, ["rust", "scab"]] = 1
    df.to_csv(tmp_path / "c" / "train.csv", index=False)
    comp = load_competition(tmp_path / "c")
    assert (comp.task.kind, comp.task.format, comp.task.metric) == (
        "multilabel", "class_probabilities", "mean_column_auc",
    )  # fmt: skip
    assert set(comp.train["label"][3].split()) == {"rust", "scab"}


def test_threshold_beats_one_half_for_samples_f1():
    from pipeline.competition.metrics import samples_f1
    from pipeline.ensemble.multilabel import Threshold

    rng = np.random.default_rng(3)
    y = (rng.random((400, 5)) < 0.3).astype(int)
    y[np.arange(400), rng.integers(0, 5, 400)] = 1
    probs = np.clip(0.25 * y + rng.random((400, 5)) * 0.35, 0, 1)  # true labels rarely reach 1/2
    t = Threshold().fit(probs, y)
    assert t.threshold_ < 0.5
    assert samples_f1(y, t.transform(probs)) > samples_f1(y, probs) + 0.1


def test_top_k_submission_for_map_at_5(tmp_path):
    dog_breed(tmp_path / "c")  # reused with an id,label sample and metric map_at_5
    root = tmp_path / "c"
    sample = pd.read_csv(root / "sample_submission.csv")[["id"]].assign(breed="pug")
    sample.to_csv(root / "sample_submission.csv", index=False)
    (root / "competition.toml").write_text('metric = "map_at_5"\n')
    comp = load_competition(root)
    assert (comp.task.format, comp.task.metric) == ("top_k", "map_at_5")
    probs = np.tile([0.2, 0.5, 0.3], (len(comp.test), 1))
    path = write_submission(comp, tmp_path / "s.csv", probs.argmax(1), probs)
    sub = validate_for(comp, path)
    assert sub["breed"].iloc[0] == "collie pug beagle"  # most probable first
    sub.loc[1, "breed"] = "pug pug"
    sub.to_csv(path, index=False)
    with pytest.raises(SubmissionError, match=r"row 3: 2 labels with repeats or more than 5"):
        validate_for(comp, path)


@pytest.mark.parametrize(
    "make, message",
    [
        (
            lambda r: pd.DataFrame(
                {"id": [f"{i:08x}" for i in range(36)], "breed": np.linspace(0.1, 9.9, 36).round(3)}
            ).to_csv(r / "labels.csv", index=False),
            r"36 distinct numbers such as .*a regression target",
        ),
        (
            lambda r: (r / "labels.csv").unlink() or (r / "annotations.json").write_text("{}"),
            r"found annotations.json: COCO-style JSON is not read\).*convert to a train CSV",
        ),
    ],
)
def test_targets_that_cannot_be_served_are_refused_in_one_line(tmp_path, make, message):
    dog_breed(tmp_path / "c")
    root = tmp_path / "c"
    pd.read_csv(root / "sample_submission.csv")[["id"]].assign(breed="x").to_csv(
        root / "sample_submission.csv", index=False
    )
    make(root)
    with pytest.raises(CompetitionError, match=message):
        load_competition(root)
