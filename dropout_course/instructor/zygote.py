"""The worker factory: a clean process from which every sandboxed worker of a judge is forked.

A worker forked from the judge itself would hold whatever the judge had in memory: the source notebooks
with every exercise's solutions and hidden tests, and what is left of the submissions it graded before
(classmates' code), which the learner's code can read however the files' modes are set. The zygote has
never held any: :func:`fork_early` forks it from the judge once the judge has imported what workers need
(:func:`preload`: torch, the course package) and before it reads any source notebook or submission; where
there is none (a process that did not call it, or a zygote that died), :func:`current` starts a fresh
interpreter that does the same imports. A fork of the zygote is as cheap as a fork of the judge was.

The zygote only serves its judge's requests, one message each on a socket: ``start`` forks a worker, which
isolates itself as :func:`.sandbox.start` asks and serves on two pipes whose judge's ends are handed over
(``SCM_RIGHTS``); ``kill`` kills and reaps one of its workers (it is their parent: a pid it reaps cannot be
another process's). It exits when its judge's end of the socket closes (the judge exited or was killed).
"""

from __future__ import annotations

import atexit
import json
import os
import signal
import socket
import sys
import threading
import traceback

MAX_MESSAGE = 4096


class ZygoteLost(OSError):
    """The zygote is gone (killed, or it failed to start): a fresh one is needed."""


def preload() -> None:
    """Import what every worker needs before the first fork (a fork is then cheap), on one thread."""
    import torch

    torch.set_num_threads(1)
    from ..grading import EXERCISES
    from ..grading.core import load_checks

    for exercise in EXERCISES:
        try:
            load_checks(exercise)
        except Exception:  # noqa: BLE001 - a broken grader costs its own submissions (reported there)
            traceback.print_exc()
    try:
        from IPython.core.inputtransformer2 import TransformerManager  # noqa: F401
    except ImportError:
        pass


class Zygote:
    """A judge's handle on its zygote: the process and the socket its requests go through."""

    def __init__(self, pid: int, sock: socket.socket) -> None:
        self.pid, self.sock = pid, sock
        self.lock = threading.Lock()
        self.ended = False

    def request(self, message: dict, fds: int = 0) -> tuple[dict, list[int]]:
        """Send ``message``; return the reply and the ``fds`` descriptors it carries (ZygoteLost: gone)."""
        with self.lock:
            try:
                self.sock.sendall(json.dumps(message).encode())
                data, got, _, _ = socket.recv_fds(self.sock, MAX_MESSAGE, fds)
            except OSError as exc:
                raise ZygoteLost(f"the zygote is gone ({exc})") from exc
        if not data:
            raise ZygoteLost("the zygote is gone")
        reply = json.loads(data)
        if "error" in reply:
            for fd in got:
                os.close(fd)
            raise RuntimeError(f"the zygote could not {message['do']} a worker: {reply['error']}")
        return reply, got

    def start_worker(self, **params) -> tuple[int, int, int]:
        """Fork a worker with ``params`` (see :func:`.sandbox.start`); its pid, then the descriptors the
        judge writes requests to and reads replies from."""
        reply, fds = self.request({"do": "start", **params}, fds=2)
        if len(fds) != 2:
            for fd in fds:
                os.close(fd)
            raise ZygoteLost(f"the zygote handed over {len(fds)} descriptors, not 2")
        return reply["pid"], fds[0], fds[1]

    def kill_worker(self, pid: int) -> None:
        """Kill and reap the worker ``pid``; ZygoteLost if the zygote is gone (then it cannot be reaped)."""
        self.request({"do": "kill", "pid": pid})

    def alive(self) -> bool:
        if not self.ended:
            try:
                self.ended = os.waitpid(self.pid, os.WNOHANG)[0] == self.pid
            except ChildProcessError:
                self.ended = True
        return not self.ended

    def close(self) -> None:
        """Kill the zygote and reap it (its workers are not touched)."""
        self.sock.close()
        if self.alive():
            try:
                os.kill(self.pid, signal.SIGKILL)
                os.waitpid(self.pid, 0)
            except OSError:
                pass
            self.ended = True


_current: Zygote | None = None


