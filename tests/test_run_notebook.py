"""scripts/run_notebook.py: papermill-style parameter injection after the `parameters` cell."""

import importlib.util
import subprocess
import sys
from pathlib import Path

import nbformat
import pytest

ROOT = Path(__file__).resolve().parents[1]
SCRIPT = ROOT / "scripts" / "run_notebook.py"
spec = importlib.util.spec_from_file_location("run_notebook", SCRIPT)
run_notebook = importlib.util.module_from_spec(spec)
spec.loader.exec_module(run_notebook)


def notebook():
    nb = nbformat.v4.new_notebook()
    nb.cells = [
        nbformat.v4.new_markdown_cell("# 99 Tiny"),
        nbformat.v4.new_code_cell("SEEDS = (0, 1)\nEPOCHS: int = 3", metadata={"tags": ["parameters"]}),
        nbformat.v4.new_code_cell(
            "from dropout_course.claims import report_claim\n"
            "assert len(SEEDS) * EPOCHS > 0\n"
            "report_claim('runs', 'it ran', f'{len(SEEDS)} seeds x {EPOCHS} epochs')"
        ),
    ]
    return nb


def test_inject_after_parameters_and_replace_on_rerun():
    nb = run_notebook.inject_parameters(notebook(), {"EPOCHS": 10})
    injected = nb.cells[2]
    assert injected.metadata["tags"] == ["injected-parameters"] and "EPOCHS = 10" in injected.source
    nb = run_notebook.inject_parameters(nb, {"SEEDS": (0, 1, 2)})
    assert len(nb.cells) == 4 and "SEEDS = (0, 1, 2)" in nb.cells[2].source
    assert "EPOCHS" not in nb.cells[2].source


def test_bad_parameters_are_named():
    with pytest.raises(ValueError, match=r"unknown parameters \['LR'\].*\['EPOCHS', 'SEEDS'\]"):
        run_notebook.inject_parameters(notebook(), {"LR": 0.1})
    with pytest.raises(ValueError, match="NAME=VALUE.*'EPOCHS'"):
        run_notebook.parse_assignment("EPOCHS")
    with pytest.raises(ValueError, match="literal.*'ten'"):
        run_notebook.parse_assignment("EPOCHS=ten")
    nb = notebook()
    nb.cells[1].metadata["tags"] = []
    with pytest.raises(ValueError, match="tagged 'parameters'"):
        run_notebook.inject_parameters(nb, {})


def test_runs_with_new_parameters_and_prints_claims(tmp_path):
    source = tmp_path / "99_tiny.ipynb"
    nbformat.write(notebook(), source)
    out = tmp_path / "out" / "99_long.ipynb"
    cmd = [
        sys.executable,
        str(SCRIPT),
        str(source),
        "-p",
        "EPOCHS=7",
        "-p",
        "SEEDS=(0, 1, 2)",
        "--out",
        str(out),
    ]
    run = subprocess.run(cmd, capture_output=True, text=True, timeout=300)
    assert run.returncode == 0, run.stderr
    assert "CLAIM: runs | it ran | 3 seeds x 7 epochs" in run.stdout
    assert nbformat.read(source, as_version=4).cells[1].source.startswith("SEEDS = (0, 1)")  # untouched
    assert len(nbformat.read(out, as_version=4).cells) == 4
