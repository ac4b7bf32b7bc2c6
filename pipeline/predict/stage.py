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

import io
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from .. import artifacts
from ..competition.submission import validate_for, write_submission
from ..competition.testset import load_test_folder
from ..ensemble.members import combine_label_views, combine_views
from ..ensemble.prior import apply_prior, describe, top_movers
from ..errors import PipelineError
from ..model.device import resolve_device
from ..util.durations import parse_duration
from ..workspace import Workspace
from . import budget
from .bad_images import DEFAULT_MAX_BAD, BadImages
from .saved import Saved, load_saved
from .stream import Pass

FORBIDDEN = ("albumentations", "cleanlab", "imagehash", "kaggle")  # not on a Kaggle GPU image
PRECISIONS = ("auto", "fp32", "fp16", "bf16")


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
    bad = BadImages(on_bad_image, max_bad, [])
    comp, paths = _test_folder(test, saved, bad)
    dev = resolve_device(device)
    out = Path(to) if to else ws.predict_dir(name) / "submission.csv"
    logits_dir = out.parent / "logits"
    plan = ", ".join(f"{m.run} {_models(m)} {'+'.join(m.views)}" for m in saved.members)
    print(f"predict: {len(paths)} images of {comp.sample_path}; {plan}; {dev}, {precision}")
    run = Pass(saved, dev, precision, batch_size, logits_dir, len(paths), bad)
    try:
        record = run.stream(paths, start, limit, clock)
        probs, how = blend(saved, run.logits, record["dropped"])
    except BaseException:
        run.discard()
        raise
    probs = _with_prior(saved, np.array(probs, dtype=np.float64), record)
    pred = probs.argmax(axis=1)
    fallback = bad.fill(probs, pred, saved.task.format, saved.task.multilabel)
    buf = io.BytesIO()  # (T, C), for checks
    np.save(buf, np.asarray(probs, dtype=np.float32))
    artifacts.atomic_write_bytes(logits_dir / "probs.npy", buf.getvalue())
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


def _test_folder(test: Path, saved: Saved, bad: BadImages):
    """The test folder's competition and each test image's path (None: no usable file, the
    notebook's fallback recorded in ``bad``; refused in one line otherwise)."""
    st = saved.state
    comp = load_test_folder(
        test,
        st["comp"],
        saved.classes,
        saved.task,
        st["id_col"],
        st["target_col"],
        st.get("class_columns"),
        bad_ok=bad.fallback,
    )
    bad.ids = comp.test["id"].astype(str).tolist()
    paths = [comp.root / p if isinstance(p, str) else None for p in comp.test["path"]]
    for row in (n for n, p in enumerate(paths) if p is None):  # its line is in comp.problems
        bad.add(row, next(p for p in comp.problems if f"row {row + 2}:" in p))
    return comp, paths


def _with_prior(saved: Saved, probs: np.ndarray, record: dict) -> np.ndarray:
    """``probs`` under the ensemble's saved label-shift state (calibration, estimator and
    ``PRIOR=auto``'s check), re-estimated on these test images: make ensemble's rule, so both
    decide alike; ensembles saved before it are left as they were, said in one line."""
    state = saved.state.get("label_shift")
    if saved.state.get("train_prior") is None:
        return probs
    if state is None:
        print(
            "label shift: not estimated (ensemble saved before the calibrated check; re-run make ensemble)"
        )
        return probs
    probs, record["label_shift"] = apply_prior(state, saved.task, probs)
    record["label_shift"]["top_movers"] = top_movers(record["label_shift"], saved.classes)
    print(describe(record["label_shift"], saved.classes))
    return probs


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


def _models(m) -> str:
    """``x5 folds``, or ``all rows`` for a member whose model on all rows predicts."""
    return "all rows" if m.weights[0].parent.name == "full" else f"x{len(m.weights)} folds"
