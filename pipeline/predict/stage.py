"""``make predict``: the saved ensemble on a test folder it has never seen, inference only.

Reads the ensemble state and every member's fold weights (``members``), the test folder's sample
submission and images (``competition.testset``). One pass over the test images: each image is
decoded once and resized to each member's size (in the decoding threads), every (member, fold,
view) runs on the batch, and the fold mean of each view's logits goes to ``logits/<run>.npy`` on
disk (memory stays flat).
Blending needs every row (rank averages, stacking), so it runs after the pass. Writes
``submission.csv`` (validated against the sample) and ``predict.json`` (speed, what a time limit
dropped, which modules were loaded).

The import closure of this package is what a Kaggle notebook ships (torch, timm, numpy, pandas,
PIL/OpenCV, scikit-learn, scipy, safetensors): an import-linter contract keeps Albumentations,
cleanlab, imagehash and the Kaggle CLI out.
"""

from __future__ import annotations

import sys
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import numpy as np
import torch
from tqdm import tqdm

from .. import artifacts
from ..competition.images import ImageError, load_rgb
from ..competition.submission import validate_for, write_submission
from ..competition.testset import load_test_folder
from ..durations import parse_duration
from ..ensemble.members import combine_label_views, combine_views
from ..ensemble.prior import adjust, describe
from ..errors import PipelineError
from ..layout import Workspace
from ..model.device import amp_dtype, autocast, resolve_device
from ..model.infer import normalisation
from ..model.inputs import resize_square, to_input
from ..model.tta import apply_view
from . import budget
from .bad_images import DEFAULT_MAX_BAD, BadImages
from .saved import Member, Saved, load_fold_model, load_saved

FORBIDDEN = ("albumentations", "cleanlab", "imagehash", "kaggle")  # not on a Kaggle GPU image
PRECISIONS = ("auto", "fp32", "fp16", "bf16")
PROBE_BATCHES = 2  # batches timed with every view before the time budget decides


def predict_stage(
    ws: Workspace,
    name: str,
    test: Path,
    to: Path | None = None,
    device: str = "auto",
    precision: str = "auto",
    batch_size: int = 64,
    time_limit: str | float = budget.DEFAULT_LIMIT,
    clock: Callable[[], float] = time.perf_counter,
    on_bad_image: str = "refuse",
    max_bad: str | float = DEFAULT_MAX_BAD,
) -> dict[str, Any]:
    """Predict ``test`` with ensemble ``name``; write ``to`` (default
    ``submissions/<comp>/<name>/predict/submission.csv``) and ``predict.json`` beside it.
    ``precision`` "auto" runs each member as it was trained (its recipe's ``amp`` on CUDA, fp32
    on CPU). ``on_bad_image`` "fallback" (the notebook's) predicts an unreadable test image from
    the rest, up to ``max_bad`` of them (``bad_images.py``); "refuse" stops in one line.
    Returns the ``predict.json`` content."""
    start = clock()
    if precision not in PRECISIONS:
        raise PipelineError(f"PRECISION={precision!r}: use one of {', '.join(PRECISIONS)}")
    limit = parse_duration(time_limit, "TIME_LIMIT")
    saved = load_saved(ws, name)
    st = saved.state
    bad = BadImages(on_bad_image, max_bad, [])
    comp = load_test_folder(
        test, st["comp"], saved.classes, saved.task, st["id_col"], st["target_col"],
        st.get("class_columns"), bad_ok=bad.fallback,
    )  # fmt: skip
    bad.ids = comp.test["id"].astype(str).tolist()
    paths = [comp.root / p if isinstance(p, str) else None for p in comp.test["path"]]
    for row in (n for n, p in enumerate(paths) if p is None):  # its line is in comp.problems
        bad.add(row, next(p for p in comp.problems if f"row {row + 2}:" in p))
    dev = resolve_device(device)
    out = Path(to) if to else ws.predict_dir(name) / "submission.csv"
    logits_dir = out.parent / "logits"
    plan = ", ".join(f"{m.run} x{len(m.weights)} folds {'+'.join(m.views)}" for m in saved.members)
    print(f"predict: {len(paths)} images of {comp.sample_path}; {plan}; {dev}, {precision}")
    run = _Pass(saved, dev, precision, batch_size, logits_dir, len(paths), bad)
    try:
        record = run.stream(paths, start, limit, clock)
        probs, how = blend(saved, run.logits, record["dropped"])
    except BaseException:
        run.discard()
        raise
    probs = np.array(probs, dtype=np.float64)
    if st.get("train_prior") is not None:  # the ensemble's PRIOR, estimated on these images
        probs, record["label_shift"] = adjust(
            st.get("prior", "train"), saved.task, np.asarray(st["train_prior"]), probs,
            helps=st.get("prior_helps"),
        )  # fmt: skip
        print(describe(record["label_shift"], saved.classes))
    pred = probs.argmax(axis=1)
    fallback = bad.fill(probs, pred, saved.task.format, saved.task.multilabel)
    np.save(logits_dir / "probs.npy", np.asarray(probs, dtype=np.float32))  # (T, C), for checks
    write_submission(comp, out, pred, probs)
    try:
        validate_for(comp, out)
    except PipelineError:
        out.unlink(missing_ok=True)
        raise
    record.update(
        blend=how,
        submission=str(out),
        n_test=len(paths),
        device=str(dev),
        precision=precision,
        seconds=round(clock() - start, 3),
        bad_images=bad.record(fallback),
        forbidden_imported=sorted({m.split(".")[0] for m in sys.modules} & set(FORBIDDEN)),
    )
    artifacts.write_json(out.parent / "predict.json", record)
    print(f"wrote {out} ({how}); {record['img_per_s']:.1f} img/s over the pass")
    if bad.rows:
        print(
            f"{len(bad.rows)} unreadable test image(s) predicted from the rest ({fallback}): "
            + ", ".join(repr(i) for i in record["bad_images"]["ids"][:20])
        )
    return record


