"""The train stage: each (run, fold) trains, keeps its best epoch, predicts OOF and test.

One (run, fold) is the unit of work. Its folder ``models/<comp>/<run>/fold<k>/`` holds
``last.pt`` (resume state, rewritten atomically each epoch), ``best.pt`` (weights of the best
epoch), ``metrics.csv``, ``curves.png``, ``oof.npz``, ``test.npz``, then ``done.json`` (skip on re-run).
Once every fold is done the run's ``oof.npz``/``test.npz`` are assembled.
"""

from __future__ import annotations

import io
import os
import platform
import time
import tomllib
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd
import timm
import torch
from tqdm import tqdm

from . import artifacts, engine
from .assemble import assemble_run, train_rows
from .backbone import create_model, data_config
from .competition import Competition
from .config import Recipe, load_recipe, to_toml
from .curves import plot_curves
from .data import CachedImages, build_cache, make_loader, train_transform
from .errors import ArtifactError, PipelineError


def resolve_device(name: str = "auto") -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name.startswith("cuda") and not torch.cuda.is_available():
        raise PipelineError(f"DEVICE={name} but CUDA is not available here; use DEVICE=cpu")
    return torch.device(name)


def train_stage(
    comp: Competition,
    runs: list[str],
    folds: list[int] | None = None,
    overrides: dict | None = None,
    device: str = "auto",
    root: Path = Path("."),
) -> None:
    fpath = artifacts.folds_path(comp.name, root)
    folds_df = artifacts.read_folds(fpath)
    folds_df["row"] = train_rows(comp, folds_df, fpath)  # folds rows may be relabelled/dropped
    fhash = artifacts.file_hash(fpath)
    k = int(folds_df["fold"].max()) + 1
    todo = folds if folds is not None else list(range(k))
    if bad := [f for f in todo if not 0 <= f < k]:
        raise PipelineError(f"FOLDS has fold {bad[0]} but {fpath} has folds 0..{k - 1}")
    dev = resolve_device(device)
    recipes = {run: load_recipe(root / "models" / f"{run}.toml", overrides) for run in runs}
    for run, recipe in recipes.items():
        rdir = root / "models" / comp.name / run
        check_config(rdir, recipe, fhash, run, comp)
        for fold in todo:
            if (rdir / f"fold{fold}" / "done.json").is_file():
                print(f"{run} fold {fold}: done, skipped (delete {rdir}/fold{fold} to retrain)")
                # left when a kill fell between done.json and its removal in finish_fold
                (rdir / f"fold{fold}" / "last.pt").unlink(missing_ok=True)
                continue
            train_fold(comp, folds_df, fhash, run, recipe, fold, rdir, dev)
        assemble_run(rdir, folds_df, comp, fhash, k, run)


def check_config(rdir: Path, recipe: Recipe, fhash: str, run: str, comp: Competition) -> None:
    """Write the resolved recipe once; refuse to mix folds trained with another recipe/folds."""
    path = rdir / "config.toml"
    if path.is_file():
        old = tomllib.loads(path.read_text())
        diff = [k for k, v in recipe.to_dict().items() if old.get("recipe", {}).get(k) != v]
        if diff or old.get("folds_hash") != fhash:
            what = f"recipe field {diff[0]!r}" if diff else "folds file"
            raise ArtifactError(
                f"{path}: the {what} changed since this run's folds were trained; delete {rdir} to "
                f"retrain, or save the recipe under a new name: models/<new>.toml"
            )
        return
    meta = {
        "run": run,
        "comp": comp.name,
        "folds_hash": fhash,
        "created": time.strftime("%Y-%m-%d %H:%M:%S"),
        "versions": {
            "torch": torch.__version__,
            "timm": timm.__version__,
            "python": platform.python_version(),
        },
        "recipe": recipe.to_dict(),
    }
    artifacts.atomic_write_text(path, to_toml(meta))


@dataclass
class FoldJob:
    """One (run, fold): what its setup, epochs and final predictions share."""

    comp: Competition
    folds_df: pd.DataFrame
    fhash: str
    run: str
    recipe: Recipe
    fold: int
    fdir: Path
    device: torch.device
    model: torch.nn.Module | None = None
    cfg: dict = field(default_factory=dict)
    norm: tuple = ()
    train_imgs: np.ndarray | None = None
    va_rows: np.ndarray | None = None
    y_all: np.ndarray | None = None


