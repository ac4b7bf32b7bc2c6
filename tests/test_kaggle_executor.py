"""``make train EXECUTOR=kaggle`` against the fake ``kaggle`` on PATH (tests/fake_kaggle.py), which
really runs each pushed training notebook under a simulated /kaggle: the folds come back
bit-identical to ``EXECUTOR=local`` at one thread, a notebook killed at the run-time limit is
pushed again and resumes from its last.pt (or restarts the fold when no output came back), a
damaged pulled file is refused naming it, and nothing uploaded holds a credential."""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import sys
from pathlib import Path

import pytest
import timm

from pipeline.cli import build_parser, main
from pipeline.errors import PipelineError
from pipeline.predict import kaggle_loop
from pipeline.tools import soak
from pipeline.train.context import Job
from pipeline.train.executors import Dispatch, dispatch_from_args
from pipeline.train.executors.kaggle_pull import install

from .fakes import toy_roots, toy_workspace
from .test_package_loop import FAKE, KEY, Clock, calls

KILL = "after:fold1/last.pt"  # fold 1, once its epoch 1 is saved: mid-fold


@contextlib.contextmanager
def fake_kaggle(work: Path, state: Path, **config):
    """The fake ``kaggle`` first on PATH and beside sys.executable, credentials set, polls on
    a fake clock; ``config`` over the fake's defaults."""
    state.mkdir()
    bin_ = state.parent / f"{state.name}-bin"
    bin_.mkdir()
    (bin_ / "kaggle").write_text(f'#!/bin/sh\nexec "{sys.executable}" "{FAKE}" "$@"\n')
    (bin_ / "kaggle").chmod(0o755)
    base = {"ready_after": 1, "queued": 1, "running": 1, "python": sys.executable}
    base["competitions"] = str(work / "input")
    (state / "config.json").write_text(json.dumps({**base, **config}))
    clock = Clock()
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("FAKE_KAGGLE_STATE", str(state))
        mp.setenv("PATH", f"{bin_}:{os.environ['PATH']}")
        mp.setattr(sys, "executable", str(bin_ / "python"))
        mp.setenv("HOME", str(state.parent))
        mp.setenv("KAGGLE_USERNAME", "me")
        mp.setenv("KAGGLE_KEY", KEY)
        mp.setattr(
            kaggle_loop, "WAITS", kaggle_loop.Waits(10, 60, 30, 3600, clock.sleep, clock.now)
        )
        yield clock


def train(work: Path, *extra: str) -> int:
    args = ["train", *toy_roots(work), "--runs", "r", "--threads", "1", "--executor", "kaggle"]
    return main([*args, "--kaggle-slots", "1", *extra])


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    """The 2-fold toy trained in this process (the reference) and by the fake Kaggle, one
    notebook slot, its first notebook killed mid-fold 1 with its output retrievable; secrets
    planted where a careless upload would pick them up."""
    base = tmp_path_factory.mktemp("kaggle")
    template = toy_workspace(base / "template")
    ref, work = base / "ref", base / "work"
    shutil.copytree(template, ref)
    shutil.copytree(template, work)
    assert main(["train", *toy_roots(ref), "--runs", "r", "--threads", "1"]) == 0
    for folder in (work, work / "models", work / "input/toy", work / "folds"):
        (folder / "kaggle.json").write_text(json.dumps({"username": "me", "key": KEY}))
        (folder / ".env").write_text(f"KAGGLE_KEY={KEY}\n")
    kill = {"at": KILL, "runs": 1, "output": True}
    with fake_kaggle(work, base / "state", kill=kill):
        assert train(work, "--owner", "me") == 0
    return ref, work, base / "state"


