"""`dropout-course grade` against attacks beyond issue 14's (tests/test_grading_autograde.py has those).

Each attack is an ex01 submission built like the ones of test_grading_autograde.py (the source with
honest solutions, one solution cell replaced by the attack); all are graded in ONE `grade` run. They aim at
the judge (a forged reply that expands into 10**12 items when decoded, tensors that are views of 4 bytes
or live on no device), at the machine (files left in /tmp, /var/tmp and /dev/shm) and at the originality
checks (the course's reference called from a thread). Unit tests cover the decoder's bounds, the
sandbox's isolation (read-only file systems, no network, cgroups), a gradebook folder that others can
write, and a gradebook that cannot be written.
"""

from __future__ import annotations

import csv
import io
import json
import os
import time
from pathlib import Path

import nbformat
import pytest
import torch
from test_grading_autograde import FULL, notebook

from dropout_course import cli
from dropout_course.instructor import isolation, plan, sandbox, wire, zygote
from dropout_course.instructor.autograde import _Run
from dropout_course.instructor.gradebook import Gradebook
from dropout_course.instructor.proxy import Client

AS_ROOT = sandbox.changes_user()
needs_root = pytest.mark.skipif(not AS_ROOT, reason="the sandbox is isolated only when grading runs as root")
MARKER = "dropout_course_attack_marker"

# The worker's reply to the next call is replaced (the learner's code runs in the worker and can reach
# anything there): `value` is what the judge gets back.
FORGE = """
import sys, torch
_wire = sys.modules["dropout_course.instructor." + "wire"]
_dump = _wire.dump_reply
def _forge(value):
    _wire.dump_reply = lambda obj: _dump(
        {"ok": True, "value": value, "mutated": [], "calls": [], "findings": [], "events": []}
    )
"""
ATTACKS = {
    # 3 KB of pickle (shared lists) that the decoder would expand into 10**12 items
    "forged_dag_reply": FORGE
    + """
_bomb = [1.0] * 1000
for _ in range(3):
    _bomb = [_bomb] * 1000
def dropout_forward(x, p, training=True):
    _forge({"$": "list", "items": _bomb})
    return x
""",
    # tensors the worker's honest encoding never makes: a 4-byte storage seen as 4e9 elements, a tensor on
    # the meta device, a sparse one, a Parameter that requires gradients
    "forged_tensor_replies": FORGE
    + """
_bad = [torch.zeros(1).expand(4 * 10**9), torch.empty(4 * 10**9, device="meta"), torch.eye(3).to_sparse(),
        torch.nn.Parameter(torch.ones(3))]
_calls = [0]
def dropout_forward(x, p, training=True):
    _calls[0] += 1
    _forge(_bad[_calls[0] % len(_bad)])
    return x
""",
    # the course's reference, called in a thread of the learner's (the trace followed only the caller)
    "reference_in_a_thread": """
import sys, threading
def dropout_forward(x, p, training=True):
    if not 0 <= p <= 1:
        raise ValueError("p must lie in [0, 1] (the learner's own words)")
    box = {}
    def run():
        box["out"] = sys.modules["dropout_course.layers"].dropout(x, p, training)
    thread = threading.Thread(target=run)
    thread.start()
    thread.join()
    return box["out"]
""",
}
# files in the machine's world-writable folders (they outlived grading and could fill them)
SCRATCH = f"""
import os
for folder in ("/tmp", "/var/tmp", "/dev/shm"):
    for i in range(3):
        try:
            with open(os.path.join(folder, "{MARKER}_%d_%d" % (os.getuid(), i)), "wb") as fh:
                fh.write(b"x" * (8 << 20))
        except OSError:
            pass
"""


def _scratch_files() -> list[str]:
    return [
        f"{d}/{n}" for d in isolation.SCRATCH_DIRS if os.path.isdir(d) for n in os.listdir(d) if MARKER in n
    ]


