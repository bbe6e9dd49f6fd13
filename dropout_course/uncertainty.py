"""MC dropout prediction (vectorised), calibration (ECE, reliability diagrams) and uncertainty scores.

Monte Carlo dropout (Gal & Ghahramani 2016) keeps dropout ON at test time and averages ``T`` stochastic
forward passes; the spread of the passes is a measure of the model's uncertainty. Here ``p`` is, as
everywhere in the course, the probability of DROPPING a unit.

* :func:`mc_dropout_mode`    context manager: the whole model in eval mode, only its dropout modules in
                             train mode (BatchNorm keeps using its running statistics).
* :func:`mc_predict`         the ``T`` passes batched: the batch is repeated, (T*N, ...) -> outputs
                             reshaped to (T, N, ...), packed only for small inputs so it never loses to
                             the loop;
                             in a chain-shaped model (``nn.Sequential``, ``MLP``) the layers before the
                             first dropout run once.
* :func:`mc_predict_loop`    the naive reference: ``T`` separate forward passes.
* :func:`expected_calibration_error`, :func:`reliability_diagram`   equal-width confidence bins.
* :func:`predictive_entropy`, :func:`mutual_information`, :func:`auroc`   uncertainty scores and OOD.

The vectorised form is exact (the same distribution as the loop) because the course's dropout layers
draw their masks per example: copy ``t`` of example ``n`` gets its own mask, as it would in pass ``t`` of
the loop. Modules that draw one mask for the whole batch (``shares_mask_across_batch``: DropConnect with
one weight mask per batch, stochastic depth, RNN weight drop) would give all ``T`` copies the same mask,
so :func:`mc_predict` refuses them; use the loop. Only dropout *modules* are sampled: dropout written
inline in a model's ``forward`` and gated by the model's ``training`` flag stays off.
"""

from __future__ import annotations

import contextlib

import numpy as np
import torch
from torch import Tensor, nn

from .config import seeded
from .layers import _DropoutBase, is_dropout_module, restored_modes

__all__ = [
    "DROPOUT_TYPES",
    "CHUNK_ELEMENTS",
    "SMALL_INPUT_ELEMENTS",
    "dropout_modules",
    "shared_mask_modules",
    "mc_dropout_mode",
    "mc_predict",
    "mc_predict_loop",
    "predictive_entropy",
    "mutual_information",
    "expected_calibration_error",
    "reliability_diagram",
    "auroc",
]

#: Module types switched to train mode for MC sampling: the course's layers and torch's own dropouts.
DROPOUT_TYPES: tuple[type[nn.Module], ...] = (_DropoutBase, nn.modules.dropout._DropoutNd)

#: Inputs of at most this many numbers (after the deterministic prefix) are "small": :func:`mc_predict` packs
#: several copies of them into one pass. Larger inputs run one pass per sample (the loop, minus the prefix).
SMALL_INPUT_ELEMENTS = 2**13
#: A pass over packed copies of a small input holds about this many numbers (activations stay in cache).
CHUNK_ELEMENTS = 2**18


def dropout_modules(model: nn.Module) -> list[nn.Module]:
    """The dropout modules of ``model`` (see :func:`dropout_course.layers.is_dropout_module`)."""
    if not isinstance(model, nn.Module):
        raise TypeError(f"model must be a torch.nn.Module, got {type(model).__name__}")
    return [m for m in model.modules() if is_dropout_module(m)]


def shared_mask_modules(model: nn.Module) -> list[nn.Module]:
    """The modules of ``model`` that draw ONE mask for the whole batch (``shares_mask_across_batch``).

    ``DropConnectLinear(per_example=False)``, ``StochasticDepth`` and the RNN's ``WeightDrop`` are such
    modules: the ``T`` copies of a repeated batch would share their mask, so they need separate passes.
    """
    return [m for m in model.modules() if getattr(m, "shares_mask_across_batch", False)]


