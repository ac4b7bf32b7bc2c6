"""Durations as a user writes them, one parser for every one: ``BUDGET``, ``TIME_LIMIT`` and
any later duration. ``90s``, ``20m``, ``1.5h`` and ``1h30m`` are understood; a bare number is
refused (``BUDGET=30`` meant minutes and ``TIME_LIMIT=30`` seconds before they shared this)."""

from __future__ import annotations

import re

from ..errors import PipelineError

UNITS = {"h": 3600.0, "m": 60.0, "s": 1.0}
_PART = re.compile(r"(\d+(?:\.\d+)?)([hms])")


def parse_duration(text: str | float, name: str) -> float:
    """Seconds in ``text``; ``name`` is the variable it came from (``BUDGET``), for the one
    line that refuses anything else. Units run from hours to seconds, each at most once."""
    s = str(text).strip().lower().replace(" ", "")
    parts = _PART.findall(s)
    units = [u for _, u in parts]
    ordered = units == sorted(set(units), key="hms".index)
    if not parts or "".join(n + u for n, u in parts) != s or not ordered:
        raise PipelineError(
            f"{name}={text!r}: a duration needs its unit: e.g. 90s, 20m, 1.5h or 1h30m"
        )
    seconds = sum(float(n) * UNITS[u] for n, u in parts)
    if seconds <= 0:
        raise PipelineError(f"{name}={text!r}: a duration must be more than 0 seconds")
    return seconds


def format_duration(seconds: float) -> str:
    """A duration as ``BUDGET=`` would be written: ``20m`` for whole minutes, else ``100s``."""
    if seconds >= 60 and float(seconds) % 60 == 0:
        return f"{seconds / 60:g}m"
    return f"{seconds:g}s"
