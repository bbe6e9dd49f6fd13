"""Regenerate the README's "Claims and evidence" and "Published results" tables from the notebooks' outputs.

Each notebook prints ``CLAIM: <id> | <claim> | <measured>`` after every passing assert and
``PUBLISHED: <id> | <source> | <result> | <status> | <measured>`` for every published result it sets out
to show (see ``docs/CLAIMS.md`` and ``dropout_course.claims``). This script executes the notebooks (or
reads already executed copies), collects those lines and rewrites the sections of README.md between
``<!-- claims:start -->`` / ``<!-- claims:end -->`` and ``<!-- published:start -->`` /
``<!-- published:end -->`` (appending a section if its markers are missing). If any notebook fails,
README.md is left untouched and the exit code is 1.

Usage:
    python scripts/claims_table.py                      # execute notebooks/NN_*.ipynb, rewrite README.md
    python scripts/claims_table.py notebooks/02_*.ipynb  # only some notebooks (others' rows are dropped)
    python scripts/claims_table.py --executed out/       # read executed copies out/NN_*.ipynb, no kernel
    python scripts/claims_table.py --save-executed out/  # also keep the executed copies
    python scripts/claims_table.py --cache build/.jupyter_cache  # the copies `make book` executed, no kernel
    python scripts/claims_table.py --check               # exit 1 if README.md is not up to date
    python scripts/claims_table.py --print               # print the section, touch nothing
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from dropout_course.claims import (  # noqa: E402
    PUBLISHED_END,
    PUBLISHED_START,
    claims_from_notebook,
    comparable,
    published_from_notebook,
    render_published_table,
    render_table,
    replace_section,
    summary_line,
)

COMMAND = "python scripts/claims_table.py"


def title_of(nb, fallback: str) -> str:
    """The first Markdown heading of the notebook's first Markdown cell, else ``fallback``."""
    for cell in nb.cells:
        if cell.cell_type == "markdown":
            for line in cell.source.splitlines():
                if line.startswith("#"):
                    return line.lstrip("#").strip()
            break
    return fallback


def execute(path: Path, timeout: int, kernel: str):
    """Run ``path`` top to bottom in its own folder (as nbval does) and return the executed notebook."""
    import nbformat
    from nbclient import NotebookClient

    nb = nbformat.read(path, as_version=4)
    client = NotebookClient(
        nb, timeout=timeout, kernel_name=kernel, resources={"metadata": {"path": str(path.parent)}}
    )
    client.execute()
    return nb


def from_cache(cache_dir: Path, path: Path):
    """The executed copy of ``path`` in the jupyter-cache ``cache_dir`` (the book's, see book/conf.py).

    The cache is keyed on the notebook's code cells (and kernel), as myst-nb's ``cache`` mode matches it,
    so a notebook changed since the last ``make book`` has no copy: LookupError says so.
    """
    import nbformat
    from jupyter_cache import get_cache

    if not (cache_dir / "global.db").is_file():
        raise LookupError(f"no jupyter-cache in {cache_dir}: run `make book` first")
    nb = nbformat.read(path, as_version=4)
    try:
        _, merged = get_cache(cache_dir).merge_match_into_notebook(nb)
    except KeyError:
        raise LookupError(
            f"no executed copy of the current {path.name} in {cache_dir}: run `make book`"
        ) from None
    return merged


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("notebooks", nargs="*", type=Path, help="default: notebooks/[0-9][0-9]_*.ipynb")
    parser.add_argument("--readme", type=Path, default=ROOT / "README.md")
    parser.add_argument("--executed", type=Path, help="folder of executed copies to read instead of running")
    parser.add_argument(
        "--cache", type=Path, help="jupyter-cache folder (the book's build/.jupyter_cache) to read instead"
    )
    parser.add_argument("--save-executed", type=Path, help="folder to keep the executed copies in")
    parser.add_argument("--timeout", type=int, default=300, help="seconds per cell (as CI's nbval)")
    parser.add_argument("--kernel", default="python3")
    mode = parser.add_mutually_exclusive_group()
    mode.add_argument("--check", action="store_true", help="exit 1 if the README's table is out of date")
    mode.add_argument("--print", action="store_true", help="print the section instead of writing it")
    args = parser.parse_args(argv)

    import nbformat

    paths = args.notebooks or sorted((ROOT / "notebooks").glob("[0-9][0-9]_*.ipynb"))
    if not paths:
        parser.error("no notebooks found (notebooks/[0-9][0-9]_*.ipynb)")
    claims, published, titles, failures = [], [], {}, []
    for path in paths:
        started = time.monotonic()
        try:
            if args.executed:
                nb = nbformat.read(args.executed / path.name, as_version=4)
            elif args.cache:
                nb = from_cache(args.cache, path)
            else:
                nb = execute(path.resolve(), args.timeout, args.kernel)
                if args.save_executed:
                    args.save_executed.mkdir(parents=True, exist_ok=True)
                    nbformat.write(nb, args.save_executed / path.name)
            found = claims_from_notebook(nb, path.name)
            published += published_from_notebook(nb, path.name)
        except Exception as err:  # report every failing notebook, then stop before writing
            last = (str(err).strip().splitlines() or [""])[-1]
            failures.append(f"{path.name}: {type(err).__name__}: {last}")
            print(f"FAILED {path.name}: {type(err).__name__}", file=sys.stderr)
            continue
        titles[path.name] = title_of(nb, path.stem)
        claims += found
        print(f"{path.name}: {len(found)} claims ({time.monotonic() - started:.0f} s)", file=sys.stderr)
    if failures:
        print("README not updated; failing notebooks:\n  " + "\n  ".join(failures), file=sys.stderr)
        return 1
    empty = [p.name for p in paths if not any(c.notebook == p.name for c in claims)]
    if empty:
        print(f"note: no CLAIM lines in {', '.join(empty)} (see docs/CLAIMS.md)", file=sys.stderr)

    body = summary_line(claims, COMMAND) + "\n\n" + render_table(claims, titles)
    published_body = (
        f"_{len(published)} published results, each printed by `report_published` in the notebook that "
        f"measures it. Generated by `{COMMAND}`; do not edit by hand._\n\n"
        + render_published_table(published, titles)
    )
    if args.print:
        print(body + "\n\n" + published_body)
        return 0
    old = args.readme.read_text(encoding="utf-8")
    new = replace_section(old, body)
    new = replace_section(
        new, published_body, heading="## Published results", start=PUBLISHED_START, end=PUBLISHED_END
    )
    if args.check:
        if comparable(new) != comparable(old):  # timings differ from run to run: compared without them
            print(f"{args.readme} is out of date: run {COMMAND}", file=sys.stderr)
            return 1
        print(f"{args.readme} is up to date ({len(claims)} claims)", file=sys.stderr)
        return 0
    if new != old:
        args.readme.write_text(new, encoding="utf-8")
    print(
        f"{args.readme}: {len(claims)} claims, {len(published)} published results from {len(paths)} notebooks",
        file=sys.stderr,
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
