"""Kaggle image-classification pipeline: folds -> train -> ensemble -> submit.

Stages talk only through the artifact files read and written in ``pipeline.artifacts``.
"""

__version__ = "0.1.0"
