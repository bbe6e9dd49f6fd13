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
    "PUBLISHED_PREFIX",
    "PUBLISHED_STATUSES",
    "PublishedResult",
    "report_published",
    "parse_published",
    "published_from_notebook",
    "render_published_table",
    "TIMING_NOTE",
    "comparable",
]

PREFIX = "CLAIM:"
PUBLISHED_PREFIX = "PUBLISHED:"
PUBLISHED_STATUSES = ("reproduced", "partly reproduced", "not reproduced")
START = "<!-- claims:start -->"
END = "<!-- claims:end -->"
PUBLISHED_START = "<!-- published:start -->"
PUBLISHED_END = "<!-- published:end -->"
# Appended to the measured text of a claim whose numbers are timings: they change from run to run and machine to
# machine, so `claims_table.py --check` compares those rows without their numbers (see `comparable`).
TIMING_NOTE = "(timings: vary by machine and load)"
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


def report_claim(claim_id: str, claim: str, measured: str, timing: bool = False) -> str:
    """Print and return the line ``CLAIM: <claim_id> | <claim> | <measured>`` for the README's table.

    Call it right after the ``assert`` that checks the claim, in the same cell, so the line exists only
    when the claim held.

    Args:
        claim_id: short id, unique within the notebook: lowercase letters, digits, ``.``, ``_``, ``-``
            (e.g. ``"gap-narrows"``).
        claim: the claim in words, as the text states it (one line, no ``|``).
        measured: what was measured, with numbers and spread (e.g. ``"gap 0.21 -> 0.05 (mean of 5 seeds)"``).
        timing: the numbers in ``measured`` are timings (:data:`TIMING_NOTE` is appended).

    Examples:
        >>> line = report_claim("gap-narrows", "dropout narrows the train/val gap", "0.21 -> 0.05 (5 seeds)")
        CLAIM: gap-narrows | dropout narrows the train/val gap | 0.21 -> 0.05 (5 seeds)
    """
    if not isinstance(claim_id, str) or not _ID.match(claim_id):
        raise ValueError(
            f"claim_id must be lowercase letters, digits, '.', '_' or '-' (e.g. 'gap-narrows'), got {claim_id!r}"
        )
    measured = _check_text(measured, "measured") + (f" {TIMING_NOTE}" if timing else "")
    line = Claim(claim_id, _check_text(claim, "claim"), measured).line
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


def _lines_from_notebook(nb, name: str, parse, what: str) -> list:
    """``parse(stdout, name)`` over every code cell of an EXECUTED notebook; ids must be unique."""
    if isinstance(nb, (str, Path)):
        import nbformat

        name = name or Path(nb).name
        nb = nbformat.read(str(nb), as_version=4)
    found = []
    for cell in nb.get("cells", []):
        if cell.get("cell_type") == "code":
            found += parse(_stdout(cell), name)
    ids = [entry.id for entry in found]
    duplicates = sorted({i for i in ids if ids.count(i) > 1})
    if duplicates:
        raise ValueError(f"{what} id {duplicates[0]!r} appears twice in {name or 'the notebook'}")
    return found


def claims_from_notebook(nb, name: str = "") -> list[Claim]:
    """The claims an EXECUTED notebook printed (its code cells' stdout), in cell order.

    ``nb`` is a notebook node / dict or a path to an ``.ipynb``. Ids must be unique within a notebook.
    """
    return _lines_from_notebook(nb, name, parse_claims, "claim")


def _cell(text: str) -> str:
    return text.replace("|", r"\|").replace("\n", " ")


def _link(notebook: str, titles: dict[str, str], folder: str) -> str:
    """A Markdown link to ``folder/notebook`` titled ``titles[notebook]`` (empty without a notebook)."""
    if not notebook:
        return ""
    return f"[{_cell(titles.get(notebook, notebook.removesuffix('.ipynb')))}]({folder}/{notebook})"


def render_table(
    claims: Iterable[Claim], titles: dict[str, str] | None = None, folder: str = "notebooks"
) -> str:
    """A Markdown table of ``claims``: notebook (linked, titled by ``titles[file name]``), claim, measured."""
    titles = titles or {}
    rows = ["| Notebook | Claim | Measured |", "|---|---|---|"]
    for c in claims:
        rows.append(f"| {_link(c.notebook, titles, folder)} | {_cell(c.claim)} | {_cell(c.measured)} |")
    return "\n".join(rows)


def replace_section(
    text: str, body: str, heading: str = "## Claims and evidence", start: str = START, end: str = END
) -> str:
    """``text`` with everything between the markers ``start`` and ``end`` replaced by ``body``.

    Without markers, a new section (``heading``, then the markers around ``body``) is appended. One
    marker without the other, or markers in the wrong order, raise ``ValueError``.
    """
    starts, ends = text.count(start), text.count(end)
    block = f"{start}\n{body.strip()}\n{end}"
    if starts == ends == 0:
        return text.rstrip("\n") + f"\n\n{heading}\n\n{block}\n"
    if starts != 1 or ends != 1 or text.index(start) > text.index(end):
        raise ValueError(f"expected one {start!r} followed by one {end!r}, found {starts} and {ends}")
    before, rest = text.split(start, 1)
    _, after = rest.split(end, 1)
    return before + block + after


def summary_line(claims: Sequence[Claim], command: str) -> str:
    """The line above the table: how many claims, from how many notebooks, and how to regenerate it."""
    notebooks = len({c.notebook for c in claims})
    return (
        f"_{len(claims)} claims from {notebooks} notebooks, each asserted in the notebook and printed by "
        f"`report_claim` after its assert passed. Generated by `{command}`; do not edit by hand._"
    )


