"""The decode caches: every image decoded once for all the sizes a call needs (``decode_sizes``:
one DCT-scaled decode per JPEG, shared by the sizes that reach its scale), each size resized
into a uint8 memory map ``(N, S, S, 3)`` shared by every recipe and fold of that size, so epochs
never decode again. Before any decoding the caches' total size is printed and checked against
the free disk.
"""

from __future__ import annotations

import contextlib
import glob
import hashlib
import json
import os
from collections.abc import Callable
from pathlib import Path

import numpy as np

from .. import artifacts
from ..competition.images import REDUCED, ImageError, cores, decode_sizes, parallel
from ..disk import faults, locks, space
from ..errors import CompetitionError

# the decode behind the pixels, in every cache's key: a cache made another way (before issue
# 32: a full decode, then the resize) is rebuilt, never mixed with these pixels
DECODE_KEY = f"decode={REDUCED}"


def _key(rel_paths: list[str], size: int) -> str:
    text = "\n".join(rel_paths) + f"|{size}|{DECODE_KEY}"
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def cached(rel_paths: list[str], size: int, cache_path: Path) -> np.memmap | None:
    """The decode cache of ``rel_paths`` at ``size`` when it exists and is up to date. One whose
    file is not the size its ``.json`` says (truncated by a full disk or a copy) is damaged:
    said in one line and rebuilt. Its pixels carry no checksum (see docs/fault-tolerance.md)."""
    meta_path = cache_path.with_suffix(".json")
    shape = (len(rel_paths), size, size, 3)
    if not (cache_path.is_file() and meta_path.is_file()):
        return None
    try:
        meta = json.loads(meta_path.read_text())
    except (ValueError, UnicodeDecodeError):
        print(f"decode cache {meta_path} is damaged (not JSON); rebuilding it", flush=True)
        return None
    if meta.get("key") != _key(rel_paths, size):
        return None
    want, have = int(np.prod(shape)), cache_path.stat().st_size
    if list(meta.get("shape", [])) != list(shape) or have != want:
        print(
            f"decode cache {cache_path} is damaged ({have:,} bytes, {want:,} expected); "
            "rebuilding it",
            flush=True,
        )
        return None
    return np.memmap(cache_path, dtype=np.uint8, mode="r", shape=shape)


def build_cache(root: Path, rel_paths: list[str], size: int, cache_path: Path) -> np.memmap:
    """``build_caches`` for one list of images at one size."""
    return build_caches(root, {"": rel_paths}, [size], lambda _s, _z: cache_path)[("", size)]


def build_caches(
    root: Path,
    splits: dict[str, list[str]],
    sizes: list[int],
    path_of: Callable[[str, int], Path],
) -> dict[tuple[str, int], np.memmap]:
    """``{(split, size): (N, S, S, 3) uint8}`` for each split's ``rel_paths`` (relative to
    ``root``) at every size, cache ``path_of(split, size)``; up-to-date caches are reused. The
    missing ones' total bytes are printed and refused at once if the disk cannot hold them;
    then each split's files are decoded once for all its missing sizes, on every core."""
    out = {(sp, z): cached(p, z, path_of(sp, z)) for sp, p in splits.items() for z in sizes}
    todo = {sp: [z for z in sizes if out[(sp, z)] is None] for sp in splits}
    _check_disk({path_of(sp, z): len(splits[sp]) * z * z * 3 for sp in todo for z in todo[sp]})
    for split, missing in todo.items():
        if missing:
            paths = {z: path_of(split, z) for z in missing}
            out.update({(split, z): m for z, m in _build(root, splits[split], paths).items()})
    return out


def _check_disk(need: dict[Path, int]) -> None:
    """One line with the caches about to be written; refuse when the disk cannot hold them."""
    if not need:
        return
    first, total = next(iter(need)), sum(need.values())
    free = space.free_bytes(first.parent)
    print(
        f"decode caches to build: {len(need)} ({', '.join(p.name for p in need)}), "
        f"{total / 1e9:.2f} GB in {first.parent}"
        + (f" ({free / 1e9:.2f} GB free)" if free is not None else ""),
        flush=True,
    )
    if free is not None and free < total:
        raise space.DiskFull(
            f"the decode caches need {total:,} bytes in {first.parent} but {free:,} are free; "
            "nothing was decoded: free space, or point CACHE= at a bigger disk (docs/performance.md)"
        )


