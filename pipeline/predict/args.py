"""The arguments of the predict verb, shared by ``python -m pipeline predict`` and
``python -m pipeline.predict`` (the Kaggle notebook's entry point)."""

from __future__ import annotations

import argparse
from pathlib import Path

from ..errors import PipelineError
from ..workspace import Workspace, add_workspace_args, default_comp
from .bad_images import DEFAULT_MAX_BAD, POLICIES
from .budget import DEFAULT_LIMIT


def add_predict_args(s: argparse.ArgumentParser) -> None:
    """The competition and its workspace (as every verb), then what predict alone takes."""
    add_workspace_args(s, cache=False)
    s.add_argument("--name", default="ensemble", help="the saved ensemble")
    s.add_argument("--test", default="", help="folder with the sample submission and images")
    s.add_argument("--to", default="", help="submission path (default <name>/predict/)")
    s.add_argument("--device", default="auto", help="auto, cpu, cuda, cuda:1")
    s.add_argument(
        "--precision", default="auto", help="auto (as trained), fp32, fp16 or bf16 (autocast)"
    )
    s.add_argument("--batch-size", type=int, default=64, help="test images per batch")
    s.add_argument(
        "--time-limit", default=DEFAULT_LIMIT, help="e.g. 9h, 2h30m: drop views, then members"
    )
    s.add_argument(
        "--on-bad-image",
        default="refuse",
        choices=POLICIES,
        help="an unreadable test image: refuse (here) or fallback (predict it from the rest)",
    )
    s.add_argument(
        "--max-bad", default=DEFAULT_MAX_BAD, help="fallback: at most this share unreadable"
    )


def run_predict(a: argparse.Namespace) -> dict:
    from .stage import predict_stage

    if not str(a.test).strip():
        raise PipelineError(
            "make predict needs TEST=<folder>: the sample submission and the test images "
            "(on Kaggle: /kaggle/input/<competition>)"
        )
    comp = default_comp(a.comp, getattr(a, "slug", ""))  # a notebook's Namespace: no slug
    ws = Workspace(Path(comp).name, Path(a.models), Path(a.output))
    return predict_stage(
        ws,
        a.name,
        Path(a.test),
        Path(a.to) if a.to else None,
        a.device,
        a.precision,
        a.batch_size,
        a.time_limit,
        on_bad_image=a.on_bad_image,
        max_bad=a.max_bad,
    )