@contextlib.contextmanager
def mc_dropout_mode(model: nn.Module):
    """Put ``model`` in eval mode with only its dropout modules in train mode; restore every mode after.

    BatchNorm, LayerNorm and everything else stay in eval mode, so BatchNorm normalises with its running
    statistics (never with the statistics of the current batch) and never updates them.

    >>> from dropout_course.models import MLP, MLPConfig
    >>> net = MLP(MLPConfig(in_features=4, hidden=(8,), n_classes=2, hidden_dropout=0.5))
    >>> with mc_dropout_mode(net):
    ...     [m.training for m in net.modules()].count(True)  # the two dropout modules
    2
    >>> net.training
    True
    """
    drops = dropout_modules(model)
    if not drops:
        raise ValueError(f"model {type(model).__name__} has no dropout modules: MC dropout needs some")
    with restored_modes(model):
        model.eval()
        for m in drops:
            m.train()
        yield model


def _check_inputs(model, x, T: int) -> None:
    if not isinstance(model, nn.Module):
        raise TypeError(f"model must be a torch.nn.Module, got {type(model).__name__}")
    if not isinstance(x, Tensor):
        raise TypeError(f"x must be a torch.Tensor, got {type(x).__name__}")
    if x.dim() < 1 or len(x) == 0:
        raise ValueError(f"x must be a non-empty batch (N, ...), got shape {tuple(x.shape)}")
    if isinstance(T, bool) or not isinstance(T, int) or T < 1:
        raise ValueError(f"T (the number of MC samples) must be a positive int, got {T!r}")


def _finish(out: Tensor, softmax: bool) -> Tensor:
    return torch.softmax(out, dim=-1) if softmax else out


