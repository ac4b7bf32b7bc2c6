"""Two ``make train`` on one competition at once: no fold is trained twice, a cache
is built once while the other process waits, a lock left by a killed process is taken over,
and every artifact reads back equal to one uninterrupted run's.

Deterministic without sleeps: ``PIPELINE_HOLD_AT`` parks the first process at a named point
while it holds its lock; it says so through a FIFO and goes on when the test writes to another.
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import threading
from pathlib import Path

import pytest

from pipeline.cli import main
from pipeline.disk import locks
from pipeline.tools.soak import check_outputs

from .fakes import run_cli, toy_roots, toy_workspace

TIMEOUT = 240


@pytest.fixture(scope="module")
def reference(tmp_path_factory) -> tuple[Path, Path]:
    """(a trained workspace, an untrained copy of its template)."""
    template = toy_workspace(tmp_path_factory.mktemp("template"))
    ref = tmp_path_factory.mktemp("ref") / "w"
    shutil.copytree(template, ref)
    assert main(["train", *toy_roots(ref), "--runs", "r"]) == 0
    return ref, template


class Hold:
    """The test's end of ``PIPELINE_HOLD_AT``: FIFOs ``held`` and ``go`` in ``where``."""

    def __init__(self, where: Path, point: str) -> None:
        where.mkdir(parents=True, exist_ok=True)
        os.mkfifo(where / "held")
        os.mkfifo(where / "go")
        self.where = where
        self.env = {"PIPELINE_HOLD_AT": point, "PIPELINE_HOLD_DIR": str(where)}

    def reached(self, proc) -> str:
        """Block until the process (a Popen, or a ``First`` thread) is parked at the point
        (returns its name), failing if it ends first."""
        got: list[str] = []
        reader = threading.Thread(target=lambda: got.append((self.where / "held").read_text()))
        reader.daemon = True
        reader.start()
        while reader.is_alive():
            reader.join(timeout=1.0)
            if proc.poll() is not None and reader.is_alive():
                with open(self.where / "held", "w"):  # unblock our reader, then fail
                    pass
                pytest.fail(f"ended ({proc.poll()}) before its hold point")
        return got[0].strip()

    def release(self) -> None:
        (self.where / "go").write_text("go")


class First:
    """``make train`` in a thread of this process (no second start-up of Python and torch):
    the first train, which parks at a hold point; ``poll()`` as a Popen's."""

    def __init__(self, argv: list[str]) -> None:
        self.rc: list[int] = []
        self.thread = threading.Thread(target=lambda: self.rc.append(main(argv)), daemon=True)
        self.thread.start()

    def poll(self) -> int | None:
        return None if self.thread.is_alive() else (self.rc or [-1])[0]

    def wait(self) -> int:
        self.thread.join(timeout=TIMEOUT)
        assert not self.thread.is_alive(), "the first train did not end"
        return self.rc[0]


def _popen(root: Path, env: dict, *more: str) -> subprocess.Popen:
    """The second ``make train``, a new process, not parked unless ``env`` says so."""
    mine = {k: None for k in os.environ if k.startswith("PIPELINE_HOLD_")}
    argv = ["train", *toy_roots(root), "--runs", "r", *more]
    return run_cli(*argv, cwd=root, env={**mine, **env}, wait=False)


def _await_line(proc: subprocess.Popen, text: str) -> str:
    """Read ``proc``'s stderr until a line holds ``text`` (its own line: no sleep); what was
    read up to there."""
    seen = ""
    while text not in seen:
        line = proc.stderr.readline()
        assert line, f"the second train ended without waiting: {proc.communicate()}"
        seen += line
    return seen


def _epochs(out: str, fold: int) -> int:
    return sum(f"r fold {fold} epoch " in line for line in out.splitlines())


@pytest.mark.slow
def test_a_held_fold_is_skipped_and_named_and_a_dead_holder_is_taken_over(
    reference, tmp_path, capsys
):
    ref, template = reference
    root = tmp_path / "w"
    shutil.copytree(template, root)
    hold = Hold(tmp_path / "hold", "fold:r/fold0")
    first = _popen(root, hold.env)
    assert hold.reached(first) == "fold:r/fold0"  # parked holding fold 0's lock

    capsys.readouterr()  # the second train in this process: flock sees another open file
    assert main(["train", *toy_roots(root), "--runs", "r"]) == 2
    second = capsys.readouterr()
    err = second.err.strip().splitlines()[-1]
    assert err.startswith("error: 1 of 2 train jobs skipped, held by another live process: ")
    assert f"r fold 0 is being trained by pid {first.pid} on " in err and "(make train)" in err
    assert "re-run the same command once it has finished" in err
    assert _epochs(second.out, 0) == 0 and _epochs(second.out, 1) == 2
    fold0 = root / "models/toy/r/fold0"
    assert not (fold0 / "done.json").exists() and not (root / "models/toy/r/oof.npz").exists()

    first.kill()  # the holder dies holding the lock: the kernel drops it
    first.communicate(timeout=TIMEOUT)
    capsys.readouterr()
    assert main(["train", *toy_roots(root), "--runs", "r"]) == 0  # takes fold 0 over
    out = capsys.readouterr().out
    assert _epochs(out, 0) == 2 and _epochs(out, 1) == 0
    assert check_outputs(root, ref, "toy", ["r"]) == []


