"""make package's Kaggle loop against a fake ``kaggle`` on PATH (tests/fake_kaggle.py): create then
version the dataset, wait until ready, push, follow the notebook, pull and check its output (the
fake really runs the pushed notebook), the ledger, and make submit KERNEL= without VERSION."""

from __future__ import annotations

import json
import os
import re
import shutil
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from pipeline import artifacts
from pipeline.cli import main
from pipeline.errors import SubmissionError
from pipeline.predict import kaggle_check, kaggle_loop
from pipeline.submit.kernels import notebook_output
from pipeline.workspace import Workspace

from .fakes import TOY_RECIPE, toy_roots, toy_workspace

FAKE = Path(__file__).with_name("fake_kaggle.py")
KEY = "0123456789abcdef0123456789abcdef"
KERNEL = "me/toy-ensemble-predict"


@pytest.fixture(scope="module")
def trained(tmp_path_factory) -> Path:
    """One tiny member on 2 folds of the leaves-layout toy, ensembled as NAME=ensemble."""
    root = toy_workspace(
        tmp_path_factory.mktemp("loop"), TOY_RECIPE.replace("epochs = 2", "epochs = 1")
    )
    assert main(["train", *toy_roots(root), "--runs", "r"]) == 0
    ens = ["ensemble", *toy_roots(root), "--runs", "r", "--methods", "soft", "--no-report"]
    assert main(ens) == 0
    return root


class Clock:
    """A fake clock: ``sleep`` advances it, nothing waits for real."""

    def __init__(self) -> None:
        self.t = 0.0

    def sleep(self, s: float) -> None:
        self.t += s

    def now(self) -> float:
        return self.t


@pytest.fixture
def kaggle(trained, tmp_path, monkeypatch):
    """A copy of the workspace and the fake ``kaggle`` first on PATH and beside sys.executable
    (where ``kaggle_exe`` looks first); credentials set; polls on a fake clock."""
    work = tmp_path / "w"
    shutil.copytree(trained, work)
    state, bin_ = tmp_path / "kaggle-state", tmp_path / "bin"
    state.mkdir()
    bin_.mkdir()
    (bin_ / "kaggle").write_text(f'#!/bin/sh\nexec "{sys.executable}" "{FAKE}" "$@"\n')
    (bin_ / "kaggle").chmod(0o755)
    config = {"ready_after": 2, "queued": 1, "running": 1, "python": sys.executable}
    config["competitions"] = str(work / "input")
    (state / "config.json").write_text(json.dumps(config))
    monkeypatch.setenv("FAKE_KAGGLE_STATE", str(state))
    monkeypatch.setenv("PATH", f"{bin_}:{os.environ['PATH']}")
    monkeypatch.setattr(sys, "executable", str(bin_ / "python"))
    monkeypatch.setenv("HOME", str(tmp_path))
    monkeypatch.setenv("KAGGLE_USERNAME", "me")
    monkeypatch.setenv("KAGGLE_KEY", KEY)
    clock = Clock()
    waits = kaggle_loop.Waits(10, 60, 30, 3600, clock.sleep, clock.now)
    monkeypatch.setattr(kaggle_loop, "WAITS", waits)
    return work, state


def calls(state: Path) -> list[str]:
    path = state / "calls.log"
    return path.read_text().splitlines() if path.is_file() else []


def configure(state: Path, **changes) -> None:
    config = json.loads((state / "config.json").read_text())
    (state / "config.json").write_text(json.dumps({**config, **changes}))


