"""What ``EXECUTOR=kaggle`` sends before any notebook runs: the ``code`` dataset, the
competition (mounted by Kaggle when this account joined it, else the ``data`` dataset) and, for
a retry, the ``resume`` dataset; each written by ``kaggle_files``, audited, and uploaded through
make package's loop only when its files changed since its last upload."""

from __future__ import annotations

import re
import shutil
from dataclasses import dataclass
from types import ModuleType
from typing import TYPE_CHECKING

from ... import artifacts
from ...errors import PipelineError
from . import kaggle_files as files

if TYPE_CHECKING:
    from ..context import TrainContext
    from . import Dispatch


@dataclass(frozen=True)
class Commands:
    """make package's Kaggle helpers, handed in by the CLI (``use``)."""

    cli: ModuleType  # pipeline.submit.kaggle: kaggle_exe, attempt, failure, credentials, user
    loop: ModuleType  # pipeline.predict.kaggle_loop: Loop, _upload, _push, STATUS_RE, WAITS
    shipping: ModuleType  # pipeline.predict.shipping: copy_source, source_root, _local_secrets


class Uploads:
    """One ``make train``'s names on Kaggle and its datasets."""

    def __init__(self, ctx: TrainContext, d: Dispatch, c: Commands) -> None:
        self.ctx, self.d, self.c = ctx, d, c
        self.exe = c.cli.kaggle_exe()
        self.owner = d.option("owner") or c.cli.kaggle_user()
        if not self.owner:
            raise PipelineError(
                "EXECUTOR=kaggle: no Kaggle user name; set OWNER=<your Kaggle user name>"
            )
        self.base = ctx.ws.package_dir("train")
        self.slug = re.sub(r"[^a-z0-9]+", "-", ctx.ws.comp.lower()).strip("-")
        if d.option("kaggle_slots") < 1:
            raise PipelineError(f"KAGGLE_SLOTS={d.option('kaggle_slots')}: use 1 or more")
        # THREADS, else the notebook's own cores (this machine's say nothing about Kaggle's)
        self.batch: dict = {"owner": self.owner, "threads": d.threads}
        self.sources: dict[str, list[str]] = {"datasets": [], "competitions": []}

    def ref(self, part: str) -> str:
        """``<owner>/<comp>-train-<part>``, the slug within Kaggle's 50 characters."""
        return f"{self.owner}/{self.slug[:36]}-train-{part}"

    # ------------------------------------------------------------ uploads
    def upload(self, part: str, write, key: str = "") -> None:
        """Write dataset ``part`` afresh under ``package/<comp>/train/<part>/dataset``, audit it,
        then create or version it and wait until Kaggle says ready (make package's loop); not
        again when the same files (sha256, or ``key``: the competition's listing) were uploaded
        last time and Kaggle has that dataset ready."""
        out = self.base / part
        if key and self.unchanged(part, key):
            return
        shutil.rmtree(out, ignore_errors=True)
        (out / "dataset").mkdir(parents=True)
        write(out / "dataset", self.ref(part))
        files.audit(out / "dataset", self.c.shipping._local_secrets())
        key = key or self.c.shipping.digest(out / "dataset")
        if not self.unchanged(part, key):
            note = f"make train {part}, sha256 {key[:12]}"
            self.c.loop._upload(self.c.loop.Loop(self.exe, out, self.ref(part), "", note, out))
            artifacts.atomic_write_text(self.base / f"{part}.uploaded", f"{self.ref(part)} {key}\n")
        if part != "code":  # a copy of the competition or of last.pt files: not kept twice
            shutil.rmtree(out)

    def unchanged(self, part: str, key: str) -> bool:
        """Whether ``part`` was last uploaded with these files and Kaggle says it is ready."""
        mark = self.base / f"{part}.uploaded"
        if not mark.is_file() or mark.read_text().split() != [self.ref(part), key]:
            return False
        code, out, _ = self.c.cli.attempt([self.exe, "datasets", "status", self.ref(part)])
        if code != 0 or out.strip().splitlines()[-1:] != ["ready"]:
            return False
        print(f"dataset {self.ref(part)}: unchanged since its last upload; not uploaded again")
        return True

    def upload_inputs(self) -> None:
        """The code dataset, and the competition: mounted when Kaggle has it, else uploaded."""
        ctx, spec, joined = self.ctx, self.spec(), self.joined()

        def code(root, ref):
            copy = lambda dst: self.c.shipping.copy_source(self.c.shipping.source_root(), dst)  # noqa: E731
            files.write_code(root, ctx, spec, copy, ref)

        self.upload("code", code)
        self.batch["code"] = self.ref("code").split("/")[1]
        self.sources["datasets"].append(self.ref("code"))
        if joined:
            self.batch["competition"] = ctx.comp.slug
            self.sources["competitions"].append(ctx.comp.slug)
            return
        write = lambda root, ref: files.write_data(root, ctx.comp.root, ref)  # noqa: E731
        self.upload("data", write, files.listing_key(ctx.comp.root))
        self.batch["data"] = self.ref("data").split("/")[1]
        self.sources["datasets"].append(self.ref("data"))

    def spec(self) -> dict:
        ctx = self.ctx
        return {"comp": ctx.ws.comp, "fhash": ctx.fhash, "track": sorted(ctx.track)}

    def joined(self) -> bool:
        """Whether the competition is on Kaggle and this user accepted its rules (a notebook can
        then mount it); a competition Kaggle does not know is uploaded as a private dataset."""
        cmd = [self.exe, "competitions", "files", self.ctx.comp.slug]
        code, _, both = self.c.cli.attempt(cmd)
        if code == 0:
            return True
        if re.search(r"\b403\b|forbidden|accept", both, re.I):
            raise PipelineError(
                f"Kaggle competition {self.ctx.comp.slug}: its rules are not accepted by this "
                f"account; accept them at https://www.kaggle.com/competitions/"
                f"{self.ctx.comp.slug}/rules, then re-run make train"
            )
        if not re.search(r"\b404\b|not found", both, re.I):
            raise self.c.cli.failure(cmd, both, code)
        return False

    # ------------------------------------------------------------ the queue
