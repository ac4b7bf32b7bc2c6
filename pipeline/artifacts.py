"""Every read and write of the files that are the contracts between stages.

Paths come from ``workspace.Workspace``; this module says what is inside each file.

Writes are atomic (temporary file in the same folder, then ``os.replace``), so a killed process
never leaves a half-written artifact. Readers check shapes and cross-file agreement and raise
``ArtifactError`` with the file, what disagrees and the re-run that fixes it.
"""

from __future__ import annotations

import dataclasses
import io
import json
import tomllib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from .config import DEFAULT_KIND

# the write mechanism is disk/atomic.py's; the stages call it through this module
from .disk.atomic import atomic_write as atomic_write
from .disk.atomic import atomic_write_bytes as atomic_write_bytes
from .disk.atomic import atomic_write_text as atomic_write_text
from .disk.atomic import file_hash as file_hash
from .errors import ArtifactError

# ---------------------------------------------------------------- folds/<comp>.csv


def write_folds(path: str | Path, df: pd.DataFrame) -> Path:
    """``id,label,fold[,group]``, one row per train image in train-CSV order."""
    text = df.to_csv(index=False, lineterminator="\n")
    return atomic_write_text(path, text)


def read_folds(
    path: str | Path, comp_root: str | Path | None = None, task: str | None = None
) -> pd.DataFrame:
    """The folds file; ``comp_root`` (the competition folder) makes the re-run hint exact.
    With ``task``, a file made for another task (its ``task`` column; none: multiclass) is
    refused."""
    path = Path(path)
    rerun = f"make folds COMP={comp_root if comp_root is not None else '<competition folder>'}"
    if not path.is_file():
        raise ArtifactError(f"{path} not found; run: {rerun}")
    df = pd.read_csv(path, dtype={"id": str, "label": str, "task": str})
    missing = {"id", "label", "fold"} - set(df.columns)
    if missing:
        raise ArtifactError(f"{path} lacks column(s) {', '.join(sorted(missing))}; re-run: {rerun}")
    made_for = str(df["task"].iloc[0]) if "task" in df and len(df) else "multiclass"
    if task is not None and made_for != task:
        raise ArtifactError(
            f"{path} was made for a {made_for} task but the competition is now {task} "
            f"(competition.toml changed?); re-run: {rerun}, then retrain"
        )
    return df


# ---------------------------------------------------------------- folds/<comp>.duplicates.csv

DUPLICATES_COLUMNS = ["cluster", "id", "split", "label", "kind", "distance"]


def read_duplicates(
    path: str | Path,
    train_ids: set[str],
    test_ids: set[str],
    classes: list[str],
    rerun: str,
    train_csv: str | Path = "the train CSV",
) -> pd.DataFrame:
    """The duplicates report, its ids and labels checked against the competition's (whose
    labels come from ``train_csv``, named in the error)."""
    path = Path(path)
    if not path.is_file():
        raise ArtifactError(f"{path} not found; run: {rerun}")
    df = pd.read_csv(path, dtype=str, keep_default_na=False)
    missing = set(DUPLICATES_COLUMNS) - set(df.columns)
    if missing:
        raise ArtifactError(f"{path} lacks column(s) {', '.join(sorted(missing))}; re-run: {rerun}")
    for split, ids in (("train", set(train_ids)), ("test", set(test_ids))):
        part = df[df["split"] == split]
        stray = part[~part["id"].isin(ids)]
        if len(stray):
            raise ArtifactError(
                f"{path}: {split} id {stray['id'].iloc[0]!r} is not in the competition's {split} "
                f"set ({len(stray)} such rows); the report is stale, re-run: {rerun}"
            )
    stray = df[(df["split"] == "train") & ~df["label"].isin(classes)]
    if len(stray):
        raise ArtifactError(
            f"{path}: label {stray['label'].iloc[0]!r} is not a class of {train_csv}; "
            f"re-run: {rerun}"
        )
    return df


def label_indices(labels: pd.Series, classes: list[str]) -> np.ndarray:
    """``(N,)`` int64 index of each label in the sorted ``classes`` (the logits' class axis).

    An unknown label is an internal error (callers validate labels first), never a silent -1."""
    idx = pd.Index(classes).get_indexer(labels).astype(np.int64)
    if (idx < 0).any():
        bad = pd.Series(labels)[idx < 0].iloc[0]
        raise ValueError(f"label {bad!r} is not one of the {len(classes)} classes")
    return idx


