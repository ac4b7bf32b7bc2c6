import numpy as np
import pytest
import timm
import torch

from pipeline.config import Recipe
from pipeline.errors import RecipeError
from pipeline.model.device import amp_dtype
from pipeline.model.infer import predict
from pipeline.train import loop
from pipeline.train.augment import train_transform
from pipeline.train.kinds.finetune import epochs_since_best
from pipeline.train.loader import CachedImages, make_loader
from pipeline.train.optim import make_optimizer, make_scheduler, param_groups


def _model():
    torch.manual_seed(0)
    return timm.create_model("test_resnet", num_classes=3)


def test_head_multiplier_and_layer_decay():
    r = Recipe(lr=1e-3, head_lr_mult=10, layer_decay=0.5)
    groups = param_groups(_model(), r)
    head = [g for g in groups if g["is_head"]]
    body = [g for g in groups if not g["is_head"]]
    assert head and all(g["lr"] == pytest.approx(1e-2) for g in head)
    assert max(g["lr"] for g in body) <= 1e-3 and min(g["lr"] for g in body) < 1e-4
    assert all(g["weight_decay"] == 0 for g in groups if g["params"][0].ndim <= 1)


def test_schedule_warmup_then_cosine_keeps_group_ratio():
    m = _model()
    r = Recipe(lr=1.0, head_lr_mult=10, epochs=2, warmup_epochs=1, min_lr_ratio=0.1)
    opt = make_optimizer(m, r)
    sched = make_scheduler(opt, r, steps_per_epoch=10)
    lrs = []
    for _ in range(20):
        lrs.append([g["lr"] for g in opt.param_groups])
        opt.step()
        sched.step()
    assert lrs[0][0] == pytest.approx(0.01) and max(x[0] for x in lrs) == pytest.approx(1.0)
    assert lrs[-1][0] == pytest.approx(0.1 + 0.9 * 0.5 * (1 + np.cos(np.pi * 0.9)))
    head = [i for i, g in enumerate(opt.param_groups) if g["is_head"]][0]
    assert all(x[head] == pytest.approx(10 * x[0]) for x in lrs)


def test_freeze_trains_only_head():
    m = _model()
    loop.set_frozen(m, True)
    trainable = {id(p) for p in m.parameters() if p.requires_grad}
    assert trainable == {id(p) for p in m.get_classifier().parameters()}
    loop.set_frozen(m, False)
    assert all(p.requires_grad for p in m.parameters())


def test_early_stopping_counter():
    h = [{"val_acc": a} for a in (0.5, 0.7, 0.6, 0.65)]
    assert (
        epochs_since_best(h, 2) == 2
        and epochs_since_best(h, 3) == 0
        and epochs_since_best(h, 0) == 0
    )


def test_epoch_with_accumulation_clipping_ema_mixup_and_custom_augment():
    rng = np.random.default_rng(0)
    images = rng.integers(0, 255, (24, 16, 16, 3), dtype=np.uint8)
    labels = np.arange(24) % 3
    r = Recipe(
        backbone="test_resnet",
        image_size=16,
        batch_size=4,
        accum_steps=2,
        clip_grad=1.0,
        ema_decay=0.5,
        mixup_alpha=0.4,
        cutmix_alpha=1.0,
        augment="heavy",
        custom_augment=({"name": "ToGray", "p": 0.5},),
    )
    dev = torch.device("cpu")
    ds = CachedImages(
        images, np.arange(24), labels, train_transform(r.augment, 16, r.custom_augment), seed=1
    )
    loader = make_loader(ds, 4, True, 1, 0, dev)
    norm = (torch.zeros(3), torch.ones(3))
    m = _model()
    state = loop.make_state(m, r, norm, dev, len(loader), 3)
    before = [p.detach().clone() for p in state.ema.module.parameters()]
    row = loop.train_one_epoch(state, loader, "t")
    assert np.isfinite(row["train_loss"]) and state.sched.last_epoch == 3  # 6 batches / 2
    assert any(
        not torch.equal(a, b) for a, b in zip(before, state.ema.module.parameters(), strict=True)
    )
    out = predict(state.eval_model(), images, np.arange(5), ("none", "hflip"), norm, dev, 2)
    assert out.shape == (2, 5, 3) and out.dtype == np.float32
    assert amp_dtype(r, dev) is None


def test_recipe_knob_errors():
    with pytest.raises(RecipeError, match="must be even for mixup"):
        Recipe(mixup_alpha=0.2, batch_size=7)
    with pytest.raises(RecipeError, match="custom_augment entry .*Albumentations transform"):
        from pipeline.config import recipe_from_dict

        recipe_from_dict({"custom_augment": [{"name": "NoSuchThing"}]})
