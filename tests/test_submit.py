"""Tests for pipeline.submit and pipeline.competition.submission: validation messages, credentials, the kaggle CLI call, the stage."""

from __future__ import annotations

import hashlib
import json
import os
import re
import shutil
import sys
from pathlib import Path

import pandas as pd
import pytest

from pipeline import artifacts
from pipeline.competition import Competition
from pipeline.competition.submission import validate_submission
from pipeline.errors import ArtifactError, SubmissionError
from pipeline.submit import kaggle
from pipeline.submit.kaggle import has_kaggle_credentials, kaggle_command, send
from pipeline.submit.stage import submit_stage
from pipeline.workspace import Workspace

CLASSES = ["bird", "cat", "dog"]
IDS = ["001", "002", "003", "004"]
VALID = "id,label\n001,cat\n002,dog\n003,bird\n004,cat\n"
HEX_KEY = "0123456789abcdef0123456789abcdef"
NO_CREDS_HELP = """Authentication required to call the Kaggle API.

First, you will need a Kaggle account. You can sign up at
  https://www.kaggle.com/account/login

If you'd rather not use OAuth, generate an API token at
  https://www.kaggle.com/settings/api  (click "Generate New Token" under "API")
    export KAGGLE_API_TOKEN=xxxxxxxxxxxxxx  # token copied from the settings UI
"""


def write(path: Path, text: str | bytes) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(text if isinstance(text, bytes) else text.encode("utf-8"))
    return path


@pytest.fixture
def sample(tmp_path: Path) -> Path:
    rows = "".join(f"{i},cat\n" for i in IDS)
    return write(tmp_path / "comp" / "sample_submission.csv", "id,label\n" + rows)


def check(sub: Path, sample: Path) -> pd.DataFrame:
    return validate_submission(sub, sample, CLASSES, "id", "label")


def fake_exe(path: Path, body: str) -> Path:
    """A shell script standing in for the kaggle CLI."""
    write(path, "#!/bin/sh\n" + body + "\n")
    path.chmod(0o755)
    return path


def base_env() -> dict[str, str]:
    return {"PATH": os.environ.get("PATH", "/usr/bin:/bin")}


# ---------------------------------------------------------------- validate_submission


def test_valid_submission_returns_frame(tmp_path: Path, sample: Path) -> None:
    df = check(write(tmp_path / "sub.csv", VALID), sample)
    assert list(df.columns) == ["id", "label"]
    assert df["id"].tolist() == IDS  # leading zeros kept: every column is text
    assert df["label"].tolist() == ["cat", "dog", "bird", "cat"]


def test_valid_with_bom_spaces_and_crlf(tmp_path: Path, sample: Path) -> None:
    text = "\ufeffid , label\r\n 001 , cat\r\n002,dog \r\n003, bird\r\n004,cat\r\n"
    df = check(write(tmp_path / "sub.csv", text), sample)
    assert df["id"].tolist() == IDS
    assert df["label"].tolist() == ["cat", "dog", "bird", "cat"]


def test_sample_with_bom_matches_plain_submission(tmp_path: Path) -> None:
    sample = write(tmp_path / "s.csv", "\ufeffid,label\n001,cat\n002,cat\n")
    sub = write(tmp_path / "sub.csv", "id,label\n001,dog\n002,bird\n")
    assert len(check(sub, sample)) == 2


