"""Test images that cannot be read, inside a code-competition notebook.

On a user's machine ``make predict`` refuses a missing, truncated or non-image test file in one
line: the user replaces it. In a Kaggle notebook the hidden test set cannot be fixed, and a
refusal is a failed submission, so the packaged notebook predicts such an image from the rest
(``ON_BAD_IMAGE=fallback``): the mean of the ensemble's probabilities over the other test images,
and in label formats the class (or label set) predicted most often for them. Each one gets a
loud line, and ``predict.json`` records their count and ids; more than ``MAX_BAD`` (default 1 %)
of the test set is an error, in one line: then something is wrong beyond one bad file.
"""

from __future__ import annotations

import re
from collections import Counter

import numpy as np

from ..errors import PipelineError

POLICIES = ("refuse", "fallback")
DEFAULT_MAX_BAD = "1%"


def parse_max_bad(text: str | float) -> float:
    """``"1%"``, ``"0.5%"`` or a fraction such as ``0.01`` -> the fraction of the test set."""
    s = str(text).strip()
    m = re.fullmatch(r"(\d+(?:\.\d+)?)\s*(%?)", s)
    value = float(m.group(1)) / (100 if m.group(2) else 1) if m else -1.0
    if not 0 <= value <= 1:
        raise PipelineError(f"MAX_BAD={text!r}: use a share of the test images, e.g. 1% or 0.01")
    return value


class BadImages:
    """The test images a pass could not read (``policy`` "fallback"), and what to do with them."""

    def __init__(self, policy: str, max_bad: str | float, ids: list[str]) -> None:
        if policy not in POLICIES:
            raise PipelineError(f"ON_BAD_IMAGE={policy!r}: use {' or '.join(POLICIES)}")
        self.policy, self.ids = policy, ids
        self.max_bad = parse_max_bad(max_bad)
        self.rows: dict[int, str] = {}  # test row -> why

    @property
    def fallback(self) -> bool:
        return self.policy == "fallback"

    def add(self, row: int, why: str) -> None:
        """Record a bad image (one loud line); past ``MAX_BAD`` of the test set, stop."""
        self.rows[row] = why
        n, total = len(self.rows), len(self.ids)
        print(
            f"BAD TEST IMAGE {n}: id {self.ids[row]!r}: {why}; predicted from the other test "
            "images (ON_BAD_IMAGE=fallback)",
            flush=True,
        )
        if n > self.max_bad * total:
            raise PipelineError(
                f"{n} of {total} test images cannot be read ({n / total:.1%} > MAX_BAD="
                f"{self.max_bad:.1%}; first: id {self.ids[min(self.rows)]!r}, "
                f"{self.rows[min(self.rows)]}): the test folder is damaged or not this "
                "competition's; fix it, or raise MAX_BAD"
            )

    def fill(self, probs: np.ndarray, pred: np.ndarray, fmt: str, multilabel: bool) -> str:
        """Give the bad rows of ``probs (T, C)`` and ``pred (T,)`` the rest's prediction, in
        place; returns how, for ``predict.json`` ("" when there were none)."""
        if not self.rows:
            return ""
        bad = np.zeros(len(probs), dtype=bool)
        bad[list(self.rows)] = True
        if bad.all():
            raise PipelineError("every test image is unreadable: nothing to predict them from")
        probs[bad] = probs[~bad].mean(axis=0)
        if fmt == "label" and not multilabel:  # the class predicted most often
            pred[bad] = Counter(pred[~bad].tolist()).most_common(1)[0][0]
            return "the class predicted most often for the other test images"
        if fmt == "label_list":  # the label set predicted most often
            sets = Counter(map(tuple, (probs[~bad] >= 0.5).astype(int).tolist()))
            on = np.array(sets.most_common(1)[0][0], dtype=bool)
            probs[bad] = np.where(on, np.maximum(probs[bad], 0.5), np.minimum(probs[bad], 0.49))
            return "the label set predicted most often for the other test images"
        return "the mean probabilities over the other test images"

    def record(self, how: str) -> dict:
        return {
            "policy": self.policy,
            "max_bad": self.max_bad,
            "count": len(self.rows),
            "ids": [self.ids[r] for r in sorted(self.rows)],
            "why": {self.ids[r]: w for r, w in sorted(self.rows.items())},
            "fallback": how,
        }
