"""Notebook versions in the ledger: ``make package`` records each version whose output it pulled
and validated; ``make submit KERNEL=<owner>/<notebook>`` without ``VERSION`` submits the newest.

A validated version is a ledger row with status ``validated``, ``kernel`` =
``<owner>/<notebook>/<version>`` and ``file`` = the notebook's own ``submission.csv`` as pulled
into ``submissions/<comp>/<name>/kaggle/v<N>/``.
"""

from __future__ import annotations

import hashlib
from datetime import UTC, datetime
from pathlib import Path

from .. import artifacts
from ..errors import SubmissionError
from ..workspace import Workspace

VALIDATED = "validated"


def record_version(ws: Workspace, name: str, ref: str, path: Path, note: str) -> Path:
    """One ``validated`` ledger row for notebook version ``ref`` (``owner/notebook/N``) whose
    pulled ``submission.csv`` is ``path``; ``note`` says what was checked. The scores are
    ``make ensemble``'s, as in a ``make submit`` row."""
    info = artifacts.read_json(
        ws.submission_dir(name) / "ensemble.json", f"make ensemble NAME={name}"
    )
    row = dict.fromkeys(artifacts.LEDGER_COLUMNS, "")
    row |= {
        "time_utc": datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ"),
        "name": str(info.get("name", name)),
        "method": str(info.get("method", "")),
        "file": str(path),
        "sha256": hashlib.sha256(path.read_bytes()).hexdigest(),
        "status": VALIDATED,
        "message": note,
        "metric": str(info.get("metric", "accuracy")),
        "kernel": ref,
    }
    for col, key in (("oof_accuracy", "oof_accuracy"), ("oof_score", "oof_score")):
        row[col] = _number(info.get(key, info.get("oof_accuracy")))
    row["nested_score"] = _number(info.get("nested_score", info.get("nested_accuracy")))
    return artifacts.append_ledger(ws.ledger, [row[c] for c in artifacts.LEDGER_COLUMNS])


def _number(value: object) -> str:
    return f"{value:.6f}" if isinstance(value, int | float) else ""


def notebook_output(
    ws: Workspace, name: str, kernel: str, version: str, local: Path
) -> tuple[str, Path]:
    """The version to submit and the file to validate: ``version`` or, left out, the newest
    validated version of ``kernel`` in the ledger; its pulled ``submission.csv`` where
    ``make package`` fetched one, else ``local`` (a version run by hand)."""
    if kernel.count("/") != 1:
        raise SubmissionError(
            f"KERNEL={kernel!r}: name the notebook as <owner>/<notebook> (make package prints it)"
        )
    if not version:
        version = newest_validated(ws, name, kernel)
    if not str(version).isdigit():
        raise SubmissionError(f"VERSION={version!r}: a notebook version is a number, e.g. 3")
    pulled = ws.submission_dir(name) / "kaggle" / f"v{version}" / "submission.csv"
    return str(version), pulled if pulled.is_file() else local


def newest_validated(ws: Workspace, name: str, kernel: str) -> str:
    """The highest version of ``kernel`` with a ``validated`` row for ensemble ``name``."""
    versions = []
    if ws.ledger.is_file():
        ledger = artifacts.read_ledger(ws.ledger)
        rows = ledger[(ledger["status"] == VALIDATED) & (ledger["name"] == name)]
        for ref in rows["kernel"]:
            owner_nb, _, n = ref.rpartition("/")
            if owner_nb == kernel and n.isdigit():
                versions.append(int(n))
    if not versions:
        raise SubmissionError(
            f"{ws.ledger}: no validated version of notebook {kernel} for NAME={name}; run "
            f"make package NAME={name} (it pushes, runs and checks the notebook), or give VERSION=<n>"
        )
    return str(max(versions))
