"""Exact and near-duplicate images, within train and between train and test.

Exact duplicates share the sha1 of their file bytes; near duplicates have 64-bit perceptual hashes
(``imagehash.phash``) at most ``NEAR_DISTANCE`` bits apart. Pairs are linked into clusters with
union-find; test-test pairs are not linked (they say nothing about train labels or folds), so
every cluster holds at least one train image and is named after the first of them (train-CSV
order). ``make folds`` keeps each cluster inside one fold and writes the clusters to
``folds/<comp>.duplicates.csv`` (read back by ``artifacts.read_duplicates``).
"""

from __future__ import annotations

import hashlib
import os
from collections.abc import Iterable
from pathlib import Path

import numpy as np
import pandas as pd
from PIL import Image

from .. import artifacts
from ..competition.images import load_rgb, parallel
from ..errors import PipelineError

# Hamming distance (bits of 64) up to which two phashes count as the same picture. imagehash's
# phash sets exactly the 32 DCT coefficients above the median, so distances are always even.
# Measured on ../shared/data, every pair looked at as images: CIFAR-10 (25,000 images) has 3
# pairs at 0, 22 at 2, 29 at 4 and 70 at 6; all 54 at <= 4 are the same photo (re-cropped,
# re-coloured, or the next frame of one photo series), while 9 of the 70 at 6 are two different
# photos (an airplane with a ship, two different deer). TinyImageNet176 (27,153) has one
# byte-identical train/test pair at 0, nothing at 2 or 4, and 3 pairs at 6, all different photos.
# At 6, clusters with conflicting labels appear in both (README: Duplicates and relabelling).
NEAR_DISTANCE = 4
# phash looks at a 32x32 grayscale thumbnail: a JPEG is decoded DCT-scaled while both sides stay
# >= this (a 4000x2672 photo at 1/8, 500x334), 4x the thumbnail. Images up to twice it (the
# shared 32 and 64 px competitions) decode in full as before: same hashes, same folds files.
HASH_DECODE = 128
PROCESSES_FROM = 512  # images to hash from which a process per core beats threads (GIL-bound)
REPORT_COLUMNS = artifacts.DUPLICATES_COLUMNS
_CACHE_COLUMNS = ["path", "size", "mtime_ns", "sha1", "phash"]


def hash_images(
    root: Path, rel_paths: list[str], cache: Path, stats: dict | None = None
) -> tuple[np.ndarray, np.ndarray]:
    """sha1 hex ``(N,)`` and phash ``(N,) uint64`` of each image under ``root``.

    ``cache`` (CSV: path, size, mtime_ns, sha1, phash) keeps hashes of files whose size and
    modification time are unchanged, so re-running ``make folds`` reads no image twice. The
    others are hashed on every core (``images.parallel``), with a progress bar; ``stats``
    (a dict) receives ``hashed``, the paths hashed now.
    """
    known = {}
    if cache.is_file():
        old = pd.read_csv(cache, dtype=str, keep_default_na=False)
        if list(old.columns) == _CACHE_COLUMNS:
            known = {r[0]: r for r in old.itertuples(index=False)}
    rows, todo = [], []
    for i, rel in enumerate(rel_paths):
        st = os.stat(root / rel)
        rows.append([rel, str(st.st_size), str(st.st_mtime_ns), "", ""])
        hit = known.get(rel)
        if hit is not None and list(hit[1:3]) == rows[-1][1:3]:
            rows[-1][3:] = hit[3:]
        else:
            todo.append(i)
    files = [root / rel_paths[i] for i in todo]  # a few in threads, many in processes
    import imagehash  # noqa: F401 - once here, not in each forked worker (scipy is slow to load)

    hashed = parallel(_hash_file, files, "hash images", processes=len(files) >= PROCESSES_FROM)
    for i, got in zip(todo, hashed, strict=True):
        rows[i][3:] = got
    if stats is not None:
        stats["hashed"] = [rel_paths[i] for i in todo]
    if todo:
        new = pd.DataFrame(rows, columns=_CACHE_COLUMNS)
        wanted = set(rel_paths)
        keep = [r for p, r in known.items() if p not in wanted]  # e.g. images dropped for now
        both = pd.concat([new, pd.DataFrame(keep, columns=_CACHE_COLUMNS)], ignore_index=True)
        artifacts.write_csv(cache, both)
    sha1 = np.array([r[3] for r in rows], dtype=str)
    return sha1, np.array([int(r[4], 16) for r in rows], dtype=np.uint64)


