"""Machines other than Linux with CUDA, simulated: no ``os.sched_getaffinity`` (macOS) and
Apple's ``mps`` device (its autocast and memory format turned off)."""

from __future__ import annotations

import os

import torch

from pipeline.config import Recipe
from pipeline.model import device as devices
from pipeline.model.inputs import to_input
from pipeline.train.executors.base import default_threads
from pipeline.util.machine import cores


def test_cores_fall_back_to_the_count_without_affinity(monkeypatch):
    assert cores() == len(os.sched_getaffinity(0))  # Linux: the affinity mask
    monkeypatch.delattr(os, "sched_getaffinity")
    monkeypatch.setattr(os, "cpu_count", lambda: 6)
    monkeypatch.delenv("OMP_NUM_THREADS", raising=False)
    assert cores() == 6
    assert default_threads(2) == 3  # the executors' share per job


def test_auto_device_is_mps_on_apple_silicon(monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    monkeypatch.setattr(torch.backends.mps, "is_available", lambda: True)
    mps = devices.resolve_device("auto")
    assert mps == torch.device("mps")
    recipe = Recipe(amp="auto", channels_last=True)
    assert devices.amp_dtype(recipe, mps) is None  # fp32: no autocast on mps
    assert not devices.channels_last(recipe.channels_last, mps)
    assert devices.channels_last(True, torch.device("cpu"))  # the CPU path unchanged
    with devices.autocast(mps, None):  # no torch.autocast("mps") is ever made
        pass
    monkeypatch.setattr(torch.backends.mps, "is_available", lambda: False)
    assert devices.resolve_device("auto") == torch.device("cpu")


def test_inputs_stay_contiguous_on_mps_and_channels_last_on_cpu(monkeypatch):
    images = torch.zeros(2, 4, 4, 3, dtype=torch.uint8)
    norm = (torch.zeros(3), torch.ones(3))
    x = to_input(images, *norm, torch.device("cpu"), True)
    assert x.is_contiguous(memory_format=torch.channels_last) and not x.is_contiguous()
    # the mps branch, with the tensor kept on the CPU (no Apple GPU here)
    monkeypatch.setattr("pipeline.model.inputs.device_type", lambda d: "mps")
    y = to_input(images, *norm, torch.device("cpu"), True)
    assert y.is_contiguous()


def test_explicit_mps_without_it_is_one_line(monkeypatch):
    import pytest

    from pipeline.errors import PipelineError

    monkeypatch.setattr(torch.backends.mps, "is_available", lambda: False)
    with pytest.raises(PipelineError, match=r"^DEVICE=mps but Apple's MPS is not available here"):
        devices.resolve_device("mps")
