"""The model layer, below every stage: building a timm backbone and loading its weights
(``backbone``, ``pretrained``), device, autocast and memory format (``device``), batch inputs
(``inputs``), TTA views (``tta``) and inference (``infer``). ``train``, ``predict`` and ``teach``
import it; it imports no Albumentations, pandas, scikit-learn, cleanlab, imagehash or Kaggle
CLI (an import-linter contract), so a Kaggle notebook runs it as is."""
