"""Learning curves: nested stratified subsets, one resumable fold per fraction, the table."""

import numpy as np
import pandas as pd
import pytest

from pipeline.cli import main
from pipeline.train.learning_curve import nested_subsets

from .fakes import TOY_RECIPE, toy_workspace


def test_subsets_are_nested_and_stratified():
    labels = pd.Series(["a"] * 40 + ["b"] * 20 + ["c"] * 4)
    subs = nested_subsets(labels, (0.1, 0.25, 0.5), seed=0)
    assert set(subs[0.1]) <= set(subs[0.25]) <= set(subs[0.5])
    counts = {f: labels[s].value_counts().to_dict() for f, s in subs.items()}
    assert counts[0.25] == {"a": 10, "b": 5, "c": 1} and counts[0.5] == {"a": 20, "b": 10, "c": 2}


@pytest.mark.slow
def test_make_curve(tmp_path, monkeypatch, capsys):
    toy_workspace(tmp_path, TOY_RECIPE, n_per_class=12, n_test=5)  # run r, 2 folds
    monkeypatch.chdir(tmp_path)
    comp = ["--comp", "input/toy"]
    assert main(["train", *comp, "--runs", "r", "--folds", "0"]) == 0
    assert main(["curve", *comp, "--run", "r", "--fractions", "0.25 0.5"]) == 0
    out = tmp_path / "models" / "toy" / "r" / "curve"
    table = pd.read_csv(out / "curve.csv")
    assert table["fraction"].tolist() == [0.25, 0.5, 1.0]
    assert table["images"].tolist() == [6, 9, 18]  # of the 18 fold-0 train rows, 3 classes
    assert {"score", "accuracy", "acc_cat", "acc_dog", "acc_owl"} <= set(table.columns)
    assert np.isfinite(table["score"]).all() and (out / "curve.png").stat().st_size > 0
    capsys.readouterr()
    assert main(["curve", *comp, "--run", "r", "--fractions", "0.25 0.5"]) == 0
    assert "epoch" not in capsys.readouterr().out  # trained fractions are reused
    assert main(["curve", *comp, "--run", "r", "--fractions", "2"]) == 2
