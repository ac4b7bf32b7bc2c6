"""An embedded real competition: scikit-learn's 1,797 handwritten digit scans as a Kaggle folder.

Classify-Leaves layout: ``train.csv`` (image,label), ``test.csv`` (image),
``sample_submission.csv`` (image,label) and ``images/<n>.png`` (8x8 grayscale scans, 0-16 ink
levels stretched to 0-255). A stratified 20 % is held out as the unlabeled test set.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
from PIL import Image
from sklearn.datasets import load_digits
from sklearn.model_selection import train_test_split

from .. import artifacts

NAMES = ["zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine"]


def write_digits(out: Path, test_size: float = 0.2, seed: int = 0) -> Path:
    """Write the digits competition into ``out`` (skipped if already complete)."""
    if (out / "sample_submission.csv").is_file():
        print(f"{out} already exists; using it")
        return out
    digits = load_digits()
    images = np.clip(digits.images * (255.0 / 16.0), 0, 255).astype(np.uint8)
    idx = np.arange(len(images))
    tr, te = train_test_split(idx, test_size=test_size, stratify=digits.target, random_state=seed)
    (out / "images").mkdir(parents=True, exist_ok=True)
    for i in idx:
        Image.fromarray(images[i], mode="L").save(out / "images" / f"{i}.png")
    name = [f"images/{i}.png" for i in idx]
    label = [NAMES[t] for t in digits.target]
    tr, te = np.sort(tr), np.sort(te)
    artifacts.write_csv(
        out / "train.csv",
        pd.DataFrame({"image": [name[i] for i in tr], "label": [label[i] for i in tr]}),
    )
    artifacts.write_csv(out / "test.csv", pd.DataFrame({"image": [name[i] for i in te]}))
    artifacts.write_csv(
        out / "sample_submission.csv",
        pd.DataFrame({"image": [name[i] for i in te], "label": NAMES[0]}),
    )
    print(
        f"wrote {out}: {len(tr)} train and {len(te)} test digit scans (8x8 grayscale PNG), 10 classes"
    )
    return out
