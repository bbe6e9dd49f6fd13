"""``dropout-course release``: learner copies of the exercise notebooks, generated from the sources.

``exercises/source/<assignment>/<assignment>.ipynb`` (with solutions and hidden tests, nbgrader format)
becomes ``exercises/release/<assignment>/<assignment>.ipynb``:

* each ``### BEGIN SOLUTION`` ... ``### END SOLUTION`` region becomes ``# YOUR CODE HERE`` +
  ``raise NotImplementedError()`` at the marker's indentation (a solution cell without markers is
  replaced whole), as nbgrader's ``ClearSolutions`` does;
* ``### BEGIN HIDDEN TESTS`` ... ``### END HIDDEN TESTS`` regions are removed;
* outputs and execution counts are cleared.

Safety: every generated notebook records a fingerprint of its own content in its metadata. A release
file is only (re)written when it is missing, or when it is still exactly what an earlier release wrote
(an unmodified, out-of-date copy). A file that a learner edited or ran, or one not written by this
command, is never overwritten unless ``force=True`` (``--force``), and files without a source are never
deleted. Writing the same sources twice changes nothing (idempotent).
"""

from __future__ import annotations

import copy
import hashlib
import json
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import nbformat

BEGIN_SOLUTION, END_SOLUTION = "### BEGIN SOLUTION", "### END SOLUTION"
BEGIN_HIDDEN, END_HIDDEN = "### BEGIN HIDDEN TESTS", "### END HIDDEN TESTS"
CODE_STUB = ("# YOUR CODE HERE", "raise NotImplementedError()")
MARKDOWN_STUB = "YOUR ANSWER HERE"
META_KEY = "dropout_course"

__all__ = ["release_notebook", "release", "ReleaseReport", "find_sources", "fingerprint", "is_pristine"]


def repo_root() -> Path:
    """The repository root (the folder holding ``exercises/``), found from this file."""
    return Path(__file__).resolve().parents[2]


def find_sources(source_dir: Path) -> list[Path]:
    """``source_dir/<assignment>/*.ipynb``, sorted (checkpoints skipped)."""
    return sorted(p for p in Path(source_dir).glob("*/*.ipynb") if ".ipynb_checkpoints" not in p.parts)


def _nbgrader(cell) -> dict:
    return cell.get("metadata", {}).get("nbgrader", {}) or {}


def _replace_regions(
    source: str, begin: str, end: str, stub: tuple[str, ...] | None, where: str
) -> tuple[str, int]:
    """Replace every ``begin``..``end`` region (marker lines included) by ``stub`` lines at its indentation."""
    lines = source.split("\n")
    out: list[str] = []
    inside, count, indent = False, 0, ""
    for number, line in enumerate(lines, 1):
        stripped = line.strip()
        if stripped == begin:
            if inside:
                raise ValueError(f"{where}: nested {begin!r} at line {number}")
            inside, count = True, count + 1
            indent = line[: len(line) - len(line.lstrip())]
            continue
        if stripped == end:
            if not inside:
                raise ValueError(f"{where}: {end!r} without {begin!r} at line {number}")
            inside = False
            if stub:
                out.extend(indent + s for s in stub)
            continue
        if not inside:
            out.append(line)
    if inside:
        raise ValueError(f"{where}: {begin!r} without {end!r}")
    return "\n".join(out), count


def release_cell(cell, where: str = "cell"):
    """The learner version of one source cell (a new cell; the argument is not modified)."""
    cell = copy.deepcopy(cell)
    meta = _nbgrader(cell)
    text = cell.get("source", "")
    if meta.get("solution"):
        if cell["cell_type"] == "code":
            text, n = _replace_regions(text, BEGIN_SOLUTION, END_SOLUTION, CODE_STUB, where)
            if n == 0:
                text = "\n".join(CODE_STUB)
        else:
            text, n = _replace_regions(text, BEGIN_SOLUTION, END_SOLUTION, (MARKDOWN_STUB,), where)
            if n == 0:
                text = MARKDOWN_STUB
    text, _ = _replace_regions(text, BEGIN_HIDDEN, END_HIDDEN, None, where)
    cell["source"] = text.rstrip("\n") if text.strip() else ""
    if cell["cell_type"] == "code":
        cell["outputs"] = []
        cell["execution_count"] = None
    cell.get("metadata", {}).pop("execution", None)
    if "attachments" in cell and not cell["attachments"]:
        del cell["attachments"]
    return cell


def _canonical(nb) -> str:
    return json.dumps(nb, sort_keys=True, ensure_ascii=False, separators=(",", ":"))


def fingerprint(nb) -> str:
    """SHA-256 of the notebook's content without the fingerprint field itself."""
    nb = copy.deepcopy(dict(nb))
    nb.get("metadata", {}).get(META_KEY, {}).pop("fingerprint", None)
    return hashlib.sha256(_canonical(nb).encode()).hexdigest()


