from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from PIL import Image

from pipeline.competition import load_competition
from pipeline.competition.images import load_rgb
from pipeline.errors import CompetitionError, PipelineError

from .fakes import CLASSES, SHARED


def test_leaves_layout(leaves):
    c = load_competition(leaves)
    assert (c.id_col, c.target_col, c.train_csv.name) == ("image", "label", "train.csv")
    assert c.classes == CLASSES and len(c.train) == 18 and len(c.test) == 5
    assert c.train["path"].iloc[0] == "images/0.jpg" and c.slug == "leaves"


def test_cifar_layout_picks_test_folder_for_overlapping_ids(cifar):
    c = load_competition(cifar)
    assert (c.id_col, c.train_csv.name) == ("id", "trainLabels.csv")
    assert c.train["path"].iloc[0] == "train/1.png"
    assert c.test["path"].tolist() == [f"test/{i}.png" for i in range(1, 6)]


def test_gray_and_rgba_become_rgb(cifar):
    for name in ("2.png", "3.png"):
        img = load_rgb(cifar / "train" / name)
        assert img.shape == (16, 16, 3) and img.dtype == np.uint8


def test_16bit_image_is_scaled(tmp_path):
    a = (np.arange(64, dtype=np.uint16).reshape(8, 8) * 1000).astype(np.uint16)
    Image.fromarray(a).save(tmp_path / "x.png")
    img = load_rgb(tmp_path / "x.png")
    # full 16-bit range to 8 bits (x * 255 / 65535), the same for every image: 63000 -> 245
    assert img.shape == (8, 8, 3) and img.max() == 245 and img[0, 1, 0] == 4


def test_any_folder_name_and_competition_toml(cifar):
    (cifar / "train").rename(cifar / "pics_a")
    assert load_competition(cifar).train["path"].iloc[0] == "pics_a/1.png"
    (cifar / "competition.toml").write_text('train_images = "test"\nslug = "cifar-10"\n')
    with pytest.raises(CompetitionError, match=r"csv row 7: no image test/6\.<.* 13 more"):
        load_competition(cifar)
    (cifar / "competition.toml").write_text('train_images = "pics_a"\nslug = "cifar-10"\n')
    c = load_competition(cifar)
    assert c.train["path"].iloc[0] == "pics_a/1.png" and c.slug == "cifar-10"


def test_bom_and_whitespace_are_stripped(leaves):
    text = (leaves / "train.csv").read_text().replace("image,label", "\ufeffimage , label ")
    (leaves / "train.csv").write_text(text.replace(",cat", ", cat "))
    c = load_competition(leaves)
    assert c.classes == CLASSES


def _drop_sample(p: Path):
    (p / "sample_submission.csv").unlink()


def _second_train(p: Path):
    pd.read_csv(p / "train.csv").to_csv(p / "labels_a.csv", index=False)
    (p / "train.csv").rename(p / "labels_b.csv")


def _empty_label(p: Path):
    df = pd.read_csv(p / "train.csv")
    df.loc[3, "label"] = ""
    df.to_csv(p / "train.csv", index=False)


def _dup_id(p: Path):
    df = pd.read_csv(p / "train.csv")
    df.loc[4, "image"] = df.loc[1, "image"]
    df.to_csv(p / "train.csv", index=False)


def _missing_image(p: Path):
    (p / "images" / "5.jpg").unlink()


def _escape(p: Path):
    df = pd.read_csv(p / "train.csv")
    df.loc[0, "image"] = "../../etc/passwd.jpg"
    df.to_csv(p / "train.csv", index=False)


def _bad_toml(p: Path):
    (p / "competition.toml").write_text('train_file = "x.csv"\n')


def _three_col_sample(p: Path):
    df = pd.read_csv(p / "sample_submission.csv")
    df["extra"] = 1
    df.to_csv(p / "sample_submission.csv", index=False)


def _renamed_column(p: Path):
    df = pd.read_csv(p / "train.csv").rename(columns={"label": "species"})
    df.to_csv(p / "train.csv", index=False)


def _empty_train(p: Path):
    (p / "train.csv").write_text("image,label\n")


@pytest.mark.parametrize(
    "damage, message",
    [
        (_drop_sample, r"found no sample submission among CSVs \[test.csv, train.csv\]"),
        (_second_train, r"expected one train CSV .* found 2 .*set train_csv"),
        (_empty_label, r"train.csv row 5: empty 'label' for id 'images/3.jpg'"),
        (_dup_id, r"train.csv row 6: duplicate id 'images/1.jpg'"),
        (_missing_image, r"train.csv row 7: image .*leaves/images/5.jpg not found"),
        (_escape, r"points outside .*ids must stay inside the competition folder"),
        (_bad_toml, r"competition.toml: unknown key 'train_file'; valid keys: slug"),
        (_three_col_sample, r"cannot tell the label column .*set target_column"),
        (_renamed_column, r"expected one train CSV with columns 'image' and 'label'"),
        (_empty_train, r"train.csv has a header but no rows"),
    ],
)
def test_error_table(leaves, damage, message):
    damage(leaves)
    with pytest.raises(CompetitionError, match=message):
        load_competition(leaves)


def test_missing_folder_names_the_download(tmp_path):
    with pytest.raises(PipelineError, match="kaggle competitions download"):
        load_competition(tmp_path / "nope")


@pytest.mark.shared
@pytest.mark.parametrize(
    "name, n_train, n_test, n_cls",
    [("cifar10", 20000, 5000, 10), ("tinyimagenet176", 18353, 8800, 176)],
)
def test_shared_competitions(name, n_train, n_test, n_cls):
    if not (SHARED / name).is_dir():
        pytest.skip("../shared/data not present")
    c = load_competition(SHARED / name)
    assert (len(c.train), len(c.test), len(c.classes)) == (n_train, n_test, n_cls)
