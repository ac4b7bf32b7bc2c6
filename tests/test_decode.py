"""The one image path: every decode goes through ``competition/images.py``, JPEGs are
DCT-scaled per size with pixels that depend only on (file, size), train's caches and predict see
the same pixels, and the caches' total disk is checked before any decoding."""

from __future__ import annotations

import re
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
from PIL import Image

from pipeline.competition import images
from pipeline.competition.images import FULL, decode_sizes, load_rgb, resize_square
from pipeline.config import ADDED_LATER, Recipe
from pipeline.disk import space
from pipeline.predict.stream import Pass
from pipeline.train.cache import build_caches

REPO = Path(__file__).resolve().parents[1]
# what opens an image file: PIL, OpenCV and imageio's readers, matplotlib's
OPENS = re.compile(r"Image\.open\(|cv2\.imread|cv2\.imdecode|imageio|mpimg\.imread|\.imread\(")
# track/board.py turns the pipeline's own report figures (PNGs it drew) into TensorBoard images
ALLOWED = {"pipeline/competition/images.py", "pipeline/track/board.py"}


def test_nothing_outside_the_image_module_opens_images():
    found = [
        f"{p.relative_to(REPO).as_posix()}:{n}"
        for p in sorted((REPO / "pipeline").rglob("*.py"))
        if "tools" not in p.relative_to(REPO).parts  # developer tooling writes test images
        and p.relative_to(REPO).as_posix() not in ALLOWED
        for n, line in enumerate(p.read_text().splitlines(), 1)
        if OPENS.search(line)
    ]
    assert not found, f"images opened outside pipeline/competition/images.py: {found}"


def _photo(h: int = 384, w: int = 512) -> np.ndarray:
    """A smooth image with some texture: DCT-scaled and full decodes differ a little."""
    y, x = np.mgrid[0:h, 0:w]
    rgb = np.stack([x * 255 // w, y * 255 // h, (x * y) % 251], axis=-1)
    return (rgb + np.random.default_rng(0).integers(0, 40, rgb.shape)).clip(0, 255).astype(np.uint8)


@pytest.fixture
def files(tmp_path: Path) -> tuple[Path, list[str]]:
    """A JPEG, a PNG, a 16-bit TIFF and a JPEG whose EXIF says 'rotate 90'."""
    rgb = _photo()
    Image.fromarray(rgb).save(tmp_path / "a.jpg", quality=90)
    Image.fromarray(rgb[:200, :300]).save(tmp_path / "b.png")
    Image.fromarray(rgb[:100, :150, 0].astype(np.uint16) * 257).save(tmp_path / "c.tif")
    exif = Image.Exif()
    exif[0x0112] = 6  # orientation: rotate 90 (ignored by train and predict alike)
    Image.fromarray(rgb[:, :400]).save(tmp_path / "d.jpg", quality=90, exif=exif)
    return tmp_path, ["a.jpg", "b.png", "c.tif", "d.jpg"]


def test_jpeg_pixels_depend_only_on_file_and_size(files, monkeypatch):
    root, names = files
    alone = decode_sizes(root / "a.jpg", [48])[48]
    assert np.array_equal(alone, decode_sizes(root / "a.jpg", [32, 48, 100, 200])[48])
    assert np.array_equal(alone, resize_square(load_rgb(root / "a.jpg", 48), 48))
    full = resize_square(load_rgb(root / "a.jpg"), 48)
    assert not np.array_equal(alone, full)  # DCT-scaled: 1/8 of 512x384 is 64x48
    assert np.abs(alone.astype(int) - full).mean() < 3  # yet the same picture
    assert np.array_equal(decode_sizes(root / "a.jpg", [48], FULL)[48], full)  # runs before
    opened = []
    real = images._open_loaded
    monkeypatch.setattr(images, "_open_loaded", lambda p, a: opened.append(a) or real(p, a))
    decode_sizes(root / "a.jpg", [32, 40, 48])  # 384 // 48 = 8: one scale, one decode
    decode_sizes(root / "b.png", [32, 100, 200])  # not reducible: one decode for all
    assert opened == [32, 32]
    decode_sizes(root / "a.jpg", [32, 100, 200])  # scales 1/8, 1/2 (384 // 100 = 3), 1/1
    assert opened[2:] == [32, 100, 200]


def test_cached_train_pixels_are_what_predict_feeds_the_model(files):
    """Train caches at 32 and 48 px (one pass); predict's members at 48 and 64 px (and a run
    trained before the decode was recorded in its recipe, decoding in full)."""
    root, names = files
    splits = {"train": names}
    caches = build_caches(root, splits, [32, 48], lambda s, z: root / "cache" / f"{s}_{z}.u8")
    members = [Recipe(image_size=48), Recipe(image_size=64), Recipe(image_size=48, decode=FULL)]
    fake = SimpleNamespace(
        saved=SimpleNamespace(members=[SimpleNamespace(recipe=r) for r in members]),
        bad=SimpleNamespace(fallback=False),
        batch=len(names),
    )
    fake.keys = lambda: Pass.keys(fake)
    with images.ThreadPoolExecutor(2) as pool:
        fed = [f.result() for f in Pass._decode(fake, pool, [root / n for n in names], 0)]
    for i, name in enumerate(names):
        assert np.array_equal(fed[i][("reduced", 48)], caches[("train", 48)][i]), name
        full = resize_square(load_rgb(root / name), 48)
        assert np.array_equal(fed[i][("full", 48)], full), name
    assert fed[3][("reduced", 48)].shape == (48, 48, 3)  # EXIF rotation ignored: 400 wide
    assert np.array_equal(
        resize_square(np.asarray(Image.open(root / "d.jpg").convert("RGB")), 64),
        resize_square(load_rgb(root / "d.jpg"), 64),
    )  # as PIL's plain decode: not transposed


def test_runs_trained_before_the_decode_was_recorded_decode_in_full():
    assert ADDED_LATER["decode"] == FULL and Recipe().decode == "reduced"


def test_the_caches_total_is_refused_before_any_decoding(files, monkeypatch, capsys):
    root, names = files
    monkeypatch.setattr(space, "free_bytes", lambda p: 10_000)
    with pytest.raises(space.DiskFull, match=r"need 172,032 bytes in .* but 10,000 are free; "):
        build_caches(root, {"train": names}, [32, 64, 96], lambda s, z: root / f"{s}_{z}.u8")
    assert (
        "decode caches to build: 3 (train_32.u8, train_64.u8, train_96.u8)"
        in capsys.readouterr().out
    )
    assert not list(root.glob("*.u8")) and not list(root.glob(".*tmp"))


def test_process_workers_return_in_order_and_raise_the_files_error(files):
    root, names = files
    (root / "bad.jpg").write_bytes(b"\xff\xd8 not really")
    paths = [root / n for n in names]
    got = list(images.parallel(images.load_rgb, paths, "t", 2, processes=True))
    assert [g.shape for g in got] == [load_rgb(p).shape for p in paths]
    with pytest.raises(images.ImageError, match=r"bad.jpg: truncated or corrupt JPEG"):
        list(images.parallel(images.load_rgb, [*paths, root / "bad.jpg"], "t", 2, processes=True))
