"""The dropout family: statistics within binomial tolerances, gradients, edge cases, errors."""

import math
import re

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from dropout_course.layers import (
    DropBlock,
    DropConnectLinear,
    Dropout,
    DropPath,
    GaussianDropout,
    LockedDropout,
    SpatialDropout,
    dropout,
    dropout_backward_numpy,
    dropout_forward_numpy,
)

SIGMA = 6.0  # tolerance in standard deviations of the binomial / sample-mean spread


def binomial_bound(n: int, p: float) -> float:
    """6-sigma half-width for the observed fraction of n Bernoulli(p) draws."""
    return SIGMA * math.sqrt(p * (1 - p) / n) + 1e-12


def gen(seed=0):
    return torch.Generator().manual_seed(seed)


# --------------------------------------------------------------------------- functional dropout


@pytest.mark.parametrize("p", [0.1, 0.5, 0.8])
def test_drop_fraction_and_scaling(p):
    x = torch.ones(200_000)
    y = dropout(x, p, generator=gen())
    dropped = (y == 0).float().mean().item()
    assert abs(dropped - p) < binomial_bound(len(x), p)
    kept = y[y != 0]
    assert torch.allclose(kept, torch.full_like(kept, 1 / (1 - p)))


@pytest.mark.parametrize("p", [0.2, 0.5])
def test_mean_and_variance_match_formulas(p):
    x = torch.full((400_000,), 3.0)
    y = dropout(x, p, generator=gen(1))
    var = 9.0 * p / (1 - p)
    assert abs(y.mean().item() - 3.0) < SIGMA * math.sqrt(var / len(x))
    # the sample variance of a scaled Bernoulli: relative tolerance from its own spread (4th moment)
    assert abs(y.var().item() - var) / var < 0.02


def test_statistics_agree_with_torch_dropout():
    x = torch.randn(100_000, generator=gen(2)).abs() + 0.5
    p = 0.3
    ours = dropout(x, p, generator=gen(3))
    ref = F.dropout(x, p, training=True)
    assert abs((ours == 0).float().mean() - (ref == 0).float().mean()) < 2 * binomial_bound(len(x), p)
    kept_ours, kept_ref = ours[ours != 0] / x[ours != 0], ref[ref != 0] / x[ref != 0]
    assert torch.allclose(kept_ours, torch.full_like(kept_ours, 1 / 0.7))
    assert torch.allclose(kept_ref, torch.full_like(kept_ref, 1 / 0.7))  # the same inverted scaling


def test_autograd_gradient_is_the_mask():
    x = torch.randn(50, 20, requires_grad=True)
    y = dropout(x, 0.4, generator=gen(4))
    y.backward(torch.ones_like(y))
    expected = (y != 0).float() / 0.6
    assert torch.allclose(x.grad, expected)


def test_gradcheck_with_fixed_mask():
    x = torch.randn(6, 5, dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(lambda t: dropout(t, 0.3, generator=gen(5)), (x,))


DROPOUT_LAYERS = [  # every layer whose output has the input's shape
    Dropout,
    SpatialDropout,
    LockedDropout,
    GaussianDropout,
    DropPath,
    DropBlock,
]


@pytest.mark.parametrize("layer_type", DROPOUT_LAYERS)
@pytest.mark.parametrize("p", [0.0, 0.5, 1.0])
def test_eval_mode_returns_input_unchanged_for_every_p(layer_type, p):
    x = torch.randn(4, 3, 6, 6)
    assert dropout(x, p, training=False) is x
    assert torch.equal(layer_type(p).eval()(x), x)


@pytest.mark.parametrize("layer_type", DROPOUT_LAYERS)
def test_p0_in_train_mode_returns_input_unchanged(layer_type):
    x = torch.randn(4, 3, 6, 6)
    assert torch.equal(dropout(x, 0.0), x)
    assert torch.equal(layer_type(0.0).train()(x), x)


def test_p1_returns_zeros_without_nan_and_zero_grad():
    x = torch.randn(10, 10, requires_grad=True)
    y = dropout(x, 1.0)
    assert torch.equal(y, torch.zeros_like(y)) and not torch.isnan(y).any()
    y.sum().backward()
    assert torch.equal(x.grad, torch.zeros_like(x))


def test_input_never_modified():
    x = torch.randn(100, 10)
    before = x.clone()
    for layer in (Dropout(0.5), SpatialDropout(0.5), DropPath(0.5), GaussianDropout(0.5)):
        layer(x.view(100, 10, 1))
    dropout(x, 0.5)
    LockedDropout(0.5)(x.view(10, 10, 10))
    assert torch.equal(x, before)


def test_generator_makes_masks_reproducible_and_successive_calls_differ():
    x = torch.ones(1000)
    assert torch.equal(dropout(x, 0.5, generator=gen(7)), dropout(x, 0.5, generator=gen(7)))
    g = gen(7)
    assert not torch.equal(dropout(x, 0.5, generator=g), dropout(x, 0.5, generator=g))


# "meta" tensors have no data: a mask made on the CPU instead of the input's device fails there, so the
# device is checked on a CPU-only machine too.
@pytest.mark.parametrize("device", ["cpu", "meta"] + (["cuda"] if torch.cuda.is_available() else []))
@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16, torch.float32, torch.float64])
@pytest.mark.parametrize("layer_type", DROPOUT_LAYERS)
def test_dtype_and_device_preserved(layer_type, dtype, device):
    x = torch.ones(4, 3, 6, 6, dtype=dtype, device=device)
    for y in (dropout(x, 0.5), layer_type(0.5)(x)):
        assert (y.dtype, y.device) == (x.dtype, x.device)