@pytest.fixture(scope="module")
def graded(tmp_path_factory):
    d = tmp_path_factory.mktemp("attacks")
    out = tmp_path_factory.mktemp("attack_gradebook") / "grades.csv"
    paths = []
    for name, code in ATTACKS.items():
        paths.append(d / f"{name}.ipynb")
        nbformat.write(notebook("all", replace={"dropout_forward_solution": code}), paths[-1])
    scratch = notebook("all")
    scratch.cells.insert(3, nbformat.v4.new_code_cell(SCRATCH))
    paths.append(d / "scratch_files.ipynb")
    nbformat.write(scratch, paths[-1])
    # notebook JSON: nested past the JSON parser's recursion limit; metadata naming another exercise than
    # the cells; a copy of a locked check cell (same grade id) placed before the solution it checks
    deep = nbformat.writes(notebook()).replace(
        '"cells": [', '"deep": ' + "[" * 100_000 + "]" * 100_000 + ', "cells": [', 1
    )
    paths.append(d / "deep_json.ipynb")
    paths[-1].write_text(deep)
    other = notebook()
    other.metadata["dropout_course"] = {"exercise": "ex08_dropout_theory"}
    paths.append(d / "names_another_exercise.ipynb")
    nbformat.write(other, paths[-1])
    repeated = notebook("all")
    check = next(
        c for c in repeated.cells if c.metadata.get("nbgrader", {}).get("grade_id") == "check_dropout_forward"
    )
    repeated.cells.insert(0, nbformat.v4.new_code_cell(check.source, metadata=dict(check.metadata)))
    paths.append(d / "repeated_grade_id.ipynb")
    nbformat.write(repeated, paths[-1])
    # an error message with terminal escape sequences (clear the screen, move the cursor, ring the bell)
    escapes = notebook("all")
    escapes.cells.insert(
        3, nbformat.v4.new_code_cell('raise ValueError("\\x1b[2J\\x1b[1;1Hall graded\\x07")')
    )
    paths.append(d / "terminal_escapes.ipynb")
    nbformat.write(escapes, paths[-1])
    started = time.monotonic()
    args = [
        "grade",
        *map(str, paths),
        "--out",
        str(out),
        "--jobs",
        "2",
        "--timeout",
        "8",
        "--call-timeout",
        "2",
    ]
    code = cli.main(args)
    seconds = time.monotonic() - started
    with open(out, newline="") as fh:
        rows = {Path(r["submission"]).stem: r for r in csv.DictReader(fh)}
    return {"code": code, "rows": rows, "seconds": seconds, "left": _scratch_files()}


def test_forged_replies_fail_the_calls_that_get_them_and_nothing_else(graded):
    assert graded["code"] == 0 and graded["seconds"] < 150, graded["seconds"]
    for name in ("forged_dag_reply", "forged_tensor_replies"):
        row = graded["rows"][name]
        assert row["status"] == "graded", row
        assert float(row["dropout_forward"]) == 0 and float(row["dropout_forward_hidden"]) == 0, row
        assert float(row["dropout_forward_numpy"]) == 6 and float(row["dropout_backward_numpy"]) == 3, row


def test_the_reference_called_from_a_thread_is_not_credited(graded):
    row = graded["rows"]["reference_in_a_thread"]
    assert float(row["dropout_forward"]) == 0 and float(row["dropout_forward_hidden"]) == 0, row
    assert float(row["dropout_forward_numpy"]) == 6, row


@needs_root
def test_files_in_world_writable_folders_do_not_outlive_the_sandbox(graded):
    row = graded["rows"]["scratch_files"]
    assert float(row["total"]) == FULL and row["status"] == "graded", row
    assert graded["left"] == []


def _save(obj) -> bytes:
    buffer = io.BytesIO()
    torch.save(obj, buffer)
    return buffer.getvalue()


def _dag(width: int, levels: int):
    value = [1.0] * width
    for _ in range(levels):
        value = [value] * width
    return {"$": "list", "items": value}


def _deep(depth: int):
    value: list = []
    for _ in range(depth):
        value = [value]
    return value


@pytest.mark.parametrize(
    "forged, why",
    [
        (_dag(1000, 3), "more than 1000000 values"),
        (_deep(300), "nested more than 200 deep"),
        (torch.zeros(1).expand(10**9), "viewing a storage of 4 bytes"),
        (torch.empty(10**9, device="meta"), "on meta"),
        (torch.eye(3).to_sparse(), "sparse_coo"),
        (torch.nn.Parameter(torch.ones(3)), "of class Parameter"),
        ({(1, 2): 3}, "dict key of type tuple"),
    ],
    ids=["dag", "deep", "stride0", "meta", "sparse", "parameter", "tuple_key"],
)
def test_the_decoder_refuses_replies_the_worker_never_makes(forged, why):
    started = time.monotonic()
    with pytest.raises(wire.ChannelClosed, match=why):
        wire.load_reply(_save({"ok": True, "value": forged}))
    assert time.monotonic() - started < 10


