"""A disposable, isolated process for a submission's code: :func:`start` has one forked, :meth:`Sandbox.kill`
ends it.

The worker is forked from the judge's zygote (:mod:`.zygote`), a process that has imported torch and the
course package but never held a source notebook or a submission: the learner's code finds neither the
solutions and hidden tests nor classmates' code in the worker's memory. Before any learner code runs, the
worker:

* starts its own session and process group (``setsid``) and keeps only its two pipe ends (stdin, stdout
  and stderr are ``/dev/null``; every other inherited descriptor is closed);
* gets resource limits: address space (``memory_mb`` above what it already maps), CPU seconds, file size,
  process count, no core files;
* works in a private temporary folder (``HOME``, ``TMPDIR`` and the working directory);
* when the judge runs as root, drops to a uid/gid of its own (no supplementary groups), so it cannot
  write the course package, the submissions, the gradebook's folder or the judge's files, nor signal
  the judge; before that, where the kernel allows it (:mod:`.isolation`), every file system becomes
  read-only but private scratch folders, the network is cut, and its processes together get one CPU, an
  equal CPU share with the other sandboxes and ``memory_mb`` of memory. As another user it has only the
  limits above: see the README's grading section.

At the end the judge has the zygote kill the worker alone and reap it; whatever of the sandbox still runs
then outlived it, so the learner's code left it behind (the integrity note counts these). Then every process
of the sandbox is killed: as root everything holding its uid (detached or re-parented ones included),
otherwise its session and process group. As root each sandbox has a uid of its own (a fresh one from its
judge's range), so no process of another sandbox, earlier or at the same time, is ever counted or killed
with it; the files it left in the machine's world-writable folders and its cgroups are removed.
"""

from __future__ import annotations

import itertools
import os
import resource
import shutil
import signal
import tempfile
import time
from dataclasses import dataclass

from . import isolation, zygote

SANDBOX_UID_BASE = 2_100_000_000
UIDS_PER_JUDGE = 8  # a judge's range of sandbox uids (one per sandbox, used in turn)
PID_LIMIT = 1 << 22  # the kernel's largest pid_max: every judge's range stays below uid 2**31 - 1
DEFAULT_MEMORY_MB = 3072
DEFAULT_CPU_SECONDS = 900
KILL_ROUNDS = 20  # kill passes before a sandbox is given up as unkillable (one pass is enough as root)


def is_root() -> bool:
    return os.geteuid() == 0


AS_SELF_ENV = "DROPOUT_COURSE_GRADE_AS_SELF"  # "1": never change user (weaker; see the README)


def changes_user() -> bool:
    """Whether each sandbox runs as a user of its own (the judge runs as root, unless AS_SELF_ENV is "1")."""
    return is_root() and os.environ.get(AS_SELF_ENV) != "1"


def judge_uids(judge_pid: int) -> range:
    """The uids the sandboxes of the judge process ``judge_pid`` get (no other judge's and no user's)."""
    if not 0 < judge_pid < PID_LIMIT:
        raise ValueError(f"judge pid {judge_pid} is outside 1..{PID_LIMIT - 1}: it has no sandbox uids")
    first = SANDBOX_UID_BASE + judge_pid * UIDS_PER_JUDGE
    return range(first, first + UIDS_PER_JUDGE)


_slots = itertools.count()


def _fresh_uid() -> int:
    """The next uid of this judge's range that no running process holds (a zombie or a process being
    killed is never counted, see :meth:`Sandbox.kill`, and runs no more code)."""
    uids = judge_uids(os.getpid())
    held = {uid for proc in _processes() if not proc.dying for uid in proc.uids if uid in uids}
    for _ in range(len(uids)):
        uid = uids[next(_slots) % len(uids)]
        if uid not in held:
            return uid
    raise RuntimeError(
        f"every sandbox uid of judge {os.getpid()} ({uids.start}..{uids.stop - 1}) is held by a running "
        "process that could not be killed"
    )


