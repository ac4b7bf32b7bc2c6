"""The training loop: the state an epoch updates, mixed precision, EMA, mixup, one epoch.

``TrainState`` is everything an epoch updates (saved whole in ``last.pt`` for resume);
``train_one_epoch`` is the only place a model trains (``model.infer`` is where one predicts)."""

from __future__ import annotations

import math
import time
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from timm.data import Mixup
from timm.utils import ModelEmaV3
from tqdm import tqdm

from ..config import Recipe
from ..errors import RecipeError
from ..model.device import amp_dtype, autocast, channels_last
from ..model.inputs import to_input
from .augment import device_augment
from .optim import make_optimizer, make_scheduler


@dataclass
class TrainState:
    """Everything one fold's training updates, saved whole in ``last.pt`` for resume."""

    model: torch.nn.Module
    opt: torch.optim.Optimizer
    sched: torch.optim.lr_scheduler.LRScheduler
    scaler: torch.amp.GradScaler
    ema: ModelEmaV3 | None
    mixup: Mixup | None
    recipe: Recipe
    norm: tuple[torch.Tensor, torch.Tensor]
    device: torch.device
    forward: Any = None  # the compiled model when recipe.compile on CUDA, else the model
    multilabel: bool = False  # sigmoid per label and binary cross-entropy, not softmax

    def eval_model(self) -> torch.nn.Module:
        return self.ema.module if self.ema is not None else self.model

    def state_dict(self) -> dict:
        return {
            "model": self.model.state_dict(),
            "opt": self.opt.state_dict(),
            "sched": self.sched.state_dict(),
            "scaler": self.scaler.state_dict(),
            "ema": self.ema.state_dict() if self.ema is not None else None,
        }

    def load_state_dict(self, state: dict) -> None:
        self.model.load_state_dict(state["model"])
        self.opt.load_state_dict(state["opt"])
        self.sched.load_state_dict(state["sched"])
        self.scaler.load_state_dict(state["scaler"])
        if self.ema is not None and state.get("ema") is not None:
            self.ema.load_state_dict(state["ema"])


def make_state(
    model,
    recipe: Recipe,
    norm,
    device: torch.device,
    steps_per_epoch: int,
    num_classes: int,
    multilabel: bool = False,
) -> TrainState:
    if channels_last(recipe.channels_last, device):  # in place: the model (and EMA copy) too
        model = model.to(memory_format=torch.channels_last)
    opt = make_optimizer(model, recipe)
    sched = make_scheduler(opt, recipe, math.ceil(steps_per_epoch / recipe.accum_steps))
    scaler = torch.amp.GradScaler(device.type, enabled=amp_dtype(recipe, device) == torch.float16)
    # warmup: decay ramps up from 0, so early epochs do not evaluate mostly-initial weights
    ema = (
        ModelEmaV3(model, decay=recipe.ema_decay, use_warmup=True) if recipe.ema_decay > 0 else None
    )
    mixup = None
    if multilabel and (recipe.mixup_alpha > 0 or recipe.cutmix_alpha > 0):
        raise RecipeError(
            "mixup_alpha / cutmix_alpha are not supported for multi-label competitions yet; "
            'set them to 0 (SET="mixup_alpha=0 cutmix_alpha=0")'
        )
    if recipe.mixup_alpha > 0 or recipe.cutmix_alpha > 0:
        mixup = Mixup(
            mixup_alpha=recipe.mixup_alpha,
            cutmix_alpha=recipe.cutmix_alpha,
            prob=recipe.mix_prob,
            label_smoothing=recipe.label_smoothing,
            num_classes=num_classes,
        )
    compiled = compile_or_eager(model) if recipe.compile and device.type == "cuda" else model
    return TrainState(
        model, opt, sched, scaler, ema, mixup, recipe, norm, device, compiled, multilabel
    )


class compile_or_eager:  # noqa: N801 (used like a function: the model's forward)
    """``torch.compile(model)``, falling back to the eager model (with one warning) when
    compiling fails: no compiler toolchain, an unsupported op, an old GPU."""

    def __init__(self, model: torch.nn.Module) -> None:
        self.model, self.forward, self.checked = model, model, False
        try:
            self.forward = torch.compile(model)
        except Exception as e:  # compile itself is lazy; this catches a missing backend
            self._fallback(e)

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        if self.checked:
            return self.forward(x)
        try:  # the first call traces and generates code: where compiling fails
            out = self.forward(x)
        except Exception as e:
            self._fallback(e)
            out = self.model(x)
        self.checked = True
        return out

    def _fallback(self, e: Exception) -> None:
        self.checked = True
        first = (str(e).strip().splitlines() or [""])[0][:200]
        tqdm.write(f"warning: torch.compile failed ({type(e).__name__}: {first}); running eager")
        self.forward = self.model


def set_frozen(model: torch.nn.Module, frozen: bool) -> None:
    """Freeze everything but the classifier (linear probe) or unfreeze all."""
    head = {id(p) for p in model.get_classifier().parameters()}
    for p in model.parameters():
        p.requires_grad_(id(p) in head or not frozen)


