"""What a Kaggle package may ship, and nothing else: an allow-list of files (the package's
Python modules, each member's recipe and fold weights, the ensemble state, metadata) checked
over every file before the package is kept, and no text file holding this machine's Kaggle
credentials. A ``kaggle.json``, ``.env`` or token in the source folder, ``MODELS``, the
competition folder or the project never rides along."""

from __future__ import annotations

import hashlib
import json
import os
import re
import shutil
from pathlib import Path

from ..errors import PipelineError


def source_root() -> Path:
    """The ``pipeline`` package whose modules the dataset ships."""
    return Path(__file__).resolve().parents[1]


# what a package may hold, relative to package/<comp>/<name>/ (``audit`` checks every file)
ALLOWED = (
    r"dataset/pipeline/(?!tools/)([\w]+/)*[\w]+\.py",
    r"dataset/models/{comp}/[^/]+/(config\.toml|member\.json)",
    r"dataset/models/{comp}/[^/]+/(fold\d+|full)/(done\.json|weights\.safetensors)",
    r"dataset/submissions/{comp}/{name}/ensemble_state\.(json|npz)",
    r"dataset/dataset-metadata\.json",
    r"kernel/(predict\.py|predict\.ipynb|kernel-metadata\.json)",
)
TEXT = (".py", ".json", ".toml", ".ipynb")


def audit(root: Path, comp: str, name: str) -> None:
    """Every file under ``root`` is on the allow-list, and no text file holds this machine's
    Kaggle credentials: a package is uploaded, so nothing else (kaggle.json, .env, a token,
    a stray file) may ride along."""
    allowed = [re.compile(p.format(comp=re.escape(comp), name=re.escape(name))) for p in ALLOWED]
    secrets = [s for s in _local_secrets() if len(s) >= 8]
    for path in sorted(p for p in root.rglob("*") if not p.is_dir()):
        rel = path.relative_to(root).as_posix()
        if path.is_symlink() or not any(a.fullmatch(rel) for a in allowed):
            raise PipelineError(
                f"make package: {rel} is not something a package ships (source .py, recipes, "
                "fold weights, the ensemble state, metadata); nothing was written: remove it "
                "from the source, MODELS or the ensemble folder"
            )
        if path.suffix in TEXT and any(s in path.read_text("utf-8", "replace") for s in secrets):
            raise PipelineError(
                f"make package: {rel} holds this machine's Kaggle credentials; nothing was "
                "written: remove them from that file"
            )


def _local_secrets() -> list[str]:
    """The Kaggle key and tokens this machine has (environment, kaggle.json, token files)."""
    env = os.environ
    home = Path(env.get("HOME") or Path.home())
    found = [env.get("KAGGLE_KEY", ""), env.get("KAGGLE_API_TOKEN", "")]
    for folder in (Path(env.get("KAGGLE_CONFIG_DIR") or home / ".kaggle"),):
        try:
            found.append(str(json.loads((folder / "kaggle.json").read_text()).get("key", "")))
        except (OSError, ValueError, AttributeError):
            pass
        for token in ("access_token", "access_token.txt"):
            try:
                found.append((folder / token).read_text().strip())
            except OSError:
                pass
    return found


def copy_source(src: Path, dst: Path) -> None:
    """The package's Python modules only (an allow-list: no tools, caches, or any other file
    that sits in the source folder, such as a kaggle.json or .env)."""
    for path in sorted(src.rglob("*.py")):
        rel = path.relative_to(src)
        if rel.parts[0] == "tools" or "__pycache__" in rel.parts or path.is_symlink():
            continue
        (dst / rel).parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(path, dst / rel)


def digest(root: Path) -> str:
    """sha256 over every file's relative path and bytes: names a dataset version, the same for
    the same ensemble packaged twice (fp16 and fp32 weights are written deterministically)."""
    h = hashlib.sha256()
    for path in sorted(p for p in root.rglob("*") if p.is_file()):
        h.update(path.relative_to(root).as_posix().encode() + b"\0")
        with path.open("rb") as f:
            for chunk in iter(lambda: f.read(1 << 20), b""):
                h.update(chunk)
    return h.hexdigest()
