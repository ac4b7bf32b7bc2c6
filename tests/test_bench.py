"""``bench_stage`` on a tiny competition: every figure present, positive and finite."""

import math

import torch

from pipeline.bench import bench_stage
from pipeline.competition import load_competition
from pipeline.config import Recipe

from .conftest import write_leaves

FIGURES = (
    "loader_ips",
    "bare_train_ips",
    "train_ips",
    "train_ratio",
    "bare_predict_ips",
    "predict_ips",
    "predict_ratio",
)


def test_bench_stage_reports_every_figure(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    comp = load_competition(write_leaves(tmp_path / "input" / "leaves"))
    recipe = Recipe(backbone="test_resnet", image_size=16, batch_size=8, tta=("none", "hflip"))
    res = bench_stage(comp, recipe, torch.device("cpu"), batches=3, warmup=1)
    for key in FIGURES:
        assert key in res and math.isfinite(res[key]) and res[key] > 0, (key, res.get(key))
    assert res["cache_build_s"] > 0  # a fresh tmp_path: the cache had to be built
    assert (tmp_path / "models" / "leaves" / ".cache" / "train_16.u8").is_file()
    assert res["batch_size"] == 8 and res["image_size"] == 16 and res["workers"] == 0
    assert res["backbone"] == "test_resnet" and res["views"] == ["none", "hflip"]
    out = capsys.readouterr().out
    assert "bench test_resnet @16px batch 8 on cpu" in out and "c/b = " in out and "e/d = " in out

    again = bench_stage(comp, recipe, torch.device("cpu"), batches=1, warmup=0)
    assert again["cache_build_s"] is None  # reused
    assert all(math.isfinite(again[k]) and again[k] > 0 for k in FIGURES)
