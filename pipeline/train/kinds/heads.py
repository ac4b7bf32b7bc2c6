"""Linear heads on frozen embeddings: a softmax (multi-label: sigmoid) layer on standardised
features, fitted full-batch by L-BFGS in float32, its L2 strength chosen along a warm-started path
from strong to weak on an inner split of the fold's own training rows; ``save_folded`` writes
one folded into the backbone's classifier as a whole-model ``best.pt``."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from ...model.backbone import create_model
from ..fold import save_torch

# L2 strengths (on the mean loss, standardised features) tried from strong to weak
L2_PATH = (1e-1, 3e-2, 1e-2, 3e-3, 1e-3, 3e-4, 1e-4)
MAX_ITER = 60  # L-BFGS iterations of a fold's fit (docs/performance.md: why 60)
PATH_ITER = 30  # per L2 value along the path, warm-started from the previous value


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
    return t.mean(0), t.std(0, correction=int(len(t) > 1)).clamp_min(1e-6)  # one row: 0


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


def fold_l2(task, feats, y_all, rows, folds, fold: int, n: int) -> tuple[float, dict]:
    """The L2 a fold's head is fitted at, and how it was chosen: on the fold's training rows,
    the next fold the inner validation set, by the labels alone (a student's teacher targets
    for the inner training rows come from fold models that trained on the inner validation
    fold). The penalty is on the mean loss and the fold's training set is larger than the inner
    one, so the same total regularisation is a proportionally smaller L2 (docs/performance.md
    has the measured effect)."""
    inner = (fold + 1) % (int(folds.max()) + 1)
    inner_fit, inner_val = rows[(folds != fold) & (folds != inner)], rows[folds == inner]
    l2_inner, steps = choose_l2(task, feats, y_all, y_all, inner_fit, inner_val, n)
    l2 = l2_inner * len(inner_fit) / int((folds != fold).sum())
    return l2, {"l2_inner": l2_inner, "l2_inner_val": inner, "l2_path": steps}


def head_seconds(n: int, d: int, c: int, clock, evals: int = 3) -> float:
    """One fold's L-BFGS head fit on ``n`` rows of ``d`` features and ``c`` classes, priced from
    ``evals`` loss+gradient evaluations of its size (about 1.3 evaluations per iteration with
    the strong-Wolfe line search)."""
    x = torch.randn(n, d)
    w = torch.zeros(c, d, requires_grad=True)
    y = torch.randint(0, c, (n,))
    t = clock()
    for _ in range(evals):
        loss = F.cross_entropy(x @ w.T, y)
        loss.backward()
    return (clock() - t) / evals * MAX_ITER * 1.3


def save_folded(recipe, n_classes: int, head: LinearHead, path: Path) -> str:
    """The whole model as ``best.pt`` (the fine-tune checkpoint format): the frozen backbone
    with the head folded into its classifier, so it predicts like any fine-tuned fold."""
    model = create_model(recipe, n_classes)
    w, b = head.folded()
    clf = model.get_classifier()
    with torch.no_grad():
        clf.weight.copy_(w)
        clf.bias.copy_(b)
    return save_torch(path, {"model": model.state_dict(), "epoch": 1})
