"""`dropout-course grade` against learners who try to set their own score, and against broken submissions.

Every attack of issue 14 is a submission built from the ex01 source with the solutions removed (the
release stubs) and the attack in a solution cell. They are graded in ONE `grade` run (2 jobs) so that the
file stays fast; each test then reads its row. The honest control is the source notebook with its
solutions (their error text reworded, so the fingerprint of the course's own solutions does not match).
"""

from __future__ import annotations

import csv
import hashlib
import os
import time
from pathlib import Path

import nbformat
import pytest

from dropout_course import cli
from dropout_course.instructor import wire
from dropout_course.instructor.autograde import build_graded_notebook
from dropout_course.instructor.release import release_cell, repo_root

ROOT = repo_root()
EX = "ex01_inverted_dropout"
SOURCE = ROOT / "exercises" / "source" / EX / f"{EX}.ipynb"
RELEASE = ROOT / "exercises" / "release" / EX / f"{EX}.ipynb"
FULL = 45.0
AS_ROOT = os.geteuid() == 0
needs_root = pytest.mark.skipif(
    not AS_ROOT, reason="the sandbox drops privileges only when grading runs as root"
)

PACKAGE_FILES = [
    ROOT / "dropout_course" / "grading" / "core.py",
    ROOT / "dropout_course" / "grading" / "ex01_inverted_dropout.py",
    ROOT / "dropout_course" / "grading" / "__init__.py",
]


def _gid(cell):
    meta = cell.metadata.get("nbgrader", {})
    return meta.get("grade_id") if isinstance(meta, dict) else None


def _honest(text: str) -> str:
    return text.replace("is not a drop probability in [0, 1]", "must lie in [0, 1] (reworded by the learner)")


def notebook(
    solved=(), replace: dict[str, str] | None = None, source: Path = SOURCE
) -> nbformat.NotebookNode:
    """``source`` with solution cells stubbed out except ``solved`` (honest) and ``replace`` (given text)."""
    nb = nbformat.read(source, as_version=4)
    for cell in nb.cells:
        gid = _gid(cell)
        if not cell.metadata.get("nbgrader", {}).get("solution"):
            continue
        if replace and gid in replace:
            cell.source = replace[gid]
        elif solved == "all" or gid in solved:
            cell.source = _honest(cell.source)
        else:
            cell.source = release_cell(cell).source
    return nb


FORGED_ROW = {"exercise": EX, "check": "dropout_forward", "score": 99.0, "max_score": 11.0, "passed": True}

ATTACKS = {
    # replacing Property.test and Grader.check from a solution cell
    "patch_checks": """
from dropout_course.grading import core
core.Property.test = property(lambda self: (lambda ctx: None))
def check(self, name, candidate=None, **extra):
    result = core.CheckResult(self.exercise, name, [core.PropertyResult("forged", 99.0, 99.0, True)])
    self.results[name] = result
    return result
core.Grader.check = check
""",
    "rebind_grader": """
class Forged:
    total = max_total = 45
    def check(self, *args, **kwargs):
        return None
    def summary(self):
        return "45/45"
grader = Forged()
""",
    "write_results_file": f"""
import json, os
row = json.dumps({FORGED_ROW!r})
for path in (os.environ.get("DROPOUT_COURSE_RESULTS", ""), "results.jsonl", "../results.jsonl"):
    try:
        with open(path, "a") as fh:
            fh.write(row + "\\n")
    except OSError:
        pass
""",
    "forge_and_kill": """
import json, os
line = (json.dumps({"event": "row", "row": {"total": 45, "max_total": 45, "status": "graded"}}) + "\\n").encode()
for fd in range(0, 64):
    try:
        os.write(fd, line)
    except OSError:
        pass
for pid in (os.getppid(), 1):
    try:
        os.kill(pid, 9)
    except OSError:
        pass
os._exit(0)
""",
    "detached_rewriter": """
import os, time
if os.fork() == 0:
    os.setsid()
    if os.fork() == 0:
        time.sleep(2)
        for path in GRADEBOOKS:
            try:
                open(path, "a").write("detached,ex01_inverted_dropout,45,45,graded,,\\n")
            except OSError:
                pass
    os._exit(0)
""",
    "edit_package": """
import dropout_course.grading.core as core, dropout_course.grading as grading
import dropout_course.grading.ex01_inverted_dropout as ex01
for path in (core.__file__, ex01.__file__, grading.__file__):
    try:
        with open(path, "a") as fh:
            fh.write("\\nProperty.test = property(lambda self: (lambda ctx: None))\\n")
    except OSError:
        pass
""",
    "delete_classmates": """
import glob, os
for path in glob.glob(SUBMISSIONS + "/*.ipynb"):
    try:
        os.remove(path)
    except OSError:
        pass
    try:
        open(path, "w").write("{}")
    except OSError:
        pass
""",
}
LOOPING = """
import signal
def dropout_forward(x, p, training=True):
    signal.signal(signal.SIGALRM, signal.SIG_IGN)
    signal.setitimer(signal.ITIMER_REAL, 0)
    while True:
        pass
"""


