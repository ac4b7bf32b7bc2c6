"""Partial members: the frozen trunk's activations cached once (with a feature member's
embeddings as a by-product), the last stage and head tuned per fold, a whole-network best.pt
that predicts the fold's logits, exact resume, and the refusals."""

import json
import shutil
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import timm
import torch

from pipeline.cli import main
from pipeline.competition.load import load_competition
from pipeline.config import Recipe, load_recipe
from pipeline.errors import RecipeError
from pipeline.model.backbone import create_model, data_config
from pipeline.model.infer import predict
from pipeline.train import fold as train_fold
from pipeline.train.cache import build_cache
from pipeline.train.kinds.activations import split_model

from .events import assert_epochs_match_metrics
from .fakes import CLASSES, toy_workspace

RECIPE = """kind = "partial"
backbone = "test_efficientnet"
pretrained_file = "models/pretrained/test_efficientnet.safetensors"
image_size = 24
batch_size = 8
epochs = 2
lr = 3e-3
tta = ["none", "hflip"]
"""


@pytest.fixture
def workdir(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    features = RECIPE.replace('"partial"', '"features"').split("epochs")[0]
    runs = {"p": RECIPE, "f": features + 'tta = ["none", "hflip"]\n'}
    return toy_workspace(tmp_path, runs, k=3, pretrained=("test_efficientnet",))


def test_split_shares_the_modules_and_computes_the_whole_network():
    model = timm.create_model("test_efficientnet", num_classes=3).eval()
    trunk, tail = split_model(model, 1)
    x = torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        torch.testing.assert_close(tail(trunk(x)), model(x))
    assert tail.blocks[0] is model.blocks[-1] and tail.get_classifier() is model.get_classifier()
    assert not {id(p) for p in trunk.parameters()} & {id(p) for p in tail.parameters()}
    with pytest.raises(RecipeError, match="train_stages = 5: EfficientNet has 5 stages; tune"):
        split_model(model, 5)
    with pytest.raises(RecipeError, match='ResNet has neither: use kind = "features" or'):
        split_model(timm.create_model("test_resnet"), 1)


def test_partial_member_contract_shared_trunk_pass_resume_and_predict(workdir, capsys, monkeypatch):
    comp = ["--comp", "input/toy"]
    assert main(["train", *comp, "--runs", "p", "--track", "tensorboard"]) == 0
    out = capsys.readouterr().out
    assert "cached test_efficientnet @24px trunk activations (all but 1 stage(s)) of 24" in out
    assert "last 1 stage(s) and head tuned for 2 epochs" in out
    rdir = workdir / "models" / "toy" / "p"
    with np.load(rdir / "oof.npz") as z:
        assert z["logits"].shape == (2, 24, 3) and z["views"].tolist() == ["none", "hflip"]
        assert z["classes"].tolist() == CLASSES and sorted(set(z["fold"])) == [0, 1, 2]
        oof = {str(i): z["logits"][:, n] for n, i in enumerate(z["ids"])}
    done = json.loads((rdir / "fold1" / "done.json").read_text())
    assert done["kind"] == "partial" and done["epochs"] == done["best_epoch"] == 2
    assert done["holdout_used"] is False and done["train_stages"] == 1
    metrics = (rdir / "fold1" / "metrics.csv").read_text().splitlines()
    assert len(metrics) == 3 and metrics[0].startswith("epoch,train_loss,train_acc,lr,img_per_s")
    for fold in range(3):  # each epoch's row in TensorBoard (TensorBoard's reader)
        assert_epochs_match_metrics(rdir / f"fold{fold}")
    assert (rdir / "fold1" / "curves.png").is_file() and not (rdir / "fold1" / "last.pt").exists()

    # the trunk pass wrote the feature member's embeddings too: it embeds nothing
    assert main(["train", *comp, "--runs", "f"]) == 0
    assert "embedded" not in capsys.readouterr().out

    # best.pt is the whole network: from the images it predicts the fold's logits (the
    # cached activations are float16, hence the tolerance)
    recipe = load_recipe(workdir / "models" / "p.toml")
    model = create_model(recipe, 3).eval()
    model.load_state_dict(torch.load(rdir / "fold1" / "best.pt", weights_only=True)["model"])
    with np.load(rdir / "fold1" / "oof.npz") as z:
        ids, fold_logits = z["ids"].astype(str), z["logits"]
    train = load_competition(workdir / "input" / "toy").train.set_index("id")
    imgs = build_cache(
        workdir / "input" / "toy", train.loc[ids, "path"].tolist(), 24, workdir / "c.u8"
    )
    cfg = data_config(model, recipe)
    norm = (torch.tensor(cfg["mean"]), torch.tensor(cfg["std"]))
    again = predict(
        model, imgs, np.arange(len(ids)), ("none", "hflip"), norm, torch.device("cpu"), 8
    )
    np.testing.assert_allclose(again, fold_logits, atol=2e-2, rtol=1e-2)
    untuned = create_model(recipe, 3).eval()  # the tail did train: weights moved
    moved = [
        (k, v)
        for k, v in model.state_dict().items()
        if k.startswith("blocks.4.") and v.dtype.is_floating_point
    ]
    assert any(not torch.equal(v, untuned.state_dict()[k]) for k, v in moved)
    assert all(
        torch.equal(v, untuned.state_dict()[k])
        for k, v in model.state_dict().items()
        if k.startswith("blocks.0.") and v.dtype.is_floating_point
    )

    # a fold that dies right after its first last.pt (epoch 1) resumes from it and ends with
    # the same logits (tests/test_resume.py kills a fine-tune with SIGKILL in a subprocess; the
    # same point here, in process, keeps the suite fast)
    for name in ("done.json", "oof.npz", "test.npz", "best.pt"):
        (rdir / "fold1" / name).unlink()
    (rdir / "oof.npz").unlink()
    real = train_fold.save_torch  # the epoch driver's, which writes last.pt

    class Killed(Exception):
        pass

    def dies(path, obj):
        real(path, obj)
        if path.name == "last.pt" and path.parent.name == "fold1":
            raise Killed

    monkeypatch.setattr(train_fold, "save_torch", dies)
    with pytest.raises(Killed):
        main(["train", *comp, "--runs", "p"])
    monkeypatch.setattr(train_fold, "save_torch", real)
    assert torch.load(rdir / "fold1" / "last.pt", weights_only=True)["epoch"] == 0
    assert main(["train", *comp, "--runs", "p"]) == 0
    out = capsys.readouterr().out
    assert "resuming" in out and "cached" not in out
    with np.load(rdir / "oof.npz") as z:
        for n, i in enumerate(z["ids"]):
            np.testing.assert_array_equal(z["logits"][:, n], oof[str(i)])

    # ensembled, then make predict on the test folder: each fold's whole-network best.pt (no
    # pretrained file needed) rewrites the ensemble's submission from the images
    assert main(["ensemble", *comp, "--runs", "p", "--methods", "soft", "--no-report"]) == 0
    (workdir / "models" / "pretrained" / "test_efficientnet.safetensors").unlink()
    to = workdir / "pred" / "submission.csv"
    assert main(["predict", *comp, "--test", "input/toy", "--to", str(to)]) == 0
    made = pd.read_csv(workdir / "submissions" / "toy" / "ensemble" / "submission.csv")
    assert pd.read_csv(to).equals(made)


def test_partial_recipe_refusals(workdir, capsys):
    models = workdir / "models"
    (models / "raw.toml").write_text('kind = "partial"\nbackbone = "test_efficientnet"\n')
    (models / "res.toml").write_text(RECIPE.replace("test_efficientnet", "test_resnet"))
    (models / "deep.toml").write_text(RECIPE + "train_stages = 9\n")
    for run, says in (
        ("raw", 'raw.toml: kind = "partial" embeds with a frozen pretrained backbone: set'),
        ("res", 'res.toml: kind = "partial" splits a network at its stages'),
        ("deep", "deep.toml: train_stages = 9: EfficientNet has 5 stages; tune between 1 and 4"),
    ):
        assert main(["train", "--comp", "input/toy", "--runs", run]) == 2
        assert says in capsys.readouterr().err
    assert Recipe(kind="partial").train_stages == 1


def test_a_full_disk_when_the_activation_cache_reserves_and_a_damaged_one(
    workdir, capsys, monkeypatch
):
    """The trunk activations are a memory map, so their space is reserved first; a
    refusal is one line naming the cache, nothing partial stays, and the re-run equals a clean
    run. A truncated cache is said and rebuilt."""
    import pipeline.disk.space

    seen = []
    real = pipeline.disk.space.fail_point

    def record(kind, path):
        if kind == "fallocate":
            seen.append(Path(path))
        real(kind, path)

    monkeypatch.setattr(pipeline.disk.space, "fail_point", record)
    assert main(["train", "--comp", "input/toy", "--runs", "p", "--folds", "0"]) == 0
    acts = [p for p in seen if p.name.startswith("acts")]
    assert [p.name for p in acts] == [
        "acts1_train_none.npy",
        "acts1_train_hflip.npy",
        "acts1_test_none.npy",
        "acts1_test_hflip.npy",
    ]
    clean = {n: np.load(f"models/toy/p/fold0/{n}")["logits"] for n in ("oof.npz", "test.npz")}
    shutil.rmtree("models/toy/p")
    shutil.rmtree("models/toy/embeddings")
    monkeypatch.setenv("PIPELINE_FAIL_AT", f"fallocate:{acts[1].parent.name}/{acts[1].name}")
    capsys.readouterr()
    assert main(["train", "--comp", "input/toy", "--runs", "p", "--folds", "0"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith(f"error: disk full writing {acts[1]} (needs "), err
    assert not list(acts[1].parent.glob("*.tmp")) and not acts[1].exists()
    assert acts[0].is_file()  # the view written before it is kept, and read by the re-run
    monkeypatch.delenv("PIPELINE_FAIL_AT")
    assert main(["train", "--comp", "input/toy", "--runs", "p", "--folds", "0"]) == 0
    for n, want in clean.items():
        np.testing.assert_array_equal(np.load(f"models/toy/p/fold0/{n}")["logits"], want)

    with open(acts[0], "r+b") as f:  # truncated: the header says more than the file holds
        f.truncate(acts[0].stat().st_size - 64)
    shutil.rmtree("models/toy/p/fold1", ignore_errors=True)
    capsys.readouterr()
    assert main(["train", "--comp", "input/toy", "--runs", "p", "--folds", "1"]) == 0
    assert f"activation cache {acts[0]} is damaged" in capsys.readouterr().out
