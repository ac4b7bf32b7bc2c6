"""Every path of the artifact tree, owned by one value: ``Workspace``.

Three roots, separate because they live in different places on a Kaggle notebook (the
competition input is read-only, trained models come from a dataset folder, outputs go to the
working folder):

- the **input**: the competition folder itself (``Competition.root``), never written;
- **models**: recipes ``<run>.toml`` and trained runs ``<comp>/<run>/`` (default ``models``);
- **output**: ``folds/`` and ``submissions/`` (default ``.``, the repository root).

Decode and hash caches go to ``cache`` (default ``<models>/<comp>/.cache``), which must be
writable. No other module builds a path of the artifact tree by hand.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from .errors import PipelineError

if TYPE_CHECKING:
    import argparse

RECIPE_SETS = ("cpu", "gpu", "cpu-hub", "gpu-hub")  # shipped recipe sets: <models>/<set>/
# folders of <models>/ that are not competitions, and of <models>/<comp>/ that are not runs
RESERVED_COMPS = (*RECIPE_SETS, "pretrained")
RESERVED_RUNS = ("embeddings", "teachers")
DEFAULT_COMP = "input/digits"  # make demo's embedded competition


@dataclass(frozen=True)
class Workspace:
    """Where one competition's artifacts live. ``comp`` is the competition's name (folder name)."""

    comp: str
    models: Path = Path("models")
    output: Path = Path(".")
    cache_root: Path | None = None

    def __post_init__(self) -> None:
        if self.comp in RESERVED_COMPS:
            raise PipelineError(
                f"a competition folder named {self.comp!r} would share {Path(self.models)}/"
                f"{self.comp}/ with the {'shipped recipe set' if self.comp in RECIPE_SETS else 'offline weights'}"
                f"; rename the folder (e.g. input/{self.comp}-comp); reserved: "
                f"{', '.join(RESERVED_COMPS)}"
            )

    @classmethod
    def under(cls, root: str | Path, comp: str) -> Workspace:
        """Today's layout below ``root``: ``root/models``, ``root/folds``, ``root/submissions``."""
        root = Path(root)
        return cls(comp=comp, models=root / "models", output=root)

    # ---------------------------------------------------------------- folds stage
    @property
    def folds_dir(self) -> Path:
        return Path(self.output) / "folds"

    @property
    def folds_csv(self) -> Path:
        return self.folds_dir / f"{self.comp}.csv"

    @property
    def duplicates_csv(self) -> Path:
        return self.folds_dir / f"{self.comp}.duplicates.csv"

    # ---------------------------------------------------------------- caches
    @property
    def cache(self) -> Path:
        return Path(self.cache_root) if self.cache_root else self.runs_dir / ".cache"

    @property
    def hash_cache(self) -> Path:
        return self.cache / "hashes_phash.csv"

    def decode_cache(self, split: str, size: int) -> Path:
        """``(N, size, size, 3) uint8`` memory map of the ``split`` ("train"/"test") images."""
        return self.cache / f"{split}_{size}.u8"

    # ---------------------------------------------------------------- train stage
    def embedding(self, key: str, split: str, view: str) -> Path:
        """Frozen-backbone embeddings ``(N, D)`` of ``split`` under ``view``, shared by every fold,
        head and member kind of the backbone ``key`` (``<backbone>_<size>_<weights>``)."""
        return self.runs_dir / "embeddings" / key / f"{split}_{view}.npz"

    RECIPE_SETS = RECIPE_SETS

    def recipe(self, run: str) -> Path:
        """``<models>/<run>.toml``, else the shipped set's ``<models>/{cpu,gpu}/<run>.toml``. A run
        named like a folder of ``<models>/<comp>/`` that is not a run is refused."""
        if run in RESERVED_RUNS or run.startswith("."):
            raise PipelineError(
                f"run {run!r}: {self.runs_dir}/{run}/ holds "
                f"{'shared embeddings' if run == 'embeddings' else 'a teacher' if run == 'teachers' else 'caches'}"
                f", not a run; save the recipe under another name (reserved: "
                f"{', '.join(RESERVED_RUNS)} and names starting with '.')"
            )
        own = Path(self.models) / f"{run}.toml"
        for name in self.RECIPE_SETS:
            shipped = Path(self.models) / name / f"{run}.toml"
            if not own.is_file() and shipped.is_file():
                return shipped
        return own

    @property
    def runs_dir(self) -> Path:
        return Path(self.models) / self.comp

    @property
    def plan(self) -> Path:
        """``make train BUDGET=...``'s plan: epochs per run, written once, reused by re-runs."""
        return self.runs_dir / "plan.toml"

    def run_dir(self, run: str) -> Path:
        return self.runs_dir / run

    def fold_dir(self, run: str, fold: int) -> Path:
        return self.run_dir(run) / f"fold{fold}"

    def all_rows_dir(self, run: str) -> Path:
        """A member's model fitted on every train row (kinds with a cheap fit): its test
        logits replace the folds' mean (``Kind.fit_all_rows``)."""
        return self.run_dir(run) / "full"

    def fit_logits(self, run: str, fold: int) -> Path:
        """The fold model's logits on its own training rows, made when a student's teacher
        ensemble counts the run among its members (``train/kinds/student.py``)."""
        return self.fold_dir(run, fold) / "fit.npz"

    def teacher_targets(self, teacher: str, fold: int) -> Path:
        """Soft targets for the students of fold ``fold`` from the finished ensemble ``teacher``:
        made only from what never saw fold ``fold``'s labels (``pipeline/teach``)."""
        return self.runs_dir / "teachers" / teacher / f"fold{fold}.npz"

    def job_log(self, run: str, fold: int) -> Path:
        """Console output of a (run, fold) trained by a worker (``JOBS`` > 1, ``EXECUTOR=ray``)."""
        return self.run_dir(run) / "logs" / f"fold{fold}.log"

    def trained_runs(self) -> list[str]:
        """Runs whose ``oof.npz`` exists, sorted."""
        return sorted(p.parent.name for p in self.runs_dir.glob("*/oof.npz"))

    # ---------------------------------------------------------------- ensemble, report, submit
    @property
    def submissions_dir(self) -> Path:
        return Path(self.output) / "submissions" / self.comp

    def submission_dir(self, name: str) -> Path:
        return self.submissions_dir / name

    def report_dir(self, name: str) -> Path:
        return self.submission_dir(name) / "report"

    def predict_dir(self, name: str) -> Path:
        """``make predict``: submission.csv, predict.json and per-member logits ``logits/``."""
        return self.submission_dir(name) / "predict"

    def package_dir(self, name: str) -> Path:
        """``make package``: ``dataset/`` (for kaggle datasets create) and ``kernel/``."""
        return Path(self.output) / "package" / self.comp / name

    @property
    def ledger(self) -> Path:
        return self.submissions_dir / "ledger.csv"


