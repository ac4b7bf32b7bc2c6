"""``make photo-bench``: what the one image path (``competition/images.py``) costs on photographs.

``make_photos`` writes a competition at Plant Pathology 2021's resolution from the shared Tiny
ImageNet photographs: each upscaled to 4000x2672 with Gaussian sensor-like noise (a smooth upscale
alone compresses to a fraction of a real photo's bytes and decodes far faster), JPEG quality 88:
about 1.2 MB a file. ``make_histo`` writes a histopathologic-style one: 96 px RGB TIFFs,
``train_labels.csv`` (id,label), ``train/`` and ``test/``. ``bench`` prints, for a competition:
each decoder's ms per image (one thread), then ``make folds``, the train stage's decode caches
(every size of the CPU set, train and test) and ``make predict``'s decode (every test image for
those sizes, as ``predict/stream.py`` decodes) in this process, each stage's wall and the decode
work it did (thread CPU time inside ``images._decode``), per image of the competition.
"""

from __future__ import annotations

import os
import resource
import shutil
import tempfile
import threading
import time
from multiprocessing import Pool
from pathlib import Path

import cv2
import numpy as np
import pandas as pd
from PIL import Image

from ..competition import images
from ..competition.images import cores, decode_sizes, parallel

PHOTO = (4000, 2672)  # Plant Pathology 2021's width x height
SIZES = [128, 160, 224]  # the shipped CPU set's image sizes
NOISE, QUALITY = 4.0, 88  # sensor noise (std of 8-bit levels) and JPEG quality: ~1.2 MB a file
_bank: np.ndarray | None = None


