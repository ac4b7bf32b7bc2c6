"""Fault injection: kill the train stage at random moments, re-run it, check that nothing was lost.

``python -m pipeline.tools soak`` (``make soak``) repeats one experiment ``--times`` times and prints a
tally; ``tests/test_fault.py`` runs it once on a tiny competition.

One experiment, in a fresh copy of a prepared folder (recipes, folds file): the train command is
started and SIGKILLed (its whole process group) once per entry of ``PLAN``, then ``make train``
re-runs it to the end. Every artifact must read back, no temp file or ``last.pt`` may remain, and
logits, checkpoints and metrics must equal those of an uninterrupted run bit for bit. Random kill
moments are drawn from a seeded RNG over the expected time left; how attempts are started and
killed is in ``faults.py``.
"""

from __future__ import annotations

import random
import re
import shutil
import tempfile
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

from ..errors import PipelineError
from ..workspace import Workspace
from .faults import Attempt, Trainer, run_attempt, wait_exit

# (launcher, kill moment) per attempt; the assembly writes {run}/oof.npz. The named write points
# come first, while the first fold is still being trained, so each is reached whatever the
# machine's speed (a random kill landing late could otherwise finish every fold before them).
PLAN = (
    ("fork", "before:last.pt"),
    ("fork", "before:oof.npz"),
    ("fork", "after:done.json"),
    ("make", "random"),
    ("fork", "random"),
    ("fork", "random"),
    ("fork", "random"),
    ("fork", "before:{run}/oof.npz"),
)
SOAK_RECIPE = """# python -m pipeline.tools soak: a tiny timm test model from scratch, RNG-heavy on purpose
backbone = "test_resnet"
image_size = 16
epochs = 2
batch_size = 64
augment = "medium"
mixup_alpha = 0.2
ema_decay = 0.9
tta = ["none", "hflip"]
"""
EPOCH_LINE = re.compile(r"^(\S+) fold (\d+) epoch (\d+)/\d+ +train loss", re.M)


@dataclass
class Timing:
    make: float  # s of an uninterrupted ``make train``, imports included
    fork: float  # s of the same through the fork server
    epochs: int  # epoch lines of a whole run (all runs and folds)

    def delay(self, rng: random.Random, how: str, logs: list[Path]) -> float:
        """Uniform over the expected time left: imports (make), the epochs not yet done, and at
        least a quarter of a run for setup, predictions and assembly."""
        text = "".join(p.read_text(errors="replace") for p in logs if p.is_file())
        done = len(set(EPOCH_LINE.findall(text))) / max(1, self.epochs)  # printed once saved
        return rng.uniform(0.0, getattr(self, how) - self.fork * min(0.75, done))


def experiment(tr: Trainer, template: Path, root: Path, logs: Path, rng, timing, plan=PLAN):
    """Copy ``template`` to ``root``, kill one attempt per ``plan`` entry (until one finishes
    first), then ``make train`` to the end. Returns (attempts, final attempt)."""
    shutil.copytree(template, root, symlinks=True)
    logs.mkdir(parents=True, exist_ok=True)
    attempts: list[Attempt] = []
    for i, (how, kill) in enumerate(plan):
        a = Attempt(how, kill, logs / f"attempt{i}-{how}.log")
        a.delay = timing.delay(rng, how, [b.log for b in attempts]) if kill == "random" else 0.0
        attempts.append(run_attempt(tr, root, a))
        if a.rc == 0:
            break  # it finished before its kill: nothing left to interrupt
    return attempts, run_attempt(tr, root, Attempt("make", "", logs / "final.log"))


