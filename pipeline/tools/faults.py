"""Start a pipeline command and kill it: the mechanics under ``make soak`` (see soak.py).

Launchers: "make" is the real ``make train`` in a session of its own. Python needs 5-10 s to
import torch and timm on a shared 2-core CPU, longer than a tiny recipe trains, so random moments
of a make run fall mostly in the imports; "fork" runs the same CLI entry
(``pipeline.cli.main``) in a process forked from a server that imported the pipeline once,
so its random moments fall in the work. Kill moments: "random" SIGKILLs the whole process
group a delay after the start; "before:<file>" / "after:<file>" set ``PIPELINE_KILL_AT`` (see
``atomic.atomic_write``): the process SIGKILLs itself just before / after that artifact is
renamed into place. The main thread's stack, written by a helper thread 50 ms before a random
kill, tells where the process was (``PHASES``).
"""

from __future__ import annotations

import contextlib
import multiprocessing as mp
import os
import re
import shutil
import signal
import subprocess
import sys
import threading
import time
from dataclasses import dataclass
from pathlib import Path

from ..errors import PipelineError

REPO = Path(__file__).resolve().parents[2]
PHASES = (  # the first of these functions found in the stack dump names the phase
    ("assemble_run", "assembly"),
    ("save_torch", "checkpoint write"),
    ("finish_fold", "fold predict+outputs"),
    ("train_one_epoch", "epoch: train"),
    ("run_epochs", "epoch: validate"),
    ("setup_fold", "fold setup"),
    ("load_resume", "fold setup"),
)
DUMP_LEAD = 0.05  # s between the stack dump and the kill


@dataclass
class Attempt:
    how: str  # "make" or "fork"
    kill: str  # "random", "before:<file>", "after:<file>", or "" to run to the end
    log: Path
    delay: float = 0.0  # s after the start, for "random"
    rc: int | None = None  # exit status; -9: SIGKILLed
    killed: bool = False
    phase: str = ""  # where it was when killed
    seconds: float = 0.0


@dataclass
class Trainer:
    """Starts pipeline commands for ``runs`` on the competition folder ``comp``."""

    comp: Path
    runs: list[str]
    work: Path  # holds hooks/sitecustomize.py, which arms the stack dump in make's python
    overrides: str = ""
    device: str = "cpu"
    jobs: int = 1  # JOBS: local worker processes per train (the reference runs with the same)
    warm_seconds: float = 0.0  # the fork server's imports: what a make run pays first
    _ctx: object = None

    def start(self, how: str, cwd: Path, env: dict[str, str], log: Path):
        """``train`` through make (Popen) or the fork server (multiprocessing.Process)."""
        args = ["--comp", str(self.comp), "--runs", " ".join(self.runs), "--folds", ""]
        args += ["--set", self.overrides, "--device", self.device, "--jobs", str(self.jobs)]
        if how == "fork" or not shutil.which("make"):
            return self.fork(["train", *args], cwd, env, log)
        venv, mk = Path(sys.prefix), ["MAKEFLAGS", "MFLAGS", "MAKELEVEL"]
        cmd = ["make", "-f", str(REPO / "Makefile"), "-o", f"{venv}/.installed", "train"]
        cmd += [f"VENV={venv}", f"PY={sys.executable}", f"COMP={self.comp}"]
        cmd += [f"RUNS={' '.join(self.runs)}", f"SET={self.overrides}", f"DEVICE={self.device}"]
        cmd += [f"JOBS={self.jobs}"]
        full = {k: v for k, v in os.environ.items() if k not in mk} | env
        path = [str(self.work / "hooks"), str(REPO), os.environ.get("PYTHONPATH", "")]
        full["PYTHONPATH"] = os.pathsep.join(p for p in path if p)
        with open(log, "ab") as f:  # a session of its own: the kill takes make and its python
            return subprocess.Popen(
                cmd, cwd=cwd, env=full, stdout=f, stderr=subprocess.STDOUT, start_new_session=True
            )

    def fork(self, argv: list[str], cwd: Path, env: dict[str, str], log: Path):
        if self._ctx is None:  # the server imports the pipeline before its first fork
            self._ctx, t0 = mp.get_context("forkserver"), time.time()
            self._ctx.set_forkserver_preload(
                ["pipeline.train.stage", "pipeline.folds.stage", "pipeline.cli"]
            )
            warm = self._ctx.Process(target=os.getpid)
            warm.start()
            warm.join()
            self.warm_seconds = time.time() - t0
        proc = self._ctx.Process(target=_child, args=(argv, str(cwd), env, str(log)))
        proc.start()
        return proc


