"""The corpus of malformed competitions: each kind is refused with one clear line, or handled.

Every kind builds a tiny competition with the writers of ``fakes.py``, damages it, and runs both
the cheap path every stage takes (``load_competition``) and ``make check`` (``check_stage``). The
README section "Malformed competitions" lists the same kinds.
"""

from __future__ import annotations

import re
import shutil
import struct
import zlib
from pathlib import Path

import cv2
import numpy as np
import pandas as pd
import pytest
from PIL import Image

from pipeline.cli import main
from pipeline.competition import load_competition
from pipeline.competition.check import check_stage
from pipeline.competition.images import decode_image, load_rgb
from pipeline.errors import CompetitionError, PipelineError
from pipeline.train.cache import build_cache

from .fakes import CLASSES, run_cli, write_cifar, write_leaves

REPO = Path(__file__).resolve().parents[1]


def _csv(name: str, fn):
    """A damage that edits ``name`` as a DataFrame of text."""

    def damage(root: Path) -> None:
        df = pd.read_csv(root / name, dtype=str, keep_default_na=False)
        fn(df).to_csv(root / name, index=False)

    return damage


def _text(name: str, fn):
    """A damage that edits ``name`` as text."""

    def damage(root: Path) -> None:
        (root / name).write_text(fn((root / name).read_text()), newline="")

    return damage


def _set(col: str, row: int, value: str):
    def fn(df: pd.DataFrame) -> pd.DataFrame:
        df.loc[row, col] = value
        return df

    return fn


def _write(name: str, data: bytes | str):
    def damage(root: Path) -> None:
        path = root / name
        path.unlink(missing_ok=True)
        path.write_bytes(data.encode() if isinstance(data, str) else data)

    return damage


def _truncate(name: str):
    def damage(root: Path) -> None:
        data = (root / name).read_bytes()
        (root / name).write_bytes(data[: len(data) // 2])

    return damage


def _outside(root: Path) -> Path:
    """A real image just outside the competition folder."""
    target = root.parent / "outside.jpg"
    shutil.copy(root / "images" / "0.jpg", target)
    return target


def _symlink_out(root: Path) -> None:
    target = _outside(root)
    (root / "images" / "0.jpg").unlink()
    (root / "images" / "0.jpg").symlink_to(target)


def _escape(id_: str):
    def damage(root: Path) -> None:
        _outside(root)
        _csv("train.csv", _set("image", 0, id_.format(outside=root.parent / "outside.jpg")))(root)

    return damage


def _png_header(w: int, h: int) -> bytes:
    """A valid PNG header claiming ``w x h`` pixels, with almost no pixel data behind it."""

    def chunk(kind: bytes, data: bytes) -> bytes:
        return (
            struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))
        )

    ihdr = struct.pack(">IIBBBBB", w, h, 8, 0, 0, 0, 0)
    idat = chunk(b"IDAT", zlib.compress(b"\0" * 64))
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + idat + chunk(b"IEND", b"")


def _swap_folders(root: Path) -> None:
    (root / "train").rename(root / "tmp")
    (root / "test").rename(root / "train")
    (root / "tmp").rename(root / "test")


def _empty_test_folder(root: Path) -> None:
    for p in (root / "test").iterdir():
        p.unlink()


def _rm(name: str):
    def damage(root: Path) -> None:
        p = root / name
        shutil.rmtree(p) if p.is_dir() else p.unlink()

    return damage


def _both_test_csvs(fn):
    def damage(root: Path) -> None:
        _csv("test.csv", fn)(root)
        _csv("sample_submission.csv", fn)(root)

    return damage


def _two_train_csvs(root: Path) -> None:
    shutil.copy(root / "train.csv", root / "labels_a.csv")
    (root / "train.csv").rename(root / "labels_b.csv")


def _folder_as_image(root: Path) -> None:
    (root / "images" / "5.jpg").unlink()
    (root / "images" / "5.jpg").mkdir()


