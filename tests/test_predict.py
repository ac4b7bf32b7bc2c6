"""make predict and make package: inference from saved artifacts on unseen test folders."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from pipeline.cli import main
from pipeline.competition import load_competition
from pipeline.ensemble.members import load_members
from pipeline.ensemble.state import load_state
from pipeline.layout import Workspace

from .fakes import write_cifar

RECIPE = 'backbone = "{b}"\nimage_size = 16\nepochs = 1\nbatch_size = 8\ntta = ["none", "hflip"]\n'


@pytest.fixture(scope="module")
def trained(tmp_path_factory) -> Path:
    """Two tiny members on 2 folds of the CIFAR-layout toy, ensembled as NAME=ensemble."""
    root = tmp_path_factory.mktemp("predict")
    write_cifar(root / "input" / "toy")
    (root / "models").mkdir()
    for run, b in (("a", "test_resnet"), ("b", "test_efficientnet")):
        (root / "models" / f"{run}.toml").write_text(RECIPE.format(b=b))
    args = ["--comp", str(root / "input" / "toy"), "--models", str(root / "models")]
    args += ["--output", str(root)]
    assert main(["folds", *args, "--k", "2"]) == 0
    assert main(["train", *args, "--runs", "a b"]) == 0
    ens = ["ensemble", *args, "--runs", "a b", "--methods", "soft stack"]
    assert main([*ens, "--method", "stack", "--no-report"]) == 0
    return root


def roots(root: Path) -> list[str]:
    return ["--comp", "toy", "--models", str(root / "models"), "--output", str(root)]


def ensemble_probs(root: Path) -> np.ndarray:
    """The test probabilities make ensemble submitted, recomputed from its saved state."""
    comp = load_competition(root / "input" / "toy")
    ws = Workspace("toy", root / "models", root)
    state, est = load_state(ws.submission_dir("ensemble"), "")
    _, members = load_members(comp, ws, state["members"])
    return est.predict_proba(members.test)


def test_predict_reproduces_the_ensemble_submission(trained, capsys):
    to = trained / "out" / "submission.csv"
    test = ["--test", str(trained / "input" / "toy"), "--to", str(to), "--batch-size", "3"]
    assert main(["predict", *roots(trained), *test]) == 0
    made = pd.read_csv(trained / "submissions" / "toy" / "ensemble" / "submission.csv")
    assert pd.read_csv(to).equals(made)
    probs = np.load(to.parent / "logits" / "probs.npy")
    assert np.abs(probs - ensemble_probs(trained)).max() < 1e-5
    record = json.loads((to.parent / "predict.json").read_text())
    assert record["dropped"] == [] and record["blend"] == "stack"
    assert record["n_test"] == 5 and record["img_per_s"] > 0
    assert "wrote" in capsys.readouterr().out


def test_packaged_notebook_predicts_offline_in_a_clean_folder(trained, tmp_path, capsys):
    """Acceptance: package (fp32 weights), then the notebook code in a fresh interpreter, in a
    folder with only the test images and the sample submission, the package on PYTHONPATH."""
    args = [*roots(trained), "--owner", "me", "--precision", "fp32", "--dry-run"]
    assert main(["package", *args]) == 0
    out = capsys.readouterr().out
    pkg = trained / "package" / "toy" / "ensemble"
    assert "datasets create -p " + str(pkg / "dataset") in out
    assert "kernels push -p " + str(pkg / "kernel") in out
    assert "-k me/toy-ensemble-predict -v N -f submission.csv" in out
    meta = json.loads((pkg / "kernel" / "kernel-metadata.json").read_text())
    assert meta["enable_internet"] is False and meta["competition_sources"] == ["toy"]
    assert meta["dataset_sources"] == ["me/toy-ensemble-models"]
    nb = json.loads((pkg / "kernel" / "predict.ipynb").read_text())
    assert "".join(nb["cells"][0]["source"]) == (pkg / "kernel" / "predict.py").read_text()
    data = pkg / "dataset"
    assert (data / "models/toy/a/fold1/weights.safetensors").is_file()
    assert not list(data.rglob("*.pt")) and not list(data.rglob("oof.npz"))

    kaggle = tmp_path / "kaggle"
    shutil.copytree(data, kaggle / "input" / "toy-ensemble-models")
    test = kaggle / "input" / "toy"
    shutil.copytree(trained / "input" / "toy" / "test", test / "test")
    shutil.copy(trained / "input" / "toy" / "sampleSubmission.csv", test)
    (kaggle / "working").mkdir()
    env = {
        "PATH": os.environ["PATH"],
        "PYTHONPATH": str(kaggle / "input" / "toy-ensemble-models"),
        "PIPELINE_INPUT": str(kaggle / "input"),
        "PIPELINE_WORKING": str(kaggle / "working"),
        "OMP_NUM_THREADS": "1",
        "HOME": str(tmp_path),
    }
    done = subprocess.run(
        [sys.executable, str(pkg / "kernel" / "predict.py")],
        cwd=kaggle / "working",
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    imports = json.loads((kaggle / "working" / "imports.json").read_text())
    assert imports["forbidden"] == []
    assert Path(imports["pipeline"]).is_relative_to(kaggle / "input")
    made = pd.read_csv(trained / "submissions" / "toy" / "ensemble" / "submission.csv")
    assert pd.read_csv(kaggle / "working" / "submission.csv").equals(made)
    probs = np.load(kaggle / "working" / "logits" / "probs.npy")
    assert np.abs(probs - ensemble_probs(trained)).max() < 1e-5
