"""Fixtures that write tiny competitions in both Kaggle layouts into tmp_path."""

from __future__ import annotations

from pathlib import Path

import pytest

from .fakes import write_cifar, write_leaves


@pytest.fixture
def leaves(tmp_path: Path) -> Path:
    return write_leaves(tmp_path / "input" / "leaves")


@pytest.fixture
def cifar(tmp_path: Path) -> Path:
    return write_cifar(tmp_path / "input" / "cifar")