# (kind, layout, damage, message): refused by every stage (no image opened) and by make check
REFUSED = [
    ("competition folder missing", "leaves", lambda r: shutil.rmtree(r), r"competition folder .*leaves not found; download it with `kaggle competitions download"),
    ("no sample submission", "leaves", _rm("sample_submission.csv"), r"found no sample submission among CSVs \[test.csv, train.csv\]; set sample_submission"),
    ("two sample submissions", "leaves", lambda r: shutil.copy(r / "sample_submission.csv", r / "sample_submission_v2.csv"), r"found 2 sample submissions among CSVs"),
    ("competition.toml names a missing file", "leaves", _write("competition.toml", 'sample_submission = "sub.csv"\n'), r"competition.toml names sample_submission 'sub.csv', which does not exist"),
    ("competition.toml with an unknown key", "leaves", _write("competition.toml", 'train_file = "x.csv"\n'), r"competition.toml: unknown key 'train_file'; valid keys: slug"),
    ("competition.toml not valid TOML", "leaves", _write("competition.toml", "slug = \n"), r"competition.toml is not valid TOML"),
    ("train CSV missing", "leaves", _rm("train.csv"), r"expected one train CSV with columns 'image' and 'label' \(from sample_submission.csv\), found 0"),
    ("two train CSVs", "leaves", _two_train_csvs, r"expected one train CSV .* found 2 .*set train_csv"),
    ("empty train CSV (0 bytes)", "leaves", _write("train.csv", ""), r"train.csv is empty; re-download the competition files"),
    ("empty sample submission (0 bytes)", "leaves", _write("sample_submission.csv", ""), r"sample_submission.csv is empty; re-download the competition files"),
    ("train CSV with only a header", "leaves", _write("train.csv", "image,label\n"), r"train.csv has a header but no rows; re-download"),
    ("sample submission with only a header", "leaves", _write("sample_submission.csv", "image,label\n"), r"sample_submission.csv has a header but no rows; re-download"),
    ("label column renamed in train CSV", "leaves", _csv("train.csv", lambda d: d.rename(columns={"label": "species"})), r"expected one train CSV with columns 'image' and 'label'"),
    ("id column renamed in train CSV", "leaves", _csv("train.csv", lambda d: d.rename(columns={"image": "file"})), r"expected one train CSV with columns 'image' and 'label'"),
    ("column missing from the train CSV named in competition.toml", "leaves", lambda r: _write("competition.toml", 'train_csv = "train.csv"\n')(r) or _csv("train.csv", lambda d: d.rename(columns={"label": "species"}))(r), r"train.csv has no column 'label' \(columns: image, species\); set id_column/target_column"),
    ("sample submission with 3 columns", "leaves", _csv("sample_submission.csv", lambda d: d.assign(extra="1")), r"cannot tell the label column \(expected id,label\), and no CSV .*; set target_column"),
    ("semicolon-separated train CSV", "leaves", _text("train.csv", lambda t: t.replace(",", ";")), r"train.csv separates columns with ';' \(header: 'image;label'\); Kaggle CSVs are comma-separated"),
    ("tab-separated sample submission", "leaves", _text("sample_submission.csv", lambda t: t.replace(",", "\t")), r"sample_submission.csv separates columns with '\\t'"),
    ("non-UTF-8 (Latin-1) train CSV", "leaves", lambda r: (r / "train.csv").write_bytes((r / "train.csv").read_text().replace("cat", "café").encode("latin-1")), r"train.csv is not UTF-8 text \(line 2: byte 0xe9\); re-save it as UTF-8"),
    ("UTF-16 train CSV", "leaves", lambda r: (r / "train.csv").write_bytes((r / "train.csv").read_text().encode("utf-16")), r"train.csv is UTF-16 text, not UTF-8; re-save it as UTF-8"),
    ("row with an extra field", "leaves", _text("train.csv", lambda t: t.replace("images/2.jpg,cat", "images/2.jpg,cat,big")), r"train.csv is not a readable CSV \(Error tokenizing data. C error: Expected 2 fields in line 4, saw 3\); fix that line"),
    ("row with a missing field", "leaves", _text("train.csv", lambda t: t.replace("images/3.jpg,cat", "images/3.jpg")), r"train.csv row 5: empty 'label' for id 'images/3.jpg'; fill in or delete the row"),
    ("empty label", "leaves", _csv("train.csv", _set("label", 3, "")), r"train.csv row 5: empty 'label' for id 'images/3.jpg'; fill in or delete the row"),
    ("NaN label written as text", "leaves", _csv("train.csv", _set("label", 3, "NaN")), r"train.csv row 5: 'label' is 'NaN' \(a missing value written as text\) for id 'images/3.jpg'"),
    ("empty id", "leaves", _csv("train.csv", _set("image", 0, "")), r"train.csv row 2: empty id; fill in or delete the row"),
    ("duplicate id in train CSV", "leaves", _csv("train.csv", _set("image", 4, "images/1.jpg")), r"train.csv row 6: duplicate id 'images/1.jpg' \(also on row 3\); each id must appear once"),
    ("duplicate id in sample submission", "leaves", _csv("sample_submission.csv", _set("image", 1, "images/18.jpg")), r"sample_submission.csv row 3: duplicate id 'images/18.jpg' \(also on row 2\)"),
    ("duplicate id in test.csv", "leaves", _csv("test.csv", _set("image", 1, "images/18.jpg")), r"test.csv row 3: duplicate id 'images/18.jpg' \(also on row 2\)"),
    ("test.csv ids differ from the sample submission", "leaves", _csv("test.csv", _set("image", 0, "images/99.jpg")), r"test.csv row 2: id 'images/99.jpg' is not in sample_submission.csv \(1 such ids\); both must list the same test ids"),
    ("a single class only", "leaves", _csv("train.csv", lambda d: d.assign(label="cat")), r"train.csv: every row has 'label' = 'cat'; a classifier needs at least 2 classes"),
    ("train image missing", "leaves", _rm("images/5.jpg"), r"train.csv row 7: image .*leaves/images/5.jpg not found; re-download or unzip the images"),
    ("sample submission id without an image", "leaves", _both_test_csvs(_set("image", 0, "images/99.jpg")), r"sample_submission.csv row 2: image .*images/99.jpg not found"),
    ("images folder missing", "leaves", _rm("images"), r"leaves/images does not exist but train ids point into it \(first: 'images/0.jpg'\); unzip the images into it"),
    ("image path is a folder", "leaves", _folder_as_image, r"train.csv row 7: image .*images/5.jpg not found"),
    ("dangling symlink", "leaves", lambda r: (r / "images" / "5.jpg").unlink() or (r / "images" / "5.jpg").symlink_to(r / "gone.jpg"), r"train.csv row 7: image .*images/5.jpg not found"),
    ("id escaping with ../", "leaves", _escape("../outside.jpg"), r"train.csv row 2: '../outside.jpg' points outside .*leaves \(to .*input/outside.jpg\); ids must stay inside the competition folder"),
    ("absolute path as id", "leaves", _escape("{outside}"), r"train.csv row 2: '/.*outside.jpg' points outside .*; ids must stay inside the competition folder"),
    ("symlink pointing outside", "leaves", _symlink_out, r"train.csv row 2: 'images/0.jpg' points outside .*leaves \(to .*input/outside.jpg\)"),
    ("bare id without an image file", "cifar", _csv("trainLabels.csv", lambda d: pd.concat([d, pd.DataFrame({"id": ["19"], "label": ["owl"]})])), r"trainLabels.csv row 20: no image train/19\.<jpg\|jpeg\|png.*>; add it, or set train_images"),
    ("no image for any id", "cifar", _csv("trainLabels.csv", lambda d: d.assign(id="x" + d["id"])), r"no image file named <id>.<ext> for any train id \(first id: 'x1'\); set train_images"),
    ("test folder empty", "cifar", _empty_test_folder, r"cifar: 5 test images are also train images \(first: train/1.png\); are the train and test folders swapped or one of them empty"),
    ("train and test folders swapped", "cifar", _swap_folders, r"cifar: 5 test images are also train images \(first: test/1.png\)"),
]  # fmt: skip

