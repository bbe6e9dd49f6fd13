"""``dropout-course release``: learner copies of the exercise notebooks, generated from the sources.

``exercises/source/<assignment>/<assignment>.ipynb`` (with solutions and hidden tests, nbgrader format)
becomes ``exercises/release/<assignment>/<assignment>.ipynb`` through nbgrader's own preprocessors, in the
order ``nbgrader generate_assignment`` runs them (:func:`_preprocessors`):

* ``ClearSolutions``: each ``### BEGIN SOLUTION`` ... ``### END SOLUTION`` region becomes
  ``# YOUR CODE HERE`` + ``raise NotImplementedError()`` at the marker's indentation (``YOUR ANSWER HERE``
  in markdown; a solution cell without markers is replaced whole);
* ``ClearOutput``: outputs, execution counts and execution timings are cleared;
* ``ClearHiddenTests``: ``### BEGIN HIDDEN TESTS`` ... ``### END HIDDEN TESTS`` regions are removed.

nbgrader (the ``instructor`` extra) is imported only when a notebook is released, so importing this module
(as the judge's :mod:`.plan` does) stays cheap; without it :class:`NbgraderMissing` says what to install.
A source nbgrader rejects (a region without its END marker, a solution region outside a solution cell...)
raises :class:`ReleaseError` naming the notebook and the cell.

Safety: every generated notebook records a fingerprint of its own content in its metadata. A release
file is only (re)written when it is missing, or when it is still exactly what an earlier release wrote
(an unmodified, out-of-date copy). A file that a learner edited or ran, or one not written by this
command, is never overwritten unless ``force=True`` (``--force``), and files without a source are never
deleted. Writing the same sources twice changes nothing (idempotent).
"""

from __future__ import annotations

import copy
import hashlib
import importlib.util
import json
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import nbformat

BEGIN_SOLUTION, END_SOLUTION = "### BEGIN SOLUTION", "### END SOLUTION"
BEGIN_HIDDEN, END_HIDDEN = "### BEGIN HIDDEN TESTS", "### END HIDDEN TESTS"
META_KEY = "dropout_course"

__all__ = [
    "release_notebook",
    "release_cell",
    "release",
    "ReleaseReport",
    "ReleaseError",
    "NbgraderMissing",
    "require_nbgrader",
    "find_sources",
    "fingerprint",
    "is_pristine",
]


def repo_root() -> Path:
    """The repository root (the folder holding ``exercises/``), found from this file."""
    return Path(__file__).resolve().parents[2]


def find_sources(source_dir: Path) -> list[Path]:
    """``source_dir/<assignment>/*.ipynb``, sorted (checkpoints skipped)."""
    return sorted(p for p in Path(source_dir).glob("*/*.ipynb") if ".ipynb_checkpoints" not in p.parts)


INSTALL_HINT = "pip install 'dropout-course[instructor]'"


class NbgraderMissing(ImportError):
    """nbgrader (the ``instructor`` extra), needed by ``dropout-course release`` and ``grade``, is missing."""


class ReleaseError(ValueError):
    """A source notebook that nbgrader's preprocessors reject; the message names the notebook and the cell."""


def require_nbgrader() -> None:
    """Raise :class:`NbgraderMissing` (one line: what to install) unless nbgrader can be imported.

    Only looks for the package (cheap): ``grade`` checks it up front, before any judge needs it.
    """
    if importlib.util.find_spec("nbgrader") is None:
        raise NbgraderMissing(f"nbgrader is not installed (instructor tooling): {INSTALL_HINT}")


def _preprocessors() -> tuple:
    """nbgrader's ClearSolutions, ClearOutput and ClearHiddenTests, in ``generate_assignment``'s order.

    ``ClearOutput`` also drops the ``execution`` timings nbclient records in a cell's metadata.
    """
    require_nbgrader()
    from nbgrader.preprocessors import ClearHiddenTests, ClearOutput, ClearSolutions

    fields = {"collapsed", "scrolled", "execution"}
    return ClearSolutions(), ClearOutput(remove_metadata_fields=fields), ClearHiddenTests()


def _grade_id(cell) -> str:
    return (cell.get("metadata", {}).get("nbgrader") or {}).get("grade_id", "")


def release_cell(cell, where: str = "cell", metadata=None):
    """The learner version of one source cell (a new cell; the argument is not modified).

    nbgrader's preprocessors (:func:`_preprocessors`) run on a one-cell notebook with the source notebook's
    ``metadata`` (its kernel's language picks the code stub; Python without it). Their errors become a
    :class:`ReleaseError` naming ``where`` and the cell's grade id.
    """
    from nbformat import from_dict

    nb = from_dict(copy.deepcopy({"cells": [cell], "metadata": dict(metadata or {}), "nbformat": 4}))
    resources: dict = {}
    try:
        for preprocessor in _preprocessors():
            nb, resources = preprocessor.preprocess(nb, resources)
    except (RuntimeError, ValueError) as exc:  # nbgrader's errors: unclosed, nested or misplaced regions
        gid = _grade_id(cell)
        raise ReleaseError(f"{where}{f' (grade id {gid!r})' if gid else ''}: {exc}") from None
    return nb.cells[0]


def _canonical(nb) -> str:
    return json.dumps(nb, sort_keys=True, ensure_ascii=False, separators=(",", ":"))


def fingerprint(nb) -> str:
    """SHA-256 of the notebook's content without the fingerprint field itself."""
    nb = copy.deepcopy(dict(nb))
    nb.get("metadata", {}).get(META_KEY, {}).pop("fingerprint", None)
    return hashlib.sha256(_canonical(nb).encode()).hexdigest()


def release_notebook(nb, exercise: str, source_name: str = "") -> nbformat.NotebookNode:
    """The learner copy of a source notebook (a new notebook; the argument is not modified).

    Its cells are :func:`release_cell`'s (one at a time, so that an error names its cell); like
    ``ClearSolutions``, it drops nbgrader's ``celltoolbar`` setting from the notebook's metadata.
    """
    out = copy.deepcopy(nb)
    name = source_name or exercise
    out.cells = [release_cell(c, f"{name} cell {i}", nb.metadata) for i, c in enumerate(nb.cells)]
    out.metadata.pop("celltoolbar", None)
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
