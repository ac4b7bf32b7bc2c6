"""The time budget: plan arithmetic, probes under a fake clock, plan.toml written once and
reused, runs left out, refusals, and the shipped recipe sets."""

import json
import tomllib
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
import torch

from pipeline.cli import main
from pipeline.competition.load import load_competition
from pipeline.config import load_recipe
from pipeline.errors import PipelineError
from pipeline.train.kinds.pricing import FOLD_OVERHEAD_S, Cost, Estimate
from pipeline.train.planning import plan as planner
from pipeline.train.planning.first_fold import Measured
from pipeline.train.planning.plan_file import plan_entries, write_plan
from pipeline.train.planning.probe import probe_run
from pipeline.train.planning.replan import Replanner
from pipeline.train.planning.value import ensemble_value, mixture_weights
from pipeline.util.durations import parse_duration
from pipeline.workspace import Workspace

from .fakes import TOY_RECIPE, toy_workspace

ROOT = Path(__file__).resolve().parents[1]


def cost(kind="finetune", once=10.0, epoch=20.0, fold=5.0, probe=1.0):
    return Cost(kind, once, epoch, fold, probe, {})


def test_one_duration_parser_for_budget_and_time_limit():
    assert parse_duration("20m", "BUDGET") == 1200 and parse_duration("1.5h", "BUDGET") == 5400
    assert parse_duration("90s", "X") == 90 and parse_duration("1h30m", "TIME_LIMIT") == 5400
    assert parse_duration(" 2h 5s ", "X") == 7205
    for bad in ("7", "soon", "30mins", "5s1h", "1h1h", "0m", ""):
        with pytest.raises(PipelineError, match=f"BUDGET={bad!r}: a duration"):
            parse_duration(bad, "BUDGET")


def test_plan_by_value_keeps_a_strong_late_run_and_spends_what_is_left():
    """A fake cost/score table: frozen members weak (cheap, first), strong (dear, late) and a
    fine-tuned run. In RUNS order the weak one crowds the strong one out; by value the strong
    one is kept, and the epochs of the fine-tuned run take what the budget has left."""
    costs = {
        "weak": cost("features", once=300.0, epoch=0.0, fold=4.0),
        "strong": cost("features", once=700.0, epoch=0.0, fold=4.0),
        "tune": cost(once=0.0, epoch=10.0, fold=2.0),
    }
    worth = {"weak": 0.50, "strong": 0.65, "tune": 0.40}

    def value(subset: tuple[str, ...]) -> float:  # a blend is a little better than its best
        return max(worth[r] for r in subset) + 0.01 * (len(subset) - 1)

    epochs = {"weak": 1, "strong": 1, "tune": 4}
    old = planner.make_plan(costs, epochs, 5, 1000.0, auto=True)
    assert list(old.costs) == ["weak", "tune"]  # priority order: strong never fit after weak
    plan = planner.make_plan(costs, epochs, 5, 1000.0, auto=True, value=value)
    assert list(plan.costs) == ["strong", "tune"]
    # strong 700 + 20 + 1 = 721; tune 5 * (E * 10 + 2) + 1: E = 5 fits (261 -> 982), 6 does not
    assert plan.epochs == {"strong": 1, "tune": 5} and plan.total_s == pytest.approx(982.0)
    assert plan.total_s <= 1000.0 and 1000.0 - plan.total_s < 5 * 10  # no epoch left unspent
    # equal value: more runs, then the dearer plan, which spends the budget (strong + tune at
    # 5 epochs, 982 s, over weak + tune, 732 s at the 2x epoch cap)
    flat = planner.make_plan(costs, epochs, 5, 1000.0, auto=True, value=lambda s: 1.0)
    assert list(flat.costs) == ["strong", "tune"] and flat.total_s == pytest.approx(982.0)

    # within VALUE_TIE (0.005) of the best is a tie too; further below is not
    def close(gap: float):
        return lambda s: 1.0 + gap * ("weak" in s) + 0.001 * len(s)

    near = planner.make_plan(costs, epochs, 5, 1000.0, auto=True, value=close(0.004))
    assert list(near.costs) == ["strong", "tune"]
    far = planner.make_plan(costs, epochs, 5, 1000.0, auto=True, value=close(0.006))
    assert list(far.costs) == ["weak", "tune"]