def release_notebook(nb, exercise: str, source_name: str = "") -> nbformat.NotebookNode:
    """The learner copy of a source notebook (a new notebook; the argument is not modified)."""
    out = copy.deepcopy(nb)
    out.cells = [release_cell(c, f"{source_name or exercise} cell {i}") for i, c in enumerate(nb.cells)]
    out.metadata[META_KEY] = {
        "exercise": exercise,
        "generated_by": "dropout-course release (do not edit the source copy here: edit exercises/source)",
        "source": source_name,
    }
    out.metadata[META_KEY]["fingerprint"] = fingerprint(out)
    return out


def is_pristine(path: Path) -> bool:
    """True if ``path`` is a release notebook exactly as ``release`` wrote it (no edits, no outputs)."""
    try:
        import nbformat

        nb = nbformat.reads(Path(path).read_text(encoding="utf-8"), as_version=4)
        recorded = nb["metadata"][META_KEY]["fingerprint"]
    except Exception:  # noqa: BLE001 - unreadable or foreign: not ours to overwrite
        return False
    return recorded == fingerprint(nb)


def _text(nb) -> str:
    import nbformat

    return nbformat.writes(nb) + "\n"


@dataclass
class ReleaseReport:
    written: list[Path] = field(default_factory=list)
    unchanged: list[Path] = field(default_factory=list)
    out_of_date: list[tuple[Path, str]] = field(default_factory=list)
    refused: list[tuple[Path, str]] = field(default_factory=list)
    orphans: list[Path] = field(default_factory=list)

    def lines(self, root: Path | None = None) -> list[str]:
        def rel(p: Path) -> str:
            try:
                return str(Path(p).resolve().relative_to(root)) if root else str(p)
            except ValueError:
                return str(p)

        out = [f"wrote {rel(p)}" for p in self.written]
        out += [f"up to date {rel(p)}" for p in self.unchanged]
        out += [f"OUT OF DATE {rel(p)}: {why}" for p, why in self.out_of_date]
        out += [f"REFUSED {rel(p)}: {why}" for p, why in self.refused]
        out += [f"note: {rel(p)} has no source notebook (left alone)" for p in self.orphans]
        return out


def release(
    source_dir: Path | None = None, release_dir: Path | None = None, check: bool = False, force: bool = False
) -> ReleaseReport:
    """Generate (or, with ``check``, only compare) the release notebooks; see the module docstring."""
    root = repo_root()
    source_dir = Path(source_dir or root / "exercises" / "source")
    release_dir = Path(release_dir or root / "exercises" / "release")
    report = ReleaseReport()
    expected_paths = set()
    for src in find_sources(source_dir):
        exercise = src.parent.name
        import nbformat

        nb = nbformat.read(src, as_version=4)
        rel_source = f"{src.parent.name}/{src.name}"
        text = _text(release_notebook(nb, exercise, rel_source))
        target = release_dir / src.parent.name / src.name
        expected_paths.add(target.resolve())
        if target.exists():
            current = target.read_text(encoding="utf-8")
            if current == text:
                report.unchanged.append(target)
                continue
            if not is_pristine(target):
                why = (
                    "has edits or outputs (a learner's work?) or was not written by `dropout-course release`"
                )
                if check:
                    report.out_of_date.append((target, why))
                    continue
                if not force:
                    report.refused.append((target, why + "; use --force to overwrite it"))
                    continue
            elif check:
                report.out_of_date.append((target, "differs from what the source generates"))
                continue
        elif check:
            report.out_of_date.append((target, "missing"))
            continue
        target.parent.mkdir(parents=True, exist_ok=True)
        tmp = target.with_suffix(".ipynb.tmp")
        tmp.write_text(text, encoding="utf-8")
        tmp.replace(target)
        report.written.append(target)
    if release_dir.exists():
        for path in sorted(release_dir.glob("*/*.ipynb")):
            if path.resolve() not in expected_paths and ".ipynb_checkpoints" not in path.parts:
                report.orphans.append(path)
    return report


def solution_and_hidden_lines(nb) -> list[str]:
    """Every line inside a solution or hidden-test region of a source notebook that would give something away.

    Blank lines, lines without a letter or digit (``)``, ``]``) and lines the source already shows outside
    its regions (e.g. the buggy script of a debugging exercise, shown to learners on purpose) are left out.
    """
    secret: list[str] = []
    public: set[str] = set()
    for cell in nb.cells:
        outside = cell.source
        for pattern in _REGIONS:
            for match in pattern.finditer(cell.source):
                secret += [ln.strip() for ln in match.group(1).split("\n") if re.search(r"\w", ln)]
            outside = pattern.sub("", outside)
        public.update(ln.strip() for ln in outside.split("\n"))
    return [ln for ln in secret if ln not in public]


_REGIONS = [
    re.compile(rf"^[ \t]*{re.escape(begin)}[ \t]*\n(.*?)^[ \t]*{re.escape(end)}", re.S | re.M)
    for begin, end in ((BEGIN_SOLUTION, END_SOLUTION), (BEGIN_HIDDEN, END_HIDDEN))
]