ERROR_CASES = [
    ("missing", None, r"sub\.csv not found; re-run the ensemble stage"),
    ("empty-0-bytes", "", r"sub\.csv is empty \(no header, no rows\)"),
    ("bom-only", "\ufeff\n", r"is empty"),
    (
        "header-only",
        "id,label\n",
        r"has a header but no rows; sample_submission\.csv has 4 rows",
    ),
    (
        "missing-column",
        "id\n001\n002\n003\n004\n",
        r"columns differ .*missing \[label\].*expected \[id, label\], found \[id\]",
    ),
    (
        "extra-column",
        "id,label,prob\n001,cat,1\n002,cat,1\n003,cat,1\n004,cat,1\n",
        r"extra \[prob\].*expected \[id, label\], found \[id, label, prob\]",
    ),
    (
        "wrong-column-order",
        "label,id\ncat,001\ncat,002\ncat,003\ncat,004\n",
        r"same names, wrong order.*expected \[id, label\], found \[label, id\]; "
        r"write the header exactly as: id,label",
    ),
    (
        "renamed-column",
        "id,category\n001,cat\n002,cat\n003,cat\n004,cat\n",
        r"missing \[label\], extra \[category\]",
    ),
    (
        "too-few-rows",
        "id,label\n001,cat\n002,cat\n003,cat\n",
        r"has 3 rows; sample_submission\.csv has 4 rows",
    ),
    (
        "too-many-rows",
        VALID + "005,cat\n",
        r"has 5 rows; sample_submission\.csv has 4 rows; write exactly one row per id",
    ),
    (
        "duplicate-id",
        "id,label\n001,cat\n002,cat\n002,dog\n004,cat\n",
        r"row 4: duplicate id '002' \(first at row 3\); each id must appear exactly once",
    ),
    (
        "empty-id",
        "id,label\n001,cat\n,cat\n003,cat\n004,cat\n",
        r"row 3: empty id; every row needs",
    ),
    (
        "empty-label",
        "id,label\n001,cat\n002,\n003,cat\n004,cat\n",
        r"row 3: empty 'label' for id '002' \(1 such rows\); every row needs a predicted class",
    ),
    (
        "short-row-is-empty-label",
        "id,label\n001,cat\n002,cat\n003\n004,cat\n",
        r"row 4: empty 'label' for id '003'",
    ),
    (
        "unknown-id",
        "id,label\n001,cat\n002,cat\n003,cat\n4,cat\n",
        r"row 5: id '4' is not in sample_submission\.csv; use the ids of sample_submission\.csv unchanged",
    ),
    (
        "id-order",
        "id,label\n002,cat\n001,cat\n003,cat\n004,cat\n",
        r"row 2: ids are in a different order from sample_submission\.csv: expected '001', "
        r"found '002'; write the rows in sample_submission\.csv order",
    ),
    (
        "class-index-instead-of-name",
        "id,label\n001,1\n002,2\n003,0\n004,1\n",
        r"row 2: label '1' is not a train class \(4 such rows; valid: 'bird', 'cat', 'dog' - "
        r"3 in all\); it looks like a class index: map index k to classes\[k\]",
    ),
    (
        "label-typo",
        "id,label\n001,cat\n002,Dog\n003,cat\n004,cat\n",
        r"row 3: label 'Dog' is not a train class .*write one of the train labels exactly",
    ),
    (
        "unreadable-csv",
        "id,label\n001,cat\n002,cat,extra,fields\n003,cat\n004,cat\n",
        r"is not a readable CSV .*re-run the ensemble stage",
    ),
]


@pytest.mark.parametrize(
    ("content", "pattern"), [c[1:] for c in ERROR_CASES], ids=[c[0] for c in ERROR_CASES]
)
def test_validation_errors(tmp_path: Path, sample: Path, content: str | None, pattern: str) -> None:
    sub = tmp_path / "sub.csv"
    if content is not None:
        write(sub, content)
    with pytest.raises(SubmissionError, match=pattern) as err:
        check(sub, sample)
    message = str(err.value)
    assert "\n" not in message
    assert message.startswith(str(sub))


def test_many_classes_are_abbreviated(tmp_path: Path, sample: Path) -> None:
    classes = [f"c{i:02d}" for i in range(20)]
    sub = write(tmp_path / "sub.csv", VALID)
    with pytest.raises(
        SubmissionError, match=r"valid: 'c00', 'c01', 'c02', 'c03', 'c04', \.\.\. - 20"
    ):
        validate_submission(sub, sample, classes, "id", "label")


# ---------------------------------------------------------------- credentials


def kaggle_json(folder: Path, data: object | None = None) -> Path:
    data = {"username": "u", "key": HEX_KEY} if data is None else data
    return write(folder / "kaggle.json", json.dumps(data))


