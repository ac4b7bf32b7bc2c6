"""What ``make predict`` runs: the saved ensemble and, per member, its recipe, views and fold
weights, each checked against the ensemble state before any image is decoded.

Reads ``submissions/<comp>/<name>/ensemble_state.{json,npz}`` and, per member run,
``models/<comp>/<run>/config.toml``, ``member.json`` (a package) or ``oof.npz`` (a workspace:
only its ``classes``, ``task`` and ``folds_hash``), and per fold ``done.json`` (normalisation) and
the weights: ``weights.safetensors`` (a package) or ``best.pt``.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import timm
import torch

from .. import artifacts
from ..competition.task import Task
from ..config import ADDED_LATER, Recipe, recipe_from_dict
from ..ensemble.state import load_state
from ..errors import ArtifactError, PipelineError
from ..model.backbone import create_model
from ..model.checkpoint import read_checkpoint
from ..model.device import channels_last
from ..workspace import Workspace

WEIGHTS = "weights.safetensors"  # a package's fold weights; a workspace has best.pt


@dataclass(frozen=True)
class Member:
    """One ensemble member: its recipe, the view the ensemble chose (a view name or "tta"), the
    views to compute for it, its OOF score, and per fold the weights file and normalisation."""

    run: str
    recipe: Recipe
    view: str
    views: tuple[str, ...]
    score: float
    weights: tuple[Path, ...]
    mean: tuple[float, ...]
    std: tuple[float, ...]
    # per fold, best.pt's sha256 as done.json recorded it (None: a package's safetensors, or an
    # older done.json), checked when the weights are loaded
    hashes: tuple[str | None, ...] = ()

    def damaged_fix(self, fold: int) -> str:
        return (
            f"delete {self.weights[fold].parent} and re-run make train RUNS={self.run} (that fold "
            "is retrained), then make ensemble"
        )


@dataclass(frozen=True)
class Saved:
    """The saved ensemble: state JSON, fitted estimator, task and members in state order."""

    state: dict[str, Any]
    estimator: Any
    task: Task
    members: list[Member]
    path: Path

    @property
    def classes(self) -> list[str]:
        return list(self.state["classes"])

    def weakest_first(self) -> list[str]:
        """Members ordered weakest first by OOF score (the order a time limit drops them)."""
        sign = 1.0 if self.state.get("greater_is_better", True) else -1.0
        return [m.run for m in sorted(self.members, key=lambda m: (sign * m.score, m.run))]


def load_saved(ws: Workspace, name: str, all_rows: bool = True) -> Saved:
    """Read the ensemble state of ``name`` and every member it names; refuse mismatches.
    ``all_rows``: a member with a model on all rows (``Kind.fit_all_rows``) is that one model,
    as its test logits were made; else (a teacher, which asks each fold's model) its folds."""
    out = ws.submission_dir(name)
    rerun = f"make ensemble NAME={name}"
    path = out / "ensemble_state.json"
    if not path.is_file():
        raise ArtifactError(
            f"{path} not found: no saved ensemble {name!r}; run: make ensemble NAME={name} "
            "(or point MODELS/OUT at the package's dataset folder)"
        )
    state, est = load_state(out, rerun)
    if state.get("dup_labels"):
        raise PipelineError(
            f"{path}: ensemble {name!r} was made with DUP_LABELS=1, which looks test images up "
            "among the train images; predict cannot ship that: re-run make ensemble "
            f"NAME={name} without DUP_LABELS"
        )
    for key in ("recipes", "k", "comp"):
        if key not in state:
            raise ArtifactError(
                f"{path} lacks {key!r} (written before make predict existed); re-run: {rerun}"
            )
    task = Task(state["task"], state["format"], state["metric"], state.get("positive"))
    scores = state.get("member_scores", [0.0] * len(state["members"]))
    members = [
        _member(ws, state, path, run, view, float(score), all_rows)
        for run, view, score in zip(state["members"], state["views"], scores, strict=True)
    ]
    return Saved(state, est, task, members, path)


def _member(
    ws: Workspace, state: dict, state_path: Path, run: str, view: str, score: float, all_rows: bool
) -> Member:
    rdir = ws.run_dir(run)
    train = f"make train COMP=<competition> RUNS={run}, then make ensemble again"
    cfg = artifacts.read_run_config(rdir / "config.toml")
    if cfg is None:
        raise ArtifactError(
            f"{rdir / 'config.toml'} not found: member {run!r} of {state_path} is missing; copy "
            f"the run folder {rdir}/ back or train it: {train}"
        )
    if cfg.get("recipe") != state["recipes"].get(run):
        diff = sorted(
            k
            for k in set(cfg.get("recipe", {})) | set(state["recipes"].get(run, {}))
            if cfg.get("recipe", {}).get(k) != state["recipes"].get(run, {}).get(k)
        )
        raise ArtifactError(
            f"{rdir / 'config.toml'}: recipe field {diff[0]!r} differs from the one "
            f"{state_path} was fitted on (the run was retrained since); re-run make ensemble"
        )
    info = _member_info(rdir)
    for key, want in (
        ("classes", state["classes"]),
        ("task", state["task"]),
        ("folds_hash", state["folds_hash"]),
    ):
        if info.get(key) != want:
            raise ArtifactError(
                f"{info['_path']}: {key} {_short(info.get(key))} differs from {state_path} "
                f"({_short(want)}); the run and the ensemble come from different trainings: "
                "re-run make ensemble, or copy the matching run folder"
            )
    trained_with = cfg.get("versions", {}).get("timm")
    if trained_with and trained_with != timm.__version__:  # a Kaggle image ships its own timm
        print(f"note: {run} was trained with timm {trained_with}, this is {timm.__version__}")
    # a run trained before the decode was recorded decoded every pixel: predicted the same way
    as_trained = {"decode": ADDED_LATER["decode"], **cfg["recipe"]}
    recipe = recipe_from_dict(as_trained, str(rdir / "config.toml"), check_augment=False)
    views = recipe.tta if view == "tta" else (view,)
    weights, hashes, norm = [], [], None
    full = ws.all_rows_dir(run)
    for fdir in _model_dirs(ws, run, int(state["k"]), all_rows):
        file = next((p for p in (fdir / WEIGHTS, fdir / "best.pt") if p.is_file()), None)
        done = fdir / "done.json"
        if file is None or not done.is_file():
            raise ArtifactError(
                f"{fdir}/ has no {'weights (best.pt)' if file is None else 'done.json'}: "
                + (f"fold {fdir.name[4:]}" if fdir.name != full.name else "the all-rows model")
                + f" of member {run!r} is missing or unfinished; run: {train}"
            )
        weights.append(file)
        fold_done = artifacts.read_done(done, train)
        hashes.append(fold_done.best_sha256 if file.name == "best.pt" else None)
        norm = norm or fold_done
    return Member(
        run,
        recipe,
        view,
        tuple(views),
        score,
        tuple(weights),
        tuple(norm.mean),
        tuple(norm.std),
        tuple(hashes),
    )


def _model_dirs(ws: Workspace, run: str, k: int, all_rows: bool) -> list[Path]:
    """The folders of the models that predict for ``run``: its model on all rows where one
    made the run's test logits (``Kind.fit_all_rows``) and ``all_rows``, else its K folds."""
    full = ws.all_rows_dir(run)
    if all_rows and (full / "done.json").is_file():
        return [full]
    return [ws.fold_dir(run, f) for f in range(k)]


def _member_info(rdir: Path) -> dict[str, Any]:
    """``classes``, ``task``, ``folds_hash`` of a run: ``member.json`` in a package, else the
    small arrays of ``oof.npz`` (np.load reads only the keys asked for)."""
    card = rdir / "member.json"
    if card.is_file():
        return {**artifacts.read_json(card, "make package"), "_path": card}
    path = rdir / "oof.npz"
    if not path.is_file():
        raise ArtifactError(f"{path} not found; run: make train RUNS={rdir.name}")
    with np.load(path, allow_pickle=False) as z:
        return {
            "classes": [str(c) for c in z["classes"]],
            "task": str(z["task"]) if "task" in z.files else "multiclass",
            "folds_hash": str(z["folds_hash"]),
            "_path": path,
        }


def _short(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= 80 else text[:77] + "..."


def load_fold_model(m: Member, fold: int, n_classes: int, device: torch.device) -> torch.nn.Module:
    """The fold's trained model, in eval mode on ``device``; a checkpoint that does not fit the
    recipe's backbone and the class count is refused naming the file."""
    path = m.weights[fold]
    model = create_model(m.recipe, n_classes, pretrained=False)
    try:
        if path.suffix == ".safetensors":
            from safetensors.torch import load_file

            weights = load_file(str(path))
        else:
            sha = m.hashes[fold] if m.hashes else None
            weights = read_checkpoint(path, "cpu", m.damaged_fix(fold), sha)[0]["model"]
        model.load_state_dict(weights)  # copies cast fp16 package weights to the model's fp32
    except (RuntimeError, KeyError, OSError) as e:
        first = str(e).strip().splitlines()[-1].strip() if str(e).strip() else type(e).__name__
        raise ArtifactError(
            f"{path} does not fit {m.recipe.backbone} with {n_classes} classes ({first[:160]}); "
            f"the checkpoint comes from another recipe or competition: retrain the run "
            f"(make train RUNS={m.run}) and re-run make ensemble"
        ) from None
    model = model.to(device).eval()
    if channels_last(m.recipe.channels_last, device):  # as training's predictions ran
        model = model.to(memory_format=torch.channels_last)
    return model