def _build(root: Path, rel_paths: list[str], paths: dict[int, Path]) -> dict[int, np.memmap]:
    """Build the caches ``{size: path}`` of ``rel_paths`` in one pass over the files. One
    process builds each (a lock beside it; another waits, then reads it); space is reserved
    before the memory maps are filled, so a full disk is one line, not a SIGBUS."""
    for p in paths.values():
        p.parent.mkdir(parents=True, exist_ok=True)
    with contextlib.ExitStack() as held:
        for p in (paths[z] for z in sorted(paths)):  # sorted: two builders never wait on each other
            held.enter_context(
                locks.wait_lock(p.with_name(f".{p.name}.lock"), f"the decode cache {p.name}")
            )
        done = {z: m for z, p in paths.items() if (m := cached(rel_paths, z, p)) is not None}
        left = {z: p for z, p in paths.items() if z not in done}  # built by the one we waited for
        for p in left.values():
            faults.hold_point(f"cache:{p.name}")
            for old in p.parent.glob(f".{glob.escape(p.name)}.*.tmp"):
                old.unlink(missing_ok=True)  # a killed builder's: whoever builds holds the lock
        if left:
            _fill(root, rel_paths, left)
    return {
        z: np.memmap(p, dtype=np.uint8, mode="r", shape=(len(rel_paths), z, z, 3))
        for z, p in paths.items()
    }


def _fill(root: Path, rel_paths: list[str], paths: dict[int, Path]) -> None:
    """Reserve, decode into, and publish the caches ``{size: path}`` (held locks)."""
    tmps = {z: p.with_name(f".{p.name}.{os.getpid()}.tmp") for z, p in paths.items()}
    n, current = len(rel_paths), None
    try:
        outs = {}
        for z, tmp in tmps.items():
            current = paths[z]
            space.reserve_file(tmp, n * z * z * 3, paths[z])
            outs[z] = np.memmap(tmp, dtype=np.uint8, mode="r+", shape=(n, z, z, 3))
        current = None
        desc = f"decode @{','.join(map(str, sorted(paths)))}px"
        decode_into(outs, root, rel_paths, desc)
        for out in outs.values():
            out.flush()
        del outs, out
        for z, tmp in tmps.items():
            os.replace(tmp, paths[z])
    except BaseException as e:  # a bad image, a full disk or Ctrl-C: no partial cache
        for tmp in tmps.values():
            tmp.unlink(missing_ok=True)
        if space.is_disk_full(e):
            where = current or next(iter(paths.values()))
            raise space.disk_full(where, n * max(paths) ** 2 * 3) from None
        raise
    for z, p in paths.items():
        meta = {"key": _key(rel_paths, z), "shape": [n, z, z, 3]}
        artifacts.atomic_write_text(p.with_suffix(".json"), json.dumps(meta))
        print(f"decoded {n} images @{z}px into {p}", flush=True)


def decode_into(outs: dict[int, np.ndarray], root: Path, rel_paths: list[str], desc: str) -> None:
    """Fill every ``outs[S] (N, S, S, 3)`` from one ``decode_sizes`` per image, on every
    core; the first bad image stops every pending decode."""
    sizes = sorted(outs)

    def decode(i: int) -> None:
        for z, img in decode_sizes(root / rel_paths[i], sizes).items():
            outs[z][i] = img

    try:
        for _ in parallel(decode, list(range(len(rel_paths))), desc, cores()):
            pass
    except ImageError as e:
        raise CompetitionError(f"{e}; `make check COMP={root}` lists every bad image") from None


class Joined:
    """Two ``(N, S, S, 3) uint8`` caches read as one (train rows, then test rows): what a
    student with pseudo-labels trains on. Indexed by an array of rows, like a memmap."""

    def __init__(self, first: np.ndarray, second: np.ndarray) -> None:
        self.first, self.second = first, second
        self.shape = (len(first) + len(second), *first.shape[1:])

    def __len__(self) -> int:
        return self.shape[0]

    def __getitem__(self, rows) -> np.ndarray:
        rows = np.asarray(rows)
        out = np.empty((len(rows), *self.shape[1:]), dtype=np.uint8)
        head = rows < len(self.first)
        out[head] = self.first[rows[head]]
        out[~head] = self.second[rows[~head] - len(self.first)]
        return out