@pytest.fixture(scope="module")
def graded(tmp_path_factory):
    d = tmp_path_factory.mktemp("submissions")
    out_dir = tmp_path_factory.mktemp("gradebook")
    out = out_dir / "grades.csv"
    subs: dict[str, Path] = {}

    def put(name, nb=None, text=None):
        path = d / f"{name}.ipynb"
        if nb is not None:
            nbformat.write(nb, path)
        else:
            path.write_text(text)
        subs[name] = path

    put("honest", notebook("all"))
    put("empty", nbformat.read(RELEASE, as_version=4))
    for name, code in ATTACKS.items():
        code = code.replace("GRADEBOOKS", repr([str(out)])).replace("SUBMISSIONS", repr(str(d)))
        put(name, notebook(replace={"dropout_forward_solution": code}))
    # learner code that cancels the judge's alarm and loops: only dropout_forward's checks are lost
    put("cancel_alarm_loop", notebook("all", replace={"dropout_forward_solution": LOOPING}))
    # a hang and a crash in top-level cells: the cells are skipped, every other task is judged
    hang = notebook("all")
    hang.cells.insert(3, nbformat.v4.new_code_cell("while True:\n    pass"))
    put("hang_cell", hang)
    put("exit_in_Dropout", notebook("all", replace={"Dropout_solution": "import os\nos._exit(3)"}))
    corrupt = notebook("all")
    next(c for c in corrupt.cells if _gid(c) == "Dropout_solution").metadata["nbgrader"] = "x"
    put("corrupt_metadata", corrupt)
    unknown = nbformat.read(RELEASE, as_version=4)
    unknown.metadata["dropout_course"] = {"exercise": "ex99_unknown"}
    for cell in unknown.cells:
        cell.metadata.pop("nbgrader", None)
    put("unknown_exercise", unknown)
    put("not_json", text="{ this is not json")
    put("not_notebook", text='{"hello": "world"}')
    before = {k: hashlib.sha256(p.read_bytes()).hexdigest() for k, p in subs.items()}
    lines: list[str] = []
    started = time.monotonic()
    code = cli.main(
        [
            "grade",
            *map(str, subs.values()),
            "--out",
            str(out),
            "--jobs",
            "2",
            "--timeout",
            "8",
            "--call-timeout",
            "2",
        ]
    )
    seconds = time.monotonic() - started
    with open(out, newline="") as fh:
        rows = {Path(r["submission"]).stem: r for r in csv.DictReader(fh)}
    time.sleep(3)  # a detached process would rewrite the gradebook now
    after = {
        k: hashlib.sha256(p.read_bytes()).hexdigest() if p.exists() else "deleted" for k, p in subs.items()
    }
    return {
        "code": code,
        "rows": rows,
        "before": before,
        "after": after,
        "out": out,
        "gradebook_after": out.read_text(),
        "lines": lines,
        "seconds": seconds,
    }


def total(graded, name) -> float:
    return float(graded["rows"][name]["total"])


def test_every_submission_gets_a_row_and_no_file_is_touched(graded):
    assert graded["code"] == 0
    assert len(graded["rows"]) == 2 + len(ATTACKS) + 7
    assert graded["before"] == graded["after"], "a submission file was modified or deleted by grading"


def test_honest_solution_gets_full_marks_and_empty_release_gets_zero(graded):
    honest, empty = graded["rows"]["honest"], graded["rows"]["empty"]
    assert honest["status"] == "graded" and honest["reason"] == "" and honest["integrity"] == ""
    assert float(honest["total"]) == float(honest["max_total"]) == FULL
    assert float(honest["dropout_forward_hidden"]) > 0  # hidden checks are judged
    assert empty["status"] == "graded" and float(empty["total"]) == 0 and float(empty["max_total"]) == FULL


@pytest.mark.parametrize("attack", ["patch_checks", "rebind_grader", "write_results_file", "forge_and_kill"])
def test_learner_cannot_set_their_own_score(graded, attack):
    row = graded["rows"][attack]
    assert total(graded, attack) == 0, row
    if attack != "forge_and_kill":  # the attack itself ran (it did not just fail)
        assert "raised" not in row["reason"], row["reason"]
    if AS_ROOT or attack != "forge_and_kill":  # as the same user, killing the judge is possible (row error)
        assert float(row["max_total"]) == FULL and row["status"] == "graded"


