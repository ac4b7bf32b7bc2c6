"""``make package``: a saved ensemble as a Kaggle dataset and a notebook that predicts offline.

Writes ``<OUT>/package/<comp>/<name>/``:

- ``dataset/`` for ``kaggle datasets create -p``: the pipeline source, per member
  ``models/<comp>/<run>/{config.toml, member.json, fold<k>/{done.json, weights.safetensors}}``
  (weights in the chosen precision), ``submissions/<comp>/<name>/ensemble_state.{json,npz}``
  and ``dataset-metadata.json``;
- ``kernel/`` for ``kaggle kernels push -p``: ``kernel-metadata.json`` (internet off, GPU on or
  off, the dataset and the competition as sources), ``predict.ipynb`` and the same code as
  ``predict.py``, which runs the predict stage on ``/kaggle/input/<slug>/`` and writes
  ``/kaggle/working/submission.csv``.

The Kaggle commands are printed; with credentials and without ``DRY_RUN=1`` they run as a loop
(``kaggle_loop``): the dataset created or versioned, the notebook pushed, followed, its output
pulled into ``submissions/<comp>/<name>/kaggle/v<N>/``, checked and recorded in the ledger.
"""

from __future__ import annotations

import json
import re
import shutil
from pathlib import Path
from typing import Any

from .. import artifacts
from ..errors import PipelineError
from ..model.checkpoint import read_checkpoint
from ..submit.kaggle import kaggle_user
from ..util.durations import parse_duration
from ..util.notebook import PATHS
from ..workspace import Workspace
from . import shipping
from .bad_images import DEFAULT_MAX_BAD, parse_max_bad
from .budget import DEFAULT_LIMIT, margin_for
from .kaggle_loop import kaggle_loop
from .saved import WEIGHTS, Saved, load_saved

NOTEBOOK = '''"""Code-competition notebook written by `make package`: predicts offline, internet off."""
import json, os, sys
from argparse import Namespace
from pathlib import Path

{paths}
PARAMS = {params}


data = first(PARAMS["dataset"], f"datasets/{{PARAMS['owner']}}/{{PARAMS['dataset']}}")
test = first(PARAMS["slug"], f"competitions/{{PARAMS['slug']}}")
sys.path.insert(0, str(data))
from pipeline.errors import PipelineError  # noqa: E402
from pipeline.predict.args import run_predict  # noqa: E402
from pipeline.predict.stage import FORBIDDEN  # noqa: E402

args = dict(
    comp=PARAMS["comp"], models=str(data / "models"), output=str(data), name=PARAMS["name"],
    test=str(test), to=str(WORKING / "submission.csv"), device="auto",
    precision=PARAMS["precision"], batch_size=64, time_limit=PARAMS["time_limit"],
    on_bad_image="fallback", max_bad=PARAMS["max_bad"],  # a hidden test set cannot be fixed
)
try:
    run_predict(Namespace(**args))
except PipelineError as e:  # one line, not a traceback: what went wrong and the fix
    raise SystemExit(f"error: {{e}}") from None
import pipeline  # noqa: E402

loaded = sorted({{m.split(".")[0] for m in sys.modules}} & set(FORBIDDEN))
(WORKING / "imports.json").write_text(json.dumps({{"forbidden": loaded, "pipeline": pipeline.__file__}}))
assert not loaded, f"imported {{loaded}}, which a Kaggle notebook may lack"
'''


