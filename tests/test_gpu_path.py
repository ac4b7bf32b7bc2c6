"""The GPU path, checked on CPU: batch augmentation on the device, the torch.compile fallback,
and ``make bench`` on synthetic images (no competition)."""

from __future__ import annotations

import math

import torch

from pipeline.config import Recipe
from pipeline.train import augment as inputs
from pipeline.train import loop
from pipeline.train.augment import device_augment, loader_transform


def _batch(b: int = 6, s: int = 16) -> torch.Tensor:
    return torch.arange(b * 3 * s * s, dtype=torch.float32).reshape(b, 3, s, s) / (b * 3 * s * s)


def test_device_augment_is_seeded_per_sample_and_keeps_the_format():
    x = _batch()
    assert device_augment(x, "none") is x
    torch.manual_seed(0)
    a = device_augment(x, "light")
    torch.manual_seed(0)
    b = device_augment(x, "light")
    assert torch.equal(a, b) and a.shape == x.shape and a.dtype == x.dtype  # same seed, same bits
    assert not torch.equal(a, x) and not torch.equal(a[0], a[1] - (x[1] - x[0]))  # per sample
    nhwc = x.contiguous(memory_format=torch.channels_last)
    torch.manual_seed(0)
    c = device_augment(nhwc, "light")
    assert c.is_contiguous(memory_format=torch.channels_last) and torch.allclose(c, a)
    assert a.min() >= x.min() - 1e-6 and a.max() <= x.max() + 1e-6  # a resample, no new values


def test_device_augment_flip_and_full_crop_is_exact(monkeypatch):
    """Scale 1 and aspect 1 with a flip is a mirror image: the grid hits pixel centres."""
    x = _batch(2)
    monkeypatch.setitem(inputs.CROP_SCALE, "light", (1.0, 1.0))
    torch.manual_seed(0)
    out = device_augment(x, "light", ratio=(1.0, 1.0))
    for i in range(2):
        assert torch.allclose(out[i], x[i]) or torch.allclose(out[i], x[i].flip(-1), atol=1e-6)


def test_loader_transform_leaves_crop_and_flip_to_the_device():
    assert loader_transform(Recipe(augment="none")) is None
    assert loader_transform(Recipe(augment="light")) is not None
    assert loader_transform(Recipe(augment="light", device_augment=True)) is None
    custom = ({"name": "CLAHE", "p": 0.3},)
    kept = loader_transform(Recipe(device_augment=True, custom_augment=custom))
    assert [type(t).__name__ for t in kept.transforms] == ["CLAHE"]


def test_compile_falls_back_to_eager_with_one_warning(monkeypatch, capsys):
    model = torch.nn.Linear(3, 2)

    def broken(*_a, **_k):
        def fail(_x):
            raise RuntimeError("no C compiler\nlong trace")

        return fail

    monkeypatch.setattr(torch, "compile", broken)
    fwd = loop.compile_or_eager(model)
    x = torch.ones(1, 3)
    assert torch.equal(fwd(x), model(x)) and torch.equal(fwd(x), model(x))
    out = capsys.readouterr()
    text = out.out + out.err
    assert text.count("torch.compile failed (RuntimeError: no C compiler); running eager") == 1

    monkeypatch.setattr(torch, "compile", lambda m: (_ for _ in ()).throw(ImportError("triton")))
    assert torch.equal(loop.compile_or_eager(model)(x), model(x))


def test_bench_runs_on_synthetic_images(tmp_path, monkeypatch, capsys):
    from pipeline.tools.bench import bench_stage

    monkeypatch.chdir(tmp_path)
    recipe = Recipe(backbone="test_resnet", image_size=16, batch_size=8, device_augment=True)
    res = bench_stage(None, recipe, torch.device("cpu"), batches=2, warmup=1, synthetic=40)
    for key in ("loader_ips", "bare_train_ips", "train_ips", "train_ratio", "predict_ratio"):
        assert math.isfinite(res[key]) and res[key] > 0, key
    assert res["comp"] == "synthetic" and res["train_images"] == 40
    assert not list(tmp_path.iterdir())  # nothing written: images are made in memory
    assert "synthetic" in capsys.readouterr().out
