"""``bench_stage`` on a tiny competition: every figure present, positive and finite."""

import math

import torch

from pipeline.competition import load_competition
from pipeline.config import Recipe
from pipeline.tools.bench import bench_stage
from pipeline.workspace import Workspace

from .fakes import write_leaves

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


def test_bench_ensemble_small(capsys):
    from pipeline.ensemble.methods import METHODS
    from pipeline.tools.bench_ensemble import bench_ensemble

    out = bench_ensemble(members=3, rows=200, classes=5)
    assert {f"fit_{m}" for m in METHODS} <= set(out)
    assert out["caruana + weighted"] == out["fit_caruana"] + out["fit_weighted"]
    printed = capsys.readouterr().out
    assert "3 members x 200 rows x 5 classes" in printed and "scale target <= 30 s" in printed
    assert "target <= 2 s" not in printed  # the default size's targets, not this size's
    assert "peak resident memory" in printed and 0 < out["peak_gib"] < 64  # read from /proc
    half = bench_ensemble(members=3, rows=200, classes=5, float16=True)
    assert "(0 MiB float16)" in capsys.readouterr().out and half["fit_soft"] >= 0


def test_whole_train_times_a_real_fold(tmp_path, monkeypatch, capsys):
    from pipeline.config import load_recipe
    from pipeline.folds.stage import folds_stage
    from pipeline.tools.bench_whole import whole_train

    monkeypatch.chdir(tmp_path)
    comp = load_competition(write_leaves(tmp_path / "input" / "leaves"))
    (tmp_path / "models").mkdir()
    (tmp_path / "models" / "tiny.toml").write_text(
        'backbone = "test_resnet"\nimage_size = 16\nepochs = 1\nbatch_size = 8\n'
        'tta = ["none", "hflip"]\n'
    )
    ws = Workspace.under(tmp_path, comp.name)
    folds_stage(comp, ws, k=2)
    recipe = load_recipe(ws.recipe("tiny"))
    res = bench_stage(comp, recipe, torch.device("cpu"), batches=2, warmup=1, ws=ws)
    out = whole_train(comp, "tiny", recipe, res, fold=1, ws=ws)
    assert out["n_train"] + out["n_val"] == len(comp.train) and out["views"] == 2
    assert out["wall_s"] > 0 and out["whole_ratio"] == out["wall_s"] / out["ideal_s"]
    assert not (tmp_path / "models" / "leaves" / "tiny").exists()  # ran in a scratch folder
    assert "wall/ideal = " in capsys.readouterr().out


def test_bench_ensemble_whole_runs_the_real_stage(tmp_path, capsys):
    """``--whole``: member folders and a competition of that size, then the real ensemble stage
    and report, timed, with the peak memory."""
    from pipeline.tools.bench_ensemble import bench_whole

    out = bench_whole(tmp_path, members=3, rows=300, classes=4, test_rows=40)
    printed = capsys.readouterr().out
    assert "make ensemble on 3 members x 300 rows x 4 classes (40 test rows)" in printed
    assert out["ensemble_s"] > 0 and 0 < out["peak_gib"] < 64
    sub = tmp_path / "submissions" / "bench" / "ensemble"
    assert (sub / "ensemble.json").is_file() and (sub / "report" / "report.html").is_file()
    assert len((sub / "submission.csv").read_text().splitlines()) == 41
