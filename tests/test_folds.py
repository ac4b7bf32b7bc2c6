import numpy as np
import pandas as pd
import pytest

from pipeline import artifacts
from pipeline.competition import load_competition
from pipeline.errors import PipelineError
from pipeline.folds.stage import folds_stage, make_folds
from pipeline.workspace import Workspace


def test_stratified_sizes_and_ratios():
    rng = np.random.default_rng(0)
    labels = pd.Series(rng.choice(["a", "b", "c", "d"], size=1000, p=[0.4, 0.3, 0.2, 0.1]))
    df = make_folds(labels, pd.Series(np.arange(1000).astype(str)), k=5, seed=3)
    sizes = df["fold"].value_counts()
    assert sizes.max() - sizes.min() <= 1 and set(df["fold"]) == set(range(5))
    overall = labels.value_counts(normalize=True)
    for _, part in df.groupby("fold"):
        ratio = part["label"].value_counts(normalize=True)
        assert (ratio - overall).abs().max() < 0.01


def test_byte_identical_rerun_and_seed_changes(leaves, tmp_path):
    comp = load_competition(leaves)
    ws = Workspace.under(tmp_path, comp.name)
    p = folds_stage(comp, ws, k=3, seed=42)
    first = p.read_bytes()
    folds_stage(comp, ws, k=3, seed=42)
    assert p.read_bytes() == first
    folds_stage(comp, ws, k=3, seed=7)
    assert p.read_bytes() != first
    df = artifacts.read_folds(p)
    assert (
        list(df.columns) == ["id", "label", "fold"]
        and df["id"].tolist() == comp.train["id"].tolist()
    )


def test_too_few_images_for_k():
    labels = pd.Series(["a"] * 10 + ["b"] * 3)
    with pytest.raises(PipelineError, match=r"class 'b' has 3 image\(s\) but K=5 .*use K=3"):
        make_folds(labels, pd.Series([str(i) for i in range(13)]), k=5)
