"""The ex08 (dropout theory by computation) grader against correct and wrong submissions; diagnoses pinned."""

from __future__ import annotations

import itertools

import numpy as np
import pytest
import torch
from grader_helpers import failed_diagnoses as failed

from dropout_course.grading import Grader


@pytest.fixture(scope="module")
def grader():
    return Grader("ex08_dropout_theory", time_limit=5)


# --------------------------------------------------------------------------- task 1: the ensemble


def _masks(n):
    return torch.tensor(list(itertools.product([0.0, 1.0], repeat=n)), dtype=torch.float64)


def ensemble(x, W, b, p, *, weights="prob", scale=True, keep=False, normalise=True):
    x, W, b = (t.to(torch.float64) for t in (x, W, b))
    n = x.shape[0]
    q = 1 - p if keep else p
    m = _masks(n)
    kept = m.sum(1)
    prob = (1 - q) ** kept * q ** (n - kept) if weights == "prob" else torch.full((2**n,), 2.0**-n)
    logp = torch.log_softmax((m * x * (1 / (1 - q) if scale else 1.0)) @ W.T + b, dim=1)
    log_geo = prob.to(torch.float64) @ logp
    geometric = torch.softmax(log_geo, 0) if normalise else log_geo.exp()
    return prob.to(torch.float64) @ logp.exp(), geometric


def ok_vectorised(x, W, b, p):
    return ensemble(x, W, b, p)


def ok_loop_numpy(x, W, b, p):
    """A plain loop in NumPy, masks in another order, float lists returned."""
    x, W, b = x.numpy(), W.numpy(), b.numpy()
    n, k = len(x), len(b)
    arith, log_geo = np.zeros(k), np.zeros(k)
    for bits in itertools.product([1, 0], repeat=n):
        m = np.array(bits, dtype=float)
        z = W @ (m * x / (1 - p)) + b
        logp = z - np.log(np.exp(z - z.max()).sum()) - z.max()
        w = np.prod(np.where(m == 1, 1 - p, p))
        arith += w * np.exp(logp)
        log_geo += w * logp
    geo = np.exp(log_geo - log_geo.max())
    return torch.tensor(arith), torch.tensor(geo / geo.sum())


def ensemble_bits(x, W, b, p, *, masks=None, flipped=False):
    """A loop over the integers 0 .. 2^n - 1, bit j of i = mask entry j (1 = kept)."""
    n = x.shape[0]
    arithmetic, log_geo = 0.0, 0.0
    for i in range(2**n) if masks is None else masks(n):
        m = torch.tensor([(i >> j) & 1 for j in range(n)], dtype=torch.float64)
        prob = (1 - p) ** m.sum() * p ** (n - m.sum())
        log_p = torch.log_softmax(W @ ((1 - m if flipped else m) * x / (1 - p)) + b, 0)
        arithmetic, log_geo = arithmetic + prob * log_p.exp(), log_geo + prob * log_p
    return arithmetic, torch.softmax(log_geo, 0)


def ok_bits(x, W, b, p):
    return ensemble_bits(x, W, b, p)


def ok_geometric_from_logits(x, W, b, p):
    """The geometric mean as the softmax of the weighted mean LOGITS: log_softmax only shifts each row."""
    n = x.shape[0]
    masks = torch.tensor(list(itertools.product([1.0, 0.0], repeat=n)), dtype=torch.float64)
    prob = torch.where(masks > 0, masks.new_tensor(1 - p), masks.new_tensor(p)).prod(dim=1)
    logits = (masks * x / (1 - p)) @ W.T + b
    return prob @ torch.softmax(logits, 1), torch.softmax(prob @ logits, 0)


def float32_weights(x, W, b, p):
    """The mask probabilities in float32: torch.where of two Python floats gives a float32 tensor."""
    n = x.shape[0]
    masks = torch.tensor(list(itertools.product([1.0, 0.0], repeat=n)), dtype=torch.float64)
    prob = torch.where(masks > 0, 1 - p, p).to(torch.float64).prod(dim=1)
    log_p = torch.log_softmax((masks * x / (1 - p)) @ W.T + b, 1)
    return prob @ log_p.exp(), torch.softmax(prob @ log_p, 0)