# ---------------------------------------------------------------- logits npz


def write_logits(path: str | Path, **arrays: Any) -> Path:
    """Save a logits file (oof.npz or test.npz). Strings are stored as unicode arrays."""
    clean = {}
    for k, v in arrays.items():
        a = np.asarray(v)
        if a.dtype == object:
            a = a.astype(str)
        if k == "logits":
            a = a.astype(np.float32)
        clean[k] = a
    buf = io.BytesIO()
    np.savez(buf, **clean)
    return atomic_write_bytes(path, buf.getvalue())


def text_hash(text: str) -> str:
    """Short sha256 of a text (e.g. the ids an embedding file was computed for)."""
    import hashlib

    return hashlib.sha256(text.encode("utf-8")).hexdigest()[:16]


# ---------------------------------------------------------------- features/<key>/<split>_<view>.npz


def write_embedding(path: str | Path, feats: np.ndarray, ids_hash: str) -> Path:
    """``(N, D) float32`` embeddings of one split under one view, tied to its ids."""
    buf = io.BytesIO()
    np.savez(buf, feats=np.asarray(feats, dtype=np.float32), ids_hash=np.array(ids_hash))
    return atomic_write_bytes(path, buf.getvalue())


def read_embedding(path: str | Path, ids_hash: str) -> np.ndarray | None:
    """The cached embeddings, or None when absent, unreadable or made for other ids (rebuilt)."""
    path = Path(path)
    if not path.is_file():
        return None
    try:
        with np.load(path, allow_pickle=False) as z:
            if str(z["ids_hash"]) != ids_hash:
                return None
            return z["feats"]
    except Exception as e:  # truncated, or a CRC that does not match: embed again
        print(f"embeddings {path} are damaged ({type(e).__name__}); computing them again")
        return None


def read_npz(path: str | Path, need: set[str], rerun: str) -> dict[str, np.ndarray]:
    """Load every array of an ``.npz`` artifact; missing, corrupt or incomplete is an error."""
    path = Path(path)
    if not path.is_file():
        raise ArtifactError(f"{path} not found; run: {rerun}")
    try:
        with np.load(path, allow_pickle=False) as z:
            data = {k: z[k] for k in z.files}
    except Exception as e:  # zip/npy errors have many types; all mean "corrupt file"
        raise ArtifactError(f"{path} is unreadable ({type(e).__name__}); re-run: {rerun}") from None
    missing = need - set(data)
    if missing:
        raise ArtifactError(f"{path} lacks {', '.join(sorted(missing))}; re-run: {rerun}")
    return data


def read_logits(path: str | Path, kind: str, rerun: str) -> dict[str, np.ndarray]:
    """Read and shape-check ``oof.npz`` (kind="oof") or ``test.npz`` (kind="test")."""
    need = {"ids", "classes", "views", "logits"} | ({"fold"} if kind == "oof" else set())
    data = read_npz(path, need, rerun)
    v, n, c = data["logits"].shape
    if (v, n, c) != (len(data["views"]), len(data["ids"]), len(data["classes"])):
        raise ArtifactError(
            f"{path}: logits shape {(v, n, c)} disagrees with views/ids/classes "
            f"({len(data['views'])}, {len(data['ids'])}, {len(data['classes'])}); re-run: {rerun}"
        )
    return data


def check_logits_match(
    data: dict[str, np.ndarray],
    path: Path,
    ids: np.ndarray,
    classes: np.ndarray,
    rerun: str,
    folds_hash: str | None = None,
) -> None:
    """Refuse a logits file whose ids, classes or folds hash disagree with the folds file."""
    if len(data["ids"]) != len(ids) or not np.array_equal(data["ids"].astype(str), ids.astype(str)):
        raise ArtifactError(
            f"{path} has {len(data['ids'])} ids that do not match the {len(ids)} expected "
            f"(folds file or test set changed); re-run: {rerun}"
        )
    if not np.array_equal(data["classes"].astype(str), classes.astype(str)):
        raise ArtifactError(
            f"{path} has {len(data['classes'])} classes that differ from the {len(classes)} "
            f"in the folds file; re-run: {rerun}"
        )
    if folds_hash is not None and "folds_hash" in data and str(data["folds_hash"]) != folds_hash:
        raise ArtifactError(
            f"{path} was trained on folds {data['folds_hash']} but the folds file is now "
            f"{folds_hash}; re-run: {rerun}"
        )


