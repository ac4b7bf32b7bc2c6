"""What ``EXECUTOR=kaggle`` uploads, and the code its notebooks run on Kaggle.

Three private datasets under ``<OUT>/package/<comp>/train/`` (each ``<part>/dataset/`` for
``kaggle datasets create|version -p``), and one notebook folder per slot (``nb<i>/kernel/``):

- ``code``: the pipeline's modules (no tools), ``spec.json`` (the resolved recipes, the folds
  hash, threads, trackers, the packages to pin), ``folds/<comp>.csv`` and each recipe's offline
  weights (``weights/``, with their ``.json`` sidecars);
- ``data``: the competition folder, only when it is not a Kaggle competition the user joined
  (then the notebook mounts it through ``competition_sources``);
- ``resume``: ``<run>/fold<k>/`` of the folds a stopped notebook left half done (``last.pt`` and
  what the fold wrote beside it), only when a retry needs it.

Nothing else is written: every file is copied by name, and ``audit`` refuses a text file that
holds this machine's Kaggle credentials. ``notebook_main`` is what a notebook runs, from the
uploaded source: it trains its jobs with ``run_job`` exactly as a local worker does, each fold
into ``/kaggle/working/models/<comp>/<run>/fold<k>/`` and its output into ``.../logs/``, and
records each job's end in ``/kaggle/working/status.json``.
"""

from __future__ import annotations

import contextlib
import dataclasses
import hashlib
import json
import shutil
import tempfile
from pathlib import Path

from ... import artifacts
from ...errors import PipelineError
from ...util.notebook import PATHS

# installed by the notebook when the Kaggle image lacks them or holds another version (pip, with
# the notebook's internet on); torch stays the image's own CUDA build
PINS = ("albumentations", "timm")
STATUS = "status.json"

NOTEBOOK = '''"""Training notebook written by `make train EXECUTOR=kaggle`: internet on (pip), GPU."""
import importlib.metadata, os, subprocess, sys
from pathlib import Path

{paths}
BATCH = {batch}


def version(name):
    try:
        return importlib.metadata.version(name)
    except importlib.metadata.PackageNotFoundError:
        return None


# an exact version, or "": any, installed only when missing
want = [n + (f"=={{v}}" if v else "") for n, v in BATCH["pins"].items()
        if (version(n) != v if v else version(n) is None)]
if want:  # what the Kaggle image lacks: from PyPI (this notebook has internet)
    subprocess.run([sys.executable, "-m", "pip", "install", "-q", *want], check=True)
code = first(BATCH["code"], f"datasets/{{BATCH['owner']}}/{{BATCH['code']}}")
sys.path.insert(0, str(code))
from pipeline.train.executors.kaggle_files import notebook_main  # noqa: E402

notebook_main(INPUT, WORKING, code, BATCH)
'''


def write_code(root: Path, ctx, spec: dict, copy_source, dataset_id: str) -> None:
    """The ``code`` dataset: source (``copy_source``, make package's allow-list), ``spec.json``,
    the folds file and each recipe's offline weights, whose paths the spec makes relative."""
    copy_source(root / "pipeline")
    recipes = {}
    for run, recipe in ctx.recipes.items():
        d = recipe.to_dict()
        if recipe.pretrained_file:
            src = Path(recipe.pretrained_file)
            for f in (src, src.with_suffix(".json")):
                if f.is_file():
                    (root / "weights").mkdir(exist_ok=True)
                    shutil.copyfile(f, root / "weights" / f.name)
            d["pretrained_file"] = f"weights/{src.name}"
        recipes[run] = d
    artifacts.write_json(root / "spec.json", {**spec, "recipes": recipes})
    (root / "folds").mkdir()
    shutil.copyfile(ctx.ws.folds_csv, root / "folds" / f"{ctx.ws.comp}.csv")
    _metadata(root, dataset_id)


CREDENTIALS = ("kaggle.json", "access_token", "access_token.txt", "credentials.json")


def write_data(root: Path, comp_root: Path, dataset_id: str) -> None:
    """The ``data`` dataset: the competition folder's files (``data_files``)."""
    for path, rel in data_files(comp_root):
        (root / rel).parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(path, root / rel)
    _metadata(root, dataset_id)


