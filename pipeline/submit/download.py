"""``make download SLUG=<slug>``: fetch a competition with the Kaggle CLI, unzip it safely, write
``competition.toml``'s ``slug``, check it, and say which metric to copy from the Evaluation page.

``kaggle competitions download -c <slug> -p input/<slug>`` writes ``input/<slug>/<slug>.zip``
(the CLI resumes a partial archive on a re-run). The archive is kept until extraction completes:
every member is checked first (no absolute path, no ``..`` segment, no symlink) and free space
against the uncompressed size, then it is extracted into ``input/.<slug>.extract/`` (each nested
zip checked the same way, then unpacked in place), marked complete, and swapped in by two
renames. A killed extraction leaves only that hidden folder, which the next run deletes (or
finishes swapping in), so ``input/<slug>/`` never looks complete while it is not. Torch-free.
"""

from __future__ import annotations

import os
import re
import shlex
import shutil
import stat
import subprocess
import sys
import tomllib
import zipfile
import zlib
from pathlib import Path

from ..disk.atomic import atomic_write_text
from ..errors import PipelineError
from .kaggle import _key_line, _scrub, kaggle_exe

SLUG_RE = re.compile(r"[a-z0-9][a-z0-9-]*")
RULES_URL = "https://www.kaggle.com/competitions/{}/rules"
EVALUATION_URL = "https://www.kaggle.com/competitions/{}/overview/evaluation"
DONE = ".extracted"  # written last into the extraction folder: it is complete
MAX_NESTING = 3  # zips inside zips inside zips, at most
SPACE_MARGIN = 64 * 2**20  # bytes kept free beyond the uncompressed size

# Kaggle CLI output (2.2.x, and the 1.x wording) -> the failure, checked in this order
PARTIAL_RE = re.compile(
    r"partial file saved|does not match expected size|resume by running|user cancelled", re.I
)
NET_RE = re.compile(
    r"connection ?error|max retries|failed to resolve|name or service not known|"
    r"temporary failure in name resolution|network is unreachable|timed? ?out",
    re.I,
)
RULES_RE = re.compile(r"\b403\b|forbidden|accept (its|this competition's) rules", re.I)
AUTH_RE = re.compile(
    r"authenticat|unauthori[sz]ed|\b401\b|kaggle\.json|credential|invalid token", re.I
)
MISSING_RE = re.compile(r"\b404\b|could not find competition|was not found", re.I)


class DownloadError(PipelineError):
    """make download failed: the Kaggle CLI, the archive or the disk; the message says what to do."""


def download_stage(slug: str, dest: Path | None = None, workers: int | None = None):
    """Download, extract and check competition ``slug`` into ``dest`` (``input/<slug>``);
    returns the checked ``Competition`` after printing the metric line to copy."""
    from ..competition.check import check_stage
    from ..competition.load import load_competition

    check_slug(slug)
    dest = Path(dest) if dest is not None else Path("input") / slug
    rerun = f"re-run make download SLUG={slug}"
    _recover(dest)
    if _extracted(dest):
        print(f"{dest} already holds the competition; delete it to download it again", flush=True)
    else:
        archive = fetch(slug, dest, rerun)
        extract(archive, dest, slug, rerun)
    write_slug(dest, slug)
    comp = load_competition(dest, strict=False)
    check_stage(comp, workers=workers)
    print(metric_line(comp, slug), flush=True)
    return comp


def check_slug(slug: str) -> None:
    if not slug:
        raise DownloadError(
            "make download needs SLUG=<slug>: the competition's name in its URL, "
            "https://www.kaggle.com/competitions/<slug>"
        )
    if not SLUG_RE.fullmatch(slug):
        raise DownloadError(
            f"SLUG={slug!r}: a Kaggle competition slug is lower-case letters, digits and "
            "hyphens, as in https://www.kaggle.com/competitions/<slug>"
        )


