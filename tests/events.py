"""TensorBoard event files read back with TensorBoard's own reader, for the tracking tests."""

from __future__ import annotations

from pathlib import Path

import pandas as pd
import pytest

# written out here, not imported from pipeline.train.fold.EPOCH_TAGS: the test's own oracle
EPOCH_COLUMNS = {
    "train_loss": "train/loss",
    "train_acc": "train/accuracy",
    "val_loss": "val/loss",
    "val_acc": "val/accuracy",
    "lr": "lr",
    "img_per_s": "img_per_s",
}


def scalars(logdir: Path) -> dict[str, list[tuple[int, float]]]:
    """``{tag: [(step, value), ...]}`` of the run folder ``logdir`` as TensorBoard shows it
    (``EventAccumulator``: steps a resumed writer purged are gone)."""
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    ea = EventAccumulator(str(logdir), size_guidance={"scalars": 0, "tensors": 0})
    ea.Reload()
    return {t: [(e.step, e.value) for e in ea.Scalars(t)] for t in ea.Tags()["scalars"]}


def assert_epochs_match_metrics(fdir: Path, metric: str = "accuracy") -> None:
    """Every epoch of the fold's ``metrics.csv`` is in its events once, value for value, and
    no other step is."""
    got = scalars(fdir)
    m = pd.read_csv(fdir / "metrics.csv")
    steps = m["epoch"].tolist()
    cols = {**EPOCH_COLUMNS, "val_score": f"val/{metric}"}
    for col, tag in cols.items():
        if col not in m:
            continue
        assert [s for s, _ in got[tag]] == steps, (fdir, tag, got[tag])  # none missing or doubled
        assert [v for _, v in got[tag]] == pytest.approx(m[col].tolist(), rel=1e-6), (fdir, tag)