@pytest.mark.parametrize("fn", [ok_vectorised, ok_loop_numpy, ok_bits, ok_geometric_from_logits])
def test_correct_ensembles_pass(grader, fn):
    for name in ("ensemble_predictions", "ensemble_predictions_hidden"):
        result = grader.check(name, fn)
        assert result.passed, "\n".join(result.messages)


ENSEMBLE_MISTAKES = [
    (lambda x, W, b, p: ensemble(x, W, b, p, weights="uniform"), "arithmetic", "weighted equally"),
    (lambda x, W, b, p: ensemble(x, W, b, p, keep=True), "arithmetic", "KEEP probability"),
    (lambda x, W, b, p: ensemble(x, W, b, p, scale=False), "arithmetic", "not scaled by 1/(1-p)"),
    (
        lambda x, W, b, p: ensemble(x, W, b, p)[::-1],
        "arithmetic",
        "returns the geometric mean, which equals the weight-scaled",
    ),
    (
        lambda x, W, b, p: (torch.softmax(W @ x + b, 0), torch.softmax(W @ x + b, 0)),
        "arithmetic",
        "returns the geometric mean, which equals the weight-scaled network",
    ),
]


def scaled_by_p(x, W, b, p):
    n = x.shape[0]
    masks = _masks(n)
    kept = masks.sum(1)
    log_p = torch.log_softmax((masks * x / p) @ W.T + b, 1)
    prob = (1 - p) ** kept * p ** (n - kept)
    return prob @ log_p.exp(), torch.softmax(prob @ log_p, 0)


ENSEMBLE_MISTAKES += [
    (scaled_by_p, "arithmetic", "the kept inputs are scaled by 1/p"),
    (
        lambda x, W, b, p: ensemble_bits(x, W, b, p, masks=lambda n: range(1, 2**n)),
        "arithmetic",
        "the mask that drops every unit is missing",
    ),
    (
        lambda x, W, b, p: ensemble_bits(x, W, b, p, masks=lambda n: range(2**n - 1)),
        "arithmetic",
        "the mask that keeps every unit is missing",
    ),
    (
        lambda x, W, b, p: ensemble_bits(x, W, b, p, flipped=True),
        "arithmetic",
        "applied as a DROP mask (m = 1 drops the unit) but weighted as a keep mask",
    ),
]


def test_float32_rounding_is_named_where_it_shows(grader):
    # the visible problems are small enough for float32 weights to stay within the tolerance; n = 10 is not
    result = grader.check("ensemble_predictions_hidden", float32_weights)
    assert "the rounding error of float32: work in float64 throughout" in failed(result).get(
        "the normalised geometric mean of all 2^n thinned networks", ""
    ), result.messages


def test_a_missing_mask_is_named_by_the_shape_property(grader):
    result = grader.check("ensemble_predictions", ENSEMBLE_MISTAKES[-3][0])
    assert (
        "= 1 - Pr(the mask that drops every unit): it is missing"
        in failed(result)["returns two probability vectors of shape (K,)"]
    )


@pytest.mark.parametrize(("fn", "which", "diagnosis"), ENSEMBLE_MISTAKES)
def test_ensemble_mistakes_are_named(grader, fn, which, diagnosis):
    result = grader.check("ensemble_predictions", fn)
    prop = f"the {which} mean of all 2^n thinned networks"
    assert prop in failed(result), result.messages
    assert diagnosis in failed(result)[prop]


def test_unnormalised_geometric_mean_fails_one_property_with_its_reason(grader):
    result = grader.check("ensemble_predictions", lambda x, W, b, p: ensemble(x, W, b, p, normalise=False))
    assert set(failed(result)) == {
        "returns two probability vectors of shape (K,)",
        "the normalised geometric mean of all 2^n thinned networks",
    }
    assert "renormalised" in failed(result)["the normalised geometric mean of all 2^n thinned networks"]


def test_wrong_shape_is_reported_once_not_cascaded(grader):
    result = grader.check(
        "ensemble_predictions", lambda x, W, b, p: tuple(t[None] for t in ensemble(x, W, b, p))
    )
    diagnoses = failed(result)
    assert "must have shape (4,)" in diagnoses["returns two probability vectors of shape (K,)"]
    assert diagnoses["the arithmetic mean of all 2^n thinned networks"].startswith("not checked")