def _hash_file(path: Path) -> tuple[str, str]:
    import imagehash  # here, not at the top: the CLI's parser reads NEAR_DISTANCE from this module

    try:
        sha1 = hashlib.sha1(path.read_bytes()).hexdigest()
        # decoded as training decodes it (16-bit, RGBA, palette -> 8-bit RGB), reduced
        phash = str(imagehash.phash(Image.fromarray(load_rgb(path, HASH_DECODE))))
    except (OSError, ValueError) as e:
        raise PipelineError(
            f"{path} is not a readable image ({type(e).__name__}); replace it with a good copy "
            "(re-download the competition)"
        ) from None
    return sha1, phash


def near_pairs(phash: np.ndarray, n_train: int, max_distance: int, block: int = 256) -> np.ndarray:
    """``(P, 3) int64`` rows ``(i, j, distance)``, ``i < j``, ``i < n_train``, distance <= max.

    ``phash`` is ``(N,) uint64`` with the ``n_train`` train images first; test-test pairs are
    skipped. Blockwise XOR + popcount: ~27k hashes take a few seconds and < 100 MB.
    """
    out = [np.zeros((0, 3), dtype=np.int64)]
    for start in range(0, n_train, block):
        stop = min(start + block, n_train)
        dist = np.bitwise_count(phash[start:stop, None] ^ phash[None, start:])
        i, j = np.nonzero(dist <= max_distance)
        keep = j > i  # columns start at ``start``: j > i is the upper triangle
        i, j = i[keep], j[keep]
        out.append(np.stack([i + start, j + start, dist[i, j].astype(np.int64)], axis=1))
    return np.concatenate(out)


def union_find(n: int, pairs: Iterable[tuple[int, int]]) -> np.ndarray:
    """``(n,)`` root of each item: the smallest index in its connected component.

    Hand-written (a dozen lines, over a few hundred pairs) rather than scipy's
    connected_components, which numbers components instead: the smallest index as root names
    each cluster after its first train image with no second pass.
    """
    parent = list(range(n))

    def find(x: int) -> int:
        while parent[x] != x:
            parent[x] = parent[parent[x]]
            x = parent[x]
        return x

    for a, b in pairs:
        ra, rb = find(int(a)), find(int(b))
        if ra != rb:
            parent[max(ra, rb)] = min(ra, rb)
    return np.array([find(x) for x in range(n)], dtype=np.int64)


def find_duplicates(
    root: Path,
    train: pd.DataFrame,
    test: pd.DataFrame,
    cache: Path,
    max_distance: int = NEAR_DISTANCE,
) -> pd.DataFrame:
    """Duplicate clusters among ``train`` (id, label, path) and ``test`` (id, path) images.

    Returns the report: one row per image in a cluster of size >= 2, columns ``REPORT_COLUMNS``;
    ``cluster`` is the id of the cluster's first train image, ``kind`` is "exact" when another
    image of the cluster has the same bytes, else "near", ``distance`` the smallest phash distance
    to an image it is linked to. ``max_distance < 0`` finds exact duplicates only.
    """
    if max_distance > 16:  # memory grows with the pairs found; 6 already links different photos
        raise PipelineError(
            f"near-duplicate distance {max_distance} is too large; use -1 (exact only) to 16 "
            f"bits (default {NEAR_DISTANCE}: the largest that linked no different photos)"
        )
    n = len(train)
    stats: dict = {}
    sha1, phash = hash_images(root, [*train["path"], *test["path"]], cache, stats)
    pairs = near_pairs(phash, n, max(max_distance, 0))
    if max_distance < 0:
        pairs = pairs[sha1[pairs[:, 0]] == sha1[pairs[:, 1]]]
    roots = union_find(len(sha1), pairs[:, :2])
    dist = np.full(len(sha1), 64, dtype=np.int64)
    np.minimum.at(dist, pairs[:, 0], pairs[:, 2])
    np.minimum.at(dist, pairs[:, 1], pairs[:, 2])
    ids = np.concatenate([train["id"].to_numpy(str), test["id"].to_numpy(str)])
    df = pd.DataFrame(
        {
            "cluster": ids[roots],
            "id": ids,
            "split": np.where(np.arange(len(ids)) < n, "train", "test"),
            "label": [*train["label"], *[""] * len(test)],
            "sha1": sha1,
            "distance": dist,
            "root": roots,
        }
    )
    df = df[df.groupby("root")["id"].transform("size") > 1]
    twins = df.groupby(["root", "sha1"])["id"].transform("size") > 1
    df = df.assign(kind=np.where(twins, "exact", "near"))
    out = df.sort_values(["root"], kind="stable")[REPORT_COLUMNS].reset_index(drop=True)
    out.attrs.update(stats, cache=cache)  # the images hashed now, not read from the cache
    return out


