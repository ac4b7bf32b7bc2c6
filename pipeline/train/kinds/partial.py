"""Partially fine-tuned members (``kind = "partial"``): the last stage(s) of a pretrained
backbone and its head trained per fold on cached activations of the frozen rest.

The frozen trunk (every stage but the last ``train_stages``) runs once per (backbone, weights,
image size, stages, TTA view) over every train and test image (``kinds/activations.py``); its
float16 activations are memory-mapped and shared by every fold. The same pass writes the pooled
embeddings a feature member of that backbone reads, so the two kinds share one trunk pass.

Each fold then trains the tail (the last stages, the head convolution and norm, and the
classifier) for the recipe's epochs on its training rows, each row under one of the recipe's
views drawn per epoch (the views are label-preserving augmentations), with the recipe's
optimizer, learning rates and schedule. The classifier starts from a linear head fitted on the
fold's own training rows, so the run starts where a feature member ends. The last epoch is kept
(nothing is chosen on the held-out rows), then the held-out rows and the test images are
predicted under every view from their cached activations.

Measured on ``cifar10`` (fold 0, 16,000 training images, EfficientNet-Lite2 at 160 px, one
view): the linear head 0.810, the last stage and head tuned for 4 epochs 0.836 (124 s on this
2-core CPU); the head convolution alone 0.809 (no gain). docs/recipes.md: Member kinds.

``best.pt`` is the whole network (frozen trunk and tuned tail), so prediction and the Kaggle
package treat it like a fine-tuned fold.
"""

from __future__ import annotations

import time
from dataclasses import replace

import numpy as np
import pandas as pd
import torch
import torch.nn.functional as F
from tqdm import tqdm

from ... import artifacts
from ...config import Recipe
from ...errors import RecipeError
from ...model.backbone import create_model
from .. import loop
from ..context import FoldJob, TrainContext
from ..epoch_plots import plot_curves
from ..fold import epoch_score, run_epochs, save_torch, write_fold_logits
from ..optim import make_optimizer, make_scheduler
from . import features, heads
from .activations import (
    activations,
    cached_activation_views,
    check_split,
    split_model,
    tail_of,
    trunk_pass,
)
from .embed import cached_views, embedding_keys, embeddings
from .features import Features
from .pricing import FOLD_OVERHEAD_S, Cost, ProbeInput, model_and_norm, timed_predict

# a feature member's fields (the backbone, how it embeds, its views) without a student's, and
# the ones that train the tail
FIELDS = (features.FIELDS - {"teacher", "distill_weight", "pseudo_floor"}) | {
    "train_stages",
    "epochs",
    "optimizer",
    "lr",
    "head_lr_mult",
    "weight_decay",
    "warmup_epochs",
    "min_lr_ratio",
}
INIT_L2 = 1e-2  # the classifier's starting linear head (heads.L2_PATH's middle): only a start
PREDICT_BATCH = 512  # activations per forward pass of the tail when predicting


