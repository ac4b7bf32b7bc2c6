"""A fake ``kaggle`` CLI for the tests (never product code): ``tests/test_package_loop.py`` puts
it on ``PATH`` as ``kaggle``. It keeps its state between calls in ``$FAKE_KAGGLE_STATE``:

- ``config.json`` (written by the fixture): ``ready_after`` (``datasets status`` calls that
  answer a processing state before ``ready``; -1: never ready), ``queued`` and ``running`` (the
  ``kernels status`` calls in each state), ``final`` (optional: end in this state, e.g.
  ``CANCEL_ACKNOWLEDGED``, without running the notebook), ``competitions`` (a folder of ``<slug>/``
  competition folders Kaggle would mount; ``unjoined``: slugs whose rules this account has not
  accepted), ``python`` (the interpreter notebooks run in), ``kill`` (optional, the run-time
  limit: ``{"at": "<PIPELINE_KILL_AT point>", "runs": n, "output": bool}``: the first ``n``
  notebook runs are SIGKILLed there (``at`` empty: before they start) and end ERROR, their
  output retrievable or not), ``canned`` (optional: a folder returned as every notebook's
  ``working/``, COMPLETE, without running it);
- ``state.json``: datasets (versions, status calls) and notebooks (versions, status calls,
  outcome); ``datasets/<owner>/<slug>/v<N>/`` and ``kernels/<owner>/<slug>/v<N>/`` hold what was
  uploaded; ``calls.log`` one line per call.

``kernels status`` moves each version through Kaggle's ``KernelWorkerStatus`` (kagglesdk:
QUEUED, RUNNING, then COMPLETE or ERROR, or the configured ``final``). On reaching the end
it really runs the pushed notebook's code cells, laid out as Kaggle mounts them under
``kernels/<owner>/<slug>/v<N>/kaggle/``: ``input/<dataset>/`` (the dataset version current at
push time), ``input/<competition>/``, ``working/`` (the notebook honours ``PIPELINE_INPUT`` and
``PIPELINE_WORKING``), without credentials and refusing the imports an offline notebook could
not make (a notebook with ``enable_internet`` could pip install them: none is refused). Its
exit status decides COMPLETE or ERROR; ``kernels output`` copies ``working/`` and writes the log
as Kaggle does (``<slug>.log``, a JSON list of stream records), or fails for a killed run
configured without output. ``competitions files <slug>`` answers a listing for a competition of
``competitions``, 403 for an ``unjoined`` one, else 404.
Output strings follow the installed kaggle 2.2.x CLI (``kaggle_api_extended.py``).
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

STATE = Path(os.environ["FAKE_KAGGLE_STATE"])
PROCESSING = ("blobs_received", "blobs_decompressed", "blobs_copied_to_sds")
OFFLINE = ("albumentations", "cleanlab", "imagehash", "kaggle")
GUARD = """import runpy, sys
class Offline:  # what a notebook with the internet off cannot pip install
    def find_spec(self, name, path=None, target=None):
        if name.split(".")[0] in {blocked!r}:
            raise ModuleNotFoundError(f"No module named {{name!r}} (offline notebook)")
