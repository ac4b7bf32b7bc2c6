"""make download SLUG=<slug>: a ``kaggle`` stub on PATH (and beside sys.executable) stands in for
the Kaggle CLI. Success, each failure's one line (outputs as kaggle 2.2.x and 1.x print them),
unsafe archives, free space, nested zips, and an interrupted extraction resumed."""

from __future__ import annotations

import io
import os
import re
import shutil
import stat
import subprocess
import sys
import zipfile
from collections import namedtuple
from pathlib import Path

import pytest

from pipeline.cli import build_parser, main, resolve_comp
from pipeline.competition.metrics import METRICS
from pipeline.submit import download as dl

from .fakes import write_leaves

REPO = Path(__file__).resolve().parents[1]
SLUG = "leaves"
EVAL = f"https://www.kaggle.com/competitions/{SLUG}/overview/evaluation"
ARCHIVE = f"input/{SLUG}/{SLUG}.zip"

# kaggle competitions download -c <slug> -p <dest>: copies ctl/zip to <dest>/<slug>.zip when
# present, prints ctl/out and ctl/err, exits with ctl/rc (0)
STUB = """#!/bin/sh
echo "$@" >> {ctl}/log
if [ -f {ctl}/zip ]; then mkdir -p "$6"; cp {ctl}/zip "$6/$4.zip"; fi
if [ -f {ctl}/out ]; then cat {ctl}/out; fi
if [ -f {ctl}/err ]; then cat {ctl}/err >&2; fi
exit $(cat {ctl}/rc 2>/dev/null || echo 0)
"""

# what kaggle 2.2.5 prints (checked against the installed CLI) and what 1.x printed
AUTH_HELP = (
    "Authentication required to call the Kaggle API.\n\nFirst, you will need a Kaggle account. "
    "You can sign up at\n  https://www.kaggle.com/account/login\n\nRecommended: log in with "
    "OAuth via a web-based authorization flow.\nNo token to manage; credentials are cached "
    "locally for you.\n    kaggle auth login\n"
)
FORBIDDEN = (
    "403 Client Error: Forbidden for url: https://api.kaggle.com/v1/competitions."
    "CompetitionApiService/DownloadDataFiles\n\nYou don't have access to this resource.\nIf this "
    "is a competition, you may need to accept its rules first at\n  "
    "https://www.kaggle.com/competitions/<competition>/rules\n"
)
NO_NETWORK = (
    "HTTPSConnectionPool(host='api.kaggle.com', port=443): Max retries exceeded with url: "
    "/v1/competitions.CompetitionApiService/DownloadDataFiles (Caused by NameResolutionError("
    "\"HTTPSConnection(host='api.kaggle.com', port=443): Failed to resolve 'api.kaggle.com' "
    '([Errno -2] Name or service not known)"))\n'
)
NO_NETWORK_TOKEN = (  # an access token is checked online first: a traceback through authenticate
    'Traceback (most recent call last):\n  File ".../kaggle/api/kaggle_api_extended.py", line '
    "1497, in authenticate\n    if self._authenticate_with_access_token():\n"
    "requests.exceptions.ConnectionError: HTTPSConnectionPool(host='api.kaggle.com', port=443): "
    "Max retries exceeded with url: /v1/security.OAuthService/IntrospectToken\n"
)
PARTIAL = (
    "Download failed after 5 retries.\nError: ChunkedEncodingError: ('Connection broken: "
    "IncompleteRead(1048576 bytes read, 1048576 more expected)')\nPartial file saved at: "
    f"{ARCHIVE}\nYou can resume by running the same command again.\n"
)

RERUN = f"re-run make download SLUG={SLUG}"
NO_CREDENTIALS = (
    "kaggle found no valid credentials; create an API token at https://www.kaggle.com/settings/api,"
    f" save it as ~/.kaggle/access_token (or run kaggle auth login), then {RERUN}"
)
RULES = (
    f"Kaggle refused the download of {SLUG} (403 Forbidden: the rules are not accepted); accept "
    f"them at https://www.kaggle.com/competitions/{SLUG}/rules, then {RERUN}"
)
OFFLINE = (
    f"cannot reach kaggle.com to download {SLUG} (no network connection): connect this machine "
    f"to the internet and {RERUN}, or unzip the files into input/{SLUG}/ by hand"
)