class Partial(Features):
    name = "partial"
    scales_epochs = True
    # never planned below half its recipe's epochs: one epoch of 4 ends below the linear head
    # it starts from (cifar10 fold 0, lite2 at 160 px: 0.802 and 0.813 in two runs against
    # 0.812; 4 epochs 0.836), so a budget that cannot pay half leaves the run out instead
    min_epoch_scale = 0.5
    fields = frozenset(FIELDS)
    writes_embeddings = True

    def check(self, recipe: Recipe, source: str) -> None:
        super().check(recipe, source)  # a frozen trunk needs pretrained weights
        try:
            check_split(recipe)
        except RecipeError as e:
            raise RecipeError(f"{source}: {e}") from None

    def prepare(self, ctx: TrainContext, run: str, device: torch.device) -> None:
        for split in ("train", "test"):
            activations(ctx.comp, ctx.ws, ctx.recipes[run], split, device)

    def cached_once(self, comp, ws, recipe: Recipe) -> bool:
        return len(_cached_views(comp, ws, recipe)) == len(recipe.tta)

    def fit_fold(self, job: FoldJob) -> None:
        fit_fold(job)

    def fit_all_rows(self, ctx: TrainContext, run: str, device: torch.device) -> str:
        """Not yet: the tail's epochs on all rows cost a fold's training (not a feature head's
        seconds); its test logits stay the folds' mean."""
        return ""

    def probe(self, p: ProbeInput) -> Cost:
        """The trunk pass (timed like an embedding: the tail is a few percent of it), the
        tail's training and prediction speed on the sample's activations, and the score
        estimate of the linear head the run starts from: what 256 images can tell (training
        the tail on the probe's half lowers its held-out score, measured on ``cifar10``: 0.73
        for the linear head, 0.57-0.68 tuned), so the plan values a partial run no higher than
        its backbone's features and gives it the minutes the ties leave
        (``planning.plan.VALUE_TIE``)."""
        comp, recipe = p.comp, p.recipe
        n_all, views = len(comp.train) + len(comp.test), recipe.tta
        model, norm = model_and_norm(recipe, 0, p.device)
        done = _cached_views(comp, p.ws, recipe)
        timed: list = []
        pass_ips = float("inf")
        if len(done) < len(views):
            pass_ips = timed_predict(
                model, p.images, recipe, norm, p.device, p.clock, p.batches, p.warmup, timed
            )
        sample = self._sample_views(
            p, model, norm, cached_views(comp, p.ws, recipe)["train"], timed
        )
        train_rps, predict_rps = _tail_speed(p, norm)
        fold_train, fold_val = len(comp.train) * (p.k - 1) / p.k, len(comp.train) / p.k
        n_classes = len(comp.classes)

        def cost(n_views: int, todo: int) -> Cost:
            init_s = heads.head_seconds(
                int(fold_train) * n_views, model.num_features, n_classes, p.clock
            )
            return Cost(
                self.name,
                once_s=todo / pass_ips,
                epoch_s=fold_train / train_rps + fold_val / predict_rps,
                fold_s=(fold_val + len(comp.test)) * n_views / predict_rps
                + init_s
                + FOLD_OVERHEAD_S,
                probe_s=0.0,
                figures={
                    "trunk_ips": min(pass_ips, 1e9),
                    "tail_train_rows_s": train_rps,
                    "tail_predict_rows_s": predict_rps,
                },
            )

        full = replace(
            cost(len(views), n_all * (len(views) - len(done))),
            provides=embedding_keys(comp, recipe, views),
        )
        one = replace(
            cost(1, n_all * (views[0] not in done)),
            provides=embedding_keys(comp, recipe, views[:1]),
        )
        fewer = (
            replace(one, estimate=self.estimate_score(p, sample[:1])) if len(views) > 1 else None
        )
        return replace(full, estimate=self.estimate_score(p, sample), fewer=fewer)

    def holdout_reason(self, done: artifacts.FoldDone, recipe: Recipe, fold: int) -> str:
        return ""  # the last epoch is kept and the starting head is fitted on training rows

    def logits_on_rows(self, comp, ws, r: Recipe, model, norm, rows, device, memo, desc: str):
        """The cached activations through the fold model's tail."""
        key = ("activations", r.backbone, r.image_size, r.pretrained_file, r.pretrained, r.tta)
        if key not in memo:
            memo[key] = activations(comp, ws, r, "train", device)
        tail = tail_of(model, r.train_stages).eval()
        return np.stack([_tail_logits(tail, a, rows, device) for a in memo[key]])


def _cached_views(comp, ws, recipe: Recipe) -> list[str]:
    """The recipe's views whose activations are on disk for both splits."""
    have = cached_activation_views(comp, ws, recipe)
    return [v for v in recipe.tta if v in have["train"] and v in have["test"]]


def _tail_speed(p: ProbeInput, norm) -> tuple[float, float]:
    """Rows/s of the tail's training steps and of its prediction, on the sample's activations
    (one untimed trunk pass over two batches of it)."""
    r = p.recipe
    model = create_model(r, len(p.comp.classes)).to(p.device)
    trunk, tail = split_model(model, r.train_stages)
    n = min(len(p.images), 2 * r.batch_size)
    acts = torch.from_numpy(trunk_pass(trunk, p.images[:n], norm, p.device, r).astype(np.float32))
    y = torch.from_numpy(p.y_all[:n]).to(p.device)
    opt = torch.optim.AdamW(tail.parameters(), lr=1e-4)
    tail.train()
    steps, bs = max(2, p.batches), min(r.batch_size, n)  # a tiny sample: batches of its size
    t0 = None
    for i in range(1 + steps):  # one warm-up step
        if i == 1:
            t0 = p.clock()
        rows = torch.arange(i * bs, (i + 1) * bs) % n
        out = tail(acts[rows].to(p.device))
        loss = loop.bce(out, y[rows]) if p.comp.task.multilabel else F.cross_entropy(out, y[rows])
        opt.zero_grad()
        loss.backward()
        opt.step()
    train_rps = steps * bs / max(p.clock() - t0, 1e-9)
    tail.eval()
    t0 = p.clock()
    with torch.inference_mode():
        tail(acts.to(p.device))
    return train_rps, n / max(p.clock() - t0, 1e-9)


