"""Per-class weakness analysis of OOF predictions: metrics with bootstrap intervals, which member
wins each class and what the ensemble adds, the worst mistakes, and label-issue candidates.

Pure functions of arrays: ``y (N,)`` class indices, ``probs (N, C)`` ensemble OOF probabilities,
``member_preds`` run -> ``(N,)`` argmax. ``report`` turns them into files.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

N_BOOT = 400  # bootstrap replicates for the 95 % intervals
SEED = 0


def _class_counts(w: np.ndarray, y: np.ndarray, pred: np.ndarray, c: int) -> tuple:
    """Weighted per-class true positives, support and predicted counts; ``w (B, N)`` row weights."""
    eye = np.eye(c, dtype=np.float32)
    hit = (pred == y).astype(np.float32)[:, None]
    return w @ (eye[y] * hit), w @ eye[y], w @ eye[pred]


def _metrics(tp: np.ndarray, support: np.ndarray, predicted: np.ndarray) -> dict[str, np.ndarray]:
    with np.errstate(divide="ignore", invalid="ignore"):
        recall = np.where(support > 0, tp / support, np.nan)
        precision = np.where(predicted > 0, tp / predicted, 0.0)
        denom = precision + recall
        f1 = np.where(denom > 0, 2 * precision * recall / denom, 0.0)
    return {"precision": precision, "recall": recall, "f1": np.where(support > 0, f1, np.nan)}


def per_class_metrics(
    y: np.ndarray, pred: np.ndarray, n_classes: int, n_boot: int = N_BOOT, seed: int = SEED
) -> pd.DataFrame:
    """Support, precision, recall (= per-class accuracy) and F1 with bootstrap 95 % intervals.

    The bootstrap re-weights rows with Poisson(1) counts (the standard large-N approximation of
    resampling N rows with replacement) so all replicates are one matrix product: ``(B, N) @
    (N, C)``. Intervals are the 2.5 and 97.5 percentiles over replicates."""
    y, pred = np.asarray(y), np.asarray(pred)
    ones = np.ones((1, len(y)), dtype=np.float32)
    point = _metrics(*(a[0] for a in _class_counts(ones, y, pred, n_classes)))
    w = np.random.default_rng(seed).poisson(1.0, size=(n_boot, len(y))).astype(np.float32)
    boot = _metrics(*_class_counts(w, y, pred, n_classes))
    df = pd.DataFrame({"support": np.bincount(y, minlength=n_classes)})
    df["correct"] = np.bincount(y, weights=(pred == y), minlength=n_classes).astype(int)
    for name in ("precision", "recall", "f1"):
        df[name] = point[name]
        lo, hi = np.nanpercentile(boot[name], [2.5, 97.5], axis=0)
        df[f"{name}_lo"], df[f"{name}_hi"] = lo, hi
    df.insert(2, "accuracy", df["recall"])
    df.insert(3, "accuracy_lo", df["recall_lo"])
    df.insert(4, "accuracy_hi", df["recall_hi"])
    return df


def member_table(
    y: np.ndarray, pred: np.ndarray, member_preds: dict[str, np.ndarray], n_classes: int
) -> pd.DataFrame:
    """Per class: each member's accuracy, the best member, and the ensemble's gain over it.

    ``gain_vs_best_member``: ensemble accuracy minus the best member's on that class (what
    blending adds where one model is already good); ``gain_vs_top_model``: minus the member with
    the best overall accuracy (what you would lose by submitting that model alone)."""
    support = np.maximum(np.bincount(y, minlength=n_classes), 1)

    def acc(p: np.ndarray) -> np.ndarray:
        return np.bincount(y, weights=(p == y), minlength=n_classes) / support

    df = pd.DataFrame({f"acc_{run}": acc(p) for run, p in member_preds.items()})
    if not member_preds:
        return df
    table = df.to_numpy()
    ens = acc(pred)
    top = max(member_preds, key=lambda r: (member_preds[r] == y).mean())
    df["best_member"] = np.array(list(member_preds))[table.argmax(axis=1)]  # first wins ties
    df["gain_vs_best_member"] = ens - table.max(axis=1)
    df["gain_vs_top_model"] = ens - df[f"acc_{top}"]
    return df


def _row_table(
    rows: np.ndarray, ids: np.ndarray, y: np.ndarray, probs: np.ndarray, classes: list[str]
) -> pd.DataFrame:
    """One line per picked row: id, given label, the ensemble's argmax and both probabilities."""
    rows = np.asarray(rows, dtype=np.int64)
    pred = probs.argmax(axis=1)[rows]
    names = np.asarray(classes, dtype=object)
    return pd.DataFrame(
        {
            "row": rows,
            "id": np.asarray(ids)[rows],
            "given_label": names[y[rows]],
            "predicted": names[pred],
            "confidence": probs[rows, pred],
            "prob_given": probs[rows, y[rows]],
        }
    )


def worst_mistakes(
    ids: np.ndarray, y: np.ndarray, probs: np.ndarray, classes: list[str], n: int
) -> pd.DataFrame:
    """The ``n`` wrong OOF predictions made with the highest confidence, most confident first."""
    pred = probs.argmax(axis=1)
    wrong = np.flatnonzero(pred != y)
    pick = wrong[np.argsort(-probs[wrong, pred[wrong]], kind="stable")[:n]]
    return _row_table(pick, ids, y, probs, classes)


def label_issues(
    ids: np.ndarray, y: np.ndarray, probs: np.ndarray, classes: list[str]
) -> pd.DataFrame:
    """Rows cleanlab's ``find_label_issues`` flags on the OOF probabilities, worst first.

    ``suggested_label`` is the ensemble's argmax; ``self_confidence`` the probability it gives
    the given label (cleanlab's ranking score: lower = more suspicious)."""
    from cleanlab.filter import find_label_issues

    probs = np.asarray(probs, dtype=np.float64)
    probs = probs / probs.sum(axis=1, keepdims=True)
    present = np.unique(y)  # cleanlab wants every column it is given to be a label seen in y
    ranked = np.zeros(0, dtype=np.int64)
    if len(present) >= 2:  # with one class there is nothing to contrast
        sub = probs[:, present] / probs[:, present].sum(axis=1, keepdims=True)
        ranked = find_label_issues(
            labels=np.searchsorted(present, y),
            pred_probs=sub,
            return_indices_ranked_by="self_confidence",
            n_jobs=1,
        )
    names = {
        "predicted": "suggested_label",
        "prob_given": "self_confidence",
        "confidence": "suggested_confidence",
    }
    return _row_table(ranked, ids, y, probs, classes).rename(columns=names)[
        ["row", "id", "given_label", "suggested_label", "self_confidence", "suggested_confidence"]
    ]
