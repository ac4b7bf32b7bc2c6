"""A full disk and a damaged file as one line each, never a traceback or a half-written file.

- ``DiskFull``: raised instead of ``OSError(ENOSPC)`` by every artifact write (``atomic``) and
  every memory-mapped cache (``reserve_file``), naming the file, the bytes it needs where known and
  the bytes free; the CLI prints it as one line. A re-run after space is freed continues where
  the run stopped (each artifact is written whole or not at all).
- ``reserve_file``: ``posix_fallocate`` before a cache is filled through ``np.memmap``: writing into
  a sparse mapping on a full disk is a SIGBUS, not an ``OSError``, so the blocks are taken first.
- ``PIPELINE_FAIL_AT`` (``faults.fail_point``): the fault injection the tests use to reach every
  write point.
"""

from __future__ import annotations

import errno
import os
import shutil
from pathlib import Path

from ..errors import PipelineError
from .faults import fail_point

# the errors that mean "no space": a full disk, a full quota, a file over the size limit
NO_SPACE = (errno.ENOSPC, errno.EDQUOT, errno.EFBIG)


class DiskFull(PipelineError):
    """A write did not fit on the disk; nothing partial was left behind."""


def free_bytes(path: str | Path) -> int | None:
    """Free bytes on the filesystem of ``path`` (its nearest existing folder), or None."""
    p = Path(path)
    while not p.exists() and p != p.parent:
        p = p.parent
    try:
        return shutil.disk_usage(p).free
    except OSError:
        return None


def disk_full(path: str | Path, needed: int | None = None) -> DiskFull:
    """The one-line error for ``path`` not fitting: the bytes it needs where known, the free
    bytes, and the fix."""
    need = f"needs {needed:,} bytes, " if needed is not None else ""
    free = free_bytes(path)
    have = f"{free:,} bytes free" if free is not None else "free space unknown"
    return DiskFull(
        f"disk full writing {path} ({need}{have}); nothing partial was kept: free space (or "
        "point MODELS= at a bigger disk), then re-run the same command to continue"
    )


def is_disk_full(e: BaseException) -> bool:
    return isinstance(e, OSError) and e.errno in NO_SPACE


def reserve_file(path: str | Path, nbytes: int, name: str | Path | None = None) -> None:
    """Allocate ``nbytes`` of the file ``path`` (created if absent) now, so filling its memory
    map later cannot meet a full disk; on refusal the file is removed and ``DiskFull`` names
    ``name`` (the cache it becomes when ``path`` is its temp file). On a filesystem without
    ``fallocate`` (glibc emulates it where it can) the file is only extended, sparse, as before."""
    name = name or path
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o666)
    try:
        fail_point("fallocate", name)
        if nbytes > 0:
            os.posix_fallocate(fd, 0, nbytes)
    except OSError as e:
        if is_disk_full(e):
            os.close(fd)
            Path(path).unlink(missing_ok=True)
            raise disk_full(name, nbytes) from None
        if e.errno not in (errno.EOPNOTSUPP, errno.EINVAL, errno.ENOSYS):
            os.close(fd)
            raise
        if os.fstat(fd).st_size < nbytes:  # no fallocate here: at least the size it maps
            os.ftruncate(fd, nbytes)
    os.close(fd)
