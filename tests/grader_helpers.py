"""Helpers for grader tests: import them (``from grader_helpers import failed_diagnoses``) or use the fixtures
of the same name in ``conftest.py``. (Not in conftest.py itself: ``exercises/conftest.py`` is also a module
named ``conftest``, so ``from conftest import ...`` could find the wrong one.)"""

from __future__ import annotations


def assert_fails_with(result, *fragments: str) -> None:
    """``result`` (a grader ``CheckResult``) failed, scored below its maximum and names every fragment."""
    text = "\n".join(result.messages)
    assert not result.passed, text
    assert result.score < result.max_score, text
    for fragment in fragments:
        assert fragment in text, f"expected {fragment!r} in:\n{text}"


def failed_diagnoses(result) -> dict[str, str]:
    """Failing property name -> its diagnosis, for a grader ``CheckResult``."""
    return {p.name: p.diagnosis for p in result.properties if not p.passed}
