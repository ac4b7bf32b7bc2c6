"""make predict and make package: inference from saved artifacts on unseen test folders."""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from pipeline.cli import main
from pipeline.competition import load_competition
from pipeline.ensemble.members import load_members
from pipeline.ensemble.state import load_state
from pipeline.predict import budget
from pipeline.predict.saved import load_saved
from pipeline.predict.stage import predict_stage
from pipeline.workspace import Workspace

from .fakes import toy_roots, toy_workspace

RECIPE = 'backbone = "{b}"\nimage_size = 16\nepochs = 1\nbatch_size = 8\ntta = ["none", "hflip"]\n'


@pytest.fixture(scope="module")
def trained(tmp_path_factory) -> Path:
    """Two tiny members on 2 folds of the CIFAR-layout toy, ensembled as NAME=ensemble."""
    runs = {"a": RECIPE.format(b="test_resnet"), "b": RECIPE.format(b="test_efficientnet")}
    root = toy_workspace(
        tmp_path_factory.mktemp("predict"), runs, layout="cifar", n_per_class=6, n_test=5
    )
    args = toy_roots(root)
    assert main(["train", *args, "--runs", "a b", "--track", "tensorboard"]) == 0
    ens = ["ensemble", *args, "--runs", "a b", "--methods", "soft stack"]
    assert main([*ens, "--method", "stack", "--no-report"]) == 0
    return root


def roots(root: Path) -> list[str]:
    return ["--comp", "toy", "--models", str(root / "models"), "--output", str(root)]


def ensemble_probs(root: Path) -> np.ndarray:
    """The test probabilities make ensemble submitted, recomputed from its saved state."""
    comp = load_competition(root / "input" / "toy")
    ws = Workspace("toy", root / "models", root)
    state, est = load_state(ws.submission_dir("ensemble"), "")
    _, members = load_members(comp, ws, state["members"])
    return est.predict_proba(members.test)


def test_predict_reproduces_the_ensemble_submission(trained, capsys):
    to = trained / "out" / "submission.csv"
    test = ["--test", str(trained / "input" / "toy"), "--to", str(to), "--batch-size", "3"]
    assert main(["predict", *roots(trained), *test]) == 0
    made = pd.read_csv(trained / "submissions" / "toy" / "ensemble" / "submission.csv")
    assert pd.read_csv(to).equals(made)
    probs = np.load(to.parent / "logits" / "probs.npy")
    assert np.abs(probs - ensemble_probs(trained)).max() < 1e-5
    record = json.loads((to.parent / "predict.json").read_text())
    assert record["dropped"] == [] and record["blend"] == "stack"
    assert record["n_test"] == 5 and record["img_per_s"] > 0
    assert "wrote" in capsys.readouterr().out
    # the label-shift decision: make ensemble's, re-made from the saved state on the same images
    made = json.loads((trained / "submissions" / "toy" / "ensemble" / "ensemble.json").read_text())
    for key in ("applied", "why", "estimator"):
        assert record["label_shift"][key] == made["label_shift"][key], key
    # figures re-made from the pixels: equal up to the float noise of a second decode
    for key in ("test_prior", "check", "top_movers"):
        assert _close(record["label_shift"][key], made["label_shift"][key]), key


def _close(a, b, tol: float = 1e-5) -> bool:
    """``a == b`` for JSON values, floats within ``tol`` (absolute, or relative when larger)."""
    if isinstance(a, dict):
        return a.keys() == b.keys() and all(_close(a[k], b[k], tol) for k in a)
    if isinstance(a, list):
        return len(a) == len(b) and all(_close(x, y, tol) for x, y in zip(a, b, strict=True))
    if isinstance(a, float) or isinstance(b, float):
        return abs(a - b) <= tol * max(1.0, abs(a), abs(b))
    return a == b


