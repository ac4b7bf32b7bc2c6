"""Frozen-feature members (``kind = "features"``): embed once, fit a linear head per fold.

A pretrained backbone embeds every train and test image once per (backbone, weights, image
size, TTA view) (``kinds/embed.py``): every fold and every head of that backbone shares them.
Each fold then fits a softmax (or, multi-label, sigmoid) linear head on standardised embeddings
of its training rows under every view (each view is a label-preserving augmentation): full-batch
L-BFGS in float32 (``kinds/heads.py``). Each fold chooses its L2 strength along a warm-started
path on its own training rows (the next fold is the inner validation set), so nothing in a fold
model was chosen with its held-out labels.

The head is folded into the backbone's classifier (``W / sd``, ``b - mu / sd . W``) and saved as
``best.pt`` like any fine-tuned fold, so prediction and packaging treat both kinds alike.
"""

from __future__ import annotations

import time
from dataclasses import replace

import numpy as np
import pandas as pd
import torch
from tqdm import tqdm

from ... import artifacts
from ...config import Recipe
from ...errors import RecipeError
from .. import loop
from ..context import FoldJob, TrainContext
from ..fold import epoch_scalars, fold_board, write_fold_logits
from . import heads, student
from .all_rows import fit_all_rows
from .base import Kind
from .embed import all_cached, cached_views, embedding_keys, embeddings
from .pricing import (
    FOLD_OVERHEAD_S,
    Cost,
    Estimate,
    ProbeInput,
    halves,
    model_and_norm,
    timed_predict,
)

# the recipe fields a feature member reads: the backbone and how it embeds, its views, and a
# student's targets (label smoothing shapes the labels a student's targets mix in)
FIELDS = {
    "kind",
    "backbone",
    "pretrained",
    "pretrained_file",
    "image_size",
    "batch_size",
    "tta",
    "seed",
    "amp",
    "channels_last",
    "label_smoothing",
    "teacher",
    "distill_weight",
    "pseudo_floor",
}


ESTIMATE_L2 = 1e-2  # the estimate's head: a middle value of heads.L2_PATH, not chosen per sample