@pytest.mark.slow
def test_a_second_train_waits_for_the_cache_being_built_and_no_fold_trains_twice(
    reference, tmp_path, monkeypatch, capsys
):
    ref, template = reference
    root = tmp_path / "w"
    shutil.copytree(template, root)
    hold = Hold(tmp_path / "hold", "cache:train_16.u8")
    for k, v in hold.env.items():
        monkeypatch.setenv(k, v)
    capsys.readouterr()
    first = First(["train", *toy_roots(root), "--runs", "r"])
    assert hold.reached(first) == "cache:train_16.u8"  # holding the decode cache's lock
    second = _popen(root, {})
    waiting = _await_line(second, "waiting for the decode cache train_16.u8")
    assert f"pid {os.getpid()} on " in waiting
    hold.release()
    out2, err2 = second.communicate(timeout=TIMEOUT)
    rcs = [first.wait(), second.returncode]
    mine = capsys.readouterr()
    outs = [(mine.out, mine.err), (out2, err2)]
    out = [o for o, _ in outs]
    assert set(rcs) <= {0, 2}, (rcs, mine.err[-1500:], err2[-1500:])
    for rc, (_, err) in zip(rcs, outs, strict=True):
        if rc == 2:  # it skipped what the other one held, and said so
            assert "held by another live process" in err.strip().splitlines()[-1], err[-1500:]
    cache = root / "models/toy/.cache/train_16.u8"
    assert f"into {cache}" in out[0] and f"into {cache}" not in out[1]  # built once
    for fold in (0, 1):  # each fold's epochs ran once, in one process or the other
        assert _epochs(out[0], fold) + _epochs(out[1], fold) == 2, (fold, out)
    assert main(["train", *toy_roots(root), "--runs", "r"]) == 0  # assembles, if neither could
    assert check_outputs(root, ref, "toy", ["r"]) == []


def test_locks_say_who_holds_them_and_wait(tmp_path):
    path = tmp_path / "x.lock"
    got = locks.try_lock(path, "testing")
    assert got is not None
    assert f"pid {os.getpid()} on " in locks.owner(path) and "(testing)" in locks.owner(path)
    # another open file description of this process conflicts like another process would
    assert locks.try_lock(path, "again") is None
    got.release()
    with locks.try_lock(path, "again") as again:
        assert again is not None
    child = subprocess.Popen(
        [
            sys.executable,
            "-c",
            "import fcntl,os,sys; fd=os.open(sys.argv[1], os.O_RDWR); "
            "fcntl.flock(fd, fcntl.LOCK_EX); print('locked', flush=True); sys.stdin.read()",
            str(path),
        ],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )
    assert child.stdout.readline().strip() == "locked"
    assert locks.try_lock(path, "x") is None
    child.send_signal(signal.SIGKILL)  # dies holding it
    child.wait()
    with locks.wait_lock(path, "x") as taken:  # taken over at once
        assert taken.fd >= 0


@pytest.mark.slow
def test_a_second_budgeted_train_waits_for_the_plan_and_trains_by_it(
    reference, tmp_path, monkeypatch, capsys
):
    """The BUDGET probe runs under a lock beside plan.toml: the second train waits for the
    first one's plan, reads it instead of probing again, and no fold's epochs run twice."""
    import pandas as pd

    _, template = reference
    root = tmp_path / "w"
    shutil.copytree(template, root)
    hold = Hold(tmp_path / "hold", "plan")
    for k, v in hold.env.items():
        monkeypatch.setenv(k, v)
    capsys.readouterr()
    first = First(["train", *toy_roots(root), "--runs", "r", "--budget", "10m"])
    assert hold.reached(first) == "plan"
    second = _popen(root, {}, "--budget", "10m")
    waiting = _await_line(second, "waiting for the time-budget probe writing")
    assert f"pid {os.getpid()} on " in waiting  # the first train, this process, holds it
    hold.release()
    out2, err2 = second.communicate(timeout=TIMEOUT)
    rcs = {first.wait(), second.returncode}
    mine = capsys.readouterr()
    assert rcs <= {0, 2}, (rcs, mine.err[-1500:], err2[-1500:])
    out = [mine.out, out2]
    plan = root / "models/toy/plan.toml"
    assert "plan: probing r" in out[0] and "plan: probing r" not in out[1]
    assert f"plan: {plan} (BUDGET=10m" in out[1]
    for fold in (0, 1):
        epochs = len(pd.read_csv(root / f"models/toy/r/fold{fold}/metrics.csv"))
        assert _epochs(out[0], fold) + _epochs(out[1], fold) == epochs, (fold, out)
