"""Image decoding, torch-free: any common format and mode to ``(H, W, 3) uint8`` RGB.

Used by ``make check``, the duplicate hashing of ``make folds``, the report's contact sheets and
the decode cache of ``make train``. ``ImageError`` names the file and why it cannot be read.
"""

from __future__ import annotations

import re
import warnings
from pathlib import Path

import numpy as np
from PIL import Image, UnidentifiedImageError

from ..errors import CompetitionError

# decode_image refuses images over PIL's limit itself, with a message naming the file, so PIL's
# own warning (raised between the limit and twice it) would only add a second, unclear line.
warnings.filterwarnings("ignore", category=Image.DecompressionBombWarning)
HIGH_BIT_MODES = ("I;16", "I;16B", "I;16L", "I;16N", "I", "F")
ALPHA_MODES = ("RGBA", "RGBa", "LA", "La", "PA")
MAGIC = {b"\xff\xd8": "JPEG", b"\x89PNG": "PNG", b"GIF8": "GIF", b"BM": "BMP", b"RIFF": "WebP"}


class ImageError(CompetitionError):
    """An image file that cannot be decoded; ``reason`` says why, without the file name."""

    def __init__(self, path: str | Path, reason: str) -> None:
        self.path, self.reason = Path(path), reason
        super().__init__(
            f"{path}: {reason}; replace it with a good copy (re-download the competition), "
            "or delete its row from the train CSV if it is a train image"
        )


def load_rgb(path: str | Path) -> np.ndarray:
    """Decode any common image to ``(H, W, 3) uint8`` RGB; ``ImageError`` names a bad file."""
    return decode_image(path)[0]


def decode_image(path: str | Path) -> tuple[np.ndarray, str]:
    """``(H, W, 3) uint8`` RGB and the file's own PIL mode (``L``, ``I;16``, ``CMYK``, ...).

    Grayscale, 1-bit, palette and CMYK go through PIL's conversion; transparent images are
    composited on white; 16-bit images are scaled by 255/65535 (PIL alone would clip them).
    """
    im, mode = _open_loaded(Path(path))
    try:
        if mode in HIGH_BIT_MODES:
            im = Image.fromarray(_to_8bit(np.asarray(im), mode))
        elif mode in ALPHA_MODES or (mode == "P" and "transparency" in im.info):
            rgba = im.convert("RGBA")
            im = Image.alpha_composite(Image.new("RGBA", rgba.size, (255, 255, 255, 255)), rgba)
        return np.asarray(im.convert("RGB"), dtype=np.uint8), mode
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


def _open_loaded(path: Path) -> tuple[Image.Image, str]:
    """Open and fully decode ``path`` (header checks alone miss truncated files)."""
    try:
        with Image.open(path) as im:
            w, h = im.size
            if w * h > (Image.MAX_IMAGE_PIXELS or float("inf")):
                raise Image.DecompressionBombError(f"{w}x{h} ({w * h} pixels)")
            im.load()
            return im, im.mode
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
