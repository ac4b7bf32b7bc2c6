"""Stage 3, ``make ensemble``: every blending method fitted on the OOF logits, scored by nested
CV; the best one writes ``submission.csv``."""

from ..util.lazy import lazy_exports

__getattr__, __dir__, __all__ = lazy_exports(
    __name__,
    {
        "ensemble_stage": "stage",
        "ensemble_name": "stage",
        "METHODS": "methods",
        "method_class": "methods",
    },
)
