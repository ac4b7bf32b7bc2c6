"""Experiment tracking: TensorBoard event files beside the artifacts (``TRACK=tensorboard``, the
default), MLflow on request (``TRACK=mlflow``, with TensorBoard too), nothing with ``TRACK=none``.

One ``tensorboard --logdir models/<comp>`` shows a whole competition: a fold's epochs are the
TensorBoard run ``<run>/fold<k>`` (event files in the fold folder itself, so every executor's
return carries them), a run's summary and HParams the run ``<run>``, an ensemble the run
``ensembles/<name>``. Steps are epochs (1-based, as in ``metrics.csv``).

Tracking never stops training: events go through TensorBoard's asynchronous writer, and the
first failing write (ENOSPC, say) prints one warning and turns that tracker off. Torch,
TensorBoard and MLflow are imported only when a tracker writes; the MLflow store is
``mlflow_store.py``.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path
from typing import Any

MODES = ("tensorboard", "mlflow", "none")
DEFAULT = "tensorboard"
ENV = "PIPELINE_TRACK"  # the default of --track where it is not given (the test suite: none)
ENSEMBLES = "ensembles"  # models/<comp>/ensembles/<name>/: an ensemble's events
EVENTS_GLOB = "events.out.tfevents.*"


def resolve(value: str | None) -> frozenset[str]:
    """The trackers of ``TRACK``: ``tensorboard``, ``mlflow`` (which keeps TensorBoard too),
    ``tensorboard,mlflow`` or ``none``; unset: ``$PIPELINE_TRACK``, else tensorboard."""
    from ..errors import PipelineError

    raw = value if value is not None else os.environ.get(ENV, DEFAULT)
    names = {s.strip() for s in raw.replace(" ", ",").split(",") if s.strip()}
    if not names or not names <= set(MODES) or ("none" in names and len(names) > 1):
        raise PipelineError(
            f"TRACK={raw!r}: one of tensorboard, mlflow, none (or tensorboard,mlflow)"
        )
    if "none" in names:
        return frozenset()
    if "mlflow" in names:
        names.add("tensorboard")
    return frozenset(names)


_warned: set[str] = set()  # a failing tracker warns once per process


class Board:
    """One TensorBoard run folder, written through ``torch.utils.tensorboard``'s asynchronous
    writer. ``purge_step``: a resumed fold's first new epoch; TensorBoard drops the steps from
    there that a killed call wrote before (``SessionLog.START``), so none is doubled or lost.
    Every method is a no-op once a write failed (one warning) or when ``on`` is False."""

    def __init__(
        self,
        logdir: Path,
        on: bool = True,
        purge_step: int | None = None,
        suffix: str = "",
        replace: bool = False,
    ):
        """``suffix`` names this writer's event files (``events.out.tfevents.*<suffix>``);
        with ``replace``, the earlier files of that suffix go when the first event is written
        (a summary rewritten whole)."""
        self.logdir, self.on, self.purge_step = Path(logdir), on, purge_step
        self.suffix, self.replace = suffix, replace and bool(suffix)
        self._writer: Any = None

    def _w(self):
        if self._writer is None:
            from torch.utils.tensorboard import SummaryWriter

            _quiet_writer_threads()

            if self.replace:
                for old in self.logdir.glob(f"events.out.tfevents.*{self.suffix}"):
                    old.unlink(missing_ok=True)
            self._writer = SummaryWriter(
                str(self.logdir),
                purge_step=self.purge_step,
                flush_secs=30,
                max_queue=50,
                filename_suffix=self.suffix,
            )
        return self._writer

    def _guard(self, fn, *args, **kwargs) -> None:
        if not self.on:
            return
        try:
            fn(*args, **kwargs)
        except Exception as e:  # tracking must never stop training: warn once, then stay off
            self.on = False
            if "tensorboard" not in _warned:
                _warned.add("tensorboard")
                print(
                    f"warning: TensorBoard events in {self.logdir} stopped ({type(e).__name__}: "
                    f"{e}); training goes on, tracking is off where it fails",
                    file=sys.stderr,
                )
            self._close_quietly()

    def scalars(self, values: dict[str, float], step: int) -> None:
        """``{tag: value}`` at ``step``; values that are not finite numbers are skipped."""

        def write():
            w = self._w()
            for tag, v in values.items():
                if v is not None and _finite(v):
                    w.add_scalar(tag, float(v), step)

        self._guard(write)

    def text(self, tag: str, markdown: str, step: int = 0) -> None:
        self._guard(lambda: self._w().add_text(tag, markdown, step))

    def image(self, tag: str, png: Path, step: int = 0) -> None:
        """A PNG file (a report figure) as an image summary."""

        def write():
            import matplotlib.image as mpimg
            import numpy as np

            img = mpimg.imread(str(png))  # (H, W, 3|4) float in [0, 1]
            rgb = (np.clip(img[..., :3], 0, 1) * 255).astype("uint8")
            self._w().add_image(tag, rgb, step, dataformats="HWC")

        self._guard(write)

    def hparams(self, params: dict[str, Any], metrics: dict[str, float]) -> None:
        """The run's HParams session in this run folder itself (no timestamped sub-run):
        ``params`` (str, int, float, bool; others as text) and the names of its metrics, whose
        values are the scalars ``metrics`` written here (the ensemble stage adds more later)."""

        def write():
            from torch.utils.tensorboard.summary import hparams

            clean = {k: _hparam(v) for k, v in params.items()}
            _, ssi, sei = hparams(clean, metrics)
            w = self._w()
            w.file_writer.add_summary(ssi)
            w.file_writer.add_summary(sei)
            for tag, v in metrics.items():
                if _finite(v):
                    w.add_scalar(tag, float(v), 0)

        self._guard(write)

    def flush(self) -> None:
        """Wait until what was written is in the event file (before a checkpoint says so)."""
        if self._writer is not None:
            self._guard(self._writer.flush)

    def experiment(self, params: dict[str, Any], metrics: list[str]) -> None:
        """The HParams experiment of the whole folder tree: the hparams every run's session
        names and the metric tags to show (``hparam/...``), so the dashboard lists those and not
        every scalar of every fold. TensorBoard reads the first experiment it finds: write one,
        at the competition's root."""

        def write():
            from torch.utils.tensorboard.summary import hparams

            exp, _, _ = hparams(
                {k: _hparam(v) for k, v in params.items()}, dict.fromkeys(metrics, 0.0)
            )
            self._w().file_writer.add_summary(exp)

        self._guard(write)

    def close(self) -> None:
        if self._writer is not None:
            self._guard(self._writer.close)
            self._writer = None

    def _close_quietly(self) -> None:
        w, self._writer = self._writer, None
        if w is not None:
            try:
                w.close()
            except Exception:
                pass

    def __enter__(self) -> Board:
        return self

    def __exit__(self, *exc) -> None:
        self.close()