def _child(argv: list[str], cwd: str, env: dict[str, str], log: str) -> None:
    """A fork-server child: the CLI in a process group of its own, output to ``log``."""
    os.setsid()
    os.chdir(cwd)
    os.environ.update(env)
    fd = os.open(log, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
    os.dup2(fd, 1)
    os.dup2(fd, 2)
    sys.stdout.reconfigure(line_buffering=True)
    arm_dump()
    from tqdm import tqdm

    from ..cli import main

    tqdm.set_lock(threading.RLock())  # its default lock is a semaphore that a kill would leak
    sys.exit(main(argv))


def arm_dump() -> None:
    """At the wall time in ``PIPELINE_DUMP_AT`` (if set), write the main thread's function
    names to stderr. A Python thread reads the frames under the GIL: faulthandler's watchdog
    reads them without it, and crashed a soak run with SIGSEGV."""
    if not (at := os.environ.get("PIPELINE_DUMP_AT")):
        return
    main = threading.main_thread().ident

    def dump() -> None:
        time.sleep(max(0.0, float(at) - time.time()))
        frame, names = sys._current_frames().get(main), []
        while frame is not None:
            names.append(frame.f_code.co_name)
            frame = frame.f_back
        os.write(2, f"\nstack at kill: {' '.join(names)}\n".encode())

    threading.Thread(target=dump, daemon=True).start()


def run_attempt(tr: Trainer, cwd: Path, a: Attempt, timeout: float = 900.0) -> Attempt:
    """Start, kill as ``a.kill`` says (or wait for the end), and record how it ended. Every
    attempt with a kill also dies just before the last assembly write at the latest, so that
    none ends the run whatever the machine's speed: the final ``make train`` does."""
    points = [a.kill.format(run=tr.runs[-1])] if ":" in a.kill else []
    points += [f"before:{tr.runs[-1]}/oof.npz"] if a.kill else []
    env = {"PYTHONUNBUFFERED": "1", "PIPELINE_KILL_AT": ",".join(points)}
    if tr.jobs > 1:  # a worker reaching a point takes the driver and the other workers with
        env["PIPELINE_KILL_GROUP"] = "1"  # it, as a random kill of the process group does
    t0 = time.time()
    if a.kill == "random":
        env["PIPELINE_DUMP_AT"] = repr(t0 + a.delay - DUMP_LEAD)
    jobs_logs = {p: p.stat().st_size for p in cwd.rglob("logs/fold*.log")}
    proc = tr.start(a.how, cwd, env, a.log)
    a.rc = wait_exit(proc, t0 + (a.delay if a.kill == "random" else timeout))
    if a.rc is None:
        _kill_group(proc.pid)
        a.rc = wait_exit(proc, time.time() + 60)
        if a.kill != "random":
            raise PipelineError(f"train did not end within {timeout:.0f} s; see {a.log}")
    a.seconds = time.time() - t0
    text = a.log.read_text(errors="replace") if a.log.is_file() else ""
    for p in cwd.rglob("logs/fold*.log"):  # JOBS=N: a worker's kill point is in its job log
        with open(p, "rb") as f:
            f.seek(jobs_logs.get(p, 0))
            text += f.read().decode("utf-8", "replace")
    hook = "PIPELINE_KILL_AT: SIGKILL" in text  # make exits 2 when its python killed itself
    a.killed = a.rc == -signal.SIGKILL or (a.how == "make" and a.rc == 2 and hook)
    if a.killed:
        a.phase = phase_of(text)
    return a


def wait_exit(proc, until: float) -> int | None:
    """Exit status of a Popen or multiprocessing.Process once it ends; None at ``until``."""
    while (rc := proc.poll() if hasattr(proc, "poll") else proc.exitcode) is None:
        if (left := until - time.time()) <= 0:
            return None
        time.sleep(min(0.005, left))
    return rc


def _kill_group(pid: int) -> None:
    try:
        os.killpg(pid, signal.SIGKILL)  # make, its shell and python; or a fork child's group
    except ProcessLookupError:  # a fork child that has not made its group yet, or is gone
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)


def phase_of(log_text: str) -> str:
    """Where a killed attempt was: the PIPELINE_KILL_AT point that fired, else the phase that
    the stack dump names; neither: "startup"."""
    if hit := re.findall(r"^PIPELINE_KILL_AT: SIGKILL at (\S+)$", log_text, re.M):
        return hit[-1]
    names = set(" ".join(re.findall(r"^stack at kill: (.*)$", log_text, re.M)).split())
    return next((phase for fn, phase in PHASES if fn in names), "startup")
