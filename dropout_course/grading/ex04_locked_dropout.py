"""Grader of ``ex04_locked_dropout``: locked (variational) dropout for sequences.

Checks: ``locked_dropout`` (``f(x, p, training=True)`` on batch-first ``(N, T, H)``: one mask per sequence
and feature, shared by every time step), ``LockedDropout`` (an ``nn.Module`` class), and the hidden
``locked_dropout_hidden`` (other sizes and p values).
"""

from __future__ import annotations

from .core import CheckSpec, register
from .dropout_checks import Variant, forward_properties, function_caller, module_properties

EXERCISE = "ex04_locked_dropout"

_NOT_CONSTANT = (
    "a new mask at every time step: the same feature is dropped at some steps and kept at others; draw one "
    "mask per (sequence, feature), shape (N, 1, H), and reuse it for every step"
)
_TOO_COARSE = (
    "whole sequences are dropped (every feature at once): draw one mask value per (sequence, feature), "
    "shape (N, 1, H)"
)


def _variant(name: str, shape=(64, 12, 40)) -> Variant:
    return Variant(name, shape, (0, 2), "features", _NOT_CONSTANT, _TOO_COARSE)


register(
    EXERCISE, CheckSpec("locked_dropout", forward_properties(function_caller, _variant("locked_dropout")))
)
register(EXERCISE, CheckSpec("LockedDropout", module_properties(_variant("LockedDropout"))))
register(
    EXERCISE,
    CheckSpec(
        "locked_dropout_hidden",
        [
            p
            for p in forward_properties(
                function_caller, _variant("locked_dropout", (30, 25, 64)), p_values=(0.1, 0.85)
            )
            if not p.name.startswith(("a fresh", "is the identity"))
        ],
        hidden=True,
    ),
)
