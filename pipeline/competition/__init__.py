"""The Kaggle competition folder, in and out, torch-free: reading and checking it (``load``,
``rules``, ``check``), decoding its images (``images``), the submission format (``submission``)
and the embedded demo competition (``demo``)."""

from ..util.lazy import lazy_exports

__getattr__, __dir__, __all__ = lazy_exports(
    __name__,
    {
        "Competition": "load",
        "load_competition": "load",
        "read_csv": "rules",
        "check_stage": "check",
        "ImageError": "images",
        "load_rgb": "images",
        "write_submission": "submission",
        "validate_submission": "submission",
    },
)
