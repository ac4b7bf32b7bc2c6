"""``make train EXECUTOR=kaggle``: batches of (run, fold) jobs trained in private Kaggle notebooks.

The driver uploads what the notebooks need (``kaggle_files``: the source, the resolved recipes,
the folds file and offline weights; the competition's data unless Kaggle mounts it), then keeps
``KAGGLE_SLOTS`` notebooks busy, each a version of ``<owner>/<comp>-train-<slot>`` training one
batch of jobs on a GPU. Every ``kaggle`` command goes through make package's helpers
(``submit.kaggle``, ``predict.kaggle_loop``, ``predict.shipping``), handed in by the CLI
(``use``): a stage may import neither another stage nor ``predict``::

    competitions files <slug> ─ ok ─▶ competition_sources; 404 ─▶ the data as a dataset
    datasets create|version <comp>-train-code (and -data), wait until ready
    ┌▶ [a job with a half-done fold: datasets version <comp>-train-resume, wait]
    │  kernels push <comp>-train-<slot> ─▶ version N
    │  kernels status, every WAITS.kernel_poll_s ─▶ complete | error | cancel_*
    │  kernels output ─▶ package/<comp>/train/pulled/nb<slot>/v<N>/
    │     done job: verified (done.json, best.pt's sha256, logits' shapes and ids), written into
    │       models/<comp>/<run>/fold<k>/ as a local run would (``ray.write_back``)
    │     error: line: a user-fixable error, reported, not retried
    └──── otherwise (killed at the run-time limit, failed): its last.pt kept when it came back,
          the job re-pushed ``RETRIES`` times (resuming from last.pt, else from epoch 1)
"""

from __future__ import annotations

import json
import os
import re
import shutil
from collections import deque
from dataclasses import dataclass
from pathlib import Path
from types import ModuleType
from typing import TYPE_CHECKING

from ... import artifacts
from ...errors import ArtifactError, PipelineError
from ..context import Job, TrainContext
from . import kaggle_files as files
from .base import Failure, Progress
from .kaggle_pull import install, keep_partial, read_status

if TYPE_CHECKING:
    from . import Dispatch

OPTIONS = {
    "kaggle_slots": 2,  # KAGGLE_SLOTS: notebooks at once (two GPU sessions: Kaggle's usual, unverified)
    "owner": "",  # OWNER, as make package: the Kaggle user owning datasets and notebooks
    "gpu": True,  # GPU, as make package: 0 runs the notebooks on CPU
}
# what is pulled of a notebook's output: how each job ended, each fold's files and log
PULLED = r"^(status\.json|models/[^/]+/[^/]+/(fold\d+|logs)/[^/]+)$"
RUN_LIMIT_S = 12 * 3600.0  # Kaggle stops a GPU notebook after 12 hours


@dataclass(frozen=True)
class Commands:
    """make package's Kaggle helpers, handed in by the CLI (``use``)."""

    cli: ModuleType  # pipeline.submit.kaggle: kaggle_exe, attempt, failure, credentials
    loop: ModuleType  # pipeline.predict.kaggle_loop: Loop, _upload, _push, STATUS_RE, WAITS
    shipping: ModuleType  # pipeline.predict.shipping: copy_source, source_root, _local_secrets


_COMMANDS: list[Commands] = []


def use(commands: Commands) -> None:
    """Hand the executor make package's Kaggle helpers (the CLI does, before ``make train``)."""
    _COMMANDS[:] = [commands]


def execute(ctx: TrainContext, jobs: list[Job], d: Dispatch) -> list[Failure]:
    if not _COMMANDS:
        raise PipelineError("EXECUTOR=kaggle runs from the CLI: make train EXECUTOR=kaggle")
    c = _COMMANDS[0]
    if not c.cli.has_kaggle_credentials():
        raise PipelineError(f"EXECUTOR=kaggle needs Kaggle credentials: {c.cli.AUTH_FIX}")
    return Kaggle(ctx, d, c).run(jobs)


def refuses(d: Dispatch, what: str) -> str:
    """A notebook sees only what was uploaded: not a teacher's targets."""
    if what == "workspace":
        return "a Kaggle notebook cannot see; train students with EXECUTOR=local"
    return ""


@dataclass
class _Slot:
    n: int
    version: str
    batch: list[Job]
    t0: float


