"""Validate ``submission.csv`` against the sample submission, then send it with the Kaggle CLI.

Every failure is one ``SubmissionError`` line naming the file, the row or value, and the fix.
Secrets (``KAGGLE_KEY``, ``KAGGLE_API_TOKEN``, anything shaped like a 32-hex key) never reach a
message. Each send or dry run appends a row to ``submissions/<comp>/ledger.csv``.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import shlex
import shutil
import subprocess
import sys
from collections.abc import Mapping
from datetime import UTC, datetime
from pathlib import Path

import pandas as pd

from .artifacts import read_json, write_csv
from .competition import Competition, read_csv
from .errors import ArtifactError, CompetitionError, SubmissionError

LEDGER_COLUMNS = "time_utc name method oof_accuracy file sha256 status message".split()
REWRITE = "re-run the ensemble stage (make ensemble) to rewrite it"
AUTH_FIX = (
    "check ~/.kaggle/kaggle.json (Kaggle → Settings → Create New Token) "
    "and that you accepted the competition rules"
)
NET_FIX = (
    "no network connection to kaggle.com; submit from a machine with internet (the file is at {})"
)
SLUG_FIX = "check the competition slug (slug = ... in the competition's competition.toml)"
AUTH_RE = re.compile(
    r"(?i)authenticat|credential|unauthori[sz]ed|forbidden|\b40[13]\b|kaggle\.json"
)
NET_RE = re.compile(r"connection|resolve|timed? ?out|max retries|unreachable|name or service", re.I)
SLUG_RE = re.compile(r"\b404\b|could not find competition", re.I)
EXC_RE = re.compile(r"^[\w.]*(Error|Exception)\b[^:]*:")
HEX_KEY_RE = re.compile(r"\b[0-9a-fA-F]{32}\b|\bKGAT_\w+")


# ---------------------------------------------------------------- validation
def validate_submission(
    sub_path: Path, sample_path: Path, classes: list[str], id_col: str, target_col: str
) -> pd.DataFrame:
    """Check ``sub_path`` against ``sample_path`` and the train classes; return it parsed."""
    sub_path, sample_path = Path(sub_path), Path(sample_path)
    sub = _read_submission(sub_path)
    sample = read_csv(sample_path)
    sname, want, got = sample_path.name, list(sample.columns), list(sub.columns)
    if got != want:
        missing, extra = [c for c in want if c not in got], [c for c in got if c not in want]
        what = f"missing [{', '.join(missing)}], extra [{', '.join(extra)}]"
        what = what if missing or extra else "same names, wrong order"
        raise SubmissionError(
            f"{sub_path}: columns differ from {sname} ({what}): expected [{', '.join(want)}], "
            f"found [{', '.join(got)}]; write the header exactly as: {','.join(want)}"
        )
    if len(sub) != len(sample) or len(sub) == 0:
        what = "a header but no rows" if len(sub) == 0 else f"{len(sub)} rows"
        raise SubmissionError(
            f"{sub_path} has {what}; {sname} has {len(sample)} rows; "
            f"write exactly one row per id of {sname} ({REWRITE})"
        )
    _check_ids(sub_path, sname, sub[id_col].tolist(), sample[id_col].tolist())
    _check_labels(sub_path, sub, classes, id_col, target_col)
    return sub


def _read_submission(path: Path) -> pd.DataFrame:
    if not path.is_file():
        raise SubmissionError(f"{path} not found; {REWRITE}, or pass the right submission folder")
    if not path.read_bytes().removeprefix(b"\xef\xbb\xbf").strip():
        raise SubmissionError(f"{path} is empty (no header, no rows); {REWRITE}")
    try:
        return read_csv(path)
    except CompetitionError as e:
        raise SubmissionError(f"{' '.join(str(e).split())}; {REWRITE}") from None


def _check_ids(path: Path, sname: str, ids: list[str], sample_ids: list[str]) -> None:
    """Empty, duplicate and unknown ids (first offending row), then the sample's order."""
    known, first_row = set(sample_ids), {}
    for row, value in enumerate(ids, start=2):
        if value == "":
            problem, fix = "empty id", f"every row needs an id from {sname}"
        elif value in first_row:
            problem = f"duplicate id {value!r} (first at row {first_row[value]})"
            fix = "each id must appear exactly once"
        elif value not in known:
            problem = f"id {value!r} is not in {sname}"
            fix = f"use the ids of {sname} unchanged (same spelling, leading zeros, extension)"
        else:
            first_row[value] = row
            continue
        raise SubmissionError(f"{path} row {row}: {problem}; {fix}")
    for row, (value, expected) in enumerate(zip(ids, sample_ids, strict=True), start=2):
        if value != expected:
            raise SubmissionError(
                f"{path} row {row}: ids are in a different order from {sname}: expected "
                f"{expected!r}, found {value!r}; write the rows in {sname} order"
            )