@pytest.fixture
def kaggle(tmp_path: Path, monkeypatch) -> Path:
    """The stub's control folder; the test runs in ``tmp_path`` (so input/<slug> is there)."""
    ctl, bin_ = tmp_path / "ctl", tmp_path / "bin"
    ctl.mkdir()
    bin_.mkdir()
    (bin_ / "kaggle").write_text(STUB.format(ctl=ctl))
    (bin_ / "kaggle").chmod(0o755)
    monkeypatch.setattr(sys, "executable", str(bin_ / "python"))
    monkeypatch.setenv("PATH", f"{bin_}:{os.environ['PATH']}")
    monkeypatch.chdir(tmp_path)
    return ctl


def calls(ctl: Path) -> list[str]:
    log = ctl / "log"
    return log.read_text().splitlines() if log.is_file() else []


def competition_zip(tmp_path: Path, extra: dict[str, bytes] | None = None) -> Path:
    """The leaves competition as Kaggle zips it: files at the top, plus ``extra`` members."""
    src = write_leaves(tmp_path / "src" / SLUG)
    out = tmp_path / "src" / f"{SLUG}.zip"
    with zipfile.ZipFile(out, "w", zipfile.ZIP_DEFLATED) as z:
        for p in sorted(src.rglob("*")):
            if p.is_file():
                z.write(p, p.relative_to(src).as_posix())
        for name, data in (extra or {}).items():
            z.writestr(name, data)
    return out


def zip_bytes(members: dict[str, bytes]) -> bytes:
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as z:
        for name, data in members.items():
            z.writestr(name, data)
    return buf.getvalue()


def download(capsys) -> tuple[int, str, str]:
    rc = main(["download", "--slug", SLUG])
    out, err = capsys.readouterr()
    return rc, out, err


def leftovers(tmp_path: Path) -> list[str]:
    return sorted(p.name for p in (tmp_path / "input").glob(".*"))


def test_download_extracts_writes_the_slug_checks_and_names_the_metric(
    kaggle, tmp_path, capsys, monkeypatch
):
    shutil.copy(competition_zip(tmp_path), kaggle / "zip")
    (kaggle / "err").write_text(" 50%|#####     | 1.00M/2.00M [00:01<00:01]\r100%|##########|\n")
    monkeypatch.setattr(sys.stderr, "isatty", lambda: True)  # the progress bar is shown
    rc, out, err = download(capsys)
    assert rc == 0, err
    assert calls(kaggle) == [f"competitions download -c {SLUG} -p input/{SLUG}"]
    comp = tmp_path / "input" / SLUG
    assert sorted(p.name for p in comp.iterdir()) == [
        "competition.toml", "images", "sample_submission.csv", "test.csv", "train.csv",
    ]  # fmt: skip
    assert (comp / "competition.toml").read_text() == f'slug = "{SLUG}"\n'
    assert leftovers(tmp_path) == []
    assert "100%|" in err and "error" not in err
    lines = out.splitlines()
    assert lines[0] == f"downloading {SLUG} into input/{SLUG}/ (kaggle competitions download)"
    assert re.match(rf"input/{SLUG}: OK - train.csv: 18 images, 3 classes", lines[-2])
    assert lines[-1] == (
        f"copy the metric from {EVAL} into input/{SLUG}/competition.toml "
        f'({", ".join(METRICS)}); the files suggest: metric = "accuracy"'
    )
    # a re-run finds the folder complete: no second download, the slug and check again
    rc, out, err = download(capsys)
    assert rc == 0, err
    assert len(calls(kaggle)) == 1
    assert (
        out.splitlines()[0]
        == f"input/{SLUG} already holds the competition; delete it to download it again"
    )


def test_a_set_metric_and_other_keys_are_kept(kaggle, tmp_path, capsys):
    comp = write_leaves(tmp_path / "input" / SLUG)
    (comp / "competition.toml").write_text('metric = "macro_f1"\nslug = "old-name"\n')
    rc, out, err = download(capsys)
    assert rc == 0, err
    assert calls(kaggle) == []
    assert (comp / "competition.toml").read_text() == f'metric = "macro_f1"\nslug = "{SLUG}"\n'
    assert out.splitlines()[-1] == (
        f'input/{SLUG}/competition.toml sets metric = "macro_f1"; check it against {EVAL}'
    )


