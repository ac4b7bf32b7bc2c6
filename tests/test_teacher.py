"""Students and their teacher: soft targets per fold from a finished ensemble, leak-free.

The planted-leak test trains the same teacher in two worlds that differ only in fold 0's labels:
fold 0's targets must come out identical (nothing computed with fold 0's labels reached them),
while fold 1's targets and the shortcut a careless pipeline takes (the teacher's OOF
predictions) do change, which shows the comparison can fail."""

import json
import os
import shutil

import numpy as np
import pandas as pd
import pytest
import torch

from pipeline.cli import main
from pipeline.competition.load import load_competition
from pipeline.config import RecipeError, recipe_from_dict
from pipeline.ensemble.members import load_members
from pipeline.ensemble.state import load_state
from pipeline.teach import targets
from pipeline.workspace import Workspace

from .fakes import CLASSES, toy_workspace

FEATURES = """kind = "features"
backbone = "test_resnet"
pretrained_file = "models/pretrained/test_resnet.safetensors"
batch_size = 16
"""
CPU = torch.device("cpu")


def _world(root, monkeypatch):
    """A toy competition with two feature members and a teacher ensemble ``teach`` (logit)."""
    monkeypatch.chdir(root)
    comp = ["--comp", "input/toy"]
    for run in ("f", "g"):
        assert main(["train", *comp, "--runs", run]) == 0
    assert main(["ensemble", *comp, "--runs", "f,g", "--method", "logit", "--name", "teach",
                 "--no-report"]) == 0  # fmt: skip
    return load_competition(root / "input" / "toy"), Workspace.under(root, "toy")


def _open(root):
    return load_competition(root / "input" / "toy"), Workspace.under(root, "toy")


@pytest.fixture(scope="module")
def template(tmp_path_factory):
    """The toy competition with the recipes of two feature members, f and g, untrained."""
    runs = {
        "f": FEATURES + 'image_size = 24\ntta = ["none", "hflip"]\n',
        "g": FEATURES + 'image_size = 32\ntta = ["none"]\n',
    }
    root = tmp_path_factory.mktemp("teacher") / "template"
    return toy_workspace(root, runs, n_per_class=12, n_test=9, k=3, pretrained=("test_resnet",))


@pytest.fixture(scope="module")
def trained(template):
    """The template made a ``_world`` once for the module; tests take copies."""
    root = template.parent / "trained"
    shutil.copytree(template, root)
    with pytest.MonkeyPatch.context() as mp:
        _world(root, mp)
    return root


@pytest.fixture
def world_a(trained, tmp_path, monkeypatch):
    """A ``_world`` of its own (a copy of ``trained``) in ``tmp_path/a``, the working folder."""
    root = tmp_path / "a"
    shutil.copytree(trained, root)
    monkeypatch.chdir(root)
    return root


def _flip_labels(root, fold: int) -> None:
    """Give every row of ``fold`` another class, in train.csv and in the folds file alike."""
    folds_csv = root / "folds" / "toy.csv"
    folds = pd.read_csv(folds_csv)
    train = pd.read_csv(root / "input" / "toy" / "train.csv")
    turn = {c: CLASSES[(i + 1) % len(CLASSES)] for i, c in enumerate(CLASSES)}
    rows = folds["fold"] == fold
    folds.loc[rows, "label"] = folds.loc[rows, "label"].map(turn)
    moved = train["image"].isin(folds.loc[rows, "id"])
    train.loc[moved, "label"] = train.loc[moved, "label"].map(turn)
    folds.to_csv(folds_csv, index=False)
    train.to_csv(root / "input" / "toy" / "train.csv", index=False)


def _targets(comp, ws, fold):
    with np.load(targets.fold_targets(comp, ws, "teach", fold, CPU)) as z:
        return {k: z[k] for k in z.files}


def _shortcut(comp, ws, fold):
    """What a leaky pipeline would teach fold ``fold`` with: the saved teacher on its members'
    OOF logits (made by the other folds' models, which trained on fold ``fold``)."""
    _, est = load_state(ws.submission_dir("teach"), "make ensemble")
    oof, members = load_members(comp, ws, ["f", "g"])
    return est.predict_proba(members.oof)[oof.fold != fold]


