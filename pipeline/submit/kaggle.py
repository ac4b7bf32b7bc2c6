"""The Kaggle CLI: credential discovery, the submit command, running it, scrubbing secrets.

Secrets (``KAGGLE_KEY``, ``KAGGLE_API_TOKEN``, anything shaped like a 32-hex key) never reach a
message; a failure becomes one ``SubmissionError`` line with the fix.
"""

from __future__ import annotations

import json
import os
import re
import shlex
import shutil
import subprocess
import sys
from collections.abc import Mapping
from pathlib import Path

from ..errors import SubmissionError

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
def kaggle_exe(exe: str | None = None, dry_run: bool = False) -> str:
    """The Kaggle CLI, preferring this Python environment's; plain "kaggle" for a dry run
    (which shows the command even where the CLI is missing)."""
    bindir = Path(sys.executable).parent
    local = [str(bindir / n) for n in ("kaggle", "kaggle.exe") if (bindir / n).is_file()]
    exe = exe or next(iter(local), None) or shutil.which("kaggle")
    if exe is None and dry_run:
        return "kaggle"
    if exe is None:
        raise SubmissionError(
            f"kaggle CLI not found beside {sys.executable} or on PATH; "
            "install it into this environment: pip install kaggle six"
        )
    return exe


def kaggle_command(
    slug: str,
    file: Path,
    message: str,
    exe: str | None = None,
    kernel: str = "",
    version: str = "",
) -> list[str]:
    """The ``kaggle competitions submit`` argv; for a code competition (``kernel`` given) the
    notebook's output file ``file`` of kernel version ``version``."""
    exe = kaggle_exe(exe)
    if kernel:
        return [
            exe, "competitions", "submit", slug, "-k", kernel, "-v", str(version),
            "-f", Path(file).name, "-m", message,
        ]  # fmt: skip
    return [exe, "competitions", "submit", "-c", slug, "-f", str(file), "-m", message]


def attempt(cmd: list[str], env: Mapping[str, str] | None = None) -> tuple[int, str, str]:
    """Run ``cmd`` (a ``kaggle ...`` argv) once: exit status, stdout, and stdout + stderr, all
    secrets scrubbed. A missing executable is 127 and no answer in 300 s is 124, never raised:
    a caller that polls (``make package``) decides what a failure means."""
    source = os.environ if env is None else env
    secrets = [source.get("KAGGLE_KEY", ""), source.get("KAGGLE_API_TOKEN", "")]
    try:
        done = subprocess.run(cmd, capture_output=True, text=True, timeout=300, env=env)
    except subprocess.TimeoutExpired:
        done = subprocess.CompletedProcess(cmd, 124, "", "no answer: timed out after 300 s")
    except OSError as e:
        done = subprocess.CompletedProcess(cmd, 127, "", f"cannot run {cmd[0]}: {e.strerror}")
    both = _scrub(f"{done.stdout}\n{done.stderr}", secrets)
    return done.returncode, _scrub(done.stdout, secrets).strip(), both


def send(cmd: list[str], env: Mapping[str, str] | None = None) -> str:
    """Run ``cmd`` (a ``kaggle ...`` argv); return its output, secrets scrubbed."""
    code, out, both = attempt(cmd, env)
    if code != 0 or re.search(r"Could not (find|submit to) competition", out):
        raise failure(cmd, both, code)
    return out


def failure(cmd: list[str], output: str, code: int = 1) -> SubmissionError:
    """The one line for a failed ``kaggle`` command: its most telling line and the fix."""
    line = (_key_line(output) or f"exit status {code} and no output").rstrip(".")
    return SubmissionError(
        f"kaggle {' '.join(cmd[1:3])} failed: {line}; {_fix_for(line, output, cmd)}"
    )


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


def kaggle_user() -> str:
    """The Kaggle user name from ``KAGGLE_USERNAME`` or ``kaggle.json``, if any (the owner of
    what make package and EXECUTOR=kaggle upload)."""
    if os.environ.get("KAGGLE_USERNAME"):
        return os.environ["KAGGLE_USERNAME"]
    home = Path(os.environ.get("KAGGLE_CONFIG_DIR") or Path.home() / ".kaggle")
    try:
        return str(json.loads((home / "kaggle.json").read_text()).get("username", ""))
    except (OSError, ValueError, AttributeError):
        return ""