def _source(
    src: Path, n_train: int, n_test: int, classes: int
) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Train rows (image, label) of ``src``'s train.csv, as many of each of its ``classes``
    largest classes, and ``n_test`` other rows of those classes."""
    df = pd.read_csv(src / "train.csv")
    df = df[df["label"].isin(df["label"].value_counts().index[:classes])]
    train = df.groupby("label", group_keys=False).head(-(-n_train // classes)).head(n_train)
    return train, df.drop(train.index).head(n_test)


def _photo(job: tuple[Path, Path, int]) -> None:
    """One 4000x2672 JPEG from a small photo: bicubic upscale plus a crop of the noise bank."""
    global _bank
    src, dest, seed = job
    rng = np.random.default_rng(seed)
    if _bank is None:  # per worker: 140 MB of noise, cropped at random offsets per image
        _bank = np.random.default_rng(0).normal(0, NOISE, (PHOTO[1] + 256, PHOTO[0] + 256, 3))
        _bank = _bank.astype(np.float32)
    small = np.asarray(Image.open(src).convert("RGB"))
    big = cv2.resize(small, PHOTO, interpolation=cv2.INTER_CUBIC).astype(np.float32)
    y, x = rng.integers(0, 256, 2)
    big += _bank[y : y + PHOTO[1], x : x + PHOTO[0]]
    Image.fromarray(np.clip(big, 0, 255).astype(np.uint8)).save(dest, quality=QUALITY)


def make_photos(
    src: Path, dest: Path, n_train: int = 1000, n_test: int = 250, classes: int = 10
) -> Path:
    """A Classify-Leaves-style competition of 4000x2672 JPEGs (``classes`` of the source's
    largest classes) at ``dest``."""
    train_rows, test_rows = _source(src, n_train, n_test, classes)
    rows = pd.concat([train_rows, test_rows])
    n_train, n_test = len(train_rows), len(test_rows)
    (dest / "images").mkdir(parents=True, exist_ok=True)
    names = [f"images/{i}.jpg" for i in range(len(rows))]
    jobs = [
        (src / p, dest / n, i) for i, (p, n) in enumerate(zip(rows["image"], names, strict=True))
    ]
    with Pool(cores()) as pool:
        for i, _ in enumerate(pool.imap_unordered(_photo, jobs, chunksize=4), 1):
            if i % 50 == 0 or i == len(jobs):
                print(f"wrote {i}/{len(jobs)} photos", flush=True)
    train = pd.DataFrame({"image": names[:n_train], "label": rows["label"][:n_train].to_numpy()})
    train.to_csv(dest / "train.csv", index=False)
    test = pd.DataFrame({"image": names[n_train:]})
    test.to_csv(dest / "test.csv", index=False)
    test.assign(label=train["label"].iloc[0]).to_csv(dest / "sample_submission.csv", index=False)
    print(f"{dest}: {n_train} train + {n_test} test JPEGs at {PHOTO[0]}x{PHOTO[1]}")
    return dest


def _tiff(job: tuple[Path, list[Path], int]) -> None:
    src, dests, seed = job
    small = np.asarray(Image.open(src).convert("RGB"))
    big = cv2.resize(small, (96, 96), interpolation=cv2.INTER_CUBIC).astype(np.float32)
    rng = np.random.default_rng(seed)
    for k, d in enumerate(dests):  # each copy turned and flipped its own way (another phash)
        turned = np.rot90(big, k % 4)
        noisy = (turned[:, ::-1] if k >= 4 else turned) + rng.normal(0, NOISE, big.shape)
        Image.fromarray(np.clip(noisy, 0, 255).astype(np.uint8)).save(d)


def make_histo(src: Path, dest: Path, n_train: int = 80_000, n_test: int = 20_000) -> Path:
    """A histopathologic-style competition: 96 px TIFFs, two labels, from the shared photos."""
    rows = pd.read_csv(src / "train.csv")
    for split in ("train", "test"):
        (dest / split).mkdir(parents=True, exist_ok=True)
    ids = [f"{i:06x}" for i in range(n_train + n_test)]
    paths = [dest / ("train" if i < n_train else "test") / f"{x}.tif" for i, x in enumerate(ids)]
    per = -(-len(ids) // len(rows))  # copies of each source photo
    jobs = [
        (src / rows["image"].iloc[j], paths[j * per : (j + 1) * per], j)
        for j in range(-(-len(ids) // per))
    ]
    with Pool(cores()) as pool:
        for i, _ in enumerate(pool.imap_unordered(_tiff, jobs, chunksize=64), 1):
            if i % 2000 == 0 or i == len(jobs):
                print(f"wrote {min(i * per, len(ids)):,}/{len(ids):,} TIFFs", flush=True)
    label = np.random.default_rng(0).integers(0, 2, n_train)
    pd.DataFrame({"id": ids[:n_train], "label": label}).to_csv(
        dest / "train_labels.csv", index=False
    )
    test = pd.DataFrame({"id": ids[n_train:], "label": 0.5})
    test.to_csv(dest / "sample_submission.csv", index=False)
    print(f"{dest}: {n_train:,} train + {n_test:,} test TIFFs at 96x96")
    return dest


class Meter:
    """Thread CPU time and calls inside ``images._decode`` (decoding proper, every thread)."""

    def __init__(self) -> None:
        self.lock, self.cpu, self.calls, self.real = threading.Lock(), 0.0, 0, images._decode
        self.all_cpu = 0.0  # user + system of this process and its finished workers

    @staticmethod
    def _rusage() -> float:
        me, kids = (
            resource.getrusage(resource.RUSAGE_SELF),
            resource.getrusage(resource.RUSAGE_CHILDREN),
        )
        return me.ru_utime + me.ru_stime + kids.ru_utime + kids.ru_stime

    def __enter__(self) -> Meter:
        self.all_cpu = -self._rusage()

        def timed(*a, **k):
            t = time.thread_time()
            try:
                return self.real(*a, **k)
            finally:
                with self.lock:
                    self.cpu += time.thread_time() - t
                    self.calls += 1

        images._decode = timed
        return self

    def __exit__(self, *exc) -> None:
        images._decode = self.real
        self.all_cpu += self._rusage()


def decoder_ms(paths: list[Path], sizes: list[int] = SIZES) -> dict[str, float]:
    """Median ms per image of each way to decode ``paths``: this thread's CPU time (a loaded
    machine does not inflate it), files in the page cache (each read once first)."""

    def pil(at_least):
        return lambda p: images.load_rgb(p, at_least)

    def ocv(flag):
        return lambda p: cv2.imdecode(np.fromfile(p, np.uint8), flag)

    ways = {
        "PIL full (before: every decode)": pil(None),
        "PIL draft >= 448 px (the issue's unit)": pil(448),
        f"decode_sizes {sizes} (the caches, predict)": lambda p: decode_sizes(p, sizes),
        "PIL draft >= 128 px (duplicate hash)": pil(128),
        "OpenCV full": ocv(cv2.IMREAD_COLOR),
        "OpenCV IMREAD_REDUCED_COLOR_4": ocv(cv2.IMREAD_REDUCED_COLOR_4),
        "OpenCV IMREAD_REDUCED_COLOR_8": ocv(cv2.IMREAD_REDUCED_COLOR_8),
    }
    for p in paths:
        p.read_bytes()
    out = {}
    for name, fn in ways.items():
        times = []
        for p in paths:
            t = time.thread_time()
            fn(p)
            times.append(time.thread_time() - t)
        out[name] = 1000 * float(np.median(times))
    return out


def bench(comp_dir: Path, sample: int = 40, sizes: list[int] = SIZES, check: bool = False) -> None:
    """Print the decoder table on ``sample`` train images, then each stage's wall and decode
    work in a fresh workspace (deleted after): folds, the caches at ``sizes``, predict's decode,
    and ``make check`` with ``check``."""
    from ..competition.check import check_stage
    from ..competition.load import load_competition
    from ..folds.stage import folds_stage
    from ..train.cache import build_caches
    from ..workspace import Workspace

    comp = load_competition(comp_dir)
    n = len(comp.train) + len(comp.test)
    print(f"{comp.root}: {len(comp.train):,} train + {len(comp.test):,} test images; {_load()}")
    ms = decoder_ms([comp.root / p for p in comp.train["path"][:sample]], sizes)
    print(f"decode CPU ms per image (one thread, median of {min(sample, len(comp.train))} images):")
    for name, v in ms.items():
        print(f"  {name:<48}{v:8.2f}")
    work = Path(tempfile.mkdtemp(prefix="photo-bench-"))
    ws = Workspace(comp.name, models=work / "models", output=work, cache_root=work / "cache")
    splits = {"train": comp.train["path"].tolist(), "test": comp.test["path"].tolist()}
    test_paths = [comp.root / p for p in splits["test"]]
    stages = {
        "make folds (hash every image)": lambda: folds_stage(comp, ws),
        f"train caches {sizes} (train + test)": lambda: build_caches(
            comp.root, splits, sizes, ws.decode_cache
        ),
        f"predict decode {sizes} (test)": lambda: list(
            parallel(lambda p: decode_sizes(p, sizes), test_paths, "predict decode")
        ),
    }
    if check:
        stages["make check (every byte, JPEG at 1/8)"] = lambda: check_stage(comp)
    rows = []
    try:
        for name, fn in stages.items():
            with Meter() as m:
                t = time.perf_counter()
                fn()
                wall = time.perf_counter() - t
            cpu, calls = m.cpu, m.calls
            if name.startswith("make folds") and not calls:  # hashed in worker processes
                calls, cpu = n, n * ms["PIL draft >= 128 px (duplicate hash)"] / 1000
            rows.append((name, wall, cpu, calls, m.all_cpu))
    finally:
        shutil.rmtree(work, ignore_errors=True)
    _report(rows, n, ms["PIL draft >= 448 px (the issue's unit)"], check)


def _report(rows: list[tuple], n: int, unit_ms: float, check: bool) -> None:
    print(
        f"{'stage':<42}{'wall s':>8}{'cpu s':>8}{'decode core-s':>15}{'decodes':>9}{'ms/image':>10}"
    )
    for name, wall, cpu, calls, all_cpu in rows:
        print(
            f"{name:<42}{wall:>8.1f}{all_cpu:>8.1f}{cpu:>15.1f}{calls:>9,}{1000 * cpu / n:>10.1f}"
        )
    print(
        "(cpu s: this process and its workers; make folds hashes 512 images or more in worker "
        "processes: its decode core-s is images x the duplicate hash's ms above)"
    )
    main = rows[:3]
    cpu = sum(r[2] for r in main)
    print(
        f"folds + train + predict: {sum(r[3] for r in main) / n:.2f} decodes and "
        f"{1000 * cpu / n:.1f} ms of decode core time per image = {1000 * cpu / n / unit_ms:.2f}x "
        f"one reduced decode ({unit_ms:.1f} ms, PIL draft >= 448 px); wall "
        f"{sum(r[1] for r in main):.1f} s; {_load()}"
    )


def _load() -> str:
    one, five, _ = os.getloadavg()
    return f"load average {one:.2f} / {five:.2f} on {cores()} cores"
