import numpy as np
import torch

from pipeline.model.tta import VIEWS, apply_view
from pipeline.train.augment import train_transform
from pipeline.train.cache import build_cache
from pipeline.train.loader import CachedImages, EpochSampler


def test_flips_are_invertible():
    x = torch.arange(2 * 3 * 4 * 5, dtype=torch.float32).reshape(2, 3, 4, 5)
    for v in ("hflip", "vflip"):
        assert torch.equal(apply_view(v, apply_view(v, x)), x)
        assert not torch.equal(apply_view(v, x), x)
    assert torch.equal(apply_view("none", x), x)
    assert apply_view("scale", x).shape == x.shape and set(VIEWS) == {
        "none",
        "hflip",
        "vflip",
        "scale",
    }
    assert torch.equal(apply_view("hflip", x)[..., 0], x[..., -1])


def test_cache_is_built_once_and_reused(leaves, tmp_path):
    paths = [f"images/{i}.jpg" for i in range(6)]
    a = build_cache(leaves, paths, 8, tmp_path / "c" / "train_8.u8")
    assert a.shape == (6, 8, 8, 3) and a.dtype == np.uint8
    stamp = (tmp_path / "c" / "train_8.u8").stat().st_mtime_ns
    b = build_cache(leaves, paths, 8, tmp_path / "c" / "train_8.u8")
    assert (tmp_path / "c" / "train_8.u8").stat().st_mtime_ns == stamp and np.array_equal(a, b)
    c = build_cache(leaves, paths[:5], 8, tmp_path / "c" / "train_8.u8")
    assert c.shape[0] == 5  # a different image list rebuilds


def test_augmentation_is_reproducible_per_epoch():
    rng = np.random.default_rng(0)
    images = rng.integers(0, 255, (10, 16, 16, 3), dtype=np.uint8)
    labels = np.arange(10) % 3
    ds = CachedImages(images, np.arange(2, 10), labels, train_transform("heavy", 16), seed=5)
    s = EpochSampler(len(ds), seed=5, shuffle=True)
    keys = list(s)
    x1, y1 = ds.__getitems__(keys[:4])
    x2, y2 = ds.__getitems__(keys[:4])
    assert torch.equal(x1, x2) and torch.equal(y1, y2)
    assert torch.equal(y1, torch.from_numpy(labels[2 + np.array([k % 8 for k in keys[:4]])]))
    s.set_epoch(1)
    assert list(s) != keys