def _tail_logits(tail, acts: np.ndarray, rows: np.ndarray, device) -> np.ndarray:
    """``(len(rows), C)`` logits of the tail on the cached activations ``acts[rows]``."""
    out = []
    with torch.inference_mode():
        for s in range(0, len(rows), PREDICT_BATCH):
            x = torch.from_numpy(np.asarray(acts[rows[s : s + PREDICT_BATCH]], dtype=np.float32))
            out.append(tail(x.to(device)).float().cpu().numpy())
    if not out:
        return np.zeros((0, tail.num_classes), dtype=np.float32)
    return np.concatenate(out)


def fit_fold(job: FoldJob) -> None:
    """One fold of a partial member: start the classifier from a linear head on the fold's
    training rows, train the tail for the recipe's epochs (resuming from ``last.pt``), keep the
    last epoch, write the fold's outputs."""
    t0 = time.perf_counter()
    comp, ws, r, device = job.comp, job.ws, job.recipe, job.device
    train_acts = activations(comp, ws, r, "train", device)
    test_acts = activations(comp, ws, r, "test", device)
    feats, cfg = embeddings(comp, ws, r, "train", device)  # written by the same trunk pass
    model, tail = _start_model(job, feats)
    steps = (len(job.train_rows) + r.batch_size - 1) // r.batch_size
    opt = make_optimizer(tail, r)
    sched = make_scheduler(opt, r, steps)
    state = _State(tail, opt, sched, device)

    def epoch(e: int, history: list[dict]) -> tuple[dict, str]:
        row = _train_epoch(job, tail, opt, sched, train_acts, e, steps)
        h = {"epoch": e + 1, **row, **_validate(job, tail, train_acts[0])}
        return h, (
            f"{job.tag}: epoch {e + 1}/{r.epochs} train loss {h['train_loss']:.3f} "
            f"val loss {h['val_loss']:.3f} {comp.task.metric} {h['val_score']:.4f}"
        )

    def seconds() -> dict:  # this call's and the calls' before it, kept in last.pt
        return {"seconds": time.perf_counter() - t0 + state.before_s}

    history = run_epochs(job, state, epoch, seconds)
    _finish(job, model, tail, train_acts, test_acts, history, cfg, t0, state.before_s)


def _start_model(job: FoldJob, feats: np.ndarray):
    """The fold's whole network (pretrained trunk and tail, the classifier set to a linear head
    fitted on the fold's training rows) and its tail, which shares the network's modules."""
    r, n_classes = job.recipe, len(job.comp.classes)
    torch.manual_seed(r.seed + job.fold)
    model = create_model(r, n_classes).to(job.device)
    x, y = heads.stack_views(feats, job.train_rows, job.y_all)
    w, b = heads.fit_head(x, y, n_classes, INIT_L2, job.comp.task.multilabel).folded()
    clf = model.get_classifier()
    with torch.no_grad():
        clf.weight.copy_(w)
        clf.bias.copy_(b)
    return model, split_model(model, r.train_stages)[1]


def _train_epoch(job: FoldJob, tail, opt, sched, acts, epoch: int, steps: int) -> dict:
    """One pass over the fold's training rows in a (seed, fold, epoch) order, each row under a
    view drawn for this epoch; the epoch's train loss, accuracy and last learning rate."""
    r, task, bs = job.recipe, job.comp.task, job.recipe.batch_size
    rng = np.random.default_rng([r.seed, job.fold, epoch])
    order = rng.permutation(job.train_rows)
    view = rng.integers(len(r.tta), size=len(order))
    y_t = torch.from_numpy(job.y_all)
    tail.train()
    seen = correct = 0
    total, t0 = 0.0, time.perf_counter()
    desc = f"{job.tag} epoch {epoch + 1}/{r.epochs}"
    for s in tqdm(range(steps), desc=desc, leave=False, disable=None, dynamic_ncols=True):
        rows, vs = order[s * bs : (s + 1) * bs], view[s * bs : (s + 1) * bs]
        yb = y_t[rows].to(job.device)
        out = tail(_gather(acts, rows, vs).to(job.device))
        if task.multilabel:
            loss = loop.bce(out, yb, r.label_smoothing)
        else:
            loss = F.cross_entropy(out.float(), yb, label_smoothing=r.label_smoothing)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        sched.step()
        seen += len(rows)
        total += loss.item() * len(rows)
        correct += loop.hits(out.detach(), yb, task.multilabel)
    seen = max(seen, 1)
    return {
        "train_loss": total / seen,
        "train_acc": correct / seen,
        "lr": opt.param_groups[0]["lr"],
        "img_per_s": seen / max(time.perf_counter() - t0, 1e-9),
    }