sys.meta_path.insert(0, Offline())
runpy.run_path(sys.argv[1], run_name="__main__")
"""


def load() -> tuple[dict, dict]:
    config = json.loads((STATE / "config.json").read_text())
    path = STATE / "state.json"
    state = json.loads(path.read_text()) if path.is_file() else {"datasets": {}, "kernels": {}}
    return config, state


def save(state: dict) -> None:
    (STATE / "state.json").write_text(json.dumps(state, indent=1))


def not_found(what: str) -> int:
    print(
        f"404 Client Error: Not Found for url: https://www.kaggle.com/api/v1/{what}",
        file=sys.stderr,
    )
    return 1


def datasets(a, config: dict, state: dict) -> int:
    if a.verb == "status":
        ds = state["datasets"].get(a.ref)
        if ds is None:
            return not_found(f"datasets/status/{a.ref}")
        ds["calls"] += 1
        ready = config["ready_after"] >= 0 and ds["calls"] > config["ready_after"]
        print("ready" if ready else PROCESSING[min(ds["calls"], len(PROCESSING)) - 1])
        return 0
    meta = json.loads((Path(a.path) / "dataset-metadata.json").read_text())
    ref, ds = meta["id"], state["datasets"].get(meta["id"])
    if a.verb == "create" and ds is not None:
        print("Dataset creation error: The requested title is already in use")
        return 0  # as the real CLI: an error line, exit status 0
    if a.verb == "version" and ds is None:
        return not_found(f"datasets/create/version/{ref}")
    ds = ds or {"version": 0}
    ds.update(version=ds["version"] + 1, calls=0, note=a.message)
    shutil.copytree(a.path, STATE / "datasets" / ref / f"v{ds['version']}")
    state["datasets"][ref] = ds
    url = f"https://www.kaggle.com/datasets/{ref}"
    print(f"Your private Dataset is being created. Please check progress at {url}"
          if a.verb == "create" else f"Dataset version is being created. Please check progress at {url}")  # fmt: skip
    return 0


def push(a, config: dict, state: dict) -> int:
    meta = json.loads((Path(a.path) / "kernel-metadata.json").read_text())
    mounts = {}
    for ref in meta["dataset_sources"]:
        ds = state["datasets"].get(ref)
        if ds is None or ds["calls"] <= config["ready_after"] or config["ready_after"] < 0:
            print(f"Kernel push error: dataset {ref} is not ready")
            return 0
        mounts[ref] = ds["version"]
    nb = state["kernels"].setdefault(meta["id"], {"versions": []})
    n = len(nb["versions"]) + 1
    shutil.copytree(a.path, STATE / "kernels" / meta["id"] / f"v{n}" / "code")
    nb["versions"].append({"calls": 0, "outcome": "", "mounts": mounts, "meta": meta})
    print(f"Kernel version {n} successfully pushed.  Please check progress at "
          f"https://www.kaggle.com/code/{meta['id']}")  # fmt: skip
    return 0


def version_of(ref: str, state: dict) -> tuple[str, int, dict] | None:
    owner, slug, *n = ref.split("/")
    nb = state["kernels"].get(f"{owner}/{slug}")
    if nb is None or not nb["versions"]:
        return None
    k = int(n[0]) if n else len(nb["versions"])
    return (f"{owner}/{slug}", k, nb["versions"][k - 1]) if 0 < k <= len(nb["versions"]) else None


def status(a, config: dict, state: dict) -> int:
    found = version_of(a.ref, state)
    if found is None:
        return not_found(f"kernels/status/{a.ref}")
    kid, n, v = found
    v["calls"] += 1
    if v["calls"] <= config["queued"]:
        now = "QUEUED"
    elif v["calls"] <= config["queued"] + config["running"]:
        now = "RUNNING"
    else:
        v["outcome"] = v["outcome"] or config.get("final") or run_notebook(kid, n, v, config)
        now = v["outcome"]
    print(f'{a.ref} has status "KernelWorkerStatus.{now}"')
    return 0


def run_notebook(kid: str, n: int, v: dict, config: dict) -> str:
    """The pushed notebook's code cells under a simulated /kaggle; COMPLETE or ERROR."""
    root = STATE / "kernels" / kid / f"v{n}"
    inp, work = root / "kaggle" / "input", root / "kaggle" / "working"
    work.mkdir(parents=True)
    inp.mkdir()
    if config.get("canned"):  # a notebook's output made beforehand: COMPLETE, nothing run
        shutil.copytree(config["canned"], work, dirs_exist_ok=True)
        (root / "log.json").write_text("[]")
        return "COMPLETE"
    for ref, dv in v["mounts"].items():
        (inp / ref.split("/")[1]).symlink_to(STATE / "datasets" / ref / f"v{dv}")
    for slug in v["meta"]["competition_sources"]:
        comp = Path(config["competitions"]) / slug
        if comp.is_dir():  # a competition Kaggle does not know is simply not mounted
            (inp / slug).symlink_to(comp)
    nb = json.loads((root / "code" / v["meta"]["code_file"]).read_text())
    code = "\n".join("".join(c["source"]) for c in nb["cells"] if c["cell_type"] == "code")
    (root / "notebook.py").write_text(code)
    env = {"PATH": os.environ["PATH"], "HOME": str(root), "OMP_NUM_THREADS": "1",
           "PIPELINE_INPUT": str(inp), "PIPELINE_WORKING": str(work), "PIPELINE_TRACK": "none",
           "PYTHONDONTWRITEBYTECODE": "1"}  # /kaggle/input is read-only  # fmt: skip
    kill = config.get("kill") or {}
    runs = sum(1 for p in STATE.glob("kernels/*/*/v*/notebook.py"))  # this one included
    if kill and runs <= kill["runs"]:  # the run-time limit: the process is killed there
        env["PIPELINE_KILL_AT"] = kill["at"]
    blocked = () if v["meta"].get("enable_internet") else OFFLINE
    argv = [config["python"], "-c", GUARD.format(blocked=blocked), str(root / "notebook.py")]
    if "PIPELINE_KILL_AT" in env and not kill["at"]:  # killed before it wrote anything
        done = subprocess.CompletedProcess(argv, -9, "", "killed at the run-time limit\n")
    else:
        done = subprocess.run(argv, cwd=work, env=env, capture_output=True, text=True)
    if done.returncode < 0 and not kill.get("output", True):
        (root / "no-output").touch()
    log = [{"stream_name": s, "time": 0.0, "data": ln}
           for s, text in (("stdout", done.stdout), ("stderr", done.stderr))
           for ln in text.splitlines(keepends=True)]  # fmt: skip
    (root / "log.json").write_text(json.dumps(log))
    return "COMPLETE" if done.returncode == 0 else "ERROR"


