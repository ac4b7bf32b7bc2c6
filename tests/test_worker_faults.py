"""A full disk and a held lock in the executors' workers: a full disk in a ``JOBS=2`` worker,
and a fold held by another process as a ``JOBS=2`` worker or a Ray task meets it. (A file of
its own, so that pytest-xdist runs it beside tests/test_jobs.py.)"""

from __future__ import annotations

import os

import pytest

from pipeline.disk import locks
from pipeline.errors import PipelineError
from pipeline.train.executors import Dispatch
from pipeline.train.stage import train_stage

# the fixtures template (untrained: no test here compares with a clean run) and ray_local,
# shared with tests/test_jobs.py
from .test_jobs import _copy, _open, ray_local_fixture, template_fixture  # noqa: F401

HELD = "1 of 2 train jobs skipped, held by another live process: r fold 1 is being trained by pid"


@pytest.mark.slow
def test_jobs_2_a_full_disk_in_one_worker_and_a_held_fold_in_the_other(
    template, tmp_path, monkeypatch
):
    """One JOBS=2 train, fold 0's worker meeting a full disk and fold 1 held by another live
    process (this test's): the first worker prints the disk's line in its log and exits 2, and
    the driver names that line without retrying (the disk is still full); the second worker
    finds the fold lock taken (it is taken where the fold is trained), skips the fold and
    names its holder. Both in the one line the stage ends with."""
    root = _copy(template, tmp_path / "root")
    rdir = root / "models/toy/r"
    held = locks.try_lock(rdir / ".fold1.lock", "another make train")
    monkeypatch.setenv("PIPELINE_FAIL_AT", "enospc:fold0/last.pt")
    try:
        with pytest.raises(PipelineError) as err:
            train_stage(*_open(root), ["r"], device="cpu", dispatch=Dispatch(jobs=2, threads=1))
    finally:
        held.release()
    msg = str(err.value)
    last = rdir / "fold0/last.pt"
    assert msg.startswith(f"1 of 2 train jobs failed: r fold 0 (disk full writing {last} (needs ")
    assert "bytes free); nothing partial was kept" in msg and "fold0.log" in msg, msg
    assert f"; {HELD} {os.getpid()} on " in msg and "(another make train)" in msg, msg
    assert "\n" not in msg
    log = (rdir / "logs/fold0.log").read_text()
    assert "attempt 2" not in log and "Traceback" not in log
    assert not last.exists() and not list(last.parent.glob("*.tmp"))
    assert not (rdir / "fold1").exists() and not (rdir / "oof.npz").exists()
    # (a re-run after a full disk, bit for bit: tests/test_storage.py, at every write point;
    # a released fold trained by the next call: tests/test_locks.py)


@pytest.mark.slow
def test_a_ray_task_skips_a_fold_another_process_holds(template, tmp_path, ray_local):
    root = _copy(template, tmp_path / "root")
    rdir = root / "models/toy/r"
    held = locks.try_lock(rdir / ".fold1.lock", "another make train")
    try:
        with pytest.raises(PipelineError) as err:
            train_stage(*_open(root), ["r"], device="cpu", dispatch=Dispatch("ray", threads=1))
    finally:
        held.release()
    msg = str(err.value)
    assert msg.startswith(f"{HELD} {os.getpid()} on ") and "(another make train)" in msg, msg
    assert (rdir / "fold0/done.json").is_file() and not (rdir / "fold1").exists()
    assert not (rdir / "oof.npz").exists()
