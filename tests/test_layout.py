"""Architecture tests for the ``pipeline`` package layout.

Layers (high -> low): tools > __main__ > cli > teach > predict > {folds | train | ensemble | report | submit}
> {competition | model} > the core (``pipeline.CORE``, the one list: the layers contract's last
layer and docs/development.md's ``layers`` row are held to it below).

The contracts themselves live in ``[tool.importlinter]`` in pyproject.toml; these tests
(a) run them, (b) prove they bite on a planted violation in a throwaway copy,
(c) check at runtime that the torch-free packages really don't load torch, and
(d) forbid import cycles between any two modules of ``pipeline``
(``acyclic_siblings`` only looks at siblings and misses e.g. pipeline <-> pipeline.x.y).

Needs the dev extra (import-linter, which brings grimp). Run from the repo root.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
import textwrap
import tomllib
from pathlib import Path

import grimp
import numpy as np
import pytest
from scipy.sparse import csr_matrix
from scipy.sparse.csgraph import connected_components

REPO = Path(__file__).resolve().parents[1]
PYPROJECT = REPO / "pyproject.toml"
PACKAGE = "pipeline"

TORCH_FREE = ("pipeline.competition", "pipeline.folds", "pipeline.report", "pipeline.submit")
HEAVY = ("torch", "torchvision", "timm", "albumentations")

# Keep in step with [tool.importlinter]: same as lint-imports' default (TYPE_CHECKING imports count).
EXCLUDE_TYPE_CHECKING_IMPORTS = False


def _contract_names() -> dict[str, str]:
    config = tomllib.loads(PYPROJECT.read_text())["tool"]["importlinter"]
    return {c["id"]: c["name"] for c in config["contracts"]}


CONTRACTS = _contract_names()

# lint-imports entry point, run with the interpreter running pytest (same venv).
_LINT = "import sys; from importlinter.cli import lint_imports_command; sys.exit(lint_imports_command())"


def _lint_imports(cwd: Path, config: Path) -> subprocess.CompletedProcess[str]:
    """Run lint-imports in a fresh interpreter so grimp resolves ``pipeline`` from ``cwd``.

    (In-process runs would find an already-imported ``pipeline`` via sys.modules.)
    """
    env = {**os.environ, "PYTHONPATH": str(cwd), "NO_COLOR": "1"}
    return subprocess.run(
        [sys.executable, "-c", _LINT, str(config), "--no-cache", "--no-logo"],
        cwd=cwd,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )


# --------------------------------------------------------------------------- (a)


def test_import_contracts_are_kept() -> None:
    result = _lint_imports(REPO, PYPROJECT)
    output = result.stdout + result.stderr
    assert result.returncode == 0, output
    for name in CONTRACTS.values():
        assert f"{name} KEPT" in output, output


def test_one_list_of_the_core() -> None:
    """``pipeline.CORE`` is the core: the layers contract's last layer and the ``layers`` row of
    docs/development.md name exactly its modules (import-linter reads only pyproject.toml)."""
    import pipeline

    config = tomllib.loads(PYPROJECT.read_text())["tool"]["importlinter"]
    layers = next(c for c in config["contracts"] if c["id"] == "layers")["layers"]
    assert layers[-1].split(" : ") == list(pipeline.CORE)
    row = next(
        line
        for line in (REPO / "docs" / "development.md").read_text().splitlines()
        if line.startswith("| `layers` |")
    )
    listed = row.split("the core (", 1)[1].split(":", 1)[0]
    assert re.findall(r"`(\w+)`", listed) == list(pipeline.CORE), row
    assert all(
        (REPO / PACKAGE / name).is_dir() or (REPO / PACKAGE / f"{name}.py").is_file()
        for name in pipeline.CORE
    )


# --------------------------------------------------------------------------- (b)


def _target(package_dir: Path) -> Path:
    """The module to plant an import into: stage.py, else the package's __init__.py."""
    stage = package_dir / "stage.py"
    return stage if stage.exists() else package_dir / "__init__.py"


