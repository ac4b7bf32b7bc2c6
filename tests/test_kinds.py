"""Member kinds are a registry (``pipeline/train/kinds``): no code outside it names a kind, and a
new kind is one module plus one registry line, which then trains (under a time budget too),
ensembles and predicts. ``done.json`` of every kind and age reads back as one ``FoldDone``."""

from __future__ import annotations

import ast
import json
import textwrap
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from pipeline import artifacts
from pipeline.cli import main
from pipeline.config import DEFAULT_KIND, Recipe, recipe_from_dict
from pipeline.errors import ArtifactError, RecipeError
from pipeline.train import kinds

from .fakes import toy_roots, toy_workspace

REPO = Path(__file__).resolve().parents[1]
KIND_NAMES = {"finetune", "features"}


def kind_literals(source: str) -> list[int]:
    """Lines of ``source`` holding a string constant that is a member kind's name."""
    return [
        node.lineno
        for node in ast.walk(ast.parse(source))
        if isinstance(node, ast.Constant) and node.value in KIND_NAMES
    ]


def test_member_kind_names_appear_only_in_train_kinds():
    """Outside ``train/kinds/`` no module names a kind (to branch on it): the one exception is
    the recipe's default, ``config.DEFAULT_KIND``, the value of a recipe that names none."""
    assert kind_literals('if recipe.kind == "features":\n    pass\n') == [1]  # the scan bites
    allowed = {("pipeline/config.py", f'DEFAULT_KIND = "{DEFAULT_KIND}"')}
    hits = []
    for path in sorted((REPO / "pipeline").rglob("*.py")):
        rel = path.relative_to(REPO).as_posix()
        if rel.startswith("pipeline/train/kinds/"):
            continue
        lines = path.read_text().splitlines()
        hits += [(rel, lines[n - 1].strip()) for n in kind_literals(path.read_text())]
    assert set(hits) == allowed and len(hits) == 1, hits
    assert set(kinds.KINDS) >= KIND_NAMES and DEFAULT_KIND in kinds.KINDS


def test_unknown_kind_is_refused_listing_the_registered_ones(tmp_path):
    recipe = recipe_from_dict({"kind": "mlp_head"})  # the recipe accepts any kind name
    with pytest.raises(
        RecipeError,
        match=r'r.toml: kind = \'mlp_head\' is not a registered member kind; use one of "finetune", "features"',
    ):
        kinds.check_recipe(recipe, "r.toml")
    with pytest.raises(RecipeError, match=r"kind = 'a b' is not a member kind's name"):
        Recipe(kind="a b")
    with pytest.raises(
        RecipeError, match='f.toml: kind = "features" embeds with a frozen pretrained'
    ):
        kinds.check_recipe(Recipe(kind="features", backbone="resnet18"), "f.toml")


def test_a_kind_says_which_recipe_fields_it_ignores(capsys):
    recipe = Recipe(kind="features", pretrained="hub", epochs=3, lr=0.1, image_size=64)
    kinds.check_recipe(recipe, "f.toml")
    assert (
        "note: f.toml: kind 'features' does not read epochs, lr (ignored)"
        in capsys.readouterr().out
    )
    assert kinds.get_kind("finetune").ignored_fields(Recipe(epochs=3, lr=0.1)) == []


# a whole member kind in one module: the class prior of each fold's training rows, folded into a
# timm model's classifier (weights 0, bias log prior) so that best.pt predicts like any member
TOY_KIND = """
import numpy as np
import torch

from pipeline import artifacts
from pipeline.model.backbone import create_model, data_config
from pipeline.train.fold import save_torch, write_fold_logits
from pipeline.train.kinds.base import Kind
from pipeline.train.kinds.pricing import FOLD_OVERHEAD_S, Cost


class Prior(Kind):
    name = "prior"
    fields = frozenset({"kind", "backbone", "image_size", "tta", "batch_size", "channels_last"})

    def fit_fold(self, job):
        comp, n = job.comp, len(job.comp.classes)
        counts = np.bincount(job.y_all[job.train_rows], minlength=n) + 1.0
        bias = np.log(counts / counts.sum()).astype(np.float32)
        model = create_model(job.recipe, n)
        with torch.no_grad():
            model.get_classifier().weight.zero_()
            model.get_classifier().bias.copy_(torch.from_numpy(bias))
        save_torch(job.fdir / "best.pt", {"model": model.state_dict(), "epoch": 1})
        views = len(job.recipe.tta)
        oof = np.tile(bias, (views, len(job.held_out), 1))
        write_fold_logits(job, job.held_out, oof, np.tile(bias, (views, len(comp.test), 1)))
        y = job.y_all[job.held_out]
        cfg = data_config(model, job.recipe)
        done = artifacts.FoldDone(
            kind=self.name, best_epoch=1, epochs=1, metric=comp.task.metric,
            val_score=float(comp.task.score(y, comp.task.probabilities(oof[0]))),
            val_acc=float((oof[0].argmax(1) == y).mean()), mean=cfg["mean"], std=cfg["std"],
            threads=torch.get_num_threads(), seconds=0.0, holdout_used=False,
            extra={"prior": bias.tolist()},
        )
        artifacts.write_done(job.fdir / "done.json", done)

    def probe(self, p):
        return Cost(self.name, 0.0, 0.0, FOLD_OVERHEAD_S, 0.0, {})


KIND = Prior()
"""

