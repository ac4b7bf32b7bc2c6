"""The runs after the first: a variant of a trained run saved with ``AS=``, runs left out with
``RUNS=-<run>``, and an ensemble sent to Kaggle kept as it was sent."""

from __future__ import annotations

import hashlib
import shutil
import sys
from pathlib import Path

import pandas as pd
import pytest

from pipeline import artifacts
from pipeline.cli import main
from pipeline.config import load_recipe

from .fakes import toy_roots, toy_workspace


@pytest.fixture(scope="module")
def trained(tmp_path_factory) -> Path:
    """The toy workspace with run ``r`` trained (2 folds, 2 epochs)."""
    root = toy_workspace(tmp_path_factory.mktemp("next"))
    assert main(["train", *toy_roots(root), "--runs", "r", "--track", "none"]) == 0
    return root


def _digest(folder: Path) -> dict[str, str]:
    return {
        str(p.relative_to(folder)): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(folder.rglob("*"))
        if p.is_file()
    }


def test_a_variant_is_saved_with_as_and_trained(trained, capsys):
    roots = [*toy_roots(trained), "--track", "none"]
    assert main(["train", *roots, "--runs", "r", "--set", "epochs=1"]) == 2
    err = capsys.readouterr().err
    assert (
        "the recipe field 'epochs' changed since this run's folds were trained; train the " in err
    )
    assert 'make train RUNS=r SET="..." AS=<new name>' in err
    assert main(["train", *roots, "--runs", "r", "--set", "epochs=1 lr=0.002", "--as", "r1"]) == 0
    out = capsys.readouterr().out
    path = trained / "models" / "r1.toml"
    assert f"r1: wrote {path} (r with epochs=1 lr=0.002); training it" in out
    head = path.read_text().splitlines()[0]
    assert head.startswith(
        f'# r1: a variant of r ({trained / "models" / "r.toml"}) with SET="epochs=1'
    )
    want = load_recipe(trained / "models" / "r.toml", {"epochs": 1, "lr": 0.002})
    assert load_recipe(path) == want
    assert (trained / "models" / "toy" / "r1" / "oof.npz").is_file()
    # the same command again goes on; another recipe under that name is refused
    assert main(["train", *roots, "--runs", "r", "--set", "epochs=1 lr=0.002", "--as", "r1"]) == 0
    assert "r1 fold 1: done, skipped" in capsys.readouterr().out
    assert main(["train", *roots, "--runs", "r", "--set", "epochs=3", "--as", "r1"]) == 2
    assert capsys.readouterr().err == (
        f"error: AS=r1: {path} exists and holds another recipe; choose another AS= name "
        f"(or delete {path})\n"
    )
    assert main(["train", *roots, "--runs", "r r1", "--set", "epochs=3", "--as", "r2"]) == 2
    assert "AS=r2 saves a variant of one run: make train RUNS=<run>" in capsys.readouterr().err


def test_runs_minus_leaves_runs_out_of_the_default(trained, capsys):
    roots = [*toy_roots(trained), "--track", "none"]
    sets = trained / "models" / "cpu"
    sets.mkdir()
    for name in ("s1", "s2"):
        shutil.copy(trained / "models" / "r.toml", sets / f"{name}.toml")
    assert main(["train", *roots, "--runs=-s1", "--folds", "0", "--set", "epochs=1"]) == 0
    out = capsys.readouterr().out
    assert "RUNS=-s1: the cpu set without s1, s2" in out
    assert (trained / "models" / "toy" / "s2" / "fold0" / "done.json").is_file()
    assert not (trained / "models" / "toy" / "s1").exists()
    assert main(["train", *roots, "--runs=-nope"]) == 2
    assert "RUNS=-nope: 'nope' is not in the cpu set (s1, s2)" in capsys.readouterr().err
    assert main(["train", *roots, "--runs", "s1 -s2"]) == 2
    assert "mixes runs and exclusions" in capsys.readouterr().err
    shutil.rmtree(sets)
    # make ensemble: every trained run without the named ones
    assert main(["ensemble", *roots, "--runs=-r1", "--name", "minus", "--no-report"]) == 0
    info = artifacts.read_json(trained / "submissions" / "toy" / "minus" / "ensemble.json", "")
    assert [m["run"] for m in info["members"]] == ["r"]
    assert main(["ensemble", *roots, "--runs=-r -r1", "--name", "none", "--no-report"]) == 2
    assert "leaves none of the trained runs" in capsys.readouterr().err