def default_comp(comp: str | None, slug: str) -> str:
    """``--comp``, else ``input/<slug>`` when ``--slug`` is given (``make ... SLUG=``), else make
    demo's competition. The one place this default lives."""
    return comp or (f"input/{slug}" if slug else DEFAULT_COMP)


def add_workspace_args(s: argparse.ArgumentParser, cache: bool = True, slug: str = "") -> None:
    """The competition and the roots of its workspace, which every verb taking a competition
    declares (``python -m pipeline`` and the notebook's ``python -m pipeline.predict``): ``--comp``,
    ``--slug`` (``slug``: what else it means for the verb), ``--models``, ``--output`` and, where
    the verb decodes images, ``--cache``."""
    s.add_argument(
        "--comp",
        default=None,
        help="competition folder, e.g. input/leaves (input/<slug> with --slug, else "
        f"{DEFAULT_COMP})",
    )
    s.add_argument(
        "--slug",
        default="",
        help=f"the competition's Kaggle slug: --comp defaults to input/<slug>{slug}",
    )
    s.add_argument(
        "--models", default="models", help="recipes <run>.toml and trained runs <comp>/<run>/"
    )
    s.add_argument("--output", default=".", help="where folds/ and submissions/ are written")
    if cache:
        s.add_argument(
            "--cache", default="", help="decode and hash caches (default <models>/<comp>/.cache)"
        )
