"""The decode cache: every image decoded once, resized to a recipe's size, into a uint8 memory
map ``(N, S, S, 3)`` shared by every recipe and fold of that size, so epochs never decode again.
"""

from __future__ import annotations

import glob
import hashlib
import json
import os
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
from tqdm import tqdm

from .. import artifacts, locks, storage
from ..competition.images import ImageError, load_rgb
from ..errors import CompetitionError
from ..model.inputs import resize_square


def _key(rel_paths: list[str], size: int) -> str:
    return hashlib.sha256(("\n".join(rel_paths) + f"|{size}").encode()).hexdigest()[:16]


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


def decode_sample(root: Path, rel_paths: list[str], size: int) -> np.ndarray:
    """The first images of ``rel_paths`` decoded into memory as a cache build would (threads,
    resize), without writing a cache: what the time-budget probe times and trains on."""
    out = np.empty((len(rel_paths), size, size, 3), dtype=np.uint8)
    _decode_into(out, root, rel_paths, size, f"probe decode @{size}px")
    return out


def build_cache(root: Path, rel_paths: list[str], size: int, cache_path: Path) -> np.memmap:
    """Decode ``rel_paths`` (relative to ``root``) into ``cache_path``; reuse it if up to date.
    One process builds it (a lock beside it; another waits, then reads it); its space is
    reserved before the memory map is filled, so a full disk is one line, not a SIGBUS."""
    if (hit := cached(rel_paths, size, cache_path)) is not None:
        return hit
    cache_path.parent.mkdir(parents=True, exist_ok=True)
    lock = cache_path.with_name(f".{cache_path.name}.lock")
    with locks.wait_lock(lock, f"the decode cache {cache_path.name}"):
        if (hit := cached(rel_paths, size, cache_path)) is not None:
            return hit  # built by the process we waited for
        locks.hold_point(f"cache:{cache_path.name}")
        for old in cache_path.parent.glob(f".{glob.escape(cache_path.name)}.*.tmp"):
            old.unlink(missing_ok=True)  # a killed builder's: whoever builds holds the lock
        shape = (len(rel_paths), size, size, 3)
        tmp = cache_path.with_name(f".{cache_path.name}.{os.getpid()}.tmp")
        try:
            storage.reserve_file(tmp, int(np.prod(shape)), cache_path)
            out = np.memmap(tmp, dtype=np.uint8, mode="r+", shape=shape)
            _decode_into(out, root, rel_paths, size, f"decode {cache_path.stem} @{size}px")
            out.flush()
            del out
            os.replace(tmp, cache_path)
        except BaseException as e:  # a bad image, a full disk or Ctrl-C: no partial cache
            tmp.unlink(missing_ok=True)
            if storage.is_disk_full(e):
                raise storage.disk_full(cache_path, int(np.prod(shape))) from None
            raise
        meta = {"key": _key(rel_paths, size), "shape": list(shape)}
        artifacts.atomic_write_text(cache_path.with_suffix(".json"), json.dumps(meta))
        print(f"decoded {len(rel_paths)} images @{size}px into {cache_path}", flush=True)
    return np.memmap(cache_path, dtype=np.uint8, mode="r", shape=shape)


def _decode_into(out: np.ndarray, root: Path, rel_paths: list[str], size: int, desc: str) -> None:
    """Fill ``out (N, S, S, 3)``; the first bad image stops every pending decode."""

    def decode(i: int) -> None:
        out[i] = resize_square(load_rgb(root / rel_paths[i]), size)

    pool = ThreadPoolExecutor(max_workers=4)
    try:
        jobs = pool.map(decode, range(len(rel_paths)))
        list(tqdm(jobs, total=len(rel_paths), desc=desc, leave=False, disable=None))
    except ImageError as e:
        raise CompetitionError(f"{e}; `make check COMP={root}` lists every bad image") from None
    finally:
        pool.shutdown(wait=True, cancel_futures=True)


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