def test_the_decoder_refuses_dict_keys_that_decode_to_containers():
    with pytest.raises(wire.ChannelClosed, match="keys are not plain scalars"):
        wire.decode_value({"$": "dict", "items": [[{"$": "list", "items": [1]}, 2]]}, lambda d: d)


def test_an_honest_reply_is_decoded():
    reply = {"ok": True, "value": {"$": "tuple", "items": [torch.ones(2, 3).t().contiguous(), 2.5, "s"]}}
    decoded = wire.decode_value(wire.load_reply(_save(reply))["value"], lambda d: d)
    assert torch.equal(decoded[0], torch.ones(3, 2)) and decoded[1:] == (2.5, "s")


def _namespaces_refused() -> bool:
    """Whether the kernel refuses the sandbox its private mount and network namespaces (e.g. a container
    without CAP_SYS_ADMIN): the isolation tests that need them are skipped."""
    pid = os.fork()
    if pid == 0:
        import ctypes

        os._exit(0 if ctypes.CDLL(None).unshare(isolation.CLONE_NEWNS | isolation.CLONE_NEWNET) == 0 else 1)
    return os.waitpid(pid, 0)[1] != 0


PROBE = """
import os, socket
def _try_write(folder):
    try:
        with open(os.path.join(folder, "probe"), "w") as fh:
            fh.write("x")
        return True
    except OSError:
        return False
def _connects():
    try:
        socket.create_connection(("127.0.0.1", 22), timeout=1).close()
        return True
    except OSError:
        return False
"""


@needs_root
def test_the_sandbox_writes_only_its_scratch_folders_and_has_no_network():
    if _namespaces_refused():
        pytest.skip("the kernel refuses mount and network namespaces here")
    from dropout_course.instructor.release import repo_root

    client = Client(sandbox.start())
    try:
        assert client.request("exec", 0, PROBE)["ok"]
        names = {
            "cwd": "_try_write(os.getcwd())",
            "tmp": "_try_write('/tmp')",
            "repo": f"_try_write({str(repo_root())!r})",
            "net": "_connects()",
        }
        items = client.request("snapshot", names)["items"]
    finally:
        client.lose("done")
    got = {key: item["value"] for key, item in items.items()}
    # /tmp is private (writable) unless Python or the course lives there (a checkout in /tmp): then read-only
    tmp_private = not any(isolation._inside(path, "/tmp") for path in isolation._needed_paths())
    assert got == {"cwd": True, "tmp": tmp_private, "repo": False, "net": False}


@needs_root
def test_a_sandbox_is_first_for_the_oom_killer_and_in_its_own_cgroups():
    client = Client(sandbox.start())
    try:
        items = client.request(
            "snapshot",
            {"oom": "open('/proc/self/oom_score_adj').read()", "cg": "open('/proc/self/cgroup').read()"},
        )["items"]
    finally:
        client.lose("done")
    assert items["oom"]["value"].strip() == "1000"
    uid = client.sandbox.uid
    joined = f"dropout-course-sandbox-{uid}" in items["cg"]["value"]
    dirs = isolation._cgroup_dirs(uid)  # inside the judge's own cgroups, so that their limits still hold
    writable = any(os.access(os.path.dirname(d), os.W_OK) for d in dirs.values())
    assert joined or not writable  # where cgroups can be made, the sandbox is in its own
    assert not any(os.path.exists(d) for d in dirs.values())  # removed at the end


@needs_root
def test_a_gradebook_folder_that_others_can_write_is_refused(tmp_path, capsys):
    shared = tmp_path / "shared"
    shared.mkdir()
    shared.chmod(0o777)
    sub = tmp_path / "a.ipynb"
    nbformat.write(notebook(), sub)
    assert cli.main(["grade", str(sub), "--out", str(shared / "grades.csv")]) == 2
    assert "which other users can change" in capsys.readouterr().out


def test_a_gradebook_that_cannot_be_written_stops_the_run_with_a_reason(tmp_path):
    book = Gradebook(tmp_path / "grades.csv")

    def full_disk():
        raise OSError(28, "No space left on device")

    book.write = full_disk
    sub = tmp_path / "a.ipynb"
    sub.write_bytes(b"{}")
    run = _Run({str(sub): b"{}"}, [str(sub)], book, {"timeout": 1}, None)
    run.record(str(sub), {"submission": str(sub), "total": 1.0, "status": "graded"})
    assert "cannot write the gradebook" in run.stopped and "No space left on device" in run.stopped