# ---------------------------------------------------------------- models/<comp>/<run>/config.toml


def read_run_config(path: str | Path) -> dict[str, Any] | None:
    """A run's resolved ``config.toml`` (recipe, folds hash, versions), or None if absent."""
    path = Path(path)
    if not path.is_file():
        return None
    try:
        return tomllib.loads(path.read_text(encoding="utf-8"))
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as e:
        raise ArtifactError(
            f"{path} is not valid TOML ({e}); delete {path.parent} to retrain this run"
        ) from None


# ---------------------------------------------------------------- submissions/<comp>/...

LEDGER_COLUMNS = (
    "time_utc name method oof_accuracy file sha256 status message metric oof_score nested_score "
    "tag public_score private_score kernel"
).split()
# older ledgers (before metrics; before make lb; before kernel versions) gain the new columns,
# empty; ``kernel`` is ``<owner>/<notebook>/<version>`` for a code competition's rows
_LEDGER_OLD = (LEDGER_COLUMNS[:8], LEDGER_COLUMNS[:11], LEDGER_COLUMNS[:14])


def read_leaderboard(path: str | Path) -> pd.DataFrame | None:
    """An ensemble's ``leaderboard.csv`` (one row per member and method), or None if absent."""
    path = Path(path)
    return pd.read_csv(path) if path.is_file() else None


def append_ledger(path: str | Path, row: list[str]) -> Path:
    """Read ``ledger.csv`` (if any), add one row of ``LEDGER_COLUMNS``, rewrite it atomically."""
    path = Path(path)
    try:
        old = (
            pd.read_csv(path, dtype=str, keep_default_na=False)
            if path.is_file()
            else pd.DataFrame(columns=LEDGER_COLUMNS)
        )
    except (ValueError, UnicodeDecodeError):  # pandas parser errors are ValueErrors
        old = pd.DataFrame()
    old = _ledger_columns(old, path)
    old.loc[len(old)] = row
    return write_csv(path, old)


def read_ledger(path: str | Path) -> pd.DataFrame:
    """``ledger.csv`` as text columns ``LEDGER_COLUMNS`` (older ledgers gain empty ones)."""
    path = Path(path)
    if not path.is_file():
        raise ArtifactError(f"{path} not found; submit first: make submit")
    try:
        df = pd.read_csv(path, dtype=str, keep_default_na=False)
    except (ValueError, UnicodeDecodeError):
        df = pd.DataFrame()
    return _ledger_columns(df, path)


def sent_to_kaggle(ledger: str | Path, name: str) -> str:
    """When ensemble ``name`` was last sent to Kaggle (not a dry run) by the ledger, else ""."""
    return _sent(ledger).get(name, "")


def _sent(ledger: str | Path) -> dict[str, str]:
    """``{ensemble name: time of its last send}`` of the ledger's rows sent to Kaggle."""
    if not Path(ledger).is_file():
        return {}
    rows = read_ledger(ledger)
    rows = rows[rows["status"] == "submitted"]
    return dict(zip(rows["name"], rows["time_utc"], strict=True))  # later rows win


def series(submissions: str | Path, name: str) -> list[str]:
    """``name`` and the names ``make ensemble`` kept beside it (``name.2``, ``name.3``, ...) that
    exist under ``submissions``, oldest first."""
    found = [name] if (Path(submissions) / name).is_dir() else []
    n = 2
    while (Path(submissions) / f"{name}.{n}").is_dir():
        found.append(f"{name}.{n}")
        n += 1
    return found


def kept_name(ledger: str | Path, name: str) -> str:
    """The folder a new ``make ensemble NAME=name`` writes: ``name``, unless the ledger records
    that folder as sent to Kaggle; then the next name of its series that was not sent
    (``name.2``, ``name.3``, ...). A sent ensemble is never overwritten."""
    sent, n, out = _sent(ledger), 1, name
    while out in sent:
        n += 1
        out = f"{name}.{n}"
    return out


