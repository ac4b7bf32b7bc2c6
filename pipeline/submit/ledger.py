"""``make lb``: the public (and, once known, private) leaderboard scores into the ledger.

Reads ``kaggle competitions submissions <slug> -v`` page by page (following ``Next Page Token``
lines; kaggle 2.2.4 prints none for submissions, so there one page of the 200 latest is all),
finds each of our rows by the tag ``[pl-<8 hex>]`` that ``make submit`` wrote into the message,
and fills ``public_score``/``private_score`` of ``submissions/<comp>/ledger.csv`` next to the OOF
and nested scores. Plots nested CV against the public score (``lb.png``).
"""

from __future__ import annotations

import io
import re

import pandas as pd

from .. import artifacts
from ..competition import Competition
from ..errors import SubmissionError
from ..util.figures import pyplot
from ..workspace import Workspace
from .kaggle import has_kaggle_credentials, kaggle_exe, send

TAG_RE = re.compile(r"\[(pl-[0-9a-f]{8})\]")
TOKEN_RE = re.compile(r"^Next Page Token = (\S+)", re.M)
MAX_PAGES = 100


def lb_stage(comp: Competition, ws: Workspace) -> pd.DataFrame:
    """Fill the ledger's leaderboard scores from Kaggle; returns the updated ledger."""
    ledger = artifacts.read_ledger(ws.ledger)
    if not has_kaggle_credentials():
        raise SubmissionError(
            "no Kaggle credentials: make lb reads your submissions from Kaggle; save a token as "
            "~/.kaggle/kaggle.json (Kaggle → Settings → Create New Token), chmod 600"
        )
    rows = read_submissions(comp.slug)
    scores = {}
    for _, r in rows.iterrows():
        m = TAG_RE.search(str(r.get("description", "")))
        if m and m[1] not in scores:  # newest first: the first row of a tag is its latest
            scores[m[1]] = (_score(r.get("publicScore")), _score(r.get("privateScore")))
    hit = ledger["tag"].isin(list(scores))
    for i in ledger.index[hit]:
        ledger.loc[i, ["public_score", "private_score"]] = scores[ledger.at[i, "tag"]]
    artifacts.write_csv(ws.ledger, ledger)
    print(f"{ws.ledger}: {int(hit.sum())} of {len(ledger)} rows matched {len(rows)} Kaggle rows")
    shown = ledger[["time_utc", "name", "method", "oof_score", "nested_score", "public_score"]]
    print(shown.assign(private_score=ledger["private_score"]).to_string(index=False))
    _plot(ledger[hit], ws)
    return ledger


def read_submissions(slug: str) -> pd.DataFrame:
    """Every page of ``kaggle competitions submissions`` as one table (Kaggle's columns)."""
    exe, token, pages = kaggle_exe(), "", []
    for _ in range(MAX_PAGES):
        cmd = [exe, "competitions", "submissions", slug, "-v", "--page-size", "200"]
        out = send(cmd + (["--page-token", token] if token else []))
        text = "\n".join(ln for ln in out.splitlines() if not TOKEN_RE.match(ln))
        start = text.find("ref,")
        if start >= 0:
            pages.append(pd.read_csv(io.StringIO(text[start:]), dtype=str, keep_default_na=False))
        nxt = TOKEN_RE.search(out)
        if not nxt or nxt[1] == token:
            break
        token = nxt[1]
    return pd.concat(pages, ignore_index=True) if pages else pd.DataFrame(columns=["ref"])


def _score(value) -> str:
    text = str(value or "").strip()
    return "" if text.lower() in ("", "none", "nan") else text


def _plot(rows: pd.DataFrame, ws: Workspace) -> None:
    """``lb.png``: nested CV (x) against the public score (y), one point per submission."""
    rows = rows[(rows["public_score"] != "") & (rows["nested_score"] != "")]
    if rows.empty:
        return
    plt = pyplot()
    fig, ax = plt.subplots(figsize=(5, 4))
    x, y = rows["nested_score"].astype(float), rows["public_score"].astype(float)
    ax.scatter(x, y)
    for name, a, b in zip(rows["name"], x, y, strict=True):
        ax.annotate(name, (a, b), fontsize=7)
    ax.set(xlabel="nested CV", ylabel="public LB", title=f"{ws.comp}: CV against LB")
    artifacts.savefig(ws.submissions_dir / "lb.png", fig)
    plt.close(fig)