@pytest.mark.slow
def test_two_packages_push_two_versions_pulled_and_validated(kaggle, capsys):
    """Acceptance: create, then version; two notebook versions run by the fake, both outputs
    pulled, validated and recorded; make submit KERNEL= takes the newest; no credential in
    anything uploaded."""
    work, state = kaggle
    for folder in (work, work / "models", work / "input/toy"):  # never uploaded
        (folder / "kaggle.json").write_text(json.dumps({"username": "me", "key": KEY}))
        (folder / ".env").write_text(f"KAGGLE_KEY={KEY}\n")
    args = ["package", *toy_roots(work), "--owner", "me"]
    assert main(args) == 0, capsys.readouterr().err
    first = capsys.readouterr().out
    pkg, kdir = work / "package/toy/ensemble", work / "submissions/toy/ensemble/kaggle"
    assert calls(state) == [
        "datasets status me/toy-ensemble-models",
        f"datasets create -p {pkg / 'dataset'} --dir-mode zip",
        *["datasets status me/toy-ensemble-models"] * 3,  # two processing answers, then ready
        f"kernels push -p {pkg / 'kernel'}",
        *[f"kernels status {KERNEL}/1"] * 3,  # queued, running, complete
        f"kernels output {KERNEL}/1 -p {kdir / 'v1'} -o --file-pattern " + kaggle_loop.OUTPUT_FILES,
    ]
    assert "dataset me/toy-ensemble-models: blobs_received, waited 0 s" in first
    assert "dataset me/toy-ensemble-models: ready after 20 s" in first
    assert f"notebook {KERNEL}/1: running at 0:00:30" in first
    assert f"notebook {KERNEL}/1: complete; queued 0:00:30, running 0:00:30" in first
    assert re.search(r"v1/submission.csv: valid \(4 rows\); labels agree .* max \|p", first)

    assert main(args) == 0, capsys.readouterr().err
    second = calls(state)[10:]
    method = json.loads((work / "submissions/toy/ensemble/ensemble.json").read_text())["method"]
    assert re.fullmatch(
        rf"datasets version -p {pkg / 'dataset'} --dir-mode zip -m ensemble {method}, sha256 "
        r"[0-9a-f]{12}",
        second[1],
    )
    assert f"kernels output {KERNEL}/2 -p {kdir / 'v2'} -o" in second[-1]
    for v in ("v1", "v2"):  # the notebook's own output, made by the packaged code
        sub = pd.read_csv(kdir / v / "submission.csv")
        assert sub.equals(pd.read_csv(kdir / v / "local" / "submission.csv")), v
        imports = json.loads((kdir / v / "imports.json").read_text())
        assert imports["forbidden"] == [] and f"kernels/{KERNEL}/{v}/kaggle/input" in imports[
            "pipeline"
        ].replace("\\", "/")
        assert (kdir / v / "toy-ensemble-predict.log").is_file()
    ledger = pd.read_csv(work / "submissions/toy/ledger.csv", dtype=str, keep_default_na=False)
    assert ledger["status"].tolist() == ["validated"] * 2
    assert ledger["kernel"].tolist() == [f"{KERNEL}/1", f"{KERNEL}/2"]

    full = ["--comp", str(work / "input/toy"), "--models", str(work / "models")]
    assert main(["submit", *full, "--output", str(work), "--kernel", KERNEL, "--dry-run"]) == 0
    out = capsys.readouterr().out
    assert f"{kdir / 'v2' / 'submission.csv'}: valid" in out
    assert f"-k {KERNEL} -v 2 -f submission.csv" in out
    uploaded = sorted(p for p in state.rglob("*") if p.is_file() and "kaggle/" not in str(p))
    names = {p.name for p in uploaded}
    assert not names & {"kaggle.json", ".env"}, names
    assert not [p for p in uploaded if KEY.encode() in p.read_bytes()]
    for v in ("v1", "v2"):  # what was uploaded is the package, file for file
        up = state / "datasets/me/toy-ensemble-models" / v
        assert sorted(f.relative_to(up) for f in up.rglob("*") if f.is_file()) == sorted(
            f.relative_to(pkg / "dataset") for f in (pkg / "dataset").rglob("*") if f.is_file()
        )


def test_a_notebook_that_errors_shows_its_log_tail_and_exits_2(kaggle, capsys):
    work, state = kaggle
    configure(state, competitions=str(work / "nowhere"))  # the competition is not mounted
    assert main(["package", *toy_roots(work), "--owner", "me"]) == 2
    err = capsys.readouterr().err
    log = work / "submissions/toy/ensemble/kaggle/v1/toy-ensemble-predict.log"
    assert f"lines of {log}:" in err
    assert re.search(r"  \| none of \('toy', 'competitions/toy'\) under \S+/input", err)
    last = err.strip().splitlines()[-1]
    assert last.startswith(f"error: notebook {KERNEL} version 1 ended error: its log's last")
    assert not (work / "submissions/toy/ledger.csv").exists()