def test_notebook_json_tricks_get_clear_reasons(graded):
    rows = graded["rows"]
    deep = rows["deep_json"]
    assert deep["status"] == "error" and "not valid JSON" in deep["reason"] and "recursion" in deep["reason"]
    other = rows["names_another_exercise"]
    assert other["exercise"] == "ex08_dropout_theory" and float(other["total"]) == 0
    assert (
        "metadata names ex08_dropout_theory but its cells' grade ids are ex01_inverted_dropout's"
        in other["reason"]
    )
    repeated = rows["repeated_grade_id"]
    assert "grade ids used by more than one cell (check_dropout_forward)" in repeated["reason"], repeated
    assert float(repeated["dropout_forward"]) == 0  # judged where the first copy stands, before the solution
    assert float(repeated["total"]) == FULL - 11


@pytest.mark.parametrize(
    "module, qualname",
    [
        ("dropout_course.layers", "np.save"),  # numpy through the module's globals
        ("dropout_course.layers", "torch.load"),
        ("dropout_course.layers", "torch.nn.functional.dropout"),
        ("torch.nn.modules.module", "torch.os._exit"),
    ],
)
def test_the_judge_uses_only_objects_defined_under_the_name_the_worker_gives(module, qualname):
    """A forged handle naming a path through another module would have the judge call any function it can
    reach (with a check's arguments)."""
    import dropout_course.layers  # noqa: F401 - loaded, as in the judge
    from dropout_course.instructor.mirror import trusted

    with pytest.raises(wire.WorkerLost, match="refused"):
        trusted(module, qualname)
    assert trusted("dropout_course.layers", "Dropout").__name__ == "Dropout"


@needs_root
def test_without_namespaces_what_a_sandbox_leaves_in_scratch_folders_is_deleted(monkeypatch):
    """Where the kernel refuses the private file systems, the worker writes the machine's /tmp: what its user
    left at the top of the scratch folders is deleted when it ends (not another user's files)."""
    monkeypatch.setattr(isolation, "private_file_systems", lambda uid: None)
    monkeypatch.setattr(zygote, "_current", None)  # given back afterwards
    patched = zygote.fork_early()  # the workers are forked from this process, which has the patch
    client = Client(sandbox.start())
    mine = f"/tmp/{MARKER}_{client.sandbox.uid}"
    try:
        code = f"import os\nopen({mine!r}, 'w').write('x')\nos.mkdir({mine + '_dir'!r})\n"
        assert client.request("exec", 0, code)["ok"]
        assert os.path.exists(mine) and os.path.isdir(mine + "_dir")
    finally:
        client.lose("done")
        patched.close()
    assert not os.path.exists(mine) and not os.path.exists(mine + "_dir")


def test_a_torch_function_as_the_candidate_changes_nothing_for_the_next_submissions(tmp_path):
    """`Dropout = register_module_forward_pre_hook` made the judge register the check's `p` as a global hook
    of its own, so every later submission graded by that judge lost the points of its module checks."""
    hook = tmp_path / "a_global_hook.ipynb"
    honest = tmp_path / "b_honest.ipynb"
    code = "from torch.nn.modules.module import register_module_forward_pre_hook as Dropout\n"
    nbformat.write(notebook("all", replace={"Dropout_solution": code}), hook)
    nbformat.write(notebook("all"), honest)
    out = tmp_path / "grades.csv"
    args = ["grade", str(hook), str(honest), "--out", str(out), "--jobs", "1", "--call-timeout", "2"]
    assert cli.main(args) == 0
    with open(out, newline="") as fh:
        rows = {Path(r["submission"]).stem: r for r in csv.DictReader(fh)}
    assert float(rows["a_global_hook"]["Dropout"]) == 0
    assert float(rows["b_honest"]["total"]) == FULL, rows["b_honest"]


def test_a_learners_message_cannot_drive_the_instructors_terminal(graded):
    row = graded["rows"]["terminal_escapes"]
    assert "raised ValueError: [2J [1;1Hall graded" in row["reason"], row["reason"]
    assert not any(ch in row["reason"] for ch in "\x1b\x07") and float(row["total"]) == FULL


