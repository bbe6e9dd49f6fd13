"""Tests for dropout_course.predictive (MC-dropout regression's Gaussian predictive) and ensembles."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from torch import nn

from dropout_course.data import toy_regression
from dropout_course.ensembles import ensemble_predict, train_ensemble
from dropout_course.predictive import (
    fit_noise_precision,
    gaussian_nll,
    interval_coverage,
    tau_from_weight_decay,
)


def test_tau_formula_and_its_inputs():
    # tau = (1 - p) l^2 / (2 N lambda), p the DROP probability
    assert tau_from_weight_decay(0.5, 2.0, 10, 0.01) == pytest.approx(0.5 * 4 / (2 * 10 * 0.01))
    # more data or more weight decay: a smaller tau (more noise attributed to the observations)
    assert tau_from_weight_decay(0.1, 1.0, 1000, 1e-3) < tau_from_weight_decay(0.1, 1.0, 100, 1e-3)
    with pytest.raises(ValueError, match="p .*got 1.0"):
        tau_from_weight_decay(1.0, 1.0, 10, 1e-3)
    with pytest.raises(ValueError, match="weight_decay must be a positive number, got 0"):
        tau_from_weight_decay(0.1, 1.0, 10, 0)


@pytest.mark.parametrize("noise_sd, epistemic_sd", [(0.1, 0.0), (0.3, 0.2), (0.05, 0.1)])
def test_fit_noise_precision_recovers_the_noise_level(noise_sd, epistemic_sd):
    """y = mean + epistemic + noise: with the epistemic variance given, 1/tau estimates the noise variance."""
    rng = np.random.default_rng(1)
    n = 20000
    mean = rng.normal(size=n)
    var = np.full(n, epistemic_sd**2)
    y = mean + rng.normal(0, epistemic_sd, n) + rng.normal(0, noise_sd, n)
    tau = fit_noise_precision(mean, var, y)
    # the MLE of a variance from n draws has relative sd sqrt(2/n); 6 of them as tolerance
    assert abs((1 / tau) / noise_sd**2 - 1) < 6 * math.sqrt(2 / n) * (1 + (epistemic_sd / noise_sd) ** 2)


def test_nll_and_coverage_against_direct_formulas():
    rng = np.random.default_rng(2)
    mean, var, y = rng.normal(size=50), rng.uniform(0.5, 2, 50), rng.normal(size=50)
    expected = np.mean(0.5 * np.log(2 * np.pi * var) + 0.5 * (y - mean) ** 2 / var)
    assert gaussian_nll(mean, var, y) == pytest.approx(expected)
    draws = rng.normal(size=100_000)
    cov = interval_coverage(np.zeros_like(draws), np.ones_like(draws), draws, level=0.9)
    assert abs(cov - 0.9) < 6 * math.sqrt(0.09 / len(draws))
    with pytest.raises(ValueError, match="same non-zero length"):
        interval_coverage([0.0], [1.0, 1.0], [0.0])
    with pytest.raises(ValueError, match="var must be >= 0"):
        gaussian_nll([0.0], [-1.0], [0.0])
    with pytest.raises(ValueError, match="level must be in"):
        interval_coverage([0.0], [1.0], [0.0], level=1.5)


def test_train_ensemble_members_differ_and_predict_stacks():
    data = toy_regression(40, seed=0)

    def make(seed):
        torch.manual_seed(seed)
        return nn.Sequential(nn.Linear(1, 16), nn.ReLU(), nn.Linear(16, 1))

    members, seconds = train_ensemble(make, data, [0, 1, 2], epochs=3, loss="mse", lr=1e-2)
    assert len(members) == 3 and seconds > 0 and not any(m.training for m in members)
    out = ensemble_predict(members, torch.linspace(-3, 3, 7)[:, None])
    assert out.shape == (3, 7, 1)
    assert out.std(0).min() > 0, "members trained from different seeds should disagree"
    with pytest.raises(ValueError, match="distinct seeds"):
        train_ensemble(make, data, [1, 1], epochs=1)
    with pytest.raises(TypeError, match="non-empty sequence of nn.Module"):
        ensemble_predict([], torch.zeros(2, 1))
