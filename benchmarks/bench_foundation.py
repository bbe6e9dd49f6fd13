"""Speed of the foundation against plain PyTorch; prints ratios (lower is better), not a test.

    python benchmarks/bench_foundation.py

Targets: from-scratch ``dropout`` forward+backward on 1M elements at most 1.3x
``torch.nn.functional.dropout``; ``fit()`` at most 1.05x a bare PyTorch loop on the same MLP and data;
``import dropout_course`` (and its core modules) under 2 s after torch is imported.
"""

from __future__ import annotations

import statistics
import subprocess
import sys
import time

import torch
import torch.nn.functional as F

from dropout_course.data import load_mnist
from dropout_course.layers import dropout
from dropout_course.models import MLP, MLPConfig
from dropout_course.training import fit, seeded


def best_of(fn, repeats: int = 7, number: int = 20) -> float:
    """Median over ``repeats`` of the mean time of ``number`` calls (seconds per call)."""
    fn()  # warm-up
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        for _ in range(number):
            fn()
        times.append((time.perf_counter() - start) / number)
    return statistics.median(times)


def bench_dropout(n: int = 1_000_000, p: float = 0.5) -> float:
    x = torch.randn(n, requires_grad=True)
    grad = torch.ones(n)

    def ours():
        dropout(x, p).backward(grad)

    def reference():
        F.dropout(x, p, training=True).backward(grad)

    t_ours, t_ref = best_of(ours), best_of(reference)
    ratio = t_ours / t_ref
    print(
        f"dropout fwd+bwd on {n:,} elements: ours {t_ours * 1e3:.2f} ms, torch {t_ref * 1e3:.2f} ms, "
        f"ratio {ratio:.2f} (target <= 1.3)"
    )
    return ratio


def bare_loop(model, X, y, epochs: int, batch_size: int, lr: float) -> None:
    """The plain PyTorch loop fit() is compared with: shuffle, step, no measurements."""
    opt = torch.optim.Adam(model.parameters(), lr=lr)
    for _ in range(epochs):
        model.train()
        order = torch.randperm(len(X))
        for first in range(0, len(X), batch_size):
            idx = order[first : first + batch_size]
            loss = F.cross_entropy(model(X[idx]), y[idx])
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            loss.item()


def bench_fit(epochs: int = 3, repeats: int = 3) -> float:
    data = load_mnist()
    config = MLPConfig(hidden=(256, 256), hidden_dropout=0.5)

    def run_fit():
        with seeded(0):
            model = MLP(config)
        fit(
            model,
            data.train,
            epochs=epochs,
            batch_size=64,
            lr=1e-3,
            measure_train=False,
            progress=False,
            seed=0,
        )

    def run_bare():
        with seeded(0):
            model = MLP(config)
            bare_loop(model, data.train.X, data.train.y, epochs, 64, 1e-3)

    t_fit = best_of(run_fit, repeats=repeats, number=1)
    t_bare = best_of(run_bare, repeats=repeats, number=1)
    ratio = t_fit / t_bare
    print(
        f"fit() vs bare loop, MLP 784-256-256-10, 4,000 images x {epochs} epochs: fit {t_fit:.2f} s, "
        f"bare {t_bare:.2f} s, ratio {ratio:.3f} (target <= 1.05)"
    )
    return ratio


def bench_import() -> float:
    code = (
        "import time, torch; t = time.perf_counter(); import dropout_course, dropout_course.layers, "
        "dropout_course.models, dropout_course.training, dropout_course.data; "
        "print(time.perf_counter() - t)"
    )
    seconds = float(
        subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    )
    print(
        f"import dropout_course (+ layers, models, training, data) after torch: {seconds:.2f} s (target < 2 s)"
    )
    return seconds


if __name__ == "__main__":
    torch.manual_seed(0)
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads")
    bench_dropout()
    bench_fit()
    bench_import()
