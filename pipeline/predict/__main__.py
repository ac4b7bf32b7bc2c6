"""``python -m pipeline.predict``: the predict verb alone, for a Kaggle notebook.

``python -m pipeline predict`` builds the full CLI, whose other verbs import packages a Kaggle
image lacks (imagehash); this entry point imports only the predict stage."""

import argparse
import sys

from ..errors import PipelineError
from .args import add_predict_args, run_predict


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m pipeline.predict", description=__doc__)
    add_predict_args(p)
    try:
        run_predict(p.parse_args(argv))
    except PipelineError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    return 0


sys.exit(main())
