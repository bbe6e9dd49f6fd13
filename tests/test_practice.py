"""The dropout audit: each mistake is found, a correct model gets no finding, nothing about the model changes."""

import pytest
import torch
from torch import nn

from dropout_course.layers import Dropout
from dropout_course.practice import audit_dropout, leaf_modules


def good_net():
    return nn.Sequential(
        nn.Linear(6, 16),
        nn.BatchNorm1d(16),
        nn.ReLU(),
        nn.Dropout(0.5),
        nn.Linear(16, 16),
        nn.ReLU(),
        Dropout(0.2),
        nn.Linear(16, 3),
    )


def codes(model, x=None):
    return [f.code for f in audit_dropout(model, x)]


def test_a_correct_model_in_eval_mode_has_no_finding():
    net = good_net().eval()
    assert codes(net, torch.randn(8, 6)) == []


@pytest.mark.parametrize(
    ("net", "expected"),
    [
        (nn.Sequential(nn.Linear(6, 3), nn.ReLU()), ["no-dropout"]),
        (nn.Sequential(nn.Linear(6, 16), nn.ReLU(), nn.Linear(16, 3), nn.Dropout(0.1)), ["logit-dropout"]),
        (
            nn.Sequential(nn.Linear(6, 16), nn.Dropout(0.3), nn.BatchNorm1d(16), nn.Linear(16, 3)),
            ["dropout-before-batchnorm"],
        ),
        (nn.Sequential(nn.Linear(6, 16), nn.ReLU(), nn.Dropout(0.8), nn.Linear(16, 3)), ["keep-as-drop"]),
    ],
)
def test_each_mistake_is_found(net, expected):
    assert codes(net) == expected


def test_nested_models_are_read_in_registration_order():
    net = nn.Sequential(
        nn.Sequential(nn.Linear(6, 16), nn.Dropout(0.2)), nn.Sequential(nn.BatchNorm1d(16), nn.Linear(16, 3))
    )
    assert [name for name, _ in leaf_modules(net)] == ["0.0", "0.1", "1.0", "1.1"]
    assert codes(net) == ["dropout-before-batchnorm"]


def test_train_mode_is_found_and_modes_and_rng_are_left_alone():
    net = good_net().train()
    x = torch.randn(8, 6)
    state = torch.get_rng_state()
    assert codes(net, x) == ["train-mode"]
    assert all(m.training for m in net.modules())
    assert torch.equal(torch.get_rng_state(), state)
    assert codes(net.eval(), x) == []  # the control: the same model in eval mode is deterministic


def test_bad_input_is_named():
    with pytest.raises(TypeError, match="torch.nn.Module, got list"):
        audit_dropout([nn.Linear(2, 2)])


def test_learning_rate_sweep_pairs_configs_lrs_and_seeds():
    from dropout_course.data import load_digits
    from dropout_course.models import MLP, MLPConfig
    from dropout_course.practice import learning_rate_sweep

    data = load_digits(n_train=200, seed=0)
    runs = learning_rate_sweep(
        {
            "plain": lambda s: MLP(MLPConfig(in_features=64, hidden=(16,))),
            "capped": lambda s: MLP(MLPConfig(in_features=64, hidden=(16,), hidden_dropout=0.5)),
        },
        data,
        lrs=(0.01, 0.1),
        seeds=(0, 1),
        fit_kwargs=dict(epochs=2, optimizer="sgd"),
        per_config_fit={"capped": {"max_norm": 0.5}},
        progress=False,
    )
    assert list(runs.columns) == ["config", "lr", "seed", "test_loss", "test_acc"]
    assert sorted(set(zip(runs.config, runs.lr, runs.seed, strict=True))) == sorted(
        (c, lr, s) for c in ("capped", "plain") for lr in (0.01, 0.1) for s in (0, 1)
    )
    again = learning_rate_sweep(
        {"plain": lambda s: MLP(MLPConfig(in_features=64, hidden=(16,)))},
        data,
        lrs=(0.1,),
        seeds=(1,),
        fit_kwargs=dict(epochs=2, optimizer="sgd"),
        progress=False,
    )
    first = runs[(runs.config == "plain") & (runs.lr == 0.1) & (runs.seed == 1)].test_loss.item()
    assert again.test_loss.item() == first  # seeded: the same run gives the same number
    with pytest.raises(ValueError, match="must not set lr"):
        learning_rate_sweep({"plain": lambda s: nn.Linear(64, 10)}, data, lrs=(0.1,), fit_kwargs={"lr": 1.0})


def test_recipe_card_draws_every_row():
    import matplotlib

    matplotlib.use("Agg")
    from dropout_course.practice import RECIPE, recipe_card

    fig = recipe_card()
    texts = {cell.get_text().get_text() for cell in fig.axes[0].tables[0].get_celld().values()}
    assert all(row[0] in texts for row in RECIPE)
    with pytest.raises(ValueError, match="triples"):
        recipe_card([("only two", "fields")])