def data_files(comp_root: Path) -> list[tuple[Path, Path]]:
    """The competition folder's files as uploaded: no links, no hidden files, no credentials
    file a user left there. ``(path, relative path)`` pairs, sorted."""
    found = []
    for path in sorted(Path(comp_root).rglob("*")):
        rel = path.relative_to(comp_root)
        hidden = any(p.startswith(".") for p in rel.parts)
        if path.is_file() and not (path.is_symlink() or hidden or path.name in CREDENTIALS):
            found.append((path, rel))
    return found


def listing_key(comp_root: Path) -> str:
    """sha256 of the data files' names, sizes and modification times: the same key means the
    same upload, without reading gigabytes of images."""
    h = hashlib.sha256()
    for path, rel in data_files(comp_root):
        st = path.stat()
        h.update(f"{rel.as_posix()}\0{st.st_size}\0{st.st_mtime_ns}\n".encode())
    return h.hexdigest()


def write_resume(root: Path, ws, jobs, dataset_id: str) -> list:
    """The ``resume`` dataset: each job's half-done fold folder (with ``last.pt``); returns the
    jobs it holds."""
    held = []
    for job in jobs:
        fdir = ws.fold_dir(job.run, job.fold)
        if not (fdir / "last.pt").is_file():
            continue
        dst = root / job.run / f"fold{job.fold}"
        dst.mkdir(parents=True)
        for f in sorted(p for p in fdir.iterdir() if p.is_file() and not p.is_symlink()):
            shutil.copyfile(f, dst / f.name)
        held.append(job)
    _metadata(root, dataset_id)
    return held


def _metadata(root: Path, dataset_id: str) -> None:
    meta = {"title": dataset_id.split("/")[1], "id": dataset_id, "licenses": [{"name": "other"}]}
    artifacts.write_json(root / "dataset-metadata.json", meta)


def write_notebook(root: Path, kernel_id: str, batch: dict, sources: dict, gpu: bool) -> None:
    """A notebook folder for ``kaggle kernels push -p``: ``train.ipynb`` (and the same code as
    ``train.py``) training ``batch["jobs"]``, and its metadata (private, GPU, internet on)."""
    root.mkdir(parents=True)
    code = NOTEBOOK.format(paths=PATHS, batch=json.dumps(batch, indent=4))
    artifacts.atomic_write_text(root / "train.py", code)
    cell = {"cell_type": "code", "execution_count": None, "metadata": {}, "outputs": []}
    notebook = {
        "cells": [{**cell, "source": code.splitlines(keepends=True)}],
        "metadata": {"kernelspec": {"name": "python3", "display_name": "Python 3"}},
        "nbformat": 4,
        "nbformat_minor": 5,
    }
    artifacts.write_json(root / "train.ipynb", notebook)
    meta = {
        "id": kernel_id,
        "title": kernel_id.split("/")[1],
        "code_file": "train.ipynb",
        "language": "python",
        "kernel_type": "notebook",
        "is_private": True,
        "enable_gpu": gpu,
        "enable_internet": True,  # pip installs PINS the image lacks (docs/kaggle.md: why)
        "dataset_sources": sources["datasets"],
        "competition_sources": sources["competitions"],
        "kernel_sources": [],
    }
    artifacts.write_json(root / "kernel-metadata.json", meta)


def audit(root: Path, secrets: list[str]) -> None:
    """No text file under ``root`` (what is uploaded) holds one of ``secrets``; a credentials
    file by name is never there either."""
    secrets = [s for s in secrets if len(s) >= 8]
    for path in sorted(p for p in root.rglob("*") if p.is_file()):
        rel = path.relative_to(root).as_posix()
        if path.name in (*CREDENTIALS, ".env"):
            raise PipelineError(f"EXECUTOR=kaggle: {rel} would be uploaded; remove it")
        if path.suffix in (".py", ".json", ".toml", ".ipynb", ".csv", ".txt"):
            text = path.read_text("utf-8", "replace")
            if any(s in text for s in secrets):
                raise PipelineError(
                    f"EXECUTOR=kaggle: {rel} holds this machine's Kaggle credentials; nothing was "
                    "uploaded: remove them from that file"
                )