@torch.no_grad()
def mc_predict(
    model: nn.Module,
    x: Tensor,
    T: int = 50,
    *,
    softmax: bool = False,
    seed: int | None = None,
    max_rows: int | None = None,
) -> Tensor:
    r"""``T`` MC-dropout forward passes of ``x``, batched: outputs of shape (T, N, ...).

    The batch is repeated along dim 0 and run with only the dropout modules in train mode (see
    :func:`mc_dropout_mode`); the output is reshaped from (T*N, ...) to (T, N, ...). Each row gets its own
    dropout mask (drop probability ``p`` of each layer), so ``out[t]`` has the distribution of one
    stochastic pass. The predictive mean and spread are

    .. math::
        \hat\mu(x) = \frac{1}{T}\sum_{t=1}^{T} f_{\omega_t}(x), \qquad
        \hat\sigma^2(x) = \frac{1}{T}\sum_{t=1}^{T} \big(f_{\omega_t}(x) - \hat\mu(x)\big)^2 .

    Speed: packing copies saves the per-call overhead of ``T`` passes, which dominates for small inputs
    (one image: ~60x faster than the loop), but one huge (T*N, ...) batch is *slower* than the loop once
    the per-call overhead is small and its activations overflow the CPU's caches (0.6-0.9x measured for a
    200-point grid through a 128-128 MLP). So an input of at most ``SMALL_INPUT_ELEMENTS`` numbers runs
    ``max(1, CHUNK_ELEMENTS // numel)`` copies per pass, and a larger one runs one pass per sample: the
    loop itself, never slower. In a chain-shaped model (``nn.Sequential``, the course's ``MLP``) the layers
    before the first dropout run once, not ``T`` times, which is the gain for large inputs.

    Args:
        model: a network with dropout modules; its train/eval modes are restored afterwards.
        x: input batch (N, ...).
        T: number of MC samples.
        softmax: apply a softmax over the last dimension (class probabilities for classifiers).
        seed: seed for the dropout masks (the global RNG is forked; the caller's state is untouched).
        max_rows: if given, at most this many rows per pass (a memory cap; at least one copy of ``x``);
            the masks are still independent per row.

    Raises:
        ValueError: if the model has a module that draws one mask for the whole batch
            (``shares_mask_across_batch``, e.g. ``DropConnectLinear(per_example=False)``): the copies
            would not be independent samples; use :func:`mc_predict_loop`.

    Shape:
        x (N, ...) -> output (T, N, ...) where ``...`` is the model's output shape per example.

    Examples:
        >>> from dropout_course.models import MLP, MLPConfig
        >>> net = MLP(MLPConfig(in_features=1, hidden=(16,), n_classes=1, hidden_dropout=0.2))
        >>> mc_predict(net, torch.zeros(5, 1), T=30, seed=0).shape
        torch.Size([30, 5, 1])
    """
    _check_inputs(model, x, T)
    if max_rows is not None and (isinstance(max_rows, bool) or not isinstance(max_rows, int) or max_rows < 1):
        raise ValueError(f"max_rows must be a positive int or None, got {max_rows!r}")
    shared = [type(m).__name__ for m in shared_mask_modules(model)]
    if shared:
        raise ValueError(
            f"model has {shared[0]} layers, whose mask is shared by the whole batch: the T repeated copies "
            "would not be independent samples; use mc_predict_loop"
        )
    n = len(x)
    prefix, suffix = _split_at_first_dropout(model)
    context = seeded(seed) if seed is not None else contextlib.nullcontext()
    with context, mc_dropout_mode(model):
        for module in prefix:  # deterministic: the same for all T copies, so computed once
            x = module(x)
        small = x.numel() <= SMALL_INPUT_ELEMENTS
        copies = max(1, CHUNK_ELEMENTS // max(1, x.numel())) if small else 1
        if max_rows is not None:
            copies = min(copies, max(1, max_rows // n))
        ones = [1] * (x.dim() - 1)
        outs = []
        for start in range(0, T, copies):
            k = min(copies, T - start)
            outs.append(suffix(x if k == 1 else x.repeat(k, *ones)))  # row j*N + i: copy j of example i
        out = outs[0] if len(outs) == 1 else torch.cat(outs)
    out = out.reshape(T, n, *out.shape[1:])  # (T*N, ...) -> (T, N, ...)
    return _finish(out, softmax)


def _split_at_first_dropout(model: nn.Module) -> tuple[list[nn.Module], nn.Module]:
    """(deterministic prefix, rest) of a chain-shaped model; ``([], model)`` for any other model.

    A model is a chain if it is an ``nn.Sequential`` or has a ``chain()`` method returning the modules whose
    composition is its ``forward`` (the course's ``MLP``). The prefix is the modules before the first one
    holding a dropout module with ``p > 0``: its output is the same in all ``T`` passes, so
    :func:`mc_predict` computes it once on (N, ...) and repeats only its result. The masks, and hence the
    outputs for a given seed, are the same as when the whole input is repeated.
    """
    if isinstance(model, nn.Sequential):
        modules = list(model)
    elif callable(getattr(model, "chain", None)):
        modules = list(model.chain())
    else:
        return [], model
    for index, module in enumerate(modules):
        if any(getattr(m, "p", 1.0) > 0 for m in dropout_modules(module)):
            return modules[:index], nn.Sequential(*modules[index:])
    return [], model


@torch.no_grad()
def mc_predict_loop(
    model: nn.Module, x: Tensor, T: int = 50, *, softmax: bool = False, seed: int | None = None
) -> Tensor:
    """The naive reference for :func:`mc_predict`: ``T`` separate forward passes, stacked to (T, N, ...).

    Same arguments and output as :func:`mc_predict`; never faster, but it works for any model, including
    modules that draw one mask per batch (``shares_mask_across_batch``, e.g. ``StochasticDepth``).
    """
    _check_inputs(model, x, T)
    context = seeded(seed) if seed is not None else contextlib.nullcontext()
    with context, mc_dropout_mode(model):
        out = torch.stack([model(x) for _ in range(T)])  # (T, N, ...)
    return _finish(out, softmax)


# --------------------------------------------------------------------------- uncertainty scores


def _as_probs(probs, name: str = "probs") -> Tensor:
    if isinstance(probs, np.ndarray):
        probs = torch.from_numpy(probs)
    if not isinstance(probs, Tensor):
        raise TypeError(f"{name} must be a torch.Tensor or numpy array, got {type(probs).__name__}")
    if not probs.is_floating_point():
        raise TypeError(f"{name} must hold floating-point probabilities, got dtype {probs.dtype}")
    if probs.dim() < 2:
        raise ValueError(f"{name} must have a class dimension last, (..., C), got shape {tuple(probs.shape)}")
    if probs.numel() and (probs.min() < -1e-6 or (probs.sum(-1) - 1).abs().max() > 1e-3):
        raise ValueError(
            f"{name} must be probabilities (>= 0, summing to 1 over the last dim); got min "
            f"{probs.min().item():.3g} and row sums up to {probs.sum(-1).max().item():.4g}: apply softmax"
        )
    return probs.double()


def _entropy(probs: Tensor) -> Tensor:
    return -(probs * torch.log(probs.clamp_min(1e-12))).sum(-1)


def predictive_entropy(probs) -> Tensor:
    r"""Entropy (in nats) of the predictive distribution, one value per example.

    ``probs`` is (N, C) class probabilities, or (T, N, C) MC samples, which are averaged first:

    .. math:: \mathbb{H}[y \mid x] = -\sum_c \bar p_c \log \bar p_c, \qquad
              \bar p_c = \frac{1}{T}\sum_t p_{c}^{(t)} .

    Ranges from 0 (certain) to :math:`\log C` (uniform). Returns a float64 tensor (N,).
    """
    probs = _as_probs(probs)
    if probs.dim() == 3:
        probs = probs.mean(0)
    if probs.dim() != 2:
        raise ValueError(f"probs must be (N, C) or (T, N, C), got shape {tuple(probs.shape)}")
    return _entropy(probs)


def mutual_information(probs) -> Tensor:
    r"""The epistemic part of the predictive entropy (BALD score), from (T, N, C) MC samples.

    .. math:: I = \mathbb{H}\Big[\frac{1}{T}\sum_t p^{(t)}\Big] - \frac{1}{T}\sum_t \mathbb{H}[p^{(t)}]
              \;\ge 0,

    large when the passes disagree with each other (each pass may be confident). Returns (N,).
    """
    probs = _as_probs(probs)
    if probs.dim() != 3:
        raise ValueError(f"mutual_information needs (T, N, C) MC samples, got shape {tuple(probs.shape)}")
    return (_entropy(probs.mean(0)) - _entropy(probs).mean(0)).clamp_min(0.0)


# --------------------------------------------------------------------------- calibration


def _check_calibration_inputs(probs, labels, n_bins) -> tuple[np.ndarray, np.ndarray]:
    probs = _as_probs(probs)
    if probs.dim() != 2:
        raise ValueError(
            f"probs must be (N, C) class probabilities (average MC samples first), got "
            f"shape {tuple(probs.shape)}"
        )
    if isinstance(labels, np.ndarray):
        labels = torch.from_numpy(labels)
    if not isinstance(labels, Tensor):
        raise TypeError(f"labels must be a torch.Tensor or numpy array, got {type(labels).__name__}")
    if labels.shape != probs.shape[:1]:
        raise ValueError(f"labels must have shape ({len(probs)},) to match probs, got {tuple(labels.shape)}")
    if isinstance(n_bins, bool) or not isinstance(n_bins, int) or n_bins < 1:
        raise ValueError(f"n_bins must be a positive int, got {n_bins!r}")
    if len(probs) == 0:
        raise ValueError("probs is empty: need at least one example")
    conf, pred = probs.max(-1)
    correct = (pred == labels.to(pred.device)).double()
    return conf.cpu().numpy(), correct.cpu().numpy()


def reliability_diagram(probs, labels, n_bins: int = 15):
    """Reliability-diagram data: per equal-width confidence bin, mean confidence, accuracy and count.

    The confidence of an example is its top class probability; bin ``b`` holds confidences in
    ``(b/n_bins, (b+1)/n_bins]`` (the first bin also holds 0). Returns a pandas DataFrame with columns
    ``bin_lower, bin_upper, confidence, accuracy, count`` (confidence/accuracy NaN for empty bins).
    A perfectly calibrated model has ``accuracy == confidence`` in every bin.
    """
    import pandas as pd

    conf, correct = _check_calibration_inputs(probs, labels, n_bins)
    edges = np.linspace(0.0, 1.0, n_bins + 1)
    which = np.searchsorted(edges[1:-1], conf, side="left")  # bin b: edges[b] < conf <= edges[b + 1]
    count = np.bincount(which, minlength=n_bins)
    with np.errstate(invalid="ignore", divide="ignore"):
        confidence = np.bincount(which, weights=conf, minlength=n_bins) / count
        accuracy = np.bincount(which, weights=correct, minlength=n_bins) / count
    return pd.DataFrame(
        {
            "bin_lower": edges[:-1],
            "bin_upper": edges[1:],
            "confidence": confidence,
            "accuracy": accuracy,
            "count": count,
        }
    )


def expected_calibration_error(probs, labels, n_bins: int = 15) -> float:
    r"""Expected calibration error with ``n_bins`` equal-width confidence bins (Guo et al. 2017).

    .. math:: \mathrm{ECE} = \sum_{b=1}^{B} \frac{|B_b|}{N}\,
              \big|\mathrm{acc}(B_b) - \mathrm{conf}(B_b)\big|

    Args:
        probs: (N, C) class probabilities (for MC dropout: the mean over the T samples).
        labels: (N,) integer true classes.
        n_bins: number of equal-width bins on [0, 1].

    Examples:
        >>> probs = torch.tensor([[0.95, 0.05], [0.95, 0.05], [0.65, 0.35], [0.25, 0.75]])
        >>> round(expected_calibration_error(probs, torch.tensor([0, 1, 0, 1]), n_bins=10), 4)
        0.375
    """
    table = reliability_diagram(probs, labels, n_bins)
    used = table[table["count"] > 0]
    weights = used["count"] / used["count"].sum()
    return float((weights * (used["accuracy"] - used["confidence"]).abs()).sum())


def auroc(scores_in, scores_out) -> float:
    """Area under the ROC curve for telling out-of-distribution inputs (positives) from in-distribution.

    A higher score should mean "more likely out of distribution" (e.g. predictive entropy). 0.5 is chance,
    1.0 perfect separation. Computed as the Mann-Whitney statistic: the probability that a random OOD
    input scores above a random in-distribution one, ties counting one half (equal to
    ``sklearn.metrics.roc_auc_score``).
    """
    a = _as_scores(scores_in, "scores_in")
    b = _as_scores(scores_out, "scores_out")
    if len(a) == 0 or len(b) == 0:
        raise ValueError(f"need scores for both groups, got {len(a)} in-distribution and {len(b)} OOD")
    both = np.r_[a, b]
    _, inverse, counts = np.unique(both, return_inverse=True, return_counts=True)
    upper = np.cumsum(counts)  # average rank (1-based) of each distinct value, ties sharing it
    ranks = (upper - (counts - 1) / 2.0)[inverse]
    u = ranks[len(a) :].sum() - len(b) * (len(b) + 1) / 2.0
    return float(u / (len(a) * len(b)))


def _as_scores(scores, name: str) -> np.ndarray:
    if isinstance(scores, Tensor):
        scores = scores.detach().cpu().numpy()
    try:
        values = np.asarray(scores, dtype=float).ravel()
    except (TypeError, ValueError):
        raise TypeError(
            f"{name} must be numbers (tensor, array or list), got {type(scores).__name__}"
        ) from None
    if not np.isfinite(values).all():
        raise ValueError(f"{name} must be finite, found NaN or inf")
    return values
