"""Multi-seed comparisons and sweeps, returned as tidy pandas DataFrames.

Every function returns one row per (config, seed, epoch, metric) with columns
``config, seed, epoch, metric, value``; metrics are ``train_loss, train_acc, val_loss, val_acc`` for
every epoch and ``test_loss, test_acc, seconds, best_epoch`` at the last epoch. Extra columns (``p``,
``n_train``) describe sweeps. :func:`final` and :func:`summarize` reduce them to tables.

A configuration is a function ``make_model(seed) -> nn.Module``; the model is built inside
``config.seeded(seed)`` so its initial weights, batch order and dropout masks are reproducible per seed.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping, Sequence

from torch import nn

from .config import seeded
from .data import DataSplits
from .training import evaluate, fit

__all__ = ["compare", "sweep_p", "sweep_train_size", "final", "summarize"]

_EPOCH_METRICS = ("train_loss", "train_acc", "val_loss", "val_acc")


def _rows_of_run(
    config, seed: int, model: nn.Module, history, data: DataSplits, loss: str, extra: dict
) -> list:
    rows = []
    for metric in _EPOCH_METRICS:
        for epoch, value in zip(history.epoch, getattr(history, metric), strict=False):
            rows.append(
                {"config": config, "seed": seed, "epoch": epoch, "metric": metric, "value": value, **extra}
            )
    last = history.epoch[-1]
    test = evaluate(model, data.test, loss)
    finals = {
        "test_loss": test["loss"],
        "test_acc": test["accuracy"],
        "seconds": history.total_seconds,
        "best_epoch": history.best_epoch,
    }
    for metric, value in finals.items():
        rows.append(
            {"config": config, "seed": seed, "epoch": last, "metric": metric, "value": value, **extra}
        )
    return rows


def _check_seeds(seeds) -> list[int]:
    seeds = list(seeds)
    if not seeds or not all(isinstance(s, int) and not isinstance(s, bool) for s in seeds):
        raise ValueError(f"seeds must be a non-empty sequence of ints, got {seeds!r}")
    return seeds


def compare(
    configs: Mapping[str, Callable[[int], nn.Module]],
    data: DataSplits,
    seeds: Iterable[int] = (0, 1, 2),
    fit_kwargs: Mapping | None = None,
    per_config_fit: Mapping[str, Mapping] | None = None,
    progress: bool = True,
):
    """Train every named configuration on ``data`` for every seed; return the tidy DataFrame.

    Args:
        configs: ``{name: make_model}`` where ``make_model(seed)`` builds a fresh model.
        data: train/val/test splits; the test split is evaluated once, after training.
        seeds: seeds to repeat each configuration over.
        fit_kwargs: keyword arguments for :func:`~dropout_course.training.fit` shared by all configs.
        per_config_fit: per-name overrides of ``fit_kwargs`` (e.g. ``{"L2": {"weight_decay": 1e-3}}``).
        progress: one overall ``tqdm.auto`` bar over all runs.
    """
    import pandas as pd
    from tqdm.auto import tqdm

    if not configs:
        raise ValueError("configs is empty: give at least one {name: make_model}")
    seeds = _check_seeds(seeds)
    unknown = set(per_config_fit or {}) - set(configs)
    if unknown:
        raise ValueError(f"per_config_fit names unknown configs {sorted(unknown)}; known: {sorted(configs)}")
    rows: list[dict] = []
    runs = [(name, seed) for name in configs for seed in seeds]
    for name, seed in tqdm(runs, desc="runs", disable=not progress):
        kwargs = {**(fit_kwargs or {}), **((per_config_fit or {}).get(name, {}))}
        rows += _run_one(name, configs[name], seed, data, kwargs, {})
    return pd.DataFrame(rows)


def _run_one(name, make_model, seed: int, data: DataSplits, kwargs: dict, extra: dict) -> list:
    with seeded(seed):
        model = make_model(seed)
    history = fit(model, data.train, data.val, seed=seed, progress=False, **kwargs)
    return _rows_of_run(name, seed, model, history, data, kwargs.get("loss", "cross_entropy"), extra)


def sweep_p(
    make_model: Callable[[float, int], nn.Module],
    ps: Sequence[float],
    data: DataSplits,
    seeds: Iterable[int] = (0, 1, 2),
    fit_kwargs: Mapping | None = None,
    progress: bool = True,
):
    """Train ``make_model(p, seed)`` for every drop probability in ``ps``; the ``config`` and ``p``
    columns hold ``p``."""
    import pandas as pd
    from tqdm.auto import tqdm

    seeds = _check_seeds(seeds)
    rows: list[dict] = []
    runs = [(p, seed) for p in ps for seed in seeds]
    for p, seed in tqdm(runs, desc="p sweep", disable=not progress):
        rows += _run_one(p, lambda s, p=p: make_model(p, s), seed, data, dict(fit_kwargs or {}), {"p": p})
    return pd.DataFrame(rows)


def sweep_train_size(
    configs: Mapping[str, Callable[[int], nn.Module]],
    load: Callable[[int, int], DataSplits],
    sizes: Sequence[int],
    seeds: Iterable[int] = (0, 1, 2),
    fit_kwargs: Mapping | None = None,
    progress: bool = True,
):
    """Train each configuration on training sets of each size; ``load(n_train, seed)`` gives the data.

    Rows carry an ``n_train`` column. ``fit_kwargs`` may be a callable ``n_train -> dict`` to scale,
    e.g., the number of epochs with the data size.
    """
    import pandas as pd
    from tqdm.auto import tqdm

    seeds = _check_seeds(seeds)
    rows: list[dict] = []
    runs = [(n, name, seed) for n in sizes for name in configs for seed in seeds]
    for n, name, seed in tqdm(runs, desc="size sweep", disable=not progress):
        kwargs = fit_kwargs(n) if callable(fit_kwargs) else dict(fit_kwargs or {})
        rows += _run_one(name, configs[name], seed, load(n, seed), kwargs, {"n_train": n})
    return pd.DataFrame(rows)


def final(df, metrics: Sequence[str] = ("train_acc", "val_acc", "test_acc")):
    """One row per run (config, seed, and any sweep column) with the last epoch's value of each metric."""
    keys = [c for c in df.columns if c not in ("epoch", "metric", "value")]
    last = df.sort_values("epoch").groupby(keys + ["metric"], sort=False).tail(1)
    wide = last[last.metric.isin(metrics)].pivot_table(index=keys, columns="metric", values="value")
    return wide.reset_index()[keys + [m for m in metrics if m in wide.columns]]


def summarize(df, metrics: Sequence[str] = ("train_acc", "val_acc", "test_acc")):
    """Mean and standard deviation over seeds of each final metric, per configuration."""
    runs = final(df, metrics)
    keys = [c for c in runs.columns if c not in ("seed", *metrics)]
    return runs.groupby(keys)[list(m for m in metrics if m in runs.columns)].agg(["mean", "std"])
