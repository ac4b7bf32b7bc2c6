"""``make package``'s Kaggle loop, run as many times as a user iterates on one ``NAME``.

Each arrow is one ``kaggle`` command (the installed 2.2.x CLI's flags); every wait is bounded::

    datasets status D ─ not found ─▶ datasets create -p dataset/ --dir-mode zip ─┐
          └──────── found ────────▶ datasets version -p ... -m "<name> <method>, sha256 <12>" ─┤
    ┌──────────────────────────────────────────────────────────────────────────┘
    └▶ datasets status D, every WAITS.dataset_poll_s until "ready" ("failed", "deleted" or
       WAITS.dataset_limit_s: one error line)
    ▶ kernels push -p kernel/ ─▶ "Kernel version N successfully pushed"
    ▶ kernels status K/N, every WAITS.kernel_poll_s: queued ─▶ running ─▶ complete | error |
       cancel_requested | cancel_acknowledged (Kaggle's KernelWorkerStatus), bounded by
       TIME_LIMIT + WAITS.kernel_extra_s
    ▶ kernels output K/N -p submissions/<comp>/<name>/kaggle/vN -o
       complete: check it (``kaggle_check``), ledger row "validated" (``make submit KERNEL=K``)
       otherwise: the log's last lines, one error line, exit status 2

``DRY_RUN=1`` prints these commands and runs none; without credentials they are printed too.
"""

from __future__ import annotations

import json
import re
import shlex
import shutil
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from ..errors import SubmissionError
from ..submit.kaggle import attempt, failure, has_kaggle_credentials, kaggle_exe
from ..submit.kernels import record_version
from ..util.durations import parse_duration
from ..workspace import Workspace

NOT_FOUND = re.compile(r"\b404\b|not found|does not exist", re.I)
STATUS_RE = re.compile(r'has status "(?:\w+\.)?(\w+)"')
FAILURE_RE = re.compile(r'Failure message: "(.*)"')
PUSHED_RE = re.compile(r"Kernel version (\d+) successfully")
FINAL = ("complete", "error", "cancel_requested", "cancel_acknowledged")
# what is pulled: the submission and what the checks read (not each member's logits)
OUTPUT_FILES = r"^(submission\.csv|predict\.json|imports\.json|(logits/)?probs\.npy)$"
TAIL = 20


class KaggleRunError(SubmissionError):
    """A dataset that does not become ready, or a notebook that fails or does not finish."""


@dataclass(frozen=True)
class Waits:
    """How often and how long ``make package`` polls Kaggle (tests: a fake clock)."""

    dataset_poll_s: float = 10.0
    dataset_limit_s: float = 1800.0  # a few GB of weights: Kaggle unzips and indexes them
    kernel_poll_s: float = 30.0
    kernel_extra_s: float = 3 * 3600.0  # beyond the notebook's TIME_LIMIT: the GPU queue
    sleep: Callable[[float], None] = field(default=time.sleep)
    clock: Callable[[], float] = field(default=time.monotonic)


WAITS = Waits()


@dataclass(frozen=True)
class Loop:
    """The ``kaggle`` commands of one package: dataset ``D``, notebook ``K``."""

    exe: str
    out: Path  # package/<comp>/<name>
    dataset: str  # owner/slug
    kernel: str  # owner/slug
    note: str  # the dataset version's message
    pulled: Path  # submissions/<comp>/<name>/kaggle

    def cmd(self, verb: str, version: str = "N") -> list[str]:
        e, data = self.exe, str(self.out / "dataset")
        ref = f"{self.kernel}/{version}"
        return {
            "status": [e, "datasets", "status", self.dataset],
            "create": [e, "datasets", "create", "-p", data, "--dir-mode", "zip"],
            "version": [e, "datasets", "version", "-p", data, "--dir-mode", "zip", "-m", self.note],
            "push": [e, "kernels", "push", "-p", str(self.out / "kernel")],
            "kernel": [e, "kernels", "status", ref],
            "output": [e, "kernels", "output", ref, "-p", str(self.pulled / f"v{version}"), "-o"],
        }[verb]