# --------------------------------------------------------------------------- bad input, pinned messages


@pytest.mark.parametrize("bad", [-0.1, 1.5, float("nan"), float("inf")])
def test_bad_p_value_raises_value_error_naming_it(bad):
    with pytest.raises(
        ValueError, match=r"dropout probability p must be in \[0, 1\].*got " + re.escape(repr(bad))
    ):
        dropout(torch.ones(3), bad)


@pytest.mark.parametrize("bad", ["0.5", None, True, [0.5], 1j])
def test_bad_p_type_raises_type_error_naming_it(bad):
    with pytest.raises(TypeError, match=r"must be a real number in \[0, 1\], got " + re.escape(repr(bad))):
        dropout(torch.ones(3), bad)


@pytest.mark.parametrize(
    "factory",
    [Dropout, SpatialDropout, LockedDropout, GaussianDropout, DropPath, lambda p: DropConnectLinear(3, 2, p)],
)
def test_every_layer_validates_p(factory):
    with pytest.raises(ValueError, match="got 2"):
        factory(2)
    with pytest.raises(TypeError, match="got 'x'"):
        factory("x")


def test_non_tensor_input_is_a_type_error():
    with pytest.raises(TypeError, match="input must be a torch.Tensor, got list"):
        dropout([1.0, 2.0], 0.5)
    with pytest.raises(TypeError, match="floating-point"):
        dropout(torch.ones(3, dtype=torch.int64), 0.5)


def test_numpy_probability_and_tensor_probability_accepted():
    assert dropout(torch.ones(3), np.float32(0.0)).sum() == 3
    assert dropout(torch.ones(3), torch.tensor(0.0)).sum() == 3


# --------------------------------------------------------------------------- structured variants


def test_dropout_module_train_and_eval():
    layer = Dropout(0.5, generator=gen(8))
    x = torch.ones(1000)
    assert (layer(x) == 0).any()
    layer.eval()
    assert layer(x) is x
    assert "p=0.5" in repr(layer)


def test_spatial_dropout_drops_whole_channels():
    p = 0.5
    x = torch.ones(64, 32, 6, 6)
    y = SpatialDropout(p, generator=gen(9))(x)
    per_channel = y.flatten(2)
    assert ((per_channel == 0).all(-1) | (per_channel == 2.0).all(-1)).all()
    frac = (per_channel[..., 0] == 0).float().mean().item()
    assert abs(frac - p) < binomial_bound(64 * 32, p)
    # masks differ between samples (not one mask for the batch)
    assert not torch.equal(y[0], y[1])
    with pytest.raises(ValueError, match=r"\(N, C, \.\.\.\).*\(5,\)"):
        SpatialDropout(0.5)(torch.ones(5))


@pytest.mark.parametrize("batch_first", [True, False])
def test_locked_dropout_shares_mask_over_time(batch_first):
    x = torch.ones(16, 9, 50) if batch_first else torch.ones(9, 16, 50)
    y = LockedDropout(0.3, batch_first=batch_first, generator=gen(10))(x)
    time_dim = 1 if batch_first else 0
    first = y.select(time_dim, 0).unsqueeze(time_dim)
    assert torch.equal(y, first.expand_as(y))
    frac = (first == 0).float().mean().item()
    assert abs(frac - 0.3) < binomial_bound(16 * 50, 0.3)
    batch_dim = 0 if batch_first else 1
    assert not torch.equal(y.select(batch_dim, 0), y.select(batch_dim, 1))


