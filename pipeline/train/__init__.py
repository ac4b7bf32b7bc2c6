"""Stage 2, ``make train``: every (recipe, fold) trained with timm and Albumentations; OOF and
test logits under every TTA view."""

from ..util.lazy import lazy_exports

__getattr__, __dir__, __all__ = lazy_exports(
    __name__, {"train_stage": "stage", "resolve_device": "stage"}
)
