"""Grader of ``ex03_spatial_dropout``: channel-wise (spatial) dropout for conv feature maps.

Checks: ``spatial_dropout`` (``f(x, p, training=True)`` on ``(N, C, H, W)``), ``SpatialDropout`` (an
``nn.Module`` class), and the hidden ``spatial_dropout_hidden`` (every property again on other sizes and
p values). Torch's dropout (``F.dropout2d``, ``nn.Dropout2d``, ...) and the course's ``SpatialDropout``
cost the whole check.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from .. import layers
from .core import CheckSpec, Originality
from .dropout_checks import (
    Variant,
    forward_properties,
    function_caller,
    module_properties,
    variant_fingerprint,
)
from .ex01_inverted_dropout import REFERENCES

EXERCISE = "ex03_spatial_dropout"
CHECKS: list[CheckSpec] = []  # this exercise\'s checks, in notebook order

_NOT_CONSTANT = (
    "drops single elements, not whole channels: within one feature map some pixels are 0 and others are "
    "not; draw one mask value per (sample, channel), shape (N, C, 1, 1), and let it broadcast over H, W"
)
_TOO_COARSE = (
    "whole samples are dropped (every channel of a sample at once): draw one mask value per (sample, "
    "channel), shape (N, C, 1, 1)"
)


def _variant(name: str, shape=(64, 32, 5, 5)) -> Variant:
    return Variant(name, shape, (0, 1), "channels", _NOT_CONSTANT, _TOO_COARSE)


def _ones_mask(x: torch.Tensor, p: float) -> torch.Tensor:
    return x * F.dropout(x.new_ones(x.shape[0], x.shape[1], 1, 1), p, True)


_REFS = [
    lambda x, p: F.dropout2d(x, p, True),
    lambda x, p: layers.SpatialDropout(p).train()(x),
    _ones_mask,
]


def _originality(v: Variant, is_module: bool = False) -> Originality:
    return Originality(
        "write spatial dropout yourself",
        REFERENCES,
        fingerprint=variant_fingerprint(v, _REFS, is_module=is_module),
    )


_FUNCTION, _MODULE = _variant("spatial_dropout"), _variant("SpatialDropout")
_HIDDEN = _variant("spatial_dropout", (40, 48, 3, 7))

CHECKS.append(
    CheckSpec(
        "spatial_dropout", forward_properties(function_caller, _FUNCTION), originality=_originality(_FUNCTION)
    ),
)
CHECKS.append(
    CheckSpec(
        "SpatialDropout", module_properties(_MODULE), originality=_originality(_MODULE, is_module=True)
    ),
)
CHECKS.append(
    CheckSpec(
        "spatial_dropout_hidden",
        forward_properties(function_caller, _HIDDEN, p_values=(0.1, 0.85)),
        hidden=True,
        description="other sizes, p = 0.1 and 0.85",
        originality=_originality(_HIDDEN),
    ),
)