def _check_labels(path: Path, sub: pd.DataFrame, classes: list[str], id_col: str, col: str) -> None:
    labels, valid = sub[col].tolist(), set(classes)
    bad = [i for i, v in enumerate(labels) if v not in valid]
    empty = [i for i in bad if labels[i] == ""]
    if empty:
        raise SubmissionError(
            f"{path} row {empty[0] + 2}: empty {col!r} for id {sub[id_col].iloc[empty[0]]!r} "
            f"({len(empty)} such rows); every row needs a predicted class"
        )
    if not bad:
        return
    shown = ", ".join(repr(c) for c in classes[:5]) + (", ..." if len(classes) > 5 else "")
    index_like = all(labels[i].isdigit() for i in bad) and not all(c.isdigit() for c in classes)
    fix = "write one of the train labels exactly"
    if index_like:
        fix = "it looks like a class index: map index k to classes[k] (the sorted train labels)"
    raise SubmissionError(
        f"{path} row {bad[0] + 2}: label {labels[bad[0]]!r} is not a train class "
        f"({len(bad)} such rows; valid: {shown} - {len(classes)} in all); {fix}"
    )


# ---------------------------------------------------------------- credentials
def has_kaggle_credentials(env: Mapping[str, str] | None = None, home: Path | None = None) -> bool:
    """True where the kaggle 2.2.4 CLI would find credentials, without contacting Kaggle.

    Mirrors ``KaggleApi.authenticate``: the ``KAGGLE_API_V1_TOKEN`` file in a Kaggle notebook;
    ``KAGGLE_API_TOKEN`` (a token or a path to one); ``~/.kaggle/access_token[.txt]``;
    username+key from ``KAGGLE_USERNAME``/``KAGGLE_KEY`` merged over ``kaggle.json`` in the config
    folder (``$KAGGLE_CONFIG_DIR``, else ``~/.kaggle`` if it exists, else
    ``$XDG_CONFIG_HOME/kaggle`` or ``~/.config/kaggle``); an OAuth login cached in
    ``~/.kaggle/credentials.json`` (``kaggle auth login``).
    """
    env = os.environ if env is None else env
    home = Path(home) if home is not None else Path(env.get("HOME") or Path.home())
    notebook = "KAGGLE_KERNEL_RUN_TYPE" in env and env.get("KAGGLE_DATA_PROXY_URL")
    if notebook and _file_text(Path(env.get("KAGGLE_API_V1_TOKEN") or "-")):
        return True
    token = env.get("KAGGLE_API_TOKEN", "")
    if token and _file_text(Path(token)) != "":  # a token, or a path to a non-empty token file
        return True
    if any(_file_text(home / ".kaggle" / n) for n in ("access_token", "access_token.txt")):
        return True
    if env.get("KAGGLE_CONFIG_DIR"):
        config_dir = Path(env["KAGGLE_CONFIG_DIR"])
    elif (home / ".kaggle").exists():
        config_dir = home / ".kaggle"
    else:
        config_dir = Path(env.get("XDG_CONFIG_HOME") or home / ".config") / "kaggle"
    config = _json_file(config_dir / "kaggle.json")
    user = env.get("KAGGLE_USERNAME") or config.get("username")
    if user and (env.get("KAGGLE_KEY") or config.get("key")):
        return True
    return bool(_json_file(home / ".kaggle" / "credentials.json").get("refresh_token"))


def _file_text(path: Path) -> str | None:
    """The stripped text of a file; None where it is not a readable file."""
    try:
        return path.read_text("utf-8", "replace").strip() if path.is_file() else None
    except OSError:
        return None


def _json_file(path: Path) -> dict:
    try:
        data = json.loads(_file_text(path) or "{}")
    except ValueError:
        return {}
    return data if isinstance(data, dict) else {}


# ---------------------------------------------------------------- sending
def kaggle_command(slug: str, file: Path, message: str, exe: str | None = None) -> list[str]:
    """The ``kaggle competitions submit`` argv, preferring this Python environment's CLI."""
    bindir = Path(sys.executable).parent
    local = [str(bindir / n) for n in ("kaggle", "kaggle.exe") if (bindir / n).is_file()]
    exe = exe or next(iter(local), None) or shutil.which("kaggle")
    if exe is None:
        raise SubmissionError(
            f"kaggle CLI not found beside {sys.executable} or on PATH; "
            "install it into this environment: pip install kaggle six"
        )
    return [exe, "competitions", "submit", "-c", slug, "-f", str(file), "-m", message]


def send(cmd: list[str], env: Mapping[str, str] | None = None) -> str:
    """Run ``cmd`` (a ``kaggle competitions submit`` argv); return its output, secrets scrubbed."""
    source = os.environ if env is None else env
    secrets = [source.get("KAGGLE_KEY", ""), source.get("KAGGLE_API_TOKEN", "")]
    try:
        done = subprocess.run(cmd, capture_output=True, text=True, timeout=300, env=env)
    except subprocess.TimeoutExpired:
        done = subprocess.CompletedProcess(cmd, 124, "", "no answer: timed out after 300 s")
    except OSError as e:
        done = subprocess.CompletedProcess(cmd, 127, "", f"cannot run {cmd[0]}: {e.strerror}")
    output = _scrub(f"{done.stdout}\n{done.stderr}", secrets)
    if done.returncode != 0 or re.search(r"Could not (find|submit to) competition", done.stdout):
        line = (_key_line(output) or f"exit status {done.returncode} and no output").rstrip(".")
        raise SubmissionError(
            f"kaggle competitions submit failed: {line}; {_fix_for(line, output, cmd)}"
        )
    return _scrub(done.stdout, secrets).strip()


