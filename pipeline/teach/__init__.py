"""A student's teacher: leak-free soft targets per fold from a finished ensemble, written before
``make train`` trains a recipe with ``teacher = "<ensemble>"`` (``targets``)."""

from ..util.lazy import lazy_exports

__getattr__, __dir__, __all__ = lazy_exports(
    __name__, {"teach": "targets", "fold_targets": "targets"}
)
