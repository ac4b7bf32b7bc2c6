"""Every common Kaggle image-classification layout, end to end in process: folds -> train ->
ensemble -> submit (dry run). Each competition is built in that exact layout with a learnable
signal (the class is a colour, the grade a brightness), K=2, 16 px, a tiny timm model; the
submission must pass the validator and its OOF score beat the constant baseline."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from PIL import Image

from pipeline.cli import main
from pipeline.competition import load_competition
from pipeline.competition.submission import validate_for, write_submission
from pipeline.ensemble.members import load_members
from pipeline.ensemble.state import load_state
from pipeline.workspace import Workspace

RECIPE = 'backbone = "test_resnet"\nimage_size = 16\nepochs = 6\nbatch_size = 8\nlr = 3e-3\ntta = ["none", "hflip"]\n'
PALETTE = np.array([[220, 40, 40], [40, 220, 40], [40, 40, 220], [220, 220, 40], [40, 220, 220]])


def _img(rng: np.random.Generator, k: int, ordinal: bool = False) -> Image.Image:
    """Class ``k`` as a colour (or, for grades, a brightness) plus noise."""
    img = rng.integers(0, 50, (16, 16, 3)).astype(np.int64)
    img[3:13, 3:13] += 40 + 45 * k if ordinal else PALETTE[k]
    return Image.fromarray(np.clip(img, 0, 255).astype(np.uint8))


def _write(rng, folder: Path, names: list[str], ks, ordinal: bool = False) -> None:
    """One image of class ``ks[n]`` per name into ``folder`` (JPEG at quality 95 by suffix)."""
    folder.mkdir(parents=True, exist_ok=True)
    for name, k in zip(names, ks, strict=True):
        opts = {"quality": 95} if name.endswith(".jpg") else {}
        _img(rng, k, ordinal).save(folder / name, **opts)


def _labels(n: int, classes: list[str], seed: int) -> tuple[np.random.Generator, list[int]]:
    rng = np.random.default_rng(seed)
    return rng, [i % len(classes) for i in range(n)]


def dog_breed(root: Path) -> dict:
    """labels.csv id,breed; train/<id>.jpg; sample: id + a probability column per breed."""
    classes = ["beagle", "collie", "pug"]
    rng, ks = _labels(36, classes, 0)
    ids = [f"{i:08x}" for i in range(36)]
    _write(rng, root / "train", [f"{i}.jpg" for i in ids], ks)
    test = [f"t{i:07x}" for i in range(6)]
    _write(rng, root / "test", [f"{i}.jpg" for i in test], [j % 3 for j in range(len(test))])
    pd.DataFrame({"id": ids, "breed": [classes[k] for k in ks]}).to_csv(
        root / "labels.csv", index=False
    )
    sample = pd.DataFrame({"id": test, **{c: 1 / 3 for c in classes}})
    sample.to_csv(root / "sample_submission.csv", index=False)
    return {"metric": "log_loss", "format": "class_probabilities"}


def plant_seedlings(root: Path) -> dict:
    """train/<Class Name>/<file>.png, no train CSV; flat test/; sample file,species."""
    classes = ["Black-grass", "Common wheat", "Fat Hen"]
    rng, ks = _labels(36, classes, 1)
    for n, k in enumerate(ks):
        (root / "train" / classes[k]).mkdir(parents=True, exist_ok=True)
        _img(rng, k).save(root / "train" / classes[k] / f"{n:05d}.png")
    (root / "test").mkdir()
    test = [f"{n:09x}.png" for n in range(6)]
    for j, name in enumerate(test):
        _img(rng, j % 3).save(root / "test" / name)
    pd.DataFrame({"file": test, "species": classes[0]}).to_csv(
        root / "sample_submission.csv", index=False
    )
    (root / "competition.toml").write_text('metric = "micro_f1"\n')
    return {"metric": "micro_f1", "format": "label"}


def aerial_cactus(root: Path) -> dict:
    """train.csv id (with .jpg),has_cactus; train/<id>; sample id,has_cactus = 0.5."""
    rng, ks = _labels(36, ["0", "1"], 2)
    ids = [f"{i:032x}.jpg" for i in range(36)]
    _write(rng, root / "train", ids, ks)
    test = [f"{i + 999:032x}.jpg" for i in range(6)]
    _write(rng, root / "test", test, [j % 2 for j in range(len(test))])
    pd.DataFrame({"id": ids, "has_cactus": ks}).to_csv(root / "train.csv", index=False)
    pd.DataFrame({"id": test, "has_cactus": 0.5}).to_csv(
        root / "sample_submission.csv", index=False
    )
    return {"metric": "roc_auc", "format": "probability"}


def histopathologic(root: Path) -> dict:
    """train_labels.csv id,label; train/<id>.tif; sample id,label = 0; metric from the toml."""
    rng, ks = _labels(36, ["0", "1"], 3)
    ids = [f"{i:040x}" for i in range(36)]
    _write(rng, root / "train", [f"{i}.tif" for i in ids], ks)
    test = [f"{i + 999:040x}" for i in range(6)]
    _write(rng, root / "test", [f"{i}.tif" for i in test], [j % 2 for j in range(len(test))])
    pd.DataFrame({"id": ids, "label": ks}).to_csv(root / "train_labels.csv", index=False)
    pd.DataFrame({"id": test, "label": 0}).to_csv(root / "sample_submission.csv", index=False)
    (root / "competition.toml").write_text('metric = "roc_auc"\n')
    return {"metric": "roc_auc", "format": "probability"}


def aptos(root: Path) -> dict:
    """train.csv id_code,diagnosis 0-4; train_images/<id>.png; sample id_code,diagnosis."""
    rng, ks = _labels(50, ["0", "1", "2", "3", "4"], 4)
    ids = [f"{i:012x}" for i in range(50)]
    _write(rng, root / "train_images", [f"{i}.png" for i in ids], ks, ordinal=True)
    test = [f"{i + 999:012x}" for i in range(6)]
    _write(
        rng,
        root / "test_images",
        [f"{i}.png" for i in test],
        [j % 5 for j in range(len(test))],
        ordinal=True,
    )
    pd.DataFrame({"id_code": ids, "diagnosis": ks}).to_csv(root / "train.csv", index=False)
    pd.DataFrame({"id_code": test, "diagnosis": 0}).to_csv(
        root / "sample_submission.csv", index=False
    )
    (root / "competition.toml").write_text('task = "ordinal"\n')
    return {"metric": "quadratic_kappa", "format": "label"}


def plant_pathology_2020(root: Path) -> dict:
    """train.csv image_id + one-hot columns; one images/ folder; sample: 4 probability columns."""
    classes = ["healthy", "multiple_diseases", "rust", "scab"]
    rng, ks = _labels(48, classes, 5)
    ids = [f"Train_{i}" for i in range(48)]
    _write(rng, root / "images", [f"{i}.jpg" for i in ids], ks)
    test = [f"Test_{i}" for i in range(8)]
    _write(rng, root / "images", [f"{i}.jpg" for i in test], [j % 4 for j in range(len(test))])
    onehot = np.eye(4, dtype=int)[ks]
    pd.DataFrame({"image_id": ids, **dict(zip(classes, onehot.T, strict=True))}).to_csv(
        root / "train.csv", index=False
    )
    pd.DataFrame({"image_id": test}).to_csv(root / "test.csv", index=False)
    pd.DataFrame({"image_id": test, **{c: 0.25 for c in classes}}).to_csv(
        root / "sample_submission.csv", index=False
    )
    return {"metric": "mean_column_auc", "format": "class_probabilities"}


def plant_pathology_2021(root: Path) -> dict:
    """train.csv image,labels (space-separated sets); train_images/; sample image,labels."""
    classes = ["complex", "healthy", "rust", "scab"]
    rng = np.random.default_rng(6)
    sets = [[0], [1], [2], [3], [2, 3], [0, 2]]
    for split in ("train_images", "test_images"):
        (root / split).mkdir(parents=True)

    def image(labels: list[int]) -> Image.Image:
        img = rng.integers(0, 50, (16, 16, 3)).astype(np.int64)
        for j in labels:  # each label paints its own quarter in its own colour
            r, c = divmod(j, 2)
            img[r * 8 : r * 8 + 8, c * 8 : c * 8 + 8] += PALETTE[j]
        return Image.fromarray(np.clip(img, 0, 255).astype(np.uint8))

    rows = [sets[i % len(sets)] for i in range(96)]
    ids = [f"{i:016x}.jpg" for i in range(96)]
    for i, labels in zip(ids, rows, strict=True):
        image(labels).save(root / "train_images" / i, quality=95)
    test = [f"{i + 999:016x}.jpg" for i in range(6)]
    for j, i in enumerate(test):
        image(sets[j]).save(root / "test_images" / i, quality=95)
    text = [" ".join(classes[j] for j in labels) for labels in rows]
    pd.DataFrame({"image": ids, "labels": text}).to_csv(root / "train.csv", index=False)
    pd.DataFrame({"image": test, "labels": "healthy"}).to_csv(
        root / "sample_submission.csv", index=False
    )
    return {"metric": "samples_f1", "format": "label_list"}


def state_farm(root: Path) -> dict:
    """driver_imgs_list.csv subject,classname,img with imgs/train/c0..c2/<img>; flat imgs/test/;
    sample img,c0,c1,c2; subjects (drivers) must stay inside one fold."""
    classes = ["c0", "c1", "c2"]
    rng, ks = _labels(36, classes, 8)
    rows = []
    for n, k in enumerate(ks):
        name = f"img_{n}.jpg"
        _img(rng, k).save(_mkdir(root / "imgs" / "train" / classes[k]) / name, quality=95)
        rows.append((f"p{n % 6:03d}", classes[k], name))
    test = [f"img_{100 + j}.jpg" for j in range(6)]
    for j, name in enumerate(test):
        _img(rng, j % 3).save(_mkdir(root / "imgs" / "test") / name, quality=95)
    pd.DataFrame(rows, columns=["subject", "classname", "img"]).to_csv(
        root / "driver_imgs_list.csv", index=False
    )
    pd.DataFrame({"img": test, **{c: 1 / 3 for c in classes}}).to_csv(
        root / "sample_submission.csv", index=False
    )
    (root / "competition.toml").write_text('group_column = "subject"\n')
    return {"metric": "log_loss", "format": "class_probabilities"}


def _mkdir(path: Path) -> Path:
    path.mkdir(parents=True, exist_ok=True)
    return path


# the constant prediction's score, and by how much a trained ensemble must beat it
BASELINE = {
    "log_loss": ("prior", -0.2),  # at least 0.2 nats below the class prior's log loss
    "micro_f1": (1 / 3, 0.3),
    "roc_auc": (0.5, 0.3),
    "quadratic_kappa": (0.0, 0.4),
    "mean_column_auc": (0.5, 0.3),
    "samples_f1": ("constant", 0.25),  # the best single label set for every row, + 0.25
}


@pytest.mark.slow
@pytest.mark.parametrize(
    "build",
    [
        dog_breed,
        plant_seedlings,
        aerial_cactus,
        histopathologic,
        aptos,
        plant_pathology_2020,
        plant_pathology_2021,
        state_farm,
    ],
)
def test_format_end_to_end(build, tmp_path, monkeypatch, capsys):
    comp_dir = tmp_path / "input" / build.__name__
    want = build(comp_dir)
    monkeypatch.chdir(tmp_path)
    (tmp_path / "models").mkdir()
    (tmp_path / "models" / "tiny.toml").write_text(RECIPE)
    comp = ["--comp", str(comp_dir)]
    assert main(["folds", *comp, "--k", "2"]) == 0
    first = capsys.readouterr().out.splitlines()[0]
    assert f"metric {want['metric']}" in first and f"submission {want['format']}" in first
    assert main(["train", *comp, "--runs", "tiny"]) == 0
    assert main(["ensemble", *comp, "--methods", "soft weighted caruana"]) == 0
    assert main(["submit", *comp, "--dry-run"]) == 0
    out = capsys.readouterr().out
    c = load_competition(comp_dir)
    sub_dir = tmp_path / "submissions" / build.__name__ / "ensemble"
    validate_for(c, sub_dir / "submission.csv")
    ens = json.loads((sub_dir / "ensemble.json").read_text())
    # the saved, pickle-free ensemble state rewrites the same submission from the members' logits
    state, est = load_state(sub_dir, "make ensemble")
    _, members = load_members(c, Workspace(c.name), state["members"])
    assert [m["view"] for m in members.summaries] == state["views"]
    probs = est.predict_proba(members.test)
    again = write_submission(c, tmp_path / "again.csv", probs.argmax(1), probs)
    assert again.read_bytes() == (sub_dir / "submission.csv").read_bytes()
    assert ens["metric"] == want["metric"] and ens["format"] == want["format"]
    # make predict, from the saved artifacts and the test images alone, writes the same file
    to = tmp_path / "predicted" / "submission.csv"
    assert main(["predict", *comp, "--test", str(comp_dir), "--to", str(to)]) == 0
    made, predicted = pd.read_csv(sub_dir / "submission.csv"), pd.read_csv(to)
    assert list(predicted.columns) == list(made.columns)
    for col in made.columns:
        if made[col].dtype.kind == "f":
            assert np.abs(predicted[col] - made[col]).max() < 1e-5, col
        else:
            assert predicted[col].equals(made[col]), col
    base, margin = BASELINE[want["metric"]]
    nested = ens["nested_score"]  # the chosen ensemble, scored without its own fold
    if base == "constant":
        from pipeline.competition.metrics import samples_f1
        from pipeline.competition.task import encode

        y = encode(c.train["label"], c.classes, "multilabel")
        subsets = [np.array(list(map(int, f"{m:0{len(c.classes)}b}"))) for m in range(1, 16)]
        base = max(samples_f1(y, np.tile(s, (len(y), 1))) for s in subsets)
    if base == "prior":
        prior = c.train["label"].value_counts(normalize=True).reindex(c.classes).to_numpy()
        base = float(-(np.log(prior[pd.Index(c.classes).get_indexer(c.train["label"])])).mean())
        assert nested < base + margin, (ens["leaderboard"], base)
    else:
        assert nested > base + margin, (ens["leaderboard"], base)
    assert f"{want['metric']}" in out or want["metric"] == "accuracy"


def test_state_farm_class_folders_and_subject_groups(tmp_path, monkeypatch):
    comp_dir = tmp_path / "input" / "state_farm"
    state_farm(comp_dir)
    c = load_competition(comp_dir)
    assert c.train["path"][0] == f"imgs/train/{c.train['label'][0]}/img_0.jpg"
    assert c.test["path"][0] == "imgs/test/img_100.jpg"
    monkeypatch.chdir(tmp_path)
    assert main(["folds", "--comp", str(comp_dir), "--k", "3"]) == 0
    folds = pd.read_csv(tmp_path / "folds" / "state_farm.csv")
    subject = c.train.set_index("id")["group"][folds["id"]].to_numpy()
    assert (pd.Series(folds["fold"].to_numpy()).groupby(subject).nunique() == 1).all()
    (comp_dir / "competition.toml").write_text('group_column = "driver"\n')
    with pytest.raises(
        Exception, match=r"group_column = 'driver' is not a column of driver_imgs_list.csv"
    ):
        load_competition(comp_dir)
