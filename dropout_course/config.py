"""One place for seeding, device choice and thread count.

Library functions never reseed the global random number generators: they take a ``torch.Generator``
or a ``numpy.random.Generator``, or run a block inside :func:`seeded`, which restores the caller's RNG
state after. ``seed_everything`` is for the top of a notebook or script. Thread count: :func:`set_threads`
sets it, :func:`torch_threads` sets it for one block and restores it after.
"""

from __future__ import annotations

import contextlib
import os
import random

import numpy as np
import torch

DEVICE_ENV_VAR = "DROPOUT_COURSE_DEVICE"


def seed_everything(seed: int) -> torch.Generator:
    """Seed Python's, NumPy's and PyTorch's global RNGs; return a fresh ``torch.Generator`` on ``seed``.

    Call it once at the top of a notebook. Library code takes generators instead of using global state.
    """
    if isinstance(seed, bool) or not isinstance(seed, (int, np.integer)):
        raise TypeError(f"seed must be an int, got {seed!r} ({type(seed).__name__})")
    seed = int(seed)
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)
    return make_generator(seed)


@contextlib.contextmanager
def seeded(seed: int):
    """Run a block with PyTorch's global RNG seeded with ``seed``; the caller's RNG state is restored after.

    >>> _ = torch.manual_seed(123)
    >>> with seeded(0):
    ...     a = torch.rand(3)
    >>> after = torch.rand(3)  # the caller's stream goes on as if the block had not run
    >>> _ = torch.manual_seed(123)
    >>> torch.equal(after, torch.rand(3))
    True
    >>> with seeded(0):
    ...     b = torch.rand(3)
    >>> torch.equal(a, b)
    True
    """
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        yield


def make_generator(seed: int, device: str | torch.device = "cpu") -> torch.Generator:
    """A ``torch.Generator`` on ``device`` seeded with ``seed`` (does not touch global state)."""
    generator = torch.Generator(device=device)
    generator.manual_seed(int(seed))
    return generator


def get_device(prefer: str | None = None) -> torch.device:
    """The device to compute on: ``prefer`` or $DROPOUT_COURSE_DEVICE if set, else CUDA, MPS, CPU.

    The course runs on a CPU; an accelerator is used only when one is present.
    """
    choice = prefer or os.environ.get(DEVICE_ENV_VAR)
    if choice:
        device = torch.device(choice)
        if device.type == "cuda" and not torch.cuda.is_available():
            raise ValueError(f"device {choice!r} was requested but CUDA is not available")
        return device
    if torch.cuda.is_available():
        return torch.device("cuda")
    mps = getattr(torch.backends, "mps", None)
    if mps is not None and mps.is_available():
        return torch.device("mps")
    return torch.device("cpu")


def _check_threads(n) -> int:
    if isinstance(n, bool) or not isinstance(n, (int, np.integer)) or n < 1:
        raise ValueError(f"thread count must be a positive int, got {n!r}")
    return int(n)


def set_threads(n: int | None = None) -> int:
    """Set PyTorch's intra-op thread count; return it.

    The default is ``$OMP_NUM_THREADS`` when it is set to a positive integer (a test runner that runs
    notebooks side by side sets it, so that their threads do not outnumber the cores: small models slow
    down several times when they do), else the number of usable CPU cores.
    """
    if n is None:
        n = _threads_from_environment() or _usable_cores()
    n = _check_threads(n)
    torch.set_num_threads(n)
    return n


def _usable_cores() -> int:
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)


def _threads_from_environment() -> int | None:
    """``$OMP_NUM_THREADS`` as a positive int, or None when it is unset or not a positive integer."""
    value = os.environ.get("OMP_NUM_THREADS", "").strip()
    return int(value) if value.isdigit() and int(value) > 0 else None


@contextlib.contextmanager
def torch_threads(n: int = 1):
    """Run a block with PyTorch on ``n`` intra-op threads; the caller's thread count is restored after.

    Small networks and tiny tensors run as fast on one thread, and a single thread does not compete with
    other processes for cores.

    >>> before = torch.get_num_threads()
    >>> with torch_threads(1):
    ...     torch.get_num_threads()
    1
    >>> torch.get_num_threads() == before
    True
    """
    n = _check_threads(n)
    before = torch.get_num_threads()
    torch.set_num_threads(n)
    try:
        yield n
    finally:
        torch.set_num_threads(before)
