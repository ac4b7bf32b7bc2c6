"""A metric's traits live in its ``Metric`` record: the formats it scores, the help text, the docs
check and the ensemble's choices (direct climb, post-processing) all read the registry."""

from __future__ import annotations

from functools import partial

import pytest

from pipeline.competition import metrics
from pipeline.competition.load import setting_help
from pipeline.competition.metrics import METRICS, Metric, scoring
from pipeline.competition.task import FORMATS, TASKS, Task
from pipeline.ensemble.post import POSTS, post_for
from pipeline.ensemble.stage import method_factory
from pipeline.errors import PipelineError

from .test_docs import DOCS, ensemble_doc_missing, metrics_missing


def test_traits_name_known_formats_tasks_and_post_processing() -> None:
    for name, m in METRICS.items():
        assert m.formats and set(m.formats) <= set(FORMATS), name
        assert set(m.default_for) <= set(m.formats), name
        assert m.post is None or m.post in POSTS, name
        assert set(m.post_kinds) <= set(TASKS), name
    for fmt in FORMATS:  # every format has exactly one metric inferred for it
        assert sum(fmt in m.default_for for m in METRICS.values()) == 1, fmt


def test_derived_lists_are_the_ones_the_pipeline_has_always_used() -> None:
    assert {f: scoring(f) for f in FORMATS} == {
        "label": ("accuracy", "macro_f1", "micro_f1", "quadratic_kappa"),
        "probability": ("roc_auc", "log_loss"),
        "class_probabilities": ("log_loss", "mean_column_auc"),
        "label_list": ("samples_f1",),
        "top_k": ("map_at_5",),
    }
    assert [n for n, m in METRICS.items() if m.direct] == [
        "roc_auc",
        "mean_column_auc",
        "quadratic_kappa",
    ]
    assert [n for n, m in METRICS.items() if m.multilabel] == ["mean_column_auc", "samples_f1"]
    posts = {(n, k): post_for(n, k) for n in METRICS for k in TASKS if post_for(n, k)}
    assert posts == {
        **{("log_loss", k): "temp" for k in TASKS},
        ("quadratic_kappa", "ordinal"): "cuts",
        ("samples_f1", "multilabel"): "threshold",
    }
    assert setting_help("metric") == (
        "the competition's metric (accuracy, log_loss, macro_f1, micro_f1, roc_auc, "
        "mean_column_auc, quadratic_kappa, map_at_5, samples_f1); default: inferred from the "
        "sample submission"
    )


def test_a_metric_planted_in_the_registry_reaches_help_docs_and_ensemble(monkeypatch) -> None:
    planted = Metric(metrics.accuracy, True, "planted", ("label",), direct=True, post="temp")
    task = Task("multiclass", "label", "planted_score")
    with pytest.raises(PipelineError, match="not one this pipeline fits"):
        method_factory("soft+temp", Task("multiclass", "label", "accuracy"))
    monkeypatch.setitem(METRICS, "planted_score", planted)
    assert "planted_score" in setting_help("metric")
    assert "planted_score" in scoring("label")
    # the docs check sees it, undocumented: competition-format.md must name it
    fmt = (DOCS / "competition-format.md").read_text()
    assert metrics_missing(fmt) == ["planted_score"]
    assert ensemble_doc_missing((DOCS / "ensembles-report.md").read_text()) == ["planted_score"]
    # the ensemble climbs it directly and fits its post-processing
    caruana = method_factory("caruana", task)
    assert isinstance(caruana, partial) and caruana.keywords == {"metric": "planted_score"}
    assert type(method_factory("soft+temp", task)()).__name__ == "WithPost"
