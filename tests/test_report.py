"""write_report numbers on a hand-made case, plots for many classes, report_stage errors."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from pipeline import artifacts
from pipeline.competition import Competition
from pipeline.errors import ArtifactError
from pipeline.report import report_stage, write_report

# a: 4/4 right. b: 1/4 right, 3 called c. c: 1/2 right, 1 called a.
Y = np.array([0, 0, 0, 0, 1, 1, 1, 1, 2, 2])
PRED = np.array([0, 0, 0, 0, 1, 2, 2, 2, 2, 0])


def test_per_class_numbers_and_order(tmp_path, capsys):
    probs = np.eye(3)[PRED] * 0.8 + 0.1
    members = {"m1": np.eye(3)[PRED], "m2": np.eye(3)[np.ones(10, dtype=int)]}  # m2 always "b"
    summary = write_report(tmp_path, Y, probs, ["a", "b", "c"], members)
    df = pd.read_csv(tmp_path / "per_class.csv", keep_default_na=False)
    assert df["class"].tolist() == ["b", "c", "a"]  # worst accuracy first
    assert df["support"].tolist() == [4, 2, 4]
    assert df["correct"].tolist() == [1, 1, 4]
    np.testing.assert_allclose(df["accuracy"], [0.25, 0.5, 1.0])
    np.testing.assert_allclose(df["precision"], [1.0, 0.25, 0.8])  # b, c, a
    np.testing.assert_allclose(df["recall"], [0.25, 0.5, 1.0])
    assert df["confused_with"].tolist() == ["c", "a", ""]
    assert df["confused_count"].tolist() == [3, 1, 0]
    np.testing.assert_allclose(df["acc_m1"], [0.25, 0.5, 1.0])
    np.testing.assert_allclose(df["acc_m2"], [1.0, 0.0, 0.0])
    assert df["best_member"].tolist() == ["m2", "m1", "m1"]

    pairs = pd.read_csv(tmp_path / "confused_pairs.csv")
    assert pairs[["true", "predicted", "count"]].values.tolist() == [["b", "c", 3], ["c", "a", 1]]
    np.testing.assert_allclose(pairs["rate"], [0.75, 0.5])

    assert summary["accuracy"] == pytest.approx(0.6)
    assert [w["class"] for w in summary["worst_classes"]] == ["b", "c", "a"]
    printed = capsys.readouterr().out
    assert "worst 3 classes" in printed and "c (3)" in printed


def test_many_classes_plots(tmp_path):
    rng = np.random.default_rng(0)
    c = 176
    classes = [f"species_{i:03d}_name" for i in range(c)]
    y = np.repeat(np.arange(c), 5)
    pred = np.where(rng.random(len(y)) < 0.7, y, rng.integers(0, c, len(y)))
    summary = write_report(tmp_path, y, np.eye(c)[pred], classes)
    assert len(pd.read_csv(tmp_path / "per_class.csv")) == c
    assert len(pd.read_csv(tmp_path / "confused_pairs.csv")) == 50
    for f in ("per_class_accuracy.png", "confusion_matrix.png"):
        assert (tmp_path / f).stat().st_size > 20_000, f
    assert len(summary["worst_classes"]) == 10


def _comp(tmp_path) -> Competition:
    empty = pd.DataFrame({"id": [], "label": [], "path": []})
    return Competition(
        root=tmp_path / "input" / "toy", name="toy", slug="toy", id_col="id", target_col="label",
        sample_path=tmp_path / "s.csv", train_csv=tmp_path / "t.csv", train=empty, test=empty,
        classes=["a", "b", "c"],
    )  # fmt: skip


def test_report_stage_missing_file(tmp_path):
    with pytest.raises(
        ArtifactError, match=r"oof_ensemble\.npz not found; run: make ensemble COMP="
    ):
        report_stage(_comp(tmp_path), root=tmp_path)


def test_report_stage_rebuilds_and_checks_ids(tmp_path):
    comp = _comp(tmp_path)
    ids = [f"t{i}" for i in range(10)]
    folds = pd.DataFrame({"id": ids, "label": [comp.classes[i] for i in Y], "fold": 0})
    artifacts.write_folds(artifacts.folds_path("toy", tmp_path), folds)
    npz = tmp_path / "submissions" / "toy" / "ensemble" / "oof_ensemble.npz"
    artifacts.write_logits(npz, ids=ids, classes=comp.classes, probs=np.eye(3)[PRED])
    assert report_stage(comp, root=tmp_path)["accuracy"] == pytest.approx(0.6)
    assert (npz.parent / "report" / "confusion_matrix.png").is_file()
    artifacts.write_logits(npz, ids=ids[::-1], classes=comp.classes, probs=np.eye(3)[PRED])
    with pytest.raises(
        ArtifactError,
        match=r"has 10 ids / 3 classes that do not match .*toy\.csv; re-run: make ensemble",
    ):
        report_stage(comp, root=tmp_path)
