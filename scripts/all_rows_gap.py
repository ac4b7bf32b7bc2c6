"""Do K-fold feature members lose against one model on all rows?

    python scripts/all_rows_gap.py <competition> <recipe.toml> <held back per class> [threads]

The recipe's embeddings (view none; built or read under ``/tmp/all_rows_gap``) of the train
images; a class-balanced holdout of ``per class`` images per class carved from train and left
out of every fit; on it: (a) the mean of 5 fold heads (the pipeline's ``fold_l2`` +
``fit_head``), (b) one head on all rows at the folds' L2 rescaled (what ``Kind.fit_all_rows``
fits), at 60 and 200 L-BFGS iterations, and along the L2 path, (c) scikit-learn's
StandardScaler + LogisticRegression with C chosen by 3-fold CV on all rows (the strongest simple
script's head). docs/recipes.md (feature members) has the figures.
"""

from __future__ import annotations

import sys
import time
from pathlib import Path

import numpy as np
import torch
from sklearn.linear_model import LogisticRegression
from sklearn.model_selection import StratifiedKFold, cross_val_score
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler

from pipeline.competition.load import load_competition
from pipeline.competition.task import encode
from pipeline.config import load_recipe
from pipeline.train.kinds import heads
from pipeline.train.kinds.embed import embeddings
from pipeline.workspace import Workspace

K = 5
C_GRID = (0.003, 0.01, 0.03, 0.1, 0.3)


def main(root: str, recipe_path: str, per_class: int, threads: int = 1) -> None:
    torch.set_num_threads(threads)
    comp = load_competition(root)
    work = Path("/tmp/all_rows_gap")
    ws = Workspace(comp=Path(root).name, models=work / "models", output=work)
    recipe = load_recipe(Path(recipe_path), {"tta": ["none"]})
    t = time.perf_counter()
    feats, _ = embeddings(comp, ws, recipe, "train", torch.device("cpu"))
    print(f"embeddings {feats.shape} {time.perf_counter() - t:.0f}s", flush=True)
    task, n = comp.task, len(comp.classes)
    y = encode(comp.train["label"], comp.classes, task.kind)
    rng = np.random.default_rng(0)
    hold = np.concatenate(
        [rng.choice(np.flatnonzero(y == k), per_class, replace=False) for k in range(n)]
    )
    rows = np.setdiff1d(np.arange(len(y)), hold)
    folds = np.empty(len(rows), int)
    split = StratifiedKFold(K, shuffle=True, random_state=0).split(rows, y[rows])
    for f, (_, va) in enumerate(split):
        folds[va] = f

    def acc(z) -> float:
        return float((np.asarray(z).argmax(1) == y[hold]).mean())

    out, l2s, t = [], [], time.perf_counter()
    for f in range(K):
        l2, _ = heads.fold_l2(task, feats, y, rows, folds, f, n)
        x, yy = heads.stack_views(feats, rows[folds != f], y)
        out.append(heads.fit_head(x, yy, n, l2, False).logits(feats[0, hold]).numpy())
        l2s.append(l2)
        print(f"fold {f}: l2 {l2:.3g} holdout {acc(out[-1]):.4f}", flush=True)
    single = np.mean([acc(o) for o in out])
    print(
        f"(a) mean of {K} fold heads: holdout {acc(np.mean(out, 0)):.4f} (one fold head "
        f"{single:.4f}) {time.perf_counter() - t:.0f}s"
    )
    l2_all = float(np.mean(l2s)) * (K - 1) / K
    x, yy = heads.stack_views(feats, rows, y)
    for it in (heads.MAX_ITER, 200):
        t = time.perf_counter()
        head = heads.fit_head(x, yy, n, l2_all, False, max_iter=it)
        print(
            f"(b) all rows, l2 {l2_all:.3g}, {it} iterations: holdout "
            f"{acc(head.logits(feats[0, hold]).numpy()):.4f} {time.perf_counter() - t:.0f}s",
            flush=True,
        )
    for l2 in heads.L2_PATH:
        head = heads.fit_head(x, yy, n, l2, False, max_iter=200)
        print(f"    all rows l2 {l2:g}: holdout {acc(head.logits(feats[0, hold]).numpy()):.4f}")
    xs, best, t = feats[0, rows], None, time.perf_counter()
    for c in C_GRID:
        model = make_pipeline(StandardScaler(), LogisticRegression(C=c, max_iter=300))
        score = float(cross_val_score(model, xs, y[rows], cv=3).mean())
        print(f"    scikit-learn C {c}: 3-fold CV {score:.4f}", flush=True)
        best = max(best or (score, c), (score, c))
    model = make_pipeline(StandardScaler(), LogisticRegression(C=best[1], max_iter=300))
    model.fit(xs, y[rows])
    print(
        f"(c) scikit-learn on all rows, C {best[1]}: holdout "
        f"{acc(model.decision_function(feats[0, hold])):.4f} {time.perf_counter() - t:.0f}s"
    )


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2], int(sys.argv[3]), int(sys.argv[4]) if len(sys.argv) > 4 else 1)
