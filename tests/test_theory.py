"""theory.py against references: brute-force loops over masks, Monte Carlo with explicit tolerances."""

import itertools
import math
import re

import numpy as np
import pytest
import torch

from dropout_course.theory import (
    MAX_ENUMERATED_UNITS,
    all_masks,
    arithmetic_mean,
    dropout_penalty,
    dropout_ridge_solution,
    exact_softmax_ensemble,
    expected_dropout_loss,
    logistic_dropout_penalty,
    logistic_dropout_penalty_quadratic,
    mask_probabilities,
    monte_carlo_dropout_loss,
    normalized_geometric_mean,
    ridge_solution,
    subnetwork_log_probs,
)

SIGMA = 5.0  # Monte-Carlo tolerance, in standard errors


def gen(seed=0):
    return torch.Generator().manual_seed(seed)


def softmax_layer(n=6, classes=4, rows=5, seed=0):
    g = gen(seed)
    x = torch.randn(rows, n, generator=g, dtype=torch.float64)
    weight = torch.randn(classes, n, generator=g, dtype=torch.float64)
    bias = torch.randn(classes, generator=g, dtype=torch.float64)
    return x, weight, bias


def regression(n=60, d=4, seed=0):
    rng = np.random.default_rng(seed)
    X = rng.normal(size=(n, d)) * np.array([1.0, 3.0, 0.2, 10.0])[:d]  # columns on very different scales
    y = X @ rng.normal(size=d) + rng.normal(size=n)
    w = rng.normal(size=d)
    return X, y, w


# --------------------------------------------------------------------------- masks


def test_all_masks_are_every_binary_vector_once():
    masks = all_masks(5)
    assert masks.shape == (32, 5) and masks.dtype == torch.float64
    as_tuples = {tuple(int(v) for v in row) for row in masks}
    assert as_tuples == set(itertools.product((0, 1), repeat=5))
    assert masks[6].tolist() == [0.0, 1.0, 1.0, 0.0, 0.0]  # bit j of k is unit j


@pytest.mark.parametrize("p", [0.0, 0.3, 0.5, 1.0])
def test_mask_probabilities_against_bernoulli_products(p):
    masks = all_masks(4)
    probs = mask_probabilities(masks, p)
    for mask, prob in zip(masks, probs, strict=True):
        expected = math.prod((1 - p) if m == 1 else p for m in mask.tolist())
        assert prob.item() == pytest.approx(expected, abs=1e-15)
    assert probs.sum().item() == pytest.approx(1.0, abs=1e-12)


# --------------------------------------------------------------------------- exact ensemble


def test_subnetwork_log_probs_match_a_loop_over_masks():
    x, weight, bias = softmax_layer(n=4)
    p = 0.3
    log_probs = subnetwork_log_probs(x, weight, bias, p)
    assert log_probs.shape == (2**4, 5, 4)
    reference = torch.stack(
        [torch.log_softmax((mask * x / (1 - p)) @ weight.T + bias, dim=1) for mask in all_masks(4)]
    )
    assert (log_probs - reference).abs().max().item() < 1e-12


@pytest.mark.parametrize("p", [0.2, 0.5, 0.8])
def test_geometric_mean_equals_weight_scaled_network_and_arithmetic_mean_differs(p):
    x, weight, bias = softmax_layer(n=8, seed=1)
    ens = exact_softmax_ensemble(x, weight, bias, p)
    assert ens.n_subnetworks == 256
    assert (ens.geometric - ens.weight_scaled).abs().max().item() < 1e-12
    assert (ens.arithmetic - ens.weight_scaled).abs().max().item() > 1e-3
    torch.testing.assert_close(ens.arithmetic.sum(dim=1), torch.ones(5, dtype=torch.float64))


def test_means_against_brute_force_products():
    x, weight, bias = softmax_layer(n=3, classes=2, rows=1, seed=2)
    p = 0.4
    masks = all_masks(3)
    probs = [torch.softmax((m * x[0] / (1 - p)) @ weight.T + bias, 0) for m in masks]
    w = mask_probabilities(masks, p)
    geo = math.prod(probs[k] ** w[k] for k in range(8))
    geo = geo / geo.sum()
    arith = sum(w[k] * probs[k] for k in range(8))
    log_probs = subnetwork_log_probs(x, weight, bias, p)
    torch.testing.assert_close(normalized_geometric_mean(log_probs, w)[0], geo, rtol=0, atol=1e-12)
    torch.testing.assert_close(arithmetic_mean(log_probs, w)[0], arith, rtol=0, atol=1e-12)


def test_ensemble_accepts_numpy_float32_and_no_bias():
    x, weight, _ = softmax_layer(n=4)
    ens = exact_softmax_ensemble(x.float().numpy(), weight.float().numpy(), None, 0.5)
    assert ens.geometric.dtype == torch.float64
    assert (ens.geometric - ens.weight_scaled).abs().max().item() < 1e-12


