"""Benchmark: batched MC dropout (``mc_predict``) against the naive loop of T passes, at T=50.

Run: ``python benchmarks/bench_mc_dropout.py [--threads 1]``. Prints the median wall time of each and the
speed ratio for the course's MC-dropout workloads: the 1-D regression grids of notebook 07 and an MNIST
MLP on one image, a small batch and a 1,500-image test set. A script, not a test: timings depend on the
machine and its load (on a machine shared with other jobs, run it with ``--threads 1``).

The batched pass saves the per-call overhead of T forward passes, so the gain is largest for small inputs
(one image, a 16-image batch). One huge (T*N, ...) batch loses to the loop once its activations overflow
the CPU's caches, so ``mc_predict`` runs the repeated batch in chunks of about ``CHUNK_ELEMENTS`` numbers,
which for a large input is one pass per sample, i.e. the loop itself: the ratio should never fall
clearly below 1.0x (timing noise aside).
"""

from __future__ import annotations

import argparse
import time

import torch

from dropout_course.models import MLP, MLPConfig
from dropout_course.uncertainty import mc_predict, mc_predict_loop


def median_seconds(fn, repeats: int) -> float:
    fn()  # warm-up
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return sorted(times)[len(times) // 2]


def bench(name: str, model: torch.nn.Module, x: torch.Tensor, T: int, repeats: int) -> float:
    vec = median_seconds(lambda: mc_predict(model, x, T, seed=0), repeats)
    loop = median_seconds(lambda: mc_predict_loop(model, x, T, seed=0), repeats)
    print(
        f"{name:<38} T={T}: vectorised {vec * 1e3:7.2f} ms   loop {loop * 1e3:7.2f} ms   "
        f"ratio {loop / vec:5.1f}x"
    )
    return loop / vec


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--T", type=int, default=50)
    parser.add_argument("--repeats", type=int, default=21)
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    regression = MLP(MLPConfig(in_features=1, hidden=(128, 128), n_classes=1, hidden_dropout=0.1))
    mnist = MLP(MLPConfig(in_features=784, hidden=(128, 128), n_classes=10, hidden_dropout=0.5))
    cases = {
        "1-D regression MLP, grid of 200 points": (
            regression,
            torch.linspace(-6, 6, 200)[:, None],
            args.repeats,
        ),
        "MNIST MLP 784-128-128-10, one image": (mnist, torch.rand(1, 784), args.repeats),
        "MNIST MLP 784-128-128-10, 16 images": (mnist, torch.rand(16, 784), args.repeats),
        "1-D regression MLP, grid of 2,000 points": (
            regression,
            torch.linspace(-6, 6, 2000)[:, None],
            max(3, args.repeats // 4),
        ),
        "MNIST MLP 784-128-128-10, 1,500 images": (mnist, torch.rand(1500, 784), 5),
    }
    ratios = {name: bench(name, model, x, args.T, repeats) for name, (model, x, repeats) in cases.items()}
    print(f"\nspeed ratio batched vs naive loop at T={args.T} (never below 1x; >= 5x for small inputs):")
    for name, ratio in ratios.items():
        print(f"  {name:<42} {ratio:5.1f}x")


if __name__ == "__main__":
    main()
