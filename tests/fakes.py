"""Helpers the tests import: tiny competitions in both Kaggle layouts, a toy workspace (competition,
recipes, weights, folds) and the CLI run in a subprocess."""

from __future__ import annotations

import os
import subprocess
import sys
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


REPO = Path(__file__).resolve().parents[1]
SHARED = REPO.parent / "shared" / "data"


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


def toy_workspace(
    root: Path,
    recipes: str | dict[str, str] = TOY_RECIPE,
    *,
    n_per_class: int = 8,
    n_test: int = 4,
    layout: str = "leaves",
    k: int | None = 2,
    pretrained: tuple[str, ...] = (),
) -> Path:
    """``root`` as a workspace: the toy competition ``input/toy`` (``write_leaves``, or
    ``write_cifar`` for ``layout="cifar"``), the recipes ``models/<run>.toml`` (one recipe
    text is run ``r``), ``models/pretrained/<name>.safetensors`` for each timm name in
    ``pretrained`` (10-class weights drawn after ``torch.manual_seed(0)``), and the ``k``-fold
    folds file written by ``folds`` (none when ``k`` is None)."""
    from pipeline.cli import main

    write = {"leaves": write_leaves, "cifar": write_cifar}[layout]
    write(root / "input" / "toy", n_per_class=n_per_class, n_test=n_test)
    (root / "models").mkdir(parents=True)
    for run, text in ({"r": recipes} if isinstance(recipes, str) else recipes).items():
        (root / "models" / f"{run}.toml").write_text(text)
    for name in pretrained:
        _pretrained(root / "models" / "pretrained", name)
    if k is not None:
        assert main(["folds", *toy_roots(root), "--k", str(k)]) == 0
    return root


def _pretrained(folder: Path, name: str) -> None:
    import timm
    import torch
    from safetensors.torch import save_file

    folder.mkdir(parents=True, exist_ok=True)
    torch.manual_seed(0)
    save_file(timm.create_model(name, num_classes=10).state_dict(), folder / f"{name}.safetensors")


def run_cli(
    *args: str, cwd: Path, env: dict[str, str | None] | None = None, timeout: float = 300, wait=True
) -> subprocess.CompletedProcess | subprocess.Popen:
    """``python -m pipeline *args`` in a new process in ``cwd``, this checkout's ``pipeline``
    first on its path, with this process's environment and ``env`` over it (a None value
    removes the variable). By default it waits (at most ``timeout`` seconds) and returns the
    finished process with its output as text; ``wait=False`` returns the running ``Popen``
    with stdout and stderr as text pipes."""
    full = {**os.environ, "PYTHONPATH": str(REPO), **(env or {})}
    full = {k: v for k, v in full.items() if v is not None}
    cmd = [sys.executable, "-m", "pipeline", *args]
    if not wait:
        pipe = subprocess.PIPE
        return subprocess.Popen(cmd, cwd=cwd, env=full, stdout=pipe, stderr=pipe, text=True)
    return subprocess.run(cmd, cwd=cwd, env=full, capture_output=True, text=True, timeout=timeout)


def extra_module(module: str, extra: str):
    """``module`` of an optional extra; ``make setup`` installs every extra, so a missing one
    fails the test (with the install command) rather than skipping it."""
    import importlib

    import pytest

    try:
        return importlib.import_module(module)
    except ImportError:
        pytest.fail(f"{module} not installed: make setup installs it (pip install -e '.[{extra}]')")
