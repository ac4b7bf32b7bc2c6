"""A fold killed with SIGKILL mid-training resumes from its last epoch and ends as if never killed."""

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd

from .fakes import write_leaves

RECIPE = """backbone = "test_resnet"
image_size = 24
epochs = 4
batch_size = 8
augment = "medium"
mixup_alpha = 0.2
ema_decay = 0.9
tta = ["none", "hflip"]
"""


def _setup(root: Path) -> None:
    write_leaves(root / "input" / "toy", n_per_class=30, n_test=4)
    (root / "models").mkdir(parents=True)
    (root / "models" / "r.toml").write_text(RECIPE)
    _cli(root, "folds", "--comp", "input/toy", "--k", "2").check_returncode()


def _cli(root: Path, *args: str, wait: bool = True):
    cmd = [sys.executable, "-m", "pipeline", *args]
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[1])}
    if wait:
        return subprocess.run(cmd, cwd=root, env=env, capture_output=True, text=True, timeout=300)
    return subprocess.Popen(
        cmd, cwd=root, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
    )


def test_kill_and_resume_matches_uninterrupted(tmp_path):
    killed, clean = tmp_path / "killed", tmp_path / "clean"
    for root in (killed, clean):
        _setup(root)
    last = killed / "models" / "toy" / "r" / "fold0" / "last.pt"
    proc = _cli(killed, "train", "--comp", "input/toy", "--runs", "r", wait=False)
    deadline = time.time() + 120
    while not last.exists() and time.time() < deadline and proc.poll() is None:
        time.sleep(0.01)
    assert last.exists(), "fold 0 never wrote last.pt"
    os.kill(proc.pid, signal.SIGKILL)  # mid-fold: after epoch 1's checkpoint, before the fold ends
    proc.wait()
    fdir = last.parent
    assert not (fdir / "done.json").exists()

    resumed = _cli(killed, "train", "--comp", "input/toy", "--runs", "r")
    assert resumed.returncode == 0, resumed.stderr
    assert "resuming" in resumed.stdout
    metrics = pd.read_csv(fdir / "metrics.csv")
    assert metrics["epoch"].tolist() == [1, 2, 3, 4]

    assert _cli(clean, "train", "--comp", "input/toy", "--runs", "r").returncode == 0
    for name in ("oof.npz", "test.npz"):
        with (
            np.load(killed / "models/toy/r" / name) as a,
            np.load(clean / "models/toy/r" / name) as b,
        ):
            assert a["logits"].shape == b["logits"].shape
            np.testing.assert_array_equal(a["logits"], b["logits"])
