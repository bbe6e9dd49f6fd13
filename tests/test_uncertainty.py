"""Tests for dropout_course.uncertainty: MC dropout (vectorised vs loop), calibration, entropy, AUROC."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from torch import nn

from dropout_course.layers import DropConnectLinear, Dropout
from dropout_course.models import MLP, ConvNet, ConvNetConfig, MLPConfig
from dropout_course.training import seeded
from dropout_course.uncertainty import (
    auroc,
    dropout_modules,
    expected_calibration_error,
    mc_dropout_mode,
    mc_predict,
    mc_predict_loop,
    mutual_information,
    predictive_entropy,
    reliability_diagram,
)


def bn_net(p: float = 0.5) -> nn.Module:
    torch.manual_seed(0)
    net = nn.Sequential(
        nn.Linear(6, 16), nn.BatchNorm1d(16), nn.ReLU(), Dropout(p), nn.Linear(16, 3), nn.Dropout(p)
    )
    with torch.no_grad():  # non-trivial running statistics
        net[1].running_mean.uniform_(-1, 1)
        net[1].running_var.uniform_(0.5, 2)
    return net


def linear_dropout_net(p: float, d: int = 20) -> tuple[nn.Module, torch.Tensor]:
    """``y = w . dropout(x)``: the exact mean and variance of one pass are known."""
    lin = nn.Linear(d, 1, bias=False)
    with torch.no_grad():
        lin.weight.copy_(torch.linspace(-1, 1, d))
    return nn.Sequential(Dropout(p), lin), torch.linspace(0.5, 1.5, d)


# --------------------------------------------------------------------------- modes


def test_mc_dropout_mode_samples_dropout_only_and_restores_modes():
    net = bn_net()
    net.train()
    net[1].eval()  # a mixed state, to check that every module's own mode comes back
    before = [m.training for m in net.modules()]
    with mc_dropout_mode(net):
        assert not net[1].training, "BatchNorm must stay in eval mode during MC sampling"
        assert net[3].training and net[5].training, "dropout modules must be in train mode"
        assert not net.training and not net[0].training
    assert [m.training for m in net.modules()] == before


def test_mc_predict_keeps_batchnorm_statistics_and_ignores_batch_composition():
    net = bn_net()
    stats = (net[1].running_mean.clone(), net[1].running_var.clone(), net[1].num_batches_tracked.clone())
    x = torch.randn(8, 6)
    mc_predict(net, x, T=10, seed=0)
    mc_predict_loop(net, x, T=10, seed=0)
    assert torch.equal(net[1].running_mean, stats[0]) and torch.equal(net[1].running_var, stats[1])
    assert torch.equal(net[1].num_batches_tracked, stats[2])
    # with p = 0 the output of an example must not depend on the rest of its batch (BN in eval mode)
    net0 = bn_net(p=0.0)
    alone = mc_predict(net0, x[:2], T=3)
    mixed = mc_predict(net0, torch.cat([x[:2], 100 * torch.randn(30, 6)]), T=3)[:, :2]
    torch.testing.assert_close(alone, mixed)


def test_dropout_modules_finds_course_and_torch_dropouts():
    net = bn_net()
    assert dropout_modules(net) == [net[3], net[5]]
    with pytest.raises(TypeError, match="nn.Module"):
        dropout_modules("not a model")


# --------------------------------------------------------------------------- vectorised vs loop


def test_vectorised_equals_loop_under_the_same_mask():
    """With T = 1 the repeated batch is the batch itself, so the same seed draws the same mask."""
    net, x = linear_dropout_net(0.3)
    xb = x.expand(7, -1).clone()
    torch.testing.assert_close(mc_predict(net, xb, T=1, seed=3), mc_predict_loop(net, xb, T=1, seed=3))


def test_vectorised_and_loop_match_the_exact_distribution():
    p, T, n = 0.3, 400, 50
    net, x = linear_dropout_net(p)
    w = net[1].weight[0].detach()
    mean = float(w @ x)
    var = float((w**2 * x**2).sum() * p / (1 - p))
    xb = x.expand(n, -1).clone()
    for fn in (mc_predict, mc_predict_loop):
        out = fn(net, xb, T=T, seed=1)
        assert out.shape == (T, n, 1)
        samples = out.flatten().double()
        m = samples.numel()
        # 5 standard errors; the variance's standard error uses the Gaussian approximation
        assert abs(samples.mean().item() - mean) < 5 * math.sqrt(var / m), fn.__name__
        assert abs(samples.var().item() / var - 1) < 5 * math.sqrt(2 / m), fn.__name__
        # copies of the same example are independent samples (not one mask repeated T times)
        per_example_std = out[:, :, 0].std(0)
        assert (per_example_std > 0.5 * math.sqrt(var)).all(), fn.__name__
        corr = np.corrcoef(out[:, 0, 0].numpy(), out[:, 1, 0].numpy())[0, 1]
        assert abs(corr) < 5 / math.sqrt(T), f"{fn.__name__}: copies correlated ({corr:.3f})"


def test_p_zero_gives_the_deterministic_output():
    torch.manual_seed(0)
    net = MLP(MLPConfig(in_features=5, hidden=(8,), n_classes=3, hidden_dropout=0.0))
    x = torch.randn(4, 5)
    net.eval()
    expected = net(x).detach()
    for fn in (mc_predict, mc_predict_loop):
        out = fn(net, x, T=6)
        torch.testing.assert_close(out, expected.expand(6, -1, -1))


def test_shapes_softmax_chunking_and_conv_inputs():
    torch.manual_seed(0)
    net = ConvNet(ConvNetConfig(channels=(4,), fc_hidden=8, fc_dropout=0.5, conv_dropout=0.2))
    x = torch.rand(3, 1, 28, 28)
    probs = mc_predict(net, x, T=5, softmax=True, seed=0)
    assert probs.shape == (5, 3, 10)
    torch.testing.assert_close(probs.sum(-1), torch.ones(5, 3))
    chunked = mc_predict(net, x, T=5, seed=0, max_rows=4)
    assert chunked.shape == (5, 3, 10)
    assert not torch.allclose(chunked[0], chunked[1]), "samples of one example should differ"


def test_seed_reproducible_and_global_rng_untouched():
    net, x = linear_dropout_net(0.5)
    xb = x.expand(3, -1).clone()
    state = torch.random.get_rng_state()
    a = mc_predict(net, xb, T=8, seed=5)
    assert torch.equal(torch.random.get_rng_state(), state)
    assert torch.equal(a, mc_predict(net, xb, T=8, seed=5))
    assert not torch.equal(a, mc_predict(net, xb, T=8, seed=6))


def test_bad_inputs_raise_with_the_value():
    net, x = linear_dropout_net(0.5)
    xb = x.expand(2, -1).clone()
    for T in (0, -3, 2.5, True):
        with pytest.raises(ValueError, match=f"got {T!r}"):
            mc_predict(net, xb, T=T)
    with pytest.raises(TypeError, match="list"):
        mc_predict(net, [1.0, 2.0], T=3)
    with pytest.raises(TypeError, match="str"):
        mc_predict_loop("model", xb, T=3)
    with pytest.raises(ValueError, match="max_rows.*got 0"):
        mc_predict(net, xb, T=3, max_rows=0)
    with pytest.raises(ValueError, match="no dropout modules"):
        mc_predict(nn.Linear(20, 1), xb, T=3)


def test_batch_shared_masks_are_refused_by_the_vectorised_form():
    net = nn.Sequential(DropConnectLinear(4, 2, p=0.5, per_example=False))
    x = torch.randn(3, 4)
    with pytest.raises(ValueError, match="DropConnectLinear.*mc_predict_loop"):
        mc_predict(net, x, T=4)
    assert mc_predict_loop(net, x, T=4, seed=0).shape == (4, 3, 2)


def test_per_example_dropconnect_is_sampled_independently_by_the_vectorised_form():
    """Per-example weight masks: the repeated copies are independent samples with the exact variance."""
    torch.manual_seed(0)
    p, T, d = 0.3, 2000, 10
    layer = DropConnectLinear(d, 1, p=p, bias=False)
    x = torch.linspace(0.5, 1.5, d).expand(2, -1).clone()
    w = layer.weight[0].detach()
    var = float((w**2 * x[0] ** 2).sum() * p / (1 - p))
    out = mc_predict(nn.Sequential(layer), x, T=T, seed=0)[..., 0]  # (T, 2)
    assert abs(out.var().item() / var - 1) < 5 * math.sqrt(2 / out.numel())
    corr = np.corrcoef(out[:, 0].numpy(), out[:, 1].numpy())[0, 1]
    assert abs(corr) < 5 / math.sqrt(T), f"copies of two examples share masks (corr {corr:.3f})"


@pytest.mark.parametrize("n", [1, 7, 300])
@pytest.mark.parametrize("max_rows", [None, 1, 50])
def test_chunked_passes_match_the_distribution_and_order(n, max_rows, monkeypatch):
    """Whatever the chunking (many copies per pass, one, or the max_rows cap), out[t, i] is pass t of x[i]."""
    import dropout_course.uncertainty as unc

    monkeypatch.setattr(unc, "CHUNK_ELEMENTS", 64)  # force several chunks even for tiny inputs
    monkeypatch.setattr(unc, "SMALL_INPUT_ELEMENTS", 400)
    p, T = 0.4, 40
    net, x = linear_dropout_net(p, d=4)
    xb = x.expand(n, -1).clone() * torch.arange(1, n + 1).unsqueeze(1)  # example i scaled by i + 1
    out = mc_predict(net, xb, T=T, seed=0, max_rows=max_rows)[..., 0]  # (T, n)
    assert out.shape == (T, n)
    w = net[1].weight[0].detach()
    mean = (xb @ w).detach()
    sd = torch.sqrt((w**2 * xb**2).sum(1) * p / (1 - p))
    z = (out.mean(0) - mean) / (sd / math.sqrt(T))
    assert (z.abs() < 5).all(), f"per-example means off by {z.abs().max():.1f} standard errors"
    assert (out.std(0) > 0.3 * sd).all(), "copies of an example are not independent samples"


def test_chunk_size_grows_with_small_inputs_and_is_one_copy_for_large_ones(monkeypatch):
    """Small inputs run many copies per pass; inputs above SMALL_INPUT_ELEMENTS run one pass per sample."""
    import dropout_course.uncertainty as unc

    rows = []
    lin = nn.Linear(4, 1)
    lin.register_forward_hook(lambda module, args, out: rows.append(len(args[0])))
    net = nn.Sequential(Dropout(0.5), lin)
    monkeypatch.setattr(unc, "CHUNK_ELEMENTS", 400)
    monkeypatch.setattr(unc, "SMALL_INPUT_ELEMENTS", 100)
    mc_predict(net, torch.randn(10, 4), T=25, seed=0)  # 40 numbers per copy -> 10 copies per pass
    assert rows == [100, 100, 50]
    rows.clear()
    mc_predict(net, torch.randn(30, 4), T=3, seed=0)  # 120 numbers > 100: not small -> one copy per pass
    assert rows == [30, 30, 30]


# --------------------------------------------------------------------------- calibration


def reference_ece(probs: np.ndarray, labels: np.ndarray, n_bins: int) -> float:
    """A plain loop over bins, written independently of the library's vectorised version."""
    conf, pred = probs.max(1), probs.argmax(1)
    total = 0.0
    for b in range(n_bins):
        lo, hi = b / n_bins, (b + 1) / n_bins
        in_bin = (conf > lo) & (conf <= hi) if b > 0 else (conf >= lo) & (conf <= hi)
        if in_bin.any():
            total += in_bin.mean() * abs((pred[in_bin] == labels[in_bin]).mean() - conf[in_bin].mean())
    return total