def _adopt(zygote: Zygote) -> Zygote:
    global _current
    if _current is not None and _current is not zygote:
        _current.close()
    _current = zygote
    return zygote


def fork_early() -> Zygote:
    """Fork this process's zygote now; call it before the process reads a source notebook or a submission."""
    ours, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
    pid = os.fork()
    if pid == 0:
        try:
            ours.close()
            from .sandbox import _only_fds

            _only_fds({theirs.fileno()})
            serve(theirs)
        except BaseException:  # noqa: BLE001
            pass
        os._exit(70)
    theirs.close()
    return _adopt(Zygote(pid, ours))


def _spawn() -> Zygote:
    """A zygote in a fresh interpreter (it never held anything of this process)."""
    ours, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
    os.set_inheritable(theirs.fileno(), True)  # every other descriptor but stderr is closed on exec
    devnull = [(os.POSIX_SPAWN_OPEN, fd, os.devnull, os.O_RDWR, 0) for fd in (0, 1)]
    command = [sys.executable, "-m", __name__, str(theirs.fileno())]
    try:
        pid = os.posix_spawn(sys.executable, command, os.environ, file_actions=devnull)
    except OSError as exc:
        ours.close()
        raise ZygoteLost(f"a fresh zygote could not be started ({exc})") from exc
    finally:
        theirs.close()
    return Zygote(pid, ours)


def current() -> Zygote:
    """This process's zygote: the one :func:`fork_early` made while it lives, else a fresh interpreter's."""
    if _current is None or not _current.alive():
        return _adopt(_spawn())
    return _current


def start_worker(**params) -> tuple[Zygote, int, int, int]:
    """Have this process's zygote fork a worker (a fresh zygote if it is gone): the zygote, the worker's pid
    and the judge's ends of its pipes."""
    try:
        zygote = current()
        return (zygote, *zygote.start_worker(**params))
    except ZygoteLost:
        zygote = _adopt(_spawn())
        return (zygote, *zygote.start_worker(**params))


@atexit.register
def _close_current() -> None:
    if _current is not None:
        _current.close()


def _start(sock: socket.socket, workers: set[int], request: dict) -> None:
    req_r, req_w = os.pipe()
    rep_r, rep_w = os.pipe()
    pid = os.fork()
    if pid == 0:
        from .sandbox import _child

        _child(req_r, rep_w, request["folder"], request["uid"], request["memory_mb"], request["cpu_seconds"])
    workers.add(pid)
    for fd in (req_r, rep_w):
        os.close(fd)
    try:
        socket.send_fds(sock, [json.dumps({"pid": pid}).encode()], [req_w, rep_r])
    finally:
        for fd in (req_w, rep_r):
            os.close(fd)


def _kill(sock: socket.socket, workers: set[int], pid: int) -> None:
    if pid not in workers:
        raise ValueError(f"pid {pid} is not a worker of this zygote")
    workers.discard(pid)
    try:
        os.kill(pid, signal.SIGKILL)
    except ProcessLookupError:
        pass
    try:
        os.waitpid(pid, 0)
    except ChildProcessError:
        pass
    sock.send(json.dumps({"killed": pid}).encode())


def serve(sock: socket.socket) -> None:
    """The zygote's loop: ``start`` and ``kill`` requests until the judge's end closes (never returns)."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # a Ctrl-C reaches the judge, which ends this process
    signal.signal(signal.SIGCHLD, signal.SIG_DFL)  # workers stay to be reaped on request
    workers: set[int] = set()
    while True:
        try:
            data = sock.recv(MAX_MESSAGE)
        except OSError:
            break
        if not data:
            break
        try:
            request = json.loads(data)
            if request["do"] == "start":
                _start(sock, workers, request)
            else:
                _kill(sock, workers, int(request["pid"]))
        except Exception as exc:  # noqa: BLE001 - the judge gets the reason; the zygote goes on
            try:
                sock.send(json.dumps({"error": f"{type(exc).__name__}: {exc}"}).encode())
            except OSError:
                break
    os._exit(0)


if __name__ == "__main__":
    _fd = int(sys.argv[1])
    preload()
    serve(socket.socket(fileno=_fd))
