"""The submit stage: validate ``submission.csv``, send it with the Kaggle CLI, log the ledger.

Each send or dry run appends a row to ``submissions/<comp>/ledger.csv``.
"""

from __future__ import annotations

import hashlib
import secrets
import shlex
from datetime import UTC, datetime
from pathlib import Path

from .. import artifacts
from ..competition import Competition
from ..competition.submission import validate_for
from ..errors import ArtifactError, SubmissionError
from ..workspace import Workspace
from .kaggle import has_kaggle_credentials, kaggle_command, kaggle_exe, send
from .kernels import notebook_output


def submit_stage(
    comp: Competition,
    ws: Workspace,
    name: str = "ensemble",
    dry_run: bool = False,
    kernel: str = "",
    version: str = "",
) -> int:
    """Validate ``submissions/<comp>/<name>/submission.csv``, then send it (or show the command);
    log the ledger. A code competition submits the output of notebook ``kernel``
    (``owner/slug``, from ``make package``) at ``version`` (left out: the newest version
    ``make package`` validated) instead of the file, checking the notebook's pulled
    ``submission.csv`` where there is one. The message
    carries a tag (``[pl-<8 hex>]``) by which ``make lb`` finds the row's scores. Returns the
    exit status."""
    if version and not kernel:
        raise SubmissionError(
            "VERSION=<n> needs KERNEL=<owner>/<notebook>: the notebook whose version n's "
            "submission.csv is sent (make package prints it)"
        )
    sub_dir, ledger = ws.submission_dir(name), ws.ledger
    path = sub_dir / "submission.csv"
    if kernel:  # a code competition: the notebook's own output, where make package pulled it
        version, path = notebook_output(ws, name, kernel, version, path)
    ref = f"{kernel}/{version}" if kernel else ""
    info = _read_ensemble(sub_dir / "ensemble.json", f"make ensemble COMP={comp.root} NAME={name}")
    sub = validate_for(comp, path)
    metric = info.get("metric", "accuracy")
    oof = info.get("oof_score", info["oof_accuracy"])
    # the honest score; OOF is in-sample for fitted methods
    nested = info.get("nested_score", info.get("nested_accuracy"))
    honest = f" nested={nested:.4f}" if isinstance(nested, int | float) else ""
    named = "" if metric == "accuracy" else f" {metric}"
    stamp = datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
    tag = f"pl-{secrets.token_hex(4)}"  # unique per submit, even of the same file
    message = f"{info['name']} {info['method']}{named} OOF={oof:.4f}{honest} [{tag}]"
    used = (
        f"{sub[comp.target_col].nunique()} of {len(comp.classes)} classes used"
        if comp.task.format == "label"
        else f"{comp.task.format.replace('_', ' ')}"
    )
    tail = f", nested CV {nested:.4f}" if honest else ""
    print(f"{path}: valid - {len(sub)} rows, {used}, OOF {metric} {oof:.4f}{tail}")
    if dry_run:
        exe = kaggle_exe(dry_run=True)  # shows the command even where the CLI is missing
        cmd = kaggle_command(comp.slug, path, message, exe, kernel, version)
        print("DRY_RUN: would run: " + shlex.join(cmd))
        _append_ledger(ledger, info, path, "dry-run", message, stamp, tag, ref)
        return 0
    _refuse_superseded(ws, name)
    if not has_kaggle_credentials():
        raise SubmissionError(
            "no Kaggle credentials: no KAGGLE_API_TOKEN, KAGGLE_USERNAME+KAGGLE_KEY, "
            "~/.kaggle/access_token or kaggle.json found; create a token (Kaggle → Settings → "
            "Create New Token) and save it as ~/.kaggle/kaggle.json with chmod 600, or check "
            f"the file without sending using DRY_RUN=1 (the file is at {path})"
        )
    print(send(kaggle_command(comp.slug, path, message, kernel=kernel, version=version)))
    _append_ledger(ledger, info, path, "submitted", message, stamp, tag, ref)
    return 0


def _refuse_superseded(ws: Workspace, name: str) -> None:
    """Sending ``name`` again is refused when it was sent already and ``make ensemble`` has
    since kept it and written a newer folder of its series (``name.2``, ...): the headline
    ``make ... ensemble submit`` would otherwise re-send the old file."""
    when = artifacts.sent_to_kaggle(ws.ledger, name)
    base, _, n = name.rpartition(".")
    base = base if n.isdigit() and base else name
    newer = artifacts.series(ws.submissions_dir, base)
    newer = newer[newer.index(name) + 1 :] if name in newer else []
    if when and newer:
        raise SubmissionError(
            f"{ws.submission_dir(name)} was sent to Kaggle at {when} and make ensemble has since "
            f"written {ws.submission_dir(newer[-1])} beside it; send that one: make submit "
            f"NAME={newer[-1]}"
        )


def _read_ensemble(path: Path, rerun: str) -> dict:
    """ensemble.json with ``name``, ``method`` and a numeric ``oof_accuracy``."""
    info = artifacts.read_json(path, rerun)
    try:
        oof = float(info["oof_accuracy"])
        return {**info, "name": info["name"], "method": info["method"], "oof_accuracy": oof}
    except (TypeError, ValueError, KeyError):
        need = "keys name, method and a numeric oof_accuracy"
        raise ArtifactError(f"{path} needs {need}; re-run: {rerun}") from None


def _append_ledger(
    path: Path,
    info: dict,
    sub_path: Path,
    status: str,
    message: str,
    stamp: str,
    tag: str,
    kernel: str = "",
) -> Path:
    """Add one row (time, name, method, OOF, file, its sha256, status, message, metric, scores,
    tag; the leaderboard scores empty until make lb; the notebook version) to the ledger."""
    oof, sha = f"{info['oof_accuracy']:.6f}", hashlib.sha256(sub_path.read_bytes()).hexdigest()
    row = [stamp, str(info["name"]), str(info["method"]), oof, str(sub_path), sha, status, message]
    nested = info.get("nested_score", info.get("nested_accuracy"))
    row += [
        str(info.get("metric", "accuracy")),
        f"{info.get('oof_score', info['oof_accuracy']):.6f}",
        f"{nested:.6f}" if isinstance(nested, int | float) else "",
        tag,
        "",
        "",
        kernel,
    ]
    return artifacts.append_ledger(path, row)
