"""``dropout-course grade``: run submitted exercise notebooks in fresh kernels and write a gradebook CSV.

For each submission:

1. read it (never modified: all work happens on an in-memory copy in a temporary folder);
2. find its exercise (release metadata, else the grade ids of its cells, else its folder name);
3. rebuild the notebook to grade: the learner's solution cells are kept, every other cell with an
   nbgrader ``grade_id`` (grader and test cells, instructions) is replaced by the *source* version, with
   its hidden tests put back; missing cells are re-inserted (a missing solution as the empty stub);
4. execute it top to bottom with nbclient in a fresh kernel (errors do not stop the run; any cell that
   runs past ``timeout`` seconds stops it); every ``grader.check`` appends its result to a JSON-lines
   file named by ``$DROPOUT_COURSE_RESULTS``, so checks that ran before a crash still count;
5. one CSV row: ``submission, exercise, total, max_total, status, error`` and one column per check
   (points of the check's latest run; 0 if it never ran).

Each submission runs in its own worker process (``--jobs`` of them at once) with a hard wall-clock
limit, so a crashing or hanging submission cannot stop the run.
"""

from __future__ import annotations

import csv
import json
import os
import subprocess
import sys
import tempfile
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import nbformat

from .release import META_KEY, find_sources, release_cell, repo_root

FIXED_COLUMNS = ["submission", "exercise", "total", "max_total", "status", "error"]
DEFAULT_TIMEOUT = 120

__all__ = ["grade", "grade_one", "write_csv", "build_graded_notebook", "FIXED_COLUMNS"]


def _grade_id(cell) -> str | None:
    return (cell.get("metadata", {}).get("nbgrader", {}) or {}).get("grade_id")


def _sources(source_dir: Path) -> dict[str, nbformat.NotebookNode]:
    return {p.parent.name: nbformat.read(p, as_version=4) for p in find_sources(source_dir)}


def _detect_exercise(nb, path: Path, sources: dict) -> str | None:
    meta = nb.get("metadata", {}).get(META_KEY, {})
    if isinstance(meta, dict) and meta.get("exercise") in sources:
        return meta["exercise"]
    ids = {_grade_id(c) for c in nb.cells} - {None}
    best, overlap = None, 0
    for name, src in sources.items():
        n = len(ids & ({_grade_id(c) for c in src.cells} - {None}))
        if n > overlap:
            best, overlap = name, n
    if best:
        return best
    for part in reversed(path.resolve().parts):
        if part in sources:
            return part
    return None


def build_graded_notebook(submission, source) -> tuple[nbformat.NotebookNode, list[str]]:
    """The notebook to execute: the learner's solution cells inside the source's locked cells.

    Returns the notebook and a list of notes (missing cells) for the gradebook.
    """
    source_cells = {_grade_id(c): c for c in source.cells if _grade_id(c)}
    order = [_grade_id(c) for c in source.cells if _grade_id(c)]
    out, seen = [], set()
    for cell in submission.cells:
        gid = _grade_id(cell)
        if gid in source_cells:
            src = source_cells[gid]
            if (src.metadata.get("nbgrader", {}) or {}).get("solution"):
                kept = nbformat.v4.new_code_cell(cell.get("source", "")) if src.cell_type == "code" else None
                if kept is not None:
                    kept.metadata = src.metadata
                    out.append(kept)
                else:
                    out.append(src)
            else:
                out.append(src)  # locked cells: the instructor's version, hidden tests included
            seen.add(gid)
        elif cell.get("cell_type") == "code":
            out.append(nbformat.v4.new_code_cell(cell.get("source", "")))
        else:
            out.append(cell)
    notes = []
    missing = [gid for gid in order if gid not in seen]
    for gid in missing:
        src = source_cells[gid]
        is_solution = (src.metadata.get("nbgrader", {}) or {}).get("solution")
        new = release_cell(src) if is_solution else src
        # insert after the cell of the previous source grade_id, keeping the source order
        position = 0
        previous = order[: order.index(gid)]
        for i, cell in enumerate(out):
            if _grade_id(cell) in previous:
                position = i + 1
        out.insert(position, new)
        seen.add(gid)
    if missing:
        notes.append(f"missing cells re-inserted from the source: {', '.join(missing)}")
    nb = nbformat.v4.new_notebook()
    nb.metadata = dict(source.metadata)
    nb.cells = out
    return nb, notes