def test_plan_weighs_one_view_of_a_strong_run_against_two_of_a_weak_one(tmp_path):
    """``run[none]`` is a run with its first view only: cheaper, and estimated on that view.
    A run is planned once, whole or as its variant; plan.toml keeps the run with its tta."""
    costs = {
        "weak": cost("features", once=500.0, epoch=0.0, fold=4.0),
        "strong": cost("features", once=1000.0, epoch=0.0, fold=8.0),
        "strong[none]": cost("features", once=520.0, epoch=0.0, fold=5.0),
    }
    worth = {"weak": 0.50, "strong": 0.66, "strong[none]": 0.64}

    def value(subset: tuple[str, ...]) -> float:
        return max(worth[r] for r in subset) + 0.01 * (len(subset) - 1)

    epochs = dict.fromkeys(costs, 1)
    plan = planner.make_plan(costs, epochs, 5, 700.0, auto=True, value=value)
    assert list(plan.costs) == ["strong[none]"]  # two views of weak (521 s) are worth less
    plan = planner.make_plan(costs, epochs, 5, 1200.0, auto=True, value=value)
    assert list(plan.costs) == ["strong"]  # 0.66 alone beats weak + strong[none] (0.65)
    plan = planner.make_plan(costs, epochs, 5, 1600.0, auto=True, value=value)
    assert list(plan.costs) == ["weak", "strong"]  # 1562 s; never strong and strong[none]
    small = planner.make_plan(costs, epochs, 5, 700.0, auto=True, value=value)
    write_plan(tmp_path / "plan.toml", small, "cpu", ("weak",), costs)
    saved = tomllib.loads((tmp_path / "plan.toml").read_text())
    assert list(saved["runs"]) == ["strong"] and saved["runs"]["strong"]["tta"] == ["none"]


def _rated(c, score):
    est = Estimate(score, np.zeros((1, 1)), np.zeros(1))
    return Cost(c.kind, c.once_s, c.epoch_s, c.fold_s, c.probe_s, {}, est)


def test_replan_spends_what_a_fast_run_left_and_trims_after_a_slow_one(tmp_path, capsys):
    """After each run the rest is planned again for the budget left, priced at the measured
    pace: a run that took half its price leaves room for the member the first plan left out;
    one that took twice its price cuts the epochs of the fine-tune still to come."""
    worth = {"a": 0.60, "b": 0.55, "tune": 0.50}

    def value(subset: tuple[str, ...]) -> float:
        return max(worth[r] for r in subset) + 0.01 * (len(subset) - 1) if subset else 0.0

    costs = {
        "a": _rated(cost("features", once=700.0, epoch=0.0, fold=4.0), worth["a"]),
        "b": _rated(cost("features", once=400.0, epoch=0.0, fold=4.0), worth["b"]),
    }
    epochs = {"a": 1, "b": 1}
    first = planner.make_plan(costs, epochs, 5, 1000.0, auto=True, value=value)
    assert list(first.costs) == ["a"]  # a 721 s; a + b 1142 s does not fit
    path = tmp_path / "plan.toml"
    write_plan(path, first, "cpu", ("b",), costs)
    re = Replanner(path, first, costs, epochs, True, value, "cpu", ["a", "b"])
    todo, left_out = re.after("a", seconds=360.0, elapsed_s=370.0)  # pace 0.5: 630 s left
    assert list(todo) == ["b"] and left_out == []  # b at the pace: 210 s
    saved = tomllib.loads(path.read_text())
    assert list(saved["runs"]) == ["a", "b"] and saved["left_out"] == []
    assert saved["replans"][0] == {
        "after": "a",
        "took_s": 360.0,
        "pace": 0.5,
        "left_s": 630.0,
        "kept": [],
        "added": ["b"],
        "dropped": [],
    }
    assert "re-plan after a (6.0 min, pace 0.50 x the probe's price): 10.5 min left; adds b" in (
        capsys.readouterr().out
    )
    todo, _ = re.after("b", seconds=200.0, elapsed_s=580.0)
    assert todo == {}  # nothing left to add

    costs = {
        "a": _rated(cost("features", once=300.0, epoch=0.0, fold=4.0), worth["a"]),
        "tune": _rated(cost(once=0.0, epoch=10.0, fold=2.0), worth["tune"]),
    }
    epochs = {"a": 1, "tune": 4}
    first = planner.make_plan(costs, epochs, 5, 1000.0, auto=True, value=value)
    assert first.epochs == {"a": 1, "tune": 8}  # 321 + 5 * (8 * 10 + 2) + 1 = 732 s
    write_plan(path, first, "cpu", (), costs)
    re = Replanner(path, first, costs, epochs, True, value, "cpu", ["a", "tune"])
    todo, _ = re.after("a", seconds=600.0, elapsed_s=620.0)  # pace 1.875: 380 s left
    # tune at the pace: 5 * (E * 18.75 + 3.75) <= 380 -> E = 3
    assert (
        todo["tune"]["epochs"] == 3
        and tomllib.loads(path.read_text())["runs"]["tune"]["epochs"] == 3
    )
    todo, left_out = Replanner(path, first, costs, epochs, True, value, "cpu", ["a", "tune"]).after(
        "a", seconds=640.0, elapsed_s=990.0
    )
    assert todo == {} and left_out == ["tune"]  # nothing fits the 10 s left: dropped
    assert "drops tune" in capsys.readouterr().out


