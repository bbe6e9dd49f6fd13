"""A disposable, isolated process for a submission's code: :func:`start` forks it, :meth:`Sandbox.kill` ends it.

The child, before any learner code runs:

* starts its own session and process group (``setsid``) and keeps only its two pipe ends (stdin, stdout
  and stderr are ``/dev/null``; every other inherited descriptor is closed);
* gets resource limits: address space (``memory_mb`` above what it already maps), CPU seconds, file size,
  process count, no core files;
* works in a private temporary folder (``HOME``, ``TMPDIR`` and the working directory);
* when the judge runs as root, drops to a uid/gid of its own (no supplementary groups), so it cannot
  write the course package, the submissions, the gradebook's folder or the judge's files, nor signal
  the judge. As another user it has only those limits: see the README's grading section.

At the end the judge kills the process group and, as root, every process left under the sandbox's uid
(detached or re-parented ones included), then removes the folder.
"""

from __future__ import annotations

import os
import resource
import shutil
import signal
import tempfile
import time
from dataclasses import dataclass, field

SANDBOX_UID_BASE = 2_100_000_000
DEFAULT_MEMORY_MB = 3072
DEFAULT_CPU_SECONDS = 900


def is_root() -> bool:
    return os.geteuid() == 0


AS_SELF_ENV = "DROPOUT_COURSE_GRADE_AS_SELF"  # "1": never change user (weaker; see the README)


def sandbox_uid() -> int | None:
    """The uid the worker drops to (one per judge process, unused by anything else), or None if not root."""
    if not is_root() or os.environ.get(AS_SELF_ENV) == "1":
        return None
    return SANDBOX_UID_BASE + os.getpid()


@dataclass
class Sandbox:
    pid: int
    to_worker: int  # judge writes requests here
    from_worker: int  # judge reads replies here
    folder: str
    uid: int | None
    leftovers: list[str] = field(default_factory=list)

    def alive(self) -> bool:
        try:
            pid, _ = os.waitpid(self.pid, os.WNOHANG)
        except ChildProcessError:
            return False
        return pid == 0

    def _other_running(self) -> int:
        """How many processes of the sandbox other than the worker itself are running."""
        pids = _pids_of_uid(self.uid) if self.uid is not None else _pids_of_group(self.pid)
        return len([p for p in _running(pids) if p != self.pid])

    def kill(self) -> int:
        """Kill the worker, its process group and (as root) every process of its uid; return how many
        *other* processes were still running (detached or background ones)."""
        others = self._other_running()
        if others:  # a process that is just exiting is not left running: look again a moment later
            time.sleep(0.05)
            others = self._other_running()
        try:
            os.killpg(self.pid, signal.SIGKILL)
        except (ProcessLookupError, PermissionError):
            pass
        if self.uid is not None:
            for _ in range(5):
                pids = _pids_of_uid(self.uid)
                if not pids:
                    break
                for pid in pids:
                    try:
                        os.kill(pid, signal.SIGKILL)
                    except (ProcessLookupError, PermissionError):
                        pass
                time.sleep(0.01)
        try:
            os.waitpid(self.pid, 0)
        except ChildProcessError:
            pass
        for fd in (self.to_worker, self.from_worker):
            try:
                os.close(fd)
            except OSError:
                pass
        shutil.rmtree(self.folder, ignore_errors=True)
        return others


def _running(pids: list[int]) -> list[int]:
    """The processes among ``pids`` that are still running (not zombies waiting to be reaped)."""
    return [p for p in pids if not _proc_status(str(p)).get("State", "").strip().startswith(("Z", "X"))]


def _proc_status(pid: str) -> dict:
    try:
        with open(f"/proc/{pid}/status", encoding="utf-8") as fh:
            return dict(line.split(":", 1) for line in fh if ":" in line)
    except OSError:
        return {}


def _proc_pids() -> list[str]:
    try:
        return [name for name in os.listdir("/proc") if name.isdigit()]
    except OSError:
        return []


def _pids_of_uid(uid: int) -> list[int]:
    pids = []
    for name in _proc_pids():
        if name.isdigit():
            status = _proc_status(name)
            uids = status.get("Uid", "").split()
            if uids and str(uid) in uids:
                pids.append(int(name))
    return pids


def _pids_of_group(pgid: int) -> list[int]:
    pids = []
    for name in _proc_pids():
        if name.isdigit():
            try:
                if os.getpgid(int(name)) == pgid:
                    pids.append(int(name))
            except OSError:
                continue
    return pids


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
    """Runs in the forked child: isolate, limit, drop privileges, then serve (never returns)."""
    try:
        os.setsid()
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
    """Fork a worker in a fresh sandbox; return the judge's handle on it."""
    uid = sandbox_uid()
    folder = tempfile.mkdtemp(prefix="dropout-course-sandbox-")
    if uid is not None:
        os.chown(folder, uid, uid)
    os.chmod(folder, 0o700)
    req_r, req_w = os.pipe()
    rep_r, rep_w = os.pipe()
    pid = os.fork()
    if pid == 0:  # the child
        os.close(req_w)
        os.close(rep_r)
        _child(req_r, rep_w, folder, uid, memory_mb, cpu_seconds)
    os.close(req_r)
    os.close(rep_w)
    return Sandbox(pid, req_w, rep_r, folder, uid)
