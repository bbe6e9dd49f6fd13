"""`dropout-course release`: learner copies made by nbgrader's own preprocessors (no solution or hidden test
left), idempotent, never destructive; clear errors for a bad source or a missing nbgrader."""

from __future__ import annotations

import copy
import hashlib
import json
import shutil
import subprocess
import sys
from pathlib import Path

import nbformat
import pytest

from dropout_course import cli
from dropout_course.instructor.release import (
    NbgraderMissing,
    ReleaseError,
    find_sources,
    is_pristine,
    release,
    release_notebook,
    repo_root,
    solution_and_hidden_lines,
)

ROOT = repo_root()
SOURCES = find_sources(ROOT / "exercises" / "source")


def test_there_are_sources_and_their_release_copies_are_up_to_date():
    assert SOURCES, "no exercise notebooks under exercises/source"
    report = release(check=True)
    assert not report.out_of_date, "run `dropout-course release`: " + "; ".join(report.lines(ROOT))


@pytest.mark.parametrize("src", SOURCES, ids=[p.parent.name for p in SOURCES])
def test_no_solution_or_hidden_line_reaches_the_release(src):
    source = nbformat.read(src, as_version=4)
    secret = set(solution_and_hidden_lines(source))
    assert secret, "a source exercise without any solution region"
    released = nbformat.read(ROOT / "exercises" / "release" / src.parent.name / src.name, as_version=4)
    for cell in released.cells:
        for marker in ("BEGIN SOLUTION", "END SOLUTION", "HIDDEN TESTS"):
            assert marker not in cell.source
        lines = {ln.strip() for ln in cell.source.split("\n")}
        leaked = secret & lines
        assert not leaked, f"solution/hidden lines in the release: {leaked}"
        if cell.cell_type == "code":
            assert cell.outputs == [] and cell.execution_count is None
    n_solutions = sum(1 for c in source.cells if c.metadata.get("nbgrader", {}).get("solution"))
    stubs = sum("raise NotImplementedError()" in c.source for c in released.cells)
    assert stubs >= n_solutions
    assert is_pristine(ROOT / "exercises" / "release" / src.parent.name / src.name)


def _cell(source: str, cell_type: str = "code", **nbgrader):
    """A cell with nbgrader metadata (``grade_id`` "f", no other flag unless given)."""
    new = nbformat.v4.new_code_cell if cell_type == "code" else nbformat.v4.new_markdown_cell
    cell = new(source)
    flags = {"solution": False, "grade": False, "locked": False, **nbgrader}
    cell.metadata["nbgrader"] = {"grade_id": "f", "schema_version": 3, **flags}
    return cell


def _notebook(*cells) -> nbformat.NotebookNode:
    nb = nbformat.v4.new_notebook()
    nb.cells = list(cells)
    return nb


def test_functions_keep_their_signature_and_stub_is_indented():
    nb = _notebook(
        _cell(
            "def f(x):\n    '''Doc.'''\n    ### BEGIN SOLUTION\n    return 2 * x\n    ### END SOLUTION",
            solution=True,
        ),
        _cell(
            "assert f(1) == 2\n### BEGIN HIDDEN TESTS\nassert f(2) == 4\n### END HIDDEN TESTS",
            grade=True,
            points=1,
        ),
        _cell("My answer.", "markdown", solution=True),
    )
    nb.cells[0].outputs = [nbformat.v4.new_output("stream", text="out")]
    nb.cells[0].execution_count = 3
    out = release_notebook(nb, "demo")
    assert [c.source for c in out.cells] == [
        "def f(x):\n    '''Doc.'''\n    # YOUR CODE HERE\n    raise NotImplementedError()",
        "assert f(1) == 2",
        "YOUR ANSWER HERE",
    ]
    assert out.cells[0].outputs == [] and out.cells[0].execution_count is None
    assert nb.cells[0].source.startswith("def f(x):\n    '''Doc.'''\n    ### BEGIN")  # input not modified
    assert nb.cells[0].execution_count == 3


