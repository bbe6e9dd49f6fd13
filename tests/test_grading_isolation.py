"""The worker's private file systems never hide Python or the course (e.g. a checkout under /tmp, as a CI job
may make): a scratch folder that holds them stays visible, read-only, and the private folder goes elsewhere."""

from __future__ import annotations

import json
import os
import sys

import pytest

from dropout_course.instructor import isolation


def test_needed_paths_hold_python_and_the_course():
    needed = isolation._needed_paths()
    package = os.path.realpath(os.path.dirname(os.path.dirname(isolation.__file__)))
    assert package in needed and os.path.realpath(sys.prefix) in needed
    assert isolation._inside(os.path.join(package, "grading"), os.path.dirname(package))
    assert not isolation._inside(package + "-other", package)


@pytest.mark.skipif(os.geteuid() != 0, reason="private file systems are made only when grading runs as root")
def test_a_scratch_folder_holding_the_course_is_not_hidden(tmp_path, monkeypatch):
    checkout, other = tmp_path / "checkout", tmp_path / "scratch"
    (checkout / "course").mkdir(parents=True)
    (checkout / "course" / "marker").write_text("here")
    other.mkdir()
    monkeypatch.setattr(isolation, "SCRATCH_DIRS", (str(checkout), str(other)))
    monkeypatch.setattr(isolation, "_needed_paths", lambda: [str(checkout / "course")])
    read, write = os.pipe()
    pid = os.fork()
    if pid == 0:  # the sandbox's child: make the private file systems, report what it sees
        os.close(read)
        try:
            folder = isolation.private_file_systems(os.getuid())
            report = {"folder": folder, "marker": (checkout / "course" / "marker").read_text()}
        except Exception as exc:  # noqa: BLE001 - reported to the test
            report = {"error": repr(exc)}
        os.write(write, json.dumps(report).encode())
        os._exit(0)
    os.close(write)
    report = json.loads(os.read(read, 65536).decode() or "{}")
    os.waitpid(pid, 0)
    if report.get("folder") is None and "error" not in report:
        pytest.skip("the kernel refuses private file systems here (no CAP_SYS_ADMIN)")
    assert report.get("marker") == "here", report  # the course is still there
    assert report["folder"] == str(other / "sandbox"), report  # the private folder went to the other scratch


@pytest.mark.skipif(os.geteuid() != 0, reason="private file systems are made only when grading runs as root")
def test_the_worker_cannot_read_the_exercise_sources():
    """Where the sandbox gets its own mount namespace, exercises/source is an empty folder to the worker."""
    from dropout_course.instructor import sandbox
    from dropout_course.instructor.proxy import Client

    source = isolation.hidden_dirs()
    assert source and os.listdir(source[0]), "the sources are there for the judge"
    client = Client(sandbox.start())
    try:
        items = client.request(
            "snapshot",
            {
                "ns": "__import__('os').readlink('/proc/self/ns/mnt')",
                "ls": f"len(__import__('os').listdir({source[0]!r}))",
            },
        )["items"]
    finally:
        client.lose("done")
    if items["ns"]["value"] == os.readlink("/proc/self/ns/mnt"):
        pytest.skip("the kernel refuses mount namespaces here: the sources are protected by file modes only")
    assert items["ls"]["value"] == 0, items  # the judge (this process) sees the notebooks
