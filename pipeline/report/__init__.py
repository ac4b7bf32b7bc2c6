"""Stage 3b, ``make report`` (chained by ``make ensemble``): per-class tables, plots, contact
sheets and one HTML page, built from ``oof_ensemble.npz``. Torch-free."""

from ..util.lazy import lazy_exports

__getattr__, __dir__, __all__ = lazy_exports(
    __name__, {"report_stage": "stage", "write_report": "stage", "Predictions": "stage"}
)