# --------------------------------------------------------------------------- dropout as L2


def test_penalty_matches_its_two_written_forms():
    X, _, w = regression()
    p = 0.25
    quadratic = p / (1 - p) * w @ np.diag(np.diag(X.T @ X)) @ w
    assert dropout_penalty(X, w, p).item() == pytest.approx(quadratic, rel=1e-12)


def test_expected_loss_exact_by_enumeration_on_a_tiny_problem():
    # N = 2 rows, d = 3 columns: all 2**6 masks of the (2, 3) design, weighted by their probability
    X, y, w = regression(n=2, d=3, seed=3)
    p = 0.35
    masks = all_masks(6).reshape(-1, 2, 3).numpy()
    probs = mask_probabilities(all_masks(6), p).numpy()
    exact = sum(pr * np.sum((y - (m * X / (1 - p)) @ w) ** 2) for m, pr in zip(masks, probs, strict=True))
    assert expected_dropout_loss(X, y, w, p).item() == pytest.approx(exact, rel=1e-12)


@pytest.mark.parametrize("p", [0.1, 0.5])
def test_expected_loss_against_monte_carlo(p):
    X, y, w = regression(seed=4)
    mean, stderr = monte_carlo_dropout_loss(X, y, w, p, n_samples=4000, generator=gen(5))
    closed = expected_dropout_loss(X, y, w, p).item()
    assert abs(mean - closed) < SIGMA * stderr, f"MC {mean:.4g} +- {stderr:.3g} vs closed form {closed:.4g}"


def test_minimiser_has_zero_gradient_and_reduces_to_least_squares_at_p0():
    X, y, _ = regression(seed=6)
    p = 0.4
    w_star = dropout_ridge_solution(X, y, p).requires_grad_(True)
    expected_dropout_loss(torch.from_numpy(X), torch.from_numpy(y), w_star, p)  # float64 path
    loss = ((torch.from_numpy(y) - torch.from_numpy(X) @ w_star) ** 2).sum() + p / (1 - p) * (
        w_star**2 * torch.from_numpy(X**2).sum(0)
    ).sum()
    (grad,) = torch.autograd.grad(loss, w_star)
    assert grad.abs().max().item() < 1e-8 * max(1.0, float(np.abs(X.T @ y).max()))
    np.testing.assert_allclose(dropout_ridge_solution(X, y, 0.0).numpy(), np.linalg.lstsq(X, y)[0], rtol=1e-9)


def test_dropout_solution_is_scale_equivariant_and_ridge_is_not():
    X, y, _ = regression(seed=7)
    scale = np.array([10.0, 0.1, 3.0, 1.0])
    w = dropout_ridge_solution(X, y, 0.3).numpy()
    w_scaled = dropout_ridge_solution(X * scale, y, 0.3).numpy()
    np.testing.assert_allclose(w_scaled * scale, w, rtol=1e-9)
    r = ridge_solution(X, y, 5.0).numpy()
    r_scaled = ridge_solution(X * scale, y, 5.0).numpy()
    assert np.abs(r_scaled * scale - r).max() > 1e-2


def test_ridge_solution_against_normal_equations():
    X, y, _ = regression(seed=8)
    expected = np.linalg.solve(X.T @ X + 2.5 * np.eye(4), X.T @ y)
    np.testing.assert_allclose(ridge_solution(X, y, 2.5).numpy(), expected, rtol=1e-10)


# --------------------------------------------------------------------------- bad input


