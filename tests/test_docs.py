"""The front page and docs/ stay true to the code: every list they show is derived or checked."""

from __future__ import annotations

import dataclasses
import re
import shutil
import subprocess
from pathlib import Path

import pytest

from pipeline.config import AUGMENT_PRESETS, CHOICES, TTA_VIEWS, Recipe
from pipeline.ensemble.methods import ALIASES, METHODS
from pipeline.train.kinds import KINDS

REPO = Path(__file__).resolve().parents[1]
README = REPO / "README.md"
DOCS = REPO / "docs"


def test_readme_is_a_front_page() -> None:
    text = README.read_text()
    assert len(text) <= 12_000, f"README.md is {len(text)} characters; move detail into docs/"
    for needed in ("make demo", "make test", "folds", "train", "ensemble", "submit"):
        assert needed in text


def test_readme_and_docs_links_resolve() -> None:
    for page in [README, *DOCS.glob("*.md")]:
        for target in re.findall(r"\]\(([^)#\s]+)(?:#[^)]*)?\)", page.read_text()):
            if "://" in target:
                continue
            assert (page.parent / target).exists(), f"{page.name} links to missing {target}"


def test_recipes_doc_names_every_recipe_field_and_choice() -> None:
    text = (DOCS / "recipes.md").read_text()
    missing = [f.name for f in dataclasses.fields(Recipe) if f"`{f.name}`" not in text]
    assert not missing, f"docs/recipes.md lacks Recipe field(s): {missing}"
    names = (*AUGMENT_PRESETS, *TTA_VIEWS, *(c for cs in CHOICES.values() for c in cs), *KINDS)
    for name in names:
        assert f"`{name}`" in text or f'"{name}"' in text, f"docs/recipes.md lacks {name!r}"


def test_ensembles_doc_names_every_method() -> None:
    text = (DOCS / "ensembles-report.md").read_text()
    missing = [m for m in [*METHODS, *ALIASES] if f"`{m}`" not in text]
    assert not missing, f"docs/ensembles-report.md lacks method(s): {missing}"


@pytest.mark.skipif(shutil.which("make") is None, reason="needs make")
def test_make_help_lists_every_target_with_one_line() -> None:
    out = subprocess.run(["make", "-s", "help"], cwd=REPO, capture_output=True, text=True)
    assert out.returncode == 0, out.stderr
    makefile = (REPO / "Makefile").read_text()
    phony = re.search(r"^\.PHONY:(.*?)(?<!\\)\n", makefile, re.M | re.S)[1]
    targets = phony.replace("\\", " ").split()
    for t in targets:
        assert re.search(rf"^  make {re.escape(t)}\s+\S", out.stdout, re.M), f"make help lacks {t}"
