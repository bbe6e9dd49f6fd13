"""Grader of ``ex04_locked_dropout``: locked (variational) dropout for sequences, and weight drop.

Checks: ``locked_dropout`` (``f(x, p, training=True)`` on batch-first ``(N, T, H)``: one mask per sequence
and feature, shared by every time step), ``LockedDropout`` (an ``nn.Module`` class), ``weight_drop``
(``f(weight, p, training=True)``: DropConnect on a weight matrix, one mask value per weight),
``WeightDropRNN`` (an ``nn.Module`` class ``WeightDropRNN(input_size, hidden_size, p)``: a tanh RNN over
``(T, N, input)`` that samples ONE dropped ``W_hh`` per forward call and uses it at every step; its
properties are in :mod:`.weight_drop_checks`), and the hidden ``locked_dropout_hidden``,
``weight_drop_hidden`` and ``WeightDropRNN_hidden`` (other sizes and p values).
"""

from __future__ import annotations

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
from .weight_drop_checks import RNNCase, rnn_properties

EXERCISE = "ex04_locked_dropout"
CHECKS: list[CheckSpec] = []  # this exercise\'s checks, in notebook order

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


_LOCKED_REFS = [
    lambda x, p: layers.LockedDropout(p).train()(x),
    lambda x, p: x * F.dropout(x.new_ones(x.shape[0], 1, x.shape[2]), p, True),
    lambda x, p: F.dropout1d(x.transpose(1, 2), p, True).transpose(1, 2),
]


def _originality(v: Variant, refs, task: str, is_module: bool = False) -> Originality:
    return Originality(task, REFERENCES, fingerprint=variant_fingerprint(v, refs, is_module=is_module))


_LOCKED_TASK = "write locked dropout yourself"
_LOCKED, _LOCKED_MODULE = _variant("locked_dropout"), _variant("LockedDropout")
CHECKS.append(
    CheckSpec(
        "locked_dropout",
        forward_properties(function_caller, _LOCKED),
        originality=_originality(_LOCKED, _LOCKED_REFS, _LOCKED_TASK),
    ),
)
CHECKS.append(
    CheckSpec(
        "LockedDropout",
        module_properties(_LOCKED_MODULE),
        originality=_originality(_LOCKED_MODULE, _LOCKED_REFS, _LOCKED_TASK, is_module=True),
    ),
)

# --------------------------------------------------------------------------- weight drop

_WEIGHT_MESSAGES = dict(
    unit="weights",
    arg_name="weight",
    not_constant_message="",  # every dim is a unit dim: never used
    too_coarse_message=(
        "whole rows of the weight matrix are dropped (a mask of shape (out, 1)): that is dropout on the "
        "layer's output units, not DropConnect; draw one mask value per weight, a mask of the weight's shape"
    ),
    shared_message=(
        "every row of the weight matrix has the same entries dropped (a mask of shape (1, in) broadcast over "
        "the rows): that drops input units, not single weights; draw one mask value per weight, a mask of "
        "the weight's shape"
    ),
    inplace_message=(
        "the weight was modified in place (e.g. `weight.data.mul_(mask)`, `weight *= mask` or "
        "`weight[mask] = 0`): that destroys the trained weights, since dropped entries stay 0 for good and "
        "kept ones grow by 1/(1-p) on every call; return a new tensor, `weight * mask / (1-p)`"
    ),
    detached_message=(
        "the dropped weight is detached from autograd (`weight.data`, `.detach()`, a NumPy round trip or "
        "torch.no_grad()?): no gradient would reach the raw weight, so it would never be trained"
    ),
)


def _weight_variant(shape=(48, 40)) -> Variant:
    return Variant("weight_drop", shape, (0, 1), **_WEIGHT_MESSAGES)


_WEIGHT_REFS = [lambda w, p: F.dropout(w, p, True), lambda w, p: layers.dropout(w, p, True)]
_WEIGHT_TASK = "write DropConnect (weight drop) yourself"
_RNN_ORIGINALITY = Originality("write the weight-dropped RNN yourself", REFERENCES)
CHECKS.append(
    CheckSpec(
        "weight_drop",
        forward_properties(function_caller, _weight_variant()),
        originality=_originality(_weight_variant(), _WEIGHT_REFS, _WEIGHT_TASK),
    ),
)
CHECKS.append(CheckSpec("WeightDropRNN", rnn_properties(RNNCase()), originality=_RNN_ORIGINALITY))

# --------------------------------------------------------------------------- hidden checks

_LOCKED_HIDDEN, _WEIGHT_HIDDEN = _variant("locked_dropout", (30, 25, 64)), _weight_variant((30, 90))
CHECKS.append(
    CheckSpec(
        "locked_dropout_hidden",
        forward_properties(function_caller, _LOCKED_HIDDEN, p_values=(0.1, 0.85)),
        hidden=True,
        originality=_originality(_LOCKED_HIDDEN, _LOCKED_REFS, _LOCKED_TASK),
    ),
)
CHECKS.append(
    CheckSpec(
        "weight_drop_hidden",
        forward_properties(function_caller, _WEIGHT_HIDDEN, p_values=(0.1, 0.85)),
        hidden=True,
        originality=_originality(_WEIGHT_HIDDEN, _WEIGHT_REFS, _WEIGHT_TASK),
    ),
)
CHECKS.append(
    CheckSpec(
        "WeightDropRNN_hidden",
        rnn_properties(RNNCase(input_size=20, hidden_size=12, batch=100, steps=9), (0.1, 0.85)),
        hidden=True,
        originality=_RNN_ORIGINALITY,
    ),
)
