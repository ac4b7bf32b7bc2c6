"""The opening lines of every Kaggle notebook this project writes (``make package``'s offline
predictor and ``EXECUTOR=kaggle``'s training batches): where Kaggle mounts the inputs and keeps
the output, overridable for the fake Kaggle of the tests, and ``first``, the one input folder
that exists of a dataset's or competition's possible mount points."""

PATHS = """INPUT = Path(os.environ.get("PIPELINE_INPUT", "/kaggle/input"))
WORKING = Path(os.environ.get("PIPELINE_WORKING", "/kaggle/working"))


def first(*candidates):
    for c in candidates:
        if (INPUT / c).is_dir():
            return INPUT / c
    raise SystemExit(f"none of {candidates} under {INPUT}: add the inputs to the notebook")
"""
