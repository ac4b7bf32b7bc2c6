"""The train stage: each (run, fold) trains, keeps its best epoch, predicts OOF and test.

One (run, fold) is the unit of work. Its folder ``models/<comp>/<run>/fold<k>/`` holds
``last.pt`` (resume state, rewritten atomically each epoch), ``best.pt`` (weights of the best
epoch), ``metrics.csv``, ``curves.png``, ``oof.npz``, ``test.npz`` and finally ``done.json``; a
fold with ``done.json`` is skipped. When every fold is done the run's ``oof.npz``/``test.npz``
are assembled.
"""

from __future__ import annotations

import io
import platform
import time
from pathlib import Path

import numpy as np
import pandas as pd
import timm
import torch
from tqdm import tqdm

from . import artifacts, engine
from .assemble import assemble_run
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
                continue
            train_fold(comp, folds_df, fhash, run, recipe, fold, rdir, dev)
        assemble_run(rdir, folds_df, comp, fhash, k, run)


def check_config(rdir: Path, recipe: Recipe, fhash: str, run: str, comp: Competition) -> None:
    """Write the resolved recipe once; refuse to mix folds trained with another recipe/folds."""
    path = rdir / "config.toml"
    if path.is_file():
        import tomllib

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


def train_fold(
    comp,
    folds_df: pd.DataFrame,
    fhash: str,
    run: str,
    recipe: Recipe,
    fold: int,
    rdir: Path,
    device: torch.device,
) -> None:
    fdir = rdir / f"fold{fold}"
    torch.manual_seed(recipe.seed + fold)  # same initial weights on every (re)start
    y_all = folds_df["label"].map({c: i for i, c in enumerate(comp.classes)}).to_numpy()
    model = create_model(recipe, len(comp.classes)).to(device)
    cfg = data_config(model, recipe)
    norm = (torch.tensor(cfg["mean"], device=device), torch.tensor(cfg["std"], device=device))
    train_imgs = build_cache(
        comp.root,
        comp.train["path"].tolist(),
        recipe.image_size,
        rdir.parent / ".cache" / f"train_{recipe.image_size}.u8",
    )
    tr_rows = np.flatnonzero(folds_df["fold"].to_numpy() != fold)
    va_rows = np.flatnonzero(folds_df["fold"].to_numpy() == fold)
    aug = train_transform(recipe.augment, recipe.image_size, recipe.custom_augment)
    ds = CachedImages(train_imgs, tr_rows, y_all, aug, seed=recipe.seed + fold)
    loader = make_loader(
        ds, recipe.batch_size, True, recipe.seed + fold, auto_workers(recipe, device), device
    )
    loop = engine.make_loop(model, recipe, norm, device, len(loader), len(comp.classes))
    state = load_resume(fdir / "last.pt", loop)
    history: list[dict] = state.get("history", [])
    best = max((h["val_acc"] for h in history), default=-1.0)
    for epoch in range(state.get("epoch", -1) + 1, recipe.epochs):
        if stale := epochs_since_best(history, recipe.patience):
            tqdm.write(f"{run} fold {fold}: early stop, no val gain for {stale} epochs")
            break
        seed_epoch(recipe.seed + fold, epoch)
        loader.sampler.set_epoch(epoch)
        engine.set_frozen(model, epoch < recipe.freeze_epochs)
        row = engine.train_one_epoch(
            loop, loader, f"{run} fold {fold} epoch {epoch + 1}/{recipe.epochs}"
        )
        va = engine.predict(
            loop.eval_model(),
            train_imgs,
            va_rows,
            ("none",),
            norm,
            device,
            recipe.batch_size * 2,
            "val",
            engine.amp_dtype(recipe, device),
        )[0]
        row.update(zip(("val_loss", "val_acc"), engine.score(va, y_all[va_rows]), strict=True))
        history.append({"epoch": epoch + 1, **row})
        if improved := row["val_acc"] > best:
            best = row["val_acc"]
            save_torch(
                fdir / "best.pt", {"model": loop.eval_model().state_dict(), "epoch": epoch + 1}
            )
        save_torch(fdir / "last.pt", {**loop.state_dict(), "epoch": epoch, "history": history})
        tqdm.write(format_epoch(run, fold, history[-1], recipe.epochs, improved))
    finish_fold(
        comp,
        fdir,
        model,
        recipe,
        cfg,
        norm,
        device,
        train_imgs,
        va_rows,
        folds_df,
        history,
        fhash,
        run,
        fold,
    )


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


def finish_fold(
    comp,
    fdir,
    model,
    recipe,
    cfg,
    norm,
    device,
    train_imgs,
    va_rows,
    folds_df,
    history,
    fhash,
    run,
    fold,
) -> None:
    """Best weights -> OOF and test logits under every TTA view, metrics, curves, done marker."""
    best = torch.load(fdir / "best.pt", map_location=device, weights_only=True)
    model.load_state_dict(best["model"])
    test_imgs = build_cache(
        comp.root,
        comp.test["path"].tolist(),
        recipe.image_size,
        fdir.parent.parent / ".cache" / f"test_{recipe.image_size}.u8",
    )
    bs = recipe.batch_size * 2
    oof = engine.predict(
        model, train_imgs, va_rows, recipe.tta, norm, device, bs, f"{run} fold {fold} oof"
    )
    test = engine.predict(
        model,
        test_imgs,
        np.arange(len(test_imgs)),
        recipe.tta,
        norm,
        device,
        bs,
        f"{run} fold {fold} test",
    )
    common = {
        "classes": np.array(comp.classes),
        "views": np.array(recipe.tta),
        "folds_hash": np.array(fhash),
    }
    artifacts.write_logits(
        fdir / "oof.npz",
        ids=folds_df["id"].to_numpy()[va_rows],
        fold=folds_df["fold"].to_numpy()[va_rows],
        logits=oof,
        **common,
    )
    artifacts.write_logits(fdir / "test.npz", ids=comp.test["id"].to_numpy(), logits=test, **common)
    metrics = pd.DataFrame(history)
    artifacts.write_csv(fdir / "metrics.csv", metrics)
    plot_curves(metrics, fdir / "curves.png", f"{comp.name} / {run} / fold {fold}")
    artifacts.write_json(
        fdir / "done.json",
        {
            "best_epoch": int(best["epoch"]),
            "val_acc": float(metrics["val_acc"].max()),
            "mean": cfg["mean"],
            "std": cfg["std"],
            "epochs": len(metrics),
        },
    )
    (fdir / "last.pt").unlink(missing_ok=True)  # the fold is final; best.pt is the checkpoint


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
    import os

    return min(8, os.cpu_count() or 1) if device.type == "cuda" else 0


def format_epoch(run: str, fold: int, h: dict, epochs: int, improved: bool) -> str:
    return (
        f"{run} fold {fold} epoch {h['epoch']}/{epochs}  train loss {h['train_loss']:.3f} "
        f"acc {h['train_acc']:.3f}  val loss {h['val_loss']:.3f} acc {h['val_acc']:.4f}  "
        f"lr {h['lr']:.2e}  {h['img_per_s']:.0f} img/s{'  *' if improved else ''}"
    )
