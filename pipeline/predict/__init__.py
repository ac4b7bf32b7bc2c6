"""Inference from saved artifacts (``make predict``) and the Kaggle offline package
(``make package``): what a code competition's notebook runs, importing only what Kaggle ships."""

from ..util.lazy import lazy_exports

__getattr__, __dir__, __all__ = lazy_exports(
    __name__, {"predict_stage": "stage", "package_stage": "package"}
)
