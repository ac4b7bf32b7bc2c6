"""Where each id's image file is: a relative path (``images/0.jpg``), ``<id>.<ext>`` in the
folder holding most ids (CIFAR-10's ``train/``), or a file name somewhere below the competition
(state-farm's class folders). Never a path outside the competition folder."""

from __future__ import annotations

import os
from pathlib import Path

from ..errors import CompetitionError
from . import rules
from .rules import IMAGE_EXTS


def resolve_images(
    root: Path, ids: list[str], split: str, folder: str | None = None
) -> tuple[list[str | None], list[tuple[int, str, str]], str | None]:
    """Map ids to image paths relative to ``root``: ``(paths, bad, folder)``.

    ``paths[n]`` is None where id ``n`` has no usable file, and ``bad`` holds ``(n, why, path)``
    with why ``outside`` (a ../, absolute or symlinked path leaving ``root``), ``missing`` or
    ``no_image``. A file whose name differs from the id only in letter case is used.
    ``folder`` is None when ids are paths (``images/0.jpg``), else the folder of ``<id>.<ext>``.
    """
    explicit = folder is not None
    if folder is None and _is_path_layout(root, ids):
        rel: list[str | None] = list(ids)
    else:
        folder = folder if folder is not None else _best_folder(root, ids, split)
        index = stem_index(root / folder)
        lower = rules.unique_lower(index)
        prefix = "" if folder == "." else f"{folder}/"
        names = [index.get(i) or lower.get(i.lower()) for i in ids]
        rel = [None if n is None else prefix + n for n in names]
        if any(n is None for n, i in zip(names, ids, strict=True) if i) and not explicit:
            rel = in_class_folders(root, ids, rel, split)
    base, listings = os.path.realpath(root), {}
    paths, bad = [], []
    for n, r in enumerate(rel):
        if not ids[n]:  # an empty id is reported with the CSV rows
            paths.append(None)
            continue
        why = "no_image" if r is None else rules.file_problem(root, base, r)
        if why == "missing":
            fixed = rules.case_match(root, r, listings)
            if fixed is not None and rules.file_problem(root, base, fixed) is None:
                r, why = fixed, None
        paths.append(None if why else r)
        if why:
            bad.append((n, why, r or ids[n]))
    return paths, bad, folder


def _is_path_layout(root: Path, ids: list[str]) -> bool:
    """Ids are file paths (``images/0.jpg``) when they carry an image extension and either name a
    folder or exist at the top of ``root``; file names of a sub-folder (aerial-cactus:
    ``0004be2c.jpg`` in ``train/``) are looked up like bare ids."""
    some = [i for i in ids[:100] if i][:50]
    if not some or not all(os.path.splitext(i)[1].lower() in IMAGE_EXTS for i in some):
        return False
    return any("/" in i or "\\" in i or (root / i).exists() for i in some)


def _best_folder(root: Path, ids: list[str], split: str) -> str:
    """The folder holding most of ``ids`` as ``<id>.<ext>``; ties go to a name with the split.
    A folder named for the split that holds at least half of them wins over any other: CIFAR's
    test ids are also train file names, so a test folder missing a few images must not hand
    the test ids to the train images."""
    wanted = {i.lower() for i in ids}
    best: tuple[int, int, int, str] | None = None
    for dirpath, dirnames, _ in os.walk(root):
        dirnames[:] = sorted(d for d in dirnames if not d.startswith("."))
        rel = os.path.relpath(dirpath, root).replace(os.sep, "/")
        hits = len(wanted & {k.lower() for k in stem_index(Path(dirpath))})
        if hits:
            named = int(split in rel.lower())
            key = (named * int(2 * hits >= len(wanted)), hits, named, rel)
            best = key if best is None or key[:3] > best[:3] else best
    if best is None:
        raise CompetitionError(
            f"{root}: no image file named <id>.<ext> for any {split} id (first id: {ids[0]!r}); "
            f'set {split}_images = "<folder>" in {root}/competition.toml'
        )
    return best[3]


def stem_index(folder: Path) -> dict[str, str]:
    """``{stem: file name}`` and ``{file name: file name}`` of the image files in ``folder``."""
    if not folder.is_dir():
        return {}
    names = [
        e.name
        for e in os.scandir(folder)
        if e.is_file() and os.path.splitext(e.name)[1].lower() in IMAGE_EXTS
    ]
    return {os.path.splitext(n)[0]: n for n in names} | {n: n for n in names}


def in_class_folders(
    root: Path, ids: list[str], rel: list[str | None], split: str
) -> list[str | None]:
    """Ids not in the best folder, looked up by file name anywhere below ``root``: a train CSV
    whose images sit in class folders (state-farm: ``imgs/train/c0/img_1.jpg``). A name found
    more than once goes to the path naming the split, else stays unresolved."""
    found: dict[str, list[str]] = {}
    for dirpath, dirnames, files in os.walk(root):
        dirnames[:] = sorted(d for d in dirnames if not d.startswith("."))
        rel_dir = os.path.relpath(dirpath, root).replace(os.sep, "/")
        for name in files:
            stem, ext = os.path.splitext(name)
            if ext.lower() in IMAGE_EXTS:
                path = name if rel_dir == "." else f"{rel_dir}/{name}"
                for key in {name, stem}:
                    found.setdefault(key, []).append(path)
    out = list(rel)
    for n, (i, r) in enumerate(zip(ids, rel, strict=True)):
        if r is None and i in found:
            other = "test" if split == "train" else "train"  # never the other split's image
            cands = [c for c in found[i] if other not in c.lower()]
            named = [c for c in cands if split in c.lower()]
            if cands:
                out[n] = cands[0] if len(cands) == 1 else (named[0] if len(named) == 1 else None)
    return out
