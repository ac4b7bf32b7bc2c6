"""The fault hooks of the disk-safety code, one per kind of fault, for the tests and ``make soak``
only: each reads its environment variable at the point it guards and does nothing when unset.

- ``fail_point``: ``PIPELINE_FAIL_AT`` raises ``OSError(ENOSPC)`` where an artifact is written or
  a cache reserves its space (``atomic``, ``space``);
- ``kill_point``: ``PIPELINE_KILL_AT`` SIGKILLs the process just before / after an artifact is
  renamed into place (``atomic``);
- ``hold_point``: ``PIPELINE_HOLD_AT`` parks a process at a named point while it holds a lock
  (``locks`` and the lock holders), so a test runs a second process against it without sleeps.
"""

from __future__ import annotations

import errno
import os
import signal
from pathlib import Path


def fail_point(kind: str, path: str | Path) -> None:
    """Fault injection for tests only: ``PIPELINE_FAIL_AT=<kind>:<file>[,...]`` (``<file>`` a
    name or ``<folder>/<name>``) raises ``OSError(ENOSPC)`` at the first matching write point:
    ``enospc`` where an artifact is written (``atomic.atomic_write``), ``fallocate`` where a
    memory-mapped cache reserves its space (``reserve_file``). Unset, it does nothing."""
    points = os.environ.get("PIPELINE_FAIL_AT")
    if not points:
        return
    p = Path(path)
    want = points.split(",")
    if f"{kind}:{p.name}" in want or f"{kind}:{p.parent.name}/{p.name}" in want:
        raise OSError(errno.ENOSPC, f"No space left on device (PIPELINE_FAIL_AT={kind})", str(p))


def kill_point(when: str, path: Path) -> None:
    """Fault injection for tests/test_fault.py and ``make soak`` (pipeline.tools.soak) only:
    ``PIPELINE_KILL_AT=before:<file>[,after:<file>...]``, ``<file>`` an artifact's name or
    ``<folder>/<name>``, SIGKILLs this process just before (after) the first of them reached is
    renamed into place: moments a random kill rarely hits. With ``PIPELINE_KILL_ONCE=<folder>``
    each point fires once only (a marker file in that folder remembers it), so a retried job
    gets past it. With ``PIPELINE_KILL_GROUP=1`` the whole process group dies (a ``JOBS=N``
    train's driver and workers: ``make soak JOBS=N``). Unset, it does nothing."""
    points = os.environ.get("PIPELINE_KILL_AT", "").split(",")
    for hit in (f"{when}:{path.name}", f"{when}:{path.parent.name}/{path.name}"):
        if hit in points:
            if once := os.environ.get("PIPELINE_KILL_ONCE"):
                try:  # O_EXCL: the first process to reach the point takes it
                    os.close(os.open(Path(once) / hit.replace("/", "_"), os.O_CREAT | os.O_EXCL))
                except FileExistsError:
                    continue
            os.write(2, f"\nPIPELINE_KILL_AT: SIGKILL at {hit}\n".encode())
            if os.environ.get("PIPELINE_KILL_GROUP"):  # the driver and its JOBS workers too
                os.killpg(os.getpgrp(), signal.SIGKILL)
            os.kill(os.getpid(), signal.SIGKILL)


def hold_point(name: str) -> None:
    """Tests only: with ``PIPELINE_HOLD_AT=<name>[,...]`` and ``PIPELINE_HOLD_DIR=<dir>`` (two
    FIFOs, ``held`` and ``go``), a process reaching ``<name>`` writes the name to ``held`` (the
    test's read returns: the process is parked here, holding its lock) and waits until the test
    writes to ``go``. Unset, it does nothing."""
    if name not in os.environ.get("PIPELINE_HOLD_AT", "").split(","):
        return
    where = Path(os.environ["PIPELINE_HOLD_DIR"])
    with open(where / "held", "w") as f:
        f.write(name + "\n")
    with open(where / "go") as f:
        f.read()