def test_locked_dropout_rejects_2d_input_and_bad_batch_first():
    with pytest.raises(ValueError, match=r"\(N, T, H\)"):
        LockedDropout(0.5)(torch.ones(3, 4))
    with pytest.raises(TypeError, match="batch_first"):
        LockedDropout(0.5, batch_first="yes")


def test_gaussian_dropout_moments():
    p = 0.3
    x = torch.full((400_000,), 2.0)
    y = GaussianDropout(p, generator=gen(11))(x)
    var = 4.0 * p / (1 - p)
    assert abs(y.mean().item() - 2.0) < SIGMA * math.sqrt(var / len(x))
    assert abs(y.var().item() - var) / var < 0.02
    assert torch.equal(GaussianDropout(1.0)(x), torch.zeros_like(x))
    layer = GaussianDropout(p).eval()
    assert layer(x) is x


def test_drop_path_drops_whole_samples():
    p = 0.25
    x = torch.ones(4000, 3, 5)
    y = DropPath(p, generator=gen(12))(x)
    per_sample = y.flatten(1)
    assert ((per_sample == 0).all(1) | torch.isclose(per_sample, torch.tensor(1 / 0.75)).all(1)).all()
    frac = (per_sample[:, 0] == 0).float().mean().item()
    assert abs(frac - p) < binomial_bound(4000, p)


def test_dropconnect_drops_weights_and_is_unbiased():
    torch.manual_seed(0)
    layer = DropConnectLinear(20, 5, p=0.5, generator=gen(13))
    x = torch.randn(4, 20)
    samples = torch.stack([layer(x) for _ in range(4000)])
    exact = F.linear(x, layer.weight, layer.bias).detach()
    # each output is a sum of 20 scaled Bernoulli terms: its spread gives the tolerance
    spread = samples.std(0)
    assert ((samples.mean(0) - exact).abs() <= SIGMA * spread / math.sqrt(4000) + 1e-6).all()
    layer.eval()
    assert torch.allclose(layer(x), exact)
    # a single forward pass uses one weight mask: outputs are linear in x with that masked matrix
    layer.train()
    y = layer(torch.eye(20))
    assert ((y - layer.bias) == 0).float().mean() > 0.3  # dropped weights show up as exact zeros
    with pytest.raises(ValueError, match="in_features must be a positive int, got 0"):
        DropConnectLinear(0, 3, 0.5)


# --------------------------------------------------------------------------- DropConnectLinear (Wan et al. 2013)


def test_dropconnect_per_example_masks_differ_between_examples_and_match_the_exact_variance():
    p, n, d = 0.4, 3000, 12
    layer = DropConnectLinear(d, 2, p=p, generator=gen(21))
    x = torch.linspace(-1, 1, d).expand(n, -1).clone()  # n copies of one input
    with torch.no_grad():
        y = layer(x)
    exact_mean = F.linear(x[:1], layer.weight, layer.bias).detach()[0]
    exact_var = (p / (1 - p)) * F.linear(x[:1] ** 2, layer.weight.detach() ** 2)[0]
    assert y.std(0).min() > 0, "identical examples got identical outputs: the mask is shared by the batch"
    assert ((y.mean(0) - exact_mean).abs() <= SIGMA * exact_var.sqrt() / math.sqrt(n)).all()
    assert ((y.var(0) / exact_var - 1).abs() <= SIGMA * math.sqrt(2 / n)).all()


def test_dropconnect_per_batch_mask_is_shared_and_flagged():
    layer = DropConnectLinear(12, 3, p=0.5, generator=gen(22), per_example=False)
    assert layer.shares_mask_across_batch and not DropConnectLinear(2, 2).shares_mask_across_batch
    y = layer(torch.ones(5, 12))
    assert torch.equal(y, y[:1].expand(5, -1)), "per_example=False must use one mask for the batch"


