"""Locks between processes on one machine: two ``make train`` on one competition (a second
terminal, a re-run while a Ray job still runs) never write what the other is writing.

``fcntl.flock`` on a small lock file beside what it guards: the kernel drops a lock when its
process dies (SIGKILL, power cut of a container), so a lock left by a dead process is taken over
by the next one without any cleanup. The file holds its owner (pid, host, since when, what) for
the message of a process that finds it held. Held per (run, fold) by whoever trains that fold
(``try_lock``: another process skips it and names it), and per cache build, plan probe and
teacher's targets (``wait_lock``: another process waits, then reads what was built).

``flock`` holds between processes of one machine (and between NFS v4 clients, where Linux
emulates it with byte-range locks); across the nodes of other shared filesystems it does not:
see docs/scale-out.md.

``PIPELINE_HOLD_AT`` (tests only, ``faults.hold_point``) parks a process at a named point while it holds a lock, so a
test runs a second process against it deterministically, without sleeps.
"""

from __future__ import annotations

import fcntl
import os
import socket
import sys
import time
from pathlib import Path

from .faults import hold_point


class Lock:
    """A held lock; ``release()`` (or leaving the ``with`` block) drops it."""

    def __init__(self, path: Path, fd: int) -> None:
        self.path, self.fd = path, fd

    def release(self) -> None:
        if self.fd >= 0:
            os.close(self.fd)  # closing the descriptor drops the flock
            self.fd = -1

    def __enter__(self) -> Lock:
        return self

    def __exit__(self, *exc) -> None:
        self.release()


def _open(path: Path) -> int:
    path.parent.mkdir(parents=True, exist_ok=True)
    return os.open(path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o666)


def _claim(path: Path, fd: int, what: str) -> Lock:
    """Record this process as the owner (for the message of a process that finds it held)."""
    who = f"pid {os.getpid()} on {socket.gethostname()} since {time.strftime('%H:%M:%S')} ({what})"
    os.ftruncate(fd, 0)
    os.pwrite(fd, who.encode(), 0)
    return Lock(path, fd)


def owner(path: str | Path) -> str:
    """Who holds ``path``'s lock, as its owner wrote it ("another process" if unknown)."""
    try:
        text = Path(path).read_text(errors="replace").strip()
    except OSError:
        text = ""
    return text or "another process"


def try_lock(path: str | Path, what: str) -> Lock | None:
    """The lock at ``path`` if no live process holds it, else None (right away)."""
    path = Path(path)
    fd = _open(path)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        os.close(fd)
        return None
    except BaseException:
        os.close(fd)
        raise
    return _claim(path, fd, what)


def wait_lock(path: str | Path, what: str) -> Lock:
    """The lock at ``path``; while another process holds it, say so once and wait."""
    path = Path(path)
    if (got := try_lock(path, what)) is not None:
        return got
    print(f"waiting for {what}: {owner(path)} holds {path}", file=sys.stderr, flush=True)
    hold_point(f"wait:{path.name}")  # tests: parked here, this process has found it held
    fd = _open(path)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
    except BaseException:
        os.close(fd)
        raise
    return _claim(path, fd, what)
