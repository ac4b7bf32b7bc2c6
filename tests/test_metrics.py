"""Every metric against a case computed by hand, and against scikit-learn where it matches Kaggle."""

from __future__ import annotations

import math

import numpy as np
import pytest
from sklearn.metrics import accuracy_score, f1_score, roc_auc_score

from pipeline.competition import metrics as M


def test_accuracy_and_micro_f1_by_hand() -> None:
    probs = np.array([[0.7, 0.3], [0.2, 0.8], [0.6, 0.4]])
    y = np.array([0, 1, 1])
    assert M.accuracy(y, probs) == pytest.approx(2 / 3)
    assert M.micro_f1(y, probs) == pytest.approx(2 / 3)  # one label per row: = accuracy
    assert M.micro_f1(y, probs) == pytest.approx(accuracy_score(y, probs.argmax(1)))


def test_log_loss_clips_and_renormalises_like_kaggle() -> None:
    # row 0: p(true) = 0.5 -> ln 2; row 1: a confident miss, p(true) = 0 -> clipped to 1e-15,
    # and the row renormalised: (1e-15) / (1e-15 + (1 - 1e-15)) = 1e-15
    probs = np.array([[0.5, 0.5], [1.0, 0.0]])
    y = np.array([0, 1])
    expected = (math.log(2) - math.log(1e-15)) / 2
    assert M.log_loss(y, probs) == pytest.approx(expected, rel=1e-9)
    # rows that do not sum to 1 are renormalised first: [2, 2] behaves as [0.5, 0.5]
    assert M.log_loss(np.array([0]), np.array([[2.0, 2.0]])) == pytest.approx(math.log(2))


def test_log_loss_differs_from_sklearn_on_confident_misses() -> None:
    import warnings

    from sklearn.metrics import log_loss as sk_log_loss

    probs, y = np.array([[1.0, 0.0]]), np.array([1])
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        sk = sk_log_loss(y, probs, labels=[0, 1])
    assert M.log_loss(y, probs) == pytest.approx(-math.log(1e-15))  # 34.54
    assert sk > M.log_loss(y, probs) + 1  # float64 eps clip: 36.04


def test_binary_log_loss_by_hand() -> None:
    assert M.binary_log_loss(np.array([1, 0]), np.array([0.8, 0.1])) == pytest.approx(
        -(math.log(0.8) + math.log(0.9)) / 2
    )


def test_macro_f1_counts_absent_classes_as_zero() -> None:
    # classes 0,1,2; class 2 never predicted nor true -> F1 0 under labels=all classes
    y = np.array([0, 0, 1, 1])
    probs = np.eye(3)[[0, 1, 1, 1]]
    f1_0, f1_1 = 2 * 1 / (2 + 1), 2 * 2 / (2 + 3)  # tp / (|true| + |pred|) * 2
    assert M.macro_f1(y, probs) == pytest.approx((f1_0 + f1_1 + 0) / 3)
    assert M.macro_f1(y, probs) == pytest.approx(
        f1_score(y, probs.argmax(1), labels=[0, 1, 2], average="macro", zero_division=0)
    )


def test_roc_auc_binary_by_hand() -> None:
    y = np.array([0, 0, 1, 1])
    p1 = np.array([0.1, 0.4, 0.35, 0.8])
    # positive-negative pairs ranked right: (0.35>0.1), (0.8>0.1), (0.8>0.4); wrong: 0.35<0.4
    assert M.roc_auc(y, p1) == pytest.approx(3 / 4)
    assert M.roc_auc(y, np.stack([1 - p1, p1], axis=1)) == pytest.approx(roc_auc_score(y, p1))


def test_mean_column_auc_by_hand() -> None:
    y = np.array([[1, 0], [0, 1], [1, 0], [0, 1]])
    p = np.array([[0.9, 0.2], [0.1, 0.3], [0.8, 0.4], [0.7, 0.1]])
    # column 0: positives 0.9, 0.8 vs negatives 0.1, 0.7: all 4 pairs right -> 1.0
    # column 1: positives 0.3, 0.1 vs negatives 0.2, 0.4: right (0.3>0.2) only -> 1/4
    assert M.mean_column_auc(y, p) == pytest.approx((1.0 + 0.25) / 2)
    assert M.mean_column_auc(np.array([0, 1, 0, 1]), p) == pytest.approx(0.625)  # indices


def test_quadratic_kappa_by_hand() -> None:
    y = np.array([0, 1, 2])
    pred = np.array([0, 2, 2])
    # O = confusion, W_ij = (i-j)^2/(K-1)^2 with K=3, E = outer(hist_true, hist_pred)/N
    o = np.zeros((3, 3))
    for t, q in zip(y, pred, strict=True):
        o[t, q] += 1
    w = np.array([[(i - j) ** 2 / 4 for j in range(3)] for i in range(3)])
    e = np.outer(o.sum(1), o.sum(0)) / 3
    expected = 1 - (w * o).sum() / (w * e).sum()
    assert M.quadratic_kappa(y, pred) == pytest.approx(expected)
    assert M.quadratic_kappa(y, np.eye(3)[pred]) == pytest.approx(expected)  # argmax of probs


def test_map_at_5_by_hand() -> None:
    probs = np.array(
        [
            [0.5, 0.2, 0.1, 0.1, 0.05, 0.05, 0.0],  # true 0 at rank 1 -> 1
            [0.5, 0.2, 0.1, 0.1, 0.05, 0.05, 0.0],  # true 2 at rank 3 (tie with 3: lower first)
            [0.5, 0.2, 0.1, 0.1, 0.05, 0.05, 0.0],  # true 6 at rank 7 -> outside top 5 -> 0
        ]
    )
    assert M.map_at_k(np.array([0, 2, 6]), probs, k=5) == pytest.approx((1 + 1 / 3 + 0) / 3)


def test_samples_f1_by_hand() -> None:
    y = np.array([[1, 0, 1], [0, 1, 0]])
    p = np.array([[0.9, 0.6, 0.2], [0.1, 0.7, 0.0]])
    # row 0: pred {0,1}, true {0,2}: F1 = 2*1/(2+2) = 0.5; row 1: exact -> 1
    assert M.samples_f1(y, p) == pytest.approx(0.75)
    assert M.samples_f1(y, p) == pytest.approx(f1_score(y, p >= 0.5, average="samples"))


def test_registry_directions() -> None:
    assert not M.METRICS["log_loss"].greater_is_better
    assert all(m.greater_is_better for n, m in M.METRICS.items() if n != "log_loss")
