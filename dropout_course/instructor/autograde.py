"""``dropout-course grade``: grade submitted exercise notebooks into a gradebook CSV an instructor can trust.

How the pieces fit (each is its own module):

* this module reads **every submission into memory first**, checks that ``--out`` can be written, then
  hands the submissions to ``--jobs`` judge processes and writes each row as soon as it arrives
  (:mod:`.gradebook`: temp file, fsync, rename), with one progress line per submission;
* a judge (:mod:`.judge`) grades one submission at a time: it plans it from the notebook's JSON and the
  *source* notebook (:mod:`.plan`), runs the learner's cells in a disposable sandboxed worker
  (:mod:`.sandbox`, :mod:`.worker`) and computes every check itself, on proxies of the learner's objects
  (:mod:`.proxy`, :mod:`.mirror`) whose results come back as plain data (:mod:`.encoding`) through a
  decoder that never unpickles (:mod:`.wire`);
* the judge streams each check's score as soon as it is judged, so points already earned survive a
  judge that dies or runs past its hard limit (the row is then ``incomplete``);
* after every row this process checks that the course package and the submission files are unchanged
  (a changed submission is restored from memory and flagged; a changed package stops the run).
"""

from __future__ import annotations

import base64
import hashlib
import json
import os
import select
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path

from .gradebook import FIXED_COLUMNS, Gradebook, check_out_path
from .plan import build_graded_notebook
from .release import repo_root
from .sandbox import changes_user, is_root, kill_judge_sandboxes

DEFAULT_TIMEOUT = 120.0

__all__ = ["grade", "build_graded_notebook", "FIXED_COLUMNS", "package_digest", "hard_limit"]


def hard_limit(timeout: float) -> float:
    """Seconds one submission may take in all before its judge is stopped (earned points are kept)."""
    return max(300.0, 10 * timeout)


def package_digest() -> str:
    """A digest of the course package's code and the exercise sources (what grading trusts on disk)."""
    root = repo_root()
    digest = hashlib.sha256()
    paths = sorted((root / "dropout_course").rglob("*.py")) + sorted(
        (root / "exercises" / "source").rglob("*.ipynb")
    )
    for path in paths:
        try:
            digest.update(str(path.relative_to(root)).encode() + b"\0" + path.read_bytes())
        except OSError:
            digest.update(str(path).encode() + b"\0missing")
    return digest.hexdigest()


class _Judge:
    """One judge process (``python -m dropout_course.instructor.judge``) and the task it is working on."""

    def __init__(self) -> None:
        env = dict(os.environ)
        env.pop("DROPOUT_COURSE_RESULTS", None)
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "dropout_course.instructor.judge"],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
            env=env,
            cwd=str(repo_root()),
        )
        self.buffer = ""

    def stop(self, finished: bool = False) -> None:
        """End the judge: ``finished`` (no task running) lets it exit on its own first, so that it ends its
        worker factory (:mod:`.zygote`) itself; a judge that is stuck or past its limit is killed."""
        if finished and self.proc.poll() is None:
            try:
                self.proc.stdin.close()
                self.proc.wait(timeout=5)
            except (OSError, subprocess.TimeoutExpired):
                pass
        if self.proc.poll() is None:
            self.proc.kill()
        try:
            self.proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            pass
        if is_root():  # its sandboxes' processes, if it left any
            kill_judge_sandboxes(self.proc.pid)

    def run(self, task: dict, limit: float) -> dict:
        """Send ``task``; return its row (from the judge, or built from the checks it reported)."""
        checks: dict[str, float] = {}
        try:
            self.proc.stdin.write(json.dumps(task) + "\n")
            self.proc.stdin.flush()
        except OSError:
            return _stopped(task, checks, "the judge process could not be started")
        deadline = time.monotonic() + limit
        fd = self.proc.stdout.fileno()
        while True:
            while "\n" not in self.buffer:
                left = deadline - time.monotonic()
                if left <= 0:
                    self.stop()
                    return _stopped(task, checks, f"grading took longer than {limit:g} s and was stopped")
                ready, _, _ = select.select([fd], [], [], min(left, 5.0))
                if not ready:
                    continue
                chunk = os.read(fd, 1 << 16).decode("utf-8", "replace")
                if not chunk:
                    self.stop()
                    return _stopped(task, checks, "the judge process died")
                self.buffer += chunk
            line, self.buffer = self.buffer.split("\n", 1)
            try:
                event = json.loads(line)
            except ValueError:
                continue
            if event.get("id") != task["id"]:
                continue
            if event.get("event") == "check" and event.get("check") is None:
                plan = {str(k): float(v) for k, v in dict(event.get("score") or {}).items()}
                task["exercise"] = event.get("exercise") or task.get("exercise")
                task["max_total"] = float(sum(plan.values()))
                checks.update({name: 0.0 for name in plan if name not in checks})
            elif event.get("event") == "check":
                checks[str(event["check"])] = float(event["score"])
            elif event.get("event") == "row":
                return event["row"]


def _stopped(task: dict, checks: dict, why: str) -> dict:
    """The row of a submission whose judge was stopped: the checks it judged keep their points."""
    row = {"submission": task["path"], "exercise": task.get("exercise") or "", "status": "incomplete"}
    row.update({name: score for name, score in checks.items()})
    row["total"] = float(sum(checks.values()))
    row["max_total"] = task.get("max_total", "")
    row["reason"] = f"{why}; the points of the checks judged before that are kept"
    if not checks:
        row["status"] = "error"
        row["reason"] = why
    return row