class Kaggle:
    """One ``make train``'s datasets, notebooks and their queue."""

    def __init__(self, ctx: TrainContext, d: Dispatch, c: Commands) -> None:
        self.ctx, self.d, self.c = ctx, d, c
        self.exe = c.cli.kaggle_exe()
        self.owner = d.option("owner") or _kaggle_user()
        if not self.owner:
            raise PipelineError(
                "EXECUTOR=kaggle: no Kaggle user name; set OWNER=<your Kaggle user name>"
            )
        self.base = ctx.ws.package_dir("train")
        self.slug = re.sub(r"[^a-z0-9]+", "-", ctx.ws.comp.lower()).strip("-")
        if d.option("kaggle_slots") < 1:
            raise PipelineError(f"KAGGLE_SLOTS={d.option('kaggle_slots')}: use 1 or more")
        # THREADS, else the notebook's own cores (this machine's say nothing about Kaggle's)
        self.batch: dict = {"owner": self.owner, "threads": d.threads}
        self.sources: dict[str, list[str]] = {"datasets": [], "competitions": []}
        self.running: dict[int, _Slot] = {}

    def ref(self, part: str) -> str:
        """``<owner>/<comp>-train-<part>``, the slug within Kaggle's 50 characters."""
        return f"{self.owner}/{self.slug[:36]}-train-{part}"

    # ------------------------------------------------------------ uploads
    def upload(self, part: str, write, key: str = "") -> None:
        """Write dataset ``part`` afresh under ``package/<comp>/train/<part>/dataset``, audit it,
        then create or version it and wait until Kaggle says ready (make package's loop); not
        again when the same files (sha256, or ``key``: the competition's listing) were uploaded
        last time and Kaggle has that dataset ready."""
        out = self.base / part
        if key and self.unchanged(part, key):
            return
        shutil.rmtree(out, ignore_errors=True)
        (out / "dataset").mkdir(parents=True)
        write(out / "dataset", self.ref(part))
        files.audit(out / "dataset", self.c.shipping._local_secrets())
        key = key or self.c.shipping.digest(out / "dataset")
        if not self.unchanged(part, key):
            note = f"make train {part}, sha256 {key[:12]}"
            self.c.loop._upload(self.c.loop.Loop(self.exe, out, self.ref(part), "", note, out))
            artifacts.atomic_write_text(self.base / f"{part}.uploaded", f"{self.ref(part)} {key}\n")
        if part != "code":  # a copy of the competition or of last.pt files: not kept twice
            shutil.rmtree(out)

    def unchanged(self, part: str, key: str) -> bool:
        """Whether ``part`` was last uploaded with these files and Kaggle says it is ready."""
        mark = self.base / f"{part}.uploaded"
        if not mark.is_file() or mark.read_text().split() != [self.ref(part), key]:
            return False
        code, out, _ = self.c.cli.attempt([self.exe, "datasets", "status", self.ref(part)])
        if code != 0 or out.strip().splitlines()[-1:] != ["ready"]:
            return False
        print(f"dataset {self.ref(part)}: unchanged since its last upload; not uploaded again")
        return True

    def upload_inputs(self) -> None:
        """The code dataset, and the competition: mounted when Kaggle has it, else uploaded."""
        ctx, spec, joined = self.ctx, self.spec(), self.joined()

        def code(root, ref):
            copy = lambda dst: self.c.shipping.copy_source(self.c.shipping.source_root(), dst)  # noqa: E731
            files.write_code(root, ctx, spec, copy, ref)

        self.upload("code", code)
        self.batch["code"] = self.ref("code").split("/")[1]
        self.sources["datasets"].append(self.ref("code"))
        if joined:
            self.batch["competition"] = ctx.comp.slug
            self.sources["competitions"].append(ctx.comp.slug)
            return
        write = lambda root, ref: files.write_data(root, ctx.comp.root, ref)  # noqa: E731
        self.upload("data", write, files.listing_key(ctx.comp.root))
        self.batch["data"] = self.ref("data").split("/")[1]
        self.sources["datasets"].append(self.ref("data"))

    def spec(self) -> dict:
        ctx = self.ctx
        return {"comp": ctx.ws.comp, "fhash": ctx.fhash, "track": sorted(ctx.track)}

    def joined(self) -> bool:
        """Whether the competition is on Kaggle and this user accepted its rules (a notebook can
        then mount it); a competition Kaggle does not know is uploaded as a private dataset."""
        cmd = [self.exe, "competitions", "files", self.ctx.comp.slug]
        code, _, both = self.c.cli.attempt(cmd)
        if code == 0:
            return True
        if re.search(r"\b403\b|forbidden|accept", both, re.I):
            raise PipelineError(
                f"Kaggle competition {self.ctx.comp.slug}: its rules are not accepted by this "
                f"account; accept them at https://www.kaggle.com/competitions/"
                f"{self.ctx.comp.slug}/rules, then re-run make train"
            )
        if not re.search(r"\b404\b|not found", both, re.I):
            raise self.c.cli.failure(cmd, both, code)
        return False

    # ------------------------------------------------------------ the queue
    def run(self, jobs: list[Job]) -> list[Failure]:
        self.upload_inputs()
        self.batch["pins"] = files.python_env()
        slots = self.d.option("kaggle_slots")
        queue = deque(b for b in (jobs[i::slots] for i in range(slots)) if b)
        free, running = list(range(1, slots + 1)), self.running
        self.attempts: dict[Job, int] = {}
        self.failures: list[Failure] = []
        self.requeue: list[list[Job]] = []
        self.progress = Progress(len(jobs), 60.0)
        waits = self.c.loop.WAITS
        try:
            while queue or running:
                while queue and free:
                    batch, n = queue.popleft(), free.pop(0)
                    running[n] = _Slot(n, self.push(n, batch), batch, waits.clock())
                ended = [s for s in list(running.values()) if self.ended(s)]
                for slot in ended:
                    del running[slot.n]
                    free.append(slot.n)
                queue.extend(self.requeue)
                self.requeue.clear()
                if running and not ended:
                    waits.sleep(waits.kernel_poll_s)
        except KeyboardInterrupt:
            raise PipelineError(
                f"stopped following notebooks {', '.join(self.kernel(s.n) for s in running.values())}"
                ", which run on at Kaggle; re-run the same make train later: finished folds are "
                "kept only when pulled, so it re-pushes those notebooks' jobs"
            ) from None
        return self.failures

    def kernel(self, n: int) -> str:
        return self.ref(str(n))

    def push(self, n: int, batch: list[Job]) -> str:
        """A new version of notebook ``n`` training ``batch`` (half-done folds uploaded first)."""
        for job in batch:
            self.attempts[job] = self.attempts.get(job, 0) + 1
        sources = {k: list(v) for k, v in self.sources.items()}
        spec = {**self.batch, "jobs": [[j.run, j.fold] for j in batch]}
        if any((self.ctx.ws.fold_dir(j.run, j.fold) / "last.pt").is_file() for j in batch):
            self.upload(
                "resume", lambda root, ref: files.write_resume(root, self.ctx.ws, batch, ref)
            )
            spec["resume"] = self.ref("resume").split("/")[1]
            sources["datasets"].append(self.ref("resume"))
        out = self.base / f"nb{n}"
        shutil.rmtree(out, ignore_errors=True)
        files.write_notebook(out / "kernel", self.kernel(n), spec, sources, self.d.option("gpu"))
        files.audit(out, self.c.shipping._local_secrets())
        loop = self.c.loop.Loop(self.exe, out, "", self.kernel(n), "", out / "pulled")
        version = self.c.loop._push(loop)
        what = ", ".join(j.tag for j in batch)
        self.progress.line(f"pushed {self.kernel(n)} version {version}: {what}")
        return version

    def ended(self, slot: _Slot) -> bool:
        """Whether ``slot``'s notebook reached a final state; then its output is pulled and each
        of its jobs settled."""
        loop = self.c.loop.Loop(self.exe, self.base / f"nb{slot.n}", "", self.kernel(slot.n), "",
                                self.base / "pulled" / f"nb{slot.n}")  # fmt: skip
        cmd = loop.cmd("kernel", slot.version)
        code, out, both = self.c.cli.attempt(cmd)
        found = self.c.loop.STATUS_RE.search(out) if code == 0 else None
        if found is None:
            raise self.c.cli.failure(cmd, both, code)
        state = found[1].lower()
        took = self.c.loop.WAITS.clock() - slot.t0
        if state not in self.c.loop.FINAL:
            if took > RUN_LIMIT_S + self.c.loop.WAITS.kernel_extra_s:
                raise PipelineError(
                    f"notebook {self.kernel(slot.n)} version {slot.version} still {state} after "
                    f"{took / 3600:.1f} h; see https://www.kaggle.com/code/{self.kernel(slot.n)}"
                )
            return False
        pulled = loop.pulled / f"v{slot.version}"
        shutil.rmtree(pulled, ignore_errors=True)
        pulled.mkdir(parents=True)
        cmd = [*loop.cmd("output", slot.version), "--file-pattern", PULLED]
        got = self.c.cli.attempt(cmd)[0] == 0
        self.settle(slot, state, pulled if got else None)
        return True

    def settle(self, slot: _Slot, state: str, pulled: Path | None) -> None:
        """Each job of an ended notebook: installed, reported, or queued again. The pulled
        output is deleted once every finished fold in it is installed (kept to inspect when one
        is refused)."""
        ref = f"{self.kernel(slot.n)}/{slot.version}"
        status, again, refused = read_status(pulled), [], False
        for job in slot.batch:
            said = status.get(job.tag, "")
            got = pulled / "models" / self.ctx.ws.comp / job.run if pulled else None
            if said == "done":
                refused |= not self.done(job, got, ref, self.c.loop.WAITS.clock() - slot.t0)
                continue
            self.append_log(job, got, pulled, f"{ref} ended {state}")
            if said.startswith("error: "):  # a user-fixable error: retrying repeats it
                self.failures.append(Failure(job, f"{ref}: {said[7:]}", self.ctx.log(job)))
                self.progress.failed(job, said[7:], self.attempts[job], self.ctx.log(job))
                continue
            kept = keep_partial(self.ctx, job, got)  # a later run resumes from it, even locally
            if self.attempts[job] <= self.d.retries:
                self.progress.line(
                    f"{job.tag}: notebook {ref} ended {state}; pushed again, "
                    + ("resuming from its last.pt" if kept else "from its first epoch")
                )
                again.append(job)
            else:
                why = f"notebook {ref} ended {state}"
                self.failures.append(Failure(job, why, self.ctx.log(job)))
                self.progress.failed(job, why, self.attempts[job], self.ctx.log(job))
        if again:
            self.requeue.append(again)
        if pulled and not refused:
            shutil.rmtree(pulled, ignore_errors=True)

    def done(self, job: Job, got: Path, ref: str, took: float) -> bool:
        """Install a finished fold; False (and a failure naming the file) when it is refused."""
        try:
            install(self.ctx, job, got)
        except ArtifactError as e:
            self.failures.append(Failure(job, f"pulled from {ref}: {e}", self.ctx.log(job)))
            self.progress.failed(job, f"pulled from {ref}: {e}", 1, self.ctx.log(job))
            return False
        self.progress.finished(job, took, len(self.running))
        return True

    def append_log(self, job: Job, got: Path | None, pulled: Path | None, why: str) -> None:
        """An unfinished job's output into its log: its own, else the notebook log's tail."""
        own = got / "logs" / f"fold{job.fold}.log" if got else None
        if own is not None and own.is_file():
            text = own.read_text("utf-8", "replace")
        else:
            logs = sorted(pulled.glob("*.log")) if pulled else []
            text = "".join(f"{t}\n" for t in self.c.loop.log_lines(logs[0])[-20:]) if logs else ""
        log = self.ctx.log(job)
        log.parent.mkdir(parents=True, exist_ok=True)
        with open(log, "a") as f:
            f.write(text or f"(notebook {why}; no output came back: its page has the log)\n")


def _kaggle_user() -> str:
    """``KAGGLE_USERNAME``, else ``username`` of ``kaggle.json`` (as make package)."""
    if os.environ.get("KAGGLE_USERNAME"):
        return os.environ["KAGGLE_USERNAME"]
    home = Path(os.environ.get("KAGGLE_CONFIG_DIR") or Path.home() / ".kaggle")
    try:
        return str(json.loads((home / "kaggle.json").read_text()).get("username", ""))
    except (OSError, ValueError, AttributeError):
        return ""
