"""One end-to-end run through the CLI: folds -> train -> ensemble -> report -> submit (dry run)."""

import json
import tomllib

import numpy as np
import pandas as pd
import pytest

from pipeline.cli import main
from pipeline.competition.submission import validate_submission
from pipeline.ensemble.methods import METHODS

from .fakes import CLASSES, toy_workspace

RECIPE = 'backbone = "{b}"\nimage_size = 16\nepochs = 1\nbatch_size = 8\ntta = ["none", "hflip", "vflip", "scale"]\n'


@pytest.fixture
def workdir(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    runs = {"a": RECIPE.format(b="test_resnet"), "b": RECIPE.format(b="test_efficientnet")}
    return toy_workspace(tmp_path, runs, layout="cifar", n_per_class=6, n_test=5, k=None)


def test_cli_end_to_end(workdir, capsys):
    comp = ["--comp", "input/toy"]
    assert main(["folds", *comp, "--k", "2"]) == 0
    assert main(["train", *comp, "--runs", "a,b"]) == 0
    for run in ("a", "b"):
        rdir = workdir / "models" / "toy" / run
        cfg = tomllib.loads((rdir / "config.toml").read_text())
        assert cfg["recipe"]["epochs"] == 1 and len(cfg["folds_hash"]) == 16
        for f in (0, 1):
            fdir = rdir / f"fold{f}"
            for name in (
                "best.pt",
                "metrics.csv",
                "curves.png",
                "oof.npz",
                "test.npz",
                "done.json",
            ):
                assert (fdir / name).stat().st_size > 0, fdir / name
            assert not (fdir / "last.pt").exists()
            m = pd.read_csv(fdir / "metrics.csv")
            assert {"epoch", "train_loss", "val_acc", "lr", "img_per_s"} <= set(m.columns)
        with np.load(rdir / "oof.npz") as z:
            assert z["logits"].shape == (4, 18, 3) and z["logits"].dtype == np.float32
            assert z["ids"].tolist() == [str(i) for i in range(1, 19)]
            assert z["classes"].tolist() == CLASSES and sorted(set(z["fold"])) == [0, 1]
            assert z["views"].tolist() == ["none", "hflip", "vflip", "scale"]
            assert np.isfinite(z["logits"]).all()
        with np.load(rdir / "test.npz") as z:
            assert z["logits"].shape == (4, 5, 3)
    out = capsys.readouterr().out
    assert "OOF accuracy by view" in out

    assert main(["train", *comp, "--runs", "a"]) == 0  # finished folds are skipped
    assert "fold 0: done, skipped" in capsys.readouterr().out

    assert main(["ensemble", *comp, "--runs", "a b"]) == 0
    sub = workdir / "submissions" / "toy" / "ensemble"
    ens = json.loads((sub / "ensemble.json").read_text())
    assert ens["method"] in METHODS and 0 <= ens["nested_accuracy"] <= ens["oof_accuracy"] + 0.5
    assert [m["run"] for m in ens["members"]] == ["a", "b"]
    df = validate_submission(
        sub / "submission.csv", workdir / "input/toy/sampleSubmission.csv", CLASSES, "id", "label"
    )
    assert len(df) == 5
    for name in ("per_class.csv", "per_class_accuracy.png", "confusion_matrix.png"):
        assert (sub / "report" / name).stat().st_size > 0

    assert main(["report", *comp]) == 0
    assert main(["submit", *comp, "--dry-run"]) == 0
    out = capsys.readouterr().out
    assert "competitions submit -c toy -f" in out and "OOF=" in out


def test_cli_errors_are_one_line(workdir, capsys):
    assert main(["train", "--comp", "input/toy", "--runs", "a"]) == 2
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and "folds/toy.csv not found; run: make folds" in err
    assert main(["folds", "--comp", "input/nothere"]) == 2
    assert "competition folder input/nothere not found" in capsys.readouterr().err
    main(["folds", "--comp", "input/toy", "--k", "2"])
    assert main(["train", "--comp", "input/toy", "--runs", "zzz"]) == 2
    assert (
        "models/zzz.toml not found; recipes available in models/: a, b" in capsys.readouterr().err
    )
    assert main(["train", "--comp", "input/toy", "--runs", "a", "--folds", "7"]) == 2
    assert "FOLDS has fold 7" in capsys.readouterr().err


def test_changed_recipe_is_refused(workdir, capsys):
    main(["folds", "--comp", "input/toy", "--k", "2"])
    assert main(["train", "--comp", "input/toy", "--runs", "a", "--folds", "0"]) == 0
    assert "1 of 2 folds done" in capsys.readouterr().out
    assert main(["train", "--comp", "input/toy", "--runs", "a", "--set", "lr=0.1"]) == 2
    assert "recipe field 'lr' changed" in capsys.readouterr().err


def test_input_models_and_output_are_separate_roots(tmp_path, monkeypatch, capsys):
    """A Kaggle notebook's layout: read-only competition input, recipes and runs under one root,
    folds and submissions under another, caches under a third; nothing lands anywhere else."""
    kaggle = toy_workspace(
        tmp_path / "kaggle",
        {"a": RECIPE.format(b="test_resnet")},
        layout="cifar",
        n_per_class=6,
        n_test=5,
        k=None,
    )
    comp_dir = kaggle / "input" / "toy"
    models, out, cache = (kaggle / d for d in ("models", "working", "cache"))
    cwd = tmp_path / "elsewhere"
    cwd.mkdir()
    monkeypatch.chdir(cwd)
    before = sorted(p.relative_to(comp_dir) for p in comp_dir.rglob("*"))
    for p in [comp_dir, *comp_dir.rglob("*")]:
        p.chmod(0o555 if p.is_dir() else 0o444)
    try:
        roots = ["--comp", str(comp_dir), "--models", str(models), "--output", str(out)]
        roots += ["--cache", str(cache)]
        assert main(["folds", *roots, "--k", "2"]) == 0
        assert main(["train", *roots, "--runs", "a"]) == 0
        assert main(["ensemble", *roots, "--methods", "soft"]) == 0
        assert main(["submit", *roots, "--dry-run"]) == 0
    finally:
        for p in [comp_dir, *comp_dir.rglob("*")]:
            p.chmod(0o755 if p.is_dir() else 0o644)
    assert sorted(p.relative_to(comp_dir) for p in comp_dir.rglob("*")) == before
    assert list(cwd.iterdir()) == []
    assert (out / "folds" / "toy.csv").is_file() and (
        out / "folds" / "toy.duplicates.csv"
    ).is_file()
    assert (models / "toy" / "a" / "oof.npz").is_file() and not (models / "toy" / ".cache").exists()
    assert (cache / "train_16.u8").is_file() and (cache / "hashes_phash.csv").is_file()
    sub = out / "submissions" / "toy"
    assert (sub / "ensemble" / "submission.csv").is_file() and (sub / "ledger.csv").is_file()
    assert (sub / "ensemble" / "report" / "report.html").is_file()
    assert not (models / "folds").exists() and not (out / "models").exists()
