"""Benchmark: vectorised MC dropout (one batched pass) against the naive loop of T passes, at T=50.

Run: ``python benchmarks/bench_mc_dropout.py``. Prints the median wall time of each and the speed ratio
for the course's two MC-dropout workloads: the 1-D regression grid of notebook 08 and an MNIST MLP on a
small batch. A script, not a test: timings depend on the machine (target: the vectorised form at least
5x faster on the regression grid).
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
    regression = MLP(MLPConfig(in_features=1, hidden=(64, 64), n_classes=1, hidden_dropout=0.1))
    ratio = bench(
        "1-D regression, grid of 200 points",
        regression,
        torch.linspace(-6, 6, 200)[:, None],
        args.T,
        args.repeats,
    )
    mnist = MLP(MLPConfig(in_features=784, hidden=(128, 128), n_classes=10, hidden_dropout=0.5))
    bench("MNIST MLP 784-128-128-10, batch of 16", mnist, torch.rand(16, 784), args.T, args.repeats)
    bench("MNIST MLP 784-128-128-10, batch of 500", mnist, torch.rand(500, 784), args.T, 5)
    print(
        f"speed ratio vectorised vs loop at T={args.T} (regression grid): {ratio:.1f}x "
        f"({'meets' if ratio >= 5 else 'MISSES'} the 5x target)"
    )


if __name__ == "__main__":
    main()