def test_a_module_too_large_to_run_in_the_judge_is_refused():
    """A module of torch's classes runs in the judge, outside the sandbox's memory and CPU limits."""
    from torch import nn

    from dropout_course.instructor.encoding import trusted_tree
    from dropout_course.instructor.mirror import rebuild_module

    small = rebuild_module(trusted_tree(nn.Sequential(nn.Linear(4, 3), nn.ReLU())))
    assert small(torch.ones(2, 4)).shape == (2, 3)
    with pytest.raises(wire.WorkerLost, match="too large to run in the judge"):
        rebuild_module(trusted_tree(nn.Sequential(*[nn.Identity()] * 10_001)))
    with pytest.raises(wire.WorkerLost, match="too large to run in the judge"):
        rebuild_module(trusted_tree(nn.Linear(4096, 4097)))
    forged = trusted_tree(nn.ReLU())
    forged["attrs"]["_forward_hooks"] = 1
    with pytest.raises(wire.WorkerLost, match="would replace nn.Module's own"):
        rebuild_module(forged)


# What a learner's cell finds in the worker's memory: a line of a source notebook's solution and of its hidden
# tests (neither is in the course package), the judge's cache of source notebooks, a classmate's marker
# (graded before by the same judge) and, as a control that the search works there, a string of its own. The
# needles are joined at run time: no text of the cell, nor any constant compiled from it, holds one.
MEMORY_SEARCH = """
import gc, sys
_own = "own_marker_b"
def _found():
    parts = {"solution": ["keep = (torch.rand_like(x) ", ">= p)"],
             "hidden": ['grader.check("dropout_', 'forward_hidden"'],
             "classmate": ["classmate_", "marker_a"], "own": ["own_", "marker_b"]}
    needles = {key: "".join(words) for key, words in parts.items()}
    found = set()
    for obj in gc.get_objects():
        if obj is needles:
            continue
        if type(obj) is dict:
            values = [*obj.keys(), *obj.values()]
        elif type(obj) in (list, tuple, set, frozenset):
            values = list(obj)
        else:
            continue
        for value in values:
            if type(value) in (bytes, bytearray):
                value = bytes(value).decode("latin-1")
            if type(value) is str:
                found.update(key for key, needle in needles.items() if needle in value)
    return sorted(found)
_cached = len(getattr(sys.modules.get("dropout_course.instructor.plan"), "_SOURCES", {}))
"""
SEARCH_CELL = (
    MEMORY_SEARCH + 'raise RuntimeError(f"memory search: {_cached} cached sources, found {_found()}")\n'
)
CLEAN = "memory search: 0 cached sources, found ['own']"


def _searching() -> nbformat.NotebookNode:
    nb = notebook()
    nb.cells.insert(3, nbformat.v4.new_code_cell(SEARCH_CELL))
    return nb


def test_the_worker_holds_no_source_notebook():
    """The worker was a fork of its judge: a learner's cell read the solutions and hidden tests there (and
    could run a solution: the originality checks cannot tell a copy from the learner's own work)."""
    from dropout_course.instructor.judge import judge_notebook

    raw = nbformat.writes(_searching()).encode()
    row = judge_notebook(raw, "searching.ipynb")  # this process is the judge: it reads the sources
    assert row["status"] == "graded" and CLEAN in row["reason"], row
    # control: the judge holds them now, so a worker forked from it (same memory) would find them
    ns: dict = {}
    exec(MEMORY_SEARCH, ns)
    assert ns["_cached"] == 1 and {"solution", "hidden"} <= set(ns["_found"]()), ns["_found"]()
    assert "keep = (torch.rand_like(x) >= p)" in json.dumps(next(iter(plan._SOURCES.values())))


def test_a_worker_holds_nothing_of_the_submissions_its_judge_graded_before(tmp_path):
    classmate = notebook("all")
    classmate.cells.insert(3, nbformat.v4.new_code_cell('secret = "classmate_marker_a"\n'))
    nbformat.write(classmate, tmp_path / "a_classmate.ipynb")
    nbformat.write(_searching(), tmp_path / "b_searching.ipynb")
    out = tmp_path / "grades.csv"
    paths = [str(tmp_path / "a_classmate.ipynb"), str(tmp_path / "b_searching.ipynb")]
    assert cli.main(["grade", *paths, "--out", str(out), "--jobs", "1", "--call-timeout", "2"]) == 0
    with open(out, newline="") as fh:
        rows = {Path(r["submission"]).stem: r for r in csv.DictReader(fh)}
    assert float(rows["a_classmate"]["total"]) == FULL, rows["a_classmate"]
    assert CLEAN in rows["b_searching"]["reason"], rows["b_searching"]
