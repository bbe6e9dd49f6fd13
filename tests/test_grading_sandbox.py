"""The sandbox counts, as processes a submission left running, exactly those its code started that outlive
the worker, and kills them (issue 14: a false "left 2 background process(es)" note on an innocent row).

The cause of that note: as root, every sandbox of a judge shared one uid, so the processes an earlier
submission's sandbox had left (killed, but not yet reaped by pid 1) were counted against the next
submission. Each sandbox now has a uid of its own, and the count is taken once the worker is dead.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time

import pytest

from dropout_course.instructor import sandbox
from dropout_course.instructor.proxy import Client

AS_ROOT = sandbox.changes_user()
needs_root = pytest.mark.skipif(not AS_ROOT, reason="a sandbox has a uid of its own only as root")

SLEEP = "import subprocess\nchild = subprocess.Popen(['sleep', '60'])\n"
DETACHED_SLEEP = "import subprocess\nchild = subprocess.Popen(['sleep', '60'], start_new_session=True)\n"
# a child that the kernel kills when the worker dies (PR_SET_PDEATHSIG): it does not outlive the worker
DIES_WITH_WORKER = """
import ctypes, signal, subprocess
libc = ctypes.CDLL(None)
child = subprocess.Popen(['sleep', '60'], preexec_fn=lambda: libc.prctl(1, signal.SIGKILL))
"""


def run_cell(code: str) -> tuple[sandbox.Sandbox, int | None]:
    """A fresh sandbox that has run ``code``; the pid of the ``child`` it started, if it did."""
    box = sandbox.start()
    client = Client(box)
    reply = client.request("exec", 0, code, deadline=60)
    assert reply.get("ok"), reply
    items = client.request("snapshot", {"pid": "child.pid"}, deadline=60)["items"]
    return box, items["pid"].get("value")


def running(pid: int) -> bool:
    return any(p.pid == pid and not p.dying for p in sandbox._processes())


def test_an_innocent_worker_leaves_nothing():
    box, _ = run_cell("x = [i * i for i in range(10)]\nchild = None")
    assert box.members() == []
    assert box.kill() == 0


@pytest.mark.parametrize("code", [SLEEP, pytest.param(DETACHED_SLEEP, marks=needs_root)])
def test_a_background_process_is_counted_and_killed(code):
    box, pid = run_cell(code)
    assert running(pid)
    assert box.kill() == 1
    assert not running(pid)


def test_a_process_that_dies_with_the_worker_is_not_counted():
    # the old count (taken before anything was killed) said 1 here
    box, pid = run_cell(DIES_WITH_WORKER)
    assert running(pid)
    assert box.kill() == 0
    assert not running(pid)


def test_another_sandboxs_processes_are_not_counted():
    # two sandboxes of one judge: with one uid per judge, the innocent one counted the other's worker and
    # its child ("left 2 background process(es)", as on the CI run of issue 14)
    innocent, _ = run_cell("child = None")
    other, pid = run_cell(SLEEP)
    assert innocent.kill() == 0
    assert not AS_ROOT or innocent.uid != other.uid
    assert running(pid)
    assert other.kill() == 1
    assert not running(pid)


@needs_root
def test_a_uid_is_handed_out_again_only_when_no_running_process_holds_it():
    held, pid = run_cell(SLEEP)
    uids = []
    for _ in range(sandbox.UIDS_PER_JUDGE + 1):
        box = sandbox.start()
        uids.append(box.uid)
        assert box.kill() == 0
    assert held.uid not in uids and len(set(uids)) == sandbox.UIDS_PER_JUDGE - 1
    assert held.kill() == 1


@needs_root
def test_a_stopped_judges_sandboxes_are_killed():
    box, pid = run_cell(DETACHED_SLEEP)
    sandbox.kill_judge_sandboxes(os.getpid())
    assert not running(pid)
    box.kill()


def test_judge_uid_ranges_are_disjoint_and_below_the_largest_uid():
    last = sandbox.judge_uids(sandbox.PID_LIMIT - 1)
    assert last.stop <= 2**31 - 1  # tools that read a uid as a signed 32-bit number still work
    assert sandbox.judge_uids(7).stop == sandbox.judge_uids(8).start
    with pytest.raises(ValueError, match=str(sandbox.PID_LIMIT)):
        sandbox.judge_uids(sandbox.PID_LIMIT)


def test_a_dead_zygote_is_replaced_and_its_worker_still_ends():
    box, _ = run_cell("child = None")
    os.kill(box.factory.pid, signal.SIGKILL)
    assert box.kill() == 0  # killed by the judge, reaped by its new parent
    assert not running(box.pid)
    other, _ = run_cell("child = None")
    assert other.factory is not box.factory and other.factory.alive()
    assert other.kill() == 0


def test_a_zygote_ends_with_its_judge():
    """A judge killed (no clean-up of its own) leaves no zygote: the zygote exits when its socket closes."""
    code = (
        "import os\nfrom dropout_course.instructor import zygote\nprint(zygote.fork_early().pid)\nos._exit(0)"
    )
    pid = int(subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout)
    deadline = time.monotonic() + 10
    while running(pid) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert not running(pid)
