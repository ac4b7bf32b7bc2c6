"""The ensemble methods' registry, the one list of their names (torch-free, so the CLI's help
and the docs read it without loading the estimators).

Every method is an sklearn-style estimator over ``(M, N, C)`` member logits:
``fit(oof_logits, y) -> self``, ``predict_proba(logits) -> (N, C)``, learned state ending in ``_``.
"""

from __future__ import annotations

import importlib
from typing import NamedTuple

from ..errors import PipelineError


class Method(NamedTuple):
    module: str  # module of pipeline.ensemble holding the estimator
    cls: str  # estimator class name
    help: str  # one line for the CLI and the docs


# name -> method, in the order ties are broken (simpler first)
METHODS: dict[str, Method] = {
    "soft": Method("blend", "SoftVote", "mean of probabilities"),
    "hard": Method("blend", "HardVote", "majority of argmaxes"),
    "logit": Method("blend", "MeanLogits", "softmax of the mean logit (= geometric mean of probs)"),
    "rank": Method("blend", "RankAverage", "mean percentile rank per class column"),
    "temp": Method("blend", "TemperatureSoftVote", "per-member temperature, then soft vote"),
    "weighted": Method("optimise", "WeightedSoftVote", "simplex weights minimising OOF log loss"),
    "accuracy": Method("optimise", "AccuracyWeights", "weights by coordinate ascent on accuracy"),
    "caruana": Method("optimise", "Caruana", "greedy selection with replacement, bagged"),
    "stack": Method("stacking", "Stacking", "logistic regression on member logits, L2 by inner CV"),
}
# the multi-label estimator of each method that has one (sigmoid members); the rest are single-label
MULTILABEL: dict[str, tuple[str, str]] = {
    "soft": ("multilabel", "LabelMean"),
    "logit": ("multilabel", "LabelLogitMean"),
    "rank": ("multilabel", "LabelRank"),
    "weighted": ("multilabel", "LabelWeighted"),
}
# other names users know for a registered method; never a separate leaderboard row
ALIASES: dict[str, str] = {
    # the normalised geometric mean of probabilities is softmax of the mean log-softmax, and
    # log-softmax differs from the logits by a per-row constant that softmax removes
    "geo": "logit",
}


def canonical(name: str) -> str:
    """``name`` or the method it is an alias of; an unknown name lists the valid ones."""
    name = ALIASES.get(name, name)
    if name not in METHODS:
        valid = ", ".join([*METHODS, *(f"{a} (= {m})" for a, m in ALIASES.items())])
        raise PipelineError(f"unknown method {name!r}; valid: auto, {valid}")
    return name


def method_class(name: str, multilabel: bool = False) -> type:
    """The estimator class registered under ``name`` (or its alias); with ``multilabel``, its
    multi-label version (``KeyError`` when it has none: see ``MULTILABEL``)."""
    name = canonical(name)
    module, cls = MULTILABEL[name] if multilabel else METHODS[name][:2]
    return getattr(importlib.import_module(f"{__package__}.{module}"), cls)


def method_help() -> str:
    """``name: help`` for every method and alias, for the CLI."""
    lines = [f"{n}: {m.help}" for n, m in METHODS.items()]
    return "; ".join(lines + [f"{a}: alias of {m}" for a, m in ALIASES.items()])
