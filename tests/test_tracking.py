"""Tracking (TRACK): TensorBoard events read back with TensorBoard's own reader equal the
artifacts (metrics.csv epoch for epoch, the run's OOF scores, the leaderboard), a fold killed
after its epoch's events and before its checkpoint resumes with no step doubled or lost, a
failing event write warns once and training goes on, and TRACK=mlflow is read back with
MlflowClient. The executor tests (test_jobs.py) check events from JOBS=2 workers and Ray tasks,
test_features.py a feature member's L2 path."""

from __future__ import annotations

import errno
import json
import os
import signal
import subprocess
import time
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from pipeline.cli import main, resolve_track
from pipeline.errors import PipelineError
from pipeline.track import board, mlflow_store

from .events import assert_epochs_match_metrics, scalars
from .fakes import TOY_RECIPE, extra_module, run_cli, toy_roots, toy_workspace


def _has_mlflow() -> bool:
    try:
        import mlflow  # noqa: F401
    except ImportError:
        return os.environ.get("CI") == "true"  # CI must have it: let the train call fail
    return True


@pytest.fixture(scope="module")
def tracked(tmp_path_factory) -> Path:
    """A toy competition trained with tracking on, fold 0 killed (in a subprocess) right before
    epoch 1's last.pt, after its events, then resumed; then an ensemble. TRACK=mlflow
    (TensorBoard as well) where MLflow is installed."""
    root = toy_workspace(tmp_path_factory.mktemp("tracked"))  # TOY_RECIPE, 2 folds
    roots = toy_roots(root)
    mode = "mlflow" if _has_mlflow() else "tensorboard"
    args = ["train", *roots, "--runs", "r", "--track", mode]
    # the killed call logs to TensorBoard only (MLflow logs a run once it is assembled)
    tb = ["train", *roots, "--runs", "r", "--track", "tensorboard"]
    killed = run_cli(*tb, cwd=root, env={"PIPELINE_KILL_AT": "before:fold0/last.pt"})
    assert killed.returncode == -signal.SIGKILL, killed.stderr[-2000:]
    assert list((root / "models/toy/r/fold0").glob("events.out.tfevents.*"))  # epoch 1's
    # TensorBoard reads a folder's event files in name order, whose first key is the second
    # they were opened in: a real resume (a new process, set-up, an epoch) is seconds later
    time.sleep(1.1)
    assert main(args) == 0  # resumed (from scratch: no last.pt)
    assert main(["ensemble", *roots, "--track", mode]) == 0
    return root


@pytest.mark.slow
def test_fold_events_equal_metrics_after_a_kill_between_events_and_checkpoint(tracked):
    """Epoch 1's events were on disk when the kill came, last.pt was not: the fold restarted,
    and TensorBoard shows each epoch once, equal to metrics.csv (the restart purged the rest)."""
    fdir = tracked / "models/toy/r/fold0"
    assert len(list(fdir.glob("events.out.tfevents.*"))) == 2  # the killed call's and the new
    for fold in (0, 1):
        assert_epochs_match_metrics(tracked / "models/toy/r" / f"fold{fold}")


def test_run_summary_oof_per_view_wall_time_and_hparams(tracked):
    rdir = tracked / "models/toy/r"
    got = scalars(rdir)
    with np.load(rdir / "oof.npz") as z:
        ids, logits = z["ids"].astype(str), z["logits"]
    folds = pd.read_csv(tracked / "folds/toy.csv").set_index("id").loc[ids]
    classes = sorted(folds["label"].unique())
    y = folds["label"].map({c: i for i, c in enumerate(classes)}).to_numpy()
    for v, view in enumerate(["none", "hflip"]):
        acc = float((logits[v].argmax(1) == y).mean())
        assert got[f"oof/accuracy/{view}"] == [(0, pytest.approx(acc, abs=1e-6))]
    assert "oof/accuracy/tta" in got
    dones = [json.loads((rdir / f"fold{f}/done.json").read_text()) for f in (0, 1)]
    assert got["time/train_s"][0][1] == pytest.approx(sum(d["seconds"] for d in dones), rel=1e-5)
    oof_best = max(v[0][1] for k, v in got.items() if k.startswith("oof/accuracy/"))
    assert got["hparam/oof_accuracy"] == [(0, pytest.approx(oof_best, abs=1e-6))]
    # the HParams session is in the run folder itself: no timestamped sub-run
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    ea = EventAccumulator(str(rdir))
    ea.Reload()
    hp = ea.PluginTagToContent("hparams")
    assert "_hparams_/session_start_info" in hp
    assert "backbone" in hp["_hparams_/session_start_info"].decode("latin-1")
    # the experiment at the competition's root names the two metrics, not every fold scalar
    root = EventAccumulator(str(tracked / "models/toy"))
    root.Reload()
    experiment = root.PluginTagToContent("hparams")["_hparams_/experiment"].decode("latin-1")
    assert "hparam/oof_accuracy" in experiment and "hparam/nested_accuracy" in experiment
    assert "val/loss" not in experiment and "image_size" in experiment
    subdirs = {p.name for p in rdir.iterdir() if p.is_dir()}
    assert subdirs <= {"fold0", "fold1", "logs"}, subdirs