def test_replan_prices_a_run_whose_embeddings_a_partial_run_wrote_at_nothing(tmp_path):
    """A partial run's trunk pass writes its backbone's embeddings: the re-plan after it asks
    each candidate's kind (``reprice``) and adds the feature member the first plan priced at a
    whole embedding pass and left out."""
    worth = {"part": 0.60, "feat": 0.60}

    def value(subset: tuple[str, ...]) -> float:
        return max((worth[r] for r in subset), default=0.0)

    costs = {
        "part": _rated(cost("partial", once=500.0, epoch=20.0, fold=4.0), worth["part"]),
        "feat": _rated(cost("features", once=500.0, epoch=0.0, fold=4.0), worth["feat"]),
    }
    epochs = {"part": 4, "feat": 1}
    first = planner.make_plan(costs, epochs, 5, 1000.0, auto=True, value=value)
    assert list(first.costs) == ["part"]  # both: 1000 + 520 + ... does not fit
    path = tmp_path / "plan.toml"
    write_plan(path, first, "cpu", ("feat",), costs)
    cached = set()

    def reprice(c, cst):
        return replace(cst, once_s=0.0) if c in cached else cst

    runs = ["part", "feat"]
    re = Replanner(path, first, costs, epochs, True, value, "cpu", runs, reprice)
    before = Replanner(path, first, costs, epochs, True, value, "cpu", runs)
    assert before.after("part", seconds=900.0, elapsed_s=910.0)[0] == {}  # 500 s > 90 s left
    cached.add("feat")  # the partial run embedded for it
    todo, left_out = re.after("part", seconds=900.0, elapsed_s=910.0)
    assert list(todo) == ["feat"] and left_out == []  # 5 folds x 4 s at pace 1.0 fit in 90 s


def test_a_plan_prices_embeddings_a_partial_run_writes_once():
    """A feature run whose embeddings the partial run of its backbone writes pays no embedding
    pass in a set with it; the epochs the plan gives the partial run grow by what it saved."""
    emb = frozenset({"embeddings:lite2_160_w:none", "embeddings:lite2_160_w:hflip"})
    part = _rated(cost("partial", once=300.0, epoch=27.0, fold=16.0), 0.75)
    feat = _rated(cost("features", once=230.0, epoch=0.0, fold=12.0), 0.75)
    costs = {"part": replace(part, provides=emb), "feat": replace(feat, needs=emb)}
    both = planner.shared(costs)
    assert both["feat"].once_s == 0.0 and both["part"].once_s == 300.0
    assert planner.shared({"feat": costs["feat"]})["feat"].once_s == 230.0  # alone: it embeds
    other = replace(feat, needs=frozenset({"embeddings:lite1_128_w:none"}))
    assert planner.shared({**costs, "feat": other})["feat"].once_s == 230.0  # another backbone
    plan = planner.make_plan(costs, {"part": 4, "feat": 1}, 5, 1000.0, True, lambda s: 0.75)
    # 301 + 5 * (E * 27 + 16) + (0 + 60 + 1) <= 1000 -> E = 4 (without sharing: E = 2)
    assert set(plan.costs) == {"part", "feat"} and plan.epochs["part"] == 4


