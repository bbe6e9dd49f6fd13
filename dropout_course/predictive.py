r"""The Gaussian predictive distribution of MC-dropout regression (Gal & Ghahramani 2016).

Gal & Ghahramani read a network trained with dropout (keep probability :math:`1 - p`) and weight decay
:math:`\lambda` as approximate variational inference in a Bayesian network with a Gaussian prior
:math:`\mathcal{N}(0, l^{-2} I)` on the weights (length-scale :math:`l`) and a Gaussian likelihood with
precision :math:`\tau`. Its predictive distribution has mean and variance (their section 4)

.. math::
    \mathbb{E}[y^*] \approx \frac{1}{T}\sum_t f_{\omega_t}(x^*), \qquad
    \mathrm{Var}[y^*] \approx \tau^{-1} + \frac{1}{T}\sum_t f_{\omega_t}(x^*)^2 - \mathbb{E}[y^*]^2,
    \qquad \tau = \frac{(1 - p)\, l^2}{2 N \lambda}.

The MC sample variance is the *epistemic* part (disagreement of the sub-networks); :math:`\tau^{-1}` is the
*aleatoric* part (observation noise), the same everywhere for this homoscedastic model.

* :func:`tau_from_weight_decay`   :math:`\tau` from ``p``, ``l``, ``N`` and the optimiser's weight decay.
* :func:`fit_noise_precision`     :math:`\tau` that maximises the Gaussian log-likelihood of held-out data.
* :func:`gaussian_nll`, :func:`interval_coverage`   scores of a Gaussian predictive distribution.
"""

from __future__ import annotations

import math

import numpy as np
import torch
from torch import Tensor

__all__ = ["tau_from_weight_decay", "fit_noise_precision", "gaussian_nll", "interval_coverage"]


def _as_array(values, name: str) -> np.ndarray:
    if isinstance(values, Tensor):
        values = values.detach().cpu().double().numpy()
    try:
        out = np.asarray(values, dtype=float).ravel()
    except (TypeError, ValueError):
        raise TypeError(
            f"{name} must be numbers (tensor, array or list), got {type(values).__name__}"
        ) from None
    if not np.isfinite(out).all():
        raise ValueError(f"{name} must be finite, found NaN or inf")
    return out


def _triple(mean, var, y) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    mean, var, y = _as_array(mean, "mean"), _as_array(var, "var"), _as_array(y, "y")
    if not len(mean) == len(var) == len(y) or len(y) == 0:
        raise ValueError(
            f"mean, var and y must have the same non-zero length, got {len(mean)}, {len(var)}, {len(y)}"
        )
    if (var < 0).any():
        raise ValueError(f"var must be >= 0, got a minimum of {var.min():.3g}")
    return mean, var, y


def tau_from_weight_decay(p: float, length_scale: float, n_train: int, weight_decay: float) -> float:
    r"""Gal & Ghahramani's model precision :math:`\tau = (1 - p)\, l^2 / (2 N \lambda)`; ``p`` = drop probability.

    ``weight_decay`` is :math:`\lambda` of their objective
    :math:`\frac{1}{N}\sum_i \tfrac12 \lVert y_i - \hat y_i\rVert^2 + \lambda \sum \lVert W\rVert^2`.
    For a PyTorch optimiser's ``weight_decay=wd`` (the gradient of :math:`\tfrac{wd}{2}\lVert W\rVert^2`)
    on the mean squared error (no :math:`\tfrac12`), :math:`\lambda = wd / 4`.

    Examples:
        >>> tau_from_weight_decay(p=0.1, length_scale=1.0, n_train=100, weight_decay=1e-3)
        4.5
    """
    if not 0.0 <= p < 1.0:
        raise ValueError(f"p (the drop probability) must be in [0, 1), got {p!r}")
    for name, value in (("length_scale", length_scale), ("n_train", n_train), ("weight_decay", weight_decay)):
        if isinstance(value, bool) or not isinstance(value, (int, float)) or not value > 0:
            raise ValueError(f"{name} must be a positive number, got {value!r}")
    return (1.0 - p) * length_scale**2 / (2.0 * n_train * weight_decay)


def gaussian_nll(mean, var, y) -> float:
    r"""Mean negative log-likelihood of ``y`` under :math:`\mathcal{N}(\text{mean}, \text{var})`, in nats.

    >>> round(gaussian_nll([0.0], [1.0], [0.0]), 4)  # log(2 pi) / 2
    0.9189
    """
    mean, var, y = _triple(mean, var, y)
    if (var <= 0).any():
        raise ValueError("var must be > 0 for a log-likelihood (add the noise variance 1/tau)")
    return float(np.mean(0.5 * np.log(2 * math.pi * var) + 0.5 * (y - mean) ** 2 / var))


def fit_noise_precision(mean, var, y, grid: int = 400) -> float:
    r"""The :math:`\tau` maximising :math:`\sum_i \log \mathcal{N}(y_i;\ \mu_i,\ \sigma_i^2 + \tau^{-1})` on held-out data.

    ``mean`` and ``var`` are the MC predictive mean and sample variance at the held-out inputs, ``y`` their
    observed targets. The search is over :math:`\tau^{-1}` on a log grid from :math:`10^{-8}` to the
    variance of ``y - mean`` (beyond it the likelihood only falls), then refined around the best value.

    Examples:
        >>> rng = np.random.default_rng(0)
        >>> y = rng.normal(0.0, 0.1, size=20000)
        >>> tau = fit_noise_precision(np.zeros_like(y), np.zeros_like(y), y)  # true tau = 1 / 0.1**2 = 100
        >>> bool(abs(tau - 1 / np.mean(y**2)) < 0.01)  # with var = 0 the optimum is 1 / mean squared residual
        True
    """
    mean, var, y = _triple(mean, var, y)
    resid2 = (y - mean) ** 2
    top = max(float(resid2.mean()) * 2, 1e-8)

    def loglik(noise: np.ndarray) -> np.ndarray:
        total = var[None, :] + noise[:, None]
        return -(np.log(total) + resid2[None, :] / total).sum(1)

    noise = np.geomspace(1e-8, top, grid)
    best = int(np.argmax(loglik(noise)))
    fine = np.geomspace(noise[max(best - 1, 0)], noise[min(best + 1, grid - 1)], grid)
    return float(1.0 / fine[int(np.argmax(loglik(fine)))])


def interval_coverage(mean, var, y, level: float = 0.95) -> float:
    """Fraction of ``y`` inside the central ``level`` interval of :math:`\\mathcal{N}(\\text{mean}, \\text{var})`.

    A calibrated predictive distribution covers about ``level`` of fresh observations.

    >>> interval_coverage([0.0, 0.0], [1.0, 1.0], [0.5, 3.0])
    0.5
    """
    if not 0.0 < level < 1.0:
        raise ValueError(f"level must be in (0, 1), got {level!r}")
    mean, var, y = _triple(mean, var, y)
    z = float(torch.distributions.Normal(0.0, 1.0).icdf(torch.tensor(0.5 + level / 2)))
    return float(np.mean(np.abs(y - mean) <= z * np.sqrt(var)))
