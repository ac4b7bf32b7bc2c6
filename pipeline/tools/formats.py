"""Real competitions in every supported Kaggle layout, built from a labelled ``id,label`` one.

``python -m pipeline.tools formats --source ../shared/data/cifar10 --out input/fmt`` takes
``--n`` labelled train images of a few classes and writes, under ``--out``, one competition per
layout of the formats table (docs/competition-format.md): dog-breed-identification (class
probability columns, log loss), plant-seedlings (class folders, micro-F1), aerial-cactus and
histopathologic (binary probability, ROC AUC; TIFF for the latter), aptos (ordinal grades,
quadratic kappa), plant-pathology-2020 (one-hot columns, mean column AUC) and
plant-pathology-2021 (space-separated label sets, mean F1 over rows: each image is two source
tiles side by side, of one class or of two). ``--test`` more
labelled images become each one's test set, and their true answers go to
``<out>/answers/<name>.csv`` (outside the competition folders), so ``score`` can give a real
held-out score of a submission.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
from PIL import Image

from ..competition import load_competition
from ..competition.metrics import METRICS
from ..competition.rules import read_csv
from ..competition.task import encode
from ..errors import PipelineError

# (name, classes of the source used, what each becomes)
LAYOUTS = {
    "dog_breed": ["cat", "dog", "deer", "horse", "frog"],
    "plant_seedlings": ["airplane", "ship", "truck"],
    "aerial_cactus": ["bird", "airplane"],  # has_cactus = 1 for airplane
    "histopathologic": ["automobile", "ship"],  # label 1 for ship
    "aptos": ["airplane", "automobile", "bird", "cat", "deer"],  # grades 0..4
    "plant_pathology_2020": ["deer", "horse", "frog", "bird"],
    "plant_pathology_2021": ["airplane", "automobile", "ship", "truck"],  # pairs of tiles
}


def _pick(src: pd.DataFrame, classes: list[str], n: int, seed: int) -> pd.DataFrame:
    rows = src[src["label"].isin(classes)]
    return rows.sample(n=min(n, len(rows)), random_state=seed).reset_index(drop=True)


def _save(img: Image.Image, path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    img.save(path, **({"quality": 95} if path.suffix == ".jpg" else {}))


def _copy(paths: pd.Series, folder: Path, names: list[str]) -> None:
    """Each source image re-saved as ``folder/<name>`` (the name's extension sets the format)."""
    for name, src in zip(names, paths, strict=True):
        _save(Image.open(src).convert("RGB"), folder / name)


def build(source: Path, out: Path, n: int = 1500, n_test: int = 300, seed: int = 0) -> list[Path]:
    """Write every layout under ``out``; returns the competition folders."""
    comp = load_competition(source)
    src = comp.train.assign(path=[source / p for p in comp.train["path"]])
    made = []
    for k, (name, classes) in enumerate(LAYOUTS.items()):
        rows = _pick(src, classes, n + n_test, seed + k)
        train, test = rows.iloc[:n].reset_index(drop=True), rows.iloc[n:].reset_index(drop=True)
        root = out / name
        if root.exists():
            raise PipelineError(f"{root} exists; delete it or choose another --out")
        answers = globals()[f"_{name}"](root, train, test, classes)
        (out / "answers").mkdir(parents=True, exist_ok=True)
        answers.to_csv(out / "answers" / f"{name}.csv", index=False)
        made.append(root)
        print(f"wrote {root}: {len(train)} train, {len(test)} test images ({', '.join(classes)})")
    return made


def _dog_breed(root: Path, train, test, classes) -> pd.DataFrame:
    ids = [f"{i:08x}" for i in range(len(train))]
    tids = [f"{i + 10**7:08x}" for i in range(len(test))]
    _copy(train["path"], root / "train", [f"{x}.jpg" for x in ids])
    _copy(test["path"], root / "test", [f"{x}.jpg" for x in tids])
    pd.DataFrame({"id": ids, "breed": train["label"]}).to_csv(root / "labels.csv", index=False)
    sample = pd.DataFrame({"id": tids, **{c: 1 / len(classes) for c in sorted(classes)}})
    sample.to_csv(root / "sample_submission.csv", index=False)
    return pd.DataFrame({"id": tids, "label": test["label"]})


def _plant_seedlings(root: Path, train, test, classes) -> pd.DataFrame:
    names = {c: c.title() + " plant" for c in classes}  # class folders with spaces
    _copy(
        train["path"],
        root / "train",
        [f"{names[c]}/{n:06d}.png" for n, c in enumerate(train["label"])],
    )
    files = [f"{n:09x}.png" for n in range(len(test))]
    _copy(test["path"], root / "test", files)
    pd.DataFrame({"file": files, "species": names[classes[0]]}).to_csv(
        root / "sample_submission.csv", index=False
    )
    (root / "competition.toml").write_text('metric = "micro_f1"\n')
    return pd.DataFrame({"file": files, "label": [names[c] for c in test["label"]]})


def _aerial_cactus(root: Path, train, test, classes) -> pd.DataFrame:
    ids = [f"{i:032x}.jpg" for i in range(len(train))]
    tids = [f"{i + 10**9:032x}.jpg" for i in range(len(test))]
    _copy(train["path"], root / "train", ids)
    _copy(test["path"], root / "test", tids)
    pos = classes[1]
    pd.DataFrame({"id": ids, "has_cactus": (train["label"] == pos).astype(int)}).to_csv(
        root / "train.csv", index=False
    )
    pd.DataFrame({"id": tids, "has_cactus": 0.5}).to_csv(
        root / "sample_submission.csv", index=False
    )
    return pd.DataFrame({"id": tids, "label": (test["label"] == pos).astype(int).astype(str)})


def _histopathologic(root: Path, train, test, classes) -> pd.DataFrame:
    ids = [f"{i:040x}" for i in range(len(train))]
    tids = [f"{i + 10**9:040x}" for i in range(len(test))]
    _copy(train["path"], root / "train", [f"{x}.tif" for x in ids])
    _copy(test["path"], root / "test", [f"{x}.tif" for x in tids])
    pos = classes[1]
    pd.DataFrame({"id": ids, "label": (train["label"] == pos).astype(int)}).to_csv(
        root / "train_labels.csv", index=False
    )
    pd.DataFrame({"id": tids, "label": 0}).to_csv(root / "sample_submission.csv", index=False)
    (root / "competition.toml").write_text('metric = "roc_auc"\n')
    return pd.DataFrame({"id": tids, "label": (test["label"] == pos).astype(int).astype(str)})


def _aptos(root: Path, train, test, classes) -> pd.DataFrame:
    grade = {c: str(g) for g, c in enumerate(classes)}
    ids = [f"{i:012x}" for i in range(len(train))]
    tids = [f"{i + 10**9:012x}" for i in range(len(test))]
    _copy(train["path"], root / "train_images", [f"{x}.png" for x in ids])
    _copy(test["path"], root / "test_images", [f"{x}.png" for x in tids])
    pd.DataFrame({"id_code": ids, "diagnosis": train["label"].map(grade)}).to_csv(
        root / "train.csv", index=False
    )
    pd.DataFrame({"id_code": tids, "diagnosis": 0}).to_csv(
        root / "sample_submission.csv", index=False
    )
    (root / "competition.toml").write_text('task = "ordinal"\n')
    return pd.DataFrame({"id_code": tids, "label": test["label"].map(grade)})


def _plant_pathology_2020(root: Path, train, test, classes) -> pd.DataFrame:
    ids = [f"Train_{i}" for i in range(len(train))]
    tids = [f"Test_{i}" for i in range(len(test))]
    _copy(train["path"], root / "images", [f"{x}.jpg" for x in ids])
    _copy(test["path"], root / "images", [f"{x}.jpg" for x in tids])
    onehot = {c: (train["label"] == c).astype(int) for c in classes}
    pd.DataFrame({"image_id": ids, **onehot}).to_csv(root / "train.csv", index=False)
    pd.DataFrame({"image_id": tids}).to_csv(root / "test.csv", index=False)
    pd.DataFrame({"image_id": tids, **{c: 1 / len(classes) for c in classes}}).to_csv(
        root / "sample_submission.csv", index=False
    )
    return pd.DataFrame({"image_id": tids, "label": test["label"]})


def _plant_pathology_2021(root: Path, train, test, classes) -> pd.DataFrame:
    """Two tiles side by side per image: the label set is their classes (one or two)."""
    rng = np.random.default_rng(7)

    def pairs(rows: pd.DataFrame, folder: str, names: list[str]) -> list[str]:
        by_class = {c: rows[rows["label"] == c]["path"].tolist() for c in classes}
        out = []
        for k, name in enumerate(names):
            a = classes[k % len(classes)]
            b = a if rng.random() < 0.5 else classes[rng.integers(len(classes))]
            pa, pb = (by_class[c][rng.integers(len(by_class[c]))] for c in (a, b))
            img = Image.new("RGB", (64, 32))
            img.paste(Image.open(pa).convert("RGB").resize((32, 32)), (0, 0))
            img.paste(Image.open(pb).convert("RGB").resize((32, 32)), (32, 0))
            _save(img, root / folder / name)
            out.append(" ".join(sorted({a, b})))
        return out

    ids = [f"{i:016x}.jpg" for i in range(len(train))]
    tids = [f"{i + 10**9:016x}.jpg" for i in range(len(test))]
    labels = pairs(train, "train_images", ids)
    truth = pairs(test, "test_images", tids)
    pd.DataFrame({"image": ids, "labels": labels}).to_csv(root / "train.csv", index=False)
    pd.DataFrame({"image": tids, "labels": classes[0]}).to_csv(
        root / "sample_submission.csv", index=False
    )
    return pd.DataFrame({"image": tids, "label": truth})


def score(comp_dir: Path, answers: Path, submission: Path) -> float:
    """The competition's metric of ``submission`` against the held-out ``answers``."""
    comp = load_competition(comp_dir)
    truth = read_csv(answers)
    sub = read_csv(submission).set_index(comp.id_col).loc[truth[comp.id_col]]
    classes, task = list(comp.classes), comp.task
    y = encode(truth["label"], classes, task.kind)
    if task.format == "label_list":
        probs = encode(sub[comp.target_col], classes, "multilabel").astype(float)
    elif task.format == "label":
        probs = np.eye(len(classes))[pd.Index(classes).get_indexer(sub[comp.target_col])]
    elif task.format == "probability":
        p1 = sub[comp.target_col].astype(float).to_numpy()
        probs = np.zeros((len(p1), 2))
        probs[:, classes.index(task.positive)], probs[:, 1 - classes.index(task.positive)] = (
            p1,
            1 - p1,
        )
    else:
        probs = np.stack([sub[c].astype(float) for c in classes], axis=1)
    value = METRICS[task.metric].fn(y, probs)
    print(f"{comp.name}: held-out {task.metric} {value:.4f} on {len(y)} test images")
    return value