def check_outputs(root: Path, ref: Path, comp: str, runs: list[str]) -> list[tuple[str, str]]:
    """Read every train artifact under ``root`` and compare it with ``ref``'s. Problems are
    (kind, message), kind "unreadable", "logits differ", "differs" or "left behind"."""
    from .. import artifacts

    ws, ref_ws = Workspace.under(root, comp), Workspace.under(ref, comp)
    k = int(artifacts.read_folds(ws.folds_csv)["fold"].max()) + 1
    names = ("done.json", "metrics.csv", "oof.npz", "test.npz", "best.pt", "curves.png")
    rels = [f"{r}/fold{f}/{n}" for r in runs for f in range(k) for n in names]
    rels += [f"{r}/{n}" for r in runs for n in ("config.toml", "oof.npz", "test.npz")]
    problems = []
    for rel in rels:
        try:
            got = _read(ws.runs_dir / rel)
        except Exception as e:  # whatever a reader raises, the artifact is damaged
            problems.append(("unreadable", f"{rel}: {type(e).__name__}: {e}"))
            continue
        if not _same(got, _read(ref_ws.runs_dir / rel)):
            run_logits = rel.count("/") == 1 and rel.endswith(".npz")
            problems.append(("logits differ" if run_logits else "differs", rel))
    left = [p for p in root.rglob("*") if p.name.endswith(".tmp") or p.name == "last.pt"]
    return problems + [("left behind", str(p.relative_to(root))) for p in sorted(left)]


def _read(path: Path):
    """One artifact as its consumers read it; raises if it is damaged."""
    import tomllib

    import pandas as pd
    import torch
    from PIL import Image

    from .. import artifacts

    if path.suffix == ".npz":
        return artifacts.read_logits(path, path.stem, "make train")
    if path.suffix == ".json":  # seconds differ from run to run
        return {k: v for k, v in artifacts.read_json(path, "make train").items() if k != "seconds"}
    if path.suffix == ".csv":  # images/s differs from run to run
        return pd.read_csv(path).drop(columns=["img_per_s"], errors="ignore")
    if path.suffix == ".pt":
        return torch.load(path, map_location="cpu", weights_only=True)
    if path.suffix == ".toml":
        return {
            k: v
            for k, v in tomllib.loads(path.read_text()).items()
            if k in ("recipe", "folds_hash")
        }
    with Image.open(path) as im:  # curves.png: must decode, not compared
        im.load()


def _same(a, b) -> bool:
    if isinstance(a, dict):
        return isinstance(b, dict) and a.keys() == b.keys() and all(_same(a[k], b[k]) for k in a)
    if hasattr(a, "equals"):  # DataFrame
        return a.equals(b)
    if hasattr(a, "dtype"):  # numpy array or torch tensor: same type, dtype, shape and bits
        same_kind = type(a) is type(b) and a.dtype == b.dtype and a.shape == b.shape
        return same_kind and bool((a == b).all())
    return a == b


def prepare(tr: Trainer, recipes: dict[str, str], k: int, seed: int) -> Path:
    """``<work>/template`` with ``models/<run>.toml`` and the folds file; the stack-dump hook."""
    template, hooks = tr.work / "template", tr.work / "hooks"
    for d in (template / "models", hooks, tr.work / "logs"):
        d.mkdir(parents=True, exist_ok=True)
    hooks.joinpath("sitecustomize.py").write_text(
        "import pipeline.tools.faults\npipeline.tools.faults.arm_dump()\n"
    )
    for run, text in recipes.items():
        (template / "models" / f"{run}.toml").write_text(text)
    argv = ["folds", "--comp", str(tr.comp), "--k", str(k), "--seed", str(seed)]
    log = tr.work / "logs" / "folds.log"
    if wait_exit(tr.fork(argv, template, {}, log), time.time() + 900) != 0:
        raise PipelineError(f"the folds stage failed; see {log}")
    return template


def reference(tr: Trainer, template: Path) -> tuple[Path, Timing]:
    """An uninterrupted run through the fork server; make's time adds the server's imports."""
    ref = tr.work / "reference"
    shutil.copytree(template, ref, symlinks=True)
    a = run_attempt(tr, ref, Attempt("fork", "", tr.work / "logs" / "reference.log"))
    if a.rc != 0:
        raise PipelineError(f"the uninterrupted reference run failed (exit {a.rc}); see {a.log}")
    epochs = len(set(EPOCH_LINE.findall(a.log.read_text())))
    return ref, Timing(tr.warm_seconds + a.seconds, a.seconds, epochs)