def test_ece_hand_computed_example():
    # confidences 0.95 (right), 0.95 (wrong), 0.65 (right), 0.75 (right), in 10 bins:
    # (2/4)|0.5 - 0.95| + (1/4)|1 - 0.65| + (1/4)|1 - 0.75| = 0.225 + 0.0875 + 0.0625 = 0.375
    probs = torch.tensor([[0.95, 0.05], [0.95, 0.05], [0.65, 0.35], [0.25, 0.75]])
    labels = torch.tensor([0, 1, 0, 1])
    assert expected_calibration_error(probs, labels, n_bins=10) == pytest.approx(0.375)
    # with one bin ECE is |accuracy - mean confidence| = |0.75 - 0.825|
    assert expected_calibration_error(probs, labels, n_bins=1) == pytest.approx(0.075)


def test_ece_matches_reference_and_is_zero_when_calibrated():
    rng = np.random.default_rng(0)
    logits = rng.normal(size=(300, 5)) * 2
    probs = np.exp(logits) / np.exp(logits).sum(1, keepdims=True)
    labels = rng.integers(0, 5, size=300)
    for n_bins in (1, 5, 15):
        assert expected_calibration_error(probs, labels, n_bins) == pytest.approx(
            reference_ece(probs, labels, n_bins)
        )
    # two-class predictions at confidence 0.75 that are right exactly 3 times out of 4
    probs = torch.tensor([[0.75, 0.25]] * 8)
    labels = torch.tensor([0, 0, 0, 1] * 2)
    assert expected_calibration_error(probs, labels) == pytest.approx(0.0)


