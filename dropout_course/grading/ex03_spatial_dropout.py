"""Grader of ``ex03_spatial_dropout``: channel-wise (spatial) dropout for conv feature maps.

Checks: ``spatial_dropout`` (``f(x, p, training=True)`` on ``(N, C, H, W)``), ``SpatialDropout`` (an
``nn.Module`` class), and the hidden ``spatial_dropout_hidden`` (other sizes and p values).
"""

from __future__ import annotations

from .core import CheckSpec, register
from .dropout_checks import Variant, forward_properties, function_caller, module_properties

EXERCISE = "ex03_spatial_dropout"

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


register(
    EXERCISE, CheckSpec("spatial_dropout", forward_properties(function_caller, _variant("spatial_dropout")))
)
register(
    EXERCISE,
    CheckSpec("SpatialDropout", module_properties(_variant("SpatialDropout"))),
)
register(
    EXERCISE,
    CheckSpec(
        "spatial_dropout_hidden",
        [
            p
            for p in forward_properties(
                function_caller, _variant("spatial_dropout", (40, 48, 3, 7)), p_values=(0.1, 0.85)
            )
            if not p.name.startswith(("a fresh", "is the identity"))
        ],
        hidden=True,
    ),
)