def test_fold_targets_do_not_change_when_that_folds_labels_do(
    template, world_a, tmp_path, monkeypatch
):
    world_b = tmp_path / "b"
    shutil.copytree(template, world_b)
    _flip_labels(world_b, fold=0)
    _world(world_b, monkeypatch)
    seen = {}
    for name, root in (("a", world_a), ("b", world_b)):
        monkeypatch.chdir(root)
        comp, ws = _open(root)
        seen[name] = {
            "fold0": _targets(comp, ws, 0),
            "fold1": _targets(comp, ws, 1),
            "shortcut": _shortcut(comp, ws, 0),
        }
    a, b = seen["a"], seen["b"]
    assert a["fold0"]["label_folds"].tolist() == [1, 2]
    assert a["fold0"]["ids"].tolist() == b["fold0"]["ids"].tolist()
    # fold 0's student gets the same targets whatever fold 0's labels are ...
    np.testing.assert_array_equal(a["fold0"]["probs"], b["fold0"]["probs"])
    np.testing.assert_array_equal(a["fold0"]["test_probs"], b["fold0"]["test_probs"])
    # ... while the labels did change what the teacher learned elsewhere (the check has teeth):
    assert np.abs(a["fold1"]["probs"] - b["fold1"]["probs"]).max() > 1e-3
    assert np.abs(a["shortcut"] - b["shortcut"]).max() > 1e-3  # the planted leak shows


def test_fitted_teacher_methods_never_see_the_folds_labels(world_a, monkeypatch):
    comp, ws = _open(world_a)
    assert main(["ensemble", "--comp", "input/toy", "--runs", "f,g", "--method", "stack",
                 "--name", "teach", "--no-report"]) == 0  # fmt: skip
    real, fitted_on = targets.method_factory, []

    def recording(name, task):
        make = real(name, task)

        def factory():
            est = make()
            fit = est.fit

            def spy(oof, y):
                fitted_on.append(y.copy())
                return fit(oof, y)

            est.fit = spy
            return est

        return factory

    monkeypatch.setattr(targets, "method_factory", recording)
    folds = pd.read_csv(world_a / "folds" / "toy.csv")
    for k in range(3):
        got = _targets(comp, ws, k)
        assert got["method"] == "stack" and 0.0 <= got["held_score"] <= 1.0
        y_k = pd.Index(comp.classes).get_indexer(folds.loc[folds["fold"] != k, "label"])
        np.testing.assert_array_equal(fitted_on[-1], y_k)  # the labels of the other folds only


def test_students_learn_from_the_teacher_and_pseudo_labels(world_a, monkeypatch, capsys):
    comp, ws = _open(world_a)
    models = world_a / "models"
    (models / "s.toml").write_text(
        FEATURES + 'image_size = 24\ntta = ["none"]\nteacher = "teach"\npseudo_floor = 0.34\n'
    )
    (models / "t.toml").write_text(
        'backbone = "test_resnet"\nimage_size = 24\nepochs = 1\nbatch_size = 8\ntta = ["none"]\n'
        'teacher = "teach"\npseudo_floor = 0.34\ncheckpoint = "last"\ndistill_weight = 0.7\n'
    )
    capsys.readouterr()
    assert main(["train", "--comp", "input/toy", "--runs", "s,t"]) == 0
    out = capsys.readouterr().out
    assert (
        "teacher 'teach' for fold 2: logit of 2 members' fold-2 models, fitted on folds 0, 1" in out
    )
    assert "targets 0.5 label + 0.5 teacher;" in out and "join as soft pseudo-labels" in out
    assert "targets 0.3 label + 0.7 teacher;" in out  # the fine-tuned student
    for run in ("s", "t"):
        with np.load(models / "toy" / run / "oof.npz") as z:
            assert z["logits"].shape[1:] == (36, 3) and sorted(set(z["fold"])) == [0, 1, 2]
    done = json.loads((models / "toy" / "s" / "fold0" / "done.json").read_text())
    assert 0 < done["pseudo_labels"] <= 9 and done["holdout_used"] is False
    done_t = json.loads((models / "toy" / "t" / "fold0" / "done.json").read_text())
    assert done_t["holdout_used"] is False  # checkpoint = "last": it could teach in turn
    for k in range(3):
        assert ws.teacher_targets("teach", k).is_file() and ws.fit_logits("f", k).is_file()
    # the targets are reused while the teacher and folds stay; students take part in ensembles
    stamp = ws.teacher_targets("teach", 0).stat().st_mtime_ns
    targets.fold_targets(comp, ws, "teach", 0, CPU)
    assert ws.teacher_targets("teach", 0).stat().st_mtime_ns == stamp
    assert main(["ensemble", "--comp", "input/toy", "--methods", "soft", "--no-report"]) == 0


