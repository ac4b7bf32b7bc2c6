"""The decode cache: every image decoded once, resized to a recipe's size, into a uint8 memory
map ``(N, S, S, 3)`` shared by every recipe and fold of that size, so epochs never decode again.
"""

from __future__ import annotations

import hashlib
import json
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
from tqdm import tqdm

from .. import artifacts
from ..competition.images import ImageError, load_rgb
from ..errors import CompetitionError
from ..model.inputs import resize_square


def cached(rel_paths: list[str], size: int, cache_path: Path) -> np.memmap | None:
    """The decode cache of ``rel_paths`` at ``size`` when it exists and is up to date."""
    key = hashlib.sha256(("\n".join(rel_paths) + f"|{size}").encode()).hexdigest()[:16]
    meta_path = cache_path.with_suffix(".json")
    shape = (len(rel_paths), size, size, 3)
    if cache_path.is_file() and meta_path.is_file():
        if json.loads(meta_path.read_text()).get("key") == key:
            return np.memmap(cache_path, dtype=np.uint8, mode="r", shape=shape)
    return None


def decode_sample(root: Path, rel_paths: list[str], size: int) -> np.ndarray:
    """The first images of ``rel_paths`` decoded into memory as a cache build would (threads,
    resize), without writing a cache: what the time-budget probe times and trains on."""
    out = np.empty((len(rel_paths), size, size, 3), dtype=np.uint8)
    _decode_into(out, root, rel_paths, size, f"probe decode @{size}px")
    return out


def build_cache(root: Path, rel_paths: list[str], size: int, cache_path: Path) -> np.memmap:
    """Decode ``rel_paths`` (relative to ``root``) into ``cache_path``; reuse it if up to date."""
    if (hit := cached(rel_paths, size, cache_path)) is not None:
        return hit
    key = hashlib.sha256(("\n".join(rel_paths) + f"|{size}").encode()).hexdigest()[:16]
    meta_path = cache_path.with_suffix(".json")
    shape = (len(rel_paths), size, size, 3)
    cache_path.parent.mkdir(parents=True, exist_ok=True)
    tmp = cache_path.with_name(f".{cache_path.name}.tmp")
    out = np.memmap(tmp, dtype=np.uint8, mode="w+", shape=shape)
    try:
        _decode_into(out, root, rel_paths, size, f"decode {cache_path.stem} @{size}px")
        out.flush()
    except BaseException:  # a bad image or Ctrl-C: leave no partial cache behind
        del out
        tmp.unlink(missing_ok=True)
        raise
    tmp.replace(cache_path)
    artifacts.atomic_write_text(meta_path, json.dumps({"key": key, "shape": list(shape)}))
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
