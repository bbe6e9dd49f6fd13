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