# ---------------------------------------------------------------- on Kaggle
def notebook_main(inp: Path, working: Path, code: Path, batch: dict) -> None:
    """Train ``batch["jobs"]`` here (a Kaggle notebook) as a local worker would: each fold into
    ``working/models/<comp>/<run>/fold<k>/`` (from the resume dataset's ``last.pt`` when one
    came), its output into ``logs/fold<k>.log``; ``status.json`` says how each job ended."""
    from .base import default_threads, prepare_shared, run_job

    ctx = notebook_context(inp, working, code, batch)
    threads = batch["threads"] or default_threads(1)  # THREADS, else this notebook's cores
    status: dict[str, str] = {}
    jobs = [_job(t) for t in batch["jobs"]]
    prepare_shared(ctx, jobs)
    for job in jobs:
        fdir = ctx.ws.fold_dir(job.run, job.fold)
        half = _mounted(inp, batch, "resume", f"{job.run}/fold{job.fold}")
        if half is not None and not fdir.exists():
            shutil.copytree(half, fdir)
        log = ctx.log(job)
        log.parent.mkdir(parents=True, exist_ok=True)
        with open(log, "a", buffering=1) as f, contextlib.redirect_stdout(f):
            with contextlib.redirect_stderr(f):
                print(f"== {job.tag}: Kaggle notebook, {threads} threads, {ctx.device} ==")
                try:
                    run_job(ctx, job, threads)
                    status[job.tag] = "done"
                except PipelineError as e:  # a user-fixable error: retrying repeats it
                    print(f"error: {e}")
                    status[job.tag] = f"error: {e}"
        artifacts.write_json(working / STATUS, status)
        print(f"{job.tag}: {status[job.tag]}", flush=True)


def notebook_context(inp: Path, working: Path, code: Path, batch: dict):
    """The ``TrainContext`` of the driver, rebuilt from the uploaded spec on Kaggle: the same
    recipes, folds file (its hash checked) and threads; models and caches under ``working``."""
    import torch

    from ...competition import load_competition
    from ...config import recipe_from_dict
    from ...workspace import Workspace
    from ..assemble import read_training_folds
    from ..context import TrainContext

    spec = json.loads((code / "spec.json").read_text())
    data = _mounted(inp, batch, "data", "") or _mounted(inp, batch, "competition", "")
    if data is None:
        raise SystemExit(f"error: the competition is not mounted under {inp}")
    comp = load_competition(data)
    comp = dataclasses.replace(comp, name=spec["comp"])  # its mount's name is Kaggle's
    # caches outside working/: not saved as output (nor counted in its 20 GB), never pulled
    cache = Path(tempfile.mkdtemp(prefix="pipeline-cache-"))
    ws = Workspace(spec["comp"], working / "models", code, cache)
    folds_df, fhash = read_training_folds(comp, ws)
    if fhash != spec["fhash"]:
        raise SystemExit(f"error: {ws.folds_csv} is not the folds file the driver trains on")
    recipes = {}
    for run, d in spec["recipes"].items():
        if d["pretrained_file"]:
            d = {**d, "pretrained_file": str(code / d["pretrained_file"])}
        recipes[run] = recipe_from_dict(d, f"spec.json {run}")
    device = "cuda" if torch.cuda.is_available() else "cpu"
    ctx = TrainContext.build(comp, ws, folds_df, fhash, recipes, device)
    return dataclasses.replace(ctx, track=frozenset(spec["track"]))


def _mounted(inp: Path, batch: dict, part: str, sub: str) -> Path | None:
    """Where Kaggle mounted ``part`` (a dataset of the batch, or the competition), + ``sub``."""
    name = batch.get(part)
    if not name:
        return None
    kind = "competitions" if part == "competition" else f"datasets/{batch['owner']}"
    for base in (inp / name, inp / kind / name):
        if (base / sub).is_dir():
            return base / sub
    return None


def _job(tag: list):
    from ..context import Job

    return Job(tag[0], int(tag[1]))


def python_env(track: frozenset[str]) -> dict[str, str]:
    """What the notebook pins: ``PINS`` at the versions installed here (the driver's), and
    TensorBoard at any version when the fold events are written (Kaggle's image has one)."""
    import importlib.metadata

    pins = {n: importlib.metadata.version(n) for n in PINS}
    return pins | ({"tensorboard": ""} if "tensorboard" in track else {})
