"""Ensembler speed and memory on a synthetic stack of member logits the size of a real
competition.

``python -m pipeline.tools bench-ensemble`` (defaults: 20 members x 18,353 rows x 176 classes, the
size of Classify Leaves with a large model zoo) times ``fit`` and ``predict_proba`` of every
method once on all rows, as the ensemble stage does before nested CV, and reads each method's
peak resident memory (Linux: ``VmHWM``, reset before each method through ``clear_refs``).
``--members 50 --rows 50000 --classes 200`` is the scale target of the ensembler issue: every
method's fit + predict at most 30 s, stack at most 60 s, peak at most 8 GiB. ``--float16`` keeps
the logits as the ensemble stage does at that size (``ensemble.members.STORE_FLOAT16_ABOVE``).
"""

from __future__ import annotations

import os
import time
from pathlib import Path

import numpy as np
import torch

from ..ensemble.methods import METHODS, method_class

TARGETS = {"caruana + weighted": 2.0, "stack": 30.0}  # seconds at the default size
SCALE_TARGETS = {"method": 30.0, "stack": 60.0, "peak_gib": 8.0}  # at 50 x 50,000 x 200


def synthetic_members(m: int, n: int, c: int, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """``(M, N, C)`` float32 logits of correlated members of varying skill, and ``y (N,)``."""
    rng = np.random.default_rng(seed)
    y = rng.integers(0, c, n)
    shared = rng.standard_normal((n, c), dtype=np.float32)  # errors the members share
    logits = np.empty((m, n, c), dtype=np.float32)
    for j in range(m):
        logits[j] = _member(rng, shared, y, j, m)
    return logits, y


def _member(rng, shared: np.ndarray, y: np.ndarray, j: int, m: int) -> np.ndarray:
    """Member ``j`` of ``m``: the shared errors plus its own, a signal on the true class that
    grows with ``j``, and a sharpness of 1-3 (so calibration matters)."""
    z = 0.6 * shared + rng.standard_normal(shared.shape, dtype=np.float32)
    z[np.arange(len(y)), y] += 2.0 + 1.5 * j / max(m - 1, 1)
    z *= 1.0 + j % 3
    return z


def _status(key: str) -> float | None:
    """``VmHWM``/``VmRSS`` of this process in GiB (Linux), else None."""
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith(key + ":"):
                return int(line.split()[1]) / 2**20
    except OSError:
        pass
    return None


def _reset_peak() -> None:
    """Start a new peak-RSS window (Linux: writing 5 to ``clear_refs`` resets ``VmHWM``)."""
    try:
        Path("/proc/self/clear_refs").write_text("5")
    except OSError:
        pass


def bench_ensemble(
    members: int = 20, rows: int = 18353, classes: int = 176, float16: bool = False
) -> dict[str, float]:
    """Print and return seconds per method for fit and predict, peak memory, and the sums."""
    logits, y = synthetic_members(members, rows, classes)
    if float16:
        logits = logits.astype(np.float16)
    print(
        f"{members} members x {rows} rows x {classes} classes ({logits.nbytes / 2**20:.0f} MiB "
        f"{logits.dtype}), torch threads {torch.get_num_threads()}, load "
        f"{os.getloadavg()[0]:.1f} on {os.cpu_count()} cores; resident before the methods "
        f"{_status('VmRSS') or float('nan'):.2f} GiB"
    )
    print(f"  {'method':<10} {'fit s':>7} {'predict s':>10} {'peak GiB':>9} {'OOF acc':>8}")
    out: dict[str, float] = {}
    for name in METHODS:
        _reset_peak()
        t0 = time.perf_counter()
        est = method_class(name)().fit(logits, y)
        t1 = time.perf_counter()
        acc = float((est.predict_proba(logits).argmax(axis=1) == y).mean())
        t2 = time.perf_counter()
        peak = _status("VmHWM")
        out[f"fit_{name}"], out[f"predict_{name}"] = t1 - t0, t2 - t1
        out[f"peak_{name}"] = peak if peak is not None else float("nan")
        print(
            f"  {name:<10} {t1 - t0:>7.2f} {t2 - t1:>10.2f} {out[f'peak_{name}']:>9.2f} {acc:>8.4f}"
        )
    sums = {
        "caruana + weighted": out["fit_caruana"] + out["fit_weighted"],
        "stack": out["fit_stack"],
    }
    sums["caruana + weighted + accuracy"] = sums["caruana + weighted"] + out["fit_accuracy"]
    default_size = (members, rows, classes) == (20, 18353, 176)  # the size TARGETS are for
    for what, secs in sums.items():
        target, verdict = TARGETS.get(what), ""
        if target is not None and default_size:
            verdict = f"  (target <= {target:.0f} s: {'met' if secs <= target else 'MISSED'})"
        print(f"{what}: {secs:.2f} s{verdict}")
    both = {n: out[f"fit_{n}"] + out[f"predict_{n}"] for n in METHODS}
    slowest = max((n for n in METHODS if n != "stack"), key=both.get)
    peak = max(out[f"peak_{n}"] for n in METHODS)
    print(
        f"slowest fit + predict: {slowest} {both[slowest]:.1f} s (scale target <= "
        f"{SCALE_TARGETS['method']:.0f} s), stack {both['stack']:.1f} s (<= "
        f"{SCALE_TARGETS['stack']:.0f} s); peak resident memory {peak:.2f} GiB (<= "
        f"{SCALE_TARGETS['peak_gib']:.0f} GiB)"
    )
    return {**out, **sums, "peak_gib": peak}


def bench_whole(
    work: Path,
    members: int = 50,
    rows: int = 50000,
    classes: int = 200,
    test_rows: int = 10000,
    k: int = 5,
) -> dict[str, float]:
    """The real ``make ensemble`` (nested CV of every method, submission, report) on member
    folders of the size given: a competition of ``rows`` train and ``test_rows`` test ids in the
    Classify Leaves layout (empty image files: the ensemble stage opens none), its folds file,
    and ``members`` runs of synthetic OOF and test logits, written under ``work``. Prints and
    returns the stage's wall time and peak resident memory (targets: 15 min, 8 GiB)."""
    from ..ensemble import ensemble_stage
    from ..report import report_stage
    from ..workspace import Workspace

    rng = np.random.default_rng(0)
    comp = _bench_competition(Path(work) / "input" / "bench", rows, test_rows, classes, rng)
    ws = Workspace("bench", models=Path(work) / "models", output=Path(work))
    t0 = time.perf_counter()
    _bench_members(comp, ws, members, k, rng)
    print(f"wrote {members} member folders under {ws.runs_dir} in {time.perf_counter() - t0:.0f} s")
    _reset_peak()
    t0 = time.perf_counter()
    summary = ensemble_stage(comp, ws, [])
    t1 = time.perf_counter()
    report_stage(comp, ws, name="ensemble")
    t2 = time.perf_counter()
    peak = _status("VmHWM") or float("nan")
    print(
        f"make ensemble on {members} members x {rows} rows x {classes} classes ({test_rows} test "
        f"rows): ensemble stage {t1 - t0:.0f} s + report {t2 - t1:.0f} s = "
        f"{(t2 - t0) / 60:.1f} min (target <= 15 min), peak resident memory {peak:.2f} GiB "
        f"(<= 8 GiB); chosen {summary['method']}"
    )
    return {"ensemble_s": t1 - t0, "report_s": t2 - t1, "peak_gib": peak}


def _bench_competition(root: Path, rows: int, test_rows: int, classes: int, rng):
    """A Classify Leaves layout of random labels and empty image files (the loader wants each
    file; the ensemble stage reads none), loaded as a ``Competition``."""
    import pandas as pd

    from ..competition.load import load_competition

    (root / "images").mkdir(parents=True, exist_ok=True)
    names = [f"class_{c:03d}" for c in range(classes)]
    train_ids = [f"images/{i}.jpg" for i in range(rows)]
    test_ids = [f"images/{rows + i}.jpg" for i in range(test_rows)]
    labels = [names[c] for c in rng.integers(0, classes, rows)]
    pd.DataFrame({"image": train_ids, "label": labels}).to_csv(root / "train.csv", index=False)
    pd.DataFrame({"image": test_ids}).to_csv(root / "test.csv", index=False)
    sample = pd.DataFrame({"image": test_ids, "label": names[0]})
    sample.to_csv(root / "sample_submission.csv", index=False)
    for i in [*train_ids, *test_ids]:
        (root / i).touch()
    return load_competition(root)


def _bench_members(comp, ws, members: int, k: int, rng) -> None:
    """The folds file (stratified, K=``k``) and ``members`` runs' ``oof.npz``/``test.npz``,
    generated one member at a time as ``synthetic_members`` does."""
    from .. import artifacts

    y = np.array([comp.classes.index(label) for label in comp.train["label"]])
    y_test = rng.integers(0, len(comp.classes), len(comp.test))
    fold = np.empty(len(y), dtype=np.int64)
    for c in range(len(comp.classes)):  # each class dealt round the folds in random order
        at = rng.permutation(np.flatnonzero(y == c))
        fold[at] = np.arange(len(at)) % k
    folds = comp.train[["id", "label"]].assign(fold=fold)
    fhash = artifacts.file_hash(artifacts.write_folds(ws.folds_csv, folds))
    common = {"classes": comp.classes, "views": ["none"], "folds_hash": np.array(fhash)}
    splits = [
        ("oof", comp.train["id"], y, {"fold": fold}),
        ("test", comp.test["id"], y_test, {}),
    ]
    shared = {
        s: rng.standard_normal((len(ys), len(comp.classes)), np.float32) for s, _, ys, _ in splits
    }
    for j in range(members):
        for split, ids, labels, extra in splits:
            z = _member(rng, shared[split], labels, j, members)
            path = ws.run_dir(f"m{j:02d}") / f"{split}.npz"
            artifacts.write_logits(path, ids=ids, logits=z[None], **extra, **common)
