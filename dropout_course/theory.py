r"""Why dropout (drop probability ``p``) works, exactly: subnetwork enumeration and dropout as an L2 penalty.

Everywhere here ``p`` is the probability of DROPPING a unit, and dropout is *inverted*: a kept unit is
scaled by :math:`1/(1-p)` during training, so the test-time ("weight-scaled") network is the plain network.

**The ensemble view** (Baldi & Sadowski 2013). A single softmax layer with dropout on its ``n`` inputs
samples one of :math:`2^n` thinned networks per example:

.. math::
    P_m(y \mid x) = \operatorname{softmax}\!\Big(W \frac{m \odot x}{1 - p} + b\Big), \qquad
    m \in \{0, 1\}^n, \quad \Pr(m) = (1-p)^{|m|} p^{\,n - |m|}.

Their normalised geometric mean (NGM) :math:`G(y \mid x) \propto \prod_m P_m(y \mid x)^{\Pr(m)}` equals
the weight-scaled network :math:`\operatorname{softmax}(W x + b)` exactly, because the log of a softmax is
affine in the logits up to a class-independent constant, and :math:`\mathbb{E}[m/(1-p)] = 1`.
The arithmetic mean :math:`\sum_m \Pr(m) P_m` is different. :func:`exact_softmax_ensemble` enumerates all
:math:`2^n` thinned networks at once (vectorised) and returns the three predictions.

**Dropout as adaptive regularization** (Srivastava et al. 2014, section 9.1; Wager et al. 2013). For linear
regression with inverted dropout on the inputs, :math:`R = M \odot X / (1-p)` with
:math:`M_{ij} \sim \mathrm{Bernoulli}(1-p)`,

.. math::
    \mathbb{E}_M \lVert y - R w \rVert^2 = \lVert y - X w \rVert^2
    + \frac{p}{1-p}\, w^\top \operatorname{diag}(X^\top X)\, w ,

a ridge penalty whose strength per weight is the squared norm of its feature column (so it does not
depend on the units of the features). Its minimiser is
:math:`w^* = \big(X^\top X + \tfrac{p}{1-p} \operatorname{diag}(X^\top X)\big)^{-1} X^\top y`.

All functions take ``torch.Tensor`` or ``numpy.ndarray`` inputs and compute in float64.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import torch
from torch import Tensor

from .layers import check_probability

__all__ = [
    "MAX_ENUMERATED_UNITS",
    "all_masks",
    "mask_probabilities",
    "subnetwork_log_probs",
    "normalized_geometric_mean",
    "arithmetic_mean",
    "ExactEnsemble",
    "exact_softmax_ensemble",
    "dropout_penalty",
    "expected_dropout_loss",
    "monte_carlo_dropout_loss",
    "dropout_ridge_solution",
    "ridge_solution",
    "logistic_dropout_penalty",
    "logistic_dropout_penalty_quadratic",
]

MAX_ENUMERATED_UNITS = 20  # 2**20 subnetworks; beyond that enumeration is not "exact and cheap" any more


# --------------------------------------------------------------------------- input checks


def _as_float64(value, name: str, ndim: int | tuple[int, ...]) -> Tensor:
    """``value`` (Tensor or ndarray) as a float64 tensor with ``ndim`` dimensions, else TypeError/ValueError."""
    if isinstance(value, np.ndarray):
        if not np.issubdtype(value.dtype, np.number) or np.iscomplexobj(value):
            raise TypeError(f"{name} must hold real numbers, got numpy dtype {value.dtype}")
        value = torch.from_numpy(value)
    elif not isinstance(value, Tensor):
        raise TypeError(f"{name} must be a torch.Tensor or numpy.ndarray, got {type(value).__name__}")
    if value.is_complex() or value.dtype == torch.bool:
        raise TypeError(f"{name} must hold real numbers, got dtype {value.dtype}")
    dims = (ndim,) if isinstance(ndim, int) else ndim
    if value.dim() not in dims:
        wanted = " or ".join(f"{d}-D" for d in dims)
        raise ValueError(f"{name} must be {wanted}, got shape {tuple(value.shape)}")
    return value.detach().to(torch.float64)


def _check_p_below_one(p, name: str = "p") -> float:
    p = check_probability(p, name=name)
    if p == 1.0:
        raise ValueError(
            f"{name} must be < 1 here (p = 1 drops everything and 1/(1-p) is undefined), got {p!r}"
        )
    return p


def _check_units(n) -> int:
    if isinstance(n, bool) or not isinstance(n, (int, np.integer)):
        raise TypeError(f"n must be an int, got {n!r} ({type(n).__name__})")
    if not 1 <= n <= MAX_ENUMERATED_UNITS:
        raise ValueError(f"n must be between 1 and {MAX_ENUMERATED_UNITS} to enumerate 2**n masks, got {n}")
    return int(n)


# --------------------------------------------------------------------------- the ensemble view


def all_masks(n: int, dtype: torch.dtype = torch.float64) -> Tensor:
    """Every binary keep-mask over ``n`` units (1 = kept): row ``k`` holds the bits of ``k``.

    Args:
        n: number of units, 1 to :data:`MAX_ENUMERATED_UNITS`.
        dtype: dtype of the result.

    Shape:
        Output: :math:`(2^n, n)`; ``masks[k, j] = (k >> j) & 1``.

    Examples:
        >>> all_masks(2).tolist()
        [[0.0, 0.0], [1.0, 0.0], [0.0, 1.0], [1.0, 1.0]]
    """
    n = _check_units(n)
    k = torch.arange(2**n).unsqueeze(1)  # (2^n, 1)
    bits = torch.arange(n).unsqueeze(0)  # (1, n)
    return ((k >> bits) & 1).to(dtype)


def mask_probabilities(masks, p: float) -> Tensor:
    r"""Probability of each keep-mask under dropout with drop probability ``p``.

    .. math::
        \Pr(m) = \prod_j (1-p)^{m_j} \, p^{1 - m_j}

    Args:
        masks: binary keep-masks (1 = kept), e.g. from :func:`all_masks`.
        p: probability of dropping each unit, in [0, 1].

    Shape:
        masks :math:`(M, n)`; output :math:`(M,)`. Over all :math:`2^n` masks the output sums to 1.
    """
    p = check_probability(p)
    masks = _as_float64(masks, "masks", 2)
    if not bool(((masks == 0) | (masks == 1)).all()):
        raise ValueError("masks must contain only 0 (dropped) and 1 (kept)")
    kept = masks.sum(dim=1)
    dropped = masks.shape[1] - kept
    return (1 - p) ** kept * p**dropped


def subnetwork_log_probs(x, weight, bias, p: float) -> Tensor:
    r"""Log-probabilities of every thinned softmax network (inputs dropped with probability ``p``), all at once.

    .. math::
        \log P_m(\cdot \mid x) = \operatorname{log\_softmax}\!\Big(W \frac{m \odot x}{1-p} + b\Big)

    Args:
        x: inputs, one row per example.
        weight: the layer's weight in ``torch.nn.Linear`` layout (classes x inputs).
        bias: the layer's bias, or ``None``.
        p: probability of dropping each input, in [0, 1).

    Shape:
        x :math:`(N, n)`, weight :math:`(C, n)`, bias :math:`(C,)`; output :math:`(2^n, N, C)`, with
        masks in the order of :func:`all_masks`. Memory grows as :math:`2^n N C` (float64).
    """
    p = _check_p_below_one(p)
    x = _as_float64(x, "x", 2)
    weight = _as_float64(weight, "weight", 2)
    n = _check_units(x.shape[1])
    if weight.shape[1] != n:
        raise ValueError(
            f"weight must have shape (C, {n}) for x with {n} features, got {tuple(weight.shape)}"
        )
    if bias is None:
        bias = torch.zeros(weight.shape[0], dtype=torch.float64)
    bias = _as_float64(bias, "bias", 1)
    if bias.shape[0] != weight.shape[0]:
        raise ValueError(f"bias must have shape ({weight.shape[0]},), got {tuple(bias.shape)}")
    masks = all_masks(n) / (1 - p)  # (M, n), inverted-dropout scaling
    # logits[m, i, c] = sum_j masks[m, j] * (x[i, j] * W[c, j]) + b[c]: one matmul, no (M, N, n) temporary
    contributions = (x[:, None, :] * weight[None, :, :]).reshape(-1, n)  # (N * C, n)
    logits = (masks @ contributions.T).reshape(
        masks.shape[0], x.shape[0], weight.shape[0]
    ) + bias  # (M, N, C)
    return torch.log_softmax(logits, dim=-1)


def _check_ensemble_inputs(log_probs, weights) -> tuple[Tensor, Tensor]:
    log_probs = _as_float64(log_probs, "log_probs", 3)
    weights = _as_float64(weights, "weights", 1)
    if weights.shape[0] != log_probs.shape[0]:
        raise ValueError(
            f"weights must have one entry per subnetwork ({log_probs.shape[0]}), got {weights.shape[0]}"
        )
    if bool((weights < 0).any()) or not math.isclose(weights.sum().item(), 1.0, abs_tol=1e-9):
        raise ValueError(f"weights must be non-negative and sum to 1, got sum {weights.sum().item():.6g}")
    return log_probs, weights


def normalized_geometric_mean(log_probs, weights) -> Tensor:
    r"""Weighted normalised geometric mean (NGM) of the subnetworks' predictive distributions.

    .. math::
        G(c \mid x) = \frac{\prod_m P_m(c \mid x)^{w_m}}{\sum_{c'} \prod_m P_m(c' \mid x)^{w_m}}
        = \operatorname{softmax}_c\Big(\sum_m w_m \log P_m(c \mid x)\Big)

    Args:
        log_probs: log-probabilities of each subnetwork, e.g. from :func:`subnetwork_log_probs`.
        weights: the subnetworks' weights (non-negative, summing to 1), e.g. :func:`mask_probabilities`.

    Shape:
        log_probs :math:`(M, N, C)`, weights :math:`(M,)`; output :math:`(N, C)`, rows summing to 1.
    """
    log_probs, weights = _check_ensemble_inputs(log_probs, weights)
    return torch.softmax(torch.einsum("m,mic->ic", weights, log_probs), dim=-1)


def arithmetic_mean(log_probs, weights) -> Tensor:
    r"""Weighted arithmetic mean of the subnetworks' predictive distributions, :math:`\sum_m w_m P_m`.

    Shape:
        log_probs :math:`(M, N, C)`, weights :math:`(M,)`; output :math:`(N, C)`, rows summing to 1.
    """
    log_probs, weights = _check_ensemble_inputs(log_probs, weights)
    return torch.einsum("m,mic->ic", weights, log_probs.exp())


@dataclass
class ExactEnsemble:
    """The exact dropout ensemble of a softmax layer: three predictions, each of shape (N, C)."""

    n_subnetworks: int
    geometric: Tensor  # normalised geometric mean of all thinned networks
    arithmetic: Tensor  # arithmetic mean of all thinned networks
    weight_scaled: Tensor  # the test-time network softmax(W x + b)


def exact_softmax_ensemble(x, weight, bias, p: float) -> ExactEnsemble:
    r"""All :math:`2^n` thinned softmax layers (inputs dropped with probability ``p``), averaged two ways.

    Returns the NGM and the arithmetic mean of the thinned networks, weighted by the mask
    probabilities, and the weight-scaled network :math:`\operatorname{softmax}(W x + b)`. Theory: the NGM
    equals the weight-scaled network exactly (Baldi & Sadowski 2013); the arithmetic mean does not.

    Args:
        x: inputs; weight, bias: the layer (``torch.nn.Linear`` layout; bias may be ``None``).
        p: probability of dropping each input, in [0, 1).

    Shape:
        x :math:`(N, n)` with :math:`n \le` :data:`MAX_ENUMERATED_UNITS`, weight :math:`(C, n)`,
        bias :math:`(C,)`; each prediction :math:`(N, C)`.

    Examples:
        >>> g = torch.Generator().manual_seed(0)
        >>> ens = exact_softmax_ensemble(torch.randn(5, 8, generator=g), torch.randn(3, 8, generator=g),
        ...                              torch.zeros(3), p=0.5)
        >>> ens.n_subnetworks, bool(torch.allclose(ens.geometric, ens.weight_scaled, atol=1e-12))
        (256, True)
    """
    log_probs = subnetwork_log_probs(x, weight, bias, p)  # validates everything
    n = log_probs.shape[0].bit_length() - 1
    weights = mask_probabilities(all_masks(n), p)
    x64, w64 = _as_float64(x, "x", 2), _as_float64(weight, "weight", 2)
    b64 = torch.zeros(w64.shape[0], dtype=torch.float64) if bias is None else _as_float64(bias, "bias", 1)
    return ExactEnsemble(
        n_subnetworks=log_probs.shape[0],
        geometric=normalized_geometric_mean(log_probs, weights),
        arithmetic=arithmetic_mean(log_probs, weights),
        weight_scaled=torch.softmax(x64 @ w64.T + b64, dim=-1),
    )


# --------------------------------------------------------------------------- dropout as L2


def _regression_inputs(X, y, w=None) -> tuple[Tensor, Tensor, Tensor | None]:
    X = _as_float64(X, "X", 2)
    y = _as_float64(y, "y", 1)
    if y.shape[0] != X.shape[0]:
        raise ValueError(f"y must have {X.shape[0]} entries (one per row of X), got {y.shape[0]}")
    if w is not None:
        w = _as_float64(w, "w", 1)
        if w.shape[0] != X.shape[1]:
            raise ValueError(f"w must have {X.shape[1]} entries (one per column of X), got {w.shape[0]}")
    return X, y, w


def dropout_penalty(X, w, p: float) -> Tensor:
    r"""The L2 penalty that input dropout (drop probability ``p``) adds to the squared loss of linear regression.

    .. math::
        \Omega(w) = \frac{p}{1-p}\, w^\top \operatorname{diag}(X^\top X)\, w
        = \frac{p}{1-p} \sum_j w_j^2 \sum_i X_{ij}^2

    Args:
        X: design matrix; w: weights; p: probability of dropping each input, in [0, 1).

    Shape:
        X :math:`(N, d)`, w :math:`(d,)`; output: a 0-dim tensor.
    """
    p = _check_p_below_one(p)
    X = _as_float64(X, "X", 2)
    w = _as_float64(w, "w", 1)
    if w.shape[0] != X.shape[1]:
        raise ValueError(f"w must have {X.shape[1]} entries (one per column of X), got {w.shape[0]}")
    return p / (1 - p) * (w**2 * (X**2).sum(dim=0)).sum()


def expected_dropout_loss(X, y, w, p: float) -> Tensor:
    r"""Closed-form expected summed squared loss under inverted input dropout (drop probability ``p``).

    .. math::
        \mathbb{E}_M \Big\lVert y - \frac{M \odot X}{1-p} w \Big\rVert^2
        = \lVert y - X w \rVert^2 + \frac{p}{1-p}\, w^\top \operatorname{diag}(X^\top X)\, w

    Args:
        X: design matrix; y: targets; w: weights; p: probability of dropping each input, in [0, 1).

    Shape:
        X :math:`(N, d)`, y :math:`(N,)`, w :math:`(d,)`; output: a 0-dim tensor.
    """
    X, y, w = _regression_inputs(X, y, w)
    return ((y - X @ w) ** 2).sum() + dropout_penalty(X, w, p)


def monte_carlo_dropout_loss(
    X, y, w, p: float, n_samples: int = 1000, generator: torch.Generator | None = None
) -> tuple[float, float]:
    r"""Monte-Carlo estimate of the expected dropout loss (drop probability ``p``) with real masks.

    Draws ``n_samples`` independent masks :math:`M` of shape :math:`(N, d)` (vectorised), computes
    :math:`\lVert y - (M \odot X / (1-p)) w \rVert^2` for each and returns the mean of these losses and its
    standard error :math:`s / \sqrt{S}`.

    Args:
        X, y, w: as in :func:`expected_dropout_loss`.
        p: probability of dropping each input, in [0, 1).
        n_samples: number of masks :math:`S` (at least 2, for a standard error).
        generator: optional ``torch.Generator`` for the masks.

    Shape:
        X :math:`(N, d)`, y :math:`(N,)`, w :math:`(d,)`; output: ``(mean, standard_error)`` floats.
    """
    p = _check_p_below_one(p)
    X, y, w = _regression_inputs(X, y, w)
    if isinstance(n_samples, bool) or not isinstance(n_samples, (int, np.integer)) or n_samples < 2:
        raise ValueError(f"n_samples must be an int >= 2, got {n_samples!r}")
    masks = torch.empty((n_samples, *X.shape), dtype=torch.float64).bernoulli_(1 - p, generator=generator)
    predictions = (masks * X / (1 - p)) @ w  # (S, N)
    losses = ((y - predictions) ** 2).sum(dim=1)  # (S,)
    return losses.mean().item(), (losses.std() / math.sqrt(n_samples)).item()


def dropout_ridge_solution(X, y, p: float) -> Tensor:
    r"""The weights minimising the expected dropout loss (drop probability ``p``), :func:`expected_dropout_loss`.

    .. math::
        w^* = \Big(X^\top X + \frac{p}{1-p} \operatorname{diag}(X^\top X)\Big)^{-1} X^\top y

    Args:
        X: design matrix; y: targets; p: probability of dropping each input, in [0, 1).

    Shape:
        X :math:`(N, d)`, y :math:`(N,)`; output :math:`(d,)`.
    """
    p = _check_p_below_one(p)
    X, y, _ = _regression_inputs(X, y)
    gram = X.T @ X  # (d, d)
    return torch.linalg.solve(gram + p / (1 - p) * torch.diag(torch.diagonal(gram)), X.T @ y)


def ridge_solution(X, y, lam: float) -> Tensor:
    r"""Ordinary ridge regression, for comparison: :math:`w = (X^\top X + \lambda I)^{-1} X^\top y`.

    Args:
        X: design matrix; y: targets; lam: penalty strength :math:`\lambda \ge 0`.

    Shape:
        X :math:`(N, d)`, y :math:`(N,)`; output :math:`(d,)`.
    """
    X, y, _ = _regression_inputs(X, y)
    if isinstance(lam, bool) or not isinstance(lam, (int, float, np.integer, np.floating)):
        raise TypeError(f"lam must be a real number, got {lam!r} ({type(lam).__name__})")
    if not lam >= 0:  # also rejects NaN
        raise ValueError(f"lam must be >= 0, got {lam!r}")
    d = X.shape[1]
    return torch.linalg.solve(X.T @ X + lam * torch.eye(d, dtype=torch.float64), X.T @ y)


# --------------------------------------------------------------------------- logistic regression (Wager et al.)


def _logistic_inputs(X, w) -> tuple[Tensor, Tensor]:
    X = _as_float64(X, "X", 2)
    w = _as_float64(w, "w", 1)
    if w.shape[0] != X.shape[1]:
        raise ValueError(f"w must have {X.shape[1]} entries (one per column of X), got {w.shape[0]}")
    return X, w


def logistic_dropout_penalty_quadratic(X, w, p: float) -> Tensor:
    r"""Wager et al.'s (2013) second-order dropout penalty of logistic regression, per example.

    With inverted dropout (drop probability ``p``) on the inputs, the logit
    :math:`\tilde\eta_i = (m_i \odot x_i)^\top w / (1-p)` has mean :math:`\eta_i = x_i^\top w` and variance
    :math:`v_i = \frac{p}{1-p} \sum_j x_{ij}^2 w_j^2`. The logistic loss is
    :math:`A(\eta) - y\eta` with :math:`A(\eta) = \log(1 + e^\eta)`, so the penalty dropout adds is
    :math:`\mathbb{E}[A(\tilde\eta_i)] - A(\eta_i) \approx \tfrac12 A''(\eta_i)\, v_i
    = \tfrac12\, \hat p_i (1 - \hat p_i)\, v_i` with :math:`\hat p_i = \sigma(\eta_i)`: the
    linear-regression penalty weighted by the variance of the predicted label, largest for uncertain
    predictions. It does not depend on the labels.

    Shape:
        X :math:`(N, d)`, w :math:`(d,)`; output :math:`(N,)`.
    """
    p = _check_p_below_one(p)
    X, w = _logistic_inputs(X, w)
    prob = torch.sigmoid(X @ w)
    return 0.5 * prob * (1 - prob) * p / (1 - p) * (X**2 @ w**2)


def logistic_dropout_penalty(
    X, w, p: float, n_samples: int = 1000, generator: torch.Generator | None = None, chunk: int = 100
) -> tuple[Tensor, Tensor]:
    r"""Monte-Carlo estimate of the exact dropout penalty of logistic regression, per example.

    :math:`\mathbb{E}_m[A(\tilde\eta_i)] - A(\eta_i)` with :math:`A = \log(1 + e^{\cdot})` (see
    :func:`logistic_dropout_penalty_quadratic`), from ``n_samples`` real input masks (drawn ``chunk`` at a
    time, vectorised). Returns the per-example means and their standard errors.

    Shape:
        X :math:`(N, d)`, w :math:`(d,)`; outputs :math:`(N,)` and :math:`(N,)`.
    """
    p = _check_p_below_one(p)
    X, w = _logistic_inputs(X, w)
    if isinstance(n_samples, bool) or not isinstance(n_samples, (int, np.integer)) or n_samples < 2:
        raise ValueError(f"n_samples must be an int >= 2, got {n_samples!r}")
    if isinstance(chunk, bool) or not isinstance(chunk, (int, np.integer)) or chunk < 1:
        raise ValueError(f"chunk must be a positive int, got {chunk!r}")
    clean = torch.nn.functional.softplus(X @ w)  # A(eta), (N,)
    total = torch.zeros(len(X), dtype=torch.float64)
    total_sq = torch.zeros(len(X), dtype=torch.float64)
    done = 0
    while done < n_samples:
        k = min(chunk, n_samples - done)
        masks = torch.empty((k, *X.shape), dtype=torch.float64).bernoulli_(1 - p, generator=generator)
        penalty = torch.nn.functional.softplus((masks * X / (1 - p)) @ w) - clean  # (k, N)
        total += penalty.sum(dim=0)
        total_sq += (penalty**2).sum(dim=0)
        done += k
    mean = total / n_samples
    var = (total_sq - n_samples * mean**2) / (n_samples - 1)
    return mean, (var.clamp_min(0) / n_samples).sqrt()