def train_fold(
    comp,
    folds_df,
    fhash: str,
    run: str,
    recipe: Recipe,
    fold: int,
    rdir: Path,
    device: torch.device,
) -> None:
    job = FoldJob(comp, folds_df, fhash, run, recipe, fold, rdir / f"fold{fold}", device)
    loop, loader = setup_fold(job)
    history = run_epochs(job, loop, loader)
    finish_fold(job, history)


def setup_fold(job: FoldJob) -> tuple[engine.Loop, torch.utils.data.DataLoader]:
    """Model (same initial weights on every restart), decode cache, loader, optimizer state."""
    r, dev, fold = job.recipe, job.device, job.fold
    torch.manual_seed(r.seed + fold)
    rows, folds = job.folds_df["row"].to_numpy(), job.folds_df["fold"].to_numpy()
    job.y_all = np.full(len(job.comp.train), -1, dtype=np.int64)  # by train row; -1: not in folds
    job.y_all[rows] = artifacts.label_indices(job.folds_df["label"], job.comp.classes)
    job.model = create_model(r, len(job.comp.classes)).to(dev)
    job.cfg = data_config(job.model, r)
    job.norm = (torch.tensor(job.cfg["mean"], device=dev), torch.tensor(job.cfg["std"], device=dev))
    cache = job.fdir.parent.parent / ".cache" / f"train_{r.image_size}.u8"
    job.train_imgs = build_cache(
        job.comp.root, job.comp.train["path"].tolist(), r.image_size, cache
    )
    job.va_rows = rows[folds == fold]  # rows of the decode cache, i.e. of comp.train
    aug = train_transform(r.augment, r.image_size, r.custom_augment)
    ds = CachedImages(job.train_imgs, rows[folds != fold], job.y_all, aug, seed=r.seed + fold)
    loader = make_loader(ds, r.batch_size, True, r.seed + fold, auto_workers(r, dev), dev)
    loop = engine.make_loop(job.model, r, job.norm, dev, len(loader), len(job.comp.classes))
    return loop, loader


def run_epochs(job: FoldJob, loop: engine.Loop, loader) -> list[dict]:
    """Train from the last finished epoch; keep the best epoch; checkpoint every epoch."""
    r, fdir, tag = job.recipe, job.fdir, f"{job.run} fold {job.fold}"
    state = load_resume(fdir / "last.pt", loop)
    history: list[dict] = state.get("history", [])
    best = max((h["val_acc"] for h in history), default=-1.0)
    for epoch in range(state.get("epoch", -1) + 1, r.epochs):
        if stale := epochs_since_best(history, r.patience):
            tqdm.write(f"{tag}: early stop, no val gain for {stale} epochs")
            break
        seed_epoch(r.seed + job.fold, epoch)
        loader.sampler.set_epoch(epoch)
        engine.set_frozen(job.model, epoch < r.freeze_epochs)
        row = engine.train_one_epoch(loop, loader, f"{tag} epoch {epoch + 1}/{r.epochs}")
        va = engine.predict(
            loop.eval_model(),
            job.train_imgs,
            job.va_rows,
            ("none",),
            job.norm,
            job.device,
            r.batch_size * 2,
            "val",
            engine.amp_dtype(r, job.device),
        )[0]
        row.update(
            zip(("val_loss", "val_acc"), engine.score(va, job.y_all[job.va_rows]), strict=True)
        )
        history.append({"epoch": epoch + 1, **row})
        if improved := row["val_acc"] > best:
            best = row["val_acc"]
            save_torch(
                fdir / "best.pt", {"model": loop.eval_model().state_dict(), "epoch": epoch + 1}
            )
        save_torch(fdir / "last.pt", {**loop.state_dict(), "epoch": epoch, "history": history})
        tqdm.write(format_epoch(job.run, job.fold, history[-1], r.epochs, improved))
    return history