def _cell_errors(nb) -> list[str]:
    errors = []
    for i, cell in enumerate(nb.cells):
        for output in cell.get("outputs", []):
            if output.get("output_type") == "error":
                gid = _grade_id(cell)
                label = f"cell {i}" + (f" ({gid})" if gid else "")
                errors.append(f"{label}: {output.get('ename')}: {str(output.get('evalue'))[:200]}")
                break
    return errors


def grade_one(path: str | Path, timeout: float = DEFAULT_TIMEOUT, source_dir: Path | None = None) -> dict:
    """Grade one submission in this process (a kernel is started for it); return its gradebook row."""
    path = Path(path)
    source_dir = Path(source_dir or repo_root() / "exercises" / "source")
    row: dict = {
        "submission": str(path),
        "exercise": "",
        "total": 0.0,
        "max_total": 0.0,
        "status": "error",
        "error": "",
    }
    try:
        raw = path.read_bytes()
    except OSError as exc:
        row["error"] = f"cannot read the file: {exc}"
        return row
    try:
        data = json.loads(raw.decode("utf-8"))
    except (UnicodeDecodeError, ValueError) as exc:
        row["error"] = f"not valid JSON (not a notebook file?): {exc}"
        return row
    try:
        nb = nbformat.reads(json.dumps(data), as_version=4)
        if not isinstance(nb.get("cells"), list):
            raise ValueError("no list of cells")
    except Exception as exc:  # noqa: BLE001 - any parse problem is a reason, not a crash
        row["error"] = f"not a Jupyter notebook: {type(exc).__name__}: {exc}"
        return row
    sources = _sources(source_dir)
    exercise = _detect_exercise(nb, path, sources)
    if exercise is None:
        row["error"] = "cannot tell which exercise this is (no release metadata, no known grade ids)"
        return row
    row["exercise"] = exercise
    row["scores"] = {}
    graded, notes = build_graded_notebook(nb, sources[exercise])
    problems = list(notes)
    with tempfile.TemporaryDirectory(prefix="dropout-course-grade-") as tmp:
        results_path = Path(tmp) / "results.jsonl"
        os.environ["DROPOUT_COURSE_RESULTS"] = str(results_path)
        from nbclient import NotebookClient
        from nbclient.exceptions import CellTimeoutError, DeadKernelError

        client = NotebookClient(
            graded,
            timeout=timeout,
            allow_errors=True,
            kernel_name="python3",
            resources={"metadata": {"path": tmp}},
        )
        try:
            client.execute()
        except CellTimeoutError:
            problems.append(
                f"timed out: a cell ran longer than {timeout:g} s (endless loop?); later cells not run"
            )
        except DeadKernelError:
            problems.append("the kernel died (a crash, os._exit or out of memory); later cells not run")
        except Exception as exc:  # noqa: BLE001
            problems.append(f"execution stopped: {type(exc).__name__}: {str(exc)[:200]}")
        finally:
            os.environ.pop("DROPOUT_COURSE_RESULTS", None)
        problems += _cell_errors(graded)
        if results_path.exists():
            for line in results_path.read_text(encoding="utf-8").splitlines():
                try:
                    result = json.loads(line)
                except ValueError:
                    continue
                if result.get("exercise") == exercise and isinstance(result.get("check"), str):
                    row["scores"][result["check"]] = float(result["score"])  # the latest run counts
    row["status"] = "graded" if not problems else "graded with errors"
    row["error"] = "; ".join(problems)
    return row


