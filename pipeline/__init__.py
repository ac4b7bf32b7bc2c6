"""Kaggle image-classification pipeline: folds -> train -> ensemble (-> report) -> submit.

One package per stage (``folds``, ``train``, ``ensemble``, ``report``, ``submit``) over a small
core (``config``, ``layout``, ``artifacts``, ``errors``) and ``competition`` (the Kaggle folder,
torch-free). Stages talk only through the artifact files that ``artifacts`` reads and writes at
the paths ``layout.Workspace`` owns. Names below are imported lazily: ``import pipeline`` loads
no torch.
"""

from .allocator import tune
from .lazy import lazy_exports

__version__ = "0.1.0"

tune()  # large tensors from the heap, not mmap per allocation: up to 3x faster on CPU

__getattr__, __dir__, __all__ = lazy_exports(
    __name__,
    {
        "Competition": "competition.load",
        "load_competition": "competition.load",
        "Recipe": "config",
        "load_recipe": "config",
        "Workspace": "layout",
        "PipelineError": "errors",
        "METHODS": "ensemble.methods",
        "folds_stage": "folds.stage",
        "train_stage": "train.stage",
        "ensemble_stage": "ensemble.stage",
        "report_stage": "report.stage",
        "submit_stage": "submit.stage",
    },
)