def seed_epoch(seed: int, epoch: int) -> None:
    """Seed torch (dropout, mixup masks) and numpy (timm Mixup) from (seed, epoch): a run resumed
    at an epoch boundary draws exactly what an uninterrupted run would."""
    s = (seed * 1_000_003 + epoch * 7919) % 2**32
    torch.manual_seed(s)
    np.random.seed(s)


def epochs_since_best(history: list[dict], patience: int) -> int:
    """Epochs since the best val accuracy when that reaches ``patience`` (> 0), else 0."""
    if patience <= 0 or not history:
        return 0
    accs = [h["val_acc"] for h in history]
    stale = len(accs) - 1 - int(np.argmax(accs))
    return stale if stale >= patience else 0


def finish_fold(job: FoldJob, history: list[dict]) -> None:
    """Best weights -> OOF and test logits under every TTA view, metrics, curves, done marker."""
    best = torch.load(job.fdir / "best.pt", map_location=job.device, weights_only=True)
    job.model.load_state_dict(best["model"])
    test_imgs = build_cache(
        job.comp.root,
        job.comp.test["path"].tolist(),
        job.recipe.image_size,
        job.fdir.parent.parent / ".cache" / f"test_{job.recipe.image_size}.u8",
    )
    oof = _predict(job, job.train_imgs, job.va_rows, "oof")
    test = _predict(job, test_imgs, np.arange(len(test_imgs)), "test")
    common = {
        "classes": np.array(job.comp.classes),
        "views": np.array(job.recipe.tta),
        "folds_hash": np.array(job.fhash),
    }
    artifacts.write_logits(
        job.fdir / "oof.npz",
        ids=job.comp.train["id"].to_numpy()[job.va_rows],
        fold=np.full(len(job.va_rows), job.fold),
        logits=oof,
        **common,
    )
    artifacts.write_logits(
        job.fdir / "test.npz", ids=job.comp.test["id"].to_numpy(), logits=test, **common
    )
    metrics = pd.DataFrame(history)
    artifacts.write_csv(job.fdir / "metrics.csv", metrics)
    plot_curves(metrics, job.fdir / "curves.png", f"{job.comp.name} / {job.run} / fold {job.fold}")
    artifacts.write_json(
        job.fdir / "done.json",
        {
            "best_epoch": int(best["epoch"]),
            "val_acc": float(metrics["val_acc"].max()),
            "mean": job.cfg["mean"],
            "std": job.cfg["std"],
            "epochs": len(metrics),
        },
    )
    (job.fdir / "last.pt").unlink(missing_ok=True)  # the fold is final; best.pt is the checkpoint


def _predict(job: FoldJob, images: np.ndarray, rows: np.ndarray, what: str) -> np.ndarray:
    r = job.recipe
    return engine.predict(
        job.model,
        images,
        rows,
        r.tta,
        job.norm,
        job.device,
        r.batch_size * 2,
        f"{job.run} fold {job.fold} {what}",
        engine.amp_dtype(r, job.device),
    )


def load_resume(path: Path, loop: engine.Loop) -> dict:
    if not path.is_file():
        return {}
    state = torch.load(path, map_location=loop.device, weights_only=True)
    loop.load_state_dict(state)
    print(f"resuming {path.parent} after epoch {state['epoch'] + 1}")
    return state


def save_torch(path: Path, obj: dict) -> None:
    buf = io.BytesIO()
    torch.save(obj, buf)
    artifacts.atomic_write_bytes(path, buf.getvalue())


def auto_workers(recipe: Recipe, device: torch.device) -> int:
    if recipe.num_workers >= 0:
        return recipe.num_workers
    return min(8, os.cpu_count() or 1) if device.type == "cuda" else 0


def format_epoch(run: str, fold: int, h: dict, epochs: int, improved: bool) -> str:
    return (
        f"{run} fold {fold} epoch {h['epoch']}/{epochs}  train loss {h['train_loss']:.3f} "
        f"acc {h['train_acc']:.3f}  val loss {h['val_loss']:.3f} acc {h['val_acc']:.4f}  "
        f"lr {h['lr']:.2e}  {h['img_per_s']:.0f} img/s{'  *' if improved else ''}"
    )