def test_reliability_diagram_bins():
    probs = torch.tensor([[0.95, 0.05], [0.95, 0.05], [0.65, 0.35], [0.25, 0.75]])
    table = reliability_diagram(probs, torch.tensor([0, 1, 0, 1]), n_bins=10)
    assert list(table.columns) == ["bin_lower", "bin_upper", "confidence", "accuracy", "count"]
    assert table["count"].sum() == 4 and len(table) == 10
    row = table[table["count"] == 2].iloc[0]
    assert row["bin_upper"] == pytest.approx(1.0) and row["accuracy"] == 0.5
    assert row["confidence"] == pytest.approx(0.95)
    assert table["accuracy"].isna().sum() == 7  # empty bins


def test_calibration_bad_inputs():
    probs = torch.tensor([[0.9, 0.1], [0.2, 0.8]])
    with pytest.raises(ValueError, match="n_bins must be a positive int, got 0"):
        expected_calibration_error(probs, torch.tensor([0, 1]), n_bins=0)
    with pytest.raises(ValueError, match="apply softmax"):
        expected_calibration_error(torch.tensor([[2.0, -1.0], [0.0, 3.0]]), torch.tensor([0, 1]))
    with pytest.raises(ValueError, match=r"labels must have shape \(2,\)"):
        expected_calibration_error(probs, torch.tensor([0, 1, 1]))
    with pytest.raises(TypeError, match="list"):
        expected_calibration_error([[0.9, 0.1]], torch.tensor([0]))
    with pytest.raises(ValueError, match=r"\(N, C\)"):
        expected_calibration_error(probs.expand(3, -1, -1), torch.tensor([0, 1]))