def _ledger_columns(df: pd.DataFrame, path: Path) -> pd.DataFrame:
    if list(df.columns) in [list(c) for c in _LEDGER_OLD]:
        df = df.reindex(columns=LEDGER_COLUMNS, fill_value="")
    if list(df.columns) != LEDGER_COLUMNS:
        raise ArtifactError(f"{path} is not a ledger CSV; move it aside and re-run")
    return df


# ---------------------------------------------------------------- <run>/fold<k>/done.json


@dataclass(frozen=True)
class FoldDone:
    """A finished fold (``done.json``, written last: the fold is skipped on re-run). Every kind
    of member writes these fields; what only one kind has (a feature head's L2 path) is in
    ``extra``, written beside them."""

    kind: str  # the member kind that fitted it (train/kinds/)
    best_epoch: int  # the epoch best.pt holds (1 for a kind without epochs)
    epochs: int  # epochs run (an early stop runs fewer than the recipe's)
    metric: str  # the competition's metric that val_score is
    val_score: float  # of best.pt on the held-out rows, view none
    val_acc: float  # the best held-out accuracy of any epoch
    mean: list[float]  # the input normalisation the model expects
    std: list[float]
    threads: int  # torch threads (float sums differ with the thread count)
    seconds: float  # this process's part (a resumed fold's last attempt)
    # whether the held-out labels chose this model (a best epoch before the recipe's last, say):
    # such a fold model cannot teach its fold's student. None: an older file that did not say
    holdout_used: bool | None
    val_loss: float | None = None  # of best.pt (kinds that record it)
    # sha256 of best.pt as written, checked on every load (torch.load checks no CRC); None: an
    # older file that did not record it (its zip CRCs are still checked)
    best_sha256: str | None = None
    extra: dict[str, Any] = field(default_factory=dict)


_DONE_FIELDS = [f.name for f in dataclasses.fields(FoldDone) if f.name != "extra"]


def write_done(path: str | Path, done: FoldDone) -> Path:
    d = dataclasses.asdict(done)
    extra = d.pop("extra")
    for key in ("val_loss", "best_sha256"):
        if d[key] is None:
            del d[key]
    return write_json(path, {**d, **extra})


def read_done(path: str | Path, rerun: str) -> FoldDone:
    """``done.json`` of either schema: a fine-tuned fold's before it named its kind (no
    ``kind``; before ``metric``/``val_score`` or ``holdout_used`` in older files still) or a
    frozen-feature fold's. A file without the fields every kind writes is refused naming it."""
    d = read_json(path, rerun)
    if not isinstance(d, dict) or not {"best_epoch", "val_acc", "mean", "std"} <= set(d):
        raise ArtifactError(
            f"{path} is not a finished fold's record (no best_epoch/val_acc/mean/std); delete "
            f"{Path(path).parent} and re-run: {rerun}"
        )
    d = {
        "kind": DEFAULT_KIND,
        "metric": "accuracy",
        "val_score": d["val_acc"],
        "epochs": d["best_epoch"],
        "threads": 0,
        "seconds": 0.0,
        "holdout_used": None,
        **d,
    }
    extra = {k: v for k, v in d.items() if k not in _DONE_FIELDS}
    return FoldDone(**{k: d[k] for k in _DONE_FIELDS if k in d}, extra=extra)


# ---------------------------------------------------------------- json


def write_json(path: str | Path, obj: Any) -> Path:
    return atomic_write_text(path, json.dumps(obj, indent=2, default=_json_default) + "\n")


def read_json(path: str | Path, rerun: str) -> Any:
    path = Path(path)
    if not path.is_file():
        raise ArtifactError(f"{path} not found; run: {rerun}")
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as e:
        raise ArtifactError(f"{path} is not valid JSON ({e}); re-run: {rerun}") from None


def _json_default(o: Any) -> Any:
    if isinstance(o, np.generic):
        return o.item()
    if isinstance(o, np.ndarray):
        return o.tolist()
    if isinstance(o, Path):
        return str(o)
    raise TypeError(f"not JSON serialisable: {type(o).__name__}")


def write_csv(path: str | Path, df: pd.DataFrame) -> Path:
    return atomic_write_text(path, df.to_csv(index=False, lineterminator="\n"))


def savefig(path: str | Path, fig: Any) -> Path:
    """Save a matplotlib figure atomically as PNG."""
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=110, bbox_inches="tight")
    return atomic_write_bytes(path, buf.getvalue())
