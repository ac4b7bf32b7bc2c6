"""Stage 4, ``make submit``: validate ``submission.csv``, send it with the Kaggle CLI, log the
ledger. Torch-free."""

from ..util.lazy import lazy_exports

__getattr__, __dir__, __all__ = lazy_exports(__name__, {"submit_stage": "stage"})