def kaggle_loop(
    ws: Workspace, params: dict, out: Path, note: str, dry_run: bool, comp_root: Path | None
) -> str:
    """Print the loop's commands; unless ``dry_run`` (or without credentials) run them.
    Returns the notebook version validated, or "" where nothing ran."""
    exe = kaggle_exe(dry_run=True) if dry_run or not has_kaggle_credentials() else kaggle_exe()
    loop = Loop(
        exe,
        out,
        f"{params['owner']}/{params['dataset']}",
        f"{params['owner']}/{params['kernel']}",
        note,
        ws.submission_dir(params["name"]) / "kaggle",
    )
    _print_plan(loop, params)
    if dry_run or not has_kaggle_credentials():
        why = "DRY_RUN=1" if dry_run else "no Kaggle credentials"
        print(f"not run ({why}): run them yourself, or again with credentials and without DRY_RUN")
        return ""
    if comp_root is None or not Path(comp_root).is_dir():
        raise KaggleRunError(
            f"COMP={comp_root}: make package compares the notebook's output with make predict on "
            "the competition's public test images; name the competition folder: COMP=input/<slug>"
        )
    limit = parse_duration(params["time_limit"], "TIME_LIMIT") + WAITS.kernel_extra_s
    _upload(loop)
    version = _push(loop)
    try:
        state = _follow(loop, version, limit)
    except KeyboardInterrupt:  # the notebook runs on at Kaggle: say how to finish by hand
        raise KaggleRunError(
            f"stopped following notebook {loop.kernel} version {version}, which runs on at "
            f"Kaggle; once it is complete: {shlex.join(loop.cmd('output', version))}, then "
            f"make submit KERNEL={loop.kernel} VERSION={version}"
        ) from None
    target = _pull(loop, version, must=state == "complete")
    if state != "complete":
        _fail(loop, version, state, target)
    from .kaggle_check import check_output  # torch and the predict stage: only once it ran

    checked = check_output(ws, Path(comp_root), params, target)
    ref = f"{loop.kernel}/{version}"
    record_version(ws, params["name"], ref, target / "submission.csv", f"{ref}: {checked}")
    print(f"{target}/submission.csv: {checked}")
    print(f"submit it: make submit NAME={params['name']} KERNEL={loop.kernel}  (version {version})")
    return version


def _print_plan(loop: Loop, params: dict) -> None:
    kernel, poll = loop.kernel, WAITS
    notes = {
        "status": "# not found: create it; else a new version",
        "create": "# the first time",
        "version": "# every later time",
        "push": "# after `datasets status` says ready (every "
        f"{poll.dataset_poll_s:g} s, at most {poll.dataset_limit_s:g} s); prints version N",
        "kernel": f"# every {poll.kernel_poll_s:g} s until complete or error",
        "output": "# then checked against the sample and a local make predict",
    }
    print("kaggle commands:")
    for verb, why in notes.items():
        print(f"  {shlex.join(loop.cmd(verb))}  {why}")
    print(
        f"  then: make submit NAME={params['name']} KERNEL={kernel}  (the newest validated N: "
        f"kaggle competitions submit {params['slug']} -k {kernel} -v N -f submission.csv -m ...)"
    )


def _run(cmd: list[str], ok: Callable[[str], bool] = lambda out: True) -> str:
    """One ``kaggle`` command; its stdout, or one error line (the CLI exits 0 on some errors)."""
    code, out, both = attempt(cmd)
    if code != 0 or not ok(out):
        raise failure(cmd, both, code)
    return out


def _upload(loop: Loop) -> None:
    """``datasets create`` the first time, ``datasets version`` after; then wait until ready."""
    code, _, both = attempt(loop.cmd("status"))
    if code != 0 and not NOT_FOUND.search(both):
        raise failure(loop.cmd("status"), both, code)
    verb = "version" if code == 0 else "create"
    out = _run(loop.cmd(verb), lambda out: not re.search(r"\berror\b", out, re.I))
    print(f"dataset {loop.dataset}: {'new version' if code == 0 else 'created'}: {out}")
    start, last, shown = WAITS.clock(), "", -1.0
    while True:
        lines = _run(loop.cmd("status")).splitlines() or ["?"]
        status, waited = lines[-1].strip().lower(), WAITS.clock() - start
        if status == "ready":
            print(f"dataset {loop.dataset}: ready after {waited:.0f} s")
            return
        if status in ("failed", "deleted") or waited >= WAITS.dataset_limit_s:
            raise KaggleRunError(
                f"dataset {loop.dataset} not ready after {waited:.0f} s (Kaggle says "
                f"'{status}', limit {WAITS.dataset_limit_s:g} s); see "
                f"https://www.kaggle.com/datasets/{loop.dataset}, then re-run make package"
            )
        if status != last or waited - shown >= 60:  # a progress line per change or minute
            print(f"dataset {loop.dataset}: {status}, waited {waited:.0f} s", flush=True)
            last, shown = status, waited
        WAITS.sleep(WAITS.dataset_poll_s)


