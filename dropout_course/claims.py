"""Claims and evidence: notebooks print each asserted claim as one machine-readable line.

A notebook cell that ``assert``s a claim ends with ``report_claim(...)``, which prints

    CLAIM: <id> | <claim> | <measured>

(only reached when the assert above it passed). ``scripts/claims_table.py`` executes the notebooks,
collects these lines from their outputs with :func:`claims_from_notebook` and rewrites the README's
"Claims and evidence" table between ``<!-- claims:start -->`` and ``<!-- claims:end -->`` with
:func:`render_table` and :func:`replace_section`. The convention is described in ``docs/CLAIMS.md``.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

__all__ = [
    "PREFIX",
    "START",
    "END",
    "Claim",
    "report_claim",
    "parse_claims",
    "claims_from_notebook",
    "render_table",
    "replace_section",
    "summary_line",
]

PREFIX = "CLAIM:"
START = "<!-- claims:start -->"
END = "<!-- claims:end -->"
_ID = re.compile(r"^[a-z0-9][a-z0-9_.-]*$")
_LINE = re.compile(r"^CLAIM:\s*(?P<id>[^|]*?)\s*\|\s*(?P<claim>[^|]*?)\s*\|\s*(?P<measured>[^|]*?)\s*$")


@dataclass(frozen=True)
class Claim:
    """One asserted claim: its id (unique within a notebook), the claim in words, what was measured."""

    id: str
    claim: str
    measured: str
    notebook: str = ""  # file name of the notebook it came from (filled in by claims_from_notebook)

    @property
    def line(self) -> str:
        return f"{PREFIX} {self.id} | {self.claim} | {self.measured}"


def _check_text(value, name: str) -> str:
    if not isinstance(value, str):
        raise TypeError(f"{name} must be a str, got {type(value).__name__}: {value!r}")
    text = value.strip()
    if not text:
        raise ValueError(f"{name} must not be empty, got {value!r}")
    if "|" in text or "\n" in text or "\r" in text:
        raise ValueError(f"{name} must be one line without '|' (the field separator), got {value!r}")
    return text


def report_claim(claim_id: str, claim: str, measured: str) -> str:
    """Print and return the line ``CLAIM: <claim_id> | <claim> | <measured>`` for the README's table.

    Call it right after the ``assert`` that checks the claim, in the same cell, so the line exists only
    when the claim held.

    Args:
        claim_id: short id, unique within the notebook: lowercase letters, digits, ``.``, ``_``, ``-``
            (e.g. ``"gap-narrows"``).
        claim: the claim in words, as the text states it (one line, no ``|``).
        measured: what was measured, with numbers and spread (e.g. ``"gap 0.21 -> 0.05 (mean of 5 seeds)"``).

    Examples:
        >>> line = report_claim("gap-narrows", "dropout narrows the train/val gap", "0.21 -> 0.05 (5 seeds)")
        CLAIM: gap-narrows | dropout narrows the train/val gap | 0.21 -> 0.05 (5 seeds)
    """
    if not isinstance(claim_id, str) or not _ID.match(claim_id):
        raise ValueError(
            f"claim_id must be lowercase letters, digits, '.', '_' or '-' (e.g. 'gap-narrows'), got {claim_id!r}"
        )
    line = Claim(claim_id, _check_text(claim, "claim"), _check_text(measured, "measured")).line
    print(line, flush=True)
    return line


def parse_claims(text: str, notebook: str = "") -> list[Claim]:
    """The claims in ``text`` (any output): every line starting with ``CLAIM:``, in order.

    Raises ``ValueError`` naming the line if a ``CLAIM:`` line is malformed (not three ``|``-separated
    fields, or a bad id), so a typo never drops a claim silently.
    """
    claims = []
    for raw in text.splitlines():
        line = raw.strip()
        if not line.startswith(PREFIX):
            continue
        match = _LINE.match(line)
        if not match or not _ID.match(match["id"]) or not match["claim"] or not match["measured"]:
            where = f" in {notebook}" if notebook else ""
            raise ValueError(
                f"malformed claim line{where}: {line!r}; expected 'CLAIM: <id> | <claim> | <measured>'"
            )
        claims.append(Claim(match["id"], match["claim"], match["measured"], notebook))
    return claims


def _stdout(cell) -> str:
    parts = []
    for output in cell.get("outputs", []):
        if output.get("output_type") == "stream" and output.get("name") == "stdout":
            text = output.get("text", "")
            parts.append("".join(text) if isinstance(text, list) else text)
    return "".join(parts)


def claims_from_notebook(nb, name: str = "") -> list[Claim]:
    """The claims an EXECUTED notebook printed (its code cells' stdout), in cell order.

    ``nb`` is a notebook node / dict or a path to an ``.ipynb``. Ids must be unique within a notebook.
    """
    if isinstance(nb, (str, Path)):
        import nbformat

        name = name or Path(nb).name
        nb = nbformat.read(str(nb), as_version=4)
    claims = []
    for cell in nb.get("cells", []):
        if cell.get("cell_type") == "code":
            claims += parse_claims(_stdout(cell), name)
    seen: set[str] = set()
    for claim in claims:
        if claim.id in seen:
            raise ValueError(f"claim id {claim.id!r} appears twice in {name or 'the notebook'}")
        seen.add(claim.id)
    return claims


def _cell(text: str) -> str:
    return text.replace("|", r"\|").replace("\n", " ")


def render_table(
    claims: Iterable[Claim], titles: dict[str, str] | None = None, folder: str = "notebooks"
) -> str:
    """A Markdown table of ``claims``: notebook (linked, titled by ``titles[file name]``), claim, measured."""
    titles = titles or {}
    rows = ["| Notebook | Claim | Measured |", "|---|---|---|"]
    for c in claims:
        title = titles.get(c.notebook, c.notebook.removesuffix(".ipynb"))
        link = f"[{_cell(title)}]({folder}/{c.notebook})" if c.notebook else ""
        rows.append(f"| {link} | {_cell(c.claim)} | {_cell(c.measured)} |")
    return "\n".join(rows)


def replace_section(text: str, body: str, heading: str = "## Claims and evidence") -> str:
    """``text`` with everything between the claims markers replaced by ``body``.

    Without markers, a new section (``heading``, then the markers around ``body``) is appended. One
    marker without the other, or markers in the wrong order, raise ``ValueError``.
    """
    starts, ends = text.count(START), text.count(END)
    block = f"{START}\n{body.strip()}\n{END}"
    if starts == ends == 0:
        return text.rstrip("\n") + f"\n\n{heading}\n\n{block}\n"
    if starts != 1 or ends != 1 or text.index(START) > text.index(END):
        raise ValueError(f"expected one {START!r} followed by one {END!r}, found {starts} and {ends}")
    before, rest = text.split(START, 1)
    _, after = rest.split(END, 1)
    return before + block + after


def summary_line(claims: Sequence[Claim], command: str) -> str:
    """The line above the table: how many claims, from how many notebooks, and how to regenerate it."""
    notebooks = len({c.notebook for c in claims})
    return (
        f"_{len(claims)} claims from {notebooks} notebooks, each asserted in the notebook and printed by "
        f"`report_claim` after its assert passed. Generated by `{command}`; do not edit by hand._"
    )