def refuse_changed(report: pd.DataFrame, report_path: Path, folds_path: Path) -> None:
    """Never rewrite an existing folds file silently because image hashes changed: when images
    were hashed again (a new ``CACHE=``, a deleted hash cache, another way of decoding) and
    their duplicate clusters differ from ``report_path``'s, refuse with what to do."""
    if not report.attrs.get("hashed") or not (folds_path.is_file() and report_path.is_file()):
        return
    old = pd.read_csv(report_path, dtype=str, keep_default_na=False)
    pairs = {tuple(r) for r in old[["cluster", "id"]].to_numpy()}
    if pairs == {tuple(r) for r in report[["cluster", "id"]].astype(str).to_numpy()}:
        return
    cache, again = report.attrs["cache"], set(report.attrs["hashed"])
    kept = pd.read_csv(cache, dtype=str, keep_default_na=False)
    artifacts.write_csv(cache, kept[~kept["path"].isin(again)])  # so a re-run refuses again
    raise PipelineError(
        f"{folds_path}: {len(again)} images were hashed again (no hash cache "
        f"found) and their duplicate clusters differ from {report_path}; nothing was written, "
        f"so runs trained on {folds_path.name} stay valid. To keep it, point CACHE= at the hash "
        f"cache it was made with; to split again with the new clusters, delete {folds_path} and "
        f"{report_path}, re-run make folds, then retrain every run"
    )


def train_groups(report: pd.DataFrame, ids: pd.Series) -> np.ndarray:
    """``(N,)`` group of each train id: its cluster in the report, else the id itself."""
    train = report[report["split"] == "train"]
    cluster = dict(zip(train["id"], train["cluster"], strict=True))
    return np.array([cluster.get(i, i) for i in ids], dtype=str)


def summarize(report: pd.DataFrame, path: Path, max_distance: int) -> str:
    """Lines for the terminal: clusters, conflicting labels (listed), test duplicates."""
    train = report[report["split"] == "train"]
    test = report[report["split"] == "test"]
    rule = "exact only" if max_distance < 0 else f"phash distance <= {max_distance}"
    if report.empty:
        return f"wrote {path}: no duplicates ({rule})"
    lines = [
        f"wrote {path}: {report['cluster'].nunique()} duplicate clusters ({len(train)} train, "
        f"{len(test)} test images; {rule}), largest {report['cluster'].value_counts().max()} images"
    ]
    labels = train.groupby("cluster", sort=False)["label"].unique()
    bad = labels[labels.map(len) > 1]
    if len(bad):
        lines.append(
            f"  {len(bad)} clusters with conflicting train labels "
            "(fix with id,new_label rows in the competition's relabel.csv):"
        )
        lines += [f"    {c}: {', '.join(sorted(v))}" for c, v in bad.iloc[:20].items()]
        if len(bad) > 20:
            lines.append(f"    ... and {len(bad) - 20} more in {path}")
    lines.append(f"  {len(test)} test images duplicate a train image")
    return "\n".join(lines)
