"""nbval runs every exercise notebook as a test; here each grade cell is also scored the way nbgrader scores it.

nbgrader's autograde gives a grade cell no credit if it raised or wrote to stderr, its plain-text result as
partial credit if that is a number, and full credit otherwise (``nbgrader.utils.determine_grade``). After
nbval has run a grade cell, the same function reads the cell's outputs:

* in a source notebook (``exercises/source``: the solutions, hidden checks included) every grade cell must
  score its full points: the solutions are correct, and nbgrader reads each check's score;
* in a learner copy (``exercises/release``, nothing solved) every grade cell with a check must score 0:
  a cell that printed something nbgrader cannot read as a score would give full marks to anyone.
"""

from __future__ import annotations

import copy

import pytest


def _expected_points(item) -> float | None:
    """The points nbgrader must give this nbval cell item, or None if it is not a grade cell with a check."""
    cell = getattr(item, "cell", None)
    if cell is None or cell.get("cell_type") != "code":
        return None
    meta = cell.get("metadata", {}).get("nbgrader", {})
    if not isinstance(meta, dict) or not meta.get("grade") or "grader.check(" not in cell.get("source", ""):
        return None
    parts = item.path.parts
    if "source" in parts:
        return float(meta["points"])
    return 0.0 if "release" in parts else None


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item, call):
    outcome = yield
    report = outcome.get_result()
    if call.when != "call" or not report.passed:
        return
    expected = _expected_points(item)
    outputs = getattr(item, "test_outputs", None)
    if expected is None or outputs is None:
        return
    from nbgrader.utils import determine_grade

    executed = copy.deepcopy(item.cell)
    executed.outputs = outputs
    score, max_points = determine_grade(executed)
    if score != expected:
        grade_id = item.cell["metadata"]["nbgrader"]["grade_id"]
        shown = [o.get("data", {}).get("text/plain", o.get("text", "")) for o in outputs]
        report.outcome = "failed"
        report.longrepr = (
            f"nbgrader would score grade cell {grade_id!r} {score:g}/{max_points:g}, expected {expected:g} "
            f"(its outputs as nbgrader reads them: {shown!r})"
        )