# (kind, layout, damage, message): found by make check (it decodes) and by the training cache
BAD_IMAGES = [
    ("zero-byte image", "leaves", _write("images/5.jpg", b""), r"images/5.jpg \(train.csv row 7\): empty \(0 bytes\); replace it with a good copy, or delete row 7 of train.csv"),
    ("truncated JPEG", "leaves", _truncate("images/5.jpg"), r"images/5.jpg \(train.csv row 7\): truncated or corrupt .*; replace it with a good copy"),
    ("truncated PNG", "cifar", _truncate("train/5.png"), r"train/5.png \(trainLabels.csv row 6\): truncated or corrupt \(OSError: image file is truncated"),
    ("HTML page saved as .jpg", "leaves", _write("images/5.jpg", "<!DOCTYPE html><html>404</html>"), r"images/5.jpg \(train.csv row 7\): not an image \(31 bytes: b'<!DOCTYPE html><'...\)"),
    ("random bytes after a JPEG marker", "leaves", _write("images/5.jpg", b"\xff\xd8\xff\xe0" + bytes(range(256)) * 4), r"images/5.jpg \(train.csv row 7\): (truncated or corrupt|not an image)"),
    ("decompression bomb (PIL warns)", "cifar", _write("train/5.png", _png_header(10_000, 10_000)), r"train/5.png \(trainLabels.csv row 6\): 100,000,000 pixels is over PIL's decompression-bomb limit of 89,478,485 \(PIL.Image.MAX_IMAGE_PIXELS\)"),
    ("decompression bomb (PIL refuses)", "cifar", _write("train/5.png", _png_header(20_000, 20_000)), r"400,000,000 pixels is over PIL's decompression-bomb limit"),
    ("corrupt test image", "leaves", _truncate("images/18.jpg"), r"images/18.jpg \(sample_submission.csv row 2\): truncated or corrupt .*; replace it with a good copy \(re-download\); Kaggle expects every test id"),
]  # fmt: skip