def test_dropconnect_shapes_gradients_and_edge_cases():
    layer = DropConnectLinear(4, 3, p=0.3, generator=gen(23)).double()
    x = torch.randn(2, 5, 4, dtype=torch.float64, requires_grad=True)
    assert layer(x).shape == (2, 5, 3)

    # the gradient flows through the sampled mask: fix the mask by reseeding before each evaluation
    def f(inp):
        layer.generator.manual_seed(0)
        return layer(inp)

    assert torch.autograd.gradcheck(f, (x,))
    layer.p = 1.0
    torch.testing.assert_close(layer(x), layer.bias.expand(2, 5, 3))  # every weight dropped: bias only
    with pytest.raises(TypeError, match="per_example must be a bool, got 'yes'"):
        DropConnectLinear(2, 2, per_example="yes")


def test_dropconnect_moment_matched_inference_matches_sampled_dropconnect():
    """Gaussian moment matching (Wan et al.) ~ the average of relu over real DropConnect masks (fan-in 200)."""
    torch.manual_seed(0)
    layer = DropConnectLinear(200, 4, p=0.5, generator=gen(24))
    x = torch.rand(3, 200)
    with torch.no_grad():
        sampled = torch.relu(layer(x.repeat(4000, 1))).reshape(4000, 3, 4).mean(0)
        matched = layer.moment_matched(x, torch.relu, samples=4000, generator=gen(25))
        mean_inference = torch.relu(F.linear(x, layer.weight, layer.bias))
    spread = torch.relu(layer(x.repeat(4000, 1))).reshape(4000, 3, 4).std(0).detach() / math.sqrt(4000)
    assert ((matched - sampled).abs() <= SIGMA * 1.5 * spread + 0.01).all(), (matched, sampled)
    # with a wide pre-activation distribution, mean inference relu(E[u]) underestimates E[relu(u)]
    assert (matched - mean_inference).abs().max() > 10 * spread.max()
    layer.p = 0.0
    torch.testing.assert_close(layer.moment_matched(x, torch.relu), mean_inference)
    with pytest.raises(ValueError, match="samples must be a positive int, got 0"):
        layer.moment_matched(x, torch.relu, samples=0)


# --------------------------------------------------------------------------- NumPy reference pair


def test_numpy_forward_statistics_and_test_mode():
    x = np.full((500, 400), 2.0)
    out, cache = dropout_forward_numpy(x, 0.4, "train", np.random.default_rng(0))
    assert abs((out == 0).mean() - 0.4) < binomial_bound(x.size, 0.4)
    assert np.allclose(out[out != 0], 2.0 / 0.6)
    test_out, _ = dropout_forward_numpy(x, 0.4, "test", np.random.default_rng(0))
    assert np.array_equal(test_out, x)
    zeros, _ = dropout_forward_numpy(x, 1.0, "train", np.random.default_rng(0))
    assert np.array_equal(zeros, np.zeros_like(x)) and not np.isnan(zeros).any()


def test_numpy_backward_matches_numerical_gradient():
    rng = np.random.default_rng(1)
    x = rng.normal(size=(7, 5))
    upstream = rng.normal(size=(7, 5))
    _, cache = dropout_forward_numpy(x, 0.3, "train", np.random.default_rng(2))
    dx = dropout_backward_numpy(upstream, cache)

    def loss(z):
        out, _ = dropout_forward_numpy(z, 0.3, "train", np.random.default_rng(2))  # same mask
        return float((out * upstream).sum())

    eps = 1e-6
    numeric = np.zeros_like(x)
    for idx in np.ndindex(x.shape):
        step = np.zeros_like(x)
        step[idx] = eps
        numeric[idx] = (loss(x + step) - loss(x - step)) / (2 * eps)
    assert np.max(np.abs(dx - numeric)) / (np.max(np.abs(numeric)) + 1e-12) < 1e-7


def test_numpy_pair_bad_input():
    with pytest.raises(ValueError, match="mode must be 'train' or 'test', got 'eval'"):
        dropout_forward_numpy(np.ones(3), 0.5, "eval")
    with pytest.raises(ValueError, match="got 1.2"):
        dropout_forward_numpy(np.ones(3), 1.2)
    _, cache = dropout_forward_numpy(np.ones(3), 0.5, "train", 0)
    with pytest.raises(ValueError, match=r"dout has shape \(4,\), expected \(3,\)"):
        dropout_backward_numpy(np.ones(4), cache)
    x = np.ones(5)
    dropout_forward_numpy(x, 0.5, "train", 0)
    assert np.array_equal(x, np.ones(5))


# --------------------------------------------------------------------------- DropBlock (notebook 04)


