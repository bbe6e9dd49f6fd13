"""Strip outputs and execution counts from notebooks in place: ``python scripts/strip_notebooks.py FILES``."""

import sys

import nbformat


def strip(path: str) -> bool:
    """Clear outputs of one notebook; return True if it changed."""
    nb = nbformat.read(path, as_version=4)
    changed = False
    for cell in nb.cells:
        if cell.cell_type == "code" and (cell.outputs or cell.execution_count is not None):
            cell.outputs, cell.execution_count, changed = [], None, True
    if changed:
        nbformat.write(nb, path)
    return changed


if __name__ == "__main__":
    for name in sys.argv[1:]:
        if strip(name):
            print(f"stripped {name}")
