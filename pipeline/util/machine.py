"""What this machine offers the stages: the CPU cores this process may use."""

from __future__ import annotations

import os


def cores() -> int:
    """The cores this process may run on: its CPU affinity on Linux (a container or ``taskset``
    may allow fewer than the machine has), the machine's count where there is no affinity call
    (macOS, Windows)."""
    if hasattr(os, "sched_getaffinity"):
        return len(os.sched_getaffinity(0))
    return os.cpu_count() or 1
