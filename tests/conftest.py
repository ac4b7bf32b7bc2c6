"""Fixtures that write tiny competitions in both Kaggle layouts into tmp_path."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

# TRACK=none for the suite (its time does not grow); tests/test_tracking.py and the executor
# tests turn TensorBoard on where they check it. Set before any test imports the CLI.
os.environ["PIPELINE_TRACK"] = "none"

from .fakes import write_cifar, write_leaves


@pytest.fixture
def leaves(tmp_path: Path) -> Path:
    return write_leaves(tmp_path / "input" / "leaves")


@pytest.fixture
def cifar(tmp_path: Path) -> Path:
    return write_cifar(tmp_path / "input" / "cifar")


def pytest_collection_modifyitems(config, items):
    """Files that hold a ``slow`` test first, each file's tests in their order: pytest-xdist
    (``make test``: ``--dist loadfile``) hands files to its workers in this order, so the long
    ones start at once and the many short ones fill the gaps, not the other way round."""
    slow = {item.path for item in items if item.get_closest_marker("slow")}
    items.sort(key=lambda item: item.path not in slow)