def _run_check(root: Path, capsys) -> tuple[bool, str]:
    """``(ok, output)`` of make check: stderr problem lines, then the error or the summary."""
    capsys.readouterr()
    try:
        summary = check_stage(load_competition(root, strict=False), workers=1)
    except CompetitionError as e:
        return False, capsys.readouterr().err + f"error: {e}\n"
    return True, summary


def _build(layout: str, tmp_path: Path) -> Path:
    writer = write_leaves if layout == "leaves" else write_cifar
    return writer(tmp_path / "input" / layout)


@pytest.mark.parametrize("kind, layout, damage, message", REFUSED, ids=[k[0] for k in REFUSED])
def test_refused_by_every_stage_and_by_check(kind, layout, damage, message, tmp_path, capsys):
    root = _build(layout, tmp_path)
    damage(root)
    with pytest.raises(CompetitionError, match=message) as e:
        load_competition(root)
    assert "\n" not in str(e.value)
    ok, out = _run_check(root, capsys)
    assert not ok and re.search(message, out), out


@pytest.mark.filterwarnings("ignore::PIL.Image.DecompressionBombWarning")
@pytest.mark.parametrize(
    "kind, layout, damage, message", BAD_IMAGES, ids=[k[0] for k in BAD_IMAGES]
)
def test_bad_image_found_by_check_and_cache_build(kind, layout, damage, message, tmp_path, capsys):
    root = _build(layout, tmp_path)
    damage(root)
    comp = load_competition(root)  # the cheap path opens no image
    ok, out = _run_check(root, capsys)
    assert not ok and re.search(message, out), out
    cache = tmp_path / "cache"
    paths = comp.train["path"].tolist() + comp.test["path"].tolist()
    with pytest.raises(CompetitionError, match=r"make check COMP=") as e:
        build_cache(root, paths, 8, cache / "all_8.u8")
    assert "\n" not in str(e.value) and str(root) in str(e.value)
    # no partial cache, no temporary file (the build's lock file stays: see pipeline/disk/locks.py)
    assert [p for p in cache.iterdir() if p.name != ".all_8.u8.lock"] == []