# --- Published results: what a paper reported, and whether this notebook reproduced it ------------------


@dataclass(frozen=True)
class PublishedResult:
    """One published result the course sets out to show, and what the notebook measured at its scale."""

    id: str
    source: str  # the paper and where in it, e.g. "Srivastava et al. 2014, Fig. 10"
    result: str  # what the paper reports, in words
    status: str  # one of PUBLISHED_STATUSES
    measured: str  # the numbers measured here, with spread
    notebook: str = ""

    @property
    def line(self) -> str:
        return (
            f"{PUBLISHED_PREFIX} {self.id} | {self.source} | {self.result} | {self.status} | {self.measured}"
        )


def report_published(
    result_id: str, source: str, result: str, status: str, measured: str, timing: bool = False
) -> str:
    """Print and return ``PUBLISHED: <id> | <source> | <result> | <status> | <measured>``.

    Call it after the cell that measured the result (and asserted what holds), whatever the outcome:
    a result that did not reproduce at this scale is reported with ``status="not reproduced"``.
    ``scripts/claims_table.py`` collects these lines into the README's "Published results" table.

    Args:
        result_id: short id, unique within the notebook (lowercase letters, digits, ``.``, ``_``, ``-``).
        source: the paper and the figure, table or section (e.g. ``"Srivastava et al. 2014, Fig. 9a"``).
        result: what the paper reports, in one line.
        status: ``"reproduced"``, ``"partly reproduced"`` or ``"not reproduced"`` (at this scale).
        measured: what this notebook measured, with numbers and spread.
        timing: the numbers in ``measured`` (and so the status) are timings (:data:`TIMING_NOTE` is appended).

    Examples:
        >>> _ = report_published("fig10", "Srivastava et al. 2014, Fig. 10", "gain peaks at medium sizes",
        ...                      "partly reproduced", "gain 0.4 / 2.1 / 1.0 points at 100 / 1k / 3k")
        PUBLISHED: fig10 | Srivastava et al. 2014, Fig. 10 | gain peaks at medium sizes | partly reproduced | gain 0.4 / 2.1 / 1.0 points at 100 / 1k / 3k
    """
    if not isinstance(result_id, str) or not _ID.match(result_id):
        raise ValueError(
            f"result_id must be lowercase letters, digits, '.', '_' or '-' (e.g. 'fig10'), got {result_id!r}"
        )
    if status not in PUBLISHED_STATUSES:
        raise ValueError(f"status must be one of {PUBLISHED_STATUSES}, got {status!r}")
    entry = PublishedResult(
        result_id,
        _check_text(source, "source"),
        _check_text(result, "result"),
        status,
        _check_text(measured, "measured") + (f" {TIMING_NOTE}" if timing else ""),
    )
    print(entry.line, flush=True)
    return entry.line


def parse_published(text: str, notebook: str = "") -> list[PublishedResult]:
    """The published results in ``text``: every line starting with ``PUBLISHED:``, in order.

    Raises ``ValueError`` naming the line if one is malformed (not five fields, bad id, unknown status).
    """
    found = []
    for raw in text.splitlines():
        line = raw.strip()
        if not line.startswith(PUBLISHED_PREFIX):
            continue
        fields = [f.strip() for f in line[len(PUBLISHED_PREFIX) :].split("|")]
        if (
            len(fields) != 5
            or not _ID.match(fields[0])
            or fields[3] not in PUBLISHED_STATUSES
            or not all(fields)
        ):
            where = f" in {notebook}" if notebook else ""
            raise ValueError(
                f"malformed published-result line{where}: {line!r}; expected "
                f"'PUBLISHED: <id> | <source> | <result> | <status> | <measured>' with status in {PUBLISHED_STATUSES}"
            )
        found.append(PublishedResult(*fields, notebook=notebook))
    return found


def published_from_notebook(nb, name: str = "") -> list[PublishedResult]:
    """The published results an EXECUTED notebook printed (code cells' stdout), in cell order."""
    return _lines_from_notebook(nb, name, parse_published, "published-result")


def render_published_table(
    results: Iterable[PublishedResult], titles: dict[str, str] | None = None, folder: str = "notebooks"
) -> str:
    """A Markdown table: paper and figure, the published result, status at this scale, measured, notebook."""
    titles = titles or {}
    rows = ["| Paper | Published result | Here | Measured | Notebook |", "|---|---|---|---|---|"]
    for r in results:
        link = _link(r.notebook, titles, folder)
        rows.append(f"| {_cell(r.source)} | {_cell(r.result)} | {r.status} | {_cell(r.measured)} | {link} |")
    return "\n".join(rows)


_NUMBER = re.compile(r"\d+(?:\.\d+)?")
_STATUS = re.compile("|".join(sorted(map(re.escape, PUBLISHED_STATUSES), key=len, reverse=True)))


def comparable(text: str) -> str:
    """``text`` with the numbers and statuses of every line that holds :data:`TIMING_NOTE` masked.

    Two generated tables that differ only in timings compare equal.

    Examples:
        >>> a = f"| stochastic depth | 0.81 of a step | reproduced {TIMING_NOTE} |"
        >>> b = f"| stochastic depth | 0.86 of a step | partly reproduced {TIMING_NOTE} |"
        >>> comparable(a) == comparable(b), comparable("gap 0.21") == comparable("gap 0.25")
        (True, False)
    """
    lines = []
    for line in text.splitlines(keepends=True):
        if TIMING_NOTE in line:
            line = _STATUS.sub("<status>", _NUMBER.sub("#", line.replace(TIMING_NOTE, "")))
        lines.append(line)
    return "".join(lines)
