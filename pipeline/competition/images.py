"""The one image path, torch-free: every decode of a competition image goes through here.

``decode_sizes(path, sizes)`` is what training's decode caches, ``make predict`` and the offline
notebook read: ``{S: (S, S, 3) uint8}``, a JPEG decoded with libjpeg's DCT scaling (PIL
``draft``) to the smallest scale whose both sides are still >= S, then resized to S x S. The
pixels depend only on the file and S, never on which other sizes are built beside it, so train
and predict see the same pixels whatever the members; sizes that reach the same scale share one
decode. Formats that cannot be decoded reduced (PNG, TIFF, WebP, ...) are decoded once for all
sizes. ``load_rgb`` is the full (or ``at_least``-reduced) decode of ``make check``, the duplicate
hash and the report. EXIF orientation is ignored everywhere, as PIL does (train and predict
agree). ``ImageError`` names the file and why it cannot be read.
"""

from __future__ import annotations

import gc
import os
import re
import warnings
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import ProcessPoolExecutor, ThreadPoolExecutor
from pathlib import Path
from typing import TypeVar

import cv2
import numpy as np
from PIL import Image, UnidentifiedImageError
from tqdm import tqdm

from ..errors import CompetitionError

# decode_image refuses images over PIL's limit itself, with a message naming the file, so PIL's
# own warning (raised between the limit and twice it) would only add a second, unclear line.
warnings.filterwarnings("ignore", category=Image.DecompressionBombWarning)
HIGH_BIT_MODES = ("I;16", "I;16B", "I;16L", "I;16N", "I", "F")
ALPHA_MODES = ("RGBA", "RGBa", "LA", "La", "PA")
MAGIC = {b"\xff\xd8": "JPEG", b"\x89PNG": "PNG", b"GIF8": "GIF", b"BM": "BMP", b"RIFF": "WebP"}
# How images are decoded for a size, recorded in the decode caches' key and in each recipe
# (``Recipe.decode``): "reduced" is the DCT-scaled path above; "full" decodes every pixel first,
# as runs trained before issue 32 did (make predict honours it for them).
REDUCED, FULL = "reduced", "full"
DECODES = (REDUCED, FULL)
T = TypeVar("T")


class ImageError(CompetitionError):
    """An image file that cannot be decoded; ``reason`` says why, without the file name."""

    def __init__(self, path: str | Path, reason: str) -> None:
        self.path, self.reason = Path(path), reason
        super().__init__(
            f"{path}: {reason}; replace it with a good copy (re-download the competition), "
            "or delete its row from the train CSV if it is a train image"
        )

    def __reduce__(self):  # raised in a worker process, re-raised in the parent as it was
        return ImageError, (self.path, self.reason)


def cores() -> int:
    """The cores this process may run on (a container's or taskset's share, not the host's)."""
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1


def load_rgb(path: str | Path, at_least: int | None = None) -> np.ndarray:
    """Decode any common image to ``(H, W, 3) uint8`` RGB; ``ImageError`` names a bad file.
    ``at_least``: a JPEG is DCT-scaled down while both sides stay >= it (a thumbnail's worth)."""
    return decode_image(path, at_least)[0]


def decode_sizes(
    path: str | Path, sizes: Iterable[int], how: str = REDUCED
) -> dict[int, np.ndarray]:
    """``{S: (S, S, 3) uint8}`` for every S of ``sizes``: one decode per DCT scale the sizes
    reach (a 4000x2672 JPEG reaches 1/8 for every size up to 334), each resized to its sizes.
    ``how``: ``REDUCED``, or ``FULL`` (one full decode for every size: runs trained before)."""
    todo, out = sorted(set(sizes)), {}
    while todo:  # the smallest size reaches the coarsest scale; larger ones may need finer
        target = todo[0] if how == REDUCED else None
        rgb, _, full = _decode(Path(path), target)
        same = [
            s
            for s in todo
            if target is None or full is None or _scale(full, s) == _scale(full, target)
        ]
        out.update({s: resize_square(rgb, s) for s in same})
        todo = [s for s in todo if s not in same]
    return out


def resize_square(img: np.ndarray, size: int) -> np.ndarray:
    """``(H, W, 3)`` to ``(size, size, 3)``: area averaging down, bicubic up (OpenCV's)."""
    if img.shape[0] == size and img.shape[1] == size:
        return img
    shrink = img.shape[0] > size or img.shape[1] > size
    return cv2.resize(
        img, (size, size), interpolation=cv2.INTER_AREA if shrink else cv2.INTER_CUBIC
    )


def decode_image(path: str | Path, at_least: int | None = None) -> tuple[np.ndarray, str]:
    """``(H, W, 3) uint8`` RGB and the file's own PIL mode (``L``, ``I;16``, ``CMYK``, ...).

    Grayscale, 1-bit, palette and CMYK go through PIL's conversion; transparent images are
    composited on white; 16-bit images are scaled by 255/65535 (PIL alone would clip them).
    """
    rgb, mode, _ = _decode(Path(path), at_least)
    return rgb, mode


def inspect_image(path: str | Path) -> tuple[tuple[int, int], str]:
    """``make check``'s decode: the file's full ``(W, H)`` and PIL mode, every byte of it
    decoded (a truncated or corrupt file fails as in a full decode: libjpeg entropy-decodes the
    whole stream at any scale) and converted as training converts it, a JPEG at 1/8 scale."""
    rgb, mode, full = _decode(Path(path), 1)
    return full or (rgb.shape[1], rgb.shape[0]), mode


