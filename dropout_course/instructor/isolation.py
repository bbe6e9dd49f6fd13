"""What the sandbox of a submission may use of the machine, beyond its user's rights (as root only).

* :func:`private_file_systems`: in the sandbox's child, a mount namespace where every file system is
  read-only except fresh, size-limited scratch folders (``/tmp``, ``/var/tmp``, ``/dev/shm``), the exercise
  sources are an empty folder (:func:`hidden_dirs`), and a network namespace with no interface up;
* :func:`join_cgroups`: the sandbox's processes together get at most one CPU, an equal share of the CPU
  with every other sandbox (however many processes it starts) and ``memory_mb`` of memory in all;
* :func:`remove_scratch_files` / :func:`remove_cgroups`: what a sandbox leaves on the machine is removed
  when it ends.

Each needs privileges a container may not grant (``CAP_SYS_ADMIN``, a writable cgroup file system); where the
kernel refuses, the sandbox runs without it and the README says what is then not protected. The worker's
process is also the first the kernel's out-of-memory killer picks (``oom_score_adj``), before any judge.
"""

from __future__ import annotations

import ctypes
import errno
import os
import re
import shutil
import sys
import time

CLONE_NEWNS = 0x00020000
CLONE_NEWNET = 0x40000000
MS_RDONLY = 1
MS_NOSUID = 2
MS_NODEV = 4
MS_NOEXEC = 8
MS_REMOUNT = 32
MS_NOATIME = 1024
MS_NODIRATIME = 2048
MS_BIND = 4096
MS_REC = 16384
MS_PRIVATE = 1 << 18
MS_RELATIME = 1 << 21
_MOUNT_OPTIONS = {
    "nosuid": MS_NOSUID,
    "nodev": MS_NODEV,
    "noexec": MS_NOEXEC,
    "noatime": MS_NOATIME,
    "nodiratime": MS_NODIRATIME,
    "relatime": MS_RELATIME,
}
SCRATCH_DIRS = ("/tmp", "/var/tmp", "/dev/shm")  # world-writable folders: private and emptied per sandbox
SCRATCH_MB = 256  # size of each private scratch folder (memory-backed)


def _mount_points() -> list[tuple[str, int]]:
    """(mount point, flags to keep when remounting it) of every mount this process sees."""
    points = []
    with open("/proc/self/mountinfo", encoding="utf-8", errors="replace") as fh:
        for line in fh:
            fields = line.split()
            if len(fields) < 6:
                continue
            path = re.sub(r"\\([0-7]{3})", lambda m: chr(int(m.group(1), 8)), fields[4])
            flags = sum(_MOUNT_OPTIONS.get(option, 0) for option in fields[5].split(","))
            points.append((path, flags))
    return points


def hidden_dirs() -> list[str]:
    """Folders the worker must not read even where its user could: the exercise sources (solutions, hidden
    tests). Only the judge reads them."""
    from .release import repo_root

    source = repo_root() / "exercises" / "source"
    return [str(source)] if source.is_dir() else []


def _needed_paths() -> list[str]:
    """Where the worker's Python, its packages and the course live: never hidden under a scratch folder."""
    paths = [sys.prefix, sys.base_prefix, sys.exec_prefix, os.path.dirname(sys.executable)]
    paths += [entry for entry in sys.path if entry and os.path.isabs(entry)]
    paths.append(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))  # the dropout_course package
    return [os.path.realpath(path) for path in paths]


def _inside(path: str, folder: str) -> bool:
    folder = os.path.realpath(folder)
    return path == folder or path.startswith(folder.rstrip(os.sep) + os.sep)


def private_file_systems(uid: int) -> str | None:
    """As root, in the child: a mount namespace where every file system is read-only except fresh,
    size-limited, memory-backed ``SCRATCH_DIRS``, and a network namespace with no interface up. Returns
    the private folder made there (owned by ``uid``; in the first scratch folder that is not where Python or
    the course lives, e.g. a checkout in ``/tmp``), or None where the kernel refuses (no CAP_SYS_ADMIN, as in
    a default Docker container; or no scratch folder can be made private): the sandbox's file systems are
    then the machine's, with only its user's rights (see the README)."""
    libc = ctypes.CDLL(None, use_errno=True)
    if libc.unshare(CLONE_NEWNS | CLONE_NEWNET) != 0:
        return None
    if libc.mount(None, b"/", None, MS_REC | MS_PRIVATE, None) != 0:
        return None  # a mount made now would reach the machine's namespace: none is made
    scratch = []
    for path in SCRATCH_DIRS:
        if any(_inside(needed, path) for needed in _needed_paths()):
            continue  # Python or the course lives there (e.g. a checkout in /tmp): it stays, read-only
        options = f"size={SCRATCH_MB}m,mode=1777".encode()
        if (
            os.path.isdir(path)
            and libc.mount(b"tmpfs", os.fsencode(path), b"tmpfs", MS_NOSUID | MS_NODEV, options) == 0
        ):
            scratch.append(path)
    if not scratch:
        return None
    for path in hidden_dirs():  # an empty, read-only folder in their place
        options = b"size=4k,mode=0555"
        libc.mount(
            b"tmpfs", os.fsencode(path), b"tmpfs", MS_RDONLY | MS_NOSUID | MS_NODEV | MS_NOEXEC, options
        )
    for path, flags in _mount_points():
        if path not in scratch:  # a scratch folder that could not be made private becomes read-only
            libc.mount(None, os.fsencode(path), None, MS_BIND | MS_REMOUNT | MS_RDONLY | flags, None)
    folder = os.path.join(scratch[0], "sandbox")
    os.mkdir(folder, 0o700)
    os.chown(folder, uid, uid)
    return folder


