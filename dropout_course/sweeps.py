"""Many short training runs scored once at the end: the cheap way to sweep ``p``, widths and placements.

:func:`final_scores` trains every configuration for every seed *without* per-epoch evaluation (no
validation pass, no training-set pass after each epoch) and then measures the final model in eval mode on
the training and test splits. It returns one row per run, so sweeps of many configurations (the drop
probability ``p``, the width, where dropout goes) cost only their training steps. For learning curves use
:func:`dropout_course.experiments.compare`, which records every epoch.

:func:`paired_difference` reduces such a table to per-seed differences between two configurations, the
quantity the course's claims are asserted on (paired over seeds: same data, same initial seed).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping

from torch import nn

from .config import seeded
from .data import DataSplits
from .training import evaluate, fit

__all__ = ["final_scores", "paired_difference"]


def final_scores(
    configs: Mapping[object, Callable[[int], nn.Module]],
    data: DataSplits,
    seeds: Iterable[int] = (0, 1, 2),
    fit_kwargs: Mapping | None = None,
    extra: Mapping[object, Mapping] | None = None,
    progress: bool = True,
    description: str = "runs",
):
    """Train ``configs[name](seed)`` on ``data.train`` for every seed; score the final model once.

    Args:
        configs: ``{name: make_model}``; ``make_model(seed)`` is called inside ``seeded(seed)``, and ``fit``
            gets ``seed=seed`` (batch order, dropout masks), so a run is reproducible and the same seed
            gives the same model as :func:`dropout_course.experiments.compare` with the same ``fit_kwargs``.
        data: the splits; ``data.val`` is not used.
        seeds: the seeds (paired across configurations).
        fit_kwargs: keyword arguments for :func:`~dropout_course.training.fit` (no ``val``-based options).
        extra: per-name columns to add to the rows (e.g. ``{name: {"p": 0.5, "width": 256}}``).
        progress: one ``tqdm.auto`` bar over all runs.

    Returns:
        a pandas DataFrame, one row per run: ``config, seed, <extra columns>, train_loss, train_acc,
        test_loss, test_acc, train_error, test_error`` (train metrics in eval mode, i.e. without dropout).
    """
    import pandas as pd
    from tqdm.auto import tqdm

    seeds = list(seeds)
    if not configs:
        raise ValueError("configs is empty: give at least one {name: make_model}")
    if not seeds or not all(isinstance(s, int) and not isinstance(s, bool) for s in seeds):
        raise ValueError(f"seeds must be a non-empty sequence of ints, got {seeds!r}")
    kwargs = dict(fit_kwargs or {})
    for key in ("patience", "restore_best", "val"):
        if kwargs.get(key):
            raise ValueError(
                f"final_scores trains without a validation split; remove {key!r} from fit_kwargs"
            )
    loss = kwargs.get("loss", "cross_entropy")
    rows = []
    runs = [(name, seed) for name in configs for seed in seeds]
    for name, seed in tqdm(runs, desc=description, disable=not progress):
        with seeded(seed):
            model = configs[name](seed)
        fit(model, data.train, seed=seed, progress=False, measure_train=False, **kwargs)
        train, test = evaluate(model, data.train, loss), evaluate(model, data.test, loss)
        rows.append(
            {
                "config": name,
                "seed": seed,
                **dict((extra or {}).get(name, {})),
                "train_loss": train["loss"],
                "train_acc": train["accuracy"],
                "test_loss": test["loss"],
                "test_acc": test["accuracy"],
            }
        )
    df = pd.DataFrame(rows)
    df["train_error"] = 1 - df.train_acc
    df["test_error"] = 1 - df.test_acc
    return df


def paired_difference(df, metric: str, a, b):
    """Per-seed ``metric`` of configuration ``a`` minus that of ``b`` (a pandas Series indexed by seed)."""
    missing = {a, b} - set(df.config)
    if missing:
        raise ValueError(f"configurations {sorted(map(str, missing))} not in the table")
    wide = df.pivot_table(index="seed", columns="config", values=metric)
    return (wide[a] - wide[b]).dropna()