@pytest.mark.slow
def test_kaggle_folds_are_bit_identical_to_local_after_a_resumed_kill(runs, capsys):
    ref, work, state = runs
    assert soak.check_outputs(work, ref, "toy", ["r"]) == []  # every artifact read, bit-equal
    pushes = [c for c in calls(state) if c.startswith("kernels push")]
    assert len(pushes) == 2  # the killed notebook was pushed again
    first = json.loads((state / "kernels/me/toy-train-1/v1/code/kernel-metadata.json").read_text())
    again = json.loads((state / "kernels/me/toy-train-1/v2/code/kernel-metadata.json").read_text())
    assert first["enable_gpu"] and first["enable_internet"] and first["is_private"]
    assert first["competition_sources"] == ["toy"]  # joined: Kaggle mounts it, nothing uploaded
    assert first["dataset_sources"] == ["me/toy-train-code"]
    code = (state / "kernels/me/toy-train-1/v1/code/train.py").read_text()
    pins = json.loads(code.split("BATCH = ", 1)[1].split("\n\n\n", 1)[0])["pins"]
    assert pins == {"albumentations": "2.0.8", "timm": timm.__version__}  # TRACK=none in tests
    assert '"-m", "pip", "install"' in code  # what the image lacks, from PyPI: internet on
    assert again["dataset_sources"] == ["me/toy-train-code", "me/toy-train-resume"]
    resumed = state / "datasets/me/toy-train-resume/v1/r/fold1"
    assert (resumed / "last.pt").is_file() and not (resumed / "done.json").exists()
    log = (work / "models/toy/r/logs/fold1.log").read_text()
    assert "Kaggle notebook, 1 threads, cpu" in log and "resuming" in log
    assert not (work / "models/toy/r/fold1/last.pt").exists()
    assert "PIPELINE_KILL_AT: SIGKILL" in (state / "kernels/me/toy-train-1/v1/log.json").read_text()


@pytest.mark.slow
def test_a_killed_notebook_without_output_restarts_the_fold(runs, tmp_path, capsys):
    """No output came back from the notebook killed at the limit (before it wrote anything,
    which the driver cannot tell from mid-fold): fold 1 is pushed again from its first epoch
    and still ends bit-identical (fold 0 done beforehand, as by an earlier run). The
    competition is not on Kaggle here, so its folder is uploaded as a private dataset, without
    the credentials planted in it."""
    ref, _, _ = runs
    work = tmp_path / "work"
    shutil.copytree(ref.parent / "template", work)
    shutil.copytree(ref / "models/toy/r/fold0", work / "models/toy/r/fold0")
    shutil.copyfile(ref / "models/toy/r/config.toml", work / "models/toy/r/config.toml")
    (work / "input/toy/kaggle.json").write_text(json.dumps({"username": "me", "key": KEY}))
    (work / "input/toy/notes.txt").write_text(f"my key: {KEY}\n")
    kill = {"at": "", "runs": 1, "output": False}
    state = tmp_path / "state"
    with fake_kaggle(work, state, kill=kill, competitions=str(tmp_path / "nowhere")):
        assert train(work, "--owner", "me") == 2
        assert capsys.readouterr().err.strip() == (
            "error: EXECUTOR=kaggle: notes.txt holds this machine's Kaggle credentials; nothing "
            "was uploaded: remove them from that file"
        )
        (work / "input/toy/notes.txt").unlink()
        assert train(work, "--owner", "me") == 0
    out = capsys.readouterr().out
    assert "r fold 1: notebook me/toy-train-1/1 ended error; pushed again, from its first" in out
    for line in ("queued (0:00:00", "running (0:00:30", "error (0:01:00", "complete (0:01:00"):
        assert "notebook me/toy-train-1/" in out and line + " since its push)" in out, line
    # the code went up with the refused first try; unchanged, it is not uploaded again
    assert "dataset me/toy-train-code: unchanged since its last upload; not uploaded again" in out
    assert [p.name for p in (state / "datasets/me/toy-train-code").iterdir()] == ["v1"]
    assert soak.check_outputs(work, ref, "toy", ["r"]) == []
    log = (work / "models/toy/r/logs/fold1.log").read_text()
    assert log.startswith("(notebook me/toy-train-1/1 ended error; no output came back: its page")
    assert "resuming" not in log
    assert "run-time limit" in (state / "kernels/me/toy-train-1/v1/log.json").read_text()
    meta = json.loads((state / "kernels/me/toy-train-1/v1/code/kernel-metadata.json").read_text())
    assert meta["competition_sources"] == []
    assert meta["dataset_sources"] == ["me/toy-train-code", "me/toy-train-data"]
    data = state / "datasets/me/toy-train-data"
    assert (data / "v1/train.csv").is_file() and not (data / "v1/kaggle.json").exists()
    assert not [p for p in data.rglob("*") if p.is_file() and KEY.encode() in p.read_bytes()]


def test_rules_not_accepted_or_no_credentials_is_one_line_before_any_upload(tmp_path, capsys):
    work = toy_workspace(tmp_path / "work")
    with fake_kaggle(work, tmp_path / "state", unjoined=["toy"]):
        assert train(work, "--owner", "me") == 2
        assert capsys.readouterr().err.strip() == (
            "error: Kaggle competition toy: its rules are not accepted by this account; accept "
            "them at https://www.kaggle.com/competitions/toy/rules, then re-run make train"
        )
        with pytest.MonkeyPatch.context() as mp:
            mp.delenv("KAGGLE_KEY")
            assert train(work, "--owner", "me") == 2
        err = capsys.readouterr().err.strip()
        assert err.startswith("error: EXECUTOR=kaggle needs Kaggle credentials: check ~/.kaggle")
    assert calls(tmp_path / "state") == ["competitions files toy"]  # nothing uploaded