def parallel(
    fn: Callable[[T], object],
    items: list[T],
    desc: str,
    workers: int | None = None,
    processes=False,
) -> Iterator:
    """``fn`` over ``items`` on every core, results in order, with a progress bar and ETA; the
    first error stops every pending call. Threads by default (PIL's decoders and OpenCV release
    the GIL); ``processes`` for work that holds it (the duplicate hash of small images: with
    threads its 27k thumbnails took longer than on one core), ``fn`` then a module function."""
    n = workers or cores()
    if processes:
        gc.freeze()  # forked workers then copy fewer of this process's pages (no GC writes)
        pool = ProcessPoolExecutor(max_workers=n)
        results = pool.map(fn, items, chunksize=max(1, min(1024, len(items) // (8 * n))))
    else:
        pool = ThreadPoolExecutor(max_workers=n)
        results = pool.map(fn, items)
    try:
        yield from tqdm(results, total=len(items), desc=desc, unit="img", leave=False, disable=None)
    finally:  # an error or Ctrl-C: drop the images not yet decoded instead of waiting for them
        pool.shutdown(wait=True, cancel_futures=True)
        gc.unfreeze()


def _scale(full: tuple[int, int], size: int) -> int:
    """libjpeg's DCT scale for ``size``, as PIL's JpegImageFile.draft picks it: the largest
    1/s (s in 8, 4, 2, 1) that leaves both sides >= size."""
    fit = min(full[0] // size, full[1] // size)
    return next(s for s in (8, 4, 2, 1) if fit >= s or s == 1)


def _decode(path: Path, at_least: int | None) -> tuple[np.ndarray, str, tuple[int, int] | None]:
    """RGB, the file's mode and, when it was DCT-scaled (a JPEG with ``at_least``), its full
    ``(W, H)`` (None: decoded at full size, whatever ``at_least`` asked)."""
    im, mode, full = _open_loaded(path, at_least)
    try:
        if mode in HIGH_BIT_MODES:
            im = Image.fromarray(_to_8bit(np.asarray(im), mode))
        elif mode in ALPHA_MODES or (mode == "P" and "transparency" in im.info):
            rgba = im.convert("RGBA")
            im = Image.alpha_composite(Image.new("RGBA", rgba.size, (255, 255, 255, 255)), rgba)
        return np.asarray(im.convert("RGB"), dtype=np.uint8), mode, full
    except ValueError as e:  # a mode PIL cannot turn into RGB (LAB, HSV, ...)
        raise ImageError(path, f"colour mode {mode} cannot be converted to RGB ({e})") from None


def _to_8bit(a: np.ndarray, mode: str) -> np.ndarray:
    """16-bit (and 32-bit int / float) pixels to uint8 by scaling the range, never clipping."""
    a = a.astype(np.float64)
    top = float(a.max(initial=0.0))
    if mode.startswith("I;16") or 255.0 < top <= 65535.0:
        a = a * (255.0 / 65535.0)
    elif top > 65535.0:
        a = a * (255.0 / top)
    elif mode == "F" and top <= 1.0:
        a = a * 255.0
    return np.clip(np.rint(a), 0, 255).astype(np.uint8)


def _open_loaded(
    path: Path, at_least: int | None
) -> tuple[Image.Image, str, tuple[int, int] | None]:
    """Open and fully decode ``path`` (header checks alone miss truncated files), DCT-scaled
    for ``at_least`` where the format allows (PIL's ``draft``: JPEG only)."""
    try:
        with Image.open(path) as im:
            w, h = im.size
            if w * h > (Image.MAX_IMAGE_PIXELS or float("inf")):
                raise Image.DecompressionBombError(f"{w}x{h} ({w * h} pixels)")
            # draft(None, ...) keeps the mode (CMYK, L) for the conversions below
            reduced = at_least is not None and im.draft(None, (at_least, at_least)) is not None
            im.load()
            return im, im.mode, (w, h) if reduced else None
    except FileNotFoundError:
        reason = "file not found"
    except IsADirectoryError:
        reason = "is a folder, not an image file"
    except PermissionError:
        reason = "cannot be read (permission denied; chmod a+r it)"
    except UnidentifiedImageError:
        with open(path, "rb") as f:
            head = f.read(16)
        size, kind = path.stat().st_size, [k for m, k in MAGIC.items() if head.startswith(m)]
        reason = f"not an image ({size} bytes: {head!r}...)"
        if kind or not size:
            reason = f"truncated or corrupt {kind[0]} ({size} bytes)" if size else "empty (0 bytes)"
    except Image.DecompressionBombError as e:  # ours above, or PIL's own beyond twice the limit
        n = re.search(r"\((\d+) pixels", str(e))
        reason = (
            f"{int(n[1]) if n else 0:,} pixels is over PIL's decompression-bomb limit of "
            f"{Image.MAX_IMAGE_PIXELS:,} (PIL.Image.MAX_IMAGE_PIXELS)"
        )
    except Exception as e:  # any other decoder failure means a truncated or corrupt file
        reason = f"truncated or corrupt ({type(e).__name__}: {e})"
    raise ImageError(path, reason)
