"""Names that would collide in the artifact tree are refused in one line: a competition named
like a folder of ``<models>/`` (the shipped recipe sets, the offline weights), a run named like
a folder of ``<models>/<comp>/`` that is not a run."""

from __future__ import annotations

import shutil
import subprocess

import pytest

from pipeline.cli import main
from pipeline.errors import PipelineError
from pipeline.workspace import Workspace

from .fakes import write_leaves


@pytest.mark.parametrize("name", ["cpu", "gpu", "pretrained"])
def test_a_competition_named_like_a_models_folder_is_refused(name, tmp_path, capsys):
    with pytest.raises(PipelineError, match=rf"a competition folder named '{name}' would share"):
        Workspace(name)
    write_leaves(tmp_path / "input" / name)
    assert main(["folds", "--comp", str(tmp_path / "input" / name), "--output", str(tmp_path)]) == 2
    err = capsys.readouterr().err
    assert (
        f"rename the folder (e.g. input/{name}-comp); reserved: cpu, gpu, cpu-hub, gpu-hub, pretrained"
        in err
    )
    assert not (tmp_path / "folds").exists()


@pytest.mark.parametrize("run", ["embeddings", "teachers", ".cache"])
def test_a_run_named_like_a_shared_folder_is_refused(run, tmp_path):
    with pytest.raises(PipelineError, match=rf"run '{run}': .*/toy/{run}/ holds .*, not a run"):
        Workspace("toy", tmp_path).recipe(run)


@pytest.mark.skipif(shutil.which("make") is None, reason="needs make")
def test_make_clean_keeps_the_shipped_sets_and_weights(tmp_path):
    """Every shipped set (``workspace.RECIPE_SETS``, the hub sets included) and the weights stay."""
    from pipeline.workspace import RECIPE_SETS

    models = tmp_path / "models"
    for d in (*RECIPE_SETS, "pretrained", "leaves/r/fold0", "digits"):
        (models / d).mkdir(parents=True)
    (models / "r.toml").write_text("")
    repo = __import__("pathlib").Path(__file__).resolve().parents[1]
    shutil.copy(repo / "Makefile", tmp_path / "Makefile")
    done = subprocess.run(["make", "-s", "clean", f"MODELS={models}"], cwd=tmp_path)
    assert done.returncode == 0
    kept = sorted(p.name for p in models.iterdir())
    assert kept == sorted([*RECIPE_SETS, "pretrained", "r.toml"])
