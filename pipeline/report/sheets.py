"""Contact sheets: a grid of images, each captioned with its given and predicted label."""

from __future__ import annotations

import base64
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from ..competition.images import load_rgb
from ..util.figures import pyplot

COLS = 8


THUMB = 256  # px: a tile is under 2 inches; a JPEG is decoded DCT-scaled down to about this


def thumbnail(path: Path) -> np.ndarray:
    """``(H, W, 3) uint8``: the image reduced while both sides stay >= THUMB (JPEGs; others full)."""
    return load_rgb(path, THUMB)


def _thumb(path: Path | None, loader: Callable[[Path], np.ndarray]) -> np.ndarray | None:
    if path is None:
        return None
    try:
        return loader(path)
    except Exception:  # noqa: BLE001 - a sheet must not fail on one unreadable image
        return None


def contact_sheet(
    rows: pd.DataFrame,
    paths: dict[str, Path],
    caption: Callable[[pd.Series], str],
    title: str,
    loader: Callable[[Path], np.ndarray] = thumbnail,
) -> Any:
    """One tile per row of ``rows`` (needs an ``id`` column); ``paths`` maps id -> image file.
    Returns the matplotlib figure."""
    plt = pyplot()
    n = max(len(rows), 1)
    cols = min(COLS, n)
    nrows = int(np.ceil(n / cols))
    fig, axes = plt.subplots(nrows, cols, figsize=(1.9 * cols, 2.25 * nrows + 0.4), squeeze=False)
    for ax in axes.flat:
        ax.axis("off")
    for ax, (_, r) in zip(axes.flat, rows.iterrows(), strict=False):
        img = _thumb(paths.get(str(r["id"])), loader)
        if img is None:
            ax.text(0.5, 0.5, "image\nunreadable", ha="center", va="center", fontsize=7)
        else:
            ax.imshow(img)
        ax.set_title(caption(r), fontsize=6.5, loc="left")
    if rows.empty:
        axes.flat[0].text(0.5, 0.5, "nothing to show", ha="center", va="center")
    fig.suptitle(title, fontsize=10)
    fig.tight_layout()
    return fig


def png_data_uri(path: Path) -> str:
    """A PNG file as a ``data:`` URI, so an HTML page can embed it and stay self-contained."""
    return "data:image/png;base64," + base64.b64encode(Path(path).read_bytes()).decode("ascii")
