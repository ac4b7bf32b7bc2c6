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

import shutil
from collections import deque
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from ...errors import ArtifactError, PipelineError
from . import kaggle_files as files
from .base import Failure, Progress
from .kaggle_pull import install, keep_partial, read_status
from .kaggle_upload import Commands, Uploads

if TYPE_CHECKING:
    from ..context import Job, TrainContext
    from . import Dispatch

OPTIONS = {
    "kaggle_slots": 2,  # KAGGLE_SLOTS: notebooks at once (two GPU sessions: Kaggle's usual, unverified)
    "owner": "",  # OWNER, as make package: the Kaggle user owning datasets and notebooks
    "gpu": True,  # GPU, as make package: 0 runs the notebooks on CPU
}
# make train's flags of this executor (argparse keywords), read back by ``options``
FLAGS = {
    "--kaggle-slots": {"type": int, "default": None, "help": "Kaggle notebooks at once"},
    "--owner": {"default": "", "help": "EXECUTOR=kaggle: the Kaggle user (OWNER)"},
    "--no-gpu": {"action": "store_true", "help": "EXECUTOR=kaggle: notebooks on CPU"},
}
# what is pulled of a notebook's output: how each job ended, each fold's files and log
PULLED = r"^(status\.json|models/[^/]+/[^/]+/(fold\d+|logs)/[^/]+)$"
RUN_LIMIT_S = 12 * 3600.0  # Kaggle stops a GPU notebook after 12 hours
HEARTBEAT_S = 600.0  # a line on a notebook still queued or running this often


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


def options(a) -> dict:
    """The OPTIONS its flags give: ``KAGGLE_SLOTS`` when given; ``OWNER`` and ``GPU``, which
    make package reads too, only when the jobs run here (``EXECUTOR=kaggle``)."""
    out = {"kaggle_slots": a.kaggle_slots} if a.kaggle_slots is not None else {}
    if a.executor == "kaggle":
        out |= {"owner": a.owner, "gpu": not a.no_gpu}
    return out


def jobs_device(a) -> str | None:
    """The device the jobs train on: the notebooks' GPU (not this machine's), unless ``GPU=0``."""
    return None if a.no_gpu else "cuda"


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
    state: str = ""  # the last status seen
    said: float = 0.0  # when a line on it was last printed


class Kaggle(Uploads):
    """One ``make train``'s notebooks and their queue (its datasets: ``Uploads``)."""

    def __init__(self, ctx: TrainContext, d: Dispatch, c: Commands) -> None:
        super().__init__(ctx, d, c)
        self.running: dict[int, _Slot] = {}

    def run(self, jobs: list[Job]) -> list[Failure]:
        self.jobs = jobs
        self.upload_inputs()
        self.batch["pins"] = files.python_env(self.ctx.track)
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
            # every half-done fold, not only this batch's: a queued notebook may mount a later
            # version than the one current at its push
            write = lambda root, ref: files.write_resume(root, self.ctx.ws, self.jobs, ref)  # noqa: E731
            self.upload("resume", write)
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
        if state != slot.state or took - slot.said >= HEARTBEAT_S:  # a line per change, or 10 min
            ref = f"{self.kernel(slot.n)}/{slot.version}"
            self.progress.line(f"notebook {ref}: {state} ({_hms(took)} since its push)")
            slot.state, slot.said = state, took
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


def _hms(seconds: float) -> str:
    s = int(seconds)
    return f"{s // 3600}:{s // 60 % 60:02d}:{s % 60:02d}"
