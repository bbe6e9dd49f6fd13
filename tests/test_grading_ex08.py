"""The ex08 (dropout theory by computation) grader against correct and wrong submissions; diagnoses pinned."""

from __future__ import annotations

import itertools

import numpy as np
import pytest
import torch
from conftest import failed_diagnoses as failed

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


@pytest.mark.parametrize("fn", [ok_vectorised, ok_loop_numpy])
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


@pytest.mark.parametrize("fn", [ok_penalty, ok_penalty_numpy])
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


@pytest.mark.parametrize("fn", [mc, ok_mc_loop])
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