@pytest.mark.slow
def test_nothing_uploaded_holds_a_credential(runs):
    _, work, state = runs
    uploaded = [p for p in (state / "datasets").rglob("*") if p.is_file()]
    uploaded += [p for p in (state / "kernels").glob("*/*/v*/code/*") if p.is_file()]
    assert {p.name for p in uploaded} & {"kaggle.json", ".env"} == set()
    assert not [p for p in uploaded if KEY.encode() in p.read_bytes()]
    code = state / "datasets/me/toy-train-code/v1"
    assert {p.name for p in code.iterdir()} == {
        "pipeline",
        "folds",
        "spec.json",
        "dataset-metadata.json",
    }
    assert not (code / "pipeline/tools").exists()


@pytest.mark.slow  # the module's trained runs
def test_a_damaged_pulled_file_is_refused_naming_it(runs, tmp_path, capsys):
    """A pulled best.pt whose sha256 is not done.json's (the fake returns a notebook's output
    made beforehand, one bit flipped): the fold is not installed, the failure names the file,
    the pulled copy is kept to inspect. An unreadable oof.npz likewise, through ``install``."""
    ref, _, _ = runs
    work = tmp_path / "work"
    shutil.copytree(ref.parent / "template", work)
    shutil.copytree(ref / "models/toy/r/fold1", work / "models/toy/r/fold1")
    shutil.copyfile(ref / "models/toy/r/config.toml", work / "models/toy/r/config.toml")
    canned = tmp_path / "canned"
    shutil.copytree(ref / "models/toy/r/fold0", canned / "models/toy/r/fold0")
    (canned / "status.json").write_text(json.dumps({"r fold 0": "done"}))
    best = canned / "models/toy/r/fold0/best.pt"
    best.write_bytes(best.read_bytes()[:-1] + bytes([best.read_bytes()[-1] ^ 1]))
    with fake_kaggle(work, tmp_path / "state", canned=str(canned)):
        assert train(work, "--owner", "me") == 2
    pulled = work / "package/toy/train/pulled/nb1/v1/models/toy/r"
    err = capsys.readouterr().err.strip()
    assert err.startswith(
        f"error: 1 of 1 train jobs failed: r fold 0 (pulled from me/toy-train-1/1: "
        f"{pulled / 'fold0/best.pt'} is not the file its fold wrote: its sha256 is "
    )
    assert "re-run make train EXECUTOR=kaggle: the fold trains again in a notebook" in err
    assert not (work / "models/toy/r/fold0").exists()  # nothing installed
    (pulled / "fold0/best.pt").write_bytes((ref / "models/toy/r/fold0/best.pt").read_bytes())
    (pulled / "fold0/oof.npz").write_bytes(b"not a zip")
    with pytest.raises(PipelineError, match=rf"{pulled / 'fold0/oof.npz'} is unreadable"):
        install(_context(work), Job("r", 0), pulled)


def _context(root: Path):
    """The ``TrainContext`` make train builds for the toy run ``r`` under ``root``."""
    from pipeline.competition import load_competition
    from pipeline.train.assemble import load_recipes, read_training_folds
    from pipeline.train.context import TrainContext
    from pipeline.workspace import Workspace

    comp = load_competition(root / "input/toy")
    ws = Workspace.under(root, comp.name)
    folds_df, fhash = read_training_folds(comp, ws)
    return TrainContext.build(comp, ws, folds_df, fhash, load_recipes(ws, ["r"], None), "cpu")


def test_kaggle_slots_is_refused_with_another_executor():
    base = ["train", "--comp", "input/x", "--runs", "r"]
    with pytest.raises(PipelineError, match=r"KAGGLE_SLOTS is not an option of EXECUTOR=local"):
        dispatch_from_args(build_parser().parse_args([*base, "--kaggle-slots", "2"]))
    a = build_parser().parse_args([*base, "--executor", "kaggle", "--owner", "me", "--no-gpu"])
    want = Dispatch("kaggle", options={"owner": "me", "gpu": False})
    assert dispatch_from_args(a) == want and want.option("kaggle_slots") == 2
    a = build_parser().parse_args([*base, "--owner", "me", "--no-gpu"])  # make package's: ignored
    assert dispatch_from_args(a) == Dispatch()
