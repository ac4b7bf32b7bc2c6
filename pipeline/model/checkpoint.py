"""Checkpoints (``best.pt``, ``last.pt``) read only when their bytes are the ones written.

``torch.save`` writes a zip whose members carry CRC-32s, but ``torch.load`` does not check them:
a truncated file fails with a torch internal error and a flipped byte in a tensor loads
silently as a wrong weight. ``read_checkpoint`` reads the file once, checks every member's CRC
(``zipfile.testzip``) and, where ``done.json`` recorded one, the file's sha256, then loads it
from memory. Each failure is one ``ArtifactError`` naming the file and what to delete.
"""

from __future__ import annotations

import hashlib
import io
import zipfile
from pathlib import Path
from typing import Any

import torch

from ..errors import ArtifactError


def checkpoint_bytes(obj: dict) -> tuple[bytes, str]:
    """``torch.save(obj)`` in memory, and the sha256 that ``done.json`` records for it."""
    buf = io.BytesIO()
    torch.save(obj, buf)
    data = buf.getvalue()
    return data, hashlib.sha256(data).hexdigest()


def read_checkpoint(
    path: str | Path, map_location: Any, fix: str, sha256: str | None = None
) -> tuple[dict, str]:
    """The checkpoint at ``path`` and its sha256, after checking its zip CRCs and, when given,
    that its sha256 is ``sha256``; ``fix`` says what to do about a damaged one."""
    path = Path(path)
    try:
        data = path.read_bytes()
    except OSError as e:
        raise ArtifactError(f"{path} cannot be read ({e.strerror}); {fix}") from None
    digest = hashlib.sha256(data).hexdigest()
    if sha256 and digest != sha256:
        raise ArtifactError(
            f"{path} is not the file its fold wrote: its sha256 is {digest[:16]}..., not the "
            f"{sha256[:16]}... recorded in done.json (damaged, or copied from another run); {fix}"
        )
    try:
        bad = zipfile.ZipFile(io.BytesIO(data)).testzip()
    except (zipfile.BadZipFile, ValueError, EOFError, OSError) as e:
        raise ArtifactError(
            f"{path} is damaged (truncated or not a checkpoint: {e}; {len(data):,} bytes); {fix}"
        ) from None
    if bad is not None:
        raise ArtifactError(f"{path} is damaged (CRC-32 mismatch in {bad}); {fix}")
    try:
        obj = torch.load(io.BytesIO(data), map_location=map_location, weights_only=True)
    except Exception as e:  # a valid zip that is not a checkpoint torch can read
        first = (str(e).strip().splitlines() or [type(e).__name__])[0][:160]
        raise ArtifactError(f"{path} is not a readable checkpoint ({first}); {fix}") from None
    return obj, digest