@dataclass
class Sandbox:
    """The judge's handle on one sandboxed worker: its pid, pipes, folder, uid (None: not root), zygote."""

    pid: int
    to_worker: int  # judge writes requests here
    from_worker: int  # judge reads replies here
    folder: str
    uid: int | None
    factory: zygote.Zygote  # the zygote that forked the worker: its parent, which reaps it
    ended: bool = False  # killed and reaped: its pid may belong to another process now

    def members(self) -> list[_Process]:
        """The sandbox's processes other than the worker: those holding its uid as root, else those of the
        session and process group the worker leads."""
        if self.uid is not None:
            return [p for p in _processes() if self.uid in p.uids and p.pid != self.pid]
        return [p for p in _processes() if self.pid in (p.pgid, p.sid) and p.pid != self.pid]

    def kill(self) -> int:
        """End the sandbox; return how many processes the learner's code left running.

        The worker is killed alone and reaped first: a process of the sandbox still running after that
        (not exited, not exiting, no SIGKILL pending) outlived the worker. Then all of them are killed.
        """
        if self.ended:
            return 0
        self.ended = True
        try:
            self.factory.kill_worker(self.pid)
        except zygote.ZygoteLost:  # the worker was re-parented: killed here, reaped by its new parent
            _kill_orphan(self.pid)
        left = running = [p.pid for p in self.members() if not p.dying]
        for _ in range(KILL_ROUNDS):
            if not running:
                break
            if self.uid is not None:
                _kill_uid(self.uid)
            else:
                _kill_group(self.pid, running)
            running = [p.pid for p in self.members() if not p.dying]
        for fd in (self.to_worker, self.from_worker):
            try:
                os.close(fd)
            except OSError:
                pass
        shutil.rmtree(self.folder, ignore_errors=True)
        if self.uid is not None:
            isolation.remove_scratch_files(self.uid)
            isolation.remove_cgroups(self.uid)
        return len(left)


@dataclass(frozen=True)
class _Process:
    """A process as ``/proc`` shows it, with what the sandbox's bookkeeping needs."""

    pid: int
    uids: tuple[int, ...]  # real, effective, saved, filesystem
    pgid: int
    sid: int
    dying: bool  # a zombie, exiting, or with a SIGKILL pending: it will not run any more code


PF_EXITING = 0x4
SIGKILL_BIT = 1 << (signal.SIGKILL - 1)


def _processes() -> list[_Process]:
    """Every process of the machine (one ``/proc`` scan; those that vanish meanwhile are left out)."""
    procs = []
    for name in os.listdir("/proc"):
        if not name.isdigit():
            continue
        try:
            with open(f"/proc/{name}/stat", encoding="utf-8", errors="replace") as fh:
                fields = fh.read().rsplit(")", 1)[1].split()  # after the command name, which may hold ")"
            with open(f"/proc/{name}/status", encoding="utf-8", errors="replace") as fh:
                status = dict(line.split(":", 1) for line in fh if ":" in line)
            pending = int(status["SigPnd"], 16) | int(status["ShdPnd"], 16)
            uids = tuple(int(u) for u in status["Uid"].split())
            state, pgid, sid, flags = fields[0], int(fields[2]), int(fields[3]), int(fields[6])
        except (OSError, IndexError, KeyError, ValueError):
            continue
        dying = state in ("Z", "X", "x") or bool(flags & PF_EXITING) or bool(pending & SIGKILL_BIT)
        procs.append(_Process(int(name), uids, pgid, sid, dying))
    return procs


def _kill_orphan(pid: int, seconds: float = 10.0) -> None:
    """SIGKILL ``pid`` (a worker whose zygote died) and wait until it is dead or ``seconds`` have passed."""
    try:
        os.kill(pid, signal.SIGKILL)
    except ProcessLookupError:
        return
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        try:
            with open(f"/proc/{pid}/stat", encoding="utf-8", errors="replace") as fh:
                if fh.read().rsplit(")", 1)[1].split()[0] in ("Z", "X", "x"):
                    return
        except (OSError, IndexError):
            return
        time.sleep(0.01)


