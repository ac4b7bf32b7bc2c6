"""A feature member's model on all train rows (``Kind.fit_all_rows``): once every fold is
done, one linear head on every row at the folds' L2, whose test logits replace the K fold
heads' mean (docs/recipes.md, feature members, step 5)."""

from __future__ import annotations

import time

import numpy as np
import torch

from ... import artifacts
from ..context import TrainContext
from ..fold import logits_fields
from . import heads
from .embed import all_cached, embeddings


def fit_all_rows(ctx: TrainContext, run: str, device: torch.device) -> str:
    """One head on every train row, at the folds' L2 rescaled to all rows (the penalty is on
    the mean loss, so the same total regularisation is a proportionally smaller L2): its test
    logits are the member's (``<run>/full/``: ``best.pt``, ``test.npz``, ``done.json``), where
    the K fold heads each saw 1 - 1/K of the rows; the OOF logits stay the folds' (honest).
    Refitted when a fold or the folds file changed. A student keeps the folds' mean: its
    targets are per fold. Returns the log line ("" when nothing was fitted)."""
    comp, ws, recipe = ctx.comp, ctx.ws, ctx.recipes[run]
    if recipe.teacher:
        return ""
    t0 = time.perf_counter()
    dones, key = _all_rows_key(ctx, run)
    fdir = ws.all_rows_dir(run)
    if (fdir / "done.json").is_file():
        redo = f"delete {fdir} and re-run make train RUNS={run} (it is refitted)"
        if artifacts.read_done(fdir / "done.json", redo).extra.get("fitted_from") == key:
            return ""
        (fdir / "done.json").unlink()  # a fold changed: refit (done.json goes first)
    if not all_cached(comp, ws, recipe):  # folds embedded elsewhere (Kaggle, Ray nodes)
        return (
            f"{run}: its embeddings are not on this machine (the folds ran elsewhere): test "
            "logits stay the folds' mean"
        )
    train_feats, cfg = embeddings(comp, ws, recipe, "train", device)
    test_feats, _ = embeddings(comp, ws, recipe, "test", device)
    rows, n = ctx.folds_df["row"].to_numpy(), len(comp.classes)
    torch.manual_seed(recipe.seed + len(dones))
    x, y = heads.stack_views(train_feats, rows, ctx.labels)
    head = heads.fit_head(x, y, n, key["l2"], comp.task.multilabel)
    fdir.mkdir(parents=True, exist_ok=True)
    sha = heads.save_folded(recipe, n, head, fdir / "best.pt")
    artifacts.write_logits(
        fdir / "test.npz",
        ids=comp.test["id"].to_numpy(),
        logits=np.stack([head.logits(f).numpy() for f in test_feats]),
        **logits_fields(comp, recipe.tta, ctx.fhash),
    )
    secs = time.perf_counter() - t0
    done = artifacts.FoldDone(
        kind=recipe.kind,
        best_epoch=1,
        epochs=1,
        metric=comp.task.metric,
        # no held-out rows: the folds' mean, what the all-rows head is expected to beat
        val_score=float(np.mean([d.val_score for d in dones])),
        val_acc=float(np.mean([d.val_acc for d in dones])),
        mean=cfg["mean"],
        std=cfg["std"],
        threads=torch.get_num_threads(),
        seconds=round(secs, 1),
        holdout_used=False,
        best_sha256=sha,
        extra={"l2": key["l2"], "rows": len(rows), "fitted_from": key},
    )
    artifacts.write_done(fdir / "done.json", done)
    return (
        f"{run}: test logits from one head on all {len(rows)} rows (L2 {key['l2']:.3g}, the "
        f"folds' rescaled), {secs:.0f} s; OOF logits stay the {len(dones)} folds'"
    )


def _all_rows_key(ctx: TrainContext, run: str) -> tuple[list, dict]:
    """The folds' ``done.json`` and what the all-rows head is fitted from: the folds file,
    each fold's ``best.pt`` and the L2 (the mean of ``l2 x fold rows / all rows``)."""
    folds = ctx.folds_df["fold"].to_numpy()
    rerun = f"make train COMP={ctx.comp.root} RUNS={run}"
    k = int(folds.max()) + 1
    dones = [artifacts.read_done(ctx.ws.fold_dir(run, f) / "done.json", rerun) for f in range(k)]
    l2 = sum(d.extra["l2"] * int((folds != f).sum()) for f, d in enumerate(dones)) / k / len(folds)
    return dones, {"folds_hash": ctx.fhash, "fold_sha256": [d.best_sha256 for d in dones], "l2": l2}
