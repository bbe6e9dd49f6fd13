"""nbgrader itself and `dropout-course grade` give the same points, cell by cell.

The exercise sources are nbgrader assignments: an instructor may grade with nbgrader's own `autograde`
(which runs the learner's notebook in one kernel and reads each grade cell's output) or with
`dropout-course grade` (the judge: checks computed outside the learner's code). For honest submissions the
two must agree on every grade cell. The end-to-end test builds a temporary nbgrader course from the ex01
source (`nbgrader generate_assignment`), autogrades two submissions with nbgrader (`nbgrader autograde`)
and with `dropout-course grade`, and compares the points of every grade cell: a full solution and a partly
wrong one (kept units scaled by p, a learner's warning on stderr, one task left undone). That the untouched
learner copy scores 0 in every grade cell, read the nbgrader way, is checked on every run of the exercise
notebooks (`exercises/conftest.py`).
"""

from __future__ import annotations

import csv
import html
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import nbformat
import pytest
from IPython.core.formatters import DisplayFormatter

from dropout_course import cli
from dropout_course.grading import EXERCISES, Grader
from dropout_course.instructor.plan import check_calls
from dropout_course.instructor.release import repo_root

ROOT = repo_root()
EX = "ex01_inverted_dropout"
SOURCE = ROOT / "exercises" / "source" / EX / f"{EX}.ipynb"
RELEASE = ROOT / "exercises" / "release" / EX / f"{EX}.ipynb"

WRONG_FORWARD = """def dropout_forward(x, p, training=True):
    if not training:
        return x
    keep = (torch.rand_like(x) >= p).to(x.dtype)
    return x * keep * p  # the mistake: kept units scaled by p instead of 1/(1-p)
"""

NOISY_NUMPY_FORWARD = """import warnings


def dropout_forward_numpy(x, p, mode, rng):
    warnings.warn("my debugging note")  # goes to stderr: nbgrader gives 0 to a cell with stderr output
    if mode == "test" or p == 0.0:
        return x.copy(), {"mask": None, "mode": mode}
    mask = (rng.random(x.shape) >= p) / (1.0 - p) if p < 1.0 else np.zeros(x.shape)
    return x * mask, {"mask": mask, "mode": mode}
"""


def _grade_id(cell) -> str | None:
    meta = cell.get("metadata", {}).get("nbgrader", {})
    return meta.get("grade_id") if isinstance(meta, dict) else None


def _solutions() -> dict[str, str]:
    """The source's solution cells by grade id (their error text reworded: the course's own solutions, copied
    verbatim, are recognised by the originality check, which is not what this test is about)."""
    nb = nbformat.read(SOURCE, as_version=4)
    reword = ("is not a drop probability in [0, 1]", "must lie in [0, 1] (reworded by the learner)")
    return {
        _grade_id(c): c.source.replace(*reword)
        for c in nb.cells
        if c.metadata.get("nbgrader", {}).get("solution")
    }


def _submission(answers: dict[str, str]) -> nbformat.NotebookNode:
    """The learner copy with the given solution cells filled in (by grade id)."""
    nb = nbformat.read(RELEASE, as_version=4)
    for cell in nb.cells:
        if _grade_id(cell) in answers:
            cell.source = answers[_grade_id(cell)]
    return nb


SUBMISSIONS = {
    "full": lambda: _submission(_solutions()),
    "partial": lambda: _submission(
        {
            "dropout_forward_solution": WRONG_FORWARD,
            "Dropout_solution": _solutions()["Dropout_solution"],
            "dropout_forward_numpy_solution": NOISY_NUMPY_FORWARD,
        }
    ),
}  # the untouched learner copy: every grade cell scores 0 in nbgrader's reading too (exercises/conftest.py)


def test_a_check_result_shows_its_score_as_plain_text_and_its_feedback_as_html():
    """nbgrader reads a grade cell's plain-text result as its partial credit."""
    result = Grader(EX).check("dropout_forward", lambda x, p, training=True: x * p)
    data, _ = DisplayFormatter().format(result)
    assert 0 < result.score < result.max_score
    assert float(data["text/plain"]) == result.score
    diagnosis = next(p.diagnosis for p in result.properties if not p.passed)
    assert html.escape(diagnosis) in data["text/html"]


def test_stderr_written_during_a_check_goes_to_stdout(capsys):
    def noisy(x, p, training=True):
        print("debugging", file=sys.stderr)
        return x

    Grader(EX).check("dropout_forward", noisy)
    captured = capsys.readouterr()
    assert "debugging" in captured.out and "debugging" not in captured.err


