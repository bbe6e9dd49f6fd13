"""Multi-seed comparisons return tidy frames; summaries reduce them correctly."""

import pytest

from dropout_course.data import load_digits
from dropout_course.experiments import compare, final, summarize, sweep_p, sweep_train_size
from dropout_course.models import MLP, MLPConfig


def make(p):
    return lambda seed: MLP(MLPConfig(in_features=64, hidden=(32,), n_classes=10, hidden_dropout=p))


def test_compare_is_tidy_and_reproducible():
    data = load_digits(n_train=200)
    kwargs = {"epochs": 2, "batch_size": 64}
    df = compare(
        {"none": make(0.0), "drop": make(0.5)}, data, seeds=[0, 1], fit_kwargs=kwargs, progress=False
    )
    assert list(df.columns[:5]) == ["config", "seed", "epoch", "metric", "value"]
    assert set(df.metric) == {
        "train_loss",
        "train_acc",
        "val_loss",
        "val_acc",
        "test_loss",
        "test_acc",
        "seconds",
        "best_epoch",
    }
    again = compare({"none": make(0.0)}, data, seeds=[0], fit_kwargs=kwargs, progress=False)
    key = (df.config == "none") & (df.seed == 0) & (df.metric == "val_loss")
    assert df[key].value.tolist() == again[again.metric == "val_loss"].value.tolist()
    runs = final(df)
    assert len(runs) == 4 and {"train_acc", "val_acc", "test_acc"} <= set(runs.columns)
    table = summarize(df)
    assert table.loc["drop", ("test_acc", "mean")] == pytest.approx(
        runs[runs.config == "drop"].test_acc.mean()
    )


def test_sweeps_carry_their_column():
    data = load_digits(n_train=100)
    df = sweep_p(
        lambda p, seed: make(p)(seed), [0.0, 0.5], data, seeds=[0], fit_kwargs={"epochs": 1}, progress=False
    )
    assert set(df.p) == {0.0, 0.5} and set(final(df).p) == {0.0, 0.5}
    sizes = sweep_train_size(
        {"none": make(0.0)},
        lambda n, seed: load_digits(n_train=n, seed=seed),
        [50, 100],
        seeds=[0],
        fit_kwargs=lambda n: {"epochs": 1},
        progress=False,
    )
    assert set(sizes.n_train) == {50, 100}


def test_bad_configs():
    data = load_digits(n_train=100)
    with pytest.raises(ValueError, match="configs is empty"):
        compare({}, data, progress=False)
    with pytest.raises(ValueError, match="seeds must be a non-empty sequence of ints"):
        compare({"a": make(0.0)}, data, seeds=[], progress=False)
    with pytest.raises(ValueError, match=r"per_config_fit names unknown configs \['b'\]"):
        compare({"a": make(0.0)}, data, per_config_fit={"b": {}}, progress=False)
