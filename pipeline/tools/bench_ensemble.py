"""Ensembler speed on a synthetic stack of member logits the size of a real competition.

``python -m pipeline.tools bench-ensemble`` (defaults: 20 members x 18,353 rows x 176 classes, the
size of Classify Leaves with a large model zoo) times ``fit`` and ``predict_proba`` of every
method once on all rows, as the ensemble stage does before nested CV.
"""

from __future__ import annotations

import os
import time

import numpy as np
import torch

from ..ensemble.methods import METHODS, method_class

TARGETS = {"caruana + weighted": 2.0, "stack": 30.0}  # seconds, from the ensembler issue


def synthetic_members(m: int, n: int, c: int, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """``(M, N, C)`` float32 logits of correlated members of varying skill, and ``y (N,)``."""
    rng = np.random.default_rng(seed)
    y = rng.integers(0, c, n)
    shared = rng.standard_normal((n, c), dtype=np.float32)  # errors the members share
    logits = np.empty((m, n, c), dtype=np.float32)
    for j in range(m):
        logits[j] = 0.6 * shared + rng.standard_normal((n, c), dtype=np.float32)
        logits[j, np.arange(n), y] += 2.0 + 1.5 * j / max(m - 1, 1)
        logits[j] *= 1.0 + j % 3  # different sharpness, so calibration matters
    return logits, y


def bench_ensemble(members: int = 20, rows: int = 18353, classes: int = 176) -> dict[str, float]:
    """Print and return seconds per method for fit and predict, and the two target sums."""
    logits, y = synthetic_members(members, rows, classes)
    print(
        f"{members} members x {rows} rows x {classes} classes ({logits.nbytes / 2**20:.0f} MiB "
        f"float32), torch threads {torch.get_num_threads()}, load {os.getloadavg()[0]:.1f} on "
        f"{os.cpu_count()} cores"
    )
    print(f"  {'method':<10} {'fit s':>7} {'predict s':>10} {'OOF acc':>8}")
    fit_s = {}
    for name in METHODS:
        cls = method_class(name)
        t0 = time.perf_counter()
        est = cls().fit(logits, y)
        t1 = time.perf_counter()
        acc = float((est.predict_proba(logits).argmax(axis=1) == y).mean())
        t2 = time.perf_counter()
        fit_s[name] = t1 - t0
        print(f"  {name:<10} {t1 - t0:>7.2f} {t2 - t1:>10.2f} {acc:>8.4f}")
    sums = {"caruana + weighted": fit_s["caruana"] + fit_s["weighted"], "stack": fit_s["stack"]}
    sums["caruana + weighted + accuracy"] = sums["caruana + weighted"] + fit_s["accuracy"]
    for what, secs in sums.items():
        target, verdict = TARGETS.get(what), ""
        if target is not None:
            verdict = f"  (target <= {target:.0f} s: {'met' if secs <= target else 'MISSED'})"
        print(f"{what}: {secs:.2f} s{verdict}")
    return {**{f"fit_{k}": v for k, v in fit_s.items()}, **sums}