def test_unimplemented_and_crashing_code_score_zero_without_raising(grader):
    def todo(*args):
        raise NotImplementedError()

    for fn in (todo, lambda *a: 1 / 0, lambda *a: None):
        result = grader.check("ensemble_predictions", fn)
        assert result.score == 0 and not result.passed


def test_hidden_ensemble_catches_what_the_visible_one_does(grader):
    result = grader.check("ensemble_predictions_hidden", lambda x, W, b, p: ensemble(x, W, b, p, keep=True))
    # The normalised geometric mean is softmax(Wx + b) for ANY drop probability whose scaling matches it
    # (the theorem of the task), so swapping p and 1 - p only shows in the arithmetic mean.
    assert set(failed(result)) == {"the arithmetic mean of all 2^n thinned networks"}
    assert "KEEP probability" in failed(result)["the arithmetic mean of all 2^n thinned networks"]


# --------------------------------------------------------------------------- task 2: the penalty


def ok_penalty(X, w, p):
    return float(p / (1 - p) * (w**2 * (X**2).sum(0)).sum())


def ok_penalty_numpy(X, w, p):
    X, w = X.numpy(), w.numpy()
    return float(p / (1 - p) * np.einsum("ij,j->", X**2, w**2))


def ok_penalty_numpy_scalar(X, w, p):  # a NumPy float64 is a float (accepted as in ex06)
    X, w = X.numpy(), w.numpy()
    return np.float64(p / (1 - p) * np.einsum("ij,j->", X**2, w**2))


@pytest.mark.parametrize("fn", [ok_penalty, ok_penalty_numpy, ok_penalty_numpy_scalar])
def test_correct_penalties_pass(grader, fn):
    for name in ("dropout_penalty", "dropout_penalty_hidden"):
        result = grader.check(name, fn)
        assert result.passed, "\n".join(result.messages)


PENALTY_MISTAKES = [
    (lambda X, w, p: float(p * (w**2 * (X**2).sum(0)).sum()), "missing the factor 1/(1-p)"),
    (lambda X, w, p: float(p / (1 - p) ** 2 * (w**2 * (X**2).sum(0)).sum()), "p/(1-p)^2"),
    (lambda X, w, p: float(p / (1 - p) * (w**2).sum()), "plain L2"),
    (lambda X, w, p: float(p / (1 - p) * (w @ X.T @ X @ w)), "whole Gram matrix"),
    (lambda X, w, p: float(p / (1 - p) * (w**2 * (X**2).mean(0)).sum()), "SUM over the N examples"),
    (lambda X, w, p: float((1 - p) / p * (w**2 * (X**2).sum(0)).sum()), "(1-p)/p, p and 1-p swapped"),
    (lambda X, w, p: float(p * (1 - p) * (w**2 * (X**2).sum(0)).sum()), "p(1-p), the variance of the mask"),
    (lambda X, w, p: float(p / (1 - p) * (w**2).sum() * (X**2).sum()), "the product ||w||^2 * ||X||^2"),
]


@pytest.mark.parametrize(("fn", "diagnosis"), PENALTY_MISTAKES)
def test_penalty_mistakes_are_named(grader, fn, diagnosis):
    result = grader.check("dropout_penalty", fn)
    prop = "the closed form p/(1-p) * sum_j w_j^2 sum_i X_ij^2"
    assert diagnosis in failed(result)[prop], result.messages
    assert not grader.check("dropout_penalty_hidden", fn).passed


def test_penalty_as_tensor_loses_only_the_type_point(grader):
    result = grader.check("dropout_penalty", lambda X, w, p: torch.tensor(ok_penalty(X, w, p)))
    assert set(failed(result)) == {"returns a Python float"}
    assert "Python float" in failed(result)["returns a Python float"]


# --------------------------------------------------------------------------- task 3: Monte Carlo


def mc(X, y, w, p, n_samples, generator, *, use_global=False, subtract=True, n_override=None):
    S = n_override or n_samples
    gen = None if use_global else generator
    keep = (torch.rand((S, *X.shape), generator=gen, dtype=torch.float64) >= p).to(torch.float64)
    losses = ((y - (keep * X / (1 - p)) @ w) ** 2).sum(1)
    return float(losses.mean() - (((y - X @ w) ** 2).sum() if subtract else 0.0))