class _Pass:
    """One pass over the test images: every member's fold models loaded once, logits on disk."""

    def __init__(
        self,
        saved: Saved,
        dev: torch.device,
        precision: str,
        batch: int,
        where: Path,
        n: int,
        bad: BadImages,
    ) -> None:
        self.saved, self.dev, self.batch, self.where, self.bad = saved, dev, batch, where, bad
        c = len(saved.classes)
        self.models = {
            m.run: [load_fold_model(m, f, c, dev) for f in range(len(m.weights))]
            for m in saved.members
        }
        self.dtype = {m.run: _dtype(precision, m, dev) for m in saved.members}
        self.norm = {m.run: normalisation(m.mean, m.std, dev) for m in saved.members}
        where.mkdir(parents=True, exist_ok=True)
        self.logits = {
            m.run: np.lib.format.open_memmap(
                where / f"{m.run}.npy", mode="w+", dtype=np.float32, shape=(len(m.views), n, c)
            )
            for m in saved.members
        }

    def discard(self) -> None:
        """Leave no partial logits behind (a failed pass)."""
        for run in list(self.logits):
            del self.logits[run]
            (self.where / f"{run}.npy").unlink(missing_ok=True)

    def stream(
        self, paths: list[Path], start: float, limit: float, clock: Callable[[], float]
    ) -> dict[str, Any]:
        """Decode, forward, write; after ``PROBE_BATCHES`` batches apply the time budget."""
        members = self.saved.members
        active = {(m.run, v) for m in members for v in m.views}
        costs = dict.fromkeys(active, 0.0)
        decode_s, probed, dropped, estimate = 0.0, 0, [], None
        starts = list(range(0, len(paths), self.batch))
        pool = ThreadPoolExecutor(max_workers=4)
        t_pass = clock()
        try:
            pending = self._decode(pool, paths, starts[0]) if starts else None
            bar = tqdm(total=len(paths), desc="predict", unit="img", disable=None, leave=False)
            for i, s in enumerate(starts):
                t0 = clock()
                images = self._results(pending, s)
                if i + 1 < len(starts):  # decode the next batch while this one runs
                    pending = self._decode(pool, paths, starts[i + 1])
                probe = i < PROBE_BATCHES
                decode_s += clock() - t0 if probe else 0.0
                batch = {z: np.stack([im[z] for im in images]) for z in images[0]}
                for m in members:
                    self._forward(m, batch, s, active, costs if probe else None, clock)
                probed += len(images) if probe else 0
                bar.update(len(images))
                if i + 1 == PROBE_BATCHES and i + 1 < len(starts):
                    left = limit - budget.margin_for(limit) - (clock() - start)
                    per = {k: v / probed for k, v in costs.items()}
                    n_left = len(paths) - probed
                    estimate = n_left * (decode_s / probed + sum(per.values()))
                    dropped = self._drops(per, decode_s / probed, n_left, left)
                    active -= {(r, v) for r, v in dropped if v != "*"}
                    active -= {k for r, v in dropped if v == "*" for k in active if k[0] == r}
                    print(_budget_line(estimate, left, dropped), flush=True)
            bar.close()
        finally:
            pool.shutdown(wait=True, cancel_futures=True)
        for a in self.logits.values():
            a.flush()
        seconds = max(clock() - t_pass, 1e-9)
        return {
            "img_per_s": len(paths) / seconds,
            "pass_seconds": round(seconds, 3),
            "time_limit_s": limit,
            "estimate_s": estimate,
            "dropped": [{"run": r, "view": v} for r, v in dropped],
            "members": [m.run for m in members],
            "views": {m.run: list(m.views) for m in members},
        }

    def _drops(self, per, decode, n_left, left) -> list[tuple[str, str]]:
        tta = {m.run: m.views for m in self.saved.members if m.view == "tta"}
        return budget.drops(per, decode, n_left, left, tta, self.saved.weakest_first())

    def _decode(self, pool: ThreadPoolExecutor, paths: list[Path], s: int) -> list:
        """Futures of ``{size: (S, S, 3) uint8}`` per image: decoded once, resized in the
        worker to every member size (only small copies are held, however large the files)."""
        sizes = sorted({m.recipe.image_size for m in self.saved.members})

        def one(path: Path | None) -> dict[int, np.ndarray] | ImageError:
            try:
                img = load_rgb(path) if path is not None else None
            except ImageError as e:
                if not self.bad.fallback:
                    raise
                return e
            if img is None:  # no file: already recorded by predict_stage
                img = np.zeros((1, 1, 3), dtype=np.uint8)
            return {z: resize_square(img, z) for z in sizes}

        return [pool.submit(one, p) for p in paths[s : s + self.batch]]

    def _results(self, pending: list, s: int) -> list[dict[int, np.ndarray]]:
        """The decoded batch starting at test row ``s``; an unreadable image (fallback) is
        recorded and replaced by a black one, whose logits are overwritten after the pass."""
        out = []
        for j, f in enumerate(pending):
            got = f.result()
            if isinstance(got, ImageError):
                self.bad.add(s + j, got.reason)
                sizes = sorted({m.recipe.image_size for m in self.saved.members})
                got = {z: np.zeros((z, z, 3), dtype=np.uint8) for z in sizes}
            out.append(got)
        return out

    @torch.inference_mode()
    def _forward(self, m: Member, batch: dict, s: int, active: set, costs, clock) -> None:
        """The fold mean of each active view's logits for one batch (``batch``: size ->
        ``(B, S, S, 3) uint8``), into ``logits[m.run]``."""
        views = [v for v in m.views if (m.run, v) in active]
        if not views:
            return
        images = batch[m.recipe.image_size]
        x = to_input(torch.from_numpy(images), *self.norm[m.run], self.dev, m.recipe.channels_last)
        dtype = self.dtype[m.run]
        for v in views:
            t0 = clock()
            acc = None
            for model in self.models[m.run]:
                with autocast(self.dev, dtype):
                    out = model(apply_view(v, x)).float().cpu().numpy()
                acc = out if acc is None else acc + out  # as np.mean over folds adds them
            self.logits[m.run][m.views.index(v), s : s + len(images)] = acc / len(
                self.models[m.run]
            )
            if costs is not None:
                costs[(m.run, v)] += clock() - t0


