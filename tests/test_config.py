import pytest

from pipeline.config import Recipe, load_recipe, parse_overrides, recipe_from_dict, to_toml
from pipeline.errors import RecipeError


def test_defaults_and_file(tmp_path):
    p = tmp_path / "r.toml"
    p.write_text('backbone = "resnet10t"\nlr = 1\ntta = ["none", "vflip"]\n')
    r = load_recipe(p, {"epochs": 2})
    assert (r.backbone, r.lr, r.tta, r.epochs, r.batch_size) == (
        "resnet10t",
        1.0,
        ("none", "vflip"),
        2,
        64,
    )


@pytest.mark.parametrize(
    "values, message",
    [
        ({"lrate": 1}, r"unknown key 'lrate'; valid keys: kind, backbone, pretrained"),
        ({"epochs": "many"}, r"epochs must be int, got 'many'"),
        (
            {"augment": "extreme"},
            r"augment = 'extreme'; use one of \"none\", \"light\", \"medium\", \"heavy\"",
        ),
        ({"tta": ["none", "rot90"]}, r"unknown view rot90"),
        ({"optimizer": "lion"}, r"optimizer = 'lion'"),
        ({"epochs": 0}, r"epochs = 0 must be at least 1"),
        (
            {"pretrained": "yes"},
            r'pretrained = \'yes\'; use one of "none", "hub" \(or pretrained_file\)',
        ),
    ],
)
def test_bad_recipes(values, message):
    with pytest.raises(RecipeError, match=message):
        recipe_from_dict(values, "models/x.toml")


def test_missing_recipe_lists_available(tmp_path):
    (tmp_path / "a.toml").write_text("")
    with pytest.raises(RecipeError, match="recipes available in .*: a"):
        load_recipe(tmp_path / "b.toml")


def test_overrides_and_toml_round_trip(tmp_path):
    o = parse_overrides("epochs=1 image_size=32 backbone=resnet18 tta=none,hflip lr=3e-4")
    r = recipe_from_dict(o)
    assert (r.epochs, r.backbone, r.tta, r.lr) == (1, "resnet18", ("none", "hflip"), 3e-4)
    import tomllib

    back = tomllib.loads(to_toml({"recipe": r.to_dict(), "x": 'a"b'}))
    assert recipe_from_dict(back["recipe"]) == r and back["x"] == 'a"b'
    with pytest.raises(RecipeError, match="key=value"):
        parse_overrides("epochs")
    assert Recipe() == recipe_from_dict({})
