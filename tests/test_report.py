"""write_report numbers on a hand-made case, plots for many classes, report_stage errors."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from pipeline import artifacts
from pipeline.competition import Competition
from pipeline.errors import ArtifactError
from pipeline.report.stage import Predictions, report_stage, write_report
from pipeline.workspace import Workspace

# a: 4/4 right. b: 1/4 right, 3 called c. c: 1/2 right, 1 called a.
Y = np.array([0, 0, 0, 0, 1, 1, 1, 1, 2, 2])
PRED = np.array([0, 0, 0, 0, 1, 2, 2, 2, 2, 0])


def test_per_class_numbers_and_order(tmp_path, capsys):
    probs = np.eye(3)[PRED] * 0.8 + 0.1
    members = {"m1": np.eye(3)[PRED], "m2": np.eye(3)[np.ones(10, dtype=int)]}  # m2 always "b"
    members = {m: p.argmax(1) for m, p in members.items()}  # (N,) argmax per member
    summary = write_report(tmp_path, Predictions(Y, probs, ["a", "b", "c"], member_preds=members))
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
    summary = write_report(tmp_path, Predictions(y, np.eye(c)[pred], classes))
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
        report_stage(_comp(tmp_path), Workspace.under(tmp_path, "toy"))


def test_report_stage_rebuilds_and_checks_ids(tmp_path):
    comp = _comp(tmp_path)
    ws = Workspace.under(tmp_path, "toy")
    ids = [f"t{i}" for i in range(10)]
    folds = pd.DataFrame({"id": ids, "label": [comp.classes[i] for i in Y], "fold": 0})
    artifacts.write_folds(ws.folds_csv, folds)
    npz = tmp_path / "submissions" / "toy" / "ensemble" / "oof_ensemble.npz"
    artifacts.write_logits(npz, ids=ids, classes=comp.classes, probs=np.eye(3)[PRED])
    assert report_stage(comp, ws)["accuracy"] == pytest.approx(0.6)
    assert (npz.parent / "report" / "confusion_matrix.png").is_file()
    artifacts.write_logits(npz, ids=ids[::-1], classes=comp.classes, probs=np.eye(3)[PRED])
    with pytest.raises(
        ArtifactError,
        match=r"has 10 ids / 3 classes that do not match .*toy\.csv; re-run: make ensemble",
    ):
        report_stage(comp, ws)


# ---------------------------------------------------------------- analyzer


def test_bootstrap_intervals_bracket_the_estimate_and_shrink_with_data():
    from pipeline.report.analyze import per_class_metrics

    rng = np.random.default_rng(0)
    widths = []
    for n in (200, 5000):
        y = rng.integers(0, 4, n)
        pred = np.where(rng.random(n) < 0.7, y, rng.integers(0, 4, n))
        df = per_class_metrics(y, pred, 4)
        for m in ("accuracy", "precision", "recall", "f1"):
            assert (df[f"{m}_lo"] <= df[m] + 1e-9).all() and (df[m] <= df[f"{m}_hi"] + 1e-9).all()
        widths.append((df["accuracy_hi"] - df["accuracy_lo"]).mean())
    assert widths[1] < widths[0] / 3  # about 1/sqrt(25) = 1/5 as wide


def test_member_gains_by_hand():
    from pipeline.report.analyze import member_table

    # ensemble = PRED (a 4/4, b 1/4, c 1/2); m1 = PRED; m2 always "b" (a 0, b 1, c 0)
    members = {"m1": PRED, "m2": np.ones(10, dtype=int)}
    df = member_table(Y, PRED, members, 3)
    assert df["best_member"].tolist() == ["m1", "m2", "m1"]
    np.testing.assert_allclose(df["gain_vs_best_member"], [0.0, -0.75, 0.0])
    np.testing.assert_allclose(df["gain_vs_top_model"], [0.0, 0.0, 0.0])  # m1 is the top model


def test_label_issues_find_planted_flips():
    from pipeline.report.analyze import label_issues, worst_mistakes

    rng = np.random.default_rng(0)
    n, c = 600, 4
    y = rng.integers(0, c, n)
    probs = np.full((n, c), 0.02)
    probs[np.arange(n), y] = 0.94
    flipped = rng.choice(n, 12, replace=False)
    given = y.copy()
    given[flipped] = (y[flipped] + 1) % c  # the model is confident in the true class
    ids = np.array([f"r{i}" for i in range(n)])
    issues = label_issues(ids, given, probs, list("abcd"))
    assert set(issues["row"]) == set(flipped)
    assert (issues["suggested_label"].to_numpy() == np.array(list("abcd"))[y[issues["row"]]]).all()
    worst = worst_mistakes(ids, given, probs, list("abcd"), 5)
    assert len(worst) == 5 and worst["confidence"].is_monotonic_decreasing


def test_report_stage_html_is_self_contained_with_images(tmp_path):
    from pipeline.competition import load_competition

    from .fakes import write_leaves

    comp = load_competition(write_leaves(tmp_path / "input", n_per_class=4))
    ids = comp.train["id"].to_numpy()
    y = artifacts.label_indices(comp.train["label"], comp.classes)
    folds = pd.DataFrame({"id": ids, "label": comp.train["label"], "fold": np.arange(len(ids)) % 2})
    ws = Workspace.under(tmp_path, comp.name)
    artifacts.write_folds(ws.folds_csv, folds)
    probs = np.roll(np.eye(len(comp.classes))[y], 1, axis=0)[: len(y)] * 0.7 + 0.1  # mistakes
    npz = tmp_path / "submissions" / comp.name / "ensemble" / "oof_ensemble.npz"
    artifacts.write_logits(npz, ids=ids, classes=comp.classes, probs=probs)
    summary = report_stage(comp, ws)
    out = npz.parent / "report"
    page = (out / "report.html").read_text()
    assert page.count('src="data:image/png;base64,') == 4  # accuracy, confusion, two sheets
    assert "http" not in page.replace("http-equiv", "") and 'src="/' not in page
    for section in ("Per-class accuracy", "Confusions", "Worst mistakes", "Label-issue candidates"):
        assert section in page
    for f in ("worst_mistakes.csv", "label_issues.csv", "worst_mistakes.png", "label_issues.png"):
        assert (out / f).stat().st_size > 0, f
    assert summary["n_label_issues"] == len(pd.read_csv(out / "label_issues.csv"))
