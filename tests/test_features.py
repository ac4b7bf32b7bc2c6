"""Frozen-feature members: embeddings cached and shared, linear heads per fold, the logits
contract of fine-tuned folds, a folded best.pt that predicts the same logits, and resume."""

import json
import tomllib

import numpy as np
import pytest
import torch

from pipeline.cli import main
from pipeline.competition.load import load_competition
from pipeline.config import load_recipe
from pipeline.model.backbone import create_model, data_config
from pipeline.model.infer import predict
from pipeline.train.cache import build_cache
from pipeline.train.kinds import heads as features

from .events import scalars
from .fakes import CLASSES, toy_workspace

RECIPE = """kind = "features"
backbone = "test_resnet"
pretrained_file = "models/pretrained/test_resnet.safetensors"
image_size = 24
batch_size = 16
tta = ["none", "hflip"]
"""


@pytest.fixture
def workdir(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    return toy_workspace(
        tmp_path, {"f": RECIPE}, n_per_class=12, n_test=6, k=3, pretrained=("test_resnet",)
    )


def test_feature_member_contract_folded_checkpoint_and_resume(workdir, capsys):
    comp = ["--comp", "input/toy"]
    assert main(["train", *comp, "--runs", "f", "--track", "tensorboard"]) == 0
    rdir = workdir / "models" / "toy" / "f"
    with np.load(rdir / "oof.npz") as z:
        assert z["logits"].shape == (2, 36, 3) and z["logits"].dtype == np.float32
        assert z["classes"].tolist() == CLASSES and sorted(set(z["fold"])) == [0, 1, 2]
        assert z["views"].tolist() == ["none", "hflip"] and str(z["task"]) == "multiclass"
        oof = {str(i): z["logits"][:, n] for n, i in enumerate(z["ids"])}
    with np.load(rdir / "test.npz") as z:
        assert z["logits"].shape == (2, 6, 3)
    done = json.loads((rdir / "fold1" / "done.json").read_text())
    assert done["l2_inner"] in features.L2_PATH and done["l2_path"][0]["l2"] == features.L2_PATH[0]
    assert done["l2"] == pytest.approx(done["l2_inner"] / 2)  # K=3: inner 12 of 24 training rows
    assert done["kind"] == "features" and done["l2_inner_val"] == 2  # never fold 1 itself
    assert done["holdout_used"] is False and done["pseudo_labels"] == 0
    assert done["val_acc"] > 0.5  # the class blob is linearly visible in random-net features
    # TensorBoard (TensorBoard's reader): the L2 path as the inner score per L2, and the val row
    events = scalars(rdir / "fold1")
    path = done["l2_path"]
    assert events["l2_path/inner_accuracy"] == [
        (i, pytest.approx(p["inner_score"], abs=1e-6)) for i, p in enumerate(path, 1)
    ]
    assert [v for _, v in events["l2_path/l2"]] == pytest.approx([p["l2"] for p in path])
    assert events["val/accuracy"] == [(1, pytest.approx(done["val_acc"], abs=1e-6))]
    out = capsys.readouterr().out
    assert "embedded 36 train images x 2 views" in out and "OOF accuracy by view" in out

    # once every fold is done, one head on all rows at the folds' L2 rescaled to all rows:
    # its test logits are the run's (not the folds' mean), the OOF logits stay the folds'
    assert "f: test logits from one head on all 36 rows (L2 " in out
    assert "test.npz (test: its model on all rows)" in out
    full = json.loads((rdir / "full" / "done.json").read_text())
    folds = [json.loads((rdir / f"fold{f}" / "done.json").read_text()) for f in range(3)]
    assert full["l2"] == pytest.approx(np.mean([d["l2"] for d in folds]) * 24 / 36)
    assert full["rows"] == 36 and full["holdout_used"] is False
    with np.load(rdir / "test.npz") as z, np.load(rdir / "full" / "test.npz") as a:
        np.testing.assert_array_equal(z["logits"], a["logits"])
        test_logits = z["logits"]
    mean = np.mean([np.load(rdir / f"fold{f}" / "test.npz")["logits"] for f in range(3)], 0)
    assert np.abs(test_logits - mean).max() > 1e-3
    with np.load(rdir / "fold2" / "oof.npz") as z:
        for n, i in enumerate(z["ids"]):
            np.testing.assert_array_equal(z["logits"][:, n], oof[str(i)])

    # best.pt is the whole network with the head folded into its classifier: it predicts OOF
    recipe = load_recipe(workdir / "models" / "f.toml")
    model = create_model(recipe, 3)
    model.load_state_dict(torch.load(rdir / "fold1" / "best.pt", weights_only=True)["model"])
    with np.load(rdir / "fold1" / "oof.npz") as z:
        ids, fold_logits = z["ids"].astype(str), z["logits"]
    train = load_competition(workdir / "input" / "toy").train.set_index("id")
    paths = train.loc[ids, "path"].tolist()
    imgs = build_cache(workdir / "input" / "toy", paths, 24, workdir / "cache.u8")
    cfg = data_config(model, recipe)
    norm = (torch.tensor(cfg["mean"]), torch.tensor(cfg["std"]))
    again = predict(
        model, imgs, np.arange(len(ids)), ("none", "hflip"), norm, torch.device("cpu"), 8
    )
    np.testing.assert_allclose(again, fold_logits, atol=2e-4)
    # the folded all-rows head predicts the run's test logits from pixels the same way
    model.load_state_dict(torch.load(rdir / "full" / "best.pt", weights_only=True)["model"])
    test = load_competition(workdir / "input" / "toy").test
    imgs = build_cache(workdir / "input" / "toy", test["path"].tolist(), 24, workdir / "t.u8")
    again = predict(model, imgs, np.arange(len(test)), ("none", "hflip"), norm, "cpu", 8)
    np.testing.assert_allclose(again, test_logits, atol=2e-4)

    # resume: a fold redone later reuses the cached embeddings and gives the same logits
    emb = sorted((workdir / "models" / "toy" / "embeddings").glob("*/*.npz"))
    assert [p.name for p in emb] == [
        "test_hflip.npz",
        "test_none.npz",
        "train_hflip.npz",
        "train_none.npz",
    ]
    stamps = [p.stat().st_mtime_ns for p in emb]
    for name in ("done.json", "oof.npz", "test.npz", "best.pt"):
        (rdir / "fold1" / name).unlink()
    (rdir / "oof.npz").unlink()
    assert main(["train", *comp, "--runs", "f"]) == 0
    out = capsys.readouterr().out
    assert "embedded" not in out
    assert "one head on all" not in out  # the same fold weights: the all-rows head is current
    assert [p.stat().st_mtime_ns for p in emb] == stamps
    with np.load(rdir / "oof.npz") as z:
        for n, i in enumerate(z["ids"]):
            np.testing.assert_array_equal(z["logits"][:, n], oof[str(i)])
    # a fold with other weights than the all-rows head was fitted after: refitted
    done1 = rdir / "fold1" / "done.json"
    done1.write_text(json.dumps({**folds[1], "best_sha256": "0" * 64}))
    assert main(["train", *comp, "--runs", "f"]) == 0
    assert "f: test logits from one head on all 36 rows" in capsys.readouterr().out
    # folds trained elsewhere (EXECUTOR=kaggle) leave no embeddings here: said, not rebuilt
    emb[0].unlink()
    done1.write_text(json.dumps({**folds[1], "best_sha256": "1" * 64}))
    assert main(["train", *comp, "--runs", "f"]) == 0
    out = capsys.readouterr().out
    assert "f: its embeddings are not on this machine (the folds ran elsewhere)" in out
    assert "embedded" not in out and not emb[0].exists()
    assert not (rdir / "full" / "done.json").exists()  # the stale all-rows head is retired
    with np.load(rdir / "test.npz") as z:
        np.testing.assert_allclose(z["logits"], mean, atol=1e-6)  # the folds' mean again


def test_embeddings_for_other_images_are_rebuilt(tmp_path):
    path = tmp_path / "e.npz"
    features_ = np.ones((4, 3), dtype=np.float32)
    from pipeline import artifacts

    artifacts.write_embedding(path, features_, "abc")
    np.testing.assert_array_equal(artifacts.read_embedding(path, "abc"), features_)
    assert artifacts.read_embedding(path, "other ids") is None
    path.write_bytes(b"not a zip")
    assert artifacts.read_embedding(path, "abc") is None


def test_linear_head_fits_warm_starts_and_folds():
    rng = np.random.default_rng(0)
    centers = rng.normal(size=(3, 8)) * 3
    y = rng.integers(0, 3, 300)
    x = (centers[y] + rng.normal(size=(300, 8)) + 5).astype(np.float32)
    head = features.fit_head(x, y, 3, 1e-3, multilabel=False)
    assert (head.logits(x).argmax(1).numpy() == y).mean() > 0.95
    warm = features.fit_head(x, y, 3, 1e-3, multilabel=False, init=head, max_iter=5)
    np.testing.assert_allclose(warm.weight, head.weight, atol=1e-2)
    w, b = head.folded()  # the same map on raw features
    np.testing.assert_allclose(x @ w.numpy().T + b.numpy(), head.logits(x).numpy(), atol=1e-3)
    strong = features.fit_head(x, y, 3, 10.0, multilabel=False)
    assert strong.weight.norm() < head.weight.norm() / 3  # L2 shrinks

    labels = np.stack([y == 0, y != 1, np.zeros_like(y, dtype=bool)], 1).astype(np.int64)
    multi = features.fit_head(x, labels, 3, 1e-3, multilabel=True)
    assert ((multi.logits(x).numpy() > 0) == labels.astype(bool)).mean() > 0.95


def test_feature_recipe_needs_pretrained_weights(workdir, capsys):
    """Refused by the train stage, which checks each recipe with its kind before anything runs."""
    (workdir / "models" / "raw.toml").write_text('kind = "features"\nbackbone = "test_resnet"\n')
    assert main(["train", "--comp", "input/toy", "--runs", "raw"]) == 2
    err = capsys.readouterr().err
    assert 'raw.toml: kind = "features" embeds with a frozen pretrained backbone: set' in err
    (workdir / "models" / "frozen.toml").write_text('kind = "frozen"\n')
    assert main(["train", "--comp", "input/toy", "--runs", "frozen"]) == 2
    err = capsys.readouterr().err
    assert "frozen.toml: kind = 'frozen' is not a registered member kind; use one of" in err
    assert not list((workdir / "models" / "toy").glob("*/config.toml"))  # nothing trained


def test_a_feature_member_predicts_like_any_member(workdir, capsys):
    """Ensembled, then ``make predict`` on the test folder: the folded best.pt of the all-rows
    head (loaded without the pretrained file) rewrites the ensemble's submission."""
    import pandas as pd

    comp = ["--comp", "input/toy"]
    assert main(["train", *comp, "--runs", "f"]) == 0
    assert main(["ensemble", *comp, "--runs", "f", "--methods", "soft", "--no-report"]) == 0
    (workdir / "models" / "pretrained" / "test_resnet.safetensors").unlink()  # not needed
    to = workdir / "pred" / "submission.csv"
    assert main(["predict", *comp, "--test", "input/toy", "--to", str(to)]) == 0
    assert "; f all rows none+hflip; " in capsys.readouterr().out  # the all-rows model predicts
    made = pd.read_csv(workdir / "submissions" / "toy" / "ensemble" / "submission.csv")
    assert pd.read_csv(to).equals(made)
    # the package ships the all-rows model alone, and predicts from it the same way
    assert main(["package", *comp, "--owner", "me", "--dry-run"]) == 0
    run = workdir / "package" / "toy" / "ensemble" / "dataset" / "models" / "toy" / "f"
    assert sorted(p.name for p in run.iterdir()) == ["config.toml", "full", "member.json"]
    assert sorted(p.name for p in (run / "full").iterdir()) == ["done.json", "weights.safetensors"]


def test_a_feature_member_has_a_learning_curve(workdir):
    """make curve fits a feature recipe's fold-0 heads on the subsets (it does not fine-tune)."""
    comp = ["--comp", "input/toy"]
    assert main(["curve", *comp, "--run", "f", "--fractions", "0.5"]) == 0
    done = json.loads((workdir / "models/toy/f/curve/frac050/fold0/done.json").read_text())
    assert done["kind"] == "features" and done["epochs"] == 1
    curve = (workdir / "models/toy/f/curve/curve.csv").read_text().splitlines()
    assert len(curve) == 2 and curve[1].startswith("0.5,12,accuracy,")


def test_budget_plan_estimates_feature_members_and_picks_by_value(workdir, capsys):
    """Each feature member's probe fits a head on half of its embedded sample and scores the
    other half; with an estimate for every run the plan is the best-valued set that fits."""
    (workdir / "models" / "g.toml").write_text(RECIPE.replace("image_size = 24", "image_size = 16"))
    args = ["train", "--comp", "input/toy", "--runs", "f g", "--budget", "30m", "--folds", "0"]
    assert main(args) == 0
    out = capsys.readouterr().out
    assert "est." in out and "chosen by the estimated ensemble accuracy: " in out
    plan = tomllib.loads((workdir / "models" / "toy" / "plan.toml").read_text())
    kept = list(plan["runs"])
    assert kept and all(0 <= plan["runs"][r]["estimate"] <= 1 for r in kept)
    for r in plan.get("left_out", []):
        assert "estimate" in plan["left_out_costs"][r]
