"""A time budget for ``make train``: probe each recipe, plan the epochs, write ``plan.toml`` once.

``make train BUDGET=20m`` times a short probe of every run (decode, a few training batches,
prediction, or for feature members embedding and one head fit's arithmetic), prices the whole
train stage from it (``Cost``: seconds once per run, per epoch of a fold, per fold), scales the
fine-tuned runs' epochs by one common factor so the total fits (``EPOCHS=auto``, the default
with a budget; ``EPOCHS=recipe`` keeps them and only checks), prints the plan and writes it to
``<models>/<comp>/plan.toml``. Re-runs, resumes and every executor read that file instead of
planning again; the plan and the measured seconds go into each run's ``config.toml``.
"""

from __future__ import annotations

import math
import re
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, replace
from pathlib import Path

import numpy as np
import torch

from .. import artifacts
from ..config import Recipe, to_toml
from ..errors import PipelineError

SAMPLE = 512  # images the probe decodes (when not cached) and times on
FOLD_OVERHEAD_S = 3.0  # per fold: model creation, checkpoints, metrics, curves
MAX_SCALE = 2.0  # EPOCHS=auto never more than doubles a recipe's epochs
Clock = Callable[[], float]


def parse_budget(text: str) -> float:
    """``"90s"``, ``"25m"``, ``"1.5h"`` or a bare number of minutes -> seconds."""
    m = re.fullmatch(r"\s*(\d+(?:\.\d+)?)\s*([smh]?)\s*", str(text))
    if not m or float(m.group(1)) <= 0:
        raise PipelineError(f"BUDGET={text!r}: use a duration like 20m, 1.5h or 900s")
    return float(m.group(1)) * {"s": 1, "m": 60, "h": 3600, "": 60}[m.group(2)]


@dataclass(frozen=True)
class Cost:
    """What one run costs: ``once_s`` (decode, embeddings, the L2 path), ``epoch_s`` (one epoch
    of one fold: training and validation), ``fold_s`` (per fold: OOF and test prediction or a
    head fit, overhead), and what its probe took."""

    kind: str
    once_s: float
    epoch_s: float
    fold_s: float
    probe_s: float
    figures: dict  # the measured rates behind it (images/s), for the plan file

    def seconds(self, epochs: int, k: int) -> float:
        per_fold = (epochs * self.epoch_s if self.kind == "finetune" else 0.0) + self.fold_s
        return self.once_s + k * per_fold


@dataclass(frozen=True)
class Plan:
    budget_s: float
    k: int
    epochs: dict[str, int]  # run -> planned epochs (feature members: 1)
    recipe_epochs: dict[str, int]
    costs: dict[str, Cost]

    def run_seconds(self, run: str) -> float:
        return self.costs[run].seconds(self.epochs[run], self.k)

    @property
    def total_s(self) -> float:
        return sum(self.run_seconds(r) + self.costs[r].probe_s for r in self.costs)


def make_plan(
    costs: dict[str, Cost], recipe_epochs: dict[str, int], k: int, budget_s: float, auto: bool
) -> Plan:
    """Runs in ``costs`` order (priority) while each still fits at one epoch (fine-tuned) after
    the ones kept before it, then the largest common epoch scale (at most ``MAX_SCALE``; with
    ``auto`` False, the recipes' epochs) whose total fits ``budget_s``. Refuses, naming the
    smallest plan, when not even the first run fits."""
    kept: dict[str, Cost] = {}
    for run, cost in costs.items():
        trial = {**kept, run: cost}
        if _epochs_plan(trial, recipe_epochs, k, budget_s, auto) is not None:
            kept = trial
    if not kept:
        smallest = Plan(budget_s, k, {r: 1 for r in costs}, recipe_epochs, costs)
        raise PipelineError(refusal(smallest, "" if auto else "with the recipes' epochs"))
    return _epochs_plan(kept, recipe_epochs, k, budget_s, auto)


def _epochs_plan(costs, recipe_epochs, k, budget_s, auto) -> Plan | None:
    tune = [r for r in costs if costs[r].kind == "finetune"]

    def epochs_at(scale: float) -> dict[str, int]:
        e = {r: 1 for r in costs}
        e.update({r: max(1, math.floor(recipe_epochs[r] * scale + 1e-9)) for r in tune})
        return e

    scales = sorted(
        {
            e / recipe_epochs[r]
            for r in tune
            for e in range(1, int(recipe_epochs[r] * MAX_SCALE) + 1)
        }
        | {1.0},
        reverse=True,
    )
    for s in scales if auto else [1.0]:
        plan = Plan(budget_s, k, epochs_at(s), recipe_epochs, costs)
        if plan.total_s <= budget_s:
            return plan
    return None