class Features(Kind):
    name = "features"
    scales_epochs = False
    fields = frozenset(FIELDS)

    def check(self, recipe: Recipe, source: str) -> None:
        if recipe.pretrained == "none" and not recipe.pretrained_file:
            raise RecipeError(
                f'{source}: kind = "{self.name}" embeds with a frozen pretrained backbone: set '
                'pretrained_file (offline, see `make weights`) or pretrained = "hub"'
            )

    def prepare(self, ctx: TrainContext, run: str, device: torch.device) -> None:
        for split in ("train", "test"):
            embeddings(ctx.comp, ctx.ws, ctx.recipes[run], split, device)

    def cached_once(self, comp, ws, recipe: Recipe) -> bool:
        return all_cached(comp, ws, recipe)

    def fit_fold(self, job: FoldJob) -> None:
        fit_fold(job)

    def fit_all_rows(self, ctx: TrainContext, run: str, device: torch.device) -> str:
        return fit_all_rows(ctx, run, device)

    def probe(self, p: ProbeInput) -> Cost:
        """Embedding speed (unless every view is cached), one head fit's arithmetic, and the
        score estimate; ``fewer`` is the same run with its first view only (a plan may weigh
        one view of a strong backbone against two of a weak one)."""
        comp, recipe = p.comp, p.recipe
        n_all, views = len(comp.train) + len(comp.test), recipe.tta
        model, norm = model_and_norm(recipe, 0, p.device)
        cached = cached_views(comp, p.ws, recipe)["train"]
        timed: list = []
        embed_ips = float("inf")
        if len(cached) < len(views):
            embed_ips = timed_predict(
                model, p.images, recipe, norm, p.device, p.clock, p.batches, p.warmup, timed
            )
        sample = self._sample_views(p, model, norm, cached, timed)
        full = self._cost(p, model, n_all * (len(views) - len(cached)), embed_ips, len(views))
        one = self._cost(p, model, n_all * (views[0] not in cached), embed_ips, 1)
        full, one = (
            replace(c, needs=embedding_keys(p.comp, p.recipe, v))
            for c, v in ((full, views), (one, views[:1]))
        )
        fewer = (
            replace(one, estimate=self.estimate_score(p, sample[:1])) if len(views) > 1 else None
        )
        return replace(full, estimate=self.estimate_score(p, sample), fewer=fewer)

    def _cost(self, p: ProbeInput, model, todo: int, embed_ips: float, views: int) -> Cost:
        """The run's cost with ``views`` views (``todo`` images still to embed): each fold
        walks its own L2 path."""
        comp, k = p.comp, p.k
        pseudo = len(comp.test) if p.recipe.pseudo_floor > 0 else 0  # at most every test image
        n_fit = (len(comp.train) * (k - 1) // k + pseudo) * views
        head_s = heads.head_seconds(n_fit, model.num_features, len(comp.classes), p.clock)
        path_s = head_s * heads.PATH_ITER / heads.MAX_ITER * len(heads.L2_PATH) * 0.6
        return Cost(
            self.name,
            once_s=todo / embed_ips,
            epoch_s=0.0,
            fold_s=head_s + path_s + FOLD_OVERHEAD_S,
            probe_s=0.0,
            figures={"embed_ips": min(embed_ips, 1e9), "head_fit_s": head_s},
        )

    def _sample_views(self, p: ProbeInput, model, norm, cached, timed) -> np.ndarray:
        """``(V, n, D)``: the probe sample's embeddings under each of the recipe's views, from
        the timed pass, the cached embeddings, or one more (untimed) pass."""
        from ...model.infer import predict_as_trained

        r, n = p.recipe, len(p.images)
        if all(v in cached for v in r.tta):
            return embeddings(p.comp, p.ws, r, "train", p.device)[0][:, :n]
        out = [
            timed[0]
            if v == "none" and timed
            else predict_as_trained(
                model, p.images, np.arange(n), (v,), norm, p.device, r, "probe"
            )[0]
            for v in r.tta
        ]
        return np.stack(out)

    def estimate_score(self, p: ProbeInput, outputs: np.ndarray) -> Estimate | None:
        """A linear head on half of the sample's embeddings ``(V, n, D)`` (every view a
        training row, as a fold fits it), scored on the other half with its probabilities
        averaged over the views (TTA) under the competition's metric: what this backbone's
        features are worth here. Few images per class make it low in absolute terms; the
        planner compares runs."""
        task, n_classes = p.comp.task, len(p.comp.classes)
        fit, val = halves(outputs.shape[1])
        y = p.y_all[: outputs.shape[1]]
        x, yy = heads.stack_views(outputs, fit, y)
        head = heads.fit_head(x, yy, n_classes, ESTIMATE_L2, task.multilabel)
        probs = np.mean([task.probabilities(head.logits(v[val]).numpy()) for v in outputs], axis=0)
        try:
            score = float(task.score(y[val], probs))
        except ValueError:  # a metric undefined on the sample (a class missing from it)
            return None
        return Estimate(score, probs, val)

    def holdout_reason(self, done: artifacts.FoldDone, recipe: Recipe, fold: int) -> str:
        used = done.holdout_used
        if used is None:  # before per-fold L2: fold 0's inner split (val fold 1) chose it
            used = fold != 0
        if not used:
            return ""
        return (
            "its linear head was chosen with that fold's labels (an L2 strength picked before "
            "each fold chose its own on its training rows): retrain the run"
        )

    def logits_on_rows(self, comp, ws, r: Recipe, model, norm, rows, device, memo, desc: str):
        """The cached embeddings through the fold model's (folded) classifier."""
        key = ("embeddings", r.backbone, r.image_size, r.pretrained_file, r.pretrained, r.tta)
        if key not in memo:
            memo[key] = embeddings(comp, ws, r, "train", device)[0]
        clf = model.get_classifier()
        w, b = clf.weight.detach().float().cpu(), clf.bias.detach().float().cpu()
        return np.stack([(torch.from_numpy(f[rows]) @ w.T + b).numpy() for f in memo[key]])


def fit_fold(job: FoldJob) -> None:
    """One fold of a feature member: choose its L2 on its own training rows (the next fold is
    the inner validation set), fit the head, write the fold's outputs. A student (``teacher``
    in the recipe) fits its teacher's soft targets, plus confident test images, at the L2 its
    labels choose."""
    t0 = time.perf_counter()
    comp, ws, recipe, fold, device = job.comp, job.ws, job.recipe, job.fold, job.device
    task, n = comp.task, len(comp.classes)
    train_feats, cfg = embeddings(comp, ws, recipe, "train", device)
    test_feats, _ = embeddings(comp, ws, recipe, "test", device)
    y_all, tr_rows, va_rows = job.y_all, job.train_rows, job.held_out
    torch.manual_seed(recipe.seed + fold)
    l2, chosen = heads.fold_l2(task, train_feats, y_all, job.rows, job.folds, fold, n)
    feats, targets, extra = train_feats, y_all, np.zeros(0, dtype=np.int64)  # extra: pseudo rows
    if recipe.teacher:
        taught = student.lesson(comp, ws, recipe, fold, job.ctx.fhash, tr_rows, y_all)
        tqdm.write(f"{job.tag}: {student.describe(taught, recipe, len(comp.test))}")
        feats = np.concatenate([train_feats, test_feats[:, taught.pseudo]], axis=1)
        targets = np.concatenate([taught.soft, taught.pseudo_soft])
        extra = len(comp.train) + np.arange(len(taught.pseudo))
    x, y = heads.stack_views(feats, np.r_[tr_rows, extra], targets)
    head = heads.fit_head(x, y, n, l2, task.multilabel)
    oof = np.stack([head.logits(f[va_rows]).numpy() for f in train_feats])
    y_va = y_all[va_rows]
    val_loss, val_acc = loop.loss_and_accuracy(oof[0], y_va)
    val_score = float(task.score(y_va, task.probabilities(oof[0])))
    best_sha = heads.save_folded(recipe, n, head, job.fdir / "best.pt")
    write_fold_logits(job, va_rows, oof, np.stack([head.logits(f).numpy() for f in test_feats]))
    secs = time.perf_counter() - t0
    row = {"l2": l2, "val_loss": val_loss, "val_acc": val_acc, "val_score": val_score}
    artifacts.write_csv(job.fdir / "metrics.csv", pd.DataFrame([row]))
    with fold_board(job, 1) as board:  # a fold re-fitted after a kill writes its steps again
        board.scalars(epoch_scalars(row, task.metric), 1)
        for step, p in enumerate(chosen.get("l2_path", []), 1):  # the inner score per L2
            board.scalars(
                {f"l2_path/inner_{task.metric}": p["inner_score"], "l2_path/l2": p["l2"]}, step
            )
    done = artifacts.FoldDone(
        kind=Features.name,
        best_epoch=1,
        epochs=1,
        metric=task.metric,
        val_score=val_score,
        val_acc=val_acc,
        mean=cfg["mean"],
        std=cfg["std"],
        threads=torch.get_num_threads(),
        seconds=round(secs, 1),  # embedding included when this fold computed them
        holdout_used=False,  # nothing was chosen on this fold's held-out rows
        val_loss=val_loss,
        best_sha256=best_sha,
        extra={**chosen, "pseudo_labels": len(extra), "l2": l2},
    )
    artifacts.write_done(job.fdir / "done.json", done)
    tqdm.write(
        f"{job.tag}: linear head at L2 {l2:.3g} ({chosen['l2_inner']:g} chosen with fold "
        f"{chosen['l2_inner_val']} as inner validation: "
        + ", ".join(f"{p['l2']:g} {p['inner_score']:.4f}" for p in chosen["l2_path"])
        + f"), val loss {val_loss:.3f} {task.metric} {val_score:.4f} (view none), {secs:.0f} s"
    )


KIND = Features()
