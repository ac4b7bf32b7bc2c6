"""A full disk and damaged files: one line naming the file, no partial file, and a
re-run after the space is freed that ends bit-identical to a run that never failed.

The write points are not listed by hand: a clean run records every one it reaches (each
artifact's ``atomic_write`` and each memory-mapped cache's ``reserve``), then a second run fails
with ENOSPC at each of them in turn (``PIPELINE_FAIL_AT``), resuming after every failure."""

from __future__ import annotations

import hashlib
import io
import json
import shutil
import zipfile
from pathlib import Path

import numpy as np
import pytest
import torch

import pipeline.disk.atomic
import pipeline.disk.space
from pipeline import artifacts
from pipeline.cli import main
from pipeline.disk import space
from pipeline.errors import ArtifactError
from pipeline.model.checkpoint import read_checkpoint
from pipeline.tools.soak import check_outputs

from .fakes import toy_roots, toy_workspace


def _record(argv: list[str]) -> list[tuple[str, str]]:
    """The write points ``main(argv)`` reaches, in order."""
    seen: list[tuple[str, str]] = []
    real = pipeline.disk.space.fail_point

    def record(kind: str, path) -> None:
        p = Path(path)
        if (kind, f"{p.parent.name}/{p.name}") not in seen:
            seen.append((kind, f"{p.parent.name}/{p.name}"))
        real(kind, path)

    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(pipeline.disk.atomic, "fail_point", record)
        mp.setattr(pipeline.disk.space, "fail_point", record)
        assert main(argv) == 0
    return seen


@pytest.fixture(scope="module")
def clean(tmp_path_factory) -> tuple[Path, list[tuple[str, str]]]:
    """A workspace trained without a fault, and the write points its train stage reached, in
    order: ``(kind, "<folder>/<name>")``."""
    root = toy_workspace(tmp_path_factory.mktemp("clean"))
    seen = _record(["train", *toy_roots(root), "--runs", "r"])
    return root, seen


@pytest.mark.slow
def test_every_write_point_on_a_full_disk_stops_in_one_line_and_resumes_bit_identical(
    clean, tmp_path, monkeypatch, capsys
):
    ref, points = clean
    kinds = {k for k, _ in points}
    names = [n for _, n in points]
    assert kinds == {"enospc", "fallocate"}, points
    for want in (
        ".cache/train_16.u8",
        ".cache/test_16.u8",
        "fold0/last.pt",
        "fold0/best.pt",
        "fold1/done.json",
        "r/oof.npz",
        "r/test.npz",
        "r/config.toml",
    ):
        assert want in names, (want, names)
    root = toy_workspace(tmp_path / "full")
    models = root / "models"
    for kind, name in points:
        monkeypatch.setenv("PIPELINE_FAIL_AT", f"{kind}:{name}")
        capsys.readouterr()
        assert main(["train", *toy_roots(root), "--runs", "r"]) == 2, f"{kind}:{name} not reached"
        err = capsys.readouterr().err.strip().splitlines()
        assert len(err) == 1 and err[0].startswith("error: disk full writing "), (name, err)
        line = err[0]
        assert name.split("/")[-1] in line and "bytes free" in line, line
        assert "re-run the same command to continue" in line
        if kind == "fallocate" or not name.endswith((".toml", ".json", ".csv")):
            assert "needs " in line, line  # the bytes it needs are known there
        left = [p for p in models.rglob("*") if p.name.endswith(".tmp")]
        assert not left, (name, left)
    monkeypatch.delenv("PIPELINE_FAIL_AT")
    assert main(["train", *toy_roots(root), "--runs", "r"]) == 0
    # every artifact reads back and equals the clean run's: logits and checkpoints bit for bit
    assert check_outputs(root, ref, "toy", ["r"]) == []


def test_a_full_disk_when_a_cache_reserves_removes_the_reservation(tmp_path, monkeypatch):
    path = tmp_path / "c" / "x.u8"
    path.parent.mkdir()
    monkeypatch.setenv("PIPELINE_FAIL_AT", "fallocate:c/x.u8")
    with pytest.raises(space.DiskFull, match=r"x\.u8 \(needs 1,000 bytes, [\d,]+ bytes free\)"):
        space.reserve_file(path, 1000)
    assert not path.exists()
    monkeypatch.delenv("PIPELINE_FAIL_AT")
    space.reserve_file(path, 1000)
    assert path.stat().st_size == 1000 and path.stat().st_blocks * 512 >= 1000  # not sparse


def _flip(path: Path, at: float = 0.6) -> None:
    data = bytearray(path.read_bytes())
    data[int(len(data) * at)] ^= 0x40
    path.write_bytes(bytes(data))


def _truncate(path: Path) -> None:
    path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])