def _complete(row: dict) -> dict:
    """Add ``max_total``, one column per check of the exercise (0 if it never ran) and ``total``.

    Done in the parent process (which imports the graders once), so workers stay light.
    """
    scores = row.pop("scores", {}) or {}
    if not row.get("exercise"):
        return row
    from .core import _load_exercise

    specs = _load_exercise(row["exercise"])
    row["max_total"] = float(sum(s.max_score for s in specs.values()))
    for name, spec in specs.items():
        row[name] = min(float(scores.get(name, 0.0)), spec.max_score)
    row["total"] = float(sum(row[name] for name in specs))
    return row


def _worker_row(path: Path, timeout: float, source_dir: Path | None) -> dict:
    """Grade ``path`` in a separate process with a hard wall-clock limit."""
    cmd = [sys.executable, "-m", "dropout_course.grading.autograde", str(path), "--timeout", str(timeout)]
    if source_dir:
        cmd += ["--source", str(source_dir)]
    hard_limit = timeout * 4 + 120
    base = {"submission": str(path), "exercise": "", "total": 0.0, "max_total": 0.0, "status": "error"}
    try:
        proc = subprocess.run(cmd, capture_output=True, text=True, timeout=hard_limit)
    except subprocess.TimeoutExpired:
        return {**base, "error": f"grading took longer than {hard_limit:g} s and was stopped"}
    for line in reversed(proc.stdout.splitlines()):
        if line.startswith("{"):
            try:
                return json.loads(line)
            except ValueError:
                break
    tail = (proc.stderr or "").strip().splitlines()[-1:] or ["no output"]
    return {**base, "error": f"the grading worker failed (exit {proc.returncode}): {tail[0][:200]}"}


def grade(
    submissions: list[str | Path],
    jobs: int = 1,
    timeout: float = DEFAULT_TIMEOUT,
    source_dir: Path | None = None,
) -> list[dict]:
    """Grade every submission (``jobs`` at a time, each in its own process); rows in the input order."""
    paths = [Path(s) for s in submissions]
    with ThreadPoolExecutor(max_workers=max(1, int(jobs))) as pool:
        rows = list(pool.map(lambda p: _worker_row(p, timeout, source_dir), paths))
    return [_complete(row) for row in rows]


def write_csv(rows: list[dict], out: str | Path) -> list[str]:
    """Write the gradebook: fixed columns, then one column per check in first-seen order."""
    checks: list[str] = []
    for row in rows:
        for key in row:
            if key not in FIXED_COLUMNS and key not in checks:
                checks.append(key)
    columns = FIXED_COLUMNS + checks
    with open(out, "w", newline="", encoding="utf-8") as fh:
        writer = csv.DictWriter(fh, fieldnames=columns)
        writer.writeheader()
        for row in rows:
            writer.writerow({c: _cell(row.get(c, "")) for c in columns})
    return columns


def _cell(value):
    if isinstance(value, float):
        return f"{value:g}"
    return value


def _main(argv=None) -> int:
    import argparse

    parser = argparse.ArgumentParser(description="grade one submission (worker of `dropout-course grade`)")
    parser.add_argument("submission")
    parser.add_argument("--timeout", type=float, default=DEFAULT_TIMEOUT)
    parser.add_argument("--source", default=None)
    args = parser.parse_args(argv)
    try:
        row = grade_one(args.submission, args.timeout, Path(args.source) if args.source else None)
    except Exception as exc:  # noqa: BLE001 - the row must always come back
        row = {
            "submission": args.submission,
            "exercise": "",
            "total": 0.0,
            "max_total": 0.0,
            "status": "error",
            "error": f"internal grading error: {type(exc).__name__}: {exc}",
        }
    print(json.dumps(row))
    return 0


if __name__ == "__main__":
    sys.exit(_main())
