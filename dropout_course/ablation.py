r"""Unit ablation: remove a growing fraction of an MLP's hidden units at test time and measure accuracy.

This is the direct test of *co-adaptation* (Hinton et al. 2012): if units only work in particular
combinations, removing some of them should hurt more than the loss of their individual contribution.
For a fraction :math:`f`, :func:`ablation_curve` picks :math:`\lfloor f H \rceil` of the :math:`H` units
of every hidden layer at random, **sets them to zero** (no rescaling of the survivors, as in the
cumulative ablations of Morcos et al. 2018) and measures the accuracy of the ablated network in eval mode,
repeated for ``n_masks`` random choices of units.

Here ``f`` is a fraction of units *removed*, like the drop probability ``p`` elsewhere in the course, but
the units are removed once, for every input, and the network is not told (no :math:`1/(1-f)` scaling).
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch
from torch import Tensor, nn

from .layers import restored_modes
from .models import MLP

__all__ = ["forward_with_units_removed", "ablation_curve", "area_under_curve"]


def _check_fraction(value, name: str = "fraction") -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float, np.floating)) or not 0 <= value < 1:
        raise ValueError(f"{name} must be a number in [0, 1), got {value!r}")
    return float(value)


@torch.no_grad()
def forward_with_units_removed(model: MLP, x: Tensor, keep: Sequence[Tensor]) -> Tensor:
    """Logits of ``model`` (eval mode, no dropout) with hidden units multiplied by ``keep`` masks.

    Args:
        model: an :class:`~dropout_course.models.MLP`.
        x: inputs (N, in_features) (or images, flattened).
        keep: one 0/1 mask per hidden layer, shape (H_l,): 1 keeps the unit, 0 removes it.

    Returns:
        logits (N, n_classes).
    """
    if not isinstance(model, MLP):
        raise TypeError(f"model must be a dropout_course.models.MLP, got {type(model).__name__}")
    widths = list(model.config.hidden)
    if len(keep) != len(widths) or any(k.shape != (w,) for k, w in zip(keep, widths, strict=False)):
        shapes = [tuple(k.shape) for k in keep]
        raise ValueError(f"keep must hold one mask per hidden layer with shapes {widths}, got {shapes}")
    with restored_modes(model):
        model.eval()
        h = x.flatten(1)
        layer = 0
        for module in model.hidden:
            h = module(h)
            if isinstance(module, nn.ReLU):
                h = h * keep[layer].to(h.dtype)
                layer += 1
        return model.head(h)


@torch.no_grad()
def ablation_curve(
    model: MLP,
    X: Tensor,
    y: Tensor,
    fractions: Sequence[float],
    n_masks: int = 10,
    generator: torch.Generator | None = None,
) -> np.ndarray:
    """Test accuracy after removing each fraction of hidden units: array (len(fractions), n_masks).

    For every fraction ``f`` and each of ``n_masks`` repeats, ``round(f * H)`` units of every hidden layer
    (width ``H``) are chosen uniformly at random (``generator``) and set to zero; the accuracy of the
    ablated network on ``(X, y)`` is recorded. ``f = 0`` gives the intact network's accuracy.
    """
    fractions = [_check_fraction(f) for f in fractions]
    if isinstance(n_masks, bool) or not isinstance(n_masks, int) or n_masks < 1:
        raise ValueError(f"n_masks must be a positive int, got {n_masks!r}")
    if len(X) != len(y):
        raise ValueError(f"X has {len(X)} rows but y has {len(y)}")
    widths = list(model.config.hidden)
    out = np.zeros((len(fractions), n_masks))
    for i, f in enumerate(fractions):
        for j in range(n_masks):
            keep = []
            for width in widths:
                mask = torch.ones(width)
                removed = torch.randperm(width, generator=generator)[: round(f * width)]
                mask[removed] = 0.0
                keep.append(mask)
            logits = forward_with_units_removed(model, X, keep)
            out[i, j] = (logits.argmax(1) == y).double().mean().item()
    return out


def area_under_curve(fractions: Sequence[float], accuracy: np.ndarray) -> float:
    """Mean accuracy over the removed fraction (trapezoid rule, normalised by the range of fractions).

    ``accuracy`` has one value per fraction (or one row per fraction: rows are averaged first).
    """
    f = np.asarray(fractions, dtype=float)
    acc = np.asarray(accuracy, dtype=float)
    if acc.ndim == 2:
        acc = acc.mean(axis=1)
    if acc.shape != f.shape or len(f) < 2 or np.any(np.diff(f) <= 0):
        raise ValueError(
            f"need increasing fractions (>= 2) and one accuracy per fraction, got {f.shape} and {acc.shape}"
        )
    return float(np.sum((acc[1:] + acc[:-1]) / 2 * np.diff(f)) / (f[-1] - f[0]))
