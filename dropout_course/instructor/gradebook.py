"""The gradebook CSV: one row per submission, rewritten atomically after every row (crash-safe).

Columns: ``submission, exercise, total, max_total, status, reason, integrity``, then one column per check
in first-seen order. ``status`` is ``graded`` (every check was judged), ``incomplete`` (some checks could not
be judged: ``reason`` says which and why) or ``error`` (nothing could be graded: ``reason`` says why).
``integrity`` names anything the submission did that grading noticed and undid.
"""

from __future__ import annotations

import csv
import os
import stat
import tempfile
from pathlib import Path

FIXED_COLUMNS = ["submission", "exercise", "total", "max_total", "status", "reason", "integrity"]
STATUSES = ("graded", "incomplete", "error")


def writable_by_others(folder: Path) -> str | None:
    """The folder on the way to ``folder`` (itself included) that a sandbox user could use to replace the
    gradebook, or None. Only when grading changes user: ``folder`` writable by others (a file or folder
    could be put where the gradebook goes), or a folder above it writable by others without the sticky bit
    (``folder`` itself could be renamed away). As the same user the sandbox can write it anyway."""
    from .sandbox import changes_user

    if not changes_user():
        return None
    folder = Path(os.path.realpath(folder))
    for current in [folder, *folder.parents]:
        try:
            mode = current.stat().st_mode
        except OSError:
            continue
        if mode & stat.S_IWOTH and (current == folder or not mode & stat.S_ISVTX):
            return str(current)
    return None


def check_out_path(out: str | Path) -> str | None:
    """Why the gradebook cannot be written at ``out`` (None if it can): checked before grading starts."""
    out = Path(out)
    folder = out.parent if str(out.parent) else Path(".")
    if out.is_dir():
        return f"--out {out} is a folder; give a file name, e.g. {out / 'grades.csv'}"
    if not folder.is_dir():
        return f"the folder of --out does not exist: {folder} (create it first)"
    shared = writable_by_others(folder)
    if shared:
        return (
            f"--out is in {shared}, which other users can change: a submission's code (run as a user of its "
            "own) could replace or block the gradebook there; use a folder of mode 755 or 700"
        )
    try:
        fd, probe = tempfile.mkstemp(prefix=".grades-", dir=folder)
        os.close(fd)
        os.unlink(probe)
    except OSError as exc:
        return f"cannot write in {folder}: {exc.strerror or exc}"
    if out.exists() and not os.access(out, os.W_OK):
        return f"cannot overwrite {out}: permission denied"
    return None


def _cell(value):
    if isinstance(value, float):
        return f"{value:g}"
    return value


class Gradebook:
    """Rows in memory, written to ``path`` (temp file, fsync, rename) each time one is added."""

    def __init__(self, path: str | Path, rows: list[dict] | None = None) -> None:
        self.path = Path(path)
        self.rows: list[dict] = list(rows or [])

    @classmethod
    def resume(cls, path: str | Path) -> Gradebook:
        """The gradebook at ``path`` as it is (empty if there is none)."""
        path = Path(path)
        rows = []
        if path.exists():
            with open(path, newline="", encoding="utf-8") as fh:
                rows = [dict(r) for r in csv.DictReader(fh)]
        return cls(path, rows)

    def done(self) -> set[str]:
        """Submissions already graded (rows with status ``error`` are graded again)."""
        return {r.get("submission", "") for r in self.rows if r.get("status") in ("graded", "incomplete")}

    def columns(self) -> list[str]:
        checks: list[str] = []
        for row in self.rows:
            for key in row:
                if key not in FIXED_COLUMNS and key not in checks:
                    checks.append(key)
        return FIXED_COLUMNS + checks

    def add(self, row: dict) -> None:
        self.rows = [r for r in self.rows if r.get("submission") != row.get("submission")] + [row]
        self.write()

    def write(self) -> None:
        columns = self.columns()
        fd, tmp = tempfile.mkstemp(prefix=".grades-", suffix=".csv", dir=self.path.parent or Path("."))
        try:
            with os.fdopen(fd, "w", newline="", encoding="utf-8") as fh:
                writer = csv.DictWriter(fh, fieldnames=columns)
                writer.writeheader()
                for row in self.rows:
                    writer.writerow({c: _cell(row.get(c, "")) for c in columns})
                fh.flush()
                os.fsync(fh.fileno())
            os.chmod(tmp, 0o644)
            os.replace(tmp, self.path)
        except BaseException:
            try:
                os.unlink(tmp)
            except OSError:
                pass
            raise
