"""Executors: ``JOBS=2`` local workers and a local Ray instance give logits bit-identical to the
in-process run at the same threads per job; a worker SIGKILLed mid-fold is retried and resumes;
a job that fails every attempt is reported with its log while the other jobs finish."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import pytest

from pipeline.competition import load_competition
from pipeline.errors import PipelineError
from pipeline.tools import soak
from pipeline.train.context import Job
from pipeline.train.executors import Dispatch
from pipeline.train.executors.base import default_threads, last_epoch
from pipeline.train.executors.local import exit_reason, visible_device
from pipeline.train.stage import train_stage
from pipeline.workspace import Workspace

from .events import assert_epochs_match_metrics
from .fakes import extra_module, toy_workspace

# 2 epochs, so a kill after epoch 1's last.pt is mid-fold; augmentation, mixup and EMA on
RECIPE = """backbone = "test_resnet"
image_size = 16
epochs = 2
batch_size = 8
augment = "medium"
mixup_alpha = 0.2
ema_decay = 0.9
tta = ["none", "hflip"]
"""
KILL = "after:fold1/last.pt"  # fold 1, once epoch 1 is saved


@pytest.fixture(scope="module", name="template")
def template_fixture(tmp_path_factory) -> Path:
    """A tiny competition, its recipe ``r`` and its 2 folds, untrained."""
    return toy_workspace(tmp_path_factory.mktemp("jobs") / "template", RECIPE, n_per_class=6)


@pytest.fixture(scope="module", name="reference")
def reference_fixture(template) -> Path:
    """The template trained in process at 1 thread per job."""
    ref = _copy(template, template.parent / "ref")
    train_stage(*_open(ref), ["r"], device="cpu", dispatch=Dispatch(threads=1))
    return ref


def _open(root: Path):
    comp = load_competition(root / "input" / "toy")
    return comp, Workspace.under(root, comp.name)


def _copy(template: Path, dest: Path) -> Path:
    shutil.copytree(template, dest)
    return dest


def _assert_same_as(root: Path, ref: Path) -> None:
    assert soak.check_outputs(root, ref, "toy", ["r"]) == []  # every artifact read, bit-equal


TB = frozenset({"tensorboard"})


def _assert_events(root: Path) -> None:
    """TensorBoard's view of each fold (events written in the worker or Ray task, fold 1 killed
    after epoch 1 and resumed or restarted) equals its metrics.csv, no step doubled or lost."""
    for fold in (0, 1):
        assert_epochs_match_metrics(root / "models/toy/r" / f"fold{fold}")


@pytest.fixture(scope="session", name="ray_local")
def ray_local_fixture():
    """One local Ray instance for the whole session (start-up takes seconds)."""
    ray = extra_module("ray", "ray")
    if not ray.is_initialized():
        ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
    yield ray
    ray.shutdown()


@pytest.mark.slow
def test_local_queue_retries_a_killed_worker_and_matches_in_process(
    template, reference, tmp_path, monkeypatch, capsys
):
    root = _copy(template, tmp_path / "root")
    monkeypatch.setenv("PIPELINE_KILL_AT", KILL)
    monkeypatch.setenv("PIPELINE_KILL_ONCE", str(tmp_path))
    train_stage(*_open(root), ["r"], device="cpu", dispatch=Dispatch(jobs=2, threads=1), track=TB)
    out = capsys.readouterr().out
    assert "r fold 1 died (killed by SIGKILL); retrying" in out
    assert "2/2 jobs ended, 0 running" in out and "ETA 0s" in out
    log = (root / "models/toy/r/logs/fold1.log").read_text()
    assert "PIPELINE_KILL_AT: SIGKILL" in log and "attempt 2" in log and "resuming" in log
    assert "1 threads" in log
    _assert_same_as(root, reference)
    _assert_events(root)


@pytest.mark.slow
def test_local_queue_reports_a_job_that_fails_every_attempt(template, tmp_path, monkeypatch):
    root = _copy(template, tmp_path / "root")
    monkeypatch.setenv("PIPELINE_KILL_AT", KILL)  # every attempt dies
    with pytest.raises(PipelineError) as err:
        train_stage(
            *_open(root), ["r"], device="cpu", dispatch=Dispatch(jobs=2, threads=1, retries=0)
        )
    msg = str(err.value)
    assert msg.startswith("1 of 2 train jobs failed: r fold 1 (killed by SIGKILL, log ")
    assert "fold1.log" in msg and "\n" not in msg
    rdir = root / "models/toy/r"
    assert (rdir / "fold0/done.json").is_file()  # the other job went on
    assert not (rdir / "fold1/done.json").exists() and not (rdir / "oof.npz").exists()


@pytest.mark.slow
def test_ray_tasks_retry_a_killed_worker_and_match_in_process(
    template, reference, tmp_path, monkeypatch, ray_local
):
    root = _copy(template, tmp_path / "root")
    monkeypatch.setenv("PIPELINE_KILL_AT", KILL)  # forwarded to the Ray tasks by the driver
    monkeypatch.setenv("PIPELINE_KILL_ONCE", str(tmp_path))
    train_stage(*_open(root), ["r"], device="cpu", dispatch=Dispatch("ray", threads=1), track=TB)
    assert (tmp_path / "after:fold1_last.pt").is_file()  # the kill did fire
    assert "resuming" in (root / "models/toy/r/logs/fold1.log").read_text()
    _assert_same_as(root, reference)
    _assert_events(root)


@pytest.mark.slow
def test_ray_without_shared_fs_returns_the_fold_files_to_the_driver(
    template, reference, tmp_path, monkeypatch, ray_local
):
    root = _copy(template, tmp_path / "root")
    monkeypatch.setenv("PIPELINE_KILL_AT", KILL)  # in the task's scratch folder
    monkeypatch.setenv("PIPELINE_KILL_ONCE", str(tmp_path))
    dispatch = Dispatch("ray", threads=1, options={"shared_fs": False})
    train_stage(*_open(root), ["r"], device="cpu", dispatch=dispatch, track=TB)
    assert (tmp_path / "after:fold1_last.pt").is_file()
    log = (root / "models/toy/r/logs/fold1.log").read_text()
    assert "Ray task" in log and "resuming" not in log  # the retry restarted the fold
    _assert_same_as(root, reference)
    _assert_events(root)  # the event files came back with the fold's other files


def test_dispatch_settings(monkeypatch):
    monkeypatch.setenv("OMP_NUM_THREADS", "1")
    assert default_threads(1) == 1
    monkeypatch.delenv("OMP_NUM_THREADS")
    assert default_threads(1) == len(os.sched_getaffinity(0)) and default_threads(10**6) == 1
    assert Dispatch(jobs=4, threads=3).job_threads() == 3
    for bad in ({"executor": "slurm"}, {"jobs": 0}, {"threads": 0}, {"retries": -1}):
        with pytest.raises(PipelineError):
            Dispatch(**bad)
    assert exit_reason(-9) == "killed by SIGKILL" and exit_reason(1) == "exit 1"
    assert Job("r", 3).tag == "r fold 3"
    assert visible_device(1, {}) == "1"
    assert visible_device(1, {"CUDA_VISIBLE_DEVICES": "4, 6"}) == "6"
    with pytest.raises(PipelineError, match="GPUS has 2"):
        visible_device(2, {"CUDA_VISIBLE_DEVICES": "4,6"})


def test_train_cli_flags_make_the_dispatch():
    from pipeline.cli import build_parser
    from pipeline.train.executors import dispatch_from_args

    base = ["train", "--comp", "input/x", "--runs", "r"]
    assert (
        dispatch_from_args(build_parser().parse_args(base)) == Dispatch()
    )  # make train's defaults
    flags = ["--executor", "ray", "--jobs", "2", "--threads", "3"]
    a = build_parser().parse_args([*base, *flags, "--retries", "0", "--no-shared-fs"])
    assert dispatch_from_args(a) == Dispatch("ray", 2, 3, 0, {"shared_fs": False})
    a = build_parser().parse_args([*base, "--jobs", "2", "--gpus", "0,1"])
    assert dispatch_from_args(a) == Dispatch("local", 2, None, 1, {"gpus": (0, 1)})
    # an option of another executor is refused naming it: GPUS is the local workers', SHARED_FS
    # Ray's (Ray gives each task its GPU)
    with pytest.raises(
        PipelineError, match=r"GPUS is not an option of EXECUTOR=ray \(its options: SHARED_FS\)"
    ):
        dispatch_from_args(build_parser().parse_args([*base, *flags, "--gpus", "0,1"]))
    with pytest.raises(PipelineError, match=r"SHARED_FS is not an option of EXECUTOR=local JOBS=1"):
        dispatch_from_args(build_parser().parse_args([*base, "--no-shared-fs"]))
    with pytest.raises(PipelineError, match="GPUS='a'"):
        dispatch_from_args(build_parser().parse_args([*base, "--gpus", "a"]))


def test_last_epoch_reads_the_job_log(tmp_path):
    log = tmp_path / "fold0.log"
    assert last_epoch(log) == "starting"
    log.write_text(
        "noise\nr fold 0 epoch 1/4  train loss 1.0  12 img/s\nr fold 0 epoch 2/4  train loss 0.9"
        "  13 img/s  *\n"
    )
    assert last_epoch(log) == "2/4  train loss 0.9  13 img/s  *"