def _quiet_writer_threads() -> None:
    """TensorBoard's writer thread re-raises a failed write (ENOSPC) after storing it, and
    Python would print its traceback; the Board that reads it back warns in one line instead."""
    import threading

    prev = threading.excepthook
    if getattr(prev, "_pipeline_quiet", False):
        return

    def hook(args):
        if type(args.thread).__name__ == "_AsyncWriterThread":
            return
        prev(args)

    hook._pipeline_quiet = True
    threading.excepthook = hook


def _finite(v) -> bool:
    try:
        f = float(v)
    except (TypeError, ValueError):
        return False
    return f == f and f not in (float("inf"), float("-inf"))


def _hparam(v):
    if isinstance(v, bool | int | float | str):
        return v
    if v is None:
        return ""
    return str(list(v)) if isinstance(v, tuple | list) else str(v)


# ---------------------------------------------------------------- make board


def serve_tensorboard(logdir: Path, port: int) -> None:
    """``tensorboard --logdir <models>/<comp>`` on 127.0.0.1:``port``, its URL printed first;
    one line when nothing was tracked there yet."""
    from ..errors import PipelineError

    if not any(Path(logdir).rglob(EVENTS_GLOB)):
        raise PipelineError(
            f"no TensorBoard events under {logdir}: make train (and make ensemble) write them "
            "unless TRACK=none"
        )
    serve("TensorBoard", "tensorboard", ["--logdir", str(logdir)], port, f"logdir {logdir}")


def serve(what: str, exe: str, args: list[str], port: int, about: str) -> None:
    """Run the venv's ``exe`` with ``args`` on 127.0.0.1:``port`` until Ctrl+C, its URL first."""
    import shutil
    import subprocess

    path = shutil.which(exe, path=str(Path(sys.executable).parent)) or exe
    print(f"{what} on http://127.0.0.1:{port}/ ({about}); Ctrl+C stops it", flush=True)
    try:
        subprocess.run([path, *args, "--host", "127.0.0.1", "--port", str(port)], check=False)
    except KeyboardInterrupt:
        pass
