"""The train labels against what the competition asks for, checked before anything trains:
each hostile copy of a real layout stops in one line naming the class, row, id or value (and a
fix that keeps the data right), or is read as the user means it when that is unambiguous."""

from __future__ import annotations

import re

import numpy as np
import pandas as pd
import pytest

from pipeline.cli import main
from pipeline.competition import load_competition
from pipeline.competition.submission import validate_for, write_submission
from pipeline.errors import CompetitionError

from .test_formats import aptos, dog_breed, plant_pathology_2020, plant_pathology_2021


def _folds(root, tmp_path, capsys, k: int = 3) -> tuple[int, str, str]:
    capsys.readouterr()
    args = [
        "folds",
        "--comp",
        str(root),
        "--models",
        str(tmp_path / "m"),
        "--output",
        str(tmp_path),
    ]
    code = main([*args, "--k", str(k)])
    out = capsys.readouterr()
    return code, out.out, out.err


def _check(root, capsys) -> tuple[int, str]:
    capsys.readouterr()
    code = main(["check", "--comp", str(root)])
    out = capsys.readouterr()
    return code, out.out + out.err


def test_a_class_only_the_sample_has_is_refused_before_training(tmp_path, capsys):
    root = tmp_path / "dogs"
    dog_breed(root)
    sample = pd.read_csv(root / "sample_submission.csv").assign(frying_pan=0.0)
    sample.to_csv(root / "sample_submission.csv", index=False)
    want = (
        r"sample_submission.csv has a column for class 'frying_pan' that no row of labels.csv "
        r"carries; no model can learn it: add train images of it, or set sample_only_classes = "
        r'"zero" in .*dogs/competition.toml to write probability 0 in its column'
    )
    with pytest.raises(CompetitionError, match=want):
        load_competition(root)
    code, _, err = _folds(root, tmp_path, capsys)
    assert code == 2 and re.search(want, err) and not (tmp_path / "folds").exists()
    code, out = _check(root, capsys)
    assert code == 2 and re.search(want, out)
    # opted in: the column is written with probability 0, and the submission validates
    (root / "competition.toml").write_text('sample_only_classes = "zero"\n')
    comp = load_competition(root)
    assert comp.classes == ["beagle", "collie", "pug"] and comp.sample_only == ["frying_pan"]
    assert any("frying_pan get probability 0" in n for n in comp.notes)
    probs = np.full((len(comp.test), 3), 1 / 3)
    out = write_submission(comp, tmp_path / "sub.csv", probs.argmax(1), probs)
    sub = validate_for(comp, out)
    assert (sub["frying_pan"].astype(float) == 0).all() and list(sub.columns) == list(
        sample.columns
    )
    (root / "competition.toml").write_text('sample_only_classes = "prior"\n')
    with pytest.raises(
        CompetitionError, match=r"sample_only_classes = 'prior'; the one value is \"zero\""
    ):
        load_competition(root)


def test_a_train_class_without_a_sample_column_is_named_with_its_rows(tmp_path, capsys):
    root = tmp_path / "dogs"
    dog_breed(root)
    labels = pd.read_csv(root / "labels.csv", dtype=str)
    labels.loc[[4, 9, 20], "breed"] = "crane"
    labels.to_csv(root / "labels.csv", index=False)
    want = (
        r"labels.csv column 'breed': class 'crane' \(3 rows, first row 6\) has no column in "
        r"sample_submission.csv; Kaggle scores only the sample's columns: set "
        r'train_only_classes = "drop" in .*competition.toml to leave those rows out, or use the '
        r"competition's own sample submission"
    )
    with pytest.raises(CompetitionError, match=want) as e:
        load_competition(root)
    assert "cannot tell the label column" not in str(e.value)
    code, out = _check(root, capsys)
    assert code == 2 and re.search(want, out)
    (root / "competition.toml").write_text('train_only_classes = "drop"\n')
    comp = load_competition(root)
    assert comp.classes == ["beagle", "collie", "pug"] and len(comp.train) == 33
    assert "crane" not in set(comp.train["label"])
    code, out, _ = _folds(root, tmp_path, capsys)
    assert code == 0 and "labels.csv: 3 rows of 1 classes without a column in" in out