@pytest.fixture
def copy(clean, tmp_path) -> Path:
    root = tmp_path / "copy"
    shutil.copytree(clean[0], root, symlinks=True)
    return root


@pytest.mark.parametrize("damage", [_flip, _truncate])
def test_a_damaged_last_pt_is_named_with_the_fix(copy, damage, capsys):
    fdir = copy / "models/toy/r/fold1"
    shutil.rmtree(fdir)
    shutil.rmtree(copy / "models/toy/r/fold0")
    # epoch 1 of fold 0 again, stopped before its last.pt reaches done: then damage last.pt
    env = pytest.MonkeyPatch()
    env.setenv("PIPELINE_FAIL_AT", "enospc:fold0/oof.npz")
    try:
        assert main(["train", *toy_roots(copy), "--runs", "r", "--folds", "0"]) == 2
    finally:
        env.undo()
    last = copy / "models/toy/r/fold0/last.pt"
    assert last.is_file()
    damage(last)
    capsys.readouterr()
    assert main(["train", *toy_roots(copy), "--runs", "r", "--folds", "0"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1, err
    assert f"{last} is damaged" in err[0]
    assert ("CRC-32 mismatch" if damage is _flip else "truncated") in err[0]
    assert "delete it (the fold restarts from its first epoch)" in err[0]
    last.unlink()  # the fix the line gives
    assert main(["train", *toy_roots(copy), "--runs", "r", "--folds", "0"]) == 0


def test_read_checkpoint_checks_the_recorded_hash_and_the_crcs(tmp_path):
    path = tmp_path / "best.pt"
    buf = io.BytesIO()
    torch.save({"model": {"w": torch.arange(4096, dtype=torch.float32)}}, buf)
    path.write_bytes(buf.getvalue())
    obj, sha = read_checkpoint(path, "cpu", "FIX")
    assert obj["model"]["w"][7] == 7
    # torch's own reader does not notice a flipped byte in a tensor: the reason for the check
    _flip(path)
    assert not torch.equal(
        torch.load(path, weights_only=True)["model"]["w"], torch.arange(4096, dtype=torch.float32)
    )
    with pytest.raises(
        ArtifactError,
        match=r"best\.pt is not the file its fold wrote: its sha256 .* done\.json.*; FIX",
    ):
        read_checkpoint(path, "cpu", "FIX", sha)
    with pytest.raises(ArtifactError, match=r"CRC-32 mismatch in .*; FIX"):
        read_checkpoint(path, "cpu", "FIX")


def test_damaged_best_pt_is_refused_by_predict_naming_the_fold(copy, capsys):
    assert main(["ensemble", *toy_roots(copy), "--runs", "r"]) == 0
    done = json.loads((copy / "models/toy/r/fold1/done.json").read_text())
    best = copy / "models/toy/r/fold1/best.pt"
    assert len(done["best_sha256"]) == 64
    assert done["best_sha256"] == hashlib.sha256(best.read_bytes()).hexdigest()
    _flip(best)
    capsys.readouterr()
    assert main(["predict", *toy_roots(copy), "--test", str(copy / "input/toy")]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1, err
    assert f"{best} is not the file its fold wrote: its sha256" in err[0]
    assert f"delete {best.parent} and re-run make train RUNS=r" in err[0]


@pytest.mark.parametrize("which", ["r/oof.npz", "r/fold0/oof.npz", "r/fold1/test.npz"])
def test_a_bit_flip_in_logits_is_caught_by_the_npz_crc(copy, which, capsys):
    path = copy / "models/toy" / which
    with zipfile.ZipFile(path) as z:  # flip a byte inside the logits array itself
        info = z.getinfo("logits.npy")
    data = bytearray(path.read_bytes())
    head = info.header_offset  # the local header: 30 bytes, then its name and extra field
    start = head + 30 + int.from_bytes(data[head + 26 : head + 28], "little")
    start += int.from_bytes(data[head + 28 : head + 30], "little")
    data[start + info.file_size - 5] ^= 0x10
    path.write_bytes(bytes(data))
    capsys.readouterr()
    verb = ["ensemble", *toy_roots(copy), "--runs", "r"]
    if which != "r/oof.npz":  # a fold's: the run is assembled again from its folds
        (copy / "models/toy/r/oof.npz").unlink()
        verb = ["train", *toy_roots(copy), "--runs", "r"]
    assert main(verb) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and f"{path} is unreadable (BadZipFile)" in err[0], err
    assert "delete" in err[0] or "re-run" in err[0]


def test_damaged_caches_are_said_and_rebuilt(copy, capsys):
    from pipeline.competition import load_competition
    from pipeline.train.cache import build_cache

    comp = load_competition(copy / "input/toy")
    cache = copy / "models/toy/.cache/train_16.u8"
    paths = comp.train["path"].tolist()
    before = np.array(build_cache(comp.root, paths, 16, cache))
    with open(cache, "r+b") as f:
        f.truncate(cache.stat().st_size - 100)
    capsys.readouterr()
    again = np.array(build_cache(comp.root, paths, 16, cache))
    out = capsys.readouterr().out
    assert f"decode cache {cache} is damaged" in out and "rebuilding it" in out
    np.testing.assert_array_equal(before, again)

    emb = copy / "emb.npz"
    artifacts.write_embedding(emb, np.ones((3, 4)), "ids")
    _flip(emb, 0.3)
    assert artifacts.read_embedding(emb, "ids") is None
    assert f"embeddings {emb} are damaged" in capsys.readouterr().out


@pytest.mark.slow
def test_every_ensemble_and_submission_write_point_on_a_full_disk(
    clean, tmp_path, monkeypatch, capsys
):
    """The ensemble, its report and the submission: each write point stops in one line with
    nothing partial, and the re-run writes the same submission and fitted state."""
    ref = tmp_path / "ref"
    shutil.copytree(clean[0], ref)
    verb = ["ensemble", "--runs", "r"]
    points = _record([verb[0], *toy_roots(ref), *verb[1:]])
    names = [n for _, n in points]
    for want in (
        "ensemble/leaderboard.csv",
        "ensemble/ensemble_state.npz",
        "ensemble/submission.csv",
    ):
        assert any(n.endswith(want.split("/")[1]) for n in names), (want, names)
    root = tmp_path / "full"
    shutil.copytree(clean[0], root)
    for kind, name in points:
        monkeypatch.setenv("PIPELINE_FAIL_AT", f"{kind}:{name}")
        capsys.readouterr()
        assert main([verb[0], *toy_roots(root), *verb[1:]]) == 2, f"{kind}:{name} not reached"
        err = capsys.readouterr().err  # (what a progress bar left on the screen, then) one line
        assert "Traceback" not in err, err
        lines = [t for t in err.splitlines() if t.startswith("error: ")]
        assert len(lines) == 1 and lines[0].startswith("error: disk full writing "), (name, err)
        assert err.rstrip().endswith(lines[0]), err
        assert not [p for p in root.rglob("*.tmp")], name
    monkeypatch.delenv("PIPELINE_FAIL_AT")
    assert main([verb[0], *toy_roots(root), *verb[1:]]) == 0
    for rel in ("submission.csv", "ensemble_state.npz"):
        a = next(ref.rglob(rel))
        b = root / a.relative_to(ref)
        assert a.read_bytes() == b.read_bytes(), rel


def test_predict_reserves_its_logits_and_a_refusal_is_one_line(copy, monkeypatch, capsys):
    """make predict streams each member's test logits into a memory map: reserved first, so a
    full disk is the one line (not a SIGBUS mid-pass) and no partial logits or submission stay."""
    assert main(["ensemble", *toy_roots(copy), "--runs", "r"]) == 0
    to = copy / "out" / "submission.csv"
    argv = ["predict", *toy_roots(copy), "--test", str(copy / "input/toy"), "--to", str(to)]
    monkeypatch.setenv("PIPELINE_FAIL_AT", "fallocate:logits/r.npy")
    capsys.readouterr()
    assert main(argv) == 2
    err = [t for t in capsys.readouterr().err.splitlines() if t.startswith("error: ")]
    assert len(err) == 1 and err[0].startswith("error: disk full writing "), err
    assert "logits/r.npy (needs " in err[0] and "bytes free)" in err[0]
    assert not to.exists() and not list(copy.rglob("logits/*.npy"))
    monkeypatch.delenv("PIPELINE_FAIL_AT")
    assert main(argv) == 0 and to.is_file()


def test_a_full_disk_no_artifact_write_caught_is_still_one_line(monkeypatch, capsys):
    """A library writing its own file (matplotlib's cache, say) on a full disk: the CLI says it
    in the same one line; any other OSError is not dressed up as one."""
    import errno

    import pipeline.cli

    def full(_args):
        raise OSError(errno.ENOSPC, "No space left on device", "/x/lib.cache")

    monkeypatch.setattr(pipeline.cli, "cmd_check", full)
    assert main(["check", "--comp", "input/none"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err == [err[0]] and err[0].startswith("error: disk full writing /x/lib.cache ("), err

    def other(_args):
        raise OSError(errno.EACCES, "Permission denied", "/x/y")

    monkeypatch.setattr(pipeline.cli, "cmd_check", other)
    with pytest.raises(PermissionError):
        main(["check", "--comp", "input/none"])