def test_ensemble_events_leaderboard_per_class_and_figures(tracked):
    sdir = tracked / "submissions/toy/ensemble"
    got = scalars(tracked / "models/toy/ensembles/ensemble")
    table = pd.read_csv(sdir / "leaderboard.csv")
    for row in table.to_dict("records"):
        nested = got[f"leaderboard/{row['name']}/nested_accuracy"]
        assert nested == [(0, pytest.approx(row["nested_score"], abs=1e-6))]
    summary = json.loads((sdir / "ensemble.json").read_text())
    assert got["chosen/nested_accuracy"][0][1] == pytest.approx(summary["nested_score"], abs=1e-6)
    per_class = pd.read_csv(sdir / "report/per_class.csv")
    for c, a in zip(per_class["class"], per_class["accuracy"], strict=True):
        assert got[f"per_class_accuracy/{c}"][0][1] == pytest.approx(a, abs=1e-6)
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    ea = EventAccumulator(
        str(tracked / "models/toy/ensembles/ensemble"), size_guidance={"images": 0}
    )
    ea.Reload()
    assert "report/per_class_accuracy" in ea.Tags()["images"]
    shift = summary["label_shift"]  # label shift: the decision and its figures
    assert got["label_shift/applied"][0][1] == float(shift["applied"])
    assert got["label_shift/threshold"][0][1] == pytest.approx(shift["check"]["threshold"])
    assert "label_shift/text_summary" in ea.Tags()["tensors"]
    # the member's nested score is its HParams metric, in its own run
    member = table[table["name"] == "r"]["nested_score"].item()
    assert scalars(tracked / "models/toy/r")["hparam/nested_accuracy"][0][1] == pytest.approx(
        member, abs=1e-6
    )
    assert not (tracked / "models/toy/ensembles/oof.npz").exists()  # never taken for a run


def test_mlflow_runs_folds_and_ensemble_read_back(tracked):
    extra_module("mlflow", "track")
    client = mlflow_store.mlflow_client(tracked / "models")
    exp = client.get_experiment_by_name("toy")
    runs = client.search_runs([exp.experiment_id])
    by_name = {r.info.run_name: r for r in runs}
    assert set(by_name) == {"r", "r/fold0", "r/fold1", "ensemble/ensemble"}
    parent = by_name["r"]
    assert parent.data.params["backbone"] == "test_resnet" and parent.data.params["epochs"] == "2"
    for fold in (0, 1):
        child = by_name[f"r/fold{fold}"]
        assert child.data.tags["mlflow.parentRunId"] == parent.info.run_id
        history = client.get_metric_history(child.info.run_id, "val_loss")
        m = pd.read_csv(tracked / f"models/toy/r/fold{fold}/metrics.csv")
        assert [h.step for h in sorted(history, key=lambda h: h.step)] == m["epoch"].tolist()
        assert [h.value for h in sorted(history, key=lambda h: h.step)] == pytest.approx(
            m["val_loss"].tolist(), rel=1e-6
        )
    ens = by_name["ensemble/ensemble"]
    summary = json.loads((tracked / "submissions/toy/ensemble/ensemble.json").read_text())
    assert ens.data.params["method"] == summary["method"]
    assert ens.data.metrics["chosen/nested_accuracy"] == pytest.approx(summary["nested_score"])
    arts = {a.path for a in client.list_artifacts(ens.info.run_id)}
    assert {"leaderboard.csv", "report.html"} <= arts


def test_a_failing_event_write_warns_once_and_training_goes_on(tmp_path, monkeypatch, capsys):
    """ENOSPC inside TensorBoard's writer thread: one warning, every artifact still written."""
    from tensorboard.summary.writer import record_writer

    def full(self, data):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(record_writer.RecordWriter, "write", full)
    monkeypatch.setattr(board, "_warned", set())
    monkeypatch.chdir(tmp_path)
    toy_workspace(tmp_path, TOY_RECIPE.replace("epochs = 2", "epochs = 1"), n_per_class=6, n_test=2)
    comp = ["--comp", "input/toy"]
    assert main(["train", *comp, "--runs", "r", "--track", "tensorboard"]) == 0
    err = capsys.readouterr().err
    assert err.count("warning: TensorBoard events") == 1, err
    assert "No space left on device" in err and "training goes on" in err
    assert "Traceback" not in err  # the writer thread's exception is not printed
    assert (tmp_path / "models/toy/r/oof.npz").is_file()


def test_track_values_and_the_commands_that_serve_them(tmp_path, monkeypatch, capsys):
    assert board.resolve("tensorboard") == {"tensorboard"}
    assert board.resolve("mlflow") == {"tensorboard", "mlflow"}
    try:
        import mlflow  # noqa: F401

        assert resolve_track("mlflow") == {"tensorboard", "mlflow"}
    except ImportError:  # refused before any work, in one line
        with pytest.raises(PipelineError, match=r"^TRACK=mlflow needs the mlflow package: "):
            resolve_track("mlflow")
    assert board.resolve("none") == frozenset()
    monkeypatch.setenv("PIPELINE_TRACK", "none")
    assert board.resolve(None) == frozenset()
    with pytest.raises(PipelineError) as e:
        board.resolve("wandb")
    assert str(e.value) == "TRACK='wandb': one of tensorboard, mlflow, none (or tensorboard,mlflow)"
    with pytest.raises(PipelineError, match=r"^no TensorBoard events under .*unless TRACK=none$"):
        board.serve_tensorboard(tmp_path, 6006)
    (tmp_path / "r").mkdir()
    (tmp_path / "r" / "events.out.tfevents.1.host.1.0").write_bytes(b"")
    calls = []
    monkeypatch.setattr(subprocess, "run", lambda cmd, check: calls.append(cmd))
    board.serve_tensorboard(tmp_path, 6123)
    assert "TensorBoard on http://127.0.0.1:6123/" in capsys.readouterr().out
    assert calls[0][1:] == ["--logdir", str(tmp_path), "--host", "127.0.0.1", "--port", "6123"]
