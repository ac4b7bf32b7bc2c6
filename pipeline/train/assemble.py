"""Stitch a run's fold outputs into ``oof.npz`` (folds-file order) and ``test.npz`` (fold mean,
or the logits of the run's model on all rows where its kind fits one: ``full/``).

``train_rows`` maps folds-file rows to train-CSV rows by id: a folds file made with relabel.csv
lacks dropped images and may carry labels that differ from the train CSV.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

from .. import artifacts
from ..competition.task import encode
from ..errors import ArtifactError, RecipeError


def train_rows(comp, folds_df: pd.DataFrame, path: Path) -> np.ndarray:
    """``(N,)`` row in ``comp.train`` (and in the decode cache) of each of the N folds rows."""
    rows = pd.Index(comp.train["id"]).get_indexer(folds_df["id"])
    rerun = f"re-run: make folds COMP={comp.root}"
    if (rows < 0).any():
        bad = folds_df["id"][rows < 0]
        raise ArtifactError(
            f"{path} has id {bad.iloc[0]!r} that is not in {comp.train_csv} "
            f"({len(bad)} such rows); {rerun}"
        )
    known = set(comp.classes)
    stray = folds_df["label"][
        [not set(str(x).split()) <= known for x in folds_df["label"]]
        if comp.task.multilabel
        else ~folds_df["label"].isin(comp.classes)
    ]
    if len(stray):
        raise ArtifactError(
            f"{path} has label {stray.iloc[0]!r} that is not a class of {comp.train_csv}; {rerun}"
        )
    return rows.astype(np.int64)


def read_training_folds(comp, ws) -> tuple[pd.DataFrame, str]:
    """The folds file as training reads it: with a ``row`` column (each row's place in
    ``comp.train``, see ``train_rows``), and its hash, which every trained artifact carries."""
    path = ws.folds_csv
    folds_df = artifacts.read_folds(path, comp.root, comp.task.kind)
    folds_df["row"] = train_rows(comp, folds_df, path)  # folds rows may be relabelled/dropped
    return folds_df, artifacts.file_hash(path)


def load_recipes(ws, runs: list[str], overrides: dict | None) -> dict:
    """``{run: Recipe}`` of ``<models>/<run>.toml`` with ``overrides``, each checked by its
    member kind (an unknown kind, a recipe the kind cannot train: one line naming the file)."""
    from ..config import load_recipe
    from .kinds import check_recipe

    recipes = {run: load_recipe(ws.recipe(run), overrides) for run in runs}
    for run, recipe in recipes.items():
        check_recipe(recipe, str(ws.recipe(run)))
        if recipe.decode != "reduced":  # the decode caches hold reduced decodes only
            raise RecipeError(
                f"{ws.recipe(run)}: decode = {recipe.decode!r} is how runs trained before issue "
                '32 decoded (make predict honours it for them); training decodes "reduced": '
                "remove the key (or SET=decode=reduced)"
            )
    return recipes


def assemble_run(
    rdir: Path, folds_df: pd.DataFrame, comp, fhash: str, k: int, run: str
) -> dict[str, float] | None:
    """Stitch fold OOF rows into ``oof.npz`` (folds-file order) and average fold test logits;
    the OOF score under the competition's metric per view and of their mean (``tta``, with
    more than one view), or None while folds are missing."""
    done = [f for f in range(k) if (rdir / f"fold{f}" / "done.json").is_file()]
    if len(done) < k:
        missing = ",".join(str(f) for f in range(k) if f not in done)
        print(
            f"{run}: {len(done)} of {k} folds done; oof.npz/test.npz are written when all are: "
            f"make train COMP={comp.root} RUNS={run} FOLDS={missing}"
        )
        return None
    rerun = f"make train COMP={comp.root} RUNS={run}"
    ids = folds_df["id"].to_numpy().astype(str)
    pos = {i: n for n, i in enumerate(ids)}
    # a damaged fold file is fixed by retraining that fold (a done fold is otherwise skipped)
    redo = [
        f"{rerun} after deleting {rdir / f'fold{f}'} (that fold is retrained)" for f in range(k)
    ]
    parts = [artifacts.read_logits(rdir / f"fold{f}" / "oof.npz", "oof", redo[f]) for f in range(k)]
    tests = [
        artifacts.read_logits(rdir / f"fold{f}" / "test.npz", "test", redo[f]) for f in range(k)
    ]
    v, _, c = parts[0]["logits"].shape
    logits = np.full((v, len(ids), c), np.nan, dtype=np.float32)
    for p in parts:
        logits[:, [pos[i] for i in p["ids"].astype(str)]] = p["logits"]
    if np.isnan(logits).any():
        raise ArtifactError(
            f"{rdir}: fold OOF files do not cover every row of the folds file; re-run: {rerun}"
        )
    common = {
        "classes": parts[0]["classes"],
        "views": parts[0]["views"],
        "folds_hash": np.array(fhash),
        "task": np.array(comp.task.kind),
    }
    artifacts.write_logits(
        rdir / "oof.npz", ids=ids, fold=folds_df["fold"].to_numpy(), logits=logits, **common
    )
    test, source = np.mean([t["logits"] for t in tests], axis=0), ""
    full = rdir / "full"  # Workspace.all_rows_dir: a model on every row predicts the test
    if (full / "done.json").is_file():
        got = artifacts.read_logits(full / "test.npz", "test", f"{rerun} after deleting {full}")
        if str(got["folds_hash"]) == fhash and got["logits"].shape == test.shape:
            test, source = got["logits"], " (test: its model on all rows)"
    artifacts.write_logits(rdir / "test.npz", ids=tests[0]["ids"], logits=test, **common)
    task = comp.task
    y = encode(folds_df["label"], comp.classes, task.kind)
    probs = [task.probabilities(lg) for lg in logits]
    scores = {str(v): float(task.score(y, p)) for v, p in zip(common["views"], probs, strict=True)}
    text = "  ".join(f"{view} {v:.4f}" for view, v in scores.items())
    print(f"{run}: wrote {rdir}/oof.npz and test.npz{source}; OOF {task.metric} by view: {text}")
    if len(probs) > 1:
        scores["tta"] = float(task.score(y, np.mean(probs, axis=0)))
    return scores