def test_a_run_cannot_teach_itself_nor_teach_with_a_fold_chosen_on_its_labels(
    world_a, monkeypatch, capsys
):
    comp, ws = _open(world_a)
    with pytest.raises(Exception, match="f names teacher 'teach', which has f among its members"):
        targets.fold_targets(comp, ws, "teach", 0, CPU, student="f")
    done_path = ws.fold_dir("g", 1) / "done.json"
    done = json.loads(done_path.read_text())
    done_path.write_text(json.dumps({**done, "holdout_used": True}))
    (world_a / "models" / "s.toml").write_text(
        FEATURES + 'image_size = 24\ntta = ["none"]\nteacher = "teach"\n'
    )
    ray = ["--executor", "ray", "--no-shared-fs"]
    assert main(["train", "--comp", "input/toy", "--runs", "s", *ray]) == 2
    assert "s is a student of 'teach': its folds read the teacher's targets" in (
        capsys.readouterr().err
    )
    assert main(["train", "--comp", "input/toy", "--runs", "s"]) == 2
    err = capsys.readouterr().err
    assert "teacher member g fold 1 cannot teach fold 1's student" in err
    assert not (ws.run_dir("s") / "fold1" / "done.json").exists()


def test_student_recipe_fields_are_checked():
    with pytest.raises(RecipeError, match="pseudo_floor = 0.5 needs teacher"):
        recipe_from_dict({"pseudo_floor": 0.5})
    with pytest.raises(RecipeError, match="mixing soft targets is not supported"):
        recipe_from_dict({"teacher": "ensemble", "mixup_alpha": 0.2})
    with pytest.raises(RecipeError, match=r"distill_weight = 1.5 must be in \[0, 1\]"):
        recipe_from_dict({"teacher": "ensemble", "distill_weight": 1.5})
    with pytest.raises(RecipeError, match='checkpoint = .*"best", "last"'):
        recipe_from_dict({"checkpoint": "first"})


def test_a_second_train_waits_for_a_teachers_targets_being_written(
    world_a, tmp_path, monkeypatch, capsys
):
    """A teacher's targets for a fold are written under a lock beside them; a second
    process that finds it held waits, then reads what the holder wrote instead of writing
    again. The holder here is this test; the second process a thread of it, parked by
    ``PIPELINE_HOLD_AT=wait:<lock>`` once it has found the lock held (no sleeps)."""
    import threading

    from pipeline.disk import locks

    from .test_locks import Hold

    comp, ws = _open(world_a)
    path = ws.teacher_targets("teach", 0)
    lock = path.with_name(f".{path.name}.lock")
    held = locks.try_lock(lock, "another make train")
    hold = Hold(tmp_path / "hold", f"wait:{lock.name}")
    for k, v in hold.env.items():
        monkeypatch.setenv(k, v)
    got: list = []

    class Second(threading.Thread):
        def run(self):
            got.append(targets.fold_targets(comp, ws, "teach", 0, CPU))

        def poll(self):
            return None if self.is_alive() else 0

    second = Second(daemon=True)
    capsys.readouterr()
    second.start()
    assert hold.reached(second) == f"wait:{lock.name}"
    teacher = targets.load_teacher(comp, ws, "teach")
    targets._write_fold_targets(comp, ws, teacher, "teach", 0, CPU, path)  # the holder's work
    written = path.stat().st_mtime_ns, path.stat().st_ino
    hold.release()  # the second goes on to wait for the lock itself
    held.release()
    second.join(timeout=120)
    assert got == [path]
    out, err = capsys.readouterr()
    assert f"waiting for teacher 'teach''s targets for fold 0: pid {os.getpid()} on " in err
    assert out.count("teacher 'teach' for fold 0:") == 1  # the holder's, not the second's
    assert (path.stat().st_mtime_ns, path.stat().st_ino) == written