def test_an_ordinal_grade_written_as_text_names_its_row_id_and_value(tmp_path):
    root = tmp_path / "aptos"
    aptos(root)
    train = pd.read_csv(root / "train.csv", dtype=str)
    train.loc[7, "diagnosis"] = "mild"
    train.to_csv(root / "train.csv", index=False)
    with pytest.raises(CompetitionError) as e:
        load_competition(root)
    msg = str(e.value)
    assert re.search(r"train.csv row 9: grade 'mild' for id '000000000007' is not an integer", msg)
    assert "(the others are 0, 1, 2, 3, 4): write that row's grade as one of them" in msg
    assert "multiclass" not in msg  # a sixth class 'mild' would make the data wrong


def test_a_label_set_with_another_separator_is_read_as_a_set_or_named(tmp_path, capsys):
    root = tmp_path / "pp"
    plant_pathology_2021(root)
    train = pd.read_csv(root / "train.csv", dtype=str)
    assert train.loc[4, "labels"] == "rust scab"
    train.loc[4, "labels"] = "rust,scab"
    train.to_csv(root / "train.csv", index=False)
    comp = load_competition(root)
    assert comp.train.loc[4, "label"] == "rust scab" and "rust,scab" not in comp.classes
    assert comp.notes == [
        f"note: {root}/train.csv row 6: labels 'rust,scab' read as the set 'rust scab' (the "
        "other rows separate labels with spaces; 1 such rows)"
    ]
    code, out, _ = _folds(root, tmp_path, capsys, k=5)
    assert code == 0 and "read as the set 'rust scab'" in out and "warning" not in out
    train.loc[4, "labels"] = "rust,scabby"
    train.to_csv(root / "train.csv", index=False)
    with pytest.raises(
        CompetitionError,
        match=r"train.csv row 6: labels 'rust,scabby' for id '0000000000000004.jpg' are separated "
        r"by ',', the other rows by spaces, and 'scabby' is no label of theirs; write the set "
        r"space-separated, e.g. 'rust scabby'",
    ):
        load_competition(root)


def test_a_rare_multilabel_label_is_a_warning_unless_the_metric_is_undefined(tmp_path, capsys):
    root = tmp_path / "pp"
    plant_pathology_2021(root)
    train = pd.read_csv(root / "train.csv", dtype=str)
    train.loc[10, "labels"] = "healthy frog_eye"  # a label seen once
    train.to_csv(root / "train.csv", index=False)
    code, out, err = _folds(root, tmp_path, capsys, k=5)
    assert code == 0, err
    assert (
        "warning: label 'frog_eye' is on only 1 row(s) of train.csv (ids '000000000000000a.jpg'), "
        "fewer than K=5" in out
    )
    # one-hot columns are scored by ROC AUC per column: undefined on a fold without the label
    root = tmp_path / "pp20"
    plant_pathology_2020(root)
    train = pd.read_csv(root / "train.csv")
    alone = train["multiple_diseases"] == 1  # those rows become healthy ...
    train.loc[alone, ["healthy", "multiple_diseases"]] = [1, 0]
    train.loc[[3, 8], "multiple_diseases"] = 1  # ... and two rows get it as a second label
    train.to_csv(root / "train.csv", index=False)
    code, _, err = _folds(root, tmp_path / "b", capsys, k=5)
    assert code == 2
    assert re.search(
        r"label 'multiple_diseases' is on 2 row\(s\) of train.csv \(ids 'Train_3', 'Train_8'\) but "
        r"K=5: mean_column_auc \(ROC AUC of each label\) is undefined on a held-out fold without "
        r"it; use K=2",
        err,
    ), err