@pytest.mark.parametrize("exercise", sorted(EXERCISES))
def test_every_grade_cell_holds_one_check_worth_its_points_as_its_result(exercise):
    """One check per grade cell, as the cell's last expression, worth exactly the cell's nbgrader points."""
    specs = Grader(exercise).specs
    nb = json.loads((ROOT / "exercises" / "source" / exercise / f"{exercise}.ipynb").read_text("utf-8"))
    checked = []
    for cell in nb["cells"]:
        meta = cell["metadata"].get("nbgrader", {})
        if not meta.get("grade") or cell["cell_type"] != "code":
            continue
        source = "".join(cell["source"])
        calls = check_calls(source)
        code = [line for line in source.splitlines() if line.strip() and not line.startswith("#")]
        if (
            not calls
        ):  # an instructor's check without points (e.g. that a worked example came out as expected)
            assert meta["points"] == 0, (exercise, meta["grade_id"])
            continue
        assert len(calls) == 1, (exercise, meta["grade_id"], "one check per grade cell")
        assert code[-1].startswith("grader.check("), (exercise, meta["grade_id"], "the check is the result")
        assert meta["grade_id"] == f"check_{calls[0].name}", (exercise, meta["grade_id"])
        assert meta["points"] == specs[calls[0].name].max_score, (exercise, meta["grade_id"])
        checked.append(calls[0].name)
    assert sorted(checked) == sorted(specs), (exercise, "every check has its grade cell")


def _nbgrader(course: Path, *args: str) -> None:
    proc = subprocess.run(
        [sys.executable, "-m", "nbgrader", *args],
        cwd=course,
        capture_output=True,
        text=True,
        timeout=600,
        # nbgrader runs `alembic` (its database migrations) from the PATH: the environment's own scripts first
        env={**os.environ, "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}"},
    )
    assert proc.returncode == 0, (
        f"nbgrader {' '.join(args)} failed:\n{proc.stdout[-3000:]}\n{proc.stderr[-3000:]}"
    )


def _nbgrader_scores(course: Path) -> dict[str, dict[str, float]]:
    from nbgrader.api import Gradebook

    scores = {}
    with Gradebook(f"sqlite:///{course / 'gradebook.db'}") as gradebook:
        for student in SUBMISSIONS:
            notebook = gradebook.find_submission_notebook(EX, EX, student)
            scores[student] = {g.name: g.score for g in notebook.grades}
    return scores


def _course_scores(paths: dict[str, Path], out: Path) -> dict[str, dict[str, float]]:
    assert cli.main(["grade", *map(str, paths.values()), "--out", str(out), "--jobs", "2"]) == 0
    with open(out, newline="") as fh:
        rows = {Path(r["submission"]).parent.name: r for r in csv.DictReader(fh)}
    specs = Grader(EX).specs
    return {student: {f"check_{name}": float(rows[student][name]) for name in specs} for student in paths}


@pytest.mark.slow
def test_nbgrader_autograde_agrees_with_dropout_course_grade_on_every_grade_cell(tmp_path):
    course = tmp_path / "course"
    shutil.copytree(SOURCE.parent, course / "source" / EX)
    (course / "nbgrader_config.py").write_text(
        "c = get_config()\n"
        f"c.CourseDirectory.root = {str(course)!r}\n"
        "c.CourseDirectory.course_id = 'dropout-course'\n"
        "c.ExecutePreprocessor.timeout = 300\n"
    )
    _nbgrader(course, "generate_assignment", EX, "--force")
    paths = {}
    for student, build in SUBMISSIONS.items():
        path = course / "submitted" / student / EX / f"{EX}.ipynb"
        path.parent.mkdir(parents=True)
        nbformat.write(build(), path)
        paths[student] = path
    copies = {s: tmp_path / "submissions" / s / p.name for s, p in paths.items()}  # graded by the judge
    for student, path in paths.items():
        copies[student].parent.mkdir(parents=True)
        shutil.copy(path, copies[student])
    _nbgrader(course, "autograde", EX, "--create")

    by_nbgrader = _nbgrader_scores(course)
    by_judge = _course_scores(copies, tmp_path / "grades.csv")
    for student in SUBMISSIONS:
        graded_cells = {
            cell: score for cell, score in by_nbgrader[student].items() if cell.startswith("check_")
        }
        assert graded_cells == pytest.approx(by_judge[student]), student
    full = sum(by_judge["full"].values())
    assert full == Grader(EX).max_total
    assert 0 < sum(by_judge["partial"].values()) < full
    partial = by_judge["partial"]
    assert 0 < partial["check_dropout_forward"] < 11 and partial["check_dropout_forward_numpy"] == 6
    assert partial["check_dropout_backward_numpy"] == 0