# ---------------------------------------------------------------- the Kaggle CLI
def fetch(slug: str, dest: Path, rerun: str) -> Path:
    """Run ``kaggle competitions download -c <slug> -p <dest>``; return the archive. A failure
    is one ``DownloadError`` line saying what to do; the partial archive stays for a resume."""
    cmd = [kaggle_exe(), "competitions", "download", "-c", slug, "-p", str(dest)]
    archive = dest / f"{slug}.zip"
    print(f"downloading {slug} into {dest}/ (kaggle competitions download)", flush=True)
    rc, output = _run(cmd)
    if rc == 0 and not PARTIAL_RE.search(output) and archive.is_file():
        return archive
    if rc == 0 and not PARTIAL_RE.search(output):
        held = ", ".join(sorted(p.name for p in dest.iterdir())) if dest.is_dir() else "nothing"
        raise DownloadError(
            f"kaggle competitions download -c {slug} finished without writing {archive} "
            f"({dest} holds: {held}); run it by hand to see why: kaggle {shlex.join(cmd[1:])}"
        )
    raise DownloadError(_failure(slug, dest, archive, output, cmd, rerun))


def _failure(slug: str, dest: Path, archive: Path, output: str, cmd: list[str], rerun: str) -> str:
    """The one line for a failed ``kaggle competitions download``."""
    if PARTIAL_RE.search(output):
        held = f"holds {_size(archive.stat().st_size)} so far" if archive.is_file() else "kept"
        return f"the download of {slug} stopped part-way ({archive} {held}); {rerun} to resume it"
    if NET_RE.search(output):
        return (
            f"cannot reach kaggle.com to download {slug} (no network connection): connect this "
            f"machine to the internet and {rerun}, or unzip the files into {dest}/ by hand"
        )
    if RULES_RE.search(output):
        return (
            f"Kaggle refused the download of {slug} (403 Forbidden: the rules are not accepted); "
            f"accept them at {RULES_URL.format(slug)}, then {rerun}"
        )
    if AUTH_RE.search(output):
        return (
            "kaggle found no valid credentials; create an API token at "
            "https://www.kaggle.com/settings/api, save it as ~/.kaggle/access_token (or run "
            f"kaggle auth login), then {rerun}"
        )
    if MISSING_RE.search(output):
        return (
            f"Kaggle has no competition {slug!r} (404); use the slug in the competition's URL, "
            "https://www.kaggle.com/competitions/<slug>"
        )
    line = _key_line(output).rstrip(".") or "no output"
    return (
        f"kaggle competitions download -c {slug} failed: {line}; run it by hand to see the "
        f"full output: kaggle {shlex.join(cmd[1:])}"
    )


def _run(cmd: list[str]) -> tuple[int, str]:
    """Run the Kaggle CLI; return its exit status and its output (stdout and stderr, secrets
    scrubbed). Its progress bar is shown on a terminal; its messages only through ours."""
    secrets = [os.environ.get("KAGGLE_KEY", ""), os.environ.get("KAGGLE_API_TOKEN", "")]
    try:
        proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    except OSError as e:
        raise DownloadError(
            f"cannot run {cmd[0]}: {e.strerror}; install the CLI into this environment: "
            "pip install kaggle six"
        ) from None
    chunks, pending, shown = [], "", False
    show = sys.stderr.isatty()
    try:
        while data := os.read(proc.stdout.fileno(), 65536):
            chunks.append(data)
            pending += data.decode("utf-8", "replace")
            *segments, pending = re.split(r"[\r\n]", pending)
            bars = [s for s in segments if re.search(r"\d+%\|", s)]
            if show and bars:
                print(f"\r{bars[-1].strip()}", end="", file=sys.stderr, flush=True)
                shown = True
        rc = proc.wait()
    finally:
        if proc.poll() is None:  # interrupted: stop the CLI; its partial archive stays
            proc.terminate()
            proc.wait()
        proc.stdout.close()
        if shown:
            print(file=sys.stderr)
    return rc, _scrub(b"".join(chunks).decode("utf-8", "replace"), secrets)