def test_nested_zips_are_extracted(kaggle, tmp_path, capsys):
    """``images.zip`` holding ``images/...`` lands in ``images/``; ``extra.zip`` holding loose
    files in ``extra/``; the nested archives are gone."""
    src = write_leaves(tmp_path / "src" / SLUG)
    images = {p.relative_to(src).as_posix(): p.read_bytes() for p in (src / "images").iterdir()}
    top = {n: (src / n).read_bytes() for n in ("train.csv", "test.csv", "sample_submission.csv")}
    top["images.zip"] = zip_bytes(images)
    top["extra.zip"] = zip_bytes({"notes.txt": b"x", "more/deep.zip": zip_bytes({"a.txt": b"a"})})
    (kaggle / "zip").write_bytes(zip_bytes(top))
    rc, out, err = download(capsys)
    assert rc == 0, err
    comp = tmp_path / "input" / SLUG
    assert sorted(p.name for p in comp.iterdir()) == [
        "competition.toml", "extra", "images", "sample_submission.csv", "test.csv", "train.csv",
    ]  # fmt: skip
    assert len(list((comp / "images").iterdir())) == len(images)
    assert (comp / "extra" / "notes.txt").read_bytes() == b"x"
    assert (comp / "extra" / "more" / "deep" / "a.txt").read_bytes() == b"a"
    assert not list(comp.rglob("*.zip"))


@pytest.mark.parametrize(
    "out, err, message",
    [
        (AUTH_HELP, "", NO_CREDENTIALS),  # kaggle 2.2.x: no credentials, or a rejected key (401)
        ("", "401 Client Error: Unauthorized for url: https://api.kaggle.com/v1/x\n", NO_CREDENTIALS),
        ("", "OSError: Could not find kaggle.json. Make sure it's located in /root/.kaggle. Or "
         "use the environment method.\n", NO_CREDENTIALS),  # kaggle 1.x
        ("", FORBIDDEN, RULES),
        ("", "403 - Forbidden - You must accept this competition's rules before you'll be able "
         "to download files.\n", RULES),  # kaggle 1.x
        ("", NO_NETWORK, OFFLINE),
        ("", NO_NETWORK_TOKEN, OFFLINE),
        ("", "404 Client Error: Not Found for url: https://api.kaggle.com/v1/x\n",
         f"Kaggle has no competition '{SLUG}' (404); use the slug in the competition's URL, "
         "https://www.kaggle.com/competitions/<slug>"),
        ("", "Something unexpected\n",
         f"kaggle competitions download -c {SLUG} failed: Something unexpected; run it by hand to "
         f"see the full output: kaggle competitions download -c {SLUG} -p input/{SLUG}"),
    ],
    ids=["no-credentials", "401", "no-kaggle-json", "rules-403", "rules-403-v1", "no-network",
         "no-network-token", "404", "other"],
)  # fmt: skip
def test_each_kaggle_failure_is_one_line(kaggle, tmp_path, capsys, out, err, message):
    (kaggle / "out").write_text(out)
    (kaggle / "err").write_text(err)
    (kaggle / "rc").write_text("1")
    rc, stdout, stderr = download(capsys)
    assert rc == 2
    assert stderr == f"error: {message}\n"
    assert not (tmp_path / "input" / SLUG).exists() and leftovers(tmp_path) == []