def remove_scratch_files(uid: int) -> None:
    """Delete what ``uid`` left at the top of the machine's ``SCRATCH_DIRS`` (a sandbox without a private
    mount namespace writes there; it must not fill them or leave files for the next learner)."""
    for scratch in SCRATCH_DIRS:
        try:
            entries = list(os.scandir(scratch))
        except OSError:
            continue
        for entry in entries:
            try:
                if entry.stat(follow_symlinks=False).st_uid != uid:
                    continue
                if entry.is_dir(follow_symlinks=False):
                    shutil.rmtree(entry.path, ignore_errors=True)
                else:
                    os.unlink(entry.path)
            except OSError:
                continue


CGROUP_V1 = "/sys/fs/cgroup"  # cgroup v1: one hierarchy per controller, e.g. /sys/fs/cgroup/cpu
CPU_PERIOD_US = 100_000


def _own_cgroups() -> dict[str, str]:
    """This process's cgroup path per controller ("" for cgroup v2), from ``/proc/self/cgroup``."""
    paths = {}
    try:
        with open("/proc/self/cgroup", encoding="utf-8") as fh:
            for line in fh:
                parts = line.rstrip("\n").split(":", 2)
                if len(parts) == 3:
                    for controller in parts[1].split(","):
                        paths[controller] = parts[2]
    except OSError:
        pass
    return paths


def _cgroup_dirs(uid: int) -> dict[str, str]:
    """The sandbox's cgroup folder per controller ("cpu", "memory", or "unified" for cgroup v2), made
    inside the judge's own cgroups, so that the limits of the machine's, container's or CI job's cgroups
    still hold for the sandbox."""
    name = f"dropout-course-sandbox-{uid}"
    own = _own_cgroups()
    if os.path.exists(os.path.join(CGROUP_V1, "cgroup.controllers")):
        return {"unified": os.path.join(CGROUP_V1 + own.get("", "/"), name)}
    dirs = {}
    for controller in ("cpu", "memory"):
        mounts = (
            [os.path.join(CGROUP_V1, m) for m in os.listdir(CGROUP_V1) if controller in m.split(",")]
            if os.path.isdir(CGROUP_V1)
            else []
        )
        if mounts and controller in own:
            dirs[controller] = os.path.join(mounts[0] + own[controller], name)
    return dirs


def _write(folder: str, name: str, value: str) -> bool:
    try:
        with open(os.path.join(folder, name), "w") as fh:
            fh.write(value)
        return True
    except OSError:
        return False


def join_cgroups(uid: int, memory_mb: int) -> list[str]:
    """In the child, as root: move this process into cgroups of the sandbox ``uid`` (made if missing) that
    limit all its processes together to one CPU and ``memory_mb``; returns the controllers joined."""
    _write("/proc/self", "oom_score_adj", "1000")
    joined = []
    limits = {
        "cpu": [("cpu.cfs_period_us", str(CPU_PERIOD_US)), ("cpu.cfs_quota_us", str(CPU_PERIOD_US))],
        "memory": [("memory.limit_in_bytes", str(memory_mb << 20))],
        "unified": [("cpu.max", f"{CPU_PERIOD_US} {CPU_PERIOD_US}"), ("memory.max", str(memory_mb << 20))],
    }
    for controller, folder in _cgroup_dirs(uid).items():
        if controller == "unified":  # cgroup v2: the controllers must be enabled for the children
            _write(os.path.dirname(folder), "cgroup.subtree_control", "+cpu +memory")
        try:
            os.makedirs(folder, exist_ok=True)
        except OSError:
            continue
        if all(_write(folder, key, value) for key, value in limits[controller]) and _write(
            folder, "cgroup.procs", str(os.getpid())
        ):
            joined.append(controller)
    return joined


def remove_cgroups(uid: int) -> None:
    """Remove the sandbox's cgroups once its killed processes have left them (waits up to 2 s; one still in
    use then is left, and reused by the next sandbox of that uid)."""
    for folder in _cgroup_dirs(uid).values():
        for _ in range(100):
            try:
                os.rmdir(folder)
            except FileNotFoundError:
                break
            except OSError as exc:
                if exc.errno != errno.EBUSY:
                    break
                time.sleep(0.02)
                continue
            break
