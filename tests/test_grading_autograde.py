"""`dropout-course grade`: good, wrong and broken submissions each get a row; nothing stops the run and no
submission file is modified. One `grade` call (3 jobs) for all kernels keeps this test short."""

from __future__ import annotations

import csv
import hashlib
from pathlib import Path

import nbformat
import pytest

from dropout_course import cli
from dropout_course.grading.autograde import build_graded_notebook
from dropout_course.grading.release import repo_root

ROOT = repo_root()
EX = "ex01_inverted_dropout"
SOURCE = ROOT / "exercises" / "source" / EX / f"{EX}.ipynb"
RELEASE = ROOT / "exercises" / "release" / EX / f"{EX}.ipynb"


def _gid(cell):
    return cell.metadata.get("nbgrader", {}).get("grade_id")


def _learner(fill: dict[str, str] | None = None, drop: tuple[str, ...] = ()) -> nbformat.NotebookNode:
    """The release notebook with some solution cells written by a 'learner' and some cells deleted."""
    nb = nbformat.read(RELEASE, as_version=4)
    source = {_gid(c): c for c in nbformat.read(SOURCE, as_version=4).cells if _gid(c)}
    for cell in nb.cells:
        gid = _gid(cell)
        if fill and gid in fill:
            cell.source = source[gid].source if fill[gid] == "solution" else fill[gid]
    nb.cells = [c for c in nb.cells if _gid(c) not in drop]
    return nb


ALL_SOLVED = {
    g: "solution"
    for g in (
        "dropout_forward_solution",
        "Dropout_solution",
        "dropout_forward_numpy_solution",
        "dropout_backward_numpy_solution",
    )
}
NO_RESCALE = """
def dropout_forward(x, p, training=True):
    return x * (torch.rand_like(x) >= p) if training else x
"""


@pytest.fixture(scope="module")
def graded(tmp_path_factory):
    d = tmp_path_factory.mktemp("submissions")
    subs = {}

    def put(name, nb=None, text=None):
        path = d / f"{name}.ipynb"
        if nb is not None:
            nbformat.write(nb, path)
        else:
            path.write_text(text)
        subs[name] = path

    put("good", _learner(ALL_SOLVED))
    # a wrong forward pass (partial points), the Dropout grader cell and the backward solution cell
    # deleted (re-inserted), then the kernel dies in the Dropout cell (later checks never run)
    put(
        "partial_crash",
        _learner(
            {
                "dropout_forward_solution": NO_RESCALE,
                "dropout_forward_numpy_solution": "solution",
                "Dropout_solution": "import os\nos._exit(1)",
            },
            drop=("check_Dropout", "dropout_backward_numpy_solution"),
        ),
    )
    put(
        "endless",
        _learner(
            {
                "dropout_forward_solution": "import time\nwhile True:  # an endless loop (sleeping, so it does not slow the other jobs)\n    time.sleep(0.05)"
            }
        ),
    )
    put("not_json", text="{ this is not json")
    put("not_notebook", text='{"hello": "world"}')
    before = {k: hashlib.sha256(p.read_bytes()).hexdigest() for k, p in subs.items()}
    out = d / "grades.csv"
    code = cli.main(["grade", *map(str, subs.values()), "--out", str(out), "--jobs", "3", "--timeout", "30"])
    after = {k: hashlib.sha256(p.read_bytes()).hexdigest() for k, p in subs.items()}
    with open(out, newline="") as fh:
        rows = {Path(r["submission"]).stem: r for r in csv.DictReader(fh)}
    return code, rows, before, after


def test_every_submission_gets_a_row_and_files_are_untouched(graded):
    code, rows, before, after = graded
    assert code == 0
    assert set(rows) == {"good", "partial_crash", "endless", "not_json", "not_notebook"}
    assert before == after, "a submission file was modified by grading"


def test_good_submission_gets_full_marks_with_hidden_checks(graded):
    row = graded[1]["good"]
    assert row["exercise"] == EX and row["status"] == "graded" and row["error"] == ""
    assert float(row["total"]) == float(row["max_total"]) == 43
    assert float(row["dropout_forward_hidden"]) == 9  # the hidden check was re-inserted and ran


def test_partial_and_crashing_submission(graded):
    row = graded[1]["partial_crash"]
    assert 0 < float(row["dropout_forward"]) < 11  # the wrong forward pass gets partial points
    assert float(row["Dropout"]) == 0 and float(row["dropout_backward_numpy"]) == 0
    assert (
        "missing cells re-inserted from the source: check_Dropout, dropout_backward_numpy_solution"
        in row["error"]
    )
    assert "kernel died" in row["error"]
    assert float(row["total"]) == float(row["dropout_forward"])  # what ran before the crash still counts


def test_endless_loop_gets_a_clear_reason(graded):
    row = graded[1]["endless"]
    assert "timed out" in row["error"] and float(row["total"]) == 0 and float(row["max_total"]) == 43


def test_broken_files_get_reasons(graded):
    rows = graded[1]
    assert "not valid JSON" in rows["not_json"]["error"] and rows["not_json"]["total"] == "0"
    assert "not a Jupyter notebook" in rows["not_notebook"]["error"]


def test_locked_cells_are_replaced_by_the_source():
    nb = _learner(ALL_SOLVED)
    for cell in nb.cells:
        if _gid(cell) == "check_dropout_forward":
            cell.source = "print('full marks please')"
    graded, notes = build_graded_notebook(nb, nbformat.read(SOURCE, as_version=4))
    sources = [c.source for c in graded.cells]
    assert 'grader.check("dropout_forward", dropout_forward)' in sources
    assert "print('full marks please')" not in sources
    assert any("dropout_forward_hidden" in s for s in sources) and notes == []
