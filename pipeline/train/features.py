"""Frozen-feature members (``kind = "features"``): embed once, fit a linear head per fold.

A pretrained backbone embeds every train and test image once per (backbone, weights, image
size, TTA view); the embeddings are an artifact under ``<models>/<comp>/features/`` that every
fold and every head of that backbone shares. Each fold then fits a softmax (or, multi-label,
sigmoid) linear head on standardised embeddings of its training rows under every view (each view
is a label-preserving augmentation): full-batch L-BFGS in float32. Each fold chooses its L2
strength along a warm-started path from strong to weak on its own training rows (the next fold
is the inner validation set), so nothing in a fold model was chosen with its held-out labels.

The head is folded into the backbone's classifier (``W / sd``, ``b - mu / sd . W``) and saved as
``best.pt`` like any fine-tuned fold, so prediction and packaging treat both kinds alike. The
fold's ``oof.npz``/``test.npz``/``done.json`` follow the fine-tune contract exactly: for the
ensemble a feature member is a member like any other.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
import torch
import torch.nn.functional as F
from tqdm import tqdm

from .. import artifacts
from ..competition import Competition
from ..competition.task import encode
from ..config import Recipe
from ..layout import Workspace
from . import loop, student
from .backbone import create_model, data_config
from .data import build_cache
from .fold import FoldJob, save_torch, write_fold_logits

# L2 strengths (on the mean loss, standardised features) tried from strong to weak
L2_PATH = (1e-1, 3e-2, 1e-2, 3e-3, 1e-3, 3e-4, 1e-4)
MAX_ITER = 60  # L-BFGS iterations of a fold's fit (50 reach the 150-iteration accuracy)
PATH_ITER = 30  # per L2 value along the path, warm-started from the previous value


def weights_tag(recipe: Recipe) -> str:
    """What the backbone's weights are, for the embedding key: a file's hash, hub or random."""
    if recipe.pretrained_file:
        return artifacts.file_hash(recipe.pretrained_file)[:12]
    return recipe.pretrained


def embeddings(
    comp: Competition, ws: Workspace, recipe: Recipe, split: str, device: torch.device
) -> tuple[np.ndarray, dict]:
    """``(V, N, D) float32`` embeddings of every ``split`` image under each of the recipe's views
    (cached; built on first use) and the backbone's data config."""
    key, ids_hash = _key(comp, recipe, split)
    table = comp.train if split == "train" else comp.test
    out, missing = {}, []
    for view in recipe.tta:
        got = artifacts.read_embedding(ws.embedding(key, split, view), ids_hash)
        if got is None:
            missing.append(view)
        else:
            out[view] = got
    model = create_model(recipe, 0).to(device).eval()  # num_classes 0: pooled features
    cfg = data_config(model, recipe)
    if missing:
        size = recipe.image_size
        imgs = build_cache(comp.root, table["path"].tolist(), size, ws.decode_cache(split, size))
        norm = (torch.tensor(cfg["mean"], device=device), torch.tensor(cfg["std"], device=device))
        t0 = time.perf_counter()
        desc = f"embed {split} {key} {'+'.join(missing)}"
        feats = loop.predict_as_trained(
            model, imgs, np.arange(len(imgs)), tuple(missing), norm, device, recipe, desc
        )
        secs = time.perf_counter() - t0
        print(
            f"embedded {len(imgs)} {split} images x {len(missing)} views with {recipe.backbone} "
            f"@{size}px in {secs:.0f} s ({len(imgs) * len(missing) / secs:.0f} img/s)"
        )
        for view, f in zip(missing, feats, strict=True):
            artifacts.write_embedding(ws.embedding(key, split, view), f, ids_hash)
            out[view] = f
    return np.stack([out[v] for v in recipe.tta]), cfg


def _key(comp: Competition, recipe: Recipe, split: str) -> tuple[str, str]:
    """The embeddings' folder name and the hash of the ``split`` ids they must be made for."""
    key = f"{recipe.backbone}_{recipe.image_size}_{weights_tag(recipe)}"
    table = comp.train if split == "train" else comp.test
    return key, artifacts.text_hash("\n".join(table["id"].astype(str).tolist()))


def cached_views(comp: Competition, ws: Workspace, recipe: Recipe) -> dict[str, list[str]]:
    """Per split, the recipe's views whose embeddings are already on disk (the planner's use)."""
    out = {}
    for split in ("train", "test"):
        key, ids_hash = _key(comp, recipe, split)
        out[split] = [
            v
            for v in recipe.tta
            if artifacts.read_embedding(ws.embedding(key, split, v), ids_hash) is not None
        ]
    return out


