"""final_scores trains the same models as experiments.compare and scores them once; paired differences."""

import pandas as pd
import pytest

from dropout_course.data import load_digits
from dropout_course.experiments import compare, final
from dropout_course.models import MLP, MLPConfig
from dropout_course.sweeps import final_scores, paired_difference


def make(p):
    return lambda seed: MLP(MLPConfig(in_features=64, hidden=(32,), n_classes=10, hidden_dropout=p))


KWARGS = {"epochs": 2, "batch_size": 64}


def test_one_row_per_run_with_errors_and_extra_columns():
    data = load_digits(n_train=150)
    df = final_scores(
        {"none": make(0.0), "drop": make(0.5)},
        data,
        seeds=[0, 1],
        fit_kwargs=KWARGS,
        extra={"drop": {"p": 0.5}, "none": {"p": 0.0}},
        progress=False,
    )
    assert len(df) == 4
    assert {"config", "seed", "p", "train_loss", "test_loss", "train_error", "test_error"} <= set(df.columns)
    assert (df.train_error == 1 - df.train_acc).all() and (df.test_error == 1 - df.test_acc).all()
    assert df.set_index("config").loc["drop", "p"].tolist() == [0.5, 0.5]


def test_same_models_as_compare():
    # final_scores skips the per-epoch evaluations, which consume no randomness: same seed, same model
    data = load_digits(n_train=150)
    ours = final_scores({"drop": make(0.5)}, data, seeds=[3], fit_kwargs=KWARGS, progress=False)
    theirs = final(
        compare({"drop": make(0.5)}, data, seeds=[3], fit_kwargs=KWARGS, progress=False), ("test_loss",)
    )
    assert ours.test_loss.iloc[0] == pytest.approx(theirs.test_loss.iloc[0], rel=1e-6)


def test_paired_difference_per_seed():
    df = pd.DataFrame(
        {"config": ["a", "a", "b", "b"], "seed": [0, 1, 0, 1], "test_loss": [1.0, 2.0, 0.5, 2.5]}
    )
    diff = paired_difference(df, "test_loss", "a", "b")
    assert diff.to_dict() == {0: 0.5, 1: -0.5}
    with pytest.raises(ValueError, match="not in the table"):
        paired_difference(df, "test_loss", "a", "c")


@pytest.mark.parametrize(
    "kwargs, match",
    [
        ({"configs": {}}, "configs is empty"),
        ({"seeds": []}, "seeds must be"),
        ({"fit_kwargs": {"patience": 3}}, "without a validation split"),
    ],
)
def test_bad_input(kwargs, match):
    args = {"configs": {"a": make(0.0)}, "data": load_digits(n_train=50), "seeds": [0], "fit_kwargs": KWARGS}
    args.update(kwargs)
    with pytest.raises(ValueError, match=match):
        final_scores(progress=False, **args)
