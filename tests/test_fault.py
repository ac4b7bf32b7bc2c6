"""Kill ``make train`` at random moments and at named write points; the re-run loses nothing.

``pipeline/tools/soak.py`` runs the experiment (``python -m pipeline.tools soak`` repeats it);
here it runs once on a tiny competition: a real ``make train`` killed (whole process group) at a
random moment, seven forked ``python -m pipeline train`` equivalents killed at seeded random
moments or just before/after an artifact's rename, then ``make train`` to the end.
"""

import os
import random
import subprocess
import sys

import numpy as np
import pytest

from pipeline import artifacts
from pipeline.tools import soak

from .fakes import write_leaves

# the soak's recipe, 3 epochs of 2 batches per fold on 30 blob images
RECIPE = soak.SOAK_RECIPE.replace("epochs = 2", "epochs = 3").replace("= 64", "= 8")
HOOKS = {"before:last.pt", "before:oof.npz", "after:done.json", "before:r/oof.npz"}


@pytest.mark.slow
def test_killed_train_resumes_bit_identical(tmp_path):
    comp = write_leaves(tmp_path / "input" / "toy", n_per_class=10, n_test=6)
    work = tmp_path / "work"
    tr = soak.Trainer(comp, ["r"], work)
    template = soak.prepare(tr, {"r": RECIPE}, k=2, seed=0)
    ref, timing = soak.reference(tr, template)
    root = work / "killed"
    attempts, final = soak.experiment(tr, template, root, work / "logs", random.Random(7), timing)

    summary = [(a.how, a.kill, round(a.delay, 2), a.rc, a.phase) for a in attempts]
    assert sum(a.killed for a in attempts) >= 5, summary
    assert all(a.killed or a.rc == 0 for a in attempts), summary  # no resume crashed
    assert {a.phase for a in attempts if a.kill != "random"} == HOOKS, summary
    assert final.rc == 0, final.log.read_text()[-3000:]
    assert any("resuming" in a.log.read_text() for a in [*attempts, final])  # from last.pt
    # every artifact reads back, none is left half-written, and all equal the clean run's
    assert soak.check_outputs(root, ref, "toy", ["r"]) == []

    # ... and the checks do catch a stray temp file, changed logits and a damaged checkpoint
    rdir = root / "models" / "toy" / "r"
    (rdir / "fold0" / ".best.pt.1@host.abcdefgh.tmp").write_bytes(b"")
    oof = artifacts.read_logits(rdir / "oof.npz", "oof", "")
    oof["logits"][0, 0, 0] += 1e-6
    artifacts.write_logits(rdir / "oof.npz", **oof)
    (rdir / "fold1" / "best.pt").write_bytes(b"not a checkpoint")
    kinds = sorted(kind for kind, _ in soak.check_outputs(root, ref, "toy", ["r"]))
    assert kinds == ["left behind", "logits differ", "unreadable"]


def test_atomic_write_removes_temp_files_of_dead_writers(tmp_path):
    dead = subprocess.run(
        [sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True
    )
    from pipeline.disk import atomic

    host = atomic._HOST
    stale = tmp_path / f".a.npz.{dead.stdout.strip()}@{host}.x1y2z3w4.tmp"
    live = tmp_path / f".a.npz.{os.getpid()}@{host}.x1y2z3w4.tmp"
    other_host = tmp_path / f".a.npz.{dead.stdout.strip()}@elsewhere.x1y2z3w4.tmp"
    other_file = tmp_path / f".b.npz.{dead.stdout.strip()}@{host}.x1y2z3w4.tmp"
    for p in (stale, live, other_host, other_file):
        p.write_bytes(b"partial")
    artifacts.write_logits(tmp_path / "a.npz", logits=np.zeros((1, 1, 1)))
    assert not stale.exists()
    assert live.exists() and other_host.exists() and other_file.exists()
    assert sorted(p.name for p in tmp_path.iterdir() if p.name.startswith(".a.npz")) == sorted(
        [live.name, other_host.name]
    )