def ok_mc_loop(X, y, w, p, n_samples, generator):
    total = 0.0
    for _ in range(n_samples):
        keep = torch.bernoulli(torch.full(X.shape, 1 - p, dtype=torch.float64), generator=generator)
        total += float(((y - (keep * X / (1 - p)) @ w) ** 2).sum())
    return total / n_samples - float(((y - X @ w) ** 2).sum())


def ok_mc_float32_masks(X, y, w, p, n_samples, generator):  # masks drawn in float32, losses in float64
    keep = torch.rand((n_samples, *X.shape), generator=generator) > p
    residual = y - (keep.to(X.dtype) * X) @ w / (1 - p)
    return (residual.pow(2).sum(-1).mean() - (y - X @ w).pow(2).sum()).item()


@pytest.mark.parametrize("fn", [mc, ok_mc_loop, ok_mc_float32_masks])
def test_correct_monte_carlo_passes(grader, fn):
    result = grader.check("monte_carlo_penalty", fn)
    assert result.passed, "\n".join(result.messages)


@pytest.mark.parametrize(
    ("fn", "prop", "diagnosis"),
    [
        (
            lambda *a: mc(*a, use_global=True),
            "draws its masks from `generator` (reproducible)",
            "not from the global RNG",
        ),
        (
            lambda *a: mc(*a, subtract=False),
            "unbiased: the estimates average to the closed form",
            "returns the expected dropout LOSS",
        ),
        (
            lambda *a: mc(*a, n_override=20),
            "averages n_samples fresh masks (spread ~ 1/sqrt(n_samples))",
            "1/sqrt(S) predicts 4x",
        ),
    ],
)
def test_monte_carlo_mistakes_are_named(grader, fn, prop, diagnosis):
    result = grader.check("monte_carlo_penalty", fn)
    assert diagnosis in failed(result).get(prop, ""), result.messages


def mc_keep_with_probability_p(X, y, w, p, n_samples, generator):  # identical to the task at p = 0.5
    keep = (torch.rand((n_samples, *X.shape), generator=generator, dtype=torch.float64) < p).double()
    return float(((y - (keep * X / (1 - p)) @ w) ** 2).sum(1).mean() - ((y - X @ w) ** 2).sum())


def mc_mean_squared_error(X, y, w, p, n_samples, generator):
    keep = (torch.rand((n_samples, *X.shape), generator=generator, dtype=torch.float64) >= p).double()
    return float(((y - (keep * X / (1 - p)) @ w) ** 2).mean(1).mean() - ((y - X @ w) ** 2).mean())


MC_MISTAKES = {
    mc_keep_with_probability_p: "biased at p = 0.2: a unit is KEPT with probability p",
    mc_mean_squared_error: "the squared errors are averaged over the N rows",
}


@pytest.mark.parametrize("fn", list(MC_MISTAKES), ids=[f.__name__ for f in MC_MISTAKES])
def test_biased_monte_carlo_estimates_are_named(grader, fn):
    result = grader.check("monte_carlo_penalty", fn)
    assert set(failed(result)) == {"unbiased: the estimates average to the closed form"}, result.messages
    assert MC_MISTAKES[fn] in failed(result)["unbiased: the estimates average to the closed form"]


def test_mc_with_original_dropout_scaling_is_biased(grader):
    def no_scale(X, y, w, p, n_samples, generator):
        keep = (torch.rand((n_samples, *X.shape), generator=generator, dtype=torch.float64) >= p).double()
        return float(((y - (keep * X) @ w) ** 2).sum(1).mean() - ((y - X @ w) ** 2).sum())

    result = grader.check("monte_carlo_penalty", no_scale)
    assert "unbiased: the estimates average to the closed form" in failed(result)


def test_the_theory_module_is_not_credited(grader):
    from dropout_course import theory

    def uses_theory(x, W, b, p):
        exact = theory.exact_softmax_ensemble(x, W, b, p)
        return exact

    result = grader.check("ensemble_predictions", uses_theory)
    assert result.score == 0 and "dropout_course.theory.exact_softmax_ensemble" in result.messages[0], (
        "\n".join(result.messages)
    )