def _push(loop: Loop) -> str:
    out = _run(loop.cmd("push"), lambda out: bool(PUSHED_RE.search(out)))
    print(out.splitlines()[-1])
    return PUSHED_RE.search(out)[1]


def _follow(loop: Loop, version: str, limit: float) -> str:
    """Poll ``kernels status`` to a final state; print when each state began."""
    ref, start, since = f"{loop.kernel}/{version}", WAITS.clock(), {}
    while True:
        out = _run(loop.cmd("kernel", version))
        found = STATUS_RE.search(out)
        if not found:
            raise KaggleRunError(f"kaggle kernels status {ref}: no status in {out[:200]!r}")
        status, now = found[1].lower(), WAITS.clock() - start
        if status not in since:
            since[status] = now
            print(f"notebook {ref}: {status} at {_hms(now)}", flush=True)
        if status in FINAL:
            ran = since.get("running", now)
            print(f"notebook {ref}: {status}; queued {_hms(ran)}, running {_hms(now - ran)}")
            why = FAILURE_RE.search(out)
            return status + (f" ({why[1]})" if why and why[1] else "")
        if now >= limit:
            raise KaggleRunError(
                f"notebook {ref} still {status} after {_hms(now)} (TIME_LIMIT + queue); follow "
                f"it at https://www.kaggle.com/code/{loop.kernel}, then make submit "
                f"KERNEL={loop.kernel} VERSION={version}"
            )
        WAITS.sleep(WAITS.kernel_poll_s)


def _pull(loop: Loop, version: str, must: bool) -> Path:
    """``kernels output`` into ``kaggle/v<N>/`` (a re-pull replaces it): files and the log. A
    failed notebook's output may be missing: then only its error line is said (``must``)."""
    target = loop.pulled / f"v{version}"
    shutil.rmtree(target, ignore_errors=True)
    target.parent.mkdir(parents=True, exist_ok=True)
    cmd = [*loop.cmd("output", version), "--file-pattern", OUTPUT_FILES]
    code, _, both = attempt(cmd)
    if code != 0 and must:
        raise failure(cmd, both, code)
    return target


def _fail(loop: Loop, version: str, state: str, target: Path) -> None:
    """The log's last lines on stderr, then one error line."""
    logs = sorted(target.glob("*.log"))
    lines = log_lines(logs[0]) if logs else []
    if lines:
        print(f"last {min(TAIL, len(lines))} lines of {logs[0]}:", file=sys.stderr)
        for line in lines[-TAIL:]:
            print(f"  | {line}", file=sys.stderr)
    where = (
        "its log's last lines are above"
        if lines
        else f"no log came back, see https://www.kaggle.com/code/{loop.kernel}"
    )
    raise KaggleRunError(
        f"notebook {loop.kernel} version {version} ended {state}: {where}; fix the cause, "
        "then re-run make package"
    )


def log_lines(path: Path) -> list[str]:
    """A Kaggle log's text lines: a JSON list of ``{"stream_name", "time", "data"}`` records,
    else plain text."""
    text = path.read_text("utf-8", "replace")
    try:
        records = json.loads(text)
        text = "".join(str(r.get("data", "")) for r in records if isinstance(r, dict))
    except (ValueError, TypeError, AttributeError):
        pass
    return [ln.rstrip() for ln in text.splitlines() if ln.strip()]


def _hms(seconds: float) -> str:
    s = int(round(seconds))
    return f"{s // 3600}:{s // 60 % 60:02d}:{s % 60:02d}"
