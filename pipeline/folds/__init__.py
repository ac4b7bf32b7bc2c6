"""Stage 1, ``make folds``: stratified, duplicate-aware K folds written once as a file."""

from ..util.lazy import lazy_exports

__getattr__, __dir__, __all__ = lazy_exports(
    __name__,
    {"folds_stage": "stage", "make_folds": "stage", "NEAR_DISTANCE": "duplicates"},
)