def test_a_tie_keeps_a_partial_run_whole_beside_the_feature_run_it_feeds():
    """cifar10's probe figures at BUDGET=20m, every set's estimate equal: the partial run with
    both views writes both views' embeddings, so the lite2 feature run embeds nothing. A tie
    goes to more runs, then to whole runs, not to the dearer plan that trains the partial run
    with one view and pays a second trunk pass for the feature run. A partial run is never cut
    below half its recipe's epochs (one epoch of four scored below the linear head it starts
    from): it is left out instead."""
    two = frozenset({"embeddings:lite2:none", "embeddings:lite2:hflip"})
    one = frozenset({"embeddings:lite2:none"})
    part_none = replace(cost("partial", once=152.0, epoch=26.0, fold=9.0), provides=one)
    feat_none = replace(cost("features", once=152.0, epoch=0.0, fold=10.0), needs=one)
    costs = {
        "part": replace(
            cost("partial", once=330.0, epoch=26.0, fold=12.0), provides=two, fewer=part_none
        ),
        "part[none]": part_none,
        "feat": replace(
            cost("features", once=330.0, epoch=0.0, fold=15.0), needs=two, fewer=feat_none
        ),
        "feat[none]": feat_none,
        "lite1[none]": cost("features", once=98.0, epoch=0.0, fold=9.0),
    }
    epochs = {"part": 4, "part[none]": 4, "feat": 1, "feat[none]": 1, "lite1[none]": 1}
    plan = planner.make_plan(costs, epochs, 5, 1200.0, True, lambda s: 0.76)
    # part 331 + 5 * (4 * 26 + 12) = 911, feat 1 + 0 + 75, lite1 1 + 98 + 45: 1131 s. Before,
    # part[none] at 3 epochs (588) + feat paying its own pass (406) + lite1 (144) = 1138 won
    assert set(plan.costs) == {"part", "feat", "lite1[none]"} and plan.epochs["part"] == 4
    assert plan.total_s == pytest.approx(1131.0)
    # 800 s: both whole (part at 2 epochs 651 + feat 76 + lite1 144 = 871) do not fit; one
    # view each, sharing one trunk pass: part[none] at 3 epochs 588 + feat[none] 51 + lite1 144
    small = planner.make_plan(costs, epochs, 5, 800.0, True, lambda s: 0.76)
    assert set(small.costs) == {"part[none]", "feat[none]", "lite1[none]"}
    assert small.epochs["part[none]"] == 3 and small.total_s == pytest.approx(783.0)
    tiny = planner.make_plan(costs, epochs, 5, 400.0, True, lambda s: 0.76)
    assert "part" not in tiny.costs and "part[none]" not in tiny.costs  # 2 epochs: 458 s
    with pytest.raises(PipelineError) as e:
        planner.make_plan({"part": costs["part"]}, {"part": 4}, 5, 600.0, True, lambda s: 0.76)
    assert str(e.value).startswith(
        "BUDGET=10m is too small for any run (each at its fewest epochs: part 2): part 10.8 min"
    )


def test_plan_scales_epochs_keeps_order_and_leaves_out_what_does_not_fit(tmp_path):
    costs = {"a": cost(), "f": cost("features", once=100.0, epoch=0.0, fold=4.0)}
    # a: 10 + 5 * (E * 20 + 5) + 1 probe; f: 100 + 5 * 4 + 1 probe = 121
    plan = planner.make_plan(costs, {"a": 4, "f": 1}, 5, 1000.0, auto=True)
    # E = 8 (2x the recipe, the cap): 10 + 5 * 165 + 1 + 121 = 957 <= 1000
    assert plan.epochs == {"a": 8, "f": 1} and plan.total_s == pytest.approx(957.0)
    plan = planner.make_plan(costs, {"a": 4, "f": 1}, 5, 600.0, auto=True)
    # E = 4: 10 + 5 * 85 + 1 + 121 = 557; E = 5: 657 > 600
    assert plan.epochs["a"] == 4 and plan.total_s == pytest.approx(557.0)
    plan = planner.make_plan(costs, {"a": 4, "f": 1}, 5, 200.0, auto=True)
    # a at 1 epoch: 10 + 5 * 25 + 1 = 136; then f (121) no longer fits: left out
    assert list(plan.costs) == ["a"] and plan.epochs == {"a": 1}
    with pytest.raises(PipelineError, match="EPOCHS=recipe|too small"):
        planner.make_plan({"a": cost()}, {"a": 4}, 5, 300.0, auto=False)
    with pytest.raises(PipelineError) as e:
        planner.make_plan(costs, {"a": 4, "f": 1}, 5, 100.0, auto=True)
    assert str(e.value) == (
        "BUDGET=100s is too small for any run (1 epoch each): a 2.2 min, f 2.0 min "
        "(probes 2 s); raise BUDGET or name cheaper RUNS"
    )
    text = planner.format_plan(plan, 100, 10, "cpu", ("f",))
    assert "f                     left out" in text and "1 (4)" in text
    write_plan(Path(tmp_path) / "plan.toml", plan, "cpu", ("f",), costs)
    saved = tomllib.loads((Path(tmp_path) / "plan.toml").read_text())
    assert saved["left_out"] == ["f"] and saved["left_out_costs"]["f"]["smallest_s"] == 120.0
    assert saved["runs"]["a"]["epochs"] == 1 and saved["total_s"] == 136.0


class FakeClock:
    """Each reading is one second after the one before."""

    def __init__(self):
        self.t = 0.0

    def __call__(self) -> float:
        self.t += 1.0
        return self.t


