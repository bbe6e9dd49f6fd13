"""Unit ablation: masks remove exactly the chosen units, curves have the right shape and reproduce."""

import numpy as np
import pytest
import torch

from dropout_course.ablation import ablation_curve, area_under_curve, forward_with_units_removed
from dropout_course.models import MLP, MLPConfig
from dropout_course.training import seeded


def small_mlp(p=0.5):
    with seeded(0):
        return MLP(MLPConfig(in_features=8, hidden=(16, 12), n_classes=3, hidden_dropout=p))


def test_all_kept_is_the_eval_network_and_mode_is_restored():
    model = small_mlp().train()
    x = torch.randn(5, 8)
    out = forward_with_units_removed(model, x, [torch.ones(16), torch.ones(12)])
    assert model.training  # restored
    model.eval()
    assert torch.allclose(out, model(x))


def test_removing_every_unit_of_the_last_layer_leaves_the_bias():
    model = small_mlp()
    out = forward_with_units_removed(model, torch.randn(4, 8), [torch.ones(16), torch.zeros(12)])
    assert torch.allclose(out, model.head.bias.expand(4, -1))


def test_removed_unit_has_no_effect_on_next_layer():
    model = small_mlp()
    x = torch.randn(6, 8)
    keep = [torch.ones(16), torch.ones(12)]
    keep[1][3] = 0.0
    # the same as zeroing the head's weights from unit 3
    expected_model = small_mlp().eval()
    with torch.no_grad():
        expected_model.head.weight[:, 3] = 0.0
    assert torch.allclose(forward_with_units_removed(model, x, keep), expected_model(x), atol=1e-6)


def test_curve_shape_reproducible_and_intact_row():
    model = small_mlp()
    X, y = torch.randn(40, 8), torch.randint(0, 3, (40,))
    fractions = [0.0, 0.25, 0.5, 0.75]
    a = ablation_curve(model, X, y, fractions, n_masks=3, generator=torch.Generator().manual_seed(1))
    b = ablation_curve(model, X, y, fractions, n_masks=3, generator=torch.Generator().manual_seed(1))
    assert a.shape == (4, 3) and np.array_equal(a, b)
    intact = (
        (forward_with_units_removed(model, X, [torch.ones(16), torch.ones(12)]).argmax(1) == y)
        .double()
        .mean()
    )
    assert np.allclose(a[0], intact.item())
    assert ((a >= 0) & (a <= 1)).all()


@pytest.mark.parametrize("fractions", [[1.0], [-0.1], ["a"]])
def test_bad_fraction(fractions):
    with pytest.raises(ValueError, match="fraction"):
        ablation_curve(small_mlp(), torch.randn(3, 8), torch.zeros(3, dtype=torch.long), fractions)


def test_bad_model_and_masks():
    with pytest.raises(TypeError, match="MLP"):
        forward_with_units_removed(torch.nn.Linear(8, 3), torch.randn(2, 8), [])
    with pytest.raises(ValueError, match="one mask per hidden layer"):
        forward_with_units_removed(small_mlp(), torch.randn(2, 8), [torch.ones(16)])


def test_area_under_curve():
    f = [0.0, 0.5, 1.0]
    assert area_under_curve(f, np.array([1.0, 1.0, 1.0])) == pytest.approx(1.0)
    assert area_under_curve(f, np.array([1.0, 0.5, 0.0])) == pytest.approx(0.5)
    assert area_under_curve(f, np.array([[1.0, 1.0], [0.5, 0.5], [0.0, 0.0]])) == pytest.approx(0.5)
    with pytest.raises(ValueError, match="increasing"):
        area_under_curve([0.5, 0.0], np.array([1.0, 1.0]))