def _error_row(path: str, reason: str) -> dict:
    return {
        "submission": path,
        "exercise": "",
        "total": 0.0,
        "max_total": 0.0,
        "status": "error",
        "reason": reason,
    }


class _Run:
    """One ``grade`` run: the submissions' bytes, the queue, the gradebook, the integrity checks."""

    def __init__(
        self, contents: dict, todo: list[str], book: Gradebook | None, options: dict, progress
    ) -> None:
        self.contents, self.queue, self.book = contents, list(todo), book
        self.options, self.progress = options, progress
        self.rows: dict[str, dict] = {}
        self.lock = threading.Lock()
        self.stopped = ""
        self.done = 0
        self.total = len(todo)
        # as root the sandbox cannot write the package; otherwise a change on disk is caught here
        self.digest = None if changes_user() else package_digest()

    def integrity(self, row: dict) -> list[str]:
        flags = [row["integrity"]] if row.get("integrity") else []
        for other, data in self.contents.items():
            try:
                same = data is None or Path(other).read_bytes() == data
            except OSError:
                same = False
            if not same:
                _restore(Path(other), data)
                flags.append(f"a submission file changed during grading ({Path(other).name}); restored")
        if self.digest is not None and not self.stopped and package_digest() != self.digest:
            self.stopped = (
                "the course package or the exercise sources changed on disk during grading (this row's "
                "submission is the suspect): restore them (git checkout) and rerun with --resume"
            )
            flags.append("the course package changed on disk while this was graded")
            row["status"] = "error"
        return flags

    def record(self, path: str, row: dict) -> None:
        with self.lock:
            row["integrity"] = "; ".join(self.integrity(row))
            self.rows[path] = row
            if self.book is not None:
                try:
                    self.book.add(row)
                except OSError as exc:  # the run stops; the rows written before stay
                    self.stopped = self.stopped or (
                        f"cannot write the gradebook {self.book.path}: {exc.strerror or exc}; the rows "
                        "written before are kept: fix it and rerun with --resume"
                    )
            self.done += 1
            if self.progress is not None:
                note = f" ({row['reason']})" if row.get("reason") else ""
                flag = f" [integrity: {row['integrity']}]" if row.get("integrity") else ""
                self.progress(
                    f"[{self.done}/{self.total}] {path}: {_fmt(row.get('total'))}/{_fmt(row.get('max_total'))} "
                    f"{row.get('status')}{note}{flag}"
                )

    def slot(self) -> None:
        """One judge process grading queued submissions until none is left."""
        judge = None
        while True:
            with self.lock:
                if not self.queue or self.stopped:
                    break
                path = self.queue.pop(0)
            if judge is None or judge.proc.poll() is not None:
                judge = _Judge()
            task = {"id": path, "path": path, "data": base64.b64encode(self.contents[path]).decode("ascii")}
            task.update(self.options)
            self.record(path, judge.run(task, hard_limit(self.options["timeout"])))
        if judge is not None:
            judge.stop(finished=True)


def grade(
    submissions: list[str | Path],
    out: str | Path | None = None,
    jobs: int = 1,
    timeout: float = DEFAULT_TIMEOUT,
    source_dir: Path | None = None,
    exercise: str | None = None,
    resume: bool = False,
    progress: Callable[[str], None] | None = None,
    call_timeout: float | None = None,
) -> list[dict]:
    """Grade every submission (``jobs`` judges at a time); rows in the input order.

    With ``out``, the gradebook is written after every row (``resume``: rows already there are kept and
    their submissions skipped). Raises ValueError before grading anything if ``out`` cannot be written.
    """
    if out is not None:
        problem = check_out_path(out)
        if problem:
            raise ValueError(problem)
    book = None if out is None else (Gradebook.resume(out) if resume else Gradebook(out))
    skip = book.done() if (book is not None and resume) else set()
    paths = [str(s) for s in submissions]
    contents: dict[str, bytes | None] = {}
    unreadable: dict[str, dict] = {}
    for path in paths:  # every file is read before any learner code runs
        try:
            contents[path] = Path(path).read_bytes()
        except OSError as exc:
            contents[path] = None
            unreadable[path] = _error_row(path, f"cannot read the file: {exc.strerror or exc}")
    todo = [p for p in dict.fromkeys(paths) if p not in skip and contents.get(p) is not None]
    options = {
        "exercise": exercise,
        "timeout": timeout,
        "call_timeout": call_timeout,
        "source": str(source_dir) if source_dir else None,
    }
    run = _Run(contents, todo, book, options, progress)
    for path, row in unreadable.items():
        run.record(path, row)
    threads = [
        threading.Thread(target=run.slot, daemon=True) for _ in range(max(1, min(int(jobs), len(todo))))
    ]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    if run.stopped:
        raise RuntimeError(run.stopped)
    previous = {r.get("submission"): r for r in (book.rows if book is not None else [])}
    return [run.rows.get(p) or previous.get(p) or _error_row(p, "not graded") for p in paths]


def _restore(path: Path, data: bytes) -> None:
    try:
        tmp = path.with_name(f".{path.name}.restore")
        tmp.write_bytes(data)
        os.replace(tmp, path)
    except OSError:
        pass


def _fmt(value) -> str:
    if isinstance(value, float):
        return f"{value:g}"
    return str(value if value not in (None, "") else "?")