# --------------------------------------------------------------------------- entropy, MI, AUROC


def test_predictive_entropy_and_mutual_information():
    uniform = torch.full((2, 4), 0.25)
    one_hot = torch.eye(4)[:2]
    torch.testing.assert_close(
        predictive_entropy(uniform), torch.full((2,), math.log(4), dtype=torch.float64)
    )
    torch.testing.assert_close(predictive_entropy(one_hot), torch.zeros(2, dtype=torch.float64))
    # two confident passes that disagree: the mean is uniform over 2 classes, each pass has entropy 0
    disagree = torch.stack([torch.tensor([[1.0, 0.0]]), torch.tensor([[0.0, 1.0]])])  # (T=2, N=1, C=2)
    assert predictive_entropy(disagree).item() == pytest.approx(math.log(2))
    assert mutual_information(disagree).item() == pytest.approx(math.log(2))
    agree = torch.tensor([[0.7, 0.3]]).expand(5, 1, 2)
    assert mutual_information(agree).item() == pytest.approx(0.0, abs=1e-12)
    with pytest.raises(ValueError, match=r"\(T, N, C\)"):
        mutual_information(uniform)
    with pytest.raises(TypeError, match="dtype torch.int64"):
        predictive_entropy(torch.ones(2, 2, dtype=torch.int64))


def test_auroc():
    assert auroc([0.1, 0.2, 0.3], [0.8, 0.9]) == 1.0
    assert auroc(torch.tensor([0.8, 0.9]), torch.tensor([0.1, 0.2])) == 0.0
    assert auroc([0.5, 0.5], [0.5, 0.5]) == 0.5
    with pytest.raises(ValueError, match="0 in-distribution"):
        auroc([], [0.3])
    with pytest.raises(ValueError, match="scores_in must be finite"):
        auroc([float("nan")], [0.3])
    with pytest.raises(TypeError, match="scores_out.*str"):
        auroc([0.1], "abc")


def test_auroc_matches_pairwise_count_with_ties():
    rng = np.random.default_rng(1)
    a = rng.integers(0, 6, size=40).astype(float)  # many ties
    b = rng.integers(2, 8, size=30).astype(float)
    pairs = (b[None, :] > a[:, None]).mean() + 0.5 * (b[None, :] == a[:, None]).mean()
    assert auroc(a, b) == pytest.approx(pairs)


def test_mlp_chain_composes_to_forward():
    torch.manual_seed(0)
    net = MLP(
        MLPConfig(in_features=12, hidden=(8, 8), n_classes=3, input_dropout=0.2, hidden_dropout=0.5)
    ).eval()
    x = torch.rand(5, 3, 2, 2)
    h = x
    for module in net.chain():
        h = module(h)
    torch.testing.assert_close(h, net(x))


@pytest.mark.parametrize("input_dropout", [0.0, 0.2])
def test_layers_before_the_first_dropout_run_once_with_the_same_result(input_dropout):
    torch.manual_seed(0)
    net = MLP(
        MLPConfig(
            in_features=30, hidden=(16, 16), n_classes=4, input_dropout=input_dropout, hidden_dropout=0.5
        )
    )
    x = torch.rand(7, 30)
    rows_seen = []
    hook = net.hidden[0].register_forward_hook(lambda m, i, o: rows_seen.append(len(i[0])))
    fast = mc_predict(net, x, T=9, seed=3)
    hook.remove()
    torch.testing.assert_close(fast, mc_predict(net, x, T=9, seed=3))
    assert rows_seen == [7 if input_dropout == 0 else 63]
    if input_dropout == 0:  # same masks as the plain recipe (repeat the whole input): the prefix draws none
        with seeded(3), torch.no_grad(), mc_dropout_mode(net):
            reference = net(x.repeat(9, 1)).reshape(9, 7, 4)
        torch.testing.assert_close(fast, reference)
    assert not torch.allclose(fast[0], fast[1]), "the T samples must differ"