@dataclass
class Tally:
    iterations: int = 0
    attempts: int = 0
    kills: int = 0
    early: int = 0  # attempts that finished before their kill
    crashed: list[str] = field(default_factory=list)  # attempts that exited with an error
    resumed: int = 0  # final make train runs that exited 0
    phases: Counter = field(default_factory=Counter)
    problems: Counter = field(default_factory=Counter)
    examples: list[str] = field(default_factory=list)

    def add(self, attempts: list[Attempt], final: Attempt, problems: list[tuple[str, str]]) -> None:
        self.iterations += 1
        self.attempts += len(attempts)
        self.kills += sum(a.killed for a in attempts)
        self.early += sum(a.rc == 0 for a in attempts)
        self.crashed += [f"{a.log} (exit {a.rc})" for a in attempts if not a.killed and a.rc]
        self.resumed += final.rc == 0
        self.phases.update(a.phase for a in attempts if a.killed)
        if final.rc != 0:
            problems = [*problems, ("resume failed", f"{final.log} (exit {final.rc})")]
        self.problems.update(kind for kind, _ in problems)
        self.examples += [f"{kind}: {msg}" for kind, msg in problems][: 10 - len(self.examples)]

    def ok(self) -> bool:
        return not self.crashed and not self.problems and self.resumed == self.iterations

    def report(self, seconds: float) -> str:
        p, phases = self.problems, ", ".join(f"{k} {n}" for k, n in sorted(self.phases.items()))
        return "\n".join(
            [
                f"soak: {self.iterations} iterations in {seconds:.0f} s",
                f"  kills delivered      {self.kills} of {self.attempts} attempts ({self.early} "
                f"finished before their kill, {len(self.crashed)} crashed)",
                f"  kills by phase       {phases}",
                f"  resumes finished     {self.resumed} of {self.iterations} (make train exit 0)",
                f"  artifacts unreadable {p['unreadable']}",
                f"  OOF/test mismatches  {p['logits differ']} (other artifacts differing: {p['differs']})",
                f"  temp files left      {p['left behind']}",
                *[f"  {x}" for x in self.crashed[:5] + self.examples],
                f"  result: {'OK' if self.ok() else 'FAILED'}",
            ]
        )


def soak_stage(
    comp: Path | None = None,
    runs: list[str] | None = None,
    times: int = 20,
    k: int = 2,
    seed: int = 0,
    overrides: str = "",
    device: str = "cpu",
    work: Path | None = None,
    jobs: int = 1,
) -> int:
    """Run the experiment ``times`` times, print a line per iteration and the tally; exit
    status 0 when every re-run finished with every artifact intact and equal. ``comp`` None:
    the digits written by ``demo.write_digits``; ``runs`` empty: ``SOAK_RECIPE``."""
    from ..competition.demo import write_digits

    t0 = time.time()
    work = Path(work or tempfile.mkdtemp(prefix="pipeline-soak-")).resolve()
    comp = (comp or write_digits(work / "input" / "digits")).resolve()
    recipes = {r: _recipe_text(r) for r in runs} if runs else {"soak": SOAK_RECIPE}
    tr = Trainer(comp, list(recipes), work, overrides, device, jobs)
    template = prepare(tr, recipes, k, seed)
    ref, timing = reference(tr, template)
    print(f"reference run: {timing.fork:.1f} s forked, ~{timing.make:.1f} s via make", flush=True)
    tally = Tally()
    for i in range(times):
        root, logs, rng = work / f"iter{i}", work / "logs" / f"iter{i}", random.Random(seed + i)
        attempts, final = experiment(tr, template, root, logs, rng, timing)
        problems = check_outputs(root, ref, comp.name, tr.runs) if final.rc == 0 else []
        tally.add(attempts, final, problems)
        what = ", ".join(_describe(a) for a in attempts)
        print(
            f"iteration {i + 1}/{times}: {what}; re-run exit {final.rc}; {len(problems)} problems",
            flush=True,
        )
        if final.rc == 0 and not problems:
            shutil.rmtree(root)
    print(tally.report(time.time() - t0))
    if tally.ok():
        shutil.rmtree(work)
    else:
        print(f"kept {work} (attempt logs under logs/)")
    return 0 if tally.ok() else 1


def _describe(a: Attempt) -> str:
    where = a.phase if a.killed else f"exit {a.rc}"
    return f"{a.how} {where} @{a.delay:.2f}s" if a.kill == "random" else f"{a.how} {where}"


def _recipe_text(run: str) -> str:
    path = Path("models") / f"{run}.toml"
    if not path.is_file():
        raise PipelineError(f"{path} not found; pass --runs with recipes in models/, or none")
    return path.read_text()