def test_check_lists_every_problem(tmp_path, capsys):
    root = write_leaves(tmp_path / "input" / "leaves")
    _csv("train.csv", _set("label", 3, ""))(root)
    _write("images/5.jpg", b"")(root)
    _truncate("images/19.jpg")(root)
    ok, out = _run_check(root, capsys)
    lines = out.splitlines()
    assert not ok and len(lines) == 4 and all(line.startswith("error: ") for line in lines)
    assert "row 5: empty 'label'" in lines[0] and "images/5.jpg (train.csv row 7)" in lines[1]
    assert "images/19.jpg (sample_submission.csv row 3)" in lines[2]
    assert "3 problems (listed above); fix them and re-run: make check COMP=" in lines[3]


def test_stage_names_the_first_problem_and_counts_the_rest(tmp_path):
    root = write_leaves(tmp_path / "input" / "leaves")
    _csv("train.csv", lambda d: d.assign(label=d["label"].where(d.index > 2, "")))(root)
    with pytest.raises(
        CompetitionError, match=r"row 2: empty 'label' .*; 2 more problem\(s\): make"
    ):
        load_competition(root)


def test_class_smaller_than_k_is_refused_by_folds(tmp_path):
    from pipeline.folds.stage import make_folds

    root = write_leaves(tmp_path / "input" / "leaves", n_per_class=2)
    comp = load_competition(root)
    with pytest.raises(PipelineError, match=r"class 'cat' has 2 image\(s\) but K=5 folds need"):
        make_folds(comp.train["label"], comp.train["id"], k=5)


# ---- handled: the pipeline reads these as a user would want -----------------------------------


def _classes_ok(root: Path, comp, summary: str) -> None:
    assert comp.classes == CLASSES and len(comp.train) == 18 and len(comp.test) == 5


def _mixed_ids(root: Path) -> None:
    (root / "train" / "1.png").rename(root / "train" / "001.png")
    _csv("trainLabels.csv", _set("id", 0, "001"))(root)


def _distinct_ids_swapped(root: Path) -> None:
    for i in range(1, 6):
        (root / "test" / f"{i}.png").rename(root / "test" / f"{100 + i}.png")
    _csv("sampleSubmission.csv", lambda d: d.assign(id=[str(100 + i) for i in range(1, 6)]))(root)
    _swap_folders(root)


def _symlink_inside(root: Path) -> None:
    (root / "extra").mkdir()
    (root / "images" / "0.jpg").rename(root / "extra" / "0.jpg")
    (root / "images" / "0.jpg").symlink_to(root / "extra" / "0.jpg")


HANDLED = [
    ("BOM at the start of a CSV", "leaves", _text("train.csv", lambda t: "\ufeff" + t), _classes_ok),
    ("spaces around header names and values", "leaves", _text("train.csv", lambda t: t.replace("image,label", " image , label ").replace(",dog", " ,  dog ")), _classes_ok),
    ("labels with leading/trailing spaces", "leaves", _text("train.csv", lambda t: t.replace(",owl", ", owl  ")), _classes_ok),
    ("Windows line endings (CRLF)", "leaves", _text("train.csv", lambda t: t.replace("\n", "\r\n")), _classes_ok),
    ("quoted header and values", "leaves", _text("train.csv", lambda t: "\n".join(",".join(f'"{v}"' for v in line.split(",")) if line else "" for line in t.split("\n"))), _classes_ok),
    ("extra columns in the train CSV (ignored)", "leaves", _csv("train.csv", lambda d: d.assign(source="web", width="16")), _classes_ok),
    ("pandas index column in the train CSV (ignored)", "leaves", _csv("train.csv", lambda d: d.reset_index().rename(columns={"index": "Unnamed: 0"})), _classes_ok),
    ("test.csv in another order than the sample", "leaves", _csv("test.csv", lambda d: d.iloc[::-1]), lambda r, c, s: c.test["id"].tolist() == [f"images/{i}.jpg" for i in range(18, 23)]),
    ("file name case differs from the id", "leaves", lambda r: (r / "images" / "0.jpg").rename(r / "images" / "0.JPG"), lambda r, c, s: c.train["path"][0] == "images/0.JPG" and c.train["id"][0] == "images/0.jpg"),
    ("PNG data in a .jpg file", "leaves", lambda r: Image.open(r / "images" / "0.jpg").save(r / "images" / "0.jpg", format="PNG"), lambda r, c, s: "modes RGB (23)" in s),
    ("symlink inside the competition folder", "leaves", _symlink_inside, lambda r, c, s: c.train["path"][0] == "images/0.jpg"),
    ("ids with leading zeros (001 next to 2)", "cifar", _mixed_ids, lambda r, c, s: c.train["id"][:2].tolist() == ["001", "2"] and c.train["path"][0] == "train/001.png"),
    ("train/test folders named the other way round (distinct ids)", "cifar", _distinct_ids_swapped, lambda r, c, s: c.train["path"][0] == "test/1.png" and c.test["path"][0] == "train/101.png"),
]  # fmt: skip