def _kill_uid(uid: int) -> None:
    """SIGKILL every process holding ``uid`` at once: a helper that becomes ``uid`` sends ``kill(-1)``, which
    the kernel delivers to all of them in one pass (a process forking meanwhile cannot escape it)."""
    helper = os.fork()
    if helper == 0:
        try:
            os.setresuid(uid, uid, uid)  # no capability left: kill(-1) reaches only this uid's processes
            os.kill(-1, signal.SIGKILL)
        except BaseException:  # noqa: BLE001
            os._exit(1)
        os._exit(0)
    os.waitpid(helper, 0)
    for proc in _processes():  # and one by one, in case the helper could not do it
        if uid in proc.uids and not proc.dying:
            try:
                os.kill(proc.pid, signal.SIGKILL)
            except OSError:
                pass


def _kill_group(pgid: int, pids: list[int]) -> None:
    """SIGKILL the process group ``pgid`` and ``pids`` (a sandbox's session when not running as root)."""
    for kill, target in [(os.killpg, pgid)] + [(os.kill, pid) for pid in pids]:
        try:
            kill(target, signal.SIGKILL)
        except OSError:
            pass


def kill_judge_sandboxes(judge_pid: int) -> None:
    """Kill every process of the sandboxes of the judge ``judge_pid`` (as root: it was stopped, they stay)."""
    uids = judge_uids(judge_pid)
    for uid in sorted({u for proc in _processes() for u in proc.uids if u in uids}):
        _kill_uid(uid)


def _proc_status(pid: str) -> dict:
    try:
        with open(f"/proc/{pid}/status", encoding="utf-8") as fh:
            return dict(line.split(":", 1) for line in fh if ":" in line)
    except OSError:
        return {}


PR_SET_KEEPCAPS = 8
PR_SET_NO_NEW_PRIVS = 38
CAP_DAC_READ_SEARCH = 2


def _libc():
    import ctypes

    return ctypes.CDLL(None, use_errno=True)


def _prctl(option: int, value: int) -> None:
    try:
        _libc().prctl(option, value, 0, 0, 0)
    except (OSError, AttributeError):
        pass


def _keep_only_read_capability() -> None:
    """After setuid: keep CAP_DAC_READ_SEARCH (read any file, write none), nothing else."""
    import ctypes

    class Header(ctypes.Structure):
        _fields_ = [("version", ctypes.c_uint32), ("pid", ctypes.c_int)]

    class Data(ctypes.Structure):
        _fields_ = [
            ("effective", ctypes.c_uint32),
            ("permitted", ctypes.c_uint32),
            ("inheritable", ctypes.c_uint32),
        ]

    header = Header(0x20080522, 0)  # _LINUX_CAPABILITY_VERSION_3
    data = (Data * 2)()
    data[0].effective = data[0].permitted = 1 << CAP_DAC_READ_SEARCH
    if _libc().capset(ctypes.byref(header), data) != 0:
        os._exit(72)


def interpreter_readable_by_others() -> bool:
    """Whether a user without privileges can read this Python's standard library (else the sandbox keeps
    the right to *read* files, so that the learner's imports work; it never gets the right to write)."""
    import sysconfig

    path = os.path.realpath(sysconfig.get_paths()["stdlib"])
    parts = path.split(os.sep)
    for i in range(1, len(parts) + 1):
        folder = os.sep.join(parts[:i]) or os.sep
        try:
            mode = os.stat(folder).st_mode
        except OSError:
            return False
        if not mode & 0o001:
            return False
    return bool(os.stat(path).st_mode & 0o004)


def _vm_size_bytes() -> int:
    status = _proc_status("self")
    try:
        return int(status.get("VmSize", "0 kB").split()[0]) * 1024
    except ValueError:
        return 0