# ---------------------------------------------------------------- the archive
def extract(archive: Path, dest: Path, slug: str, rerun: str) -> None:
    """Check every member of ``archive``, check free space, extract into a hidden sibling folder
    (each nested zip checked the same way before it is unpacked), then swap that folder in for
    ``dest``; the archive goes last."""
    tmp, old = _work_dirs(dest)
    try:
        with zipfile.ZipFile(archive) as z:
            need = _inspect(z, archive, "", rerun)
    except (zipfile.BadZipFile, zlib.error, EOFError) as e:
        _corrupt(archive, e, rerun)
    _check_space(dest, need, str(archive), rerun)
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    print(f"extracting {archive} ({_size(need)})", flush=True)
    try:
        with zipfile.ZipFile(archive) as z:
            _extract_all(z, tmp, tmp, archive, rerun, 0)
    except (zipfile.BadZipFile, zlib.error, EOFError) as e:
        shutil.rmtree(tmp, ignore_errors=True)
        _corrupt(archive, e, rerun)
    except OSError as e:  # the disk filled up, a name the file system refuses
        shutil.rmtree(tmp, ignore_errors=True)
        raise DownloadError(
            f"extracting {archive} failed: {e.strerror or e} ({e.filename}); fix that and "
            f"{rerun} (the archive is kept)"
        ) from None
    except BaseException:  # a refused nested zip, Ctrl-C: nothing of it stays
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    for marker in tmp.rglob("*.kaggle-partial"):
        marker.unlink()
    (tmp / DONE).write_text("")
    os.rename(dest, old)  # holds the archive until the extracted folder is in place
    _recover(dest)


def _inspect(z: zipfile.ZipFile, archive: Path, inside: str, rerun: str) -> int:
    """Refuse an unsafe member of ``z`` (``archive``, or the zip ``inside`` it); return the bytes
    its members take once extracted."""
    where = f"{archive}, inside {inside}" if inside else str(archive)
    for info in z.infolist():
        why = _unsafe(info)
        if why:
            raise DownloadError(
                f"{where}: member {info.filename!r} {why}; refused, nothing extracted: a Kaggle "
                f"download holds none, so delete {archive} and {rerun}, or unzip it by hand if "
                "you trust it"
            )
    return sum(info.file_size for info in z.infolist())


def _check_space(folder: Path, need: int, what: str, rerun: str) -> None:
    free = shutil.disk_usage(folder).free
    if free < need + SPACE_MARGIN:
        where = folder.parent if folder.name else folder
        raise DownloadError(
            f"{where}/ has {_size(free)} free but extracting {what} needs "
            f"{_size(need + SPACE_MARGIN)}; free {_size(need + SPACE_MARGIN - free)} and {rerun} "
            "(the archive is kept)"
        )


def _unsafe(info: zipfile.ZipInfo) -> str | None:
    name = info.filename
    if stat.S_ISLNK(info.external_attr >> 16):
        return "is a symbolic link"
    if name.startswith(("/", "\\")) or re.match(r"[A-Za-z]:", name):
        return "has an absolute path"
    if ".." in re.split(r"[/\\]", name):
        return "has a '..' segment"
    return None


def _is_zip(info: zipfile.ZipInfo) -> bool:
    return not info.is_dir() and info.filename.lower().endswith(".zip")


def _extract_all(
    z: zipfile.ZipFile, into: Path, top: Path, archive: Path, rerun: str, depth: int
) -> None:
    """Write every member of ``z`` (checked) below ``into``. A nested zip ``a/b.zip`` is checked
    like the archive, then unpacked into ``a/`` when all its members sit in ``b/``, else into
    ``a/b/``, then deleted (``top``: the extraction folder, for messages)."""
    for info in z.infolist():
        parts = [p for p in re.split(r"[/\\]", info.filename) if p not in ("", ".")]
        if not parts:
            continue
        target = into.joinpath(*parts)
        if info.is_dir():
            target.mkdir(parents=True, exist_ok=True)
            continue
        target.parent.mkdir(parents=True, exist_ok=True)
        with z.open(info) as src, open(target, "wb") as dst:
            shutil.copyfileobj(src, dst, 2**20)
        if _is_zip(info) and depth < MAX_NESTING:
            inside = target.relative_to(top).as_posix()
            with zipfile.ZipFile(target) as inner:
                need = _inspect(inner, archive, inside, rerun)
                _check_space(top, need, f"{inside} inside {archive}", rerun)
                names = [n for n in inner.namelist() if n.strip("/")]
                stem = target.name[: -len(".zip")]
                wrapped = names and all(re.split(r"[/\\]", n)[0] == stem for n in names)
                out = target.parent if wrapped else target.with_suffix("")
                _extract_all(inner, out, top, archive, rerun, depth + 1)
            target.unlink()


