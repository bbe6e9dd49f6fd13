"""What to run for a submission: its exercise, the cells the worker executes, the checks the judge runs.

All of it is read by the judge from the submission's JSON and from the *source* notebook, before any
learner code runs:

* the exercise: ``--exercise`` if given, else the release metadata, else the grade ids, else the folder;
* the cells: the learner's solution cells (and cells of their own) inside the source's locked cells, with
  hidden tests put back and missing cells re-inserted (:func:`build_graded_notebook`);
* the checks: every ``grader.check("name", candidate, key=value)`` call in the *source's* grade cells,
  parsed (never executed): the worker only evaluates the candidate names when it reaches that cell.
"""

from __future__ import annotations

import ast
import json
from dataclasses import dataclass, field
from pathlib import Path

from .release import META_KEY, find_sources, release_cell


@dataclass
class CheckCall:
    """One ``grader.check(name, candidate, **extra)`` of a source grade cell (expressions as text)."""

    name: str
    candidate: str
    extra: dict[str, str] = field(default_factory=dict)


@dataclass
class Step:
    """A code cell of the graded notebook: executed by the worker, or (grade cells) a snapshot + checks."""

    index: int
    code: str
    grade_id: str | None = None
    checks: list[CheckCall] = field(default_factory=list)
    learner: bool = False  # the learner's code (a solution cell or a cell of their own)


def code_cell(source: str, metadata: dict | None = None) -> dict:
    return {"cell_type": "code", "metadata": dict(metadata or {}), "source": source, "outputs": []}


def nbgrader_meta(cell) -> dict:
    meta = cell.get("metadata", {}) if isinstance(cell, dict) else {}
    value = meta.get("nbgrader", {}) if isinstance(meta, dict) else {}
    return value if isinstance(value, dict) else {}


def grade_id(cell) -> str | None:
    gid = nbgrader_meta(cell).get("grade_id")
    return gid if isinstance(gid, str) else None


_SOURCES: dict[tuple, dict] = {}


def _read(path: Path) -> dict:
    nb, _ = parse_submission(path.read_bytes())
    return nb


def sources(source_dir: Path) -> dict[str, dict]:
    """The source notebooks by exercise id (read once per judge process while the files are unchanged)."""
    paths = find_sources(source_dir)
    key = tuple((str(p), p.stat().st_mtime_ns, p.stat().st_size) for p in paths)
    if key not in _SOURCES:
        _SOURCES.clear()
        _SOURCES[key] = {p.parent.name: _read(p) for p in paths}
    return _SOURCES[key]


def parse_submission(raw: bytes) -> tuple[dict, list[str]]:
    """The notebook in ``raw`` (plain JSON: cells with a str ``source`` and dict ``metadata``) and notes on
    what had to be ignored; ValueError with a reason if it is not a notebook."""
    try:
        data = json.loads(raw.decode("utf-8"))
    except (UnicodeDecodeError, ValueError, RecursionError) as exc:  # RecursionError: nested too deep
        raise ValueError(f"not valid JSON (not a notebook file?): {str(exc)[:120]}") from None
    if not isinstance(data, dict) or not isinstance(data.get("cells"), list):
        raise ValueError("not a Jupyter notebook: no list of cells")
    notes = []
    cells = []
    for i, cell in enumerate(data["cells"]):
        if not isinstance(cell, dict) or cell.get("cell_type") not in ("code", "markdown", "raw"):
            notes.append(f"cell {i} is not a notebook cell; ignored")
            continue
        meta = cell.get("metadata")
        if not isinstance(meta, dict):
            cell["metadata"] = meta = {}
        if "nbgrader" in meta and not isinstance(meta["nbgrader"], dict):
            notes.append(
                f"cell {i} has corrupt nbgrader metadata ({str(meta['nbgrader'])[:40]!r}); treated as ungraded"
            )
            del meta["nbgrader"]
        source = cell.get("source", "")
        if isinstance(source, list):
            source = "".join(str(s) for s in source)
        cell["source"] = source if isinstance(source, str) else ""
        cells.append(cell)
    data["cells"] = cells
    if not isinstance(data.get("metadata"), dict):
        data["metadata"] = {}
    return data, notes


def exercise_of_grade_ids(nb, known: dict) -> str | None:
    """The exercise whose source shares the most grade ids with ``nb`` (None if none shares any)."""
    ids = {grade_id(c) for c in nb["cells"]} - {None}
    best, overlap = None, 0
    for name, src in known.items():
        n = len(ids & ({grade_id(c) for c in src["cells"]} - {None}))
        if n > overlap:
            best, overlap = name, n
    return best


def metadata_exercise(nb, known: dict) -> str | None:
    meta = nb.get("metadata", {}).get(META_KEY, {})
    return meta["exercise"] if isinstance(meta, dict) and meta.get("exercise") in known else None


def detect_exercise(nb, path: Path, known: dict) -> str | None:
    best = metadata_exercise(nb, known) or exercise_of_grade_ids(nb, known)
    if best:
        return best
    for part in reversed(path.parts):
        if part in known:
            return part
    return None


