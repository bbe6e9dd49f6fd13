"""Seconds per ex01 submission of ``dropout-course grade`` at ``--jobs 1`` and ``--jobs 2``; not a test.

    python benchmarks/bench_grading.py [--n 8] [--jobs 1 2]

The submissions are copies of the ex01 source notebook with the learner's own wording of the error text
(full marks) and of the release notebook (no solution), half each. Each measurement is one whole
``dropout-course grade`` run, judge start-up included, divided by the number of submissions.
Target: at most 3 s per ex01 submission with ``--jobs 2``, and ``--jobs 2`` faster than ``--jobs 1``.
On a machine shared with other work the wall times say little; the CPU seconds (the CLI, its judges and
their workers) do not depend on the load: on an idle machine a run takes about CPU / min(jobs, cores).
"""

from __future__ import annotations

import argparse
import csv
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import nbformat

ROOT = Path(__file__).resolve().parents[1]
EX = "ex01_inverted_dropout"


def make_submissions(folder: Path, n: int) -> list[Path]:
    source = nbformat.read(ROOT / "exercises" / "source" / EX / f"{EX}.ipynb", as_version=4)
    for cell in source.cells:
        cell.source = cell.source.replace("is not a drop probability in [0, 1]", "must lie in [0, 1]")
    release = nbformat.read(ROOT / "exercises" / "release" / EX / f"{EX}.ipynb", as_version=4)
    paths = []
    for i in range(n):
        path = folder / f"learner{i:02d}.ipynb"
        nbformat.write(source if i % 2 == 0 else release, path)
        paths.append(path)
    return paths


def _cpu() -> float:
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)  # the CLI, its judges and their workers
    return usage.ru_utime + usage.ru_stime


def run(paths: list[Path], jobs: int, out: Path) -> tuple[float, float, list[dict]]:
    start, cpu = time.perf_counter(), _cpu()
    subprocess.run(
        [
            sys.executable,
            "-m",
            "dropout_course.cli",
            "grade",
            *map(str, paths),
            "--out",
            str(out),
            "--jobs",
            str(jobs),
        ],
        check=True,
        cwd=ROOT,
        stdout=subprocess.DEVNULL,
    )
    seconds, cpu = time.perf_counter() - start, _cpu() - cpu
    with open(out, newline="") as fh:
        return seconds, cpu, list(csv.DictReader(fh))


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=8, help="submissions per run (default 8)")
    parser.add_argument("--jobs", type=int, nargs="+", default=[1, 2])
    args = parser.parse_args()
    print(f"{os.cpu_count()} CPUs, load average {os.getloadavg()[0]:.1f}; {args.n} ex01 submissions per run")
    results = {}
    with tempfile.TemporaryDirectory() as tmp:
        paths = make_submissions(Path(tmp), args.n)
        for jobs in args.jobs:
            seconds, cpu, rows = run(paths, jobs, Path(tmp) / f"grades{jobs}.csv")
            totals = sorted({r["total"] for r in rows})
            results[jobs] = seconds / len(paths)
            print(
                f"--jobs {jobs}: {seconds:6.1f} s in all, {results[jobs]:.2f} s per submission; "
                f"{cpu / len(paths):.2f} CPU s per submission (totals {totals})"
            )
    if 1 in results and 2 in results:
        print(f"speed-up of --jobs 2 over --jobs 1: {results[1] / results[2]:.2f}x")
    if 2 in results:
        verdict = "meets" if results[2] <= 3.0 else "misses"
        print(f"target <= 3 s per submission with --jobs 2: {verdict} ({results[2]:.2f} s)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
