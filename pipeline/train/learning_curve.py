"""Learning curves: fold 0 trained on nested, stratified fractions of its train rows.

``make curve RUN=<run>`` trains the recipe's fold ``fold`` on 10, 25 and 50 % of that fold's
train rows (each subset inside the next: every class is shuffled once and cut at each fraction),
with the same epochs and the same held-out rows, and reads the 100 % point from the run itself
when that fold is trained. It writes ``models/<comp>/<run>/curve/curve.csv`` (images, the
competition's metric, accuracy, and accuracy per class) and ``curve.png``: whether more data,
pseudo-labels or a bigger model is what pays. Each fraction is an ordinary resumable fold under
``curve/frac<pct>/``.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from .. import artifacts
from ..competition import Competition
from ..errors import PipelineError
from ..model.pretrained import ensure_pretrained
from ..util.figures import pyplot
from ..workspace import Workspace
from .assemble import load_recipes, read_training_folds
from .context import Job, TrainContext
from .kinds import get_kind
from .stage import resolve_device, write_or_verify_config

FRACTIONS = (0.1, 0.25, 0.5)


def nested_subsets(
    labels: pd.Series, fractions: tuple[float, ...], seed: int
) -> dict[float, np.ndarray]:
    """Row positions of each fraction of ``labels``: every class shuffled once and cut at
    ``ceil(fraction * n_class)`` (at least one row), so each subset holds the smaller ones and
    keeps the class shares."""
    rng = np.random.default_rng(seed)
    order = {c: rng.permutation(np.flatnonzero(labels.to_numpy() == c)) for c in labels.unique()}
    return {
        f: np.sort(np.concatenate([r[: max(1, int(np.ceil(f * len(r))))] for r in order.values()]))
        for f in fractions
    }


def curve_stage(
    comp: Competition,
    ws: Workspace,
    run: str,
    fractions: tuple[float, ...] = FRACTIONS,
    fold: int = 0,
    overrides: dict | None = None,
    device: str = "auto",
) -> pd.DataFrame:
    """Train and score each fraction, write ``curve.csv`` and ``curve.png``; return the table."""
    if comp.task.multilabel:
        raise PipelineError("make curve: multi-label competitions are not supported yet")
    if not fractions or not all(0 < f < 1 for f in fractions):
        raise PipelineError(f"FRACTIONS={list(fractions)}: use fractions between 0 and 1")
    folds_df, fhash = read_training_folds(comp, ws)
    if fold not in set(folds_df["fold"]):
        raise PipelineError(f"fold {fold} is not in {ws.folds_csv}")
    dev = resolve_device(device)
    recipe = load_recipes(ws, [run], overrides)[run]
    ensure_pretrained({run: recipe})
    kind = get_kind(recipe.kind)
    train = folds_df[folds_df["fold"] != fold]
    labels = folds_df.set_index("id")["label"]
    subsets = nested_subsets(train["label"].reset_index(drop=True), tuple(fractions), recipe.seed)
    rows = []
    for frac, keep in sorted(subsets.items()):
        sub_run = f"{run}/curve/frac{round(frac * 100):03d}"
        part = pd.concat([train.iloc[keep], folds_df[folds_df["fold"] == fold]]).sort_index()
        write_or_verify_config(ws.run_dir(sub_run), recipe, fhash, sub_run, comp)
        if not (ws.fold_dir(sub_run, fold) / "done.json").is_file():
            ctx = TrainContext.build(comp, ws, part, fhash, {sub_run: recipe}, str(dev))
            kind.fit_curve_point(ctx.fold_job(Job(sub_run, fold), dev))
        rows.append(_point(comp, ws, sub_run, fold, frac, len(keep), labels))
    if (ws.fold_dir(run, fold) / "done.json").is_file():  # the run itself is the 100 % point
        rows.append(_point(comp, ws, run, fold, 1.0, len(train), labels))
    table = pd.DataFrame(rows)
    out = ws.run_dir(run) / "curve"
    artifacts.write_csv(out / "curve.csv", table)
    _plot(table, comp, run, out)
    print(table[["fraction", "images", "metric", "score", "accuracy"]].to_string(index=False))
    print(f"wrote {out}/curve.csv and curve.png")
    return table


def _point(
    comp: Competition, ws: Workspace, run: str, fold: int, frac: float, n: int, labels: pd.Series
) -> dict:
    """Score one trained fold from its ``oof.npz`` (the mean of its TTA views) against
    ``labels`` (id -> label of the folds file, so relabel.csv's labels count)."""
    fdir = ws.fold_dir(run, fold)
    data = artifacts.read_logits(fdir / "oof.npz", "oof", f"make curve RUN={run}")
    labels = pd.Series(labels.reindex(data["ids"]).to_numpy())
    y = pd.Index(comp.classes).get_indexer(labels)
    probs = comp.task.probabilities(data["logits"]).mean(axis=0)  # mean over TTA views
    pred = probs.argmax(axis=1)
    point = {
        "fraction": frac,
        "images": n,
        "metric": comp.task.metric,
        "score": comp.task.score(y, probs),
        "accuracy": float((pred == y).mean()),
    }
    for k, c in enumerate(comp.classes):
        mask = y == k
        point[f"acc_{c}"] = float((pred[mask] == k).mean()) if mask.any() else np.nan
    return point


def _plot(table: pd.DataFrame, comp: Competition, run: str, out) -> None:
    plt = pyplot()
    fig, axes = plt.subplots(1, 2, figsize=(12, 4))
    axes[0].plot(table["images"], table["score"], "o-")
    axes[0].set_xscale("log")
    axes[0].set_xlabel("train images (log scale)")
    axes[0].set_ylabel(f"held-out {table['metric'].iloc[0]}")
    axes[0].set_title(f"{comp.name} / {run}: fold-0 learning curve")
    axes[0].grid(alpha=0.3)
    per_class = table[[c for c in table.columns if c.startswith("acc_")]]
    worst = per_class.iloc[-1].sort_values().index[:10]  # the 10 weakest at the largest size
    for c in worst:
        axes[1].plot(table["images"], per_class[c], "o-", label=c[4:], alpha=0.8)
    axes[1].set_xscale("log")
    axes[1].set_xlabel("train images (log scale)")
    axes[1].set_ylabel("accuracy")
    axes[1].set_title("per class" if len(per_class.columns) <= 10 else "the 10 weakest classes")
    axes[1].legend(fontsize=7)
    axes[1].grid(alpha=0.3)
    fig.tight_layout()
    artifacts.savefig(out / "curve.png", fig)
    plt.close(fig)