def _validate(job: FoldJob, tail, acts: np.ndarray) -> dict:
    """The tail on the fold's held-out rows under the first view (reported, chooses nothing)."""
    task, va_rows = job.comp.task, job.held_out
    tail.eval()
    va = _tail_logits(tail, acts, va_rows, job.device)
    y_va = job.y_all[va_rows]
    val_loss, val_acc = loop.loss_and_accuracy(va, y_va)
    score = float(task.score(y_va, task.probabilities(va)))
    return {"val_loss": val_loss, "val_acc": val_acc, "val_score": score}


def _finish(job, model, tail, train_acts, test_acts, history, cfg, t0, before_s) -> None:
    """The fold's contract: ``best.pt`` (the whole network after the last epoch), its logits
    under every view, ``metrics.csv``, ``curves.png``, then ``done.json``; ``last.pt`` goes."""
    r, task, va_rows, device = job.recipe, job.comp.task, job.held_out, job.device
    tail.eval()
    best_sha = save_torch(job.fdir / "best.pt", {"model": model.state_dict(), "epoch": r.epochs})
    oof = np.stack([_tail_logits(tail, a, va_rows, device) for a in train_acts])
    test = np.stack([_tail_logits(tail, a, np.arange(len(a)), device) for a in test_acts])
    write_fold_logits(job, va_rows, oof, test)
    metrics = pd.DataFrame(history)
    artifacts.write_csv(job.fdir / "metrics.csv", metrics)
    plot_curves(metrics, job.fdir / "curves.png", f"{job.run} fold {job.fold} (tail tuned)")
    secs = time.perf_counter() - t0
    last = history[-1]
    done = artifacts.FoldDone(
        kind=Partial.name,
        best_epoch=r.epochs,
        epochs=r.epochs,
        metric=task.metric,
        val_score=epoch_score(last),
        val_acc=last["val_acc"],
        mean=cfg["mean"],
        std=cfg["std"],
        threads=torch.get_num_threads(),
        seconds=round(secs + before_s, 1),
        holdout_used=False,
        val_loss=last["val_loss"],
        best_sha256=best_sha,
        extra={"train_stages": r.train_stages, "init_l2": INIT_L2},
    )
    artifacts.write_done(job.fdir / "done.json", done)
    (job.fdir / "last.pt").unlink(missing_ok=True)
    tqdm.write(
        f"{job.tag}: last {r.train_stages} stage(s) and head tuned for {r.epochs} epochs: val "
        f"loss {last['val_loss']:.3f} {task.metric} {last['val_score']:.4f} (view none), {secs:.0f} s"
    )


def _gather(acts: list[np.ndarray], rows: np.ndarray, views: np.ndarray) -> torch.Tensor:
    """``(len(rows), C, H, W) float32``: each row's activations under its drawn view (rows read
    in sorted order from the memory maps, then put back in ``rows`` order)."""
    out = np.empty((len(rows), *acts[0].shape[1:]), dtype=np.float32)
    for v, a in enumerate(acts):
        pick = np.flatnonzero(views == v)
        if len(pick):
            order = np.argsort(rows[pick])
            out[pick[order]] = a[rows[pick][order]]
    return torch.from_numpy(out)


class _State:
    """What ``last.pt`` holds for a partial fold: the tail, its optimizer and schedule (and
    ``before_s``, the seconds of the calls before this one, read from its ``seconds``)."""

    def __init__(self, tail, opt, sched, device) -> None:
        self.tail, self.opt, self.sched, self.device = tail, opt, sched, device
        self.before_s = 0.0

    def state_dict(self) -> dict:
        return {
            "tail": self.tail.state_dict(),
            "opt": self.opt.state_dict(),
            "sched": self.sched.state_dict(),
        }

    def load_state_dict(self, saved: dict) -> None:
        self.tail.load_state_dict(saved["tail"])
        self.opt.load_state_dict(saved["opt"])
        self.sched.load_state_dict(saved["sched"])
        self.before_s = float(saved.get("seconds", 0.0))


KIND = Partial()