def _fake_kaggle(tmp: Path, monkeypatch) -> None:
    exe = tmp / "bin" / "kaggle"
    exe.parent.mkdir(parents=True, exist_ok=True)
    exe.write_text('#!/bin/sh\necho "Successfully submitted to $4"\n')
    exe.chmod(0o755)
    monkeypatch.setattr(sys, "executable", str(tmp / "bin" / "python"))
    monkeypatch.setenv("KAGGLE_USERNAME", "u")
    monkeypatch.setenv("KAGGLE_KEY", "0" * 32)


def test_an_ensemble_sent_to_kaggle_is_kept(trained, tmp_path, monkeypatch, capsys):
    roots = [*toy_roots(trained), "--track", "none"]
    subs = trained / "submissions" / "toy"
    ens = ["ensemble", *roots, "--runs", "r", "--no-report", "--name", "kept"]
    assert main(ens) == 0
    assert main(["submit", *toy_roots(trained), "--name", "kept", "--dry-run"]) == 0
    assert main(ens) == 0  # a dry run sends nothing: the folder is rewritten in place
    assert not (subs / "kept.2").exists()
    _fake_kaggle(tmp_path, monkeypatch)
    assert main(["submit", *toy_roots(trained), "--name", "kept"]) == 0
    sent = _digest(subs / "kept")
    capsys.readouterr()
    assert main(ens) == 0
    out = capsys.readouterr().out
    assert f"{subs / 'kept'} was sent to Kaggle at " in out
    assert f"kept as sent; this ensemble goes to {subs / 'kept.2'} (make submit NAME=kept.2)" in out
    assert _digest(subs / "kept") == sent  # not a byte changed
    info = artifacts.read_json(subs / "kept.2" / "ensemble.json", "")
    assert info["name"] == "kept.2"
    # the old folder is not sent again once a newer one is beside it
    assert main(["submit", *toy_roots(trained), "--name", "kept"]) == 2
    assert "send that one: make submit NAME=kept.2" in capsys.readouterr().err
    assert main(["submit", *toy_roots(trained), "--name", "kept.2"]) == 0
    ledger = pd.read_csv(subs / "ledger.csv", dtype=str)
    assert ledger["name"].tolist() == ["kept", "kept", "kept.2"]
    assert main(ens) == 0
    assert (subs / "kept.3" / "submission.csv").is_file()
    # each folder keeps its own name for make predict
    assert (
        main(
            [
                "predict",
                *toy_roots(trained),
                "--name",
                "kept.2",
                "--test",
                str(trained / "input" / "toy"),
            ]
        )
        == 0
    )
    assert (subs / "kept.2" / "predict" / "submission.csv").is_file()
    assert _digest(subs / "kept") == sent


@pytest.mark.skipif(shutil.which("make") is None, reason="needs make")
def test_make_passes_as_only_when_given():
    """make's built-in ``AS`` (the assembler, "as") never reaches ``train --as``; ``RUNS="-x"``
    reaches it as a value."""
    import subprocess

    repo = Path(__file__).resolve().parents[1]

    def dry(*args: str) -> str:
        cmd = ["make", "-n", "-o", ".venv/.installed", "train", "COMP=input/x", *args]
        return subprocess.run(cmd, cwd=repo, capture_output=True, text=True, check=True).stdout

    assert "--as" not in dry("RUNS=a")
    assert '--as="b"' in dry("RUNS=a", "SET=epochs=2", "AS=b")
    assert '--runs="-a"' in dry("RUNS=-a")


def test_kaggle_executor_picks_the_gpu_set(trained, capsys):
    """``RECIPES=auto`` with ``EXECUTOR=kaggle`` is the set of the notebooks' GPU, not this
    machine's CPU set; ``GPU=0`` keeps the CPU set."""
    import argparse

    from pipeline.train.executors import jobs_device
    from pipeline.train.request import train_runs
    from pipeline.workspace import Workspace

    def runs_of(a, ws):
        return train_runs(ws, a.runs, a.set, a.as_, a.recipes, jobs_device(a))

    ws = Workspace("toy", trained / "models", trained)
    for name in ("cpu", "gpu"):
        (trained / "models" / name).mkdir(exist_ok=True)
        shutil.copy(trained / "models" / "r.toml", trained / "models" / name / f"{name}1.toml")
    args = dict(runs="", set="", as_="", recipes="auto", device="cpu", executor="kaggle")
    assert runs_of(argparse.Namespace(**args, no_gpu=False), ws)[0] == ["gpu1"]
    assert runs_of(argparse.Namespace(**args, no_gpu=True), ws)[0] == ["cpu1"]
    assert runs_of(argparse.Namespace(**{**args, "executor": "local"}, no_gpu=False), ws)[0] == [
        "cpu1"
    ]
    for name in ("cpu", "gpu"):
        shutil.rmtree(trained / "models" / name)