CRED_CASES = [
    ("nothing", {}, None, False),
    ("env-user-and-key", {"KAGGLE_USERNAME": "u", "KAGGLE_KEY": "k"}, None, True),
    ("env-user-only", {"KAGGLE_USERNAME": "u"}, None, False),
    ("env-key-only", {"KAGGLE_KEY": "k"}, None, False),
    ("env-api-token", {"KAGGLE_API_TOKEN": "KGAT_abc"}, None, True),
    ("home-kaggle-json", {}, lambda h: kaggle_json(h / ".kaggle"), True),
    ("xdg-default-kaggle-json", {}, lambda h: kaggle_json(h / ".config" / "kaggle"), True),
    ("access-token-file", {}, lambda h: write(h / ".kaggle" / "access_token", "tok\n"), True),
    ("access-token-txt", {}, lambda h: write(h / ".kaggle" / "access_token.txt", "tok"), True),
    ("empty-access-token", {}, lambda h: write(h / ".kaggle" / "access_token", "\n"), False),
    ("oauth-login", {}, lambda h: oauth_creds(h, {"refresh_token": "r"}), True),
    ("kaggle-json-not-json", {}, lambda h: write(h / ".kaggle" / "kaggle.json", "{oops"), False),
    ("kaggle-json-no-key", {}, lambda h: kaggle_json(h / ".kaggle", {"username": "u"}), False),
    (
        "json-user-env-key",
        {"KAGGLE_KEY": "k"},
        lambda h: kaggle_json(h / ".kaggle", {"username": "u"}),
        True,
    ),
    (
        "config-ignored-when-dot-kaggle-exists",  # kaggle reads only one config folder
        {},
        lambda h: ((h / ".kaggle").mkdir(), kaggle_json(h / ".config" / "kaggle")),
        False,
    ),
]


def oauth_creds(home: Path, data: dict) -> Path:
    return write(home / ".kaggle" / "credentials.json", json.dumps(data))


@pytest.mark.parametrize(
    ("env", "setup", "expected"), [c[1:] for c in CRED_CASES], ids=[c[0] for c in CRED_CASES]
)
def test_has_kaggle_credentials(tmp_path: Path, env: dict, setup, expected: bool) -> None:
    home = tmp_path / "home"
    home.mkdir()
    if setup is not None:
        setup(home)
    assert has_kaggle_credentials(env, home=home) is expected


def test_credentials_in_config_dir_and_xdg(tmp_path: Path) -> None:
    home = tmp_path / "home"
    home.mkdir()
    cfg = tmp_path / "cfg"
    kaggle_json(cfg)
    assert has_kaggle_credentials({"KAGGLE_CONFIG_DIR": str(cfg)}, home=home)
    assert not has_kaggle_credentials({"KAGGLE_CONFIG_DIR": str(tmp_path / "none")}, home=home)
    kaggle_json(tmp_path / "xdg" / "kaggle")
    assert has_kaggle_credentials({"XDG_CONFIG_HOME": str(tmp_path / "xdg")}, home=home)


def test_credentials_default_to_process_env_and_home(tmp_path: Path, monkeypatch) -> None:
    for key in [k for k in os.environ if k.startswith("KAGGLE_") or k == "XDG_CONFIG_HOME"]:
        monkeypatch.delenv(key)
    monkeypatch.setenv("HOME", str(tmp_path))
    assert not has_kaggle_credentials()
    kaggle_json(tmp_path / ".kaggle")
    assert has_kaggle_credentials()


# ---------------------------------------------------------------- kaggle_command and send


def test_kaggle_command_shape(tmp_path: Path) -> None:
    cmd = kaggle_command("my-comp", tmp_path / "s.csv", "run1 mean OOF=0.9000")
    assert Path(cmd[0]).name.startswith("kaggle")
    assert cmd[1:] == ["competitions", "submit", "-c", "my-comp", "-f", str(tmp_path / "s.csv"),
                       "-m", "run1 mean OOF=0.9000"]  # fmt: skip


def test_kaggle_command_prefers_cli_beside_python(tmp_path: Path, monkeypatch) -> None:
    exe = fake_exe(tmp_path / "bin" / "kaggle", "exit 0")
    monkeypatch.setattr(sys, "executable", str(tmp_path / "bin" / "python"))
    assert kaggle_command("c", Path("f.csv"), "m")[0] == str(exe)


def test_kaggle_command_without_cli(tmp_path: Path, monkeypatch) -> None:
    monkeypatch.setattr(sys, "executable", str(tmp_path / "python"))
    monkeypatch.setattr(shutil, "which", lambda name: None)
    with pytest.raises(SubmissionError, match=r"kaggle CLI not found .*pip install kaggle six"):
        kaggle_command("c", Path("f.csv"), "m")