def package_stage(
    ws: Workspace,
    name: str,
    slug: str = "",
    owner: str = "",
    precision: str = "fp16",
    gpu: bool = True,
    time_limit: str = DEFAULT_LIMIT,
    dry_run: bool = False,
    max_bad: str = DEFAULT_MAX_BAD,
    comp_root: Path | None = None,
) -> dict[str, Any]:
    """Write ``dataset/`` and ``kernel/`` for ensemble ``name``; print (and unless ``dry_run``
    with credentials, run: ``kaggle_loop``) the Kaggle commands; ``comp_root``, the competition
    folder, holds the public test images the notebook's output is checked on. Returns the
    parameters the notebook uses, and ``version``: the notebook version validated, or ""."""
    if precision not in ("fp16", "fp32"):
        raise PipelineError(f"PRECISION={precision!r}: a package stores fp16 or fp32 weights")
    parse_max_bad(max_bad)  # refused here, not in the notebook
    parse_duration(time_limit, "TIME_LIMIT")
    saved = load_saved(ws, name)
    slug = slug or saved.state.get("slug") or saved.state["comp"]
    owner = owner or kaggle_user() or "YOUR_KAGGLE_USERNAME"
    base = _slugify(f"{saved.state['comp']}-{name}")
    params = {
        "comp": saved.state["comp"],
        "name": name,
        "slug": slug,
        "owner": owner,
        "dataset": f"{base}-models"[:50],
        "kernel": f"{base}-predict"[:50],
        "precision": "auto",  # compute as trained; fp16 weights are cast up on loading
        "time_limit": time_limit,
        "max_bad": max_bad,
    }
    out = ws.package_dir(name)
    tmp = out.with_name(f".{out.name}.tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    try:
        _write_dataset(ws, saved, tmp / "dataset", params, precision)
        _write_kernel(tmp / "kernel", params, gpu)
        shipping.audit(tmp, saved.state["comp"], name)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    shutil.rmtree(out, ignore_errors=True)
    tmp.replace(out)  # whole: a killed package run leaves only the .tmp folder
    size = sum(p.stat().st_size for p in (out / "dataset").rglob("*") if p.is_file())
    print(f"wrote {out}/dataset ({size / 2**20:.1f} MiB, weights {precision}) and {out}/kernel")
    print(
        "time limit "
        + time_limit
        + ": under it the notebook drops TTA views, then members in this order (weakest "
        + "first): "
        + ", ".join(saved.weakest_first())
    )
    _speed_guide(ws, name, time_limit)
    digest = shipping.digest(out / "dataset")
    note = f"{name} {saved.state.get('method', '?')}, sha256 {digest[:12]}"
    version = kaggle_loop(ws, params, out, note, dry_run, comp_root)
    return {**params, "version": version}


def _speed_guide(ws: Workspace, name: str, time_limit: str) -> None:
    """The last ``make predict`` here (``predict.json``) as a guide to the notebook's time."""
    path = ws.predict_dir(name) / "predict.json"
    try:
        rec = json.loads(path.read_text())
        ips, n = float(rec["img_per_s"]), int(rec["n_test"])
    except (OSError, ValueError, KeyError, TypeError):
        print(f"no speed guide: run make predict NAME={name} TEST=<folder> here first ({path})")
        return
    print(
        f"guide: make predict here ran {ips:.1f} img/s on {rec.get('device', '?')} "
        f"({n} images: ~{n / ips / 60:.1f} min); at that speed {time_limit} "
        f"(less the margin) covers ~{int(ips * _usable(time_limit)):,} test images"
    )


def _usable(time_limit: str) -> float:
    limit = parse_duration(time_limit, "TIME_LIMIT")
    return limit - margin_for(limit)


def _write_dataset(ws: Workspace, saved: Saved, root: Path, params: dict, precision: str) -> None:
    shipping.copy_source(shipping.source_root(), root / "pipeline")
    pkg = Workspace(saved.state["comp"], root / "models", root)
    st = saved.state
    for m in saved.members:
        rdir = pkg.run_dir(m.run)
        rdir.mkdir(parents=True)
        shutil.copyfile(ws.run_dir(m.run) / "config.toml", rdir / "config.toml")
        card = {"classes": st["classes"], "task": st["task"], "folds_hash": st["folds_hash"]}
        artifacts.write_json(rdir / "member.json", card)
        for fold, path in enumerate(m.weights):  # the folds', or the all-rows model's
            fdir = pkg.run_dir(m.run) / path.parent.name
            fdir.mkdir()
            shutil.copyfile(path.parent / "done.json", fdir / "done.json")
            sha = m.hashes[fold] if m.hashes else None
            _write_weights(path, fdir / WEIGHTS, precision, sha, m.damaged_fix(fold))
    sub = pkg.submission_dir(params["name"])
    sub.mkdir(parents=True)
    for f in ("ensemble_state.json", "ensemble_state.npz"):
        shutil.copyfile(saved.path.parent / f, sub / f)
    meta = {
        "title": params["dataset"][:50],
        "id": f"{params['owner']}/{params['dataset']}",
        "licenses": [{"name": "other"}],
    }
    artifacts.write_json(root / "dataset-metadata.json", meta)


def _write_weights(
    src: Path, dst: Path, precision: str, sha: str | None = None, fix: str = ""
) -> None:
    from safetensors.torch import save_file

    if src.suffix == ".safetensors":
        from safetensors.torch import load_file

        state = load_file(str(src))
    else:
        state = read_checkpoint(src, "cpu", fix, sha)[0]["model"]
    half = precision == "fp16"
    state = {
        k: (v.half() if half and v.is_floating_point() else v).contiguous()
        for k, v in state.items()
    }
    save_file(state, str(dst))


def _write_kernel(root: Path, params: dict, gpu: bool) -> None:
    root.mkdir(parents=True)
    code = NOTEBOOK.format(paths=PATHS, params=json.dumps(params, indent=4))
    artifacts.atomic_write_text(root / "predict.py", code)
    cell = {
        "cell_type": "code",
        "execution_count": None,
        "metadata": {},
        "outputs": [],
        "source": code.splitlines(keepends=True),
    }
    notebook = {
        "cells": [cell],
        "metadata": {"kernelspec": {"name": "python3", "display_name": "Python 3"}},
        "nbformat": 4,
        "nbformat_minor": 5,
    }
    artifacts.write_json(root / "predict.ipynb", notebook)
    meta = {
        "id": f"{params['owner']}/{params['kernel']}",
        "title": params["kernel"],
        "code_file": "predict.ipynb",
        "language": "python",
        "kernel_type": "notebook",
        "is_private": True,
        "enable_gpu": gpu,
        "enable_internet": False,
        "dataset_sources": [f"{params['owner']}/{params['dataset']}"],
        "competition_sources": [params["slug"]],
        "kernel_sources": [],
    }
    artifacts.write_json(root / "kernel-metadata.json", meta)


def _slugify(text: str) -> str:
    return re.sub(r"[^a-z0-9]+", "-", text.lower()).strip("-")
