"""input/<comp>/relabel.csv: relabelled and dropped rows reach the folds file, its hash, training."""

import numpy as np
import pandas as pd
import pytest
import torch

from pipeline import artifacts
from pipeline.cli import main
from pipeline.competition import load_competition
from pipeline.config import load_recipe
from pipeline.ensemble.members import load_folds
from pipeline.errors import PipelineError
from pipeline.folds.stage import folds_stage
from pipeline.train.context import Job, TrainContext
from pipeline.train.kinds.finetune import setup_fold
from pipeline.train.stage import train_stage
from pipeline.workspace import Workspace

from .fakes import CLASSES, toy_workspace

RECIPE = 'backbone = "test_resnet"\nimage_size = 16\nepochs = 1\nbatch_size = 8\ntta = ["none"]\n'


def _relabel(comp_dir, *rows: str) -> None:
    (comp_dir / "relabel.csv").write_text("id,new_label\n" + "".join(f"{r}\n" for r in rows))


def _folds(comp_dir, tmp_path, k=3):
    comp = load_competition(comp_dir)
    path = folds_stage(comp, Workspace.under(tmp_path, comp.name), k=k, seed=0)
    return path, artifacts.file_hash(path)


def test_relabel_and_drop_reach_the_folds_file(leaves, tmp_path, capsys):
    _relabel(leaves, "images/0.jpg,dog", "images/1.jpg,drop")
    path, _ = _folds(leaves, tmp_path)
    df = artifacts.read_folds(path)
    plain = pd.read_csv(path)
    assert list(plain.columns) == ["id", "label", "fold", "relabel_sha"] and len(plain) == 17
    assert "images/1.jpg" not in set(df["id"])
    assert df.set_index("id")["label"]["images/0.jpg"] == "dog"
    assert plain["relabel_sha"].nunique() == 1 and plain["relabel_sha"][0].startswith("sha256:")
    assert "17 images (1 relabelled, 1 dropped by relabel.csv)" in capsys.readouterr().out


def test_any_relabel_edit_changes_the_folds_hash(leaves, tmp_path):
    base_path, base = _folds(leaves, tmp_path)
    base_bytes = base_path.read_bytes()
    _relabel(leaves, "images/0.jpg,dog", "images/1.jpg,drop")
    _, first = _folds(leaves, tmp_path)
    _relabel(leaves, "images/1.jpg,drop", "images/0.jpg,dog")  # same fixes, rows swapped
    _, swapped = _folds(leaves, tmp_path)
    _relabel(leaves, "images/1.jpg,drop", "images/0.jpg,dog", "images/2.jpg,cat")  # a no-op row
    path, noop = _folds(leaves, tmp_path)
    labels = artifacts.read_folds(path).drop(columns="relabel_sha")
    assert len({base, first, swapped, noop}) == 4 and labels.equals(
        artifacts.read_folds(path).drop(columns="relabel_sha")
    )
    (leaves / "relabel.csv").unlink()
    assert _folds(leaves, tmp_path)[0].read_bytes() == base_bytes


@pytest.mark.parametrize(
    "rows, match",
    [
        (
            None,
            r"relabel.csv has columns \[image, label\] but needs id,new_label "
            r"\(new_label: a class name, or 'drop' to leave the image out\)",
        ),
        (
            ["images/0.jpg,dog", "images/99.jpg,cat", "images/98.jpg,cat"],
            r"relabel.csv row 3: id 'images/99.jpg' is not in train.csv; 2 such rows; "
            r"write train ids exactly as train.csv has them",
        ),
        (
            ["images/18.jpg,cat"],
            r"row 2: id 'images/18.jpg' is not in train.csv \(it is a test id\)",
        ),
        (
            ["images/0.jpg,dgo"],
            r"row 2: new_label 'dgo' for id 'images/0.jpg' is not a class; did you mean 'dog'\? "
            r"write one of the 3 classes of train.csv \(cat, dog, owl\) or 'drop'",
        ),
        (["images/0.jpg,"], r"row 2: new_label '' for id 'images/0.jpg' is not a class; write"),
        (["images/0.jpg,dog", "images/0.jpg,owl"], r"row 3: id 'images/0.jpg' is listed again"),
        (
            [f"images/{n}.jpg,drop" for n in range(12, 18)],
            r"after .*relabel.csv, class 'owl' has no images left but K=3 folds need at least 3 "
            r"per class \(every class stays: the test set may hold it\); delete some of the rows",
        ),
        (
            ["images/12.jpg,drop", "images/13.jpg,drop", "images/14.jpg,drop", "images/15.jpg,cat"],
            r"class 'owl' has 2 image\(s\) left but K=3 folds need at least 3 per class",
        ),
    ],
)
def test_relabel_errors(leaves, tmp_path, rows, match):
    if rows is None:
        (leaves / "relabel.csv").write_text("image,label\nimages/0.jpg,dog\n")
    else:
        _relabel(leaves, *rows)
    with pytest.raises(PipelineError, match=match):
        _folds(leaves, tmp_path)
    assert not (tmp_path / "folds").exists()  # nothing half-written


