"""Run a course notebook with other parameters (papermill-style), e.g. a longer, more accurate run.

The notebook's first code cell is tagged ``parameters`` and holds its defaults (seeds, epochs, sizes).
Like papermill, this script inserts a cell tagged ``injected-parameters`` right after it that overrides
the names you give, executes the notebook top to bottom in its folder and saves the executed copy, then
prints the ``CLAIM:`` lines the notebook reported (see docs/CLAIMS.md). The source notebook is never
modified. Values are Python literals; only names assigned in the ``parameters`` cell are accepted.

Usage:
    python scripts/run_notebook.py notebooks/02_overfitting_and_generalization.ipynb \\
        -p "SEEDS=(0, 1, 2, 3, 4, 5, 6, 7, 8, 9)" -p EPOCHS=60 --out build/02_long.ipynb
    python scripts/run_notebook.py notebooks/02_*.ipynb -p DATA_SEED=3 --no-execute --out build/02_seed3.ipynb
"""

from __future__ import annotations

import argparse
import ast
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))


def parse_assignment(text: str) -> tuple[str, object]:
    """``"NAME=literal"`` -> (NAME, value); ValueError naming the text otherwise."""
    name, sep, value = text.partition("=")
    name = name.strip()
    if not sep or not name.isidentifier():
        raise ValueError(f"parameter must look like NAME=VALUE, got {text!r}")
    try:
        return name, ast.literal_eval(value.strip())
    except (ValueError, SyntaxError) as err:
        raise ValueError(
            f"value of {name} must be a Python literal (number, string, tuple...), got {value!r}"
        ) from err


def parameters_cell(nb) -> int:
    """Index of the cell tagged ``parameters``; ValueError if there is none."""
    for index, cell in enumerate(nb.cells):
        if cell.cell_type == "code" and "parameters" in cell.metadata.get("tags", []):
            return index
    raise ValueError("the notebook has no code cell tagged 'parameters' (see docs/CONTRIBUTING.md)")


def defined_names(source: str) -> set[str]:
    """Names assigned at the top level of a cell (``NAME = ...``, ``NAME: type = ...``)."""
    names = set()
    for node in ast.parse(source).body:
        targets = node.targets if isinstance(node, ast.Assign) else [getattr(node, "target", None)]
        names |= {t.id for t in targets if isinstance(t, ast.Name)}
    return names


def inject_parameters(nb, params: dict[str, object]):
    """Insert (or replace) the ``injected-parameters`` cell after the ``parameters`` cell; return ``nb``."""
    import nbformat

    index = parameters_cell(nb)
    known = defined_names(nb.cells[index].source)
    unknown = sorted(set(params) - known)
    if unknown:
        raise ValueError(f"unknown parameters {unknown}; the parameters cell defines {sorted(known)}")
    lines = ["# Parameters injected by scripts/run_notebook.py (override the defaults above)"]
    lines += [f"{name} = {value!r}" for name, value in params.items()]
    cell = nbformat.v4.new_code_cell("\n".join(lines), metadata={"tags": ["injected-parameters"]})
    following = nb.cells[index + 1] if index + 1 < len(nb.cells) else None
    if following is not None and "injected-parameters" in following.metadata.get("tags", []):
        nb.cells[index + 1] = cell
    else:
        nb.cells.insert(index + 1, cell)
    return nb


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("notebook", type=Path)
    parser.add_argument("-p", "--param", action="append", default=[], metavar="NAME=VALUE")
    parser.add_argument("--out", type=Path, required=True, help="where to write the (executed) copy")
    parser.add_argument("--timeout", type=int, default=1800, help="seconds per cell (longer runs need more)")
    parser.add_argument("--no-execute", action="store_true", help="only write the parametrised notebook")
    args = parser.parse_args(argv)

    import nbformat

    try:
        params = dict(parse_assignment(text) for text in args.param)
        nb = inject_parameters(nbformat.read(args.notebook, as_version=4), params)
    except ValueError as err:
        parser.error(str(err))
    args.out.parent.mkdir(parents=True, exist_ok=True)
    if args.no_execute:
        nbformat.write(nb, args.out)
        print(f"wrote {args.out} (not executed)")
        return 0

    from nbclient import NotebookClient
    from nbclient.exceptions import CellExecutionError

    from dropout_course.claims import claims_from_notebook

    client = NotebookClient(
        nb,
        timeout=args.timeout,
        kernel_name="python3",
        resources={"metadata": {"path": str(args.notebook.parent)}},
    )
    try:
        client.execute()
    except CellExecutionError as err:
        nbformat.write(nb, args.out)
        print(f"FAILED (partial copy in {args.out}):\n{err}", file=sys.stderr)
        return 1
    nbformat.write(nb, args.out)
    for claim in claims_from_notebook(nb, args.notebook.name):
        print(claim.line)
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