@dataclass
class LinearHead:
    """Logits ``((x - mean) / scale) @ weight.T + bias``; multi-label heads use sigmoid."""

    mean: torch.Tensor  # (D,)
    scale: torch.Tensor  # (D,)
    weight: torch.Tensor  # (C, D)
    bias: torch.Tensor  # (C,)

    def logits(self, x: np.ndarray | torch.Tensor) -> torch.Tensor:
        x = torch.as_tensor(x, dtype=torch.float32)
        return ((x - self.mean) / self.scale) @ self.weight.T + self.bias

    def folded(self) -> tuple[torch.Tensor, torch.Tensor]:
        """The same map on raw features: ``x @ W.T + b`` (what the backbone's classifier holds)."""
        w = self.weight / self.scale
        return w, self.bias - w @ self.mean


def standardiser(x: np.ndarray) -> tuple[torch.Tensor, torch.Tensor]:
    t = torch.as_tensor(x, dtype=torch.float32)
    return t.mean(0), t.std(0).clamp_min(1e-6)


def fit_head(
    x: np.ndarray,
    y: np.ndarray,
    n_classes: int,
    l2: float,
    multilabel: bool,
    init: LinearHead | None = None,
    max_iter: int = MAX_ITER,
) -> LinearHead:
    """Minimise mean cross-entropy (or BCE) + ``l2 / 2 * |W|^2`` by full-batch L-BFGS, float32.
    ``init`` (same standardiser) warm-starts it; ``y`` is ``(N,)`` classes, or ``(N, C)``
    targets: 0/1 (or probabilities) per label for multi-label, class probabilities (a
    teacher's soft targets) for single-label."""
    mean, scale = (init.mean, init.scale) if init is not None else standardiser(x)
    xs = (torch.as_tensor(x, dtype=torch.float32) - mean) / scale
    yt = torch.as_tensor(y)
    soft = yt.is_floating_point() or multilabel
    yt = yt.float() if soft else yt.long()
    d = xs.shape[1]
    w = (init.weight.clone() if init else torch.zeros(n_classes, d)).requires_grad_(True)
    b = (init.bias.clone() if init else torch.zeros(n_classes)).requires_grad_(True)
    opt = torch.optim.LBFGS(
        [w, b],
        lr=1.0,
        max_iter=max_iter,
        history_size=20,
        tolerance_grad=1e-6,
        tolerance_change=1e-9,
        line_search_fn="strong_wolfe",
    )

    def closure() -> torch.Tensor:
        opt.zero_grad()
        z = xs @ w.T + b
        if multilabel:
            data = F.binary_cross_entropy_with_logits(z, yt)
        else:  # class indices or class probabilities (soft targets)
            data = F.cross_entropy(z, yt)
        loss = data + 0.5 * l2 * (w * w).sum()
        loss.backward()
        return loss

    opt.step(closure)
    return LinearHead(mean, scale, w.detach(), b.detach())


def stack_views(feats: np.ndarray, rows: np.ndarray, y: np.ndarray) -> tuple[np.ndarray, ...]:
    """Training rows under every view (each view is a label-preserving augmentation); ``y``
    holds each row's target (a class, 0/1 per label, or a student's soft targets)."""
    x = feats[:, rows].reshape(-1, feats.shape[-1])
    return x, np.concatenate([y[rows]] * feats.shape[0])


def choose_l2(
    task,
    feats: np.ndarray,
    targets: np.ndarray,
    y_all: np.ndarray,
    fit_rows: np.ndarray,
    val_rows: np.ndarray,
    n: int,
) -> tuple[float, list[dict]]:
    """Walk ``L2_PATH`` fitting ``targets`` of ``fit_rows`` (warm starts), score each on the
    labels ``y_all`` of ``val_rows`` (view none's logits) under the competition metric; stop two
    steps past the best."""
    x, y = stack_views(feats, fit_rows, targets)
    head, best, path = None, None, []
    for l2 in L2_PATH:
        head = fit_head(x, y, n, l2, task.multilabel, init=head, max_iter=PATH_ITER)
        z = head.logits(feats[0, val_rows]).numpy()
        score = task.score(y_all[val_rows], task.probabilities(z))
        path.append({"l2": l2, "inner_score": float(score)})
        if best is None or task.better(score, best[1]):
            best = (l2, score, len(path))
        elif len(path) - best[2] >= 2:
            break
    return best[0], path