@pytest.mark.parametrize(
    "cell, error",
    [
        (_cell("x = 1\n### BEGIN SOLUTION\nx = 2", solution=True), "no end solution statement found"),
        (
            _cell("### BEGIN SOLUTION\n### BEGIN SOLUTION\n### END SOLUTION", solution=True),
            "nested begin solution",
        ),
        (
            _cell("### BEGIN SOLUTION\nx = 2\n### END SOLUTION"),
            "Solution region detected in a non-solution cell",
        ),
        (_cell("### BEGIN HIDDEN TESTS\nassert x\n### END HIDDEN TESTS"), "Hidden test region detected"),
        (
            _cell("### BEGIN HIDDEN TESTS\nassert x", grade=True, points=1),
            "No end hidden tests statement found",
        ),
    ],
    ids=[
        "unclosed",
        "nested",
        "solution-outside-solution-cell",
        "hidden-outside-grade-cell",
        "unclosed-hidden",
    ],
)
def test_a_source_nbgrader_rejects_is_named_by_notebook_and_cell(tmp_path, capsys, cell, error):
    nb = _notebook(nbformat.v4.new_markdown_cell("Intro"), cell)
    with pytest.raises(ReleaseError) as caught:
        release_notebook(nb, "demo", "demo/demo.ipynb")
    message = str(caught.value)
    assert message.startswith("demo/demo.ipynb cell 1 (grade id 'f'): ") and error in message
    src, rel = tmp_path / "source", tmp_path / "release"
    (src / "demo").mkdir(parents=True)
    nbformat.write(nb, src / "demo" / "demo.ipynb")
    assert cli.main(["release", "--source", str(src), "--release-dir", str(rel)]) == 2
    out = capsys.readouterr().out
    assert out == f"dropout-course release: {message}\n" and not rel.exists()


@pytest.mark.parametrize("command", ["release", "grade"])
def test_without_nbgrader_the_cli_says_what_to_install(tmp_path, capsys, monkeypatch, command):
    monkeypatch.setitem(sys.modules, "nbgrader", None)  # `import nbgrader` fails as if it were not installed
    with pytest.raises(NbgraderMissing):
        release_notebook(_notebook(_cell("x", solution=True)), "demo")
    args = {
        "release": ["release", "--release-dir", str(tmp_path / "release")],
        "grade": ["grade", str(tmp_path / "a.ipynb"), "--out", str(tmp_path / "grades.csv")],
    }[command]
    assert cli.main(args) == 2
    out = capsys.readouterr().out
    assert out == (
        f"dropout-course {command}: nbgrader is not installed (instructor tooling): "
        "pip install 'dropout-course[instructor]'\n"
    )
    assert not any(tmp_path.iterdir())


def test_importing_the_judges_plan_does_not_import_nbgrader():
    code = "import sys, dropout_course.instructor.plan; print('nbgrader' in sys.modules)"
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert result.stdout.strip() == "False"


def _tree(tmp_path: Path) -> tuple[Path, Path]:
    src, rel = tmp_path / "source", tmp_path / "release"
    for path in SOURCES[:1]:
        (src / path.parent.name).mkdir(parents=True)
        shutil.copy(path, src / path.parent.name / path.name)
    return src, rel