def test_a_partial_download_is_kept_and_a_rerun_resumes(kaggle, tmp_path, capsys):
    whole = competition_zip(tmp_path).read_bytes()
    (kaggle / "zip").write_bytes(whole[: len(whole) // 2])
    (kaggle / "out").write_text(PARTIAL)
    (kaggle / "rc").write_text("1")
    rc, out, err = download(capsys)
    assert rc == 2
    size = f"{len(whole) // 2 / 1000:.1f} KB"
    assert err == (
        f"error: the download of {SLUG} stopped part-way ({ARCHIVE} holds {size} so far); "
        f"{RERUN} to resume it\n"
    )
    assert sorted(p.name for p in (tmp_path / "input" / SLUG).iterdir()) == [f"{SLUG}.zip"]
    (kaggle / "zip").write_bytes(whole)  # the CLI resumes and completes the archive
    for name in ("out", "rc"):
        (kaggle / name).unlink()
    rc, out, err = download(capsys)
    assert rc == 0, err
    assert (tmp_path / "input" / SLUG / "train.csv").is_file()
    assert not (tmp_path / "input" / SLUG / f"{SLUG}.zip").exists()


def test_a_truncated_or_corrupt_archive_is_deleted_for_a_fresh_download(kaggle, tmp_path, capsys):
    whole = competition_zip(tmp_path).read_bytes()
    (kaggle / "zip").write_bytes(whole[: len(whole) // 2])  # the CLI said it finished
    rc, out, err = download(capsys)
    assert rc == 2
    assert err == (
        f"error: {ARCHIVE} is incomplete or corrupt (File is not a zip file); deleted it: "
        f"{RERUN} to download it again\n"
    )
    assert not (tmp_path / "input" / SLUG).exists() and leftovers(tmp_path) == []
    # a flipped byte inside a stored member: the CRC check fails while extracting
    data = bytearray(zip_bytes({"train.csv": b"image,label\n" * 50, "b.txt": b"b"}))
    data[data.index(b"image,label") + 100] ^= 0xFF
    (kaggle / "zip").write_bytes(bytes(data))
    rc, out, err = download(capsys)
    assert rc == 2
    assert err == (
        f"error: {ARCHIVE} is incomplete or corrupt (Bad CRC-32 for file 'train.csv'); deleted "
        f"it: {RERUN} to download it again\n"
    )
    assert not (tmp_path / "input" / SLUG).exists() and leftovers(tmp_path) == []


def _member(name: str, data: bytes = b"x", link: bool = False) -> tuple[zipfile.ZipInfo, bytes]:
    info = zipfile.ZipInfo(name)
    if link:
        info.external_attr = (stat.S_IFLNK | 0o777) << 16
    return info, data


@pytest.mark.parametrize(
    "members, inside, name, why",
    [
        ([_member("../escape")], "", "../escape", "has a '..' segment"),
        ([_member("/tmp/abs.txt")], "", "/tmp/abs.txt", "has an absolute path"),
        ([_member("link", b"/etc/passwd", link=True)], "", "link", "is a symbolic link"),
        ([_member("train.zip", zip_bytes({"ok.txt": b"1", "../../escape": b"2"}))], "train.zip",
         "../../escape", "has a '..' segment"),
    ],
    ids=["dotdot", "absolute", "symlink", "nested-dotdot"],
)  # fmt: skip
def test_unsafe_members_are_refused_and_nothing_is_extracted(
    kaggle, tmp_path, capsys, members, inside, name, why
):
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as z:
        z.writestr("train.csv", "image,label\n")
        for info, data in members:
            z.writestr(info, data)
    (kaggle / "zip").write_bytes(buf.getvalue())
    rc, out, err = download(capsys)
    assert rc == 2
    where = f"{ARCHIVE}, inside {inside}" if inside else ARCHIVE
    assert err == (
        f"error: {where}: member {name!r} {why}; refused, nothing extracted: a Kaggle download "
        f"holds none, so delete {ARCHIVE} and {RERUN}, or unzip it by hand if you trust it\n"
    )
    assert sorted(p.name for p in (tmp_path / "input" / SLUG).iterdir()) == [f"{SLUG}.zip"]
    assert leftovers(tmp_path) == [] and not list(tmp_path.rglob("escape"))


def test_too_little_free_space_is_refused_before_extracting(kaggle, tmp_path, capsys, monkeypatch):
    archive = competition_zip(tmp_path)
    shutil.copy(archive, kaggle / "zip")
    need = sum(i.file_size for i in zipfile.ZipFile(archive).infolist()) + dl.SPACE_MARGIN
    usage = namedtuple("usage", "total used free")
    monkeypatch.setattr(dl.shutil, "disk_usage", lambda path: usage(10**9, 10**9, 5000))
    rc, out, err = download(capsys)
    assert rc == 2
    assert err == (
        f"error: input/ has 5.0 KB free but extracting {ARCHIVE} needs {dl._size(need)}; free "
        f"{dl._size(need - 5000)} and {RERUN} (the archive is kept)\n"
    )
    assert sorted(p.name for p in (tmp_path / "input" / SLUG).iterdir()) == [f"{SLUG}.zip"]
    assert leftovers(tmp_path) == []


def test_a_nested_zip_too_big_for_the_disk_is_refused(kaggle, tmp_path, capsys, monkeypatch):
    inner = zip_bytes({"images/0.jpg": b"0" * 5000})
    (kaggle / "zip").write_bytes(zip_bytes({"train.csv": b"image,label\n", "images.zip": inner}))
    usage = namedtuple("usage", "total used free")
    frees = iter([10**12, 10**6])  # room for the archive, not for what images.zip holds
    monkeypatch.setattr(dl.shutil, "disk_usage", lambda path: usage(0, 0, next(frees)))
    rc, out, err = download(capsys)
    assert rc == 2
    need = 5000 + dl.SPACE_MARGIN
    assert err == (
        f"error: input/ has 1.0 MB free but extracting images.zip inside {ARCHIVE} needs "
        f"{dl._size(need)}; free {dl._size(need - 10**6)} and {RERUN} (the archive is kept)\n"
    )
    assert sorted(p.name for p in (tmp_path / "input" / SLUG).iterdir()) == [f"{SLUG}.zip"]
    assert leftovers(tmp_path) == []


def test_an_interrupted_extraction_leaves_no_complete_looking_folder(
    kaggle, tmp_path, capsys, monkeypatch
):
    shutil.copy(competition_zip(tmp_path), kaggle / "zip")
    real = dl._extract_all

    def killed(z, into, *rest):
        z.extract(z.infolist()[0], into)  # a first file written, then Ctrl-C
        raise KeyboardInterrupt

    monkeypatch.setattr(dl, "_extract_all", killed)
    assert main(["download", "--slug", SLUG]) == 130
    assert sorted(p.name for p in (tmp_path / "input" / SLUG).iterdir()) == [f"{SLUG}.zip"]
    assert leftovers(tmp_path) == []
    monkeypatch.setattr(dl, "_extract_all", real)
    capsys.readouterr()
    assert download(capsys)[0] == 0
    assert (tmp_path / "input" / SLUG / "train.csv").is_file() and leftovers(tmp_path) == []


def test_a_kill_between_the_two_renames_is_finished_by_the_rerun(kaggle, tmp_path, capsys):
    """State after ``os.rename(dest, old)``: the archive aside, the extraction complete."""
    done = write_leaves(tmp_path / "input" / f".{SLUG}.extract")
    (done / dl.DONE).write_text("")
    old = tmp_path / "input" / f".{SLUG}.old"
    old.mkdir()
    (old / f"{SLUG}.zip").write_bytes(b"the archive")
    rc, out, err = download(capsys)
    assert rc == 0, err
    assert calls(kaggle) == []
    comp = tmp_path / "input" / SLUG
    assert (comp / "train.csv").is_file() and not (comp / dl.DONE).exists()
    assert leftovers(tmp_path) == []


def test_a_half_extracted_folder_is_deleted_and_extracted_again(kaggle, tmp_path, capsys):
    shutil.copy(competition_zip(tmp_path), kaggle / "zip")
    half = tmp_path / "input" / f".{SLUG}.extract"
    half.mkdir(parents=True)
    (half / "train.csv").write_text("image,label\n")
    (tmp_path / "input" / SLUG).mkdir()
    shutil.copy(kaggle / "zip", tmp_path / "input" / SLUG / f"{SLUG}.zip")
    rc, out, err = download(capsys)
    assert rc == 0, err
    assert leftovers(tmp_path) == []
    assert len((tmp_path / "input" / SLUG / "train.csv").read_text().splitlines()) == 19


@pytest.mark.parametrize(
    "argv, message",
    [
        ([], "make download needs SLUG=<slug>: the competition's name in its URL, "
         "https://www.kaggle.com/competitions/<slug>"),
        (["--slug", "../x"], "SLUG='../x': a Kaggle competition slug is lower-case letters, "
         "digits and hyphens, as in https://www.kaggle.com/competitions/<slug>"),
    ],
)  # fmt: skip
def test_a_missing_or_bad_slug_is_one_line(kaggle, capsys, argv, message):
    assert main(["download", *argv]) == 2
    assert capsys.readouterr().err == f"error: {message}\n"
    assert calls(kaggle) == []


@pytest.mark.parametrize(
    "argv, comp",
    [
        (["folds"], "input/digits"),
        (["folds", "--slug", "dogs"], "input/dogs"),
        (["folds", "--slug", "dogs", "--comp", "data/x"], "data/x"),
        (["package", "--slug", "dogs"], "input/dogs"),
        (["predict", "--slug", "dogs"], "input/dogs"),
    ],
)
def test_comp_defaults_to_input_slug(argv, comp):
    args = build_parser().parse_args(argv)
    resolve_comp(args)
    assert args.comp == comp


@pytest.mark.skipif(shutil.which("make") is None, reason="needs make")
def test_make_download_then_the_stages_in_one_command():
    """``make download folds ... SLUG=x``: every verb gets --slug, none a --comp."""
    out = subprocess.run(
        ["make", "-n", "-o", ".venv/.installed", "download", "folds", "train", "ensemble",
         "submit", "SLUG=dogs"],
        cwd=REPO, capture_output=True, text=True,
    )  # fmt: skip
    assert out.returncode == 0, out.stderr
    verbs = [ln for ln in out.stdout.splitlines() if "-m pipeline " in ln]
    assert [ln.split("-m pipeline ")[1].split()[0] for ln in verbs] == [
        "download", "folds", "train", "ensemble", "submit",
    ]  # fmt: skip
    assert all('--slug="dogs"' in ln and "--comp" not in ln for ln in verbs)