def _corrupt(archive: Path, error: BaseException, rerun: str):
    """A complete download whose zip does not read: delete it (the CLI would keep skipping a
    file it holds in full) and say to download again."""
    reason = str(error).strip() or type(error).__name__
    archive.unlink(missing_ok=True)
    Path(f"{archive}.kaggle-partial").unlink(missing_ok=True)
    if not any(archive.parent.iterdir()):
        archive.parent.rmdir()
    raise DownloadError(
        f"{archive} is incomplete or corrupt ({reason}); deleted it: {rerun} to download it again"
    )


# ---------------------------------------------------------------- the folder
def _work_dirs(dest: Path) -> tuple[Path, Path]:
    """The extraction folder and the folder holding the archive during the swap."""
    return dest.parent / f".{dest.name}.extract", dest.parent / f".{dest.name}.old"


def _recover(dest: Path) -> None:
    """Finish (or undo) a swap a kill interrupted; delete a half-extracted folder."""
    tmp, old = _work_dirs(dest)
    if old.is_dir():
        if not dest.exists():
            if (tmp / DONE).is_file():
                os.rename(tmp, dest)
            else:
                os.rename(old, dest)
        if old.is_dir():
            shutil.rmtree(old)  # the archive, now extracted
    if tmp.exists():
        shutil.rmtree(tmp)  # a half-extracted archive: the re-run extracts it again
    (dest / DONE).unlink(missing_ok=True)


def _extracted(dest: Path) -> bool:
    """``dest`` holds more than the archive (and the CLI's resume marker)."""
    if not dest.is_dir():
        return False
    own = {f"{dest.name}.zip", f"{dest.name}.zip.kaggle-partial"}
    return any(p.name not in own for p in dest.iterdir())


def write_slug(dest: Path, slug: str) -> Path:
    """Set ``slug = "<slug>"`` in ``dest/competition.toml`` (atomically), keeping its other keys."""
    path = dest / "competition.toml"
    lines = path.read_text("utf-8").splitlines() if path.is_file() else []
    line = f'slug = "{slug}"'
    found = [i for i, text in enumerate(lines) if re.match(r"\s*slug\s*=", text)]
    if found:
        lines[found[0]] = line
    else:
        lines.insert(0, line)
    text = "\n".join(lines) + "\n"
    try:
        tomllib.loads(text)
    except tomllib.TOMLDecodeError as e:
        raise DownloadError(
            f"{path} is not valid TOML ({e}); fix it and re-run make download SLUG={slug}"
        ) from None
    return atomic_write_text(path, text)


def metric_line(comp, slug: str) -> str:
    """The line telling the user which metric to copy from the competition's Evaluation page."""
    from ..competition.metrics import METRICS

    url = EVALUATION_URL.format(slug)
    toml = comp.root / "competition.toml"
    if dict(comp.task.why).get("metric") == "competition.toml":
        return f'{toml} sets metric = "{comp.task.metric}"; check it against {url}'
    return (
        f"copy the metric from {url} into {toml} ({', '.join(METRICS)}); "
        f'the files suggest: metric = "{comp.task.metric}"'
    )


def _size(n: float) -> str:
    for unit in ("bytes", "KB", "MB", "GB"):
        if n < 1000 or unit == "GB":
            return f"{n:.0f} {unit}" if unit == "bytes" else f"{n:.1f} {unit}"
        n /= 1000
    return f"{n:.1f} TB"
