"""A test folder for inference: the sample submission and the test images, nothing else needed.

A code competition swaps in hidden test images at scoring time, laid out like the public folder
(``/kaggle/input/<slug>/``: a sample submission listing every test id, and the images). No train
CSV or train image is read: the classes, the task and the sample's columns come from the saved
ensemble (``ensemble_state.json``), so a folder holding only the test images works too.
"""

from __future__ import annotations

from pathlib import Path

import pandas as pd

from ..errors import CompetitionError
from . import rules
from .load import Competition, _find_sample, _read_settings
from .paths import resolve_images
from .rules import read_csv
from .task import Task


def load_test_folder(
    root: str | Path,
    comp_name: str,
    classes: list[str],
    task: Task,
    id_col: str = "",
    target_col: str = "",
    class_columns: list[str] | None = None,
    bad_ok: bool = False,
) -> Competition:
    """A ``Competition`` with ``test`` (id, path in sample order) and an empty ``train``.

    ``id_col``/``target_col``/``class_columns`` are the trained competition's (from the saved
    ensemble); empty means: the sample's first column, its second, the rest. ``bad_ok``: a test
    id without a usable image file is kept with path None and its line in ``problems`` (the
    notebook predicts it from the rest) instead of refused."""
    root = Path(root)
    if not root.is_dir():
        raise CompetitionError(
            f"test folder {root} not found; point TEST= at a folder with the sample submission "
            "and the test images (on Kaggle: /kaggle/input/<competition>)"
        )
    settings = _read_settings(root)
    csvs = sorted(p for p in root.glob("*.csv") if p.is_file())
    try:
        sample_path = _find_sample(root, csvs, settings)
    except CompetitionError as e:
        raise CompetitionError(
            f"test folder {root} has no sample submission ({str(e).split(': ', 1)[-1]}); copy "
            "the competition's sample_submission.csv (every test id) into it"
        ) from None
    sample = read_csv(sample_path)
    cols = list(sample.columns)
    id_col = id_col or cols[0]
    class_columns = list(class_columns or [])
    target_col = target_col or (cols[1] if len(cols) == 2 else "")
    want = [id_col, *class_columns] if class_columns else [id_col, target_col]
    if sorted(cols) != sorted(want) or len(sample) == 0:
        raise CompetitionError(
            f"{sample_path} has columns {cols} and {len(sample)} rows; the ensemble was trained "
            f"for a sample with columns {want}: use this competition's sample submission"
        )
    ids = sample[id_col]
    problems = rules.id_problems(sample_path, ids)
    paths, bad, folder = resolve_images(root, ids.tolist(), "test", settings.get("test_images"))
    images = rules.image_problems(root, "test", sample_path, bad, folder)
    if problems or (images and not bad_ok):
        raise CompetitionError(rules.first_problem(root, problems + images))
    return Competition(
        root=root,
        name=comp_name,
        slug=settings.get("slug", root.name),
        id_col=id_col,
        target_col=target_col,
        sample_path=sample_path,
        train_csv=sample_path,
        train=pd.DataFrame({"id": [], "label": [], "path": []}),
        test=pd.DataFrame({"id": ids, "path": paths}),
        classes=list(classes),
        task=task,
        class_columns=class_columns,
        problems=images,
    )