@pytest.mark.slow
def test_packaged_notebook_predicts_offline_in_a_clean_folder(trained, tmp_path, capsys):
    """Acceptance: package (fp32 weights), then the notebook code in a fresh interpreter, in a
    folder with only the test images and the sample submission, the package on PYTHONPATH."""
    args = [*roots(trained), "--owner", "me", "--precision", "fp32", "--dry-run"]
    (trained / "models" / "mlflow.db").write_bytes(b"SQLite format 3\x00")  # TRACK=mlflow's
    assert main(["package", *args]) == 0
    out = capsys.readouterr().out
    pkg = trained / "package" / "toy" / "ensemble"
    assert "datasets create -p " + str(pkg / "dataset") in out
    assert "kernels push -p " + str(pkg / "kernel") in out
    assert "-k me/toy-ensemble-predict -v N -f submission.csv" in out
    meta = json.loads((pkg / "kernel" / "kernel-metadata.json").read_text())
    assert meta["enable_internet"] is False and meta["competition_sources"] == ["toy"]
    assert meta["dataset_sources"] == ["me/toy-ensemble-models"]
    nb = json.loads((pkg / "kernel" / "predict.ipynb").read_text())
    assert "".join(nb["cells"][0]["source"]) == (pkg / "kernel" / "predict.py").read_text()
    data = pkg / "dataset"
    assert (data / "models/toy/a/fold1/weights.safetensors").is_file()
    assert not list(data.rglob("*.pt")) and not list(data.rglob("oof.npz"))
    # tracking stays home: the runs' TensorBoard events (and an MLflow store) are not shipped
    assert list((trained / "models/toy/a/fold1").glob("events.out.tfevents.*"))
    assert not list(data.rglob("*tfevents*")) and not list(data.rglob("mlflow.db"))

    kaggle = tmp_path / "kaggle"
    shutil.copytree(data, kaggle / "input" / "toy-ensemble-models")
    test = kaggle / "input" / "toy"
    shutil.copytree(trained / "input" / "toy" / "test", test / "test")
    shutil.copy(trained / "input" / "toy" / "sampleSubmission.csv", test)
    (kaggle / "working").mkdir()
    env = {
        "PATH": os.environ["PATH"],
        "PYTHONPATH": str(kaggle / "input" / "toy-ensemble-models"),
        "PIPELINE_INPUT": str(kaggle / "input"),
        "PIPELINE_WORKING": str(kaggle / "working"),
        "OMP_NUM_THREADS": "1",
        "HOME": str(tmp_path),
    }
    done = subprocess.run(
        [sys.executable, str(pkg / "kernel" / "predict.py")],
        cwd=kaggle / "working",
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    imports = json.loads((kaggle / "working" / "imports.json").read_text())
    assert imports["forbidden"] == []
    assert Path(imports["pipeline"]).is_relative_to(kaggle / "input")
    made = pd.read_csv(trained / "submissions" / "toy" / "ensemble" / "submission.csv")
    assert pd.read_csv(kaggle / "working" / "submission.csv").equals(made)
    probs = np.load(kaggle / "working" / "logits" / "probs.npy")
    assert np.abs(probs - ensemble_probs(trained)).max() < 1e-5


@pytest.fixture
def copy(trained, tmp_path) -> Path:
    """A throwaway copy of the trained workspace, to break."""
    dst = tmp_path / "w"
    shutil.copytree(trained, dst, ignore=shutil.ignore_patterns("package", "out"))
    return dst


def _edit_state(root: Path, **changes) -> None:
    path = root / "submissions" / "toy" / "ensemble" / "ensemble_state.json"
    state = json.loads(path.read_text())
    path.write_text(json.dumps({**state, **changes}))


def _break(root: Path, case: str) -> Path:
    """Break ``case`` in the copy; returns the test folder to predict."""
    test = root / "input" / "toy"
    a = root / "models" / "toy" / "a"
    if case == "no-sample":
        (test / "sampleSubmission.csv").unlink()
    elif case == "bad-image":
        (test / "test" / "3.png").write_bytes(b"\x89PNG\r\n\x1a\n broken")
    elif case == "missing-member":
        shutil.rmtree(a)
    elif case == "missing-fold":
        (a / "fold1" / "best.pt").unlink()
    elif case == "recipe":
        cfg = a / "config.toml"
        cfg.write_text(cfg.read_text().replace("lr = 0.001", "lr = 0.01"))
    elif case == "classes":
        _edit_state(root, classes=["cat", "dog", "emu"])
    elif case == "folds":
        _edit_state(root, folds_hash="0" * 16)
    elif case == "dup-labels":
        _edit_state(root, dup_labels=True)
    elif case in ("checkpoint", "checkpoint-unhashed"):
        b = root / "models" / "toy" / "b"
        shutil.copy(b / "fold0" / "best.pt", a / "fold0" / "best.pt")
        if case == "checkpoint-unhashed":  # a done.json from before checkpoints were hashed
            done = json.loads((a / "fold0" / "done.json").read_text())
            del done["best_sha256"]
            (a / "fold0" / "done.json").write_text(json.dumps(done))
    return test


@pytest.mark.parametrize(
    ("case", "message"),
    [
        ("no-sample", r"test folder .*/toy has no sample submission .*copy the competition's"),
        ("bad-image", r"toy/test/3\.png: truncated or corrupt PNG .*replace it"),
        ("missing-member", r"a/config\.toml not found: member 'a' of .* is missing"),
        ("missing-fold", r"a/fold1/ has no weights \(best\.pt\): fold 1 of member 'a'"),
        ("recipe", r"a/config\.toml: recipe field 'lr' differs from the one .* re-run make ens"),
        ("classes", r"a/oof\.npz: classes \['cat', 'dog', 'owl'\] differs from .*re-run make"),
        ("folds", r"a/oof\.npz: folds_hash '\w+' differs from .*ensemble_state\.json"),
        ("dup-labels", r"made with DUP_LABELS=1, .* re-run make ensemble NAME=ensemble without"),
        ("checkpoint", r"a/fold0/best\.pt is not the file its fold wrote: its sha256 .*done\.json"),
        (
            "checkpoint-unhashed",
            r"a/fold0/best\.pt does not fit test_resnet with 3 classes \(.*retr",
        ),
    ],
)
def test_predict_refuses_in_one_line(copy, capsys, case, message):
    test = _break(copy, case)
    to = copy / "out" / "submission.csv"
    assert main(["predict", *roots(copy), "--test", str(test), "--to", str(to)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("error: "), err
    assert re.search(message, err[0]), err[0]
    assert not to.exists() and not list((copy / "out").glob("logits/*.npy"))


def test_predict_needs_a_test_folder(copy, capsys):
    assert main(["predict", *roots(copy), "--test", ""]) == 2
    assert "make predict needs TEST=<folder>" in capsys.readouterr().err


def test_time_limit_drops_views_then_the_weakest_member(copy, capsys):
    """A fake clock that ticks 1 s per reading and a 20 s limit: the probe batches show the
    test set cannot fit, so views and then a member are dropped, and the file stays valid."""
    ticks = iter(range(10_000))
    ws = Workspace("toy", copy / "models", copy)
    to = copy / "out" / "submission.csv"
    record = predict_stage(
        ws, "ensemble", copy / "input" / "toy", to, batch_size=1, time_limit="20s",
        clock=lambda: float(next(ticks)),
    )  # fmt: skip
    weakest = load_saved(ws, "ensemble").weakest_first()
    assert record["dropped"] == [
        {"run": weakest[0], "view": "hflip"},
        {"run": weakest[1], "view": "hflip"},
        {"run": weakest[0], "view": "*"},
    ]
    assert record["blend"].startswith("weighted mean of 1 of 2 members")
    assert "time budget: the rest needs" in capsys.readouterr().out
    made = pd.read_csv(copy / "submissions" / "toy" / "ensemble" / "submission.csv")
    assert pd.read_csv(to)["id"].equals(made["id"])


def test_budget_drops_only_what_it_must() -> None:
    costs = {("a", "none"): 1.0, ("a", "hflip"): 1.0, ("b", "none"): 2.0}
    tta = {"a": ("none", "hflip")}
    assert budget.drops(costs, 0.0, 10, 40.0, tta, ["a", "b"]) == []
    assert budget.drops(costs, 0.0, 10, 30.0, tta, ["a", "b"]) == [("a", "hflip")]
    assert budget.drops(costs, 0.0, 10, 5.0, tta, ["a", "b"]) == [("a", "hflip"), ("a", "*")]


def test_time_limit_and_budget_refuse_a_bare_number_alike(copy, capsys):
    """Acceptance: TIME_LIMIT=30 and BUDGET=30 stop with the same line; 1h30m works for both."""
    test = ["--test", str(copy / "input" / "toy"), "--to", str(copy / "out" / "s.csv")]
    errs = []
    for args in (
        ["predict", *roots(copy), *test, "--time-limit", "30"],
        ["train", "--comp", str(copy / "input" / "toy"), "--models", str(copy / "models"),
         "--output", str(copy), "--runs", "a", "--budget", "30"],
    ):  # fmt: skip
        assert main(args) == 2
        errs.append(capsys.readouterr().err.strip())
    assert errs == [
        f"error: {v}='30': a duration needs its unit: e.g. 90s, 20m, 1.5h or 1h30m"
        for v in ("TIME_LIMIT", "BUDGET")
    ]
    assert main(["predict", *roots(copy), *test, "--time-limit", "1h30m"]) == 0
    assert json.loads((copy / "out" / "predict.json").read_text())["time_limit_s"] == 5400


STUB = """#!/bin/sh
echo "$@" >> {log}
if [ "$1 $2" = "competitions submissions" ]; then
  case "$*" in
    *"--page-token p2"*) cat {pages}/p2.csv ;;
    *) echo "Next Page Token = p2"; cat {pages}/p1.csv ;;
  esac
else
  echo "ok: $1 $2"
fi
"""


def test_kaggle_commands_of_package_code_submit_and_lb(copy, tmp_path, monkeypatch, capsys):
    """A kaggle stub on PATH (and beside sys.executable): make package with DRY_RUN=1 runs
    nothing (its loop: tests/test_package_loop.py), make submit KERNEL= VERSION= the
    code-competition submit, make lb reads two pages."""
    log, pages, bin_ = tmp_path / "kaggle.log", tmp_path / "pages", tmp_path / "bin"
    pages.mkdir()
    bin_.mkdir()
    (bin_ / "kaggle").write_text(STUB.format(log=log, pages=pages))
    (bin_ / "kaggle").chmod(0o755)
    monkeypatch.setattr(sys, "executable", str(bin_ / "python"))
    monkeypatch.setenv("PATH", f"{bin_}:{os.environ['PATH']}")
    monkeypatch.setenv("KAGGLE_USERNAME", "me")
    monkeypatch.setenv("KAGGLE_KEY", "k" * 8)
    full = ["--comp", str(copy / "input" / "toy"), "--models", str(copy / "models")]
    full += ["--output", str(copy)]
    assert main(["package", *roots(copy), "--dry-run"]) == 0
    kernel = ["--kernel", "me/toy-ensemble-predict", "--version", "3"]
    assert main(["submit", *full, *kernel]) == 0
    assert main(["submit", *full, *kernel[:3], "4"]) == 0
    calls = log.read_text().splitlines()
    ledger = pd.read_csv(copy / "submissions" / "toy" / "ledger.csv", dtype=str)
    t1, t2 = ledger["tag"]
    assert re.fullmatch(
        rf"competitions submit toy -k me/toy-ensemble-predict -v 3 -f submission\.csv "
        rf"-m ensemble stack OOF=\S+ nested=\S+ \[{t1}\]",
        calls[0],
    )
    head = "ref,fileName,date,description,status,publicScore,privateScore\n"
    (pages / "p1.csv").write_text(head + f"2,submission.csv,d,ensemble [{t2}],complete,0.61,\n")
    (pages / "p2.csv").write_text(head + f"1,submission.csv,d,x [{t1}],complete,0.55,0.52\n")
    assert main(["lb", *full]) == 0
    calls = log.read_text().splitlines()[2:]
    assert calls == [
        "competitions submissions toy -v --page-size 200",
        "competitions submissions toy -v --page-size 200 --page-token p2",
    ]
    ledger = pd.read_csv(copy / "submissions" / "toy" / "ledger.csv", dtype=str)
    assert ledger["public_score"].tolist() == ["0.55", "0.61"]
    assert ledger["private_score"].fillna("").tolist() == ["0.52", ""]
    assert ledger["oof_score"].notna().all() and ledger["nested_score"].notna().all()
    assert (copy / "submissions" / "toy" / "lb.png").stat().st_size > 0
    assert "2 of 2 rows matched 2 Kaggle rows" in capsys.readouterr().out


def test_the_cli_predict_path_imports_nothing_a_kaggle_image_lacks():
    """``python -m pipeline predict`` builds the whole parser first: it must not pull in
    imagehash, cleanlab, albumentations or kaggle on the way (predict.json records them)."""
    import subprocess
    import sys

    code = (
        "import sys; import pipeline.cli as c; c.build_parser(); import pipeline.predict.args; "
        "print(sorted({m.split('.')[0] for m in sys.modules} & "
        "{'imagehash', 'cleanlab', 'albumentations', 'kaggle'}))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"


def test_local_predict_refuses_a_bad_image_unless_told_to_fall_back(copy, capsys):
    """ON_BAD_IMAGE=fallback here: the unreadable image gets the class predicted most often for
    the others, in one loud line, and predict.json names it."""
    test = _break(copy, "bad-image")
    (test / "test" / "5.png").unlink()  # and one missing
    to = copy / "out" / "submission.csv"
    args = ["predict", *roots(copy), "--test", str(test), "--to", str(to)]
    assert main(args) == 2 and "error: " in capsys.readouterr().err
    assert main([*args, "--on-bad-image", "fallback", "--max-bad", "40%"]) == 0
    out = capsys.readouterr().out
    assert re.search(r"BAD TEST IMAGE \d: id '3': truncated or corrupt PNG", out), out
    assert re.search(
        r"BAD TEST IMAGE \d: id '5': .*sampleSubmission.csv row 6: no image test/5\.<jpg", out
    )
    assert "2 unreadable test image(s) predicted from the rest" in out
    rec = json.loads((to.parent / "predict.json").read_text())["bad_images"]
    assert rec["count"] == 2 and rec["ids"] == ["3", "5"] and rec["policy"] == "fallback"
    assert rec["fallback"] == "the class predicted most often for the other test images"
    sub = pd.read_csv(to, dtype=str)
    assert sub["label"][2] == sub["label"][4] == sub["label"][[0, 1, 3]].mode()[0]
    assert main([*args, "--on-bad-image", "fallback"]) == 2  # the first of 5 is over 1 %
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and re.search(
        r"1 of 5 test images cannot be read \(20.0% > MAX_BAD=1.0%; first: id '5'", err[0]
    )


def _hidden_test_set(root: Path, n: int, bad: int) -> Path:
    """A hidden test set of ``n`` images laid out like the competition's, ``bad`` of them
    unreadable: corrupt, missing, or not an image, in turn."""
    from PIL import Image

    from .fakes import _image

    rng = np.random.default_rng(7)
    (root / "test").mkdir(parents=True)
    ids = [str(1000 + i) for i in range(n)]
    for i, id_ in enumerate(ids):
        Image.fromarray(_image(rng, i % 3)).save(root / "test" / f"{id_}.png")
    pd.DataFrame({"id": ids, "label": "cat"}).to_csv(root / "sampleSubmission.csv", index=False)
    for j in range(bad):
        path = root / "test" / f"{ids[10 * j + 3]}.png"
        if j % 3 == 0:
            path.write_bytes(path.read_bytes()[:40])  # truncated
        elif j % 3 == 1:
            path.unlink()
        else:
            path.write_text("<html>404</html>")
    return root


@pytest.mark.slow
def test_packaged_notebook_predicts_a_hidden_test_set_with_bad_images(trained, tmp_path, capsys):
    """Acceptance: the notebook, in a clean folder, on 200 hidden test images with one corrupt
    and one missing writes a valid submission and lists both ids; with 5 % bad it fails in one
    line."""
    assert (
        main(["package", *roots(trained), "--owner", "me", "--precision", "fp32", "--dry-run"]) == 0
    )
    capsys.readouterr()
    pkg = trained / "package" / "toy" / "ensemble"
    for bad, ok in ((2, True), (10, False)):
        kaggle = tmp_path / f"kaggle{bad}"
        shutil.copytree(pkg / "dataset", kaggle / "input" / "toy-ensemble-models")
        _hidden_test_set(kaggle / "input" / "toy", 200, bad)
        (kaggle / "working").mkdir()
        env = {
            "PATH": os.environ["PATH"], "PYTHONPATH": str(kaggle / "input" / "toy-ensemble-models"),
            "PIPELINE_INPUT": str(kaggle / "input"), "PIPELINE_WORKING": str(kaggle / "working"),
            "OMP_NUM_THREADS": "1", "HOME": str(tmp_path),
        }  # fmt: skip
        done = subprocess.run(
            [sys.executable, str(pkg / "kernel" / "predict.py")], cwd=kaggle / "working",
            env=env, capture_output=True, text=True, timeout=300,
        )  # fmt: skip
        if not ok:
            err = done.stderr.strip().splitlines()
            assert done.returncode == 1 and len(err) == 1, done.stderr[-2000:]
            assert re.search(
                r"^error: \d+ of 200 test images cannot be read \(\d\.\d% > MAX_BAD=1\.0%; first: id '10\d3'",
                err[0],
            ), err[0]
            assert not (kaggle / "working" / "submission.csv").exists()
            continue
        assert done.returncode == 0, done.stderr[-3000:]
        assert (
            "BAD TEST IMAGE 1: id '1013'" in done.stdout
            and "BAD TEST IMAGE 2: id '1003'" in done.stdout
        )
        sub = pd.read_csv(kaggle / "working" / "submission.csv", dtype=str)
        assert len(sub) == 200 and set(sub["label"]) <= {"cat", "dog", "owl"}
        rec = json.loads((kaggle / "working" / "predict.json").read_text())["bad_images"]
        assert rec["count"] == 2 and rec["ids"] == ["1003", "1013"] and rec["max_bad"] == 0.01


def test_make_package_ships_its_allow_list_only(trained, tmp_path, monkeypatch, capsys):
    """Credentials and stray files planted in the project, MODELS, the competition folder and
    the source folder never reach the package; a secret inside a shipped file is refused."""
    from pipeline.predict import shipping

    key = "0123456789abcdef0123456789abcdef"
    monkeypatch.setenv("KAGGLE_KEY", key)
    monkeypatch.setenv("HOME", str(tmp_path))
    work = tmp_path / "w"
    shutil.copytree(trained, work, ignore=shutil.ignore_patterns("package", "out"))
    src = tmp_path / "src" / "pipeline"
    shutil.copytree(shipping.source_root(), src, ignore=shutil.ignore_patterns("__pycache__"))
    monkeypatch.setattr(shipping, "source_root", lambda: src)
    planted = {
        "kaggle.json": json.dumps({"username": "me", "key": key}),
        ".env": f"KAGGLE_KEY={key}\n",
        "credentials.json": '{"refresh_token": "r3fr3sh-t0k3n"}',
        "access_token": "t0k3n-t0k3n",
        "id_rsa": "-----BEGIN OPENSSH PRIVATE KEY-----",
        "notes.txt": "scratch",
    }
    folders = [
        work, work / "models", work / "models/toy", work / "models/toy/a",
        work / "models/toy/a/fold0", work / "input/toy", work / "submissions/toy/ensemble",
        src, src / "predict",
    ]  # fmt: skip
    for folder in folders:
        for name, text in planted.items():
            (folder / name).write_text(text)
    (src / "predict" / "notes.py.bak").write_text("x")
    monkeypatch.chdir(work)
    args = ["package", *roots(work), "--owner", "me", "--dry-run"]
    assert main(args) == 0, capsys.readouterr().err
    pkg = work / "package" / "toy" / "ensemble"
    files = sorted(p.relative_to(pkg).as_posix() for p in pkg.rglob("*") if p.is_file())
    assert not [f for f in files if Path(f).name in {*planted, "notes.py.bak"}], files
    others = [f for f in files if not f.startswith("dataset/pipeline/")]
    assert others == [
        "dataset/dataset-metadata.json",
        *[f"dataset/models/toy/{r}/{f}" for r in "ab" for f in (
            "config.toml", *[f"fold{k}/{n}" for k in (0, 1) for n in ("done.json", "weights.safetensors")],
            "member.json")],
        "dataset/submissions/toy/ensemble/ensemble_state.json",
        "dataset/submissions/toy/ensemble/ensemble_state.npz",
        "kernel/kernel-metadata.json", "kernel/predict.ipynb", "kernel/predict.py",
    ]  # fmt: skip
    source = [f for f in files if f.startswith("dataset/pipeline/")]
    assert source and all(f.endswith(".py") and "/tools/" not in f for f in source)
    for f in files:
        data = (pkg / f).read_bytes()
        assert key.encode() not in data and b"t0k3n" not in data and b"OPENSSH" not in data, f
    # a secret inside a file the package ships is refused, and nothing is written
    shutil.rmtree(pkg)
    (src / "settings.py").write_text(f'KEY = "{key}"\n')
    assert main(args) == 2
    err = capsys.readouterr().err
    assert (
        "make package: dataset/pipeline/settings.py holds this machine's Kaggle credentials" in err
    )
    assert not pkg.exists() and not list(pkg.parent.glob(".*.tmp"))
