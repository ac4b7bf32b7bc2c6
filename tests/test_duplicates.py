"""Exact and near duplicates: hashing, pairs, clusters, the report, grouped folds, test labels."""

import io
import os
import shutil
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from PIL import Image, ImageEnhance

from pipeline import artifacts
from pipeline.cli import main
from pipeline.competition import load_competition
from pipeline.ensemble.members import duplicate_test_labels
from pipeline.errors import PipelineError
from pipeline.folds import duplicates
from pipeline.folds.stage import folds_stage, make_folds
from pipeline.workspace import Workspace

from .fakes import CLASSES, SHARED


def _smooth(rng: np.random.Generator, size: int = 32) -> Image.Image:
    """A smooth random picture: distinct pictures have phashes far apart."""
    small = rng.integers(0, 256, (4, 4, 3), dtype=np.uint8)
    return Image.fromarray(small).resize((size, size), Image.Resampling.BICUBIC)


def write_dups(root: Path) -> Path:
    """Leaves layout, 18 distinct train images (6 per class) plus planted duplicates.

    train 18 = bytes of 0 (cat, cat): exact; train 19 = 6 recompressed and brightened (dog, dog):
    near; train 20 = bytes of 12 (owl) labelled cat: conflicting; test 21 = bytes of 7 (dog);
    test 22 = bytes of 12 (conflicting cluster); tests 23, 24 distinct.
    """
    rng = np.random.default_rng(0)
    img = root / "images"
    img.mkdir(parents=True)
    rows = []
    for n in range(18):
        _smooth(rng).save(img / f"{n}.jpg", quality=95)
        rows.append((f"images/{n}.jpg", CLASSES[n // 6]))
    shutil.copy(img / "0.jpg", img / "18.jpg")
    with Image.open(img / "6.jpg") as im:
        ImageEnhance.Brightness(im).enhance(1.08).save(img / "19.jpg", quality=60)
    shutil.copy(img / "12.jpg", img / "20.jpg")
    rows += [("images/18.jpg", "cat"), ("images/19.jpg", "dog"), ("images/20.jpg", "cat")]
    shutil.copy(img / "7.jpg", img / "21.jpg")
    shutil.copy(img / "12.jpg", img / "22.jpg")
    for n in (23, 24):
        _smooth(rng).save(img / f"{n}.jpg", quality=95)
    test = [f"images/{n}.jpg" for n in range(21, 25)]
    pd.DataFrame(rows, columns=["image", "label"]).to_csv(root / "train.csv", index=False)
    pd.DataFrame({"image": test}).to_csv(root / "test.csv", index=False)
    pd.DataFrame({"image": test, "label": "cat"}).to_csv(
        root / "sample_submission.csv", index=False
    )
    return root


@pytest.fixture
def dups(tmp_path: Path) -> Path:
    return write_dups(tmp_path / "input" / "dups")


def _ws(comp, tmp_path: Path) -> Workspace:
    return Workspace.under(tmp_path, comp.name)


def _report(comp, tmp_path, max_distance=duplicates.NEAR_DISTANCE):
    cache = tmp_path / "cache" / "hashes.csv"
    return duplicates.find_duplicates(comp.root, comp.train, comp.test, cache, max_distance)


def test_near_pairs_match_brute_force():
    rng = np.random.default_rng(1)
    h = rng.integers(0, 2**63, 50, dtype=np.uint64)
    h[10] = h[3] ^ np.uint64(0b101)  # train-train at 2
    h[45] = h[20] ^ np.uint64(1 << 40)  # train-test at 1
    h[46] = h[45]  # test-test at 0: never a pair; train-test 20-46 at 1 is
    got = duplicates.near_pairs(h, n_train=40, max_distance=3, block=7)
    want = [
        (i, j, bin(int(h[i]) ^ int(h[j])).count("1"))
        for i in range(40)
        for j in range(i + 1, 50)
        if bin(int(h[i]) ^ int(h[j])).count("1") <= 3
    ]
    assert sorted(map(tuple, got.tolist())) == want and (3, 10, 2) in want and (20, 46, 1) in want


def test_union_find_roots_are_smallest_index():
    roots = duplicates.union_find(7, [(5, 2), (2, 6), (1, 3)])
    assert roots.tolist() == [0, 1, 2, 1, 4, 2, 2]


def test_report_finds_exact_near_conflicting_and_test(dups, tmp_path):
    rep = _report(load_competition(dups), tmp_path)
    assert list(rep.columns) == duplicates.REPORT_COLUMNS
    got = {
        c: sorted(zip(g["id"], g["split"], g["kind"], strict=True))
        for c, g in rep.groupby("cluster")
    }
    im = "images/{}.jpg".format
    assert got == {
        im(0): [(im(0), "train", "exact"), (im(18), "train", "exact")],
        im(6): [(im(19), "train", "near"), (im(6), "train", "near")],
        im(7): [(im(21), "test", "exact"), (im(7), "train", "exact")],
        im(12): [(im(12), "train", "exact"), (im(20), "train", "exact"), (im(22), "test", "exact")],
    }
    near = rep[rep["kind"] == "near"]["distance"]
    assert (near <= duplicates.NEAR_DISTANCE).all()
    assert (rep[rep["kind"] == "exact"]["distance"] == 0).all()
    exact_only = _report(load_competition(dups), tmp_path, max_distance=-1)
    assert im(19) not in set(exact_only["id"]) and im(18) in set(exact_only["id"])


def test_hash_cache_skips_unchanged_files(dups, tmp_path, monkeypatch):
    comp = load_competition(dups)
    first = _report(comp, tmp_path)
    hashed = []
    real = duplicates._hash_file
    monkeypatch.setattr(duplicates, "_hash_file", lambda p: hashed.append(p.name) or real(p))
    assert _report(comp, tmp_path).equals(first) and hashed == []
    os.utime(dups / "images" / "5.jpg", ns=(1, 1))
    assert _report(comp, tmp_path).equals(first) and hashed == ["5.jpg"]


def test_folds_keep_clusters_together_and_are_byte_identical(dups, tmp_path, capsys):
    comp = load_competition(dups)
    path = folds_stage(comp, _ws(comp, tmp_path), k=2, seed=0)
    first = path.read_bytes()
    df = pd.read_csv(path, dtype=str)
    assert list(df.columns) == ["id", "label", "fold", "group"] and len(df) == 21
    assert df.groupby("group")["fold"].nunique().max() == 1
    assert (df["group"] == "images/0.jpg").sum() == 2 and (df["group"] == df["id"]).sum() == 18
    folds_stage(comp, _ws(comp, tmp_path), k=2, seed=0)
    assert path.read_bytes() == first
    out = capsys.readouterr().out
    assert "duplicate clusters kept in one fold" in out
    assert "4 duplicate clusters (7 train, 2 test images; phash distance <= 4)" in out
    assert "1 clusters with conflicting train labels" in out and "images/12.jpg: cat, owl" in out
    assert "2 test images duplicate a train image" in out
    rep = pd.read_csv(Workspace.under(tmp_path, "dups").duplicates_csv, dtype=str)
    assert rep["cluster"].nunique() == 4


def test_changed_hashes_never_rewrite_a_folds_file_silently(dups, tmp_path, monkeypatch):
    comp = load_competition(dups)
    ws = _ws(comp, tmp_path)
    first = folds_stage(comp, ws, k=2, seed=0).read_bytes()
    ws.hash_cache.unlink()  # e.g. a new CACHE=: hashed again, the same clusters: rewritten as is
    assert folds_stage(comp, ws, k=2, seed=0).read_bytes() == first
    ws.hash_cache.unlink()
    real = duplicates._hash_file  # hashes made another way: image 19 no longer near image 6
    monkeypatch.setattr(
        duplicates, "_hash_file", lambda p: (real(p)[0], "f" * 16) if p.stem == "19" else real(p)
    )
    with pytest.raises(PipelineError, match=r"dups.csv: 25 images were hashed again .* differ "):
        folds_stage(comp, ws, k=2, seed=0)
    assert ws.folds_csv.read_bytes() == first
    os.utime(dups / "images" / "3.jpg", ns=(1, 1))  # the hash cache kept: one image, same clusters
    monkeypatch.setattr(duplicates, "_hash_file", real)
    assert folds_stage(comp, ws, k=2, seed=0).read_bytes() == first


def test_no_groups_is_plain_stratified_kfold(dups, tmp_path):
    comp = load_competition(dups)
    path = folds_stage(comp, _ws(comp, tmp_path), k=2, seed=0, groups=False)
    plain = make_folds(comp.train["label"], comp.train["id"], k=2, seed=0)
    assert path.read_bytes() == plain.to_csv(index=False, lineterminator="\n").encode()


def test_too_few_groups_for_k():
    labels = pd.Series(["a", "b"] * 4)
    groups = np.array(["x", "y"] * 4)
    with pytest.raises(PipelineError, match=r"the 8 images form only 2 groups .* for K=3 folds"):
        make_folds(labels, pd.Series([str(i) for i in range(8)]), k=3, groups=groups)


def test_no_duplicates_keeps_the_old_folds(leaves, tmp_path, capsys):
    comp = load_competition(leaves)
    path = folds_stage(comp, _ws(comp, tmp_path), k=3, seed=0)
    plain = make_folds(comp.train["label"], comp.train["id"], k=3, seed=0)
    assert path.read_bytes() == plain.to_csv(index=False, lineterminator="\n").encode()
    assert "leaves.duplicates.csv: no duplicates (phash distance <= 4)" in capsys.readouterr().out
    assert pd.read_csv(Workspace.under(tmp_path, "leaves").duplicates_csv).empty


def test_grouped_folds_stay_stratified():
    rng = np.random.default_rng(0)
    labels = pd.Series(rng.choice(["a", "b", "c"], size=600, p=[0.5, 0.3, 0.2]))
    ids = pd.Series([str(i) for i in range(600)])
    groups = ids.to_numpy().copy()
    groups[1:40:2] = groups[0:40:2]  # 20 pairs
    df = make_folds(labels, ids, k=5, seed=1, groups=groups)
    assert df.groupby("group")["fold"].nunique().max() == 1
    sizes = df["fold"].value_counts()
    assert sizes.max() - sizes.min() <= 2
    ratio = pd.crosstab(df["label"], df["fold"], normalize="columns")
    overall = labels.value_counts(normalize=True)
    assert (ratio.sub(overall, axis=0)).abs().max().max() < 0.03


def test_duplicate_test_labels_skip_conflicts(dups, tmp_path):
    comp = load_competition(dups)
    folds_stage(comp, _ws(comp, tmp_path), k=2, seed=0)
    assert duplicate_test_labels(comp, _ws(comp, tmp_path)) == {"images/21.jpg": "dog"}


def test_duplicate_test_labels_follow_relabel(dups, tmp_path):
    (dups / "relabel.csv").write_text("id,new_label\nimages/20.jpg,owl\n")
    comp = load_competition(dups)
    folds_stage(comp, _ws(comp, tmp_path), k=2, seed=0)
    got = duplicate_test_labels(comp, _ws(comp, tmp_path))
    assert got == {"images/21.jpg": "dog", "images/22.jpg": "owl"}


def test_report_errors(dups, tmp_path):
    comp = load_competition(dups)
    with pytest.raises(
        PipelineError, match=r"dups.duplicates.csv not found; run: make folds COMP="
    ):
        duplicate_test_labels(comp, _ws(comp, tmp_path))
    path = Workspace.under(tmp_path, "dups").duplicates_csv
    folds_stage(comp, _ws(comp, tmp_path), k=2, seed=0)
    rep = pd.read_csv(path, dtype=str, keep_default_na=False)
    artifacts.write_csv(path, rep.replace({"images/21.jpg": "images/99.jpg"}))
    with pytest.raises(PipelineError, match=r"test id 'images/99.jpg' is not in .* stale"):
        duplicate_test_labels(comp, _ws(comp, tmp_path))
    artifacts.write_csv(path, rep.replace({"dog": "wolf"}))
    with pytest.raises(PipelineError, match=r"label 'wolf' is not a class of .*train.csv"):
        duplicate_test_labels(comp, _ws(comp, tmp_path))
    artifacts.write_csv(path, rep.drop(columns="kind"))
    with pytest.raises(PipelineError, match=r"lacks column\(s\) kind; re-run: make folds"):
        duplicate_test_labels(comp, _ws(comp, tmp_path))


def test_bad_distance_and_unreadable_image(dups, tmp_path):
    comp = load_competition(dups)
    with pytest.raises(
        PipelineError, match=r"distance 40 is too large; use -1 \(exact only\) to 16"
    ):
        _report(comp, tmp_path, max_distance=40)
    (dups / "images" / "3.jpg").write_bytes(b"not a jpeg")
    with pytest.raises(PipelineError, match=r"3\.jpg"):
        _report(comp, tmp_path)


def test_unreadable_bytes_name_the_file(tmp_path, monkeypatch):
    path = tmp_path / "x.jpg"
    buf = io.BytesIO()
    Image.new("RGB", (8, 8)).save(buf, format="JPEG")
    path.write_bytes(buf.getvalue())
    monkeypatch.setattr(Path, "read_bytes", lambda self: (_ for _ in ()).throw(OSError("gone")))
    with pytest.raises(PipelineError, match=r"x\.jpg is not a readable image \(OSError\); replace"):
        duplicates._hash_file(path)


def test_cli_flags(dups, tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    comp = ["folds", "--comp", "input/dups", "--k", "2"]
    assert main([*comp, "--no-groups"]) == 0
    assert "group" not in pd.read_csv("folds/dups.csv").columns
    assert main([*comp, "--near-distance", "-1"]) == 0
    assert "3 duplicate clusters (5 train, 2 test images; exact only)" in capsys.readouterr().out
    assert main([*comp, "--near-distance", "99"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: near-duplicate distance 99") and err.count("\n") == 1


@pytest.mark.shared
def test_tinyimagenet_train_test_copy(tmp_path):
    """The one byte-identical pair of TinyImageNet176, among 200 other images."""
    if not (SHARED / "tinyimagenet176").is_dir():
        pytest.skip("../shared/data not present")
    comp = load_competition(SHARED / "tinyimagenet176")
    train = comp.train[comp.train["id"].isin([f"images/{n}.jpg" for n in [*range(100), 17699]])]
    test = comp.test[comp.test["id"].isin([f"images/{n}.jpg" for n in range(27053, 27153)])]
    rep = duplicates.find_duplicates(comp.root, train, test, tmp_path / "h.csv")
    assert rep[["id", "split", "label", "kind"]].values.tolist() == [
        ["images/17699.jpg", "train", "goose", "exact"],
        ["images/27130.jpg", "test", "", "exact"],
    ]