def choose_exercise(nb, path: Path, known: dict, pinned: str | None) -> tuple[str | None, list[str]]:
    """The exercise to grade ``nb`` as (``pinned``: ``--exercise``), and a note when the notebook's metadata
    names another exercise than its cells' grade ids (a learner cannot switch exercises unnoticed)."""
    if pinned is not None:
        return pinned, []
    exercise = detect_exercise(nb, path, known)
    by_cells = exercise_of_grade_ids(nb, known)
    if by_cells is None or exercise == by_cells:
        return exercise, []
    return exercise, [
        f"the notebook's metadata names {exercise} but its cells' grade ids are {by_cells}'s: graded as "
        f"{exercise} (--exercise chooses)"
    ]


def build_graded_notebook(submission, source) -> tuple[dict, list[str]]:
    """The notebook to grade: the learner's solution cells inside the source's locked cells.

    Returns the notebook and notes (missing cells) for the gradebook.
    """
    source_cells = {grade_id(c): c for c in source["cells"] if grade_id(c)}
    order = [grade_id(c) for c in source["cells"] if grade_id(c)]
    out, seen, repeated = [], set(), []
    for cell in submission["cells"]:
        gid = grade_id(cell)
        if gid in source_cells and gid in seen:
            repeated.append(gid)
        if gid in source_cells and gid not in seen:
            src = source_cells[gid]
            if nbgrader_meta(src).get("solution") and src["cell_type"] == "code":
                out.append(code_cell(str(cell.get("source", "")), src["metadata"]))
            else:
                out.append(src)  # locked cells: the instructor's version, hidden tests included
            seen.add(gid)
        elif cell.get("cell_type") == "code":
            out.append(code_cell(str(cell.get("source", ""))))
        else:
            out.append(cell)
    missing = [gid for gid in order if gid not in seen]
    for gid in missing:
        src = source_cells[gid]
        new = release_cell(src) if nbgrader_meta(src).get("solution") else src
        position = 0
        previous = order[: order.index(gid)]
        for i, cell in enumerate(out):
            if grade_id(cell) in previous:
                position = i + 1
        out.insert(position, new)
    notes = [f"missing cells re-inserted from the source: {', '.join(missing)}"] if missing else []
    if repeated:
        notes.append(
            f"grade ids used by more than one cell ({', '.join(dict.fromkeys(repeated))}): the first cell is "
            "graded, the others run as the learner's own cells"
        )
    return {"metadata": dict(source.get("metadata", {})), "cells": out, "nbformat": 4}, notes


def check_calls(code: str) -> list[CheckCall]:
    """The ``grader.check(...)`` calls of a (source) cell, in order."""
    try:
        tree = ast.parse(code)
    except SyntaxError:
        return []
    calls = []
    for node in ast.walk(tree):
        if not (isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute)):
            continue
        if node.func.attr != "check" or not (
            isinstance(node.func.value, ast.Name) and node.func.value.id == "grader"
        ):
            continue
        if (
            len(node.args) < 2
            or not isinstance(node.args[0], ast.Constant)
            or not isinstance(node.args[0].value, str)
        ):
            continue
        extra = {kw.arg: ast.unparse(kw.value) for kw in node.keywords if kw.arg}
        calls.append(
            ((node.lineno, node.col_offset), CheckCall(node.args[0].value, ast.unparse(node.args[1]), extra))
        )
    return [call for _, call in sorted(calls, key=lambda item: item[0])]


def defined_names(code: str) -> set[str]:
    """Names a cell binds at top level (functions, classes, assignments, imports)."""
    try:
        tree = ast.parse(code)
    except SyntaxError:
        return set()
    names: set[str] = set()
    for node in tree.body:
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
            names.add(node.name)
        elif isinstance(node, (ast.Import, ast.ImportFrom)):
            names.update((a.asname or a.name).split(".")[0] for a in node.names)
        elif isinstance(node, (ast.Assign, ast.AnnAssign, ast.AugAssign)):
            targets = node.targets if isinstance(node, ast.Assign) else [node.target]
            for target in targets:
                names.update(n.id for n in ast.walk(target) if isinstance(n, ast.Name))
    return names


def learner_source(steps_: list[Step], names: set[str]) -> str:
    """The learner's cells that define any of ``names`` (what the checks' static scan reads)."""
    return "\n\n".join(s.code for s in steps_ if s.learner and names & defined_names(s.code))


def steps(graded, source) -> list[Step]:
    """The graded notebook's code cells as steps (grade cells of the source carry their checks)."""
    source_locked = {
        grade_id(c) for c in source["cells"] if grade_id(c) and not nbgrader_meta(c).get("solution")
    }
    course_text = {c["source"] for c in source["cells"] if c["cell_type"] == "code"}
    result = []
    for index, cell in enumerate(graded["cells"]):
        if cell["cell_type"] != "code":
            continue
        gid, text = grade_id(cell), str(cell.get("source", ""))
        checks = check_calls(text) if gid in source_locked and nbgrader_meta(cell).get("grade") else []
        learner = gid not in source_locked and text not in course_text
        result.append(Step(index, text, gid, checks, learner))
    return result
