"""``make folds`` names a train CSV column that looks like a group key (a patient, a source
image) and how to group by it, on every layout the folds stage reads; never a label, one-hot or
multi-label column, an id, or low-cardinality metadata; ``GROUPS=0`` or a set ``group_column``
silences it."""

from __future__ import annotations

from pathlib import Path

import pandas as pd
import pytest

from pipeline.cli import main
from pipeline.competition import load_competition
from pipeline.folds.leaks import _label_like, group_like_columns

from . import test_formats as formats
from .fakes import write_cifar, write_leaves

LAYOUTS = {
    "leaves": lambda root: write_leaves(root, n_per_class=8),
    "cifar": lambda root: write_cifar(root, n_per_class=8),
    **{
        f.__name__: f
        for f in (
            formats.dog_breed,
            formats.aerial_cactus,
            formats.histopathologic,
            formats.aptos,
            formats.plant_pathology_2020,
            formats.plant_pathology_2021,
            formats.state_farm,
        )
    },
}


def _plant(comp_dir: Path) -> Path:
    """Add a patient column (12 values, each on several rows) and metadata that is no group
    (sex, an 8-valued age, a per-row file name) to the competition's train CSV."""
    comp = load_competition(comp_dir)
    df = pd.read_csv(comp.train_csv, dtype=str, keep_default_na=False)
    n = len(df)
    df["patient"] = [f"P{i % 12:03d}" for i in range(n)]
    df["sex"] = ["male" if i % 2 else "female" for i in range(n)]
    df["age"] = [str(30 + 5 * (i % 8)) for i in range(n)]
    df["file_name"] = [f"scan_{i}.dcm" for i in range(n)]
    df.to_csv(comp.train_csv, index=False)
    return comp.train_csv


@pytest.mark.parametrize("layout", sorted(LAYOUTS))
def test_group_like_columns_on_every_layout(layout, tmp_path):
    root = tmp_path / layout
    LAYOUTS[layout](root)
    comp = load_competition(root)
    before = [c for c, *_ in group_like_columns(comp)]
    assert before == []  # the layout's own columns: ids, labels, one-hot, sets, a 6-driver subject
    _plant(root)
    found = group_like_columns(load_competition(root))
    assert [c for c, *_ in found] == ["patient"]
    assert found[0][1] == 12 and found[0][2] == 1.0


def test_class_folders_have_no_csv_to_read(tmp_path):
    formats.plant_seedlings(tmp_path / "seedlings")
    assert group_like_columns(load_competition(tmp_path / "seedlings")) == []


def test_label_sets_are_not_groups():
    classes = ["complex", "healthy", "rust", "scab"]
    assert _label_like(pd.Index(["rust scab", "healthy", "complex rust"]), classes)
    assert not _label_like(pd.Index(["P001", "P002", "rust"]), classes)


def test_make_folds_names_the_column_and_how_to_group(tmp_path, monkeypatch, capsys):
    root = write_leaves(tmp_path / "input" / "toy", n_per_class=8)
    csv = _plant(root)
    monkeypatch.chdir(tmp_path)
    assert main(["folds", "--comp", str(root), "--k", "2"]) == 0
    notes = [ln for ln in capsys.readouterr().out.splitlines() if ln.startswith("note:")]
    assert notes == [
        f"note: {csv.name} column 'patient' looks like a group key (12 values, 100% of them on "
        "several rows): rows of one patient in different folds let OOF scores leak; to keep them "
        f'in one fold put group_column = "patient" in {root / "competition.toml"} and run make '
        "folds again (GROUPS=0 or a group_column silences this)"
    ]
    assert main(["folds", "--comp", str(root), "--k", "2", "--no-groups"]) == 0
    assert "note:" not in capsys.readouterr().out
    (root / "competition.toml").write_text('group_column = "patient"\n')
    assert main(["folds", "--comp", str(root), "--k", "2"]) == 0
    assert "note:" not in capsys.readouterr().out
    folds = pd.read_csv(tmp_path / "folds" / "toy.csv")
    assert folds.groupby("group")["fold"].nunique().max() == 1  # a patient in one fold
