"""Helpers the tests import: tiny competitions in both Kaggle layouts, written into a folder."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
from PIL import Image

CLASSES = ["cat", "dog", "owl"]


def _image(rng: np.random.Generator, label: int, size: int = 16) -> np.ndarray:
    """A coloured blob whose channel encodes the class, so tiny models can learn it."""
    img = rng.integers(0, 60, (size, size, 3), dtype=np.uint8)
    img[4:12, 4:12, label] = 220
    return img


def write_leaves(root: Path, n_per_class: int = 6, n_test: int = 5, seed: int = 0) -> Path:
    """Classify Leaves layout: ids are relative paths ``images/<n>.jpg``."""
    rng = np.random.default_rng(seed)
    (root / "images").mkdir(parents=True, exist_ok=True)
    rows, n = [], 0
    for k, c in enumerate(CLASSES):
        for _ in range(n_per_class):
            Image.fromarray(_image(rng, k)).save(root / "images" / f"{n}.jpg", quality=95)
            rows.append((f"images/{n}.jpg", c))
            n += 1
    test = []
    for j in range(n_test):
        img = _image(rng, j % 3)
        Image.fromarray(img).save(root / "images" / f"{n}.jpg")
        test.append(f"images/{n}.jpg")
        n += 1
    pd.DataFrame(rows, columns=["image", "label"]).to_csv(root / "train.csv", index=False)
    pd.DataFrame({"image": test}).to_csv(root / "test.csv", index=False)
    pd.DataFrame({"image": test, "label": CLASSES[0]}).to_csv(
        root / "sample_submission.csv", index=False
    )
    return root


def write_cifar(root: Path, n_per_class: int = 6, n_test: int = 5, seed: int = 1) -> Path:
    """CIFAR-10 layout: bare ids, ``train/<id>.png`` and ``test/<id>.png`` with overlapping ids.

    One train image is grayscale and one RGBA, as real downloads sometimes contain.
    """
    rng = np.random.default_rng(seed)
    (root / "train").mkdir(parents=True, exist_ok=True)
    (root / "test").mkdir(parents=True, exist_ok=True)
    rows = []
    for k, c in enumerate(CLASSES):
        for _ in range(n_per_class):
            i = len(rows) + 1
            img = Image.fromarray(_image(rng, k))
            img = img.convert("L") if i == 2 else img.convert("RGBA") if i == 3 else img
            img.save(root / "train" / f"{i}.png")
            rows.append((str(i), c))
    for i in range(1, n_test + 1):
        Image.fromarray(_image(rng, i % 3)).save(root / "test" / f"{i}.png")
    pd.DataFrame(rows, columns=["id", "label"]).to_csv(root / "trainLabels.csv", index=False)
    ids = [str(i) for i in range(1, n_test + 1)]
    pd.DataFrame({"id": ids, "label": CLASSES[0]}).to_csv(
        root / "sampleSubmission.csv", index=False
    )
    return root


SHARED = Path(__file__).resolve().parents[2] / "shared" / "data"


# A 2-fold toy run ``r``: a tiny timm test model from scratch, two views
TOY_RECIPE = """backbone = "test_resnet"
image_size = 16
epochs = 2
batch_size = 8
tta = ["none", "hflip"]
"""


def toy_roots(root: Path) -> list[str]:
    """The CLI's roots for a workspace made by ``toy_workspace``."""
    return [
        "--comp",
        str(root / "input/toy"),
        "--models",
        str(root / "models"),
        "--output",
        str(root),
    ]


def toy_workspace(root: Path, recipe: str = TOY_RECIPE, n_per_class: int = 8) -> Path:
    """``root`` with the leaves-layout competition ``input/toy`` (4 test images), the recipe
    ``models/r.toml`` and its 2-fold folds file."""
    from pipeline.cli import main

    write_leaves(root / "input" / "toy", n_per_class=n_per_class, n_test=4)
    (root / "models").mkdir(parents=True)
    (root / "models" / "r.toml").write_text(recipe)
    assert main(["folds", *toy_roots(root), "--k", "2"]) == 0
    return root


def extra_module(module: str, extra: str):
    """``module`` of an optional extra; ``make setup`` installs every extra, so a missing one
    fails the test (with the install command) rather than skipping it."""
    import importlib

    import pytest

    try:
        return importlib.import_module(module)
    except ImportError:
        pytest.fail(f"{module} not installed: make setup installs it (pip install -e '.[{extra}]')")
