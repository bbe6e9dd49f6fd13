"""Shared fixtures and helpers for the test suite, and its set-up under pytest-xdist.

Helpers for grader tests (use the fixtures, or import the functions: ``from grader_helpers import ...``):

- ``fails_with`` / :func:`assert_fails_with`: a grader check failed, lost points, and its messages contain
  every given fragment.
- ``failed_properties`` / :func:`failed_diagnoses`: ``{property name: diagnosis}`` of a check's failing
  properties.

Under pytest-xdist (``make test`` runs ``-n 2 --dist loadfile``) each worker gets an equal share of the
CPU cores for PyTorch (cores // workers threads, at least one), in the worker and in the notebook kernels
it starts (through ``OMP_NUM_THREADS``), so two workers do not oversubscribe the cores. An
``OMP_NUM_THREADS`` already set is kept, and notebooks that call ``set_threads`` choose their own.
"""

from __future__ import annotations

import os

import pytest
from grader_helpers import assert_fails_with, failed_diagnoses


@pytest.fixture
def fails_with():
    """:func:`assert_fails_with`, as a fixture."""
    return assert_fails_with


@pytest.fixture
def failed_properties():
    """:func:`failed_diagnoses`, as a fixture."""
    return failed_diagnoses


def _usable_cores() -> int:
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)


def pytest_configure(config) -> None:
    workers = os.environ.get("PYTEST_XDIST_WORKER_COUNT")
    if not workers or "OMP_NUM_THREADS" in os.environ:
        return
    threads = max(1, _usable_cores() // int(workers))
    os.environ["OMP_NUM_THREADS"] = str(threads)  # inherited by the notebook kernels nbval starts
    import torch

    torch.set_num_threads(threads)