def _reference_dropblock_mask(shape, gamma, block_size, generator):
    """Loop reference: sample centres where the block fits, zero a b x b square around each."""
    n, c, h, w = shape
    centres = torch.empty((n, c, h - block_size + 1, w - block_size + 1)).bernoulli_(
        gamma, generator=generator
    )
    keep = torch.ones(shape)
    for i, j, y, x in centres.nonzero().tolist():
        keep[i, j, y : y + block_size, x : x + block_size] = 0.0  # centre (y + r, x + r)
    return keep


@pytest.mark.parametrize("block_size", [1, 3, 5])
def test_dropblock_mask_matches_loop_reference(block_size):
    layer = DropBlock(0.3, block_size, generator=gen(20))
    fast = layer.mask((3, 4, 11, 9))
    slow = _reference_dropblock_mask((3, 4, 11, 9), layer.gamma(11, 9), block_size, gen(20))
    assert torch.equal(fast, slow)


@pytest.mark.parametrize(("p", "block_size"), [(0.1, 3), (0.3, 3), (0.3, 5)])
def test_dropblock_drop_fraction_close_to_p_and_rescaled(p, block_size):
    x = torch.ones(64, 16, 14, 14)
    y = DropBlock(p, block_size, generator=gen(21))(x)
    dropped = (y == 0).float().mean().item()
    # a little under p: overlapping blocks are counted once (measured: within 0.06 below p at these sizes)
    assert p - 0.07 < dropped <= p + 0.01, dropped
    kept = y[y != 0]
    assert torch.allclose(kept, torch.full_like(kept, 1 / (1 - dropped)), rtol=1e-4)
    assert abs(y.mean().item() - 1.0) < 1e-4  # rescaled by the measured keep fraction


def test_dropblock_drops_contiguous_blocks_not_single_pixels():
    y = DropBlock(0.2, 3, generator=gen(22))(torch.ones(8, 4, 16, 16))
    dropped = (y == 0).float()
    assert dropped.sum() > 0
    # every dropped pixel lies inside a fully dropped 3x3 square (no isolated dropped pixels)
    full_windows = 1 - F.max_pool2d(1 - dropped, 3, stride=1)  # (N, C, 14, 14): 1 where a 3x3 is all dropped
    covered = F.max_pool2d(F.pad(full_windows, (2, 2, 2, 2)), 3, stride=1)  # back to (N, C, 16, 16)
    assert torch.equal(covered * dropped, dropped)


def test_dropblock_block_size_1_is_elementwise_dropout():
    p = 0.3
    y = DropBlock(p, 1, generator=gen(23))(torch.ones(200_000).view(50, 4, 20, 50))
    assert abs((y == 0).float().mean().item() - p) < binomial_bound(200_000, p)


def test_dropblock_eval_p0_p1_gradient_and_generator():
    x = torch.randn(2, 3, 8, 8, requires_grad=True)
    layer = DropBlock(0.4, 3, generator=gen(24))
    y = layer(x)
    y.sum().backward()
    keep_scaled = (y / x).detach()  # the gradient is the scaled keep-mask
    assert torch.allclose(x.grad, keep_scaled, atol=1e-5)
    assert torch.equal(DropBlock(0.4, 3, generator=gen(24))(x), y)  # same generator seed, same mask
    assert not torch.equal(layer(x), y)  # successive calls differ
    assert DropBlock(0.0, 3)(x) is x
    assert torch.equal(DropBlock(1.0, 3)(x), torch.zeros_like(x))
    layer.eval()
    assert layer(x) is x
    assert repr(layer) == "DropBlock(p=0.4, block_size=3)"
    assert DropBlock(0.2, 3)(torch.ones(1, 1, 5, 5, dtype=torch.float64)).dtype == torch.float64


def test_dropblock_bad_arguments_raise_naming_the_value():
    with pytest.raises(ValueError, match=r"must be in \[0, 1\].*got 1\.5"):
        DropBlock(1.5)
    with pytest.raises(TypeError, match="got 'x'"):
        DropBlock("x")
    for bad in (0, 2, -3, 2.0, True):
        with pytest.raises(ValueError, match=f"block_size must be a positive odd int, got {bad!r}"):
            DropBlock(0.1, bad)
    with pytest.raises(ValueError, match=r"block_size=5 is larger than the feature map \(4 x 9\)"):
        DropBlock(0.1, 5)(torch.ones(1, 1, 4, 9))
    with pytest.raises(ValueError, match=r"\(N, C, H, W\).*\(3, 8, 8\)"):
        DropBlock(0.1, 3)(torch.ones(3, 8, 8))