@needs_root
def test_detached_process_cannot_rewrite_the_gradebook(graded):
    row = graded["rows"]["detached_rewriter"]
    assert total(graded, "detached_rewriter") == 0
    assert "detached" not in graded["gradebook_after"].split("\n", 1)[1].split(",")[0]
    assert "detached,ex01" not in graded["gradebook_after"]
    assert "background process" in row["integrity"]


@needs_root
def test_package_on_disk_cannot_be_edited_and_later_submissions_are_graded_honestly(graded):
    for path in PACKAGE_FILES:
        assert b"PWNED-ON-DISK" not in path.read_bytes(), f"{path} was edited by a submission"
    assert total(graded, "edit_package") == 0
    assert total(graded, "honest") == FULL and total(graded, "empty") == 0


@needs_root
def test_classmates_submissions_cannot_be_deleted(graded):
    assert total(graded, "delete_classmates") == 0
    for attack in ("detached_rewriter", "edit_package", "delete_classmates"):
        assert "raised" not in graded["rows"][attack]["reason"]
    assert graded["after"]["honest"] == graded["before"]["honest"]
    # No file of a classmate changed and no process was started: no integrity note at all (processes an
    # earlier submission's sandbox left are not counted against this one: tests/test_grading_sandbox.py)
    assert graded["rows"]["delete_classmates"]["integrity"] == ""


def test_cancelled_alarm_and_endless_loop_cost_only_the_tasks_that_call_it(graded):
    row = graded["rows"]["cancel_alarm_loop"]
    assert float(row["dropout_forward"]) == 0 and float(row["dropout_forward_hidden"]) == 0
    assert float(row["Dropout"]) < 14  # the solution's Dropout.forward calls the looping dropout_forward
    assert float(row["dropout_forward_numpy"]) == 6 and float(row["dropout_backward_numpy"]) == 3
    assert row["status"] == "graded"


def test_a_hanging_cell_and_a_crashing_cell_cost_only_what_they_hold(graded):
    hang = graded["rows"]["hang_cell"]
    assert float(hang["total"]) == FULL and "skipped" in hang["reason"]
    crash = graded["rows"]["exit_in_Dropout"]
    assert float(crash["Dropout"]) == 0
    assert float(crash["total"]) == FULL - 14, crash
    assert crash["status"] == "graded" and "`Dropout` is undefined" in crash["reason"]
    assert "Dropout_solution) skipped" in crash["reason"]


def test_statuses_and_one_line_reasons(graded):
    rows = graded["rows"]
    corrupt = rows["corrupt_metadata"]
    assert "corrupt nbgrader metadata" in corrupt["reason"] and corrupt["status"] in ("graded", "incomplete")
    assert rows["unknown_exercise"]["status"] == "error"
    assert "cannot tell which exercise" in rows["unknown_exercise"]["reason"]
    assert rows["not_json"]["status"] == "error" and "not valid JSON" in rows["not_json"]["reason"]
    assert "not a Jupyter notebook" in rows["not_notebook"]["reason"]
    for row in rows.values():
        assert row["status"] in ("graded", "incomplete", "error")
        assert "\n" not in row["reason"]


def test_out_folder_is_validated_before_grading(tmp_path, capsys):
    sub = tmp_path / "a.ipynb"
    nbformat.write(nbformat.read(RELEASE, as_version=4), sub)
    code = cli.main(["grade", str(sub), "--out", str(tmp_path / "missing" / "grades.csv")])
    assert code == 2 and "does not exist" in capsys.readouterr().out
    code = cli.main(["grade", str(sub), "--out", str(tmp_path)])
    assert code == 2 and "is a folder" in capsys.readouterr().out


def test_resume_skips_graded_rows_and_exercise_pins(tmp_path, capsys):
    done, new = tmp_path / "done.ipynb", tmp_path / "new.ipynb"
    nbformat.write(nbformat.read(RELEASE, as_version=4), done)
    anonymous = nbformat.read(RELEASE, as_version=4)  # no metadata, no grade ids: only --exercise can tell
    anonymous.metadata = {}
    for cell in anonymous.cells:
        cell.metadata.pop("nbgrader", None)
    nbformat.write(anonymous, new)
    out = tmp_path / "grades.csv"
    out.write_text(
        f"submission,exercise,total,max_total,status,reason,integrity\n{done},{EX},7,45,graded,,\n"
    )
    code = cli.main(["grade", str(done), str(new), "--out", str(out), "--resume", "--exercise", EX])
    assert code == 0
    printed = capsys.readouterr().out
    assert "[1/1]" in printed and str(new) in printed
    with open(out, newline="") as fh:
        rows = {Path(r["submission"]).name: r for r in csv.DictReader(fh)}
    assert rows["done.ipynb"]["total"] == "7"  # kept, not graded again
    assert rows["new.ipynb"]["exercise"] == EX and rows["new.ipynb"]["status"] == "graded"