def _only_fds(keep: set[int]) -> None:
    """stdin/stdout/stderr on /dev/null; every other inherited descriptor but ``keep`` closed."""
    devnull = os.open(os.devnull, os.O_RDWR)
    for fd in (0, 1, 2):
        os.dup2(devnull, fd)
    try:
        fds = [int(name) for name in os.listdir("/proc/self/fd")]
    except OSError:
        fds = list(range(3, 1024))
    for fd in fds:
        if fd not in keep | {0, 1, 2}:
            try:
                os.close(fd)
            except OSError:
                pass


def _limit(uid: int | None, memory_mb: int, cpu_seconds: int) -> None:
    limits = [
        (resource.RLIMIT_CORE, 0),
        (resource.RLIMIT_CPU, cpu_seconds),
        (resource.RLIMIT_FSIZE, 64 * 1024 * 1024),
        (resource.RLIMIT_AS, _vm_size_bytes() + memory_mb * 1024 * 1024),
    ]
    if uid is not None:
        limits.append((resource.RLIMIT_NPROC, 64))
    for what, value in limits:
        _, hard = resource.getrlimit(what)
        value = value if hard == resource.RLIM_INFINITY else min(value, hard)
        resource.setrlimit(what, (value, value))


def _drop_privileges(uid: int) -> None:
    read_all = not interpreter_readable_by_others()
    if read_all:
        _prctl(PR_SET_KEEPCAPS, 1)
    os.setgroups([])
    os.setgid(uid)
    os.setuid(uid)
    if os.getuid() != uid or os.geteuid() != uid:
        os._exit(71)
    if read_all:
        _keep_only_read_capability()


def _child(req_r: int, rep_w: int, folder: str, uid: int | None, memory_mb: int, cpu_seconds: int):
    """Runs in the worker, just forked by the zygote: isolate, limit, drop privileges, then serve (never
    returns)."""
    try:
        os.setsid()
        if uid is not None:
            isolation.join_cgroups(uid, memory_mb)  # before /proc and /sys become read-only
            folder = isolation.private_file_systems(uid) or folder
        _only_fds({req_r, rep_w})
        for sig in (signal.SIGALRM, signal.SIGINT, signal.SIGTERM, signal.SIGCHLD):
            signal.signal(sig, signal.SIG_DFL)
        signal.setitimer(signal.ITIMER_REAL, 0)
        _limit(uid, memory_mb, cpu_seconds)
        os.chdir(folder)
        for key in [k for k in os.environ if k.startswith("DROPOUT_COURSE_")]:
            del os.environ[key]
        os.environ.update(HOME=folder, TMPDIR=folder, MPLBACKEND="Agg", OMP_NUM_THREADS="1")
        tempfile.tempdir = folder
        if uid is not None:
            _drop_privileges(uid)
        _prctl(PR_SET_NO_NEW_PRIVS, 1)  # no setuid program can give the learner's code privileges back
        from .worker import main

        main(req_r, rep_w)
    except BaseException:  # noqa: BLE001
        pass
    os._exit(70)


def start(memory_mb: int = DEFAULT_MEMORY_MB, cpu_seconds: int = DEFAULT_CPU_SECONDS) -> Sandbox:
    """Have the judge's zygote fork a worker in a fresh sandbox; return the judge's handle on it."""
    uid = _fresh_uid() if changes_user() else None
    folder = tempfile.mkdtemp(prefix="dropout-course-sandbox-")
    try:
        if uid is not None:
            os.chown(folder, uid, uid)
        os.chmod(folder, 0o700)
        factory, pid, to_worker, from_worker = zygote.start_worker(
            folder=folder, uid=uid, memory_mb=memory_mb, cpu_seconds=cpu_seconds
        )
    except BaseException:
        shutil.rmtree(folder, ignore_errors=True)
        raise
    return Sandbox(pid, to_worker, from_worker, folder, uid, factory)
