"""Graders of the course's exercise notebooks: ``Grader("<exercise id>").check("<check>", candidate)``.

Each exercise notebook has one grader module here whose ``CHECKS`` list holds its checks (see ``EXERCISES``).
"""

from .core import CheckResult, Grader

# exercise id (the assignment folder under exercises/source/) -> grader module in this package
EXERCISES = {
    "ex01_inverted_dropout": "ex01_inverted_dropout",
    "ex02_regularize_mlp": "ex02_regularize_mlp",
    "ex03_spatial_dropout": "ex03_spatial_dropout",
    "ex04_locked_dropout": "ex04_locked_dropout",
    "ex05_attention_dropout": "ex05_attention_dropout",
    "ex06_mc_dropout": "ex06_mc_dropout",
    "ex07_thompson_sampling": "ex07_thompson_sampling",
    "ex08_dropout_theory": "ex08_dropout_theory",
    "ex09_debug_dropout": "ex09_debug_dropout",
}

__all__ = ["Grader", "CheckResult", "EXERCISES"]