@pytest.mark.parametrize(
    ("call", "error", "message"),
    [
        (lambda: all_masks(0), ValueError, f"n must be between 1 and {MAX_ENUMERATED_UNITS}"),
        (lambda: all_masks(MAX_ENUMERATED_UNITS + 1), ValueError, "to enumerate 2**n masks, got 21"),
        (lambda: all_masks(3.0), TypeError, "n must be an int, got 3.0 (float)"),
        (lambda: all_masks(True), TypeError, "n must be an int, got True (bool)"),
        (lambda: mask_probabilities(torch.full((2, 2), 0.5), 0.5), ValueError, "only 0 (dropped) and 1"),
        (lambda: mask_probabilities(all_masks(2), 1.5), ValueError, "must be in [0, 1]"),
        (lambda: mask_probabilities([[1, 0]], 0.5), TypeError, "masks must be a torch.Tensor or numpy"),
        (
            lambda: subnetwork_log_probs(torch.ones(2, 3), torch.ones(4, 5), None, 0.5),
            ValueError,
            "weight must have shape (C, 3) for x with 3 features, got (4, 5)",
        ),
        (
            lambda: subnetwork_log_probs(torch.ones(2, 3), torch.ones(4, 3), torch.ones(3), 0.5),
            ValueError,
            "bias must have shape (4,), got (3,)",
        ),
        (
            lambda: subnetwork_log_probs(torch.ones(3), torch.ones(4, 3), None, 0.5),
            ValueError,
            "x must be 2-D, got shape (3,)",
        ),
        (
            lambda: exact_softmax_ensemble(torch.ones(2, 3), torch.ones(4, 3), None, 1.0),
            ValueError,
            "p must be < 1 here",
        ),
        (
            lambda: exact_softmax_ensemble(torch.ones(2, 3), torch.ones(4, 3), None, "0.5"),
            TypeError,
            "must be a real number in [0, 1], got '0.5'",
        ),
        (
            lambda: exact_softmax_ensemble(
                torch.ones(2, 3, dtype=torch.complex64), torch.ones(4, 3), None, 0.5
            ),
            TypeError,
            "x must hold real numbers",
        ),
        (
            lambda: normalized_geometric_mean(torch.zeros(4, 1, 2), torch.full((4,), 0.3)),
            ValueError,
            "weights must be non-negative and sum to 1, got sum 1.2",
        ),
        (
            lambda: arithmetic_mean(torch.zeros(4, 1, 2), torch.full((3,), 1 / 3)),
            ValueError,
            "weights must have one entry per subnetwork (4), got 3",
        ),
        (lambda: dropout_penalty(np.ones((5, 3)), np.ones(2), 0.5), ValueError, "w must have 3 entries"),
        (
            lambda: expected_dropout_loss(np.ones((5, 3)), np.ones(4), np.ones(3), 0.5),
            ValueError,
            "y must have 5 entries (one per row of X), got 4",
        ),
        (lambda: expected_dropout_loss("X", np.ones(4), np.ones(3), 0.5), TypeError, "got str"),
        (
            lambda: monte_carlo_dropout_loss(np.ones((5, 3)), np.ones(5), np.ones(3), 0.5, n_samples=1),
            ValueError,
            "n_samples must be an int >= 2, got 1",
        ),
        (lambda: dropout_ridge_solution(np.ones((5, 3)), np.ones(5), -0.1), ValueError, "got -0.1"),
        (lambda: ridge_solution(np.ones((5, 3)), np.ones(5), -1.0), ValueError, "lam must be >= 0, got -1.0"),
        (lambda: ridge_solution(np.ones((5, 3)), np.ones(5), "1"), TypeError, "lam must be a real number"),
    ],
)
def test_bad_input_raises_with_a_clear_message(call, error, message):
    with pytest.raises(error, match=re.escape(message)):
        call()


# --------------------------------------------------------------------------- logistic regression (Wager et al.)


def test_logistic_penalty_quadratic_matches_monte_carlo_for_small_p():
    generator = torch.Generator().manual_seed(0)
    # many features with small weights (Wager et al.'s setting): dropping one input moves the logit little
    X = torch.randn(200, 50, dtype=torch.float64, generator=generator)
    w = 0.2 * torch.randn(50, dtype=torch.float64, generator=generator)
    p = 0.2
    mc, se = logistic_dropout_penalty(X, w, p, n_samples=4000, generator=generator)
    quad = logistic_dropout_penalty_quadratic(X, w, p)
    assert mc.shape == quad.shape == se.shape == (200,)
    # second order is accurate when each input moves the logit little: total within 3 standard errors + 10 %
    assert abs(mc.sum() - quad.sum()) < 3 * se.pow(2).sum().sqrt() + 0.1 * quad.sum()


def test_logistic_penalty_is_largest_for_uncertain_predictions():
    X = torch.tensor([[0.1, 0.0], [6.0, 0.0]], dtype=torch.float64)  # logit 0.1 (uncertain) and 6 (confident)
    w = torch.tensor([1.0, 0.0], dtype=torch.float64)
    quad = logistic_dropout_penalty_quadratic(X, w, 0.5)
    variance = X[:, 0] ** 2  # p/(1-p) = 1
    per_unit = quad / variance
    assert per_unit[0] == pytest.approx(0.5 * 0.25, rel=0.01)  # p_hat ~ 1/2: the largest weight, 1/4
    assert per_unit[1] < 0.05 * per_unit[0]


def test_logistic_penalty_bad_input():
    X, w = torch.zeros(3, 2), torch.zeros(3)
    with pytest.raises(ValueError, match="w must have 2 entries"):
        logistic_dropout_penalty_quadratic(X, w, 0.5)
    with pytest.raises(ValueError, match="n_samples"):
        logistic_dropout_penalty(torch.zeros(3, 2), torch.zeros(2), 0.5, n_samples=1)
    with pytest.raises(ValueError):
        logistic_dropout_penalty(torch.zeros(3, 2), torch.zeros(2), 1.0)