def output(a, config: dict, state: dict) -> int:
    found = version_of(a.ref, state)
    if found is None:
        return not_found(f"kernels/output/{a.ref}")
    kid, n, v = found
    root = STATE / "kernels" / kid / f"v{n}"
    if not v["outcome"] or not (root / "log.json").is_file() or (root / "no-output").exists():
        print("ValueError: the kernel version has no output", file=sys.stderr)
        return 1
    dst = Path(a.path)
    work = root / "kaggle" / "working"
    for f in sorted(p for p in work.rglob("*") if p.is_file()):
        rel = f.relative_to(work).as_posix()
        if a.file_pattern is None or re.search(a.file_pattern, rel):
            (dst / rel).parent.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(f, dst / rel)
    dst.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(root / "log.json", dst / f"{kid.split('/')[1]}.log")
    return 0


def competition_files(a, config: dict, state: dict) -> int:
    if a.ref in config.get("unjoined", []):
        print(
            "403 Client Error: Forbidden: you must accept this competition's rules", file=sys.stderr
        )
        return 1
    comp = Path(config["competitions"]) / a.ref
    if not comp.is_dir():
        return not_found(f"competitions/data/list/{a.ref}")
    for f in sorted(p for p in comp.iterdir() if p.is_file()):
        print(f"{f.name}  {f.stat().st_size}B")
    return 0


def parser() -> argparse.ArgumentParser:
    """The flags of the real CLI that ``make package`` uses (kaggle/cli.py)."""
    p = argparse.ArgumentParser(prog="kaggle")
    groups = p.add_subparsers(dest="group", required=True)
    d = groups.add_parser("datasets").add_subparsers(dest="verb", required=True)
    d.add_parser("status").add_argument("ref")
    for verb in ("create", "version"):
        s = d.add_parser(verb)
        s.add_argument("-p", "--path", required=True)
        s.add_argument("-r", "--dir-mode", choices=["skip", "zip", "tar"], default="skip")
        s.add_argument("-m", "--message", required=verb == "version")
    c = groups.add_parser("competitions").add_subparsers(dest="verb", required=True)
    c.add_parser("files").add_argument("ref")
    k = groups.add_parser("kernels").add_subparsers(dest="verb", required=True)
    k.add_parser("push").add_argument("-p", "--path", required=True)
    k.add_parser("status").add_argument("ref")
    o = k.add_parser("output")
    o.add_argument("ref")
    o.add_argument("-p", "--path", required=True)
    o.add_argument("-o", "--force", action="store_true")
    o.add_argument("--file-pattern", default=None)
    return p


def main() -> int:
    a = parser().parse_args()
    config, state = load()
    with (STATE / "calls.log").open("a") as log:
        log.write(" ".join(sys.argv[1:]) + "\n")
    verbs = {("datasets", v): datasets for v in ("status", "create", "version")}
    verbs |= {("kernels", "push"): push, ("kernels", "status"): status}
    verbs[("competitions", "files")] = competition_files
    code = (verbs.get((a.group, a.verb)) or output)(a, config, state)
    save(state)
    return code


if __name__ == "__main__":
    sys.exit(main())