@pytest.fixture
def toy(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    return toy_workspace(tmp_path, {"t": TOY_RECIPE}, n_per_class=10, n_test=6)  # 2 folds


def test_probe_arithmetic_under_a_fake_clock(toy):
    comp = load_competition(toy / "input" / "toy")
    ws = Workspace("toy", models=toy / "models", output=toy)
    recipe = load_recipe(toy / "models" / "t.toml")
    y = np.arange(30) % 3
    c = probe_run(comp, ws, recipe, y, 2, torch.device("cpu"), FakeClock(), batches=3)
    # the sample is read from the decode cache (nothing to pay once: decoding is priced and
    # spent before the probes, decoding.py); one tick for the 3 timed training batches (24
    # images), one for prediction of 3 batches of 16 images (48, one view)
    assert c.kind == "finetune" and c.once_s == 0.0
    assert ws.decode_cache("train", 16).is_file()
    assert c.figures == {"train_ips": 24.0, "predict_ips_per_view": 48.0}
    assert c.epoch_s == pytest.approx(15 / 24 + 15 / 48)  # 15 training rows, 15 validation rows
    assert c.fold_s == pytest.approx((15 + 6) * 2 / 48 + FOLD_OVERHEAD_S)


def test_decoding_is_priced_and_refused_before_any_cache_when_it_alone_exceeds_the_budget(
    toy, capsys
):
    from pipeline.train.planning.decoding import decode_for_budget

    comp = load_competition(toy / "input" / "toy")
    ws = Workspace("toy", models=toy / "models", output=toy)
    # one tick for the 30-image sample: 1/30 s an image, 36 images 1.2 s
    with pytest.raises(PipelineError, match=r"BUDGET=1s is less than decoding alone: 36 "):
        decode_for_budget(comp, ws, [16, 24], 1.0, FakeClock())
    assert not list(ws.cache.glob("*.u8"))
    assert decode_for_budget(comp, ws, [16, 24], 2.0, FakeClock()) == 1.0  # built: one tick
    assert "plan: decoding 36 images at 16, 24 px: about 0.0 min" in capsys.readouterr().out
    assert sorted(p.name for p in ws.cache.glob("*.u8")) == [
        "test_16.u8",
        "test_24.u8",
        "train_16.u8",
        "train_24.u8",
    ]
    assert decode_for_budget(comp, ws, [16, 24], 1.0, FakeClock()) == 0.0  # nothing missing


def test_budget_plan_written_once_reused_and_recorded(toy, capsys):
    comp = ["--comp", "input/toy"]
    assert main(["train", *comp, "--runs", "t", "--budget", "1h", "--folds", "0"]) == 0
    out = capsys.readouterr().out
    assert "plan for BUDGET=60m on cpu: K=2" in out and "wrote models/toy/plan.toml" in out
    assert "re-plan after t (" in out and "nothing more to train" in out
    saved = tomllib.loads((toy / "models/toy/plan.toml").read_text())
    assert saved["replans"][0]["after"] == "t" and saved["replans"][0]["added"] == []
    assert saved["budget_s"] == 3600 and saved["runs"]["t"]["epochs"] == 4  # 2x: the cap
    assert main(["train", *comp, "--runs", "t"]) == 0  # no BUDGET: the written plan
    out = capsys.readouterr().out
    assert "plan: models/toy/plan.toml (BUDGET=60m" in out and "probing" not in out
    cfg = tomllib.loads((toy / "models/toy/t/config.toml").read_text())
    assert cfg["recipe"]["epochs"] == 4 and cfg["plan"]["epochs"] == 4
    assert cfg["plan"]["budget_s"] == 3600 and cfg["wall"]["folds_s"] > 0
    assert len(cfg["wall"]["fold_s"]) == 2
    assert main(["train", *comp, "--runs", "t", "--budget", "20m"]) == 2
    err = capsys.readouterr().err
    assert "models/toy/plan.toml was planned for BUDGET=60m, not 20m; delete it" in err
    assert main(["train", *comp, "--runs", "t", "--budget", "1h30m"]) == 2  # read as 90 minutes
    assert "was planned for BUDGET=60m, not 90m" in capsys.readouterr().err


def test_shipped_sets_cpu_never_picks_gpu(toy, capsys):
    ws = Workspace("toy", models=ROOT / "models")
    cpu = sorted(p.stem for p in (ROOT / "models" / "cpu").glob("*.toml"))
    gpu = sorted(p.stem for p in (ROOT / "models" / "gpu").glob("*.toml"))
    assert cpu and gpu and not set(cpu) & set(gpu)
    for run in cpu + gpu:
        load_recipe(ws.recipe(run))  # every shipped recipe is valid
    from pipeline.train.request import recipe_set

    assert recipe_set(ws, "auto", "cpu") == ("cpu", cpu)
    assert recipe_set(ws, "cpu", "auto") == ("cpu", cpu)
    assert recipe_set(ws, "gpu", "cpu") == ("gpu", gpu)  # asked for by name only
    with pytest.raises(PipelineError, match="RECIPES='big': use auto, cpu, gpu, cpu-hub, gpu-hub"):
        recipe_set(ws, "big", "cpu")


def test_ensemble_value_weighs_a_weak_run_as_a_blend_would():
    """The plan values a set of runs as the ensemble stage would blend them: a weak run mixed
    in at the maximum-likelihood weight (fitted on one half of the probe's held-out images,
    scored on the other) costs the strong run nothing, where an equal vote would drown it; two
    runs right on different images are worth more together than either alone."""
    from pipeline.competition.task import Task

    rng = np.random.default_rng(0)
    n, c = 400, 5
    y = rng.integers(0, c, n)
    val = np.arange(n)

    def run(right: np.ndarray, sharp: float, says: np.ndarray = y) -> Cost:
        z = rng.normal(size=(n, c))
        z[right, says[right]] += sharp
        p = np.exp(z) / np.exp(z).sum(1, keepdims=True)
        return Cost("features", 1.0, 0.0, 1.0, 0.0, {}, Estimate(0.0, p, val))

    everyone = np.arange(n)
    # as sure of itself as the strong run, but right on only 30 % of the images
    says = np.where(rng.random(n) < 0.3, y, (y + rng.integers(1, c, n)) % c)
    costs = {"strong": run(everyone[rng.random(n) < 0.8], 4.0), "weak": run(everyone, 4.0, says)}
    value = ensemble_value(Task("multiclass", "label", "accuracy"), costs, y)
    equal = np.mean([costs[r].estimate.probs for r in costs], axis=0)
    assert (equal.argmax(1) == y).mean() < value(("strong",)) - 0.05  # an equal vote drowns it
    assert value(("strong", "weak")) >= value(("strong",)) - 0.01
    first, second = everyone < n // 2, everyone >= n // 2
    costs = {"a": run(everyone[first], 4.0), "b": run(everyone[second], 4.0)}
    value = ensemble_value(Task("multiclass", "label", "accuracy"), costs, y)
    assert value(("a", "b")) > max(value(("a",)), value(("b",))) + 0.2
    w = mixture_weights(np.array([[0.9, 0.8, 0.9], [0.1, 0.2, 0.1]]))
    assert w[0] > 0.99 and w.sum() == pytest.approx(1.0)


def test_a_run_whose_first_fold_falls_short_is_cut_and_its_minutes_re_planned(tmp_path, capsys):
    """After a fine-tune's first fold the re-plan values it at what that fold measured: one
    that adds far less to the trained member than its probe promised is cut (its fold kept,
    plan.toml says why, a resumed call leaves it out) and its minutes go to the member it had
    crowded out; one that measures near its estimate is finished."""
    worth = {"a": 0.60, "tune": 0.70, "b": 0.52}

    def value(subset: tuple[str, ...]) -> float:  # the best, and a fifth of the second's edge
        ranked = sorted((worth[r] for r in subset), reverse=True) + [0.5]
        return ranked[0] + 0.2 * (ranked[1] - 0.5)

    costs = {
        "a": _rated(cost("features", once=300.0, epoch=0.0, fold=4.0), worth["a"]),
        "tune": _rated(cost(once=0.0, epoch=30.0, fold=2.0), worth["tune"]),
        "b": _rated(cost("features", once=500.0, epoch=0.0, fold=4.0), worth["b"]),
    }
    epochs = {"a": 1, "tune": 4, "b": 1}
    first = planner.make_plan(costs, epochs, 5, 1000.0, auto=True, value=value)
    assert list(first.costs) == ["a", "tune"] and first.epochs["tune"] == 4  # b does not fit
    path = tmp_path / "plan.toml"

    def replanner():
        write_plan(path, first, "cpu", ("b",), costs)
        re = Replanner(path, first, costs, epochs, True, value, "cpu", ["a", "tune", "b"])
        # a's OOF scored as estimated: the probe's level is the measured one here
        as_estimated = Measured(score=0.60, gain=0.60, rows=2000, base=())
        todo, _ = re.after("a", seconds=320.0, elapsed_s=330.0, measured=as_estimated)
        assert list(todo) == ["tune"] and todo["tune"]["epochs"] == 4
        return re

    # tune's first fold (122 s, its price) takes -0.01 off a's blend there, not adds +0.12
    re = replanner()
    short = Measured(score=0.59, gain=-0.01, rows=400, base=("a",))
    assert re.first_folds("tune", 1, 122.0, short, elapsed_s=452.0) is True
    out = capsys.readouterr().out
    assert (
        "tune after 1 of 5 folds (2.0 min): 0.5900 on 400 held-out rows against the probe's "
        "estimate 0.7000; adds -0.0100 to the blend of a (estimated +0.1200); finishing it then "
        "nothing more is worth 0.5900, cutting it for b is worth 0.6040: cut (its finished folds "
        "kept), its 8.1 min re-planned"
    ) in out
    todo, left_out = re.after("tune", seconds=122.0, elapsed_s=452.0)
    assert list(todo) == ["b"] and left_out == ["tune"]  # b: 520 s of the 548 left
    saved = tomllib.loads(path.read_text())
    assert list(saved["runs"]) == ["a", "b"] and saved["left_out"] == ["tune"]
    assert saved["cut"]["tune"] == {
        "folds": 1,
        "took_s": 122.0,
        "rows": 400,
        "estimate": 0.7,
        "measured": 0.59,
        "gain_measured": -0.01,
        "planned_s": 610.0,
    }
    check = saved["replans"][1]
    assert check["decision"] == "cut" and check["cut"] == {"value": 0.604, "then": ["b"]}
    assert check["continue"] == {"value": 0.59, "then": []} and check["rest_s"] == 488.0
    entries, left = plan_entries(saved, path, ["a", "tune", "b"], 1000.0)
    assert list(entries) == ["a", "b"] and left == ["tune"]  # a resumed call leaves it out
    todo, left_out = re.after("b", seconds=500.0, elapsed_s=960.0)  # the pace: a, tune's fold, b
    assert todo == {} and left_out == ["tune"] and re.history[-1]["pace"] == 0.979

    # the same fold adding +0.09 (0.69 with tune against 0.604 with b): finished
    re = replanner()
    near = Measured(score=0.68, gain=0.09, rows=400, base=("a",))
    assert re.first_folds("tune", 1, 122.0, near, elapsed_s=452.0) is False
    assert "finishing it then nothing more is worth 0.6900" in capsys.readouterr().out
    todo, left_out = re.after("tune", seconds=610.0, elapsed_s=940.0)
    assert todo == {} and left_out == ["b"]
    assert "cut" not in tomllib.loads(path.read_text())

    # without estimates (fine-tunes) or on rows where the metric is undefined: measured, kept
    blind = Replanner(path, first, costs, epochs, True, None, "cpu", ["a", "tune", "b"])
    assert blind.first_folds("tune", 1, 122.0, short, elapsed_s=452.0) is False
    assert (
        "0.5900 on 400 held-out rows; adds -0.0100 to the blend of a; no probe estimate to weigh it against: continued"
        in (capsys.readouterr().out)
    )
    undefined = Measured(score=-np.inf, gain=-np.inf, rows=400, base=())
    assert replanner().first_folds("tune", 1, 122.0, undefined, elapsed_s=452.0) is False
    assert "the metric is undefined on its 400 held-out rows: continued" in capsys.readouterr().out


def test_the_train_stage_checks_each_run_after_its_first_fold_and_a_cut_run_stays_cut(
    tmp_path, monkeypatch, capsys
):
    """Through ``make train BUDGET=``: each fresh run trains one fold, is measured on its
    held-out rows (against the runs trained before it on the same rows) and checked; the
    second run, its measured gain made to fall far short, is cut: its fold kept, no oof.npz,
    not in the ensemble's members, plan-check says so, and a resumed call leaves it out."""
    from pipeline.train import rounds

    monkeypatch.chdir(tmp_path)
    feat = 'kind = "features"\nbackbone = "test_resnet"\nbatch_size = 16\n'
    feat += 'pretrained_file = "models/pretrained/test_resnet.safetensors"\n'
    recipes = {"t": feat + "image_size = 24\n", "u": feat + "image_size = 16\n"}
    toy_workspace(tmp_path, recipes, n_per_class=12, n_test=6, pretrained=("test_resnet",))
    real = rounds.measure

    def measure(ctx, run, folds, trained):
        got = real(ctx, run, folds, trained)
        assert got.base == tuple(trained)
        if len(folds) == 2:  # the whole run, assembled: its OOF
            return got
        assert got.rows == 18 and folds == [0]  # fold 0: half of 36 rows
        return replace(got, gain=got.gain - 1.0) if trained else got  # the second falls short

    monkeypatch.setattr(rounds, "measure", measure)
    comp = ["--comp", "input/toy"]
    assert main(["train", *comp, "--runs", "t,u", "--budget", "1h"]) == 0
    out = capsys.readouterr().out
    first, second = (line for line in out.splitlines() if " after 1 of 2 folds (" in line)
    assert first.endswith(": continued") and "blend" not in first
    assert " to the blend of " in second and "(estimated " in second
    assert second.endswith("re-planned") and ": cut (its finished folds kept)" in second
    cut = second.split(" after ", 1)[0]
    kept = "t" if cut == "u" else "u"
    runs = tmp_path / "models" / "toy"
    assert (runs / cut / "fold0" / "done.json").is_file()
    assert not (runs / cut / "fold1").exists() and not (runs / cut / "oof.npz").exists()
    assert (runs / kept / "oof.npz").is_file()
    saved = tomllib.loads((runs / "plan.toml").read_text())
    assert saved["left_out"] == [cut] and list(saved["runs"]) == [kept]
    assert saved["cut"][cut]["folds"] == 1 and saved["cut"][cut]["rows"] == 18
    assert [s.get("decision") for s in saved["replans"]] == ["continue", None, "cut", None]
    assert saved["best_single"]["run"] in ("t", "u") and "value" in saved
    assert main(["train", *comp, "--runs", "t,u"]) == 0  # resumed: the cut run stays cut
    out = capsys.readouterr().out
    assert f"{cut}: left out by the plan models/toy/plan.toml (cut after its first 1 fold(s)" in out
    assert not (runs / cut / "fold1").exists()
    assert main(["ensemble", *comp]) == 0
    made = json.loads((tmp_path / "submissions/toy/ensemble/ensemble.json").read_text())
    assert [m["run"] for m in made["members"]] == [kept]
    from pipeline.tools.plan_check import plan_check

    capsys.readouterr()
    ws = Workspace("toy", models=tmp_path / "models", output=tmp_path)
    rows = plan_check(ws, load_competition(tmp_path / "input/toy"))
    out = capsys.readouterr().out
    assert [r["run"] for r in rows] == [kept, cut] and rows[1]["cut"]
    assert rows[0]["score"] == pytest.approx(made["members"][0]["oof_score"])
    assert rows[1]["score"] == saved["cut"][cut]["measured"] and rows[1]["measured_s"] > 0
    assert "cut after 1 fold(s): score on their 18 held-out rows" in out
    assert f"the planned set's estimated blend: {saved['value']:.4f}; the ensemble's nested" in out
    assert f"the best single run in the same budget: {saved['best_single']['run']} alone" in out


def test_the_check_values_runs_on_the_measured_level_not_the_probes(tmp_path, capsys):
    """The probe's small-sample heads score every feature run far below what its folds
    measure (0.36 against 0.69 on tinyimagenet176). The check moves a set's value by its runs'
    mean offset, not their sum: a run that adds what it was estimated to add is finished,
    and no value climbs past what one measured level allows."""
    worth = {"a": 0.36, "c": 0.23, "d": 0.23}

    def value(subset: tuple[str, ...]) -> float:
        return max(worth[r] for r in subset) + 0.002 * (len(subset) - 1)

    costs = {
        r: _rated(cost("features", once=o, epoch=0.0, fold=4.0), worth[r])
        for r, o in (("a", 600.0), ("c", 100.0), ("d", 100.0))
    }
    epochs = dict.fromkeys(costs, 1)
    first = planner.make_plan(costs, epochs, 5, 800.0, auto=True, value=value)
    assert list(first.costs) == ["a", "c"]  # a 620 s + c 120 s; d does not fit beside them
    path = tmp_path / "plan.toml"
    write_plan(path, first, "cpu", ("d",), costs)
    re = Replanner(path, first, costs, epochs, True, value, "cpu", ["a", "c", "d"])
    re.after("a", 620.0, 630.0, Measured(score=0.69, gain=0.69, rows=3000, base=()))
    assert re.valued(("a",)) == pytest.approx(0.69) and re.valued(("d",)) == pytest.approx(0.56)
    fold = Measured(score=0.57, gain=0.002, rows=3000, base=("a",))  # adds what was estimated
    assert re.first_folds("c", 1, 104.0, fold, elapsed_s=734.0) is False
    check = re.history[-1]
    assert check["decision"] == "continue" and check["gain_estimate"] == 0.002
    assert 0.69 < check["continue"]["value"] < 0.70 and check["cut"] == {"value": 0.69, "then": []}
    # a run whose probe scores nearer its measured level adds what the probe's blend says it
    # adds: a mean of the offsets would have charged c for a's larger one
    re.off["a"] = 0.50
    assert re.valued(("a", "c")) - re.valued(("a",)) == pytest.approx(0.002 + re.delta["c"])