def refusal(smallest: Plan, how: str) -> str:
    """The one line for a budget not even the first run fits: each run's smallest minutes."""
    each = ", ".join(f"{r} {smallest.run_seconds(r) / 60:.1f} min" for r in smallest.costs)
    probes = sum(c.probe_s for c in smallest.costs.values())
    return (
        f"BUDGET={smallest.budget_s / 60:g}m is too small for any run {how or '(1 epoch each)'}: "
        f"{each} (probes {probes:.0f} s); raise BUDGET or name cheaper RUNS"
    )


def format_plan(
    plan: Plan, n_train: int, n_test: int, device: str, dropped: tuple[str, ...] = ()
) -> str:
    lines = [
        f"plan for BUDGET={plan.budget_s / 60:g}m on {device}: K={plan.k}, {n_train:,} train / "
        f"{n_test:,} test images",
        f"  {'run':<22}{'kind':<10}{'epochs':>10}{'once':>9}{'/epoch':>9}{'/fold':>8}{'total':>10}",
    ]
    for run, c in plan.costs.items():
        e = plan.epochs[run]
        ep = f"{e} ({plan.recipe_epochs[run]})" if c.kind == "finetune" else "-"
        per_epoch = f"{c.epoch_s:.0f}s" if c.kind == "finetune" else "-"
        lines.append(
            f"  {run:<22}{c.kind:<10}{ep:>10}{c.once_s:>8.0f}s{per_epoch:>9}{c.fold_s:>7.0f}s"
            f"{plan.run_seconds(run) / 60:>8.1f}min"
        )
    for run in dropped:
        lines.append(f"  {run:<22}left out: does not fit after the runs above (RUNS= to choose)")
    probes = sum(c.probe_s for c in plan.costs.values())
    lines.append(
        f"  probes {probes:.0f} s; total {plan.total_s / 60:.1f} min of {plan.budget_s / 60:g} min "
        "(epochs: planned (recipe); once = decode + embeddings; /epoch and /fold per fold)"
    )
    return "\n".join(lines)


# ---------------------------------------------------------------- plan.toml


def write_plan(
    path: Path, plan: Plan, device: str, left_out: tuple[str, ...] = (), costs: dict | None = None
) -> None:
    """``plan.toml``; ``costs`` (every probed run) adds the left-out runs' smallest seconds and
    probe figures under ``[left_out_costs]``, so a user sees what a larger budget would buy."""
    runs = {
        r: {
            "kind": c.kind,
            "epochs": plan.epochs[r],
            "recipe_epochs": plan.recipe_epochs[r],
            "planned_s": round(plan.run_seconds(r), 1),
            **{k: round(v, 3) for k, v in asdict(c).items() if isinstance(v, float)},
            **{k: round(v, 2) for k, v in c.figures.items()},
        }
        for r, c in plan.costs.items()
    }
    meta = {
        "budget_s": plan.budget_s,
        "k": plan.k,
        "device": device,
        "total_s": round(plan.total_s, 1),
        "left_out": list(left_out),
        "created": time.strftime("%Y-%m-%d %H:%M:%S"),
        "runs": runs,
    }
    if left_out and costs:
        meta["left_out_costs"] = {
            r: {
                "smallest_s": round(costs[r].seconds(1, plan.k), 1),
                **{k: round(v, 2) for k, v in costs[r].figures.items()},
            }
            for r in left_out
        }
    artifacts.atomic_write_text(path, to_toml(meta))


def read_plan(path: Path) -> dict | None:
    return artifacts.read_run_config(path)


def planned_epochs(saved: dict, path: Path, runs: list[str], budget_s: float | None) -> dict:
    """The epochs a written plan fixed; refuses a different budget or a run it does not cover."""
    if budget_s is not None and abs(saved["budget_s"] - budget_s) > 0.5:
        raise PipelineError(
            f"{path} was planned for BUDGET={saved['budget_s'] / 60:g}m, not "
            f"{budget_s / 60:g}m; delete it to plan again (trained folds keep their epochs)"
        )
    missing = [r for r in runs if r not in saved["runs"] and r not in saved.get("left_out", [])]
    if budget_s is not None and missing:
        raise PipelineError(
            f"{path} does not plan run {missing[0]!r}; delete it to plan again with these RUNS"
        )
    return {r: int(saved["runs"][r]["epochs"]) for r in runs if r in saved["runs"]}