def _scrub(text: str, secrets: list[str]) -> str:
    for secret in sorted((s for s in secrets if len(s) >= 4), key=len, reverse=True):
        text = text.replace(secret, "***")
    return HEX_KEY_RE.sub("***", text)


def _key_line(output: str) -> str:
    """The most informative line: the last exception line, else a network/auth/404 line."""
    lines = [" ".join(ln.split()) for ln in output.splitlines() if ln.strip()]
    for pattern in (EXC_RE, NET_RE, AUTH_RE, SLUG_RE):
        hits = [ln for ln in lines if pattern.search(ln)]
        if hits:
            return (hits[-1] if pattern is EXC_RE else hits[0])[:300]
    return lines[-1][:300] if lines else ""


def _fix_for(line: str, output: str, cmd: list[str]) -> str:
    if line.startswith("cannot run"):
        return "install the CLI into this environment: pip install kaggle six"
    for text in (line, output):
        if NET_RE.search(text):
            return NET_FIX.format(cmd[cmd.index("-f") + 1] if "-f" in cmd[:-1] else "?")
        if AUTH_RE.search(text):
            return AUTH_FIX
        if SLUG_RE.search(text):
            return SLUG_FIX
    return f"run it by hand to see the full output: {shlex.join(cmd)}"


# ---------------------------------------------------------------- stage
def submit_stage(comp: Competition, sub_dir: Path, dry_run: bool) -> int:
    """Validate ``sub_dir/submission.csv``, then send it (or show the command); log the ledger."""
    sub_dir = Path(sub_dir)
    path, ledger = sub_dir / "submission.csv", sub_dir.parent / "ledger.csv"
    info = _read_ensemble(sub_dir / "ensemble.json", f"make ensemble COMP={comp.root}")
    sub = validate_submission(path, comp.sample_path, comp.classes, comp.id_col, comp.target_col)
    nested = info.get("nested_accuracy")  # the honest score; OOF is in-sample for fitted methods
    honest = f" nested={nested:.4f}" if isinstance(nested, int | float) else ""
    message = f"{info['name']} {info['method']} OOF={info['oof_accuracy']:.4f}{honest}"
    used = f"{sub[comp.target_col].nunique()} of {len(comp.classes)} classes used"
    tail = f", nested CV {nested:.4f}" if honest else ""
    print(f"{path}: valid - {len(sub)} rows, {used}, OOF accuracy {info['oof_accuracy']:.4f}{tail}")
    if dry_run:
        try:
            cmd = kaggle_command(comp.slug, path, message)
        except SubmissionError:  # a dry run shows the command even where the CLI is missing
            cmd = kaggle_command(comp.slug, path, message, exe="kaggle")
        print("DRY_RUN: would run: " + shlex.join(cmd))
        _append_ledger(ledger, info, path, "dry-run", message)
        return 0
    if not has_kaggle_credentials():
        raise SubmissionError(
            "no Kaggle credentials: no KAGGLE_API_TOKEN, KAGGLE_USERNAME+KAGGLE_KEY, "
            "~/.kaggle/access_token or kaggle.json found; create a token (Kaggle → Settings → "
            "Create New Token) and save it as ~/.kaggle/kaggle.json with chmod 600, or check "
            f"the file without sending using DRY_RUN=1 (the file is at {path})"
        )
    print(send(kaggle_command(comp.slug, path, message)))
    _append_ledger(ledger, info, path, "submitted", message)
    return 0


def _read_ensemble(path: Path, rerun: str) -> dict:
    """ensemble.json with ``name``, ``method`` and a numeric ``oof_accuracy``."""
    info = read_json(path, rerun)
    try:
        oof = float(info["oof_accuracy"])
        return {**info, "name": info["name"], "method": info["method"], "oof_accuracy": oof}
    except (TypeError, ValueError, KeyError):
        need = "keys name, method and a numeric oof_accuracy"
        raise ArtifactError(f"{path} needs {need}; re-run: {rerun}") from None


def _append_ledger(path: Path, info: dict, sub_path: Path, status: str, message: str) -> Path:
    """Read the ledger (if any), add one row, and rewrite it atomically."""
    oof, sha = f"{info['oof_accuracy']:.6f}", hashlib.sha256(sub_path.read_bytes()).hexdigest()
    stamp = datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
    row = [stamp, str(info["name"]), str(info["method"]), oof, str(sub_path), sha, status, message]
    try:
        old = read_csv(path) if path.is_file() else pd.DataFrame(columns=LEDGER_COLUMNS)
    except CompetitionError:
        old = pd.DataFrame()
    if list(old.columns) != LEDGER_COLUMNS:
        raise ArtifactError(f"{path} is not a ledger CSV; move it aside and re-run")
    old.loc[len(old)] = row
    return write_csv(path, old)