def _digest(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def test_release_is_idempotent_and_check_reports_staleness(tmp_path, capsys):
    src, rel = _tree(tmp_path)
    args = ["release", "--source", str(src), "--release-dir", str(rel)]
    assert cli.main([*args, "--check"]) == 1 and "missing" in capsys.readouterr().out
    assert cli.main(args) == 0
    target = next(rel.glob("*/*.ipynb"))
    first = _digest(target)
    assert cli.main(args) == 0 and "up to date" in capsys.readouterr().out
    assert _digest(target) == first
    assert cli.main([*args, "--check"]) == 0
    # the source changes: --check fails naming the file, release updates the pristine copy
    source_path = next(src.glob("*/*.ipynb"))
    nb = nbformat.read(source_path, as_version=4)
    nb.cells[0].source += "\n\nA new sentence."
    nbformat.write(nb, source_path)
    assert cli.main([*args, "--check"]) == 1
    assert "OUT OF DATE" in capsys.readouterr().out and _digest(target) == first
    assert cli.main(args) == 0 and _digest(target) != first


def test_learner_work_is_never_overwritten_without_force(tmp_path, capsys):
    src, rel = _tree(tmp_path)
    assert release(src, rel).written
    target = next(rel.glob("*/*.ipynb"))
    nb = json.loads(target.read_text())
    for cell in nb["cells"]:
        if "raise NotImplementedError()" in "".join(cell["source"]):
            cell["source"] = "def my_work():\n    return 42\n"
            break
    target.write_text(json.dumps(nb))
    learner = _digest(target)
    stray = rel / target.parent.name / "notes.ipynb"
    stray.write_text("{}")
    # the source changes too, so the release would differ
    source_path = next(src.glob("*/*.ipynb"))
    snb = nbformat.read(source_path, as_version=4)
    snb.cells[0].source += " (updated)"
    nbformat.write(snb, source_path)
    assert cli.main(["release", "--source", str(src), "--release-dir", str(rel)]) == 1
    out = capsys.readouterr().out
    assert "REFUSED" in out and "--force" in out and "nothing was lost" in out
    assert _digest(target) == learner and stray.read_text() == "{}"
    assert "has no source notebook (left alone)" in out
    report = release(src, rel, force=True)
    assert target in report.written and stray.read_text() == "{}"
    assert is_pristine(target)


# --------------------------------------------------------------------------- nbgrader accepts the sources


@pytest.mark.parametrize("src", SOURCES, ids=[p.parent.name for p in SOURCES])
def test_the_committed_copies_are_nbgrader_preprocessors_output(src):
    """The sources pass CheckCellMetadata, and every committed release cell is exactly what nbgrader's
    ClearSolutions, ClearOutput and ClearHiddenTests (generate_assignment's order) make of the source."""
    from nbgrader.preprocessors import CheckCellMetadata, ClearHiddenTests, ClearOutput, ClearSolutions

    nb = nbformat.read(src, as_version=4)
    resources: dict = {}
    checked, resources = CheckCellMetadata().preprocess(copy.deepcopy(nb), resources)
    ids = [c.metadata["nbgrader"]["grade_id"] for c in nb.cells if "nbgrader" in c.metadata]
    assert len(ids) == len(set(ids)), "grade ids must be unique"
    for cell in nb.cells:
        meta = cell.metadata.get("nbgrader")
        if meta:
            assert meta["schema_version"] == 3
            if meta.get("grade"):  # 0 is allowed: ex02's hidden check of the worked example is worth nothing
                assert meta["points"] >= 0, f"{meta['grade_id']}: points {meta['points']!r}"
    theirs = copy.deepcopy(nb)
    for pre in (ClearSolutions(), ClearOutput(), ClearHiddenTests()):
        theirs, resources = pre.preprocess(theirs, resources)
    committed = nbformat.read(ROOT / "exercises" / "release" / src.parent.name / src.name, as_version=4)
    assert len(committed.cells) == len(theirs.cells)
    for i, (ours, expected) in enumerate(zip(committed.cells, theirs.cells, strict=True)):
        assert ours == expected, f"{src.parent.name} cell {i} differs from nbgrader's release"


def test_the_judge_reinserts_a_deleted_solution_cell_as_its_release_stub():
    from dropout_course.instructor import plan

    src = SOURCES[0]
    release_path = ROOT / "exercises" / "release" / src.parent.name / src.name
    source, _ = plan.parse_submission(src.read_bytes())
    submission, _ = plan.parse_submission(release_path.read_bytes())
    index = next(i for i, c in enumerate(submission["cells"]) if plan.nbgrader_meta(c).get("solution"))
    deleted = submission["cells"].pop(index)
    graded, notes = plan.build_graded_notebook(submission, source)
    assert notes == [f"missing cells re-inserted from the source: {plan.grade_id(deleted)}"]
    assert graded["cells"][index]["source"] == deleted["source"]
    assert "raise NotImplementedError()" in deleted["source"]
