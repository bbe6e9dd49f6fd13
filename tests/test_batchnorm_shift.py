"""Variance shift of dropout before BatchNorm: the stack, the formula against Monte Carlo, the fix."""

import pytest
import torch
from torch import nn

from dropout_course.batchnorm_shift import bn_stack, bn_variances, predicted_train_variance, recalibrate_bn
from dropout_course.layers import Dropout, dropout


def gen(seed=0):
    return torch.Generator().manual_seed(seed)


def _collect_running_stats(net, X, steps=100, batch=256, seed=0):
    """Fill BatchNorm's running statistics as training would (train mode, dropout on), no weight updates."""
    g = gen(seed)
    net.train()
    with torch.no_grad():
        for _ in range(steps):
            net(X[torch.randint(len(X), (batch,), generator=g)])
    net.eval()


def test_bn_stack_structure_and_placements():
    before = bn_stack(depth=3, p=0.4, width=16, in_features=12, n_classes=5)
    after = bn_stack(depth=3, p=0.4, dropout_before_bn=False, width=16, in_features=12, n_classes=5)
    kinds = [type(m).__name__ for m in before]
    assert kinds.count("BatchNorm1d") == 4 and kinds.count("Dropout") == 3
    for i, m in enumerate(before):
        if isinstance(m, Dropout):  # each dropout feeds Linear -> BatchNorm
            assert isinstance(before[i + 1], nn.Linear) and isinstance(before[i + 2], nn.BatchNorm1d)
    after_kinds = [type(m).__name__ for m in after]
    assert after_kinds.count("Dropout") == 1 and after_kinds[-2:] == ["Dropout", "Linear"]
    assert before(torch.randn(7, 12)).shape == (7, 5)
    assert after(torch.randn(7, 3, 2, 2)).shape == (7, 5)  # images are flattened


def test_bn_stack_bad_arguments():
    with pytest.raises(ValueError, match="depth must be a positive int, got 0"):
        bn_stack(0, 0.5)
    with pytest.raises(ValueError, match=r"must be in \[0, 1\].*got 1\.5"):
        bn_stack(2, 1.5)
    with pytest.raises(TypeError, match="dropout_before_bn must be a bool, got 'yes'"):
        bn_stack(2, 0.5, dropout_before_bn="yes")


@pytest.mark.parametrize("p", [0.2, 0.5])
def test_formula_matches_monte_carlo(p):
    torch.manual_seed(0)
    linear = nn.Linear(40, 6)
    a = torch.rand(3000, 40, generator=gen(1)) * torch.linspace(0.1, 2.0, 40)  # independent, uneven scales
    with torch.no_grad():
        draws = torch.cat([linear(dropout(a, p, generator=gen(10 + k))) for k in range(40)])  # (40 * N, 6)
    measured = draws.var(0)
    predicted = predicted_train_variance(linear, a, p)
    # 120,000 samples per feature: the sample variance is within a few percent of the true one
    assert torch.allclose(measured, predicted, rtol=0.05), (measured, predicted)
    assert torch.allclose(predicted_train_variance(linear, a, 0.0), linear(a).detach().var(0), rtol=1e-4)
    with pytest.raises(ValueError, match="p = 1"):
        predicted_train_variance(linear, a, 1.0)


def test_bn_variances_measure_the_shift_and_the_formula_predicts_it():
    torch.manual_seed(0)
    X = torch.rand(2000, 30, generator=gen(2))
    net = bn_stack(depth=3, p=0.5, width=64, in_features=30)
    _collect_running_stats(net, X)
    layers = bn_variances(net, X)
    assert len(layers) == 4 and net.training is False
    assert layers[0].p == 0.0 and abs(layers[0].shift - 1.0) < 1e-6  # the stem has no dropout before it
    for layer in layers[1:]:
        assert layer.p == 0.5
        assert layer.shift > 1.3  # dropout before BN inflates the training variance
        assert abs(layer.predicted_shift - layer.shift) < 0.05 * layer.shift  # exact up to sampling
        assert abs(layer.running_over_test - layer.shift) < 0.15 * layer.shift  # BN keeps the train variance
    # the first dropout block sees no upstream noise: both predictions agree there
    assert abs(layers[1].predicted_local_shift - layers[1].predicted_shift) < 0.05 * layers[1].shift
    no_dropout = bn_stack(depth=2, p=0.0, width=16, in_features=30)
    _collect_running_stats(no_dropout, X, steps=20)
    assert all(abs(v.shift - 1.0) < 1e-6 for v in bn_variances(no_dropout, X))
    with pytest.raises(TypeError, match="nn.Sequential"):
        bn_variances(nn.ModuleList([nn.Linear(2, 2)]), X)
    with pytest.raises(ValueError, match="does not follow a Linear"):
        bn_variances(nn.Sequential(nn.BatchNorm1d(30)), X)


def test_recalibrate_bn_removes_the_shift_and_restores_momentum():
    torch.manual_seed(0)
    X = torch.rand(2000, 30, generator=gen(3))
    net = bn_stack(depth=2, p=0.5, width=32, in_features=30)
    _collect_running_stats(net, X)
    assert max(v.running_over_test for v in bn_variances(net, X)[1:]) > 1.3
    assert recalibrate_bn(net, X, batch_size=250) is net
    assert net.training is False
    for v in bn_variances(net, X):
        # BatchNorm's unbiased batch variances averaged over batches: close to the full-data variance
        assert abs(v.running_over_test - 1.0) < 0.02
    assert all(m.momentum == 0.1 for m in net.modules() if isinstance(m, nn.BatchNorm1d))
    with pytest.raises(ValueError, match="no BatchNorm"):
        recalibrate_bn(nn.Sequential(nn.Linear(2, 2)), X[:, :2])
    with pytest.raises(ValueError, match="batch_size must be a positive int, got 0"):
        recalibrate_bn(net, X, batch_size=0)


def test_bn_variances_is_reproducible_and_leaves_the_global_rng_alone():
    import torch

    from dropout_course.batchnorm_shift import bn_stack, bn_variances

    torch.manual_seed(0)
    net = bn_stack(2, 0.5, dropout_before_bn=True, width=16)
    x = torch.randn(256, 784)
    state = torch.get_rng_state()
    first = [v.shift for v in bn_variances(net, x, seed=3)]
    assert torch.equal(torch.get_rng_state(), state)
    assert [v.shift for v in bn_variances(net, x, seed=3)] == first
    assert [v.shift for v in bn_variances(net, x, seed=4)] != first  # the control: the seed decides the masks
