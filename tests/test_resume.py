"""A fold killed with SIGKILL mid-training resumes from its last epoch and ends as if never killed."""

import signal

import numpy as np
import pandas as pd
import pytest

from pipeline.cli import main

from .fakes import run_cli, toy_roots, toy_workspace

RECIPE = """backbone = "test_resnet"
image_size = 24
epochs = 2
batch_size = 8
augment = "medium"
mixup_alpha = 0.2
ema_decay = 0.9
tta = ["none", "hflip"]
"""


@pytest.mark.slow
def test_kill_and_resume_matches_uninterrupted(tmp_path):
    killed, clean = tmp_path / "killed", tmp_path / "clean"
    for root in (killed, clean):
        toy_workspace(root, RECIPE, n_per_class=12)
    last = killed / "models" / "toy" / "r" / "fold0" / "last.pt"
    # the deterministic kill hook (disk/faults.py): SIGKILL right after epoch 1's last.pt of fold 0
    # is renamed into place, mid-fold, with no timing race
    env = {"PIPELINE_KILL_AT": "after:fold0/last.pt"}
    proc = run_cli("train", "--comp", "input/toy", "--runs", "r", cwd=killed, env=env)
    assert proc.returncode == -signal.SIGKILL, proc.stderr[-2000:]
    assert "PIPELINE_KILL_AT: SIGKILL at after:fold0/last.pt" in proc.stderr
    assert last.exists(), "fold 0 never wrote last.pt"
    fdir = last.parent
    assert not (fdir / "done.json").exists()

    resumed = run_cli("train", "--comp", "input/toy", "--runs", "r", cwd=killed)
    assert resumed.returncode == 0, resumed.stderr
    assert "resuming" in resumed.stdout
    metrics = pd.read_csv(fdir / "metrics.csv")
    assert metrics["epoch"].tolist() == [1, 2]

    assert main(["train", *toy_roots(clean), "--runs", "r"]) == 0  # in-process, same threads
    for name in ("oof.npz", "test.npz"):
        with (
            np.load(killed / "models/toy/r" / name) as a,
            np.load(clean / "models/toy/r" / name) as b,
        ):
            assert a["logits"].shape == b["logits"].shape
            np.testing.assert_array_equal(a["logits"], b["logits"])
