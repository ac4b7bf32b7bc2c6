"""Atomic file writes: a temp file in the same folder, fsync, then ``os.replace``, so a killed
process never leaves a half-written file; temp files of writers that died are removed by the
next write. ``artifacts`` writes every artifact through these."""

from __future__ import annotations

import glob
import hashlib
import io
import os
import socket
import tempfile
from collections.abc import Callable
from pathlib import Path

from .faults import fail_point, kill_point
from .space import disk_full, is_disk_full

_UMASK = os.umask(0)
os.umask(_UMASK)
_HOST = socket.gethostname()


def atomic_write(
    path: str | Path, write: Callable[[io.BufferedWriter], None], size: int | None = None
) -> Path:
    """Call ``write(fileobj)`` on a temp file beside ``path``, fsync, then rename over it. A
    full disk is ``space.DiskFull`` naming ``path`` and ``size`` (the bytes, where known),
    with the temp file removed and the old ``path`` (if any) untouched."""
    path = Path(path)
    tmp = None
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        _remove_stale_temps(path)
        owner = f"{os.getpid()}@{_HOST}"  # lets a later write tell a dead writer's temp file
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.{owner}.", suffix=".tmp")
        with os.fdopen(fd, "wb") as f:
            fail_point("enospc", path)
            write(f)
            f.flush()
            os.fsync(f.fileno())
        os.chmod(tmp, 0o666 & ~_UMASK)  # mkstemp makes 0600; artifacts are ordinary files
        kill_point("before", path)
        os.replace(tmp, path)
    except BaseException as e:
        if tmp is not None:
            Path(tmp).unlink(missing_ok=True)
        if is_disk_full(e):
            raise disk_full(path, size) from None
        raise
    kill_point("after", path)
    return path


def _remove_stale_temps(path: Path) -> None:
    """Delete the temp files of ``path`` left by writers on this host that are gone: a SIGKILL
    skips the cleanup above, and the re-run rewrites every artifact a kill interrupted."""
    head = f".{path.name}."
    for tmp in path.parent.glob(f"{glob.escape(head)}*@{glob.escape(_HOST)}.*.tmp"):
        pid = tmp.name[len(head) :].split("@", 1)[0]
        if pid.isdigit() and not _pid_alive(int(pid)):
            tmp.unlink(missing_ok=True)


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    try:  # a killed writer not yet reaped by its parent is a zombie: gone as well
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] != "Z"
    except (OSError, IndexError):
        return True


def atomic_write_text(path: str | Path, text: str) -> Path:
    return atomic_write_bytes(path, text.encode("utf-8"))


def atomic_write_bytes(path: str | Path, data: bytes) -> Path:
    return atomic_write(path, lambda f: f.write(data), len(data))


def file_hash(path: str | Path) -> str:
    """Short sha256 of a file's bytes; ties logits to the folds file they were trained on."""
    return hashlib.sha256(Path(path).read_bytes()).hexdigest()[:16]
