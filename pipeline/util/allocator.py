"""glibc's allocator told to keep large blocks in the heap: CPU inference and training of
convolutional nets on batches of images run up to 3x faster.

By default glibc serves every allocation above 128 KiB-32 MiB with its own ``mmap`` and gives it
back with ``munmap`` when freed. A forward pass of a batch allocates and frees activation tensors
of tens of MB dozens of times, so each one is mapped, zero-filled page by page through page faults,
and unmapped again: half the CPU time goes to the kernel. Measured here (2-core CPU,
``efficientnet_lite2`` at 160 px, batch 128, inference): 34 img/s with 14 million minor page
faults and 30 s of system time, against 112 img/s, 0.5 million and 1 s with the thresholds below
(``docs/performance.md``, Memory allocator). A real ``make train BUDGET=20m`` on ``cifar10``
spent 858 s of system time next to 892 s of user time before this.

``tune()`` raises the mmap threshold to ``MMAP_THRESHOLD`` (blocks below it come from the
heap and are reused) and the trim threshold, so freed heap memory is kept for the next batch
rather than returned to the system. Arrays above the threshold (an ensemble's member logits)
are still mapped and returned. It runs once per process when ``pipeline`` is imported (so in
every spawned ``JOBS`` worker, Ray task and the Kaggle notebook too), on Linux with glibc only;
``PIPELINE_MALLOC=0`` leaves the allocator alone.
"""

from __future__ import annotations

import ctypes
import os
import sys

M_TRIM_THRESHOLD, M_MMAP_THRESHOLD = -1, -3  # mallopt parameters, from glibc's malloc.h
MMAP_THRESHOLD = 2**30  # above the activations of a CPU batch (lite2 160 px x 128: 629 MB)
TRIM_THRESHOLD = 2**31 - 1

TUNED = False


def tune() -> bool:
    """Set the thresholds (once); True when glibc took them."""
    global TUNED
    if TUNED or os.environ.get("PIPELINE_MALLOC") == "0" or not sys.platform.startswith("linux"):
        return TUNED
    try:
        mallopt = ctypes.CDLL("libc.so.6").mallopt
    except (OSError, AttributeError):  # not glibc (musl, a static build): leave it
        return False
    mallopt.argtypes, mallopt.restype = [ctypes.c_int, ctypes.c_int], ctypes.c_int
    TUNED = mallopt(M_MMAP_THRESHOLD, MMAP_THRESHOLD) == 1
    TUNED = mallopt(M_TRIM_THRESHOLD, TRIM_THRESHOLD) == 1 and TUNED
    return TUNED