def fake_cmd(tmp_path: Path, body: str) -> list[str]:
    exe = fake_exe(tmp_path / "fake_kaggle", body)
    return [str(exe), "competitions", "submit", "-c", "c", "-f", "/data/sub.csv", "-m", "m"]


SEND_CASES = [
    (
        "401",
        'echo "401 Client Error: Unauthorized for url: https://api.kaggle.com/v1/x"; exit 1',
        r"failed: 401 Client Error: Unauthorized .*; check ~/\.kaggle/kaggle\.json "
        r"\(Kaggle → Settings → Create New Token\) and that you accepted the competition rules$",
    ),
    (
        "403-rules",
        'echo "403 Client Error: Forbidden for url: https://api.kaggle.com/v1/x" >&2; exit 1',
        r"failed: 403 Client Error: Forbidden.*accepted the competition rules$",
    ),
    (
        "no-credentials-help",
        f"cat <<'EOF'\n{NO_CREDS_HELP}{NO_CREDS_HELP}EOF\nexit 1",
        r"failed: Authentication required to call the Kaggle API; check ~/\.kaggle/kaggle\.json",
    ),
    (
        "no-network",
        "echo \"HTTPSConnectionPool(host='api.kaggle.com', port=443): Max retries exceeded "
        "(Caused by NameResolutionError: Failed to resolve 'api.kaggle.com')\" >&2; exit 1",
        r"failed: HTTPSConnectionPool.*Max retries exceeded.*; no network connection to kaggle\.com;"
        r" submit from a machine with internet \(the file is at /data/sub\.csv\)$",
    ),
    (
        "traceback-connection-error",
        'printf \'Traceback (most recent call last):\\n  File "x.py", line 1, in '
        "_authenticate_with_access_token\\nrequests.exceptions.ConnectionError: "
        "Max retries exceeded with url: /v1/x\\n' >&2; exit 1",
        r"failed: requests\.exceptions\.ConnectionError: Max retries exceeded .*no network",
    ),
    (
        "404-soft-failure-exit-0",
        'echo "Could not find competition - please verify that you entered the correct ID"',
        r"failed: Could not find competition.*check the competition slug",
    ),
    ("silent-failure", "exit 3", r"failed: exit status 3 and no output; run it by hand"),
    (
        "other-error",
        'echo "something odd"; exit 2',
        r"failed: something odd; run it by hand to see the full output: .*fake_kaggle",
    ),
]


@pytest.mark.parametrize(
    ("body", "pattern"), [c[1:] for c in SEND_CASES], ids=[c[0] for c in SEND_CASES]
)
def test_send_error_mapping(tmp_path: Path, body: str, pattern: str) -> None:
    with pytest.raises(SubmissionError, match=pattern) as err:
        send(fake_cmd(tmp_path, body), env=base_env())
    assert "\n" not in str(err.value)
    assert str(err.value).startswith("kaggle competitions submit failed: ")


def test_send_never_shows_secrets(tmp_path: Path) -> None:
    secret = "NotHexButVerySecret-42"
    env = {**base_env(), "KAGGLE_KEY": secret, "KAGGLE_API_TOKEN": "KGAT_tok3n"}
    body = (
        f'echo "401 Unauthorized: key=$KAGGLE_KEY token=$KAGGLE_API_TOKEN other={HEX_KEY}"; exit 1'
    )
    with pytest.raises(SubmissionError, match="Unauthorized") as err:
        send(fake_cmd(tmp_path, body), env=env)
    message = str(err.value)
    for value in (secret, "KGAT_tok3n", HEX_KEY):
        assert value not in message
    assert "key=*** token=*** other=***" in message


def test_send_success_returns_output(tmp_path: Path) -> None:
    cmd = fake_cmd(
        tmp_path, 'echo "Successfully submitted to c"; echo "4 submissions remaining today."'
    )
    assert (
        send(cmd, env=base_env()) == "Successfully submitted to c\n4 submissions remaining today."
    )


def test_send_missing_executable(tmp_path: Path) -> None:
    cmd = [str(tmp_path / "nope"), "competitions", "submit", "-c", "c", "-f", "f.csv", "-m", "m"]
    with pytest.raises(SubmissionError, match=r"cannot run .*nope.*pip install kaggle six"):
        send(cmd, env=base_env())