def _mode_image(mode: str) -> Image.Image:
    """A 4x4 image in ``mode`` whose pixel (0, 0) decodes to a known RGB value."""
    if mode == "I;16":
        return Image.fromarray(np.full((4, 4), 32896, np.uint16))  # * 255 / 65535 = 128
    if mode == "I":
        return Image.fromarray(np.full((4, 4), 65535, np.int32))
    if mode == "F":
        return Image.fromarray(np.full((4, 4), 0.5, np.float32))
    if mode.startswith("P"):
        im = Image.new("P", (4, 4), 1)
        im.putpalette([0, 0, 0, 50, 100, 150])
        if mode == "P+transparency":
            im.info["transparency"] = 1
        return im
    colour = {"RGBA": (255, 0, 0, 0), "LA": (50, 255), "CMYK": (0, 255, 255, 0), "1": 1, "L": 50}
    return Image.new(mode, (4, 4), colour[mode])


# (mode written, file extension, RGB of pixel (0, 0), mode make check reports)
MODES = [
    ("16-bit grayscale PNG (I;16), scaled not clipped", "I;16", "png", (128, 128, 128), "I;16"),
    ("RGBA with transparent pixels (on white)", "RGBA", "png", (255, 255, 255), "RGBA"),
    ("grayscale + alpha (LA)", "LA", "png", (50, 50, 50), "LA"),
    ("palette (P)", "P", "png", (50, 100, 150), "P"),
    ("palette with a transparent colour", "P+transparency", "png", (255, 255, 255), "P"),
    ("CMYK JPEG", "CMYK", "jpg", (255, 0, 0), "CMYK"),
    ("grayscale (L)", "L", "png", (50, 50, 50), "L"),
    ("1-bit", "1", "png", (255, 255, 255), "1"),
    ("32-bit integer TIFF (I), 16-bit values", "I", "tif", (255, 255, 255), "I"),
    ("float TIFF (F) in 0..1", "F", "tif", (128, 128, 128), "F"),
]  # fmt: skip


def _save_mode(mode: str, ext: str):
    def damage(root: Path) -> None:
        (root / "train" / "4.png").unlink()
        _mode_image(mode).save(root / "train" / f"4.{ext}")

    return damage


def _mode_ok(ext: str, rgb: tuple, reported: str):
    def verify(root: Path, comp, summary: str) -> bool:
        img = load_rgb(root / "train" / f"4.{ext}")
        assert img.shape == (4, 4, 3) and img.dtype == np.uint8
        assert np.abs(img[0, 0].astype(int) - rgb).max() <= 2, img[0, 0]
        return f"{reported} (" in summary

    return verify


HANDLED += [
    (kind, "cifar", _save_mode(mode, ext), _mode_ok(ext, rgb, reported))
    for kind, mode, ext, rgb, reported in MODES
]


def _rgb48(root: Path) -> None:
    a = np.zeros((4, 4, 3), np.uint16)
    a[..., 2], a[..., 1] = 65535, 32896  # OpenCV writes BGR
    (root / "train" / "4.png").unlink()
    cv2.imwrite(str(root / "train" / "4.png"), a)


def _gif(root: Path) -> None:
    frames = [Image.new("P", (4, 4), i) for i in (1, 2)]
    for f in frames:
        f.putpalette([0, 0, 0, 10, 20, 30, 200, 200, 200])
    (root / "train" / "4.png").unlink()
    frames[0].save(root / "train" / "4.gif", save_all=True, append_images=frames[1:])