@pytest.mark.parametrize(
    ("stage", "planted", "broken_ids", "message"),
    [
        pytest.param(
            "report",
            "import torch",
            ["torch-free"],
            "pipeline.report is not allowed to import torch",
            id="report-imports-torch",
        ),
        pytest.param(
            "predict",
            "from pipeline.train import augment as _planted",
            ["kaggle-offline"],
            "pipeline.predict is not allowed to import albumentations",
            id="predict-imports-albumentations-via-train-augment",
        ),
        pytest.param(
            "predict",
            "from pipeline.cli import main as _planted",
            ["layers"],
            "pipeline.predict is not allowed to import pipeline.cli",
            id="predict-imports-cli",
        ),
        pytest.param(
            "predict",
            "from pipeline.train import loop as _planted",
            ["predict-not-train"],
            "pipeline.predict is not allowed to import pipeline.train",
            id="predict-imports-train-loop",
        ),
        pytest.param(
            "model",
            "import pandas as _planted",
            ["model-lean"],
            "pipeline.model is not allowed to import pandas",
            id="model-imports-pandas",
        ),
        pytest.param(
            "folds",
            "from pipeline.train import stage as _planted",
            ["layers", "stages-independent"],
            "pipeline.folds is not allowed to import pipeline.train",
            id="folds-imports-train",
        ),
    ],
)
def test_contracts_catch_planted_violation(
    tmp_path: Path, stage: str, planted: str, broken_ids: list[str], message: str
) -> None:
    shutil.copytree(
        REPO / PACKAGE, tmp_path / PACKAGE, ignore=shutil.ignore_patterns("__pycache__")
    )
    config = tmp_path / "pyproject.toml"
    shutil.copyfile(PYPROJECT, config)

    # The copy, not the repo (or an installed/editable pipeline), must be what gets analysed.
    spec_origin = subprocess.run(
        [sys.executable, "-c", "import importlib.util as u; print(u.find_spec('pipeline').origin)"],
        cwd=tmp_path,
        env={**os.environ, "PYTHONPATH": str(tmp_path)},
        capture_output=True,
        text=True,
        check=True,
    ).stdout.strip()
    assert Path(spec_origin).resolve().is_relative_to(tmp_path.resolve()), spec_origin

    baseline = _lint_imports(tmp_path, config)
    assert baseline.returncode == 0, baseline.stdout + baseline.stderr

    target = _target(tmp_path / PACKAGE / stage)
    target.write_text(target.read_text() + f"\n{planted}\n")

    result = _lint_imports(tmp_path, config)
    output = result.stdout + result.stderr
    assert result.returncode == 1, output
    for contract_id in broken_ids:
        assert f"{CONTRACTS[contract_id]} BROKEN" in output, output
    assert message in output, output


# --------------------------------------------------------------------------- (c)

_NO_TORCH_PROBE = textwrap.dedent(
    """
    import importlib, json, pkgutil, sys, traceback

    HEAVY = {heavy!r}
    attempts = []

    class Blocker:
        # Refuse the heavy packages instead of loading them (slow) and record who asked.
        def find_spec(self, name, path=None, target=None):
            if name.split(".")[0] in HEAVY:
                stack = [f"{{f.filename}}:{{f.lineno}}" for f in traceback.extract_stack()
                         if "/pipeline/" in f.filename]
                attempts.append({{"module": name, "from": stack[-3:]}})
                raise ModuleNotFoundError(f"blocked by test: {{name}}", name=name)
            return None

    def load(name):
        try:
            return importlib.import_module(name)
        except Exception as exc:  # report, don't crash: the JSON below is the verdict
            errors.append(f"{{name}}: {{exc!r}}")

    errors = []
    sys.meta_path.insert(0, Blocker())
    for package_name in {packages!r}:
        package = load(package_name)
        if package is not None:
            for info in pkgutil.walk_packages(package.__path__, package_name + ".", onerror=load):
                load(info.name)
    loaded = sorted(m for m in sys.modules if m.split(".")[0] in HEAVY)
    print(json.dumps({{"attempts": attempts, "loaded": loaded, "errors": errors}}))
    """
)


def test_torch_free_packages_do_not_load_torch_at_runtime() -> None:
    probe = _NO_TORCH_PROBE.format(heavy=HEAVY, packages=TORCH_FREE)
    result = subprocess.run(
        [sys.executable, "-c", probe],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    report = json.loads(result.stdout.strip().splitlines()[-1])
    assert report == {"attempts": [], "loaded": [], "errors": []}, json.dumps(report, indent=2)


# --------------------------------------------------------------------------- (d)


def _strongly_connected_components(graph: grimp.ImportGraph, modules: set[str]) -> list[list[str]]:
    """Groups of modules that import each other, directly or not (scipy's Tarjan)."""
    names = sorted(modules)
    pos = {m: i for i, m in enumerate(names)}
    edges = [
        (pos[m], pos[t])
        for m in names
        for t in graph.find_modules_directly_imported_by(m) & modules
    ]
    rows, cols = zip(*edges, strict=True) if edges else ((), ())
    adj = csr_matrix((np.ones(len(rows)), (rows, cols)), shape=(len(names), len(names)))
    _, label = connected_components(adj, directed=True, connection="strong")
    groups: dict[int, list[str]] = {}
    for name, lab in zip(names, label, strict=True):
        groups.setdefault(int(lab), []).append(name)
    return list(groups.values())


def _describe_cycle(graph: grimp.ImportGraph, component: list[str]) -> str:
    members = set(component)
    start = component[0]
    nxt = sorted(graph.find_modules_directly_imported_by(start) & members)[0]
    back = graph.find_shortest_chain(importer=nxt, imported=start) or (nxt, start)
    cycle = [start, *back]
    lines = []
    for importer, imported in zip(cycle, cycle[1:], strict=False):
        details = graph.get_import_details(importer=importer, imported=imported)
        where = ", ".join(f"l.{d['line_number']}" for d in details) or "?"
        lines.append(f"    {importer} -> {imported} ({where})")
    return f"  cycle through {len(component)} modules {component}:\n" + "\n".join(lines)


def test_no_import_cycles_between_modules() -> None:
    graph = grimp.build_graph(
        PACKAGE,
        cache_dir=None,
        exclude_type_checking_imports=EXCLUDE_TYPE_CHECKING_IMPORTS,
    )
    modules = {m for m in graph.modules if m == PACKAGE or m.startswith(PACKAGE + ".")}
    cycles = [c for c in _strongly_connected_components(graph, modules) if len(c) > 1]
    assert not cycles, "import cycles in pipeline:\n" + "\n".join(
        _describe_cycle(graph, c) for c in cycles
    )