def test_relabel_error_is_one_cli_line(leaves, tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    _relabel(leaves, "images/0.jpg,dgo")
    assert main(["folds", "--comp", "input/leaves", "--k", "3"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: input/leaves/relabel.csv row 2") and err.count("\n") == 1


@pytest.fixture
def toy(tmp_path, monkeypatch):
    """CIFAR layout (train ids 1..18: cat 1-6, dog 7-12, owl 13-18); id 1 -> dog, id 8 dropped."""
    monkeypatch.chdir(tmp_path)
    toy_workspace(tmp_path, RECIPE, layout="cifar", n_per_class=6, n_test=5, k=None)
    comp_dir = tmp_path / "input" / "toy"
    _relabel(comp_dir, "1,dog", "8,drop")
    assert main(["folds", "--comp", "input/toy", "--k", "2"]) == 0
    return load_competition(comp_dir)


def test_fold_rows_are_looked_up_by_id(toy, tmp_path):
    ws = Workspace.under(tmp_path, "toy")
    folds = artifacts.read_folds(ws.folds_csv)
    folds["row"] = np.arange(len(folds)) + (np.arange(len(folds)) >= 7)  # id 8 is train row 7
    ctx = TrainContext.build(toy, ws, folds, "h", {"r": load_recipe(ws.recipe("r"))}, "cpu")
    job = ctx.fold_job(Job("r", 0), torch.device("cpu"))
    assert job.fdir == tmp_path / "models" / "toy" / "r" / "fold0"
    setup = setup_fold(job)
    ids = toy.train["id"].to_numpy()
    assert ids[setup.va_rows].tolist() == folds["id"][folds["fold"] == 0].tolist()
    assert sorted(ids[setup.loader.dataset.rows]) == sorted(folds["id"][folds["fold"] == 1])
    assert job.y_all[0] == CLASSES.index("dog") and job.y_all[7] == -1
    assert len(setup.train_imgs) == 18  # the decode cache keeps every train image


def test_training_honours_dropped_and_relabelled_rows(toy, tmp_path):
    ws = Workspace.under(tmp_path, "toy")
    train_stage(toy, ws, ["r"], device="cpu")
    oof = load_folds(toy, ws)
    folds, y, fhash = oof.folds, oof.y, oof.folds_hash
    assert len(folds) == 17 and "8" not in set(folds["id"])
    assert y[folds["id"].tolist().index("1")] == CLASSES.index("dog")
    for f in (0, 1):
        with np.load(tmp_path / "models/toy/r" / f"fold{f}" / "oof.npz") as z:
            assert z["ids"].tolist() == folds["id"][folds["fold"] == f].tolist()
    with np.load(tmp_path / "models/toy/r/oof.npz") as z:
        assert z["ids"].tolist() == folds["id"].tolist()
        assert z["fold"].tolist() == folds["fold"].tolist() and str(z["folds_hash"]) == fhash
        assert z["logits"].shape == (1, 17, 3) and np.isfinite(z["logits"]).all()


@pytest.mark.parametrize(
    "edit, match",
    [
        ({"id": "zzz"}, r"toy.csv has id 'zzz' that is not in .*trainLabels.csv \(1 such rows\)"),
        ({"label": "wolf"}, r"toy.csv has label 'wolf' that is not a class of .*trainLabels.csv"),
    ],
)
def test_train_refuses_folds_that_do_not_match_the_train_csv(toy, tmp_path, edit, match):
    ws = Workspace.under(tmp_path, "toy")
    path = ws.folds_csv
    df = artifacts.read_folds(path)
    for col, value in edit.items():
        df.loc[3, col] = value
    artifacts.write_folds(path, df)
    with pytest.raises(PipelineError, match=match + "; re-run: make folds COMP="):
        train_stage(toy, ws, ["r"], device="cpu")
