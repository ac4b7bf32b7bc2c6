"""Kaggle image-classification pipeline: folds -> train -> ensemble (-> report) -> submit.

One package per stage (``folds``, ``train``, ``ensemble``, ``report``, ``submit``) over
``competition`` (the Kaggle folder, torch-free) and ``model``, over a small core (``CORE``
below). Stages talk only through the artifact files that ``artifacts`` reads and writes at the
paths ``workspace.Workspace`` owns. Names below are imported lazily: ``import pipeline`` loads
no torch.
"""

from .util.allocator import tune
from .util.lazy import lazy_exports

__version__ = "0.1.0"

# The core, the bottom import layer: the contracts (the recipe, the artifact tree's paths, the
# artifacts, the errors) and three packages by concern (disk safety, the trackers, utilities).
# The one list: pyproject.toml's last `layers` layer and docs/development.md's `layers` row are
# tested against it (tests/test_layout.py).
CORE = ("config", "workspace", "artifacts", "errors", "disk", "track", "util")

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