def test_send_timeout(tmp_path: Path, monkeypatch) -> None:
    def slow(*args, **kwargs):
        raise kaggle.subprocess.TimeoutExpired(args[0], 300)

    monkeypatch.setattr(kaggle.subprocess, "run", slow)
    with pytest.raises(SubmissionError, match=r"timed out after 300 s; no network connection"):
        send(fake_cmd(tmp_path, "exit 0"), env=base_env())


def test_real_kaggle_cli_without_credentials(tmp_path: Path) -> None:
    try:
        cmd = kaggle_command("x", write(tmp_path / "x.csv", VALID), "m")
    except SubmissionError:
        pytest.skip("kaggle CLI not installed")
    env = {
        k: v
        for k, v in os.environ.items()
        if not k.startswith("KAGGLE_") and k != "XDG_CONFIG_HOME"
    }
    env["HOME"] = str(tmp_path / "home")
    (tmp_path / "home").mkdir()
    assert not has_kaggle_credentials(env)
    with pytest.raises(SubmissionError, match=r"Authentication required.*kaggle\.json") as err:
        send(cmd, env=env)
    assert "\n" not in str(err.value)


# ---------------------------------------------------------------- submit_stage


@pytest.fixture
def comp(tmp_path: Path, sample: Path) -> Competition:
    train = pd.DataFrame({"id": ["a", "b", "c"], "label": CLASSES, "path": ["a", "b", "c"]})
    test = pd.DataFrame({"id": IDS, "path": IDS})
    return Competition(
        root=sample.parent, name="demo", slug="demo-slug", id_col="id", target_col="label",
        sample_path=sample, train_csv=sample.parent / "train.csv", train=train, test=test,
        classes=CLASSES,
    )  # fmt: skip


@pytest.fixture
def ws(tmp_path: Path) -> Workspace:
    return Workspace.under(tmp_path, "demo")


@pytest.fixture
def sub_dir(ws: Workspace, tmp_path: Path) -> Path:
    folder = ws.submission_dir("ens1")
    assert folder == tmp_path / "submissions" / "demo" / "ens1"
    write(folder / "submission.csv", VALID)
    info = {"name": "ens1", "method": "mean", "oof_accuracy": 0.91234, "runs": ["r1"]}
    write(folder / "ensemble.json", json.dumps(info))
    return folder


def no_credentials(monkeypatch, home: Path) -> None:
    for key in [k for k in os.environ if k.startswith("KAGGLE_") or k == "XDG_CONFIG_HOME"]:
        monkeypatch.delenv(key)
    home.mkdir(exist_ok=True)
    monkeypatch.setenv("HOME", str(home))


def read_ledger(ws: Workspace) -> pd.DataFrame:
    assert ws.ledger == ws.output / "submissions" / "demo" / "ledger.csv"
    return pd.read_csv(ws.ledger, dtype=str, keep_default_na=False)


def test_submit_message_carries_the_nested_score(comp, ws, sub_dir, capsys) -> None:
    info = {"name": "ens1", "method": "stack", "oof_accuracy": 0.99, "nested_accuracy": 0.98543}
    write(sub_dir / "ensemble.json", json.dumps(info))
    submit_stage(comp, ws, "ens1", dry_run=True)
    out = capsys.readouterr().out
    assert "OOF accuracy 0.9900, nested CV 0.9854" in out
    assert re.search(r"-m 'ens1 stack OOF=0.9900 nested=0.9854 \[pl-[0-9a-f]{8}\]'", out)


def test_submit_stage_dry_run(comp: Competition, ws: Workspace, sub_dir: Path, capsys) -> None:
    assert submit_stage(comp, ws, "ens1", dry_run=True) == 0
    out = capsys.readouterr().out
    assert "valid - 4 rows, 3 of 3 classes used, OOF accuracy 0.9123" in out
    assert "DRY_RUN: would run: " in out
    assert f"competitions submit -c demo-slug -f {sub_dir / 'submission.csv'}" in out
    assert re.search(r"-m 'ens1 mean OOF=0\.9123 \[pl-[0-9a-f]{8}\]'", out)
    ledger = read_ledger(ws)
    assert list(ledger.columns) == artifacts.LEDGER_COLUMNS
    row = ledger.iloc[0]
    assert (row["name"], row["method"], row["status"]) == ("ens1", "mean", "dry-run")
    assert row["message"] == f"ens1 mean OOF=0.9123 [{row['tag']}]"
    assert row["sha256"] == hashlib.sha256((sub_dir / "submission.csv").read_bytes()).hexdigest()
    submit_stage(comp, ws, "ens1", dry_run=True)
    assert len(read_ledger(ws)) == 2  # appended, not overwritten