def test_a_cancelled_notebook_without_output_is_one_line(kaggle, capsys):
    work, state = kaggle
    configure(state, final="CANCEL_ACKNOWLEDGED")
    assert main(["package", *toy_roots(work), "--owner", "me"]) == 2
    assert capsys.readouterr().err.strip() == (
        f"error: notebook {KERNEL} version 1 ended cancel_acknowledged: no log came back, see "
        f"https://www.kaggle.com/code/{KERNEL}; fix the cause, then re-run make package"
    )


def test_a_dataset_that_never_becomes_ready_times_out_in_one_line(kaggle, capsys):
    work, state = kaggle
    configure(state, ready_after=-1)
    assert main(["package", *toy_roots(work), "--owner", "me"]) == 2
    err = capsys.readouterr().err.strip()
    assert err == (
        "error: dataset me/toy-ensemble-models not ready after 60 s (Kaggle says "
        "'blobs_copied_to_sds', limit 60 s); see https://www.kaggle.com/datasets/"
        "me/toy-ensemble-models, then re-run make package"
    )
    assert not [c for c in calls(state) if c.startswith("kernels")]


def test_dry_run_prints_every_command_and_runs_none(kaggle, capsys):
    work, state = kaggle
    assert main(["package", *toy_roots(work), "--owner", "me", "--dry-run"]) == 0
    out = capsys.readouterr().out
    for verb in ("datasets status", "datasets create", "datasets version -p", "kernels push",
                 f"kernels status {KERNEL}/N", f"kernels output {KERNEL}/N"):  # fmt: skip
        assert f"kaggle {verb}" in out, verb
    assert f"make submit NAME=ensemble KERNEL={KERNEL}" in out and "not run (DRY_RUN=1)" in out
    assert calls(state) == []


def test_compare_allows_flips_only_at_a_tiny_margin():
    ours = np.array([[0.5004, 0.4996], [0.9, 0.1]])
    theirs = np.array([[0.4996, 0.5004], [0.9005, 0.0995]])
    assert "1 flips at a top-2 margin" in kaggle_check.compare(theirs, ours, "p.npy")
    with pytest.raises(SubmissionError, match=r"p.npy: 1 labels differ \(rows \[1\]\)"):
        kaggle_check.compare(np.array([[0.5, 0.5], [0.1, 0.9]]), ours, "p.npy")
    with pytest.raises(SubmissionError, match=r"max \|p - p_local\| = 3.00e-03 > 0.002"):
        kaggle_check.compare(ours + [[0.003, -0.003], [0, 0]], ours, "p.npy")


def test_the_newest_validated_version_from_an_old_ledger(tmp_path):
    """A ledger from before the ``kernel`` column gains it, empty; only ``validated`` rows of
    this NAME and notebook count; none is one line; a pulled file is preferred."""
    ws = Workspace("toy", tmp_path / "models", tmp_path)
    old = artifacts.LEDGER_COLUMNS[:14]
    ws.ledger.parent.mkdir(parents=True)
    pd.DataFrame([dict.fromkeys(old, "x")], columns=old).to_csv(ws.ledger, index=False)
    local = tmp_path / "submission.csv"
    with pytest.raises(SubmissionError, match="no validated version of notebook me/nb for NAME=e"):
        notebook_output(ws, "e", "me/nb", "", local)
    rows = [("e", "validated", "me/nb/2"), ("e", "validated", "me/nb/10"),
            ("e", "submitted", "me/nb/11"), ("f", "validated", "me/nb/12"),
            ("e", "validated", "me/other/13")]  # fmt: skip
    for name, status, ref in rows:
        row = dict.fromkeys(artifacts.LEDGER_COLUMNS, "") | {"name": name, "status": status}
        artifacts.append_ledger(ws.ledger, [*list(row.values())[:-1], ref])
    assert artifacts.read_ledger(ws.ledger)["kernel"].tolist() == ["", *[r[2] for r in rows]]
    assert notebook_output(ws, "e", "me/nb", "", local) == ("10", local)
    pulled = ws.submission_dir("e") / "kaggle" / "v3" / "submission.csv"
    pulled.parent.mkdir(parents=True)
    pulled.write_text("id,label\n")
    assert notebook_output(ws, "e", "me/nb", "3", local) == ("3", pulled)
    with pytest.raises(SubmissionError, match="KERNEL='nb': name the notebook as <owner>/"):
        notebook_output(ws, "e", "nb", "3", local)
