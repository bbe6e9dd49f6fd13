"""`dropout-course release`: learner copies without solutions or hidden tests, idempotent, never destructive;
and nbgrader's own preprocessors accept the sources."""

from __future__ import annotations

import copy
import hashlib
import json
import shutil
from pathlib import Path

import nbformat
import pytest

from dropout_course import cli
from dropout_course.instructor.release import (
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


def test_functions_keep_their_signature_and_stub_is_indented():
    nb = nbformat.v4.new_notebook()
    cell = nbformat.v4.new_code_cell(
        "def f(x):\n    '''Doc.'''\n    ### BEGIN SOLUTION\n    return 2 * x\n    ### END SOLUTION\n\n"
        "### BEGIN HIDDEN TESTS\nassert f(1) == 2\n### END HIDDEN TESTS"
    )
    cell.metadata["nbgrader"] = {
        "solution": True,
        "grade": False,
        "locked": False,
        "grade_id": "f",
        "schema_version": 3,
    }
    nb.cells = [cell]
    out = release_notebook(nb, "demo")
    assert (
        out.cells[0].source
        == "def f(x):\n    '''Doc.'''\n    # YOUR CODE HERE\n    raise NotImplementedError()"
    )
    assert nb.cells[0].source.startswith("def f(x):\n    '''Doc.'''\n    ### BEGIN")  # input not modified


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
def test_nbgrader_preprocessors_accept_the_sources_and_agree_with_release(src):
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
            if meta.get("grade"):
                assert meta["points"] > 0
    theirs = copy.deepcopy(nb)
    for pre in (ClearSolutions(), ClearHiddenTests(), ClearOutput()):
        theirs, resources = pre.preprocess(theirs, resources)
    ours = release_notebook(nb, src.parent.name)
    assert [c.source.rstrip() for c in ours.cells] == [c.source.rstrip() for c in theirs.cells]