def test_worker_replies_are_never_unpickled():
    import pickle

    class Boom:
        def __reduce__(self):
            return (os.system, ("echo pwned",))

    with pytest.raises(wire.ChannelClosed):
        wire.load_reply(pickle.dumps(Boom()))


def test_locked_cells_are_replaced_by_the_source():
    nb = notebook("all")
    for cell in nb.cells:
        if _gid(cell) == "check_dropout_forward":
            cell.source = "print('full marks please')"
    graded, notes = build_graded_notebook(nb, nbformat.read(SOURCE, as_version=4))
    sources = [c["source"] for c in graded["cells"]]
    assert 'grader.check("dropout_forward", dropout_forward)' in sources
    assert "print('full marks please')" not in sources
    assert any("dropout_forward_hidden" in s for s in sources) and notes == []


ALL = ["ex01_inverted_dropout", "ex03_spatial_dropout", "ex04_locked_dropout", "ex05_attention_dropout"]
ALL += ["ex06_mc_dropout", "ex07_thompson_sampling", "ex08_dropout_theory", "ex09_debug_dropout"]
# ex02 trains networks (about a minute): not here (its solution's full marks are proven in-kernel by nbval)


@pytest.fixture(scope="module")
def every_exercise(tmp_path_factory):
    d = tmp_path_factory.mktemp("every")
    paths = []
    for ex in ALL:
        full = notebook("all", source=ROOT / "exercises" / "source" / ex / f"{ex}.ipynb")
        nbformat.write(full, d / f"full_{ex}.ipynb")
        nbformat.write(
            nbformat.read(ROOT / "exercises" / "release" / ex / f"{ex}.ipynb", as_version=4),
            d / f"empty_{ex}.ipynb",
        )
        paths += [d / f"full_{ex}.ipynb", d / f"empty_{ex}.ipynb"]
    out = d / "grades.csv"
    assert cli.main(["grade", *map(str, paths), "--out", str(out), "--jobs", "2"]) == 0
    with open(out, newline="") as fh:
        return {Path(r["submission"]).stem: r for r in csv.DictReader(fh)}


@pytest.mark.slow
@pytest.mark.parametrize("exercise", ALL)
def test_every_exercise_full_marks_for_a_solution_and_zero_for_the_release(every_exercise, exercise):
    full, empty = every_exercise[f"full_{exercise}"], every_exercise[f"empty_{exercise}"]
    assert full["exercise"] == empty["exercise"] == exercise
    assert full["status"] == "graded" and float(full["total"]) == float(full["max_total"]) > 0, full
    assert empty["status"] == "graded" and float(empty["total"]) == 0, empty
    assert float(empty["max_total"]) == float(full["max_total"])


def test_grading_as_the_same_user_still_judges_outside_the_learner_code(tmp_path, monkeypatch):
    """The path without privilege drop (not root, or DROPOUT_COURSE_GRADE_AS_SELF=1): same verdicts."""
    monkeypatch.setenv("DROPOUT_COURSE_GRADE_AS_SELF", "1")
    honest, attack = tmp_path / "honest.ipynb", tmp_path / "attack.ipynb"
    nbformat.write(notebook("all"), honest)
    nbformat.write(notebook(replace={"dropout_forward_solution": ATTACKS["patch_checks"]}), attack)
    out = tmp_path / "grades.csv"
    assert cli.main(["grade", str(honest), str(attack), "--out", str(out)]) == 0
    with open(out, newline="") as fh:
        rows = {Path(r["submission"]).stem: r for r in csv.DictReader(fh)}
    assert float(rows["honest"]["total"]) == FULL and float(rows["attack"]["total"]) == 0


def test_points_survive_the_hard_limit(tmp_path, monkeypatch):
    """A judge stopped at the per-submission hard limit keeps the checks it had judged (status incomplete)."""
    from dropout_course.instructor import autograde

    sleeper = (
        "import time\ndef dropout_backward_numpy(dout, cache):\n    while True:\n        time.sleep(0.1)\n"
    )
    sub = tmp_path / "slow.ipynb"
    nbformat.write(notebook("all", replace={"dropout_backward_numpy_solution": sleeper}), sub)
    monkeypatch.setattr(autograde, "hard_limit", lambda timeout: 15.0)  # the first checks take a few seconds
    out = tmp_path / "grades.csv"
    assert cli.main(["grade", str(sub), "--out", str(out), "--call-timeout", "600"]) == 0
    with open(out, newline="") as fh:
        (row,) = list(csv.DictReader(fh))
    assert row["status"] == "incomplete" and "longer than 15 s" in row["reason"], row
    assert row["exercise"] == EX and float(row["max_total"]) == FULL
    assert float(row["dropout_forward"]) == 11 and float(row["dropout_backward_numpy"]) == 0
    assert float(row["total"]) >= 11