# ---------------------------------------------------------------- probes


class _First:
    """The first ``warmup + batches`` batches of a loader; the clock starts at batch ``warmup``."""

    def __init__(self, loader, warmup: int, batches: int, clock: Clock):
        self.loader, self.warmup, self.batches, self.clock = loader, warmup, batches, clock
        self.t0 = self.images = 0

    def __len__(self) -> int:
        return self.warmup + self.batches

    def __iter__(self):
        i = 0
        while True:  # a small dataset wraps around
            for batch in self.loader:
                if i == len(self):
                    return
                if i == self.warmup:
                    self.t0 = self.clock()
                if i >= self.warmup:
                    self.images += len(batch[1])
                i += 1
                yield batch


def probe_run(
    comp,
    ws,
    recipe: Recipe,
    y_all: np.ndarray,
    k: int,
    device: torch.device,
    clock: Clock = time.perf_counter,
    batches: int = 4,
    warmup: int = 1,
) -> Cost:
    """Time ``recipe`` on this machine: decoding ``SAMPLE`` images (unless the decode cache
    exists; nothing is written), then a few batches of the real training loop and of prediction
    on them, or of embedding for a feature member."""
    from . import features, loop
    from .backbone import create_model, data_config
    from .data import (
        CachedImages,
        auto_workers,
        cached,
        decode_sample,
        loader_transform,
        make_loader,
    )

    start = clock()
    size = recipe.image_size
    n_train, n_test, n_classes = len(comp.train), len(comp.test), len(comp.classes)
    paths = comp.train["path"].tolist()
    hit = cached(paths, size, ws.decode_cache("train", size))
    n_sample = min(SAMPLE, n_train)
    images = (
        np.asarray(hit[:n_sample])
        if hit is not None
        else decode_sample(comp.root, paths[:n_sample], size)
    )
    decode_s = 0.0 if hit is not None else (clock() - start) * (n_train + n_test) / n_sample
    start = clock()
    views = len(recipe.tta)
    pbs = recipe.batch_size * 2
    # as the fold's own prediction runs it (channels_last input: 1.8x on this CPU for lite0)
    how = {"dtype": loop.amp_dtype(recipe, device), "channels_last": recipe.channels_last}
    if recipe.kind == "features":
        model = create_model(recipe, 0).to(device)
        cfg = data_config(model, recipe)
        norm = (torch.tensor(cfg["mean"], device=device), torch.tensor(cfg["std"], device=device))
        args = (norm, device, pbs)
        cached = features.cached_views(comp, ws, recipe)
        todo = (n_train + n_test) * (views - len(cached["train"]))
        if todo:
            rows = np.arange((warmup + batches) * pbs) % n_sample
            loop.predict(model, images, rows[: warmup * pbs], ("none",), *args, **how)
            t = clock()
            loop.predict(model, images, rows[warmup * pbs :], ("none",), *args, **how)
            embed_ips = batches * pbs / max(clock() - t, 1e-9)
        else:
            embed_ips = float("inf")
        head_s = _head_seconds(n_train * (k - 1) // k * views, model.num_features, n_classes, clock)
        path_s = head_s * features.PATH_ITER / features.MAX_ITER * len(features.L2_PATH) * 0.6
        return Cost(
            "features",
            once_s=decode_s + todo / embed_ips + path_s,
            epoch_s=0.0,
            fold_s=head_s + FOLD_OVERHEAD_S,
            probe_s=clock() - start,
            figures={"decode_s": decode_s, "embed_ips": min(embed_ips, 1e9), "head_fit_s": head_s},
        )
    model = create_model(recipe, n_classes).to(device)
    cfg = data_config(model, recipe)
    norm = (torch.tensor(cfg["mean"], device=device), torch.tensor(cfg["std"], device=device))
    ds = CachedImages(images, np.arange(n_sample), y_all[:n_sample], loader_transform(recipe), 0)
    loader = make_loader(
        ds, recipe.batch_size, True, recipe.seed, auto_workers(recipe, device), device
    )
    state = loop.make_state(
        model, recipe, norm, device, len(loader), n_classes, comp.task.multilabel
    )
    timed = _First(loader, warmup, batches, clock)
    loop.train_one_epoch(state, timed, "probe train")
    train_ips = timed.images / max(clock() - timed.t0, 1e-9)
    rows = np.arange(batches * pbs) % n_sample
    args = (norm, device, pbs)
    loop.predict(state.eval_model(), images, rows[:pbs], ("none",), *args, **how)
    t = clock()
    loop.predict(state.eval_model(), images, rows, ("none",), *args, **how)
    view_ips = len(rows) / max(clock() - t, 1e-9)  # one view
    fold_train, fold_val = n_train * (k - 1) / k, n_train / k
    return Cost(
        "finetune",
        once_s=decode_s,
        epoch_s=fold_train / train_ips + fold_val / view_ips,
        fold_s=(fold_val + n_test) * views / view_ips + FOLD_OVERHEAD_S,
        probe_s=clock() - start,
        figures={"decode_s": decode_s, "train_ips": train_ips, "predict_ips_per_view": view_ips},
    )


def _head_seconds(n: int, d: int, c: int, clock: Clock, evals: int = 3) -> float:
    """One fold's L-BFGS head fit, priced from ``evals`` loss+gradient evaluations of its size
    (about 1.3 evaluations per iteration with the strong-Wolfe line search)."""
    from .features import MAX_ITER

    x = torch.randn(n, d)
    w = torch.zeros(c, d, requires_grad=True)
    y = torch.randint(0, c, (n,))
    t = clock()
    for _ in range(evals):
        loss = torch.nn.functional.cross_entropy(x @ w.T, y)
        loss.backward()
    return (clock() - t) / evals * MAX_ITER * 1.3


# ---------------------------------------------------------------- the train stage's use


def resolve_plan(
    comp, ws, recipes: dict, folds_df, k: int, device, budget_s, auto: bool
) -> tuple[dict, list[str]]:
    """``{run: plan entry}`` for the runs a plan covers, and the runs it left out: planned now
    (``budget_s`` given and no ``plan.toml`` yet) or read from ``plan.toml``; ``{}`` and ``[]``
    without either."""
    from ..competition.task import encode

    path = ws.plan
    saved = read_plan(path)
    if saved is None:
        if budget_s is None:
            return {}, []
        y = encode(folds_df["label"], comp.classes, comp.task.kind)
        y_all = np.zeros((len(comp.train), *y.shape[1:]), dtype=np.int64)
        y_all[folds_df["row"].to_numpy()] = y
        costs, sizes = {}, set()
        for run, recipe in recipes.items():
            print(f"plan: probing {run} ...", flush=True)
            c = probe_run(comp, ws, recipe, y_all, k, device)
            if recipe.image_size in sizes:  # an earlier run decodes this size's cache
                c = replace(c, once_s=c.once_s - c.figures["decode_s"])
            costs[run] = c
            sizes.add(recipe.image_size)
        epochs = {run: recipe.epochs for run, recipe in recipes.items()}
        plan = make_plan(costs, epochs, k, budget_s, auto)
        dropped = tuple(r for r in costs if r not in plan.costs)
        print(format_plan(plan, len(comp.train), len(comp.test), str(device), dropped))
        write_plan(path, plan, str(device), dropped, costs)
        print(f"wrote {path}: re-runs and resumes use these epochs (delete it to plan again)")
        saved = read_plan(path)
    else:
        print(f"plan: {path} (BUDGET={saved['budget_s'] / 60:g}m, {saved['total_s'] / 60:.1f} min)")
    epochs = planned_epochs(saved, path, list(recipes), budget_s)
    entries = {
        run: {"budget_s": saved["budget_s"], **saved["runs"][run], "epochs": e}
        for run, e in epochs.items()
    }
    return entries, [r for r in recipes if r in saved.get("left_out", [])]


def record_wall(rdir: Path, stage_s: float) -> None:
    """Add the measured seconds (each fold's ``done.json``, and this ``make train`` call's wall
    time) to the run's ``config.toml`` next to its plan."""
    path = rdir / "config.toml"
    cfg = artifacts.read_run_config(path)
    if cfg is None:
        return
    folds = sorted(rdir.glob("fold*/done.json"))
    secs = [float(artifacts.read_json(p, "make train").get("seconds", 0.0)) for p in folds]
    cfg["wall"] = {
        "folds_s": round(sum(secs), 1),
        "fold_s": [round(x, 1) for x in secs],
        "last_train_call_s": round(stage_s, 1),
    }
    artifacts.atomic_write_text(path, to_toml(cfg))