POSTFIX_EVERY = 20  # batches between progress-bar loss updates (each waits for the device)


def train_one_epoch(state: TrainState, loader, desc: str) -> dict:
    """One pass over ``loader``; returns mean loss, accuracy, images/s and the last LR.

    Loss and hits are summed on the device (float64, the same bits as summing ``.item()``s), so
    the host waits for the device only every ``POSTFIX_EVERY`` batches while a progress bar
    shows, and at the end: a per-batch sync would leave a GPU idle while the next batch is
    launched."""
    r, dev = state.recipe, state.device
    dtype = amp_dtype(r, dev)
    state.model.train()
    loss_sum = torch.zeros((), dtype=torch.float64, device=dev)
    correct = torch.zeros((), dtype=torch.float64, device=dev)
    seen, t0 = 0, time.perf_counter()
    bar = tqdm(loader, desc=desc, leave=False, disable=None, dynamic_ncols=True)
    for i, (images, labels, *taught) in enumerate(bar):
        x = to_input(images, *state.norm, dev, r.channels_last)
        if r.device_augment:
            x = device_augment(x, r.augment)
        y = labels.to(dev, non_blocking=True)
        target = state.mixup(x, y) if state.mixup is not None else None
        if target is not None:
            x, target = target
        soft = taught[0].to(dev, non_blocking=True) if taught else None  # a student's targets
        with autocast(dev, dtype):
            logits = state.forward(x)
            if soft is not None and state.multilabel:
                loss = F.binary_cross_entropy_with_logits(logits.float(), soft)
            elif soft is not None:
                loss = torch.sum(-soft * F.log_softmax(logits.float(), dim=-1), dim=-1).mean()
            elif state.multilabel:
                loss = bce(logits, y, r.label_smoothing)
            elif target is not None:
                loss = torch.sum(-target * F.log_softmax(logits.float(), dim=-1), dim=-1).mean()
            else:
                loss = F.cross_entropy(logits.float(), y, label_smoothing=r.label_smoothing)
        state.scaler.scale(loss / r.accum_steps).backward()
        if (i + 1) % r.accum_steps == 0 or i + 1 == len(loader):
            optimizer_step(state)
        n = len(y)
        loss_sum += loss.detach().double() * n
        correct += _hits(logits.detach(), y, state.multilabel).double()
        seen += n
        if not bar.disable and i % POSTFIX_EVERY == 0:
            bar.set_postfix(loss=f"{loss_sum.item() / seen:.3f}", refresh=False)
    total_loss, total_hits = loss_sum.item(), correct.item()  # waits for the device
    secs = time.perf_counter() - t0
    return {
        "train_loss": total_loss / max(1, seen),
        "train_acc": total_hits / max(1, seen),
        "lr": state.opt.param_groups[0]["lr"],
        "img_per_s": seen / max(secs, 1e-9),
    }


def optimizer_step(state: TrainState) -> None:
    """Optimizer step with optional clipping, then schedule and EMA updates."""
    if state.recipe.clip_grad > 0:
        state.scaler.unscale_(state.opt)
        torch.nn.utils.clip_grad_norm_(state.model.parameters(), state.recipe.clip_grad)
    state.scaler.step(state.opt)
    state.scaler.update()
    state.opt.zero_grad(set_to_none=True)
    state.sched.step()
    if state.ema is not None:
        state.ema.update(state.model, step=state.sched.last_epoch)


def bce(logits: torch.Tensor, y: torch.Tensor, smoothing: float = 0.0) -> torch.Tensor:
    """Binary cross-entropy per label of ``(B, C)`` logits against 0/1 ``y``; targets pulled
    ``smoothing / 2`` towards 1/2 (label smoothing for independent labels)."""
    target = y.float() * (1 - smoothing) + smoothing / 2
    return F.binary_cross_entropy_with_logits(logits.float(), target)


def hits(logits: torch.Tensor, y: torch.Tensor, multilabel: bool) -> float:
    """Correct predictions in a batch: rows whose argmax is the label, or for multi-label
    rows the share of labels whose sigmoid > 1/2 is right, summed over rows."""
    return _hits(logits, y, multilabel).item()


def _hits(logits: torch.Tensor, y: torch.Tensor, multilabel: bool) -> torch.Tensor:
    if multilabel:
        return ((logits > 0) == (y > 0)).float().mean(dim=1).sum()
    return (logits.argmax(1) == y).sum()


def loss_and_accuracy(logits: np.ndarray, labels: np.ndarray) -> tuple[float, float]:
    """Cross-entropy and accuracy of ``(N, C)`` logits against ``(N,)`` labels; for ``(N, C)``
    0/1 labels (multi-label), binary cross-entropy and the share of labels right."""
    if labels.ndim == 2:
        t, y = torch.from_numpy(logits), torch.from_numpy(labels)
        return bce(t, y).item(), hits(t, y, True) / len(labels)
    t = torch.from_numpy(logits)
    loss = F.cross_entropy(t, torch.from_numpy(labels)).item()
    return loss, float((logits.argmax(1) == labels).mean())