HANDLED += [
    ("16-bit RGB PNG", "cifar", _rgb48, _mode_ok("png", (255, 128, 0), "RGB")),
    ("animated GIF (first frame)", "cifar", _gif, _mode_ok("gif", (10, 20, 30), "P")),
]


@pytest.mark.parametrize("kind, layout, damage, verify", HANDLED, ids=[k[0] for k in HANDLED])
def test_handled(kind, layout, damage, verify, tmp_path, capsys):
    root = _build(layout, tmp_path)
    damage(root)
    comp = load_competition(root)
    ok, summary = _run_check(root, capsys)
    assert ok and summary.startswith(f"{root}: OK - "), summary
    assert verify(root, comp, summary) is not False, summary


def test_summary_line(tmp_path, capsys):
    root = write_cifar(tmp_path / "input" / "cifar")
    ok, summary = _run_check(root, capsys)
    assert ok and capsys.readouterr().out == summary + "\n"
    assert "trainLabels.csv: 18 images, 3 classes (6..6 images each, so K <= 6 folds)" in summary
    assert "sampleSubmission.csv: 5 test images; 23 images decoded in" in summary
    assert (
        "sizes 16x16 (23); modes RGB (21), L (1), RGBA (1); task multiclass (3 classes); "
        in summary
    )
    assert summary.endswith(
        "metric accuracy (inferred from the label format); change with "
        f"task/metric/positive_label in {root}/competition.toml"
    )


def test_decode_image_reports_the_file_mode(tmp_path):
    Image.new("L", (3, 2), 7).save(tmp_path / "g.png")
    rgb, mode = decode_image(tmp_path / "g.png")
    assert rgb.shape == (2, 3, 3) and mode == "L" and rgb.max() == 7


# ---- the CLI: one line per problem on stderr, no traceback, exit code 2 ------------------------


def _cli(*args: str, cwd: Path):
    return run_cli(*args, cwd=cwd, env={"OMP_NUM_THREADS": "1"}, timeout=120)


def test_cli_check_structural_error_is_one_line(tmp_path):
    root = write_leaves(tmp_path / "input" / "leaves")
    _csv("train.csv", _set("image", 4, "images/1.jpg"))(root)
    r = _cli("check", "--comp", str(root), cwd=tmp_path)
    assert r.returncode == 2 and r.stdout == "" and "Traceback" not in r.stderr
    assert r.stderr.count("\n") == 1 and r.stderr.startswith("error: ")
    assert "train.csv row 6: duplicate id 'images/1.jpg' (also on row 3)" in r.stderr


def test_cli_stage_refuses_before_writing_anything(tmp_path):
    root = write_leaves(tmp_path / "input" / "leaves")
    _text("train.csv", lambda t: t.replace(",", ";"))(root)
    r = _cli("folds", "--comp", str(root), cwd=tmp_path)
    assert r.returncode == 2 and "Traceback" not in r.stderr and r.stderr.count("\n") == 1
    assert "separates columns with ';'" in r.stderr and not (tmp_path / "folds").exists()


def test_cli_check_lists_bad_images(tmp_path, capsys):
    """In-process through ``main`` (a subprocess would spend seconds importing torch)."""
    root = write_leaves(tmp_path / "input" / "leaves")
    _write("images/5.jpg", b"")(root)
    _truncate("images/7.jpg")(root)
    assert main(["check", "--comp", str(root)]) == 2
    out, err = capsys.readouterr()
    lines = err.strip().splitlines()
    assert out == "" and "Traceback" not in err and len(lines) == 3
    assert all(line.startswith("error: ") for line in lines)
    assert "images/5.jpg (train.csv row 7): empty (0 bytes)" in lines[0]
    assert "images/7.jpg (train.csv row 9): truncated or corrupt" in lines[1]
    assert "2 problems (listed above); fix them and re-run: make check COMP=" in lines[2]
    write_leaves(root)  # repaired
    assert main(["check", "--comp", str(root)]) == 0
    out, err = capsys.readouterr()
    assert out.startswith(f"{root}: OK - train.csv: 18 images") and out.count("\n") == 1