def test_submit_stage_dry_run_needs_no_credentials(
    comp: Competition, ws: Workspace, sub_dir: Path, tmp_path: Path, monkeypatch
) -> None:
    no_credentials(monkeypatch, tmp_path / "home")
    assert submit_stage(comp, ws, "ens1", dry_run=True) == 0


def test_submit_stage_without_credentials(
    comp: Competition, ws: Workspace, sub_dir: Path, tmp_path: Path, monkeypatch
) -> None:
    no_credentials(monkeypatch, tmp_path / "home")
    with pytest.raises(SubmissionError, match=r"^no Kaggle credentials: .*kaggle\.json.*DRY_RUN=1"):
        submit_stage(comp, ws, "ens1", dry_run=False)
    assert not ws.ledger.exists()


def test_submit_stage_sends_and_logs(
    comp: Competition, ws: Workspace, sub_dir: Path, tmp_path: Path, monkeypatch, capsys
) -> None:
    fake_exe(tmp_path / "bin" / "kaggle", 'echo "Successfully submitted to $4 with message: $8"')
    monkeypatch.setattr(sys, "executable", str(tmp_path / "bin" / "python"))
    monkeypatch.setenv("KAGGLE_USERNAME", "u")
    monkeypatch.setenv("KAGGLE_KEY", HEX_KEY)
    assert submit_stage(comp, ws, "ens1", dry_run=False) == 0
    out = capsys.readouterr().out
    assert "Successfully submitted to demo-slug with message: ens1 mean OOF=0.9123" in out
    assert read_ledger(ws)["status"].tolist() == ["submitted"]


def test_submit_stage_send_failure_is_not_logged(
    comp: Competition, ws: Workspace, sub_dir: Path, tmp_path: Path, monkeypatch
) -> None:
    fake_exe(tmp_path / "bin" / "kaggle", 'echo "403 Client Error: Forbidden"; exit 1')
    monkeypatch.setattr(sys, "executable", str(tmp_path / "bin" / "python"))
    monkeypatch.setenv("KAGGLE_API_TOKEN", "KGAT_x")
    with pytest.raises(SubmissionError, match="competition rules"):
        submit_stage(comp, ws, "ens1", dry_run=False)
    assert not ws.ledger.exists()


def test_submit_stage_missing_ensemble_json(
    comp: Competition, ws: Workspace, sub_dir: Path
) -> None:
    (sub_dir / "ensemble.json").unlink()
    with pytest.raises(
        ArtifactError, match=rf"ensemble\.json not found; run: make ensemble COMP={comp.root}"
    ):
        submit_stage(comp, ws, "ens1", dry_run=True)


def test_submit_stage_bad_ensemble_json(comp: Competition, ws: Workspace, sub_dir: Path) -> None:
    write(sub_dir / "ensemble.json", json.dumps({"name": "e", "method": "mean"}))
    with pytest.raises(ArtifactError, match=r"needs keys name, method and a numeric oof_accuracy"):
        submit_stage(comp, ws, "ens1", dry_run=True)


def test_submit_stage_rejects_invalid_submission(
    comp: Competition, ws: Workspace, sub_dir: Path
) -> None:
    write(sub_dir / "submission.csv", "id,label\n001,0\n002,1\n003,2\n004,0\n")
    with pytest.raises(SubmissionError, match="class index"):
        submit_stage(comp, ws, "ens1", dry_run=True)
    assert not ws.ledger.exists()


def test_submit_stage_refuses_foreign_ledger(
    comp: Competition, ws: Workspace, sub_dir: Path
) -> None:
    write(ws.ledger, "a,b\n1,2\n")
    with pytest.raises(ArtifactError, match=r"ledger\.csv is not a ledger CSV"):
        submit_stage(comp, ws, "ens1", dry_run=True)
