"""The fitted ensemble as a versioned, pickle-free state: JSON for structure, npz for arrays.

``ensemble_state.json`` names the method, each estimator's class (only classes of
``pipeline.ensemble`` load), its constructor parameters and which learned attributes (``weights_``,
``coef_``, ``cuts_``, ...) sit in ``ensemble_state.npz`` under which key. ``load_state`` rebuilds
the estimator, whose ``predict_proba`` then applies to new ``(M, T, C)`` test logits of the same
members under the same views: what a later prediction stage (code competitions) needs, without
``pickle`` and its arbitrary code on load.
"""

from __future__ import annotations

import importlib
import inspect
import io
from pathlib import Path
from typing import Any

import numpy as np

from .. import artifacts
from ..errors import ArtifactError

VERSION = 1
PACKAGE = __package__  # estimators load only from here


def to_state(est: Any, arrays: dict[str, np.ndarray], prefix: str = "est") -> dict[str, Any]:
    """JSON-able description of ``est``; its array attributes go into ``arrays``."""
    cls = type(est)
    if not cls.__module__.startswith(PACKAGE + "."):
        raise TypeError(f"{cls.__module__}.{cls.__name__} is not an ensemble estimator")
    params, children = {}, {}
    for name, par in inspect.signature(cls.__init__).parameters.items():
        if name == "self" or par.kind in (par.VAR_POSITIONAL, par.VAR_KEYWORD):
            continue
        value = getattr(est, name)
        if hasattr(value, "fit"):  # a nested estimator (WithPost's method and post)
            children[name] = to_state(value, arrays, f"{prefix}.{name}")
        else:
            params[name] = list(value) if isinstance(value, tuple) else value
    fitted = {}
    for name, value in vars(est).items():
        if not name.endswith("_") or name.startswith("_"):
            continue
        kind = "torch" if type(value).__module__.startswith("torch") else "numpy"
        key = f"{prefix}.{name}"
        arrays[key] = value.detach().cpu().numpy() if kind == "torch" else np.asarray(value)
        fitted[name] = {"key": key, "kind": kind, "scalar": np.ndim(arrays[key]) == 0}
    return {
        "module": cls.__module__,
        "class": cls.__name__,
        "params": params,
        "children": children,
        "fitted": fitted,
    }


def from_state(state: dict[str, Any], arrays: dict[str, np.ndarray], path: Path) -> Any:
    """The estimator ``to_state`` described, learned attributes restored."""
    module = state["module"]
    if not module.startswith(PACKAGE + "."):
        raise ArtifactError(f"{path}: estimator module {module!r} is not part of {PACKAGE}")
    cls = getattr(importlib.import_module(module), state["class"])
    kwargs = dict(state["params"])
    kwargs |= {k: from_state(v, arrays, path) for k, v in state["children"].items()}
    est = cls(**kwargs)
    for name, info in state["fitted"].items():
        value = arrays[info["key"]]
        if info["kind"] == "torch":
            import torch

            value = torch.from_numpy(value)
        elif info["scalar"]:
            value = value.item()
        setattr(est, name, value)
    return est


def save_state(out: Path, method: str, est: Any, meta: dict[str, Any]) -> None:
    """Write ``ensemble_state.npz`` then ``ensemble_state.json`` (the JSON last: complete)."""
    arrays: dict[str, np.ndarray] = {}
    state = {"version": VERSION, "method": method, **meta, "estimator": to_state(est, arrays)}
    buf = io.BytesIO()
    np.savez(buf, **arrays)
    artifacts.atomic_write_bytes(out / "ensemble_state.npz", buf.getvalue())
    artifacts.write_json(out / "ensemble_state.json", state)


def load_state(out: Path, rerun: str) -> tuple[dict[str, Any], Any]:
    """``(state JSON, estimator)`` from ``ensemble_state.{json,npz}`` in ``out``."""
    path = out / "ensemble_state.json"
    state = artifacts.read_json(path, rerun)
    if state.get("version") != VERSION:
        raise ArtifactError(
            f"{path} is state version {state.get('version')!r}, this pipeline reads {VERSION}; "
            f"re-run: {rerun}"
        )
    arrays = artifacts.read_npz(out / "ensemble_state.npz", set(), rerun)
    try:
        return state, from_state(state["estimator"], arrays, path)
    except (KeyError, TypeError, AttributeError) as e:
        raise ArtifactError(
            f"{path} does not describe an estimator ({e}); re-run: {rerun}"
        ) from None