def train_features_fold(
    comp: Competition,
    ws: Workspace,
    folds_df: pd.DataFrame,
    fhash: str,
    run: str,
    recipe: Recipe,
    fold: int,
    device: torch.device,
) -> None:
    """One fold of a feature member: choose its L2 on its own training rows (the next fold is
    the inner validation set), fit the head, write the fold's outputs. A student (``teacher``
    in the recipe) fits its teacher's soft targets, plus confident test images, at the L2 its
    labels choose."""
    t0 = time.perf_counter()
    job = FoldJob(comp, ws, folds_df, fhash, run, recipe, fold, device)
    task, n = comp.task, len(comp.classes)
    train_feats, cfg = embeddings(comp, ws, recipe, "train", device)
    test_feats, _ = embeddings(comp, ws, recipe, "test", device)
    rows, folds = folds_df["row"].to_numpy(), folds_df["fold"].to_numpy()
    y = encode(folds_df["label"], comp.classes, task.kind)
    y_all = np.zeros((len(comp.train), *y.shape[1:]), dtype=np.int64)
    y_all[rows] = y
    torch.manual_seed(recipe.seed + fold)
    tr_rows, va_rows = rows[folds != fold], rows[folds == fold]
    l2, chosen = fold_l2(task, train_feats, y_all, rows, folds, fold, n)
    feats, targets, extra = train_feats, y_all, np.zeros(0, dtype=np.int64)  # extra: pseudo rows
    if recipe.teacher:
        taught = student.lesson(comp, ws, recipe, fold, fhash, tr_rows, y_all)
        tqdm.write(f"{job.tag}: {student.describe(taught, recipe, len(comp.test))}")
        feats = np.concatenate([train_feats, test_feats[:, taught.pseudo]], axis=1)
        targets = np.concatenate([taught.soft, taught.pseudo_soft])
        extra = len(comp.train) + np.arange(len(taught.pseudo))
    head = fit_head(*stack_views(feats, np.r_[tr_rows, extra], targets), n, l2, task.multilabel)
    oof = np.stack([head.logits(f[va_rows]).numpy() for f in train_feats])
    y_va = y_all[va_rows]
    val_loss, val_acc = loop.loss_and_accuracy(oof[0], y_va)
    val_score = float(task.score(y_va, task.probabilities(oof[0])))
    save_folded(recipe, n, head, job.fdir / "best.pt")
    write_fold_logits(job, va_rows, oof, np.stack([head.logits(f).numpy() for f in test_feats]))
    secs = time.perf_counter() - t0
    row = {"l2": l2, "val_loss": val_loss, "val_acc": val_acc, "val_score": val_score}
    artifacts.write_csv(job.fdir / "metrics.csv", pd.DataFrame([row]))
    done = {
        "kind": "features",
        "best_epoch": 1,
        "metric": task.metric,
        "mean": cfg["mean"],
        "std": cfg["std"],
        "epochs": 1,
        "seconds": round(secs, 1),  # embedding included when this fold computed them
        "threads": torch.get_num_threads(),
        "holdout_used": False,  # nothing was chosen on this fold's held-out rows
        **chosen,
        "pseudo_labels": len(extra),
        **row,
    }
    artifacts.write_json(job.fdir / "done.json", done)
    tqdm.write(
        f"{job.tag}: linear head at L2 {l2:.3g} ({chosen['l2_inner']:g} chosen with fold "
        f"{chosen['l2_inner_val']} as inner validation: "
        + ", ".join(f"{p['l2']:g} {p['inner_score']:.4f}" for p in chosen["l2_path"])
        + f"), val loss {val_loss:.3f} {task.metric} {val_score:.4f} (view none), {secs:.0f} s"
    )


def fold_l2(task, feats, y_all, rows, folds, fold: int, n: int) -> tuple[float, dict]:
    """The L2 a fold's head is fitted at, and how it was chosen: on the fold's training rows,
    the next fold the inner validation set, by the labels alone (a student's teacher targets
    for the inner training rows come from fold models that trained on the inner validation
    fold). The penalty is on the mean loss and the fold's training set is larger than the inner
    one, so the same total regularisation is a proportionally smaller L2 (tinyimagenet176,
    fold 1: inner choice 0.03 gives 0.564 TTA accuracy, 0.0225 0.569, 0.01 0.578)."""
    inner = (fold + 1) % (int(folds.max()) + 1)
    inner_fit, inner_val = rows[(folds != fold) & (folds != inner)], rows[folds == inner]
    l2_inner, steps = choose_l2(task, feats, y_all, y_all, inner_fit, inner_val, n)
    l2 = l2_inner * len(inner_fit) / int((folds != fold).sum())
    return l2, {"l2_inner": l2_inner, "l2_inner_val": inner, "l2_path": steps}


def save_folded(recipe: Recipe, n_classes: int, head: LinearHead, path: Path) -> None:
    """The whole model as ``best.pt`` (the fine-tune checkpoint format): the frozen backbone
    with the head folded into its classifier, so it predicts like any fine-tuned fold."""
    model = create_model(recipe, n_classes)
    w, b = head.folded()
    clf = model.get_classifier()
    with torch.no_grad():
        clf.weight.copy_(w)
        clf.bias.copy_(b)
    save_torch(path, {"model": model.state_dict(), "epoch": 1})