RECIPE = 'backbone = "test_resnet"\nimage_size = 16\nepochs = 1\nbatch_size = 8\ntta = ["none", "hflip"]\n'


def test_a_toy_kind_in_one_module_trains_ensembles_and_predicts(tmp_path, monkeypatch, capsys):
    """One module (written here, outside the package) and one registry line: nothing else."""
    (tmp_path / "plugins").mkdir()
    (tmp_path / "plugins" / "toy_prior_kind.py").write_text(textwrap.dedent(TOY_KIND))
    monkeypatch.syspath_prepend(str(tmp_path / "plugins"))
    monkeypatch.setitem(kinds.KINDS, "prior", "toy_prior_kind")  # the registry line
    runs = {"p": f'kind = "prior"\n{RECIPE}', "t": RECIPE}
    toy_workspace(tmp_path, runs, layout="cifar", n_per_class=6, n_test=5)  # 2 folds
    args = toy_roots(tmp_path)
    # under a time budget: the planner prices it through its probe, epochs are not its
    assert main(["train", *args, "--runs", "p t", "--budget", "30m"]) == 0
    out = capsys.readouterr().out
    assert "  p                     prior" in out and "left out" not in out
    done = artifacts.read_done(tmp_path / "models/toy/p/fold1/done.json", "")
    assert done.kind == "prior" and done.extra["prior"][0] < 0
    with np.load(tmp_path / "models/toy/p/oof.npz") as z:
        assert z["logits"].shape == (2, 18, 3)
    ens = ["ensemble", *args, "--runs", "p t", "--methods", "soft weighted", "--no-report"]
    assert main(ens) == 0
    to = tmp_path / "out" / "submission.csv"
    test = ["--test", str(tmp_path / "input" / "toy"), "--to", str(to)]
    assert main(["predict", *args, "--name", "ensemble", *test]) == 0
    made = pd.read_csv(tmp_path / "submissions/toy/ensemble/submission.csv")
    assert pd.read_csv(to).equals(made)
    state = json.loads((tmp_path / "submissions/toy/ensemble/ensemble.json").read_text())
    assert "p" in json.dumps(state)


# done.json as each kind and age wrote it: what read_done must take
OLD_FINETUNE = {"best_epoch": 3, "val_acc": 0.8, "mean": [0.5] * 3, "std": [0.25] * 3, "epochs": 4}
FINETUNE = {
    "best_epoch": 4, "val_acc": 0.9, "metric": "f1_macro", "val_score": 0.85,
    "mean": [0.4] * 3, "std": [0.2] * 3, "epochs": 4, "threads": 2, "seconds": 12.5,
    "holdout_used": False,
}  # fmt: skip
FEATURES = {
    "kind": "features", "best_epoch": 1, "metric": "accuracy", "mean": [0.5] * 3,
    "std": [0.5] * 3, "epochs": 1, "seconds": 3.0, "threads": 1, "holdout_used": False,
    "l2_inner": 0.01, "l2_inner_val": 2, "l2_path": [{"l2": 0.1, "inner_score": 0.5}],
    "pseudo_labels": 0, "l2": 0.005, "val_loss": 0.7, "val_acc": 0.75, "val_score": 0.75,
}  # fmt: skip


@pytest.mark.parametrize(
    "raw", [OLD_FINETUNE, FINETUNE, FEATURES], ids=["old", "finetune", "features"]
)
def test_read_done_takes_both_schemas_and_round_trips(raw, tmp_path):
    path = tmp_path / "done.json"
    path.write_text(json.dumps(raw))
    done = artifacts.read_done(path, "make train")
    assert done.kind == raw.get("kind", "finetune") and done.best_epoch == raw["best_epoch"]
    assert done.val_score == raw.get("val_score", raw["val_acc"])  # older: accuracy only
    assert done.holdout_used == raw.get("holdout_used") and done.mean == raw["mean"]
    assert done.val_loss == raw.get("val_loss")
    if raw is FEATURES:
        assert done.extra == {
            k: raw[k] for k in ("l2_inner", "l2_inner_val", "l2_path", "pseudo_labels", "l2")
        }
    again = tmp_path / "again.json"
    artifacts.write_done(again, done)
    assert artifacts.read_done(again, "make train") == done
    if raw is not OLD_FINETUNE:  # today's files are written back with the same keys
        assert set(json.loads(again.read_text())) == set(raw) | {"kind"}


def test_read_done_refuses_what_is_not_a_fold_record(tmp_path):
    path = tmp_path / "r" / "fold0" / "done.json"
    path.parent.mkdir(parents=True)
    path.write_text('{"kind": "features"}')
    with pytest.raises(
        ArtifactError,
        match=r"done.json is not a finished fold's record .*delete .*fold0 and re-run: make train RUNS=r",
    ):
        artifacts.read_done(path, "make train RUNS=r")