def _dtype(precision: str, m: Member, dev: torch.device) -> torch.dtype | None:
    if precision == "auto":
        return amp_dtype(m.recipe, dev)
    return {"fp32": None, "fp16": torch.float16, "bf16": torch.bfloat16}[precision]


def _budget_line(estimate: float, left: float, dropped: list[tuple[str, str]]) -> str:
    what = ", ".join(f"{r} (whole member)" if v == "*" else f"{r} view {v}" for r, v in dropped)
    head = f"time budget: the rest needs ~{estimate:.0f} s of {left:.0f} s left"
    return f"{head}; dropped {what}" if dropped else f"{head}; nothing dropped"


def blend(
    saved: Saved, logits: dict[str, np.ndarray], dropped: list[dict]
) -> tuple[np.ndarray, str]:
    """``(T, C)`` probabilities of the saved ensemble on the members' view logits, and how.

    Each member's ensemble view: one view's logits, or for "tta" the mean over its views (those
    a time limit kept). With every member present the saved estimator applies (weights,
    stacking, temperatures, thresholds, cut points); without some, the kept members' softmax
    (sigmoid) probabilities are averaged with the estimator's weights, renormalised."""
    gone = {d["run"] for d in dropped if d["view"] == "*"}
    gone_views = {(d["run"], d["view"]) for d in dropped if d["view"] != "*"}
    combine = combine_label_views if saved.task.multilabel else combine_views
    rows = []
    for m in saved.members:
        if m.run in gone:
            continue
        lg = logits[m.run]
        if m.view == "tta":
            keep = [i for i, v in enumerate(m.views) if (m.run, v) not in gone_views]
            rows.append(combine(lg[keep]))
        else:
            rows.append(lg[0])
    stack = np.stack(rows).astype(np.float32)  # (M, T, C), as make ensemble's Members.test
    if not gone:
        return saved.estimator.predict_proba(stack), saved.state["method"]
    keep = [i for i, m in enumerate(saved.members) if m.run not in gone]
    w = np.asarray(saved.estimator.weights_, dtype=np.float64)[keep]
    w = w / w.sum() if w.sum() > 0 else np.full(len(keep), 1.0 / len(keep))
    probs = np.tensordot(w, saved.task.probabilities(stack), axes=1)
    return probs, f"weighted mean of {len(keep)} of {len(saved.members)} members (time limit)"
