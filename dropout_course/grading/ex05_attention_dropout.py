"""Grader of ``ex05_attention_dropout``: dropout on attention weights, and DropPath on a residual block.

Checks: ``attention_with_dropout`` (``f(q, k, v, p, training=True) -> (output, weights)``, its properties are
in :mod:`.attention_checks`), ``drop_path`` (``f(x, p, training=True)`` on ``(N, ...)``: one decision per
sample), ``ResidualBlock`` (an ``nn.Module`` class ``ResidualBlock(branch, p)`` computing
``x + drop_path(branch(x))``; its adapter to :mod:`.mask_properties`, whose units are the samples'
branches, is below) and the hidden ``attention_with_dropout_hidden`` (4-d multi-head inputs, other
p values) and ``drop_path_hidden`` (a 2-d input, other p values).
"""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from .. import layers
from .attention_checks import AttentionCase, attention_properties
from .core import CheckContext, CheckSpec, Fail, Originality, Property, fail_if_torch_dropout_module
from .dropout_checks import Variant, forward_properties, function_caller, variant_fingerprint
from .ex01_inverted_dropout import REFERENCES
from .mask_properties import Adapter, Observation, instance, mask_properties, record_unchanged
from .masks import as_tensor_output, make_input, unchanged

EXERCISE = "ex05_attention_dropout"
CHECKS: list[CheckSpec] = []  # this exercise\'s checks, in notebook order

# --------------------------------------------------------------------------- attention

_ATTENTION = Originality(
    "write attention dropout yourself",
    (*REFERENCES, "dropout_course.models:SelfAttention", "dropout_course.models:Block"),
    forbid_sdpa=True,
)
CHECKS.append(
    CheckSpec(
        "attention_with_dropout",
        attention_properties(AttentionCase("attention_with_dropout")),
        originality=_ATTENTION,
    ),
)

# --------------------------------------------------------------------------- drop_path

_NOT_CONSTANT = (
    "drops single elements, not whole samples: within one sample some values are 0 and others are not; draw "
    "one mask value per sample, shape (N, 1, ..., 1), and let it broadcast over the other dims"
)


def _drop_path_variant(shape=(400, 6, 5)) -> Variant:
    return Variant("drop_path", shape, (0,), "samples", _NOT_CONSTANT)


def _ones_mask(x, p):
    return x * F.dropout(x.new_ones((x.shape[0],) + (1,) * (x.dim() - 1)), p, True)


_DROP_PATH_REFS = [lambda x, p: layers.DropPath(p).train()(x), _ones_mask]


def _drop_path_originality(v: Variant) -> Originality:
    return Originality(
        "write DropPath yourself", REFERENCES, fingerprint=variant_fingerprint(v, _DROP_PATH_REFS)
    )


CHECKS.append(
    CheckSpec(
        "drop_path",
        forward_properties(function_caller, _drop_path_variant()),
        originality=_drop_path_originality(_drop_path_variant()),
    ),
)

# --------------------------------------------------------------------------- ResidualBlock

_SHAPE = (300, 4, 6)  # (N, T, D): a batch of token sequences
_TOL = 1e-6


class _Branch(nn.Module):
    """A residual branch ``f(x) = c + 0.25 tanh(x W^T)`` with |f| in [0.75, 1.25] (never 0): dropped and kept
    branches are told apart exactly."""

    def __init__(self, d: int = _SHAPE[-1], seed: int = 5) -> None:
        super().__init__()
        g = torch.Generator().manual_seed(seed)
        self.linear = nn.Linear(d, d, bias=False)
        with torch.no_grad():
            self.linear.weight.copy_(torch.randn(d, d, generator=g) / d**0.5)
        self.register_buffer("offset", torch.where(torch.rand(d, generator=g) < 0.5, -1.0, 1.0))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.offset + 0.25 * torch.tanh(self.linear(x))


def _build(ctx: CheckContext, p: float, branch: nn.Module | None = None):
    cls = ctx.candidate
    name = getattr(cls, "__name__", type(cls).__name__)
    if not callable(cls):
        raise Fail(f"expected a class derived from torch.nn.Module, got {type(cls).__name__} {cls!r}")
    branch = branch if branch is not None else _Branch()
    block = ctx.call(cls, branch, p, copy_args=False)
    if not isinstance(block, nn.Module):
        raise Fail(f"`{name}(branch, p)` is not an nn.Module: subclass torch.nn.Module")
    return block, branch


def _block_run(ctx, p: float, training: bool = True, seed: int = 0, tag: str = ""):
    """Call the check's block for ``p`` in the given mode on a fresh x: (x, branch(x), y), detached."""

    def compute():
        block, branch = instance(ctx, p, lambda: _build(ctx, p))
        ctx.call(block.train if training else block.eval, copy_args=False)
        x = make_input(_SHAPE, seed)
        x_passed = x.clone()
        y = as_tensor_output(ctx.call(block, x_passed, copy_args=False), x, "ResidualBlock.forward")
        record_unchanged(ctx, lambda: unchanged(x, x_passed, "the input tensor"))
        with torch.no_grad():
            f = branch(x)
        if not torch.isfinite(y).all():
            if p == 1:
                raise Fail(
                    "p=1 gives NaN: 0/0 from dividing by 1-p = 0; when p == 1 every branch is dropped, so return x"
                )
            raise Fail(f"the output contains NaN or inf at p={p:g}")
        return x.double(), f.double(), y.detach().double()

    return ctx.memo(("block", p, training, seed, tag), compute)


def _per_sample(t: torch.Tensor) -> torch.Tensor:
    return t.reshape(len(t), -1)


def _observe(ctx, p: float, seed: int = 0, tag: str = "") -> Observation:
    """A training-mode call: units are the samples' branches (dropped where y == x), kept ratios
    ``(y - x) / branch(x)``; Fail on an output that is not x or x + c * branch(x) per sample."""
    x, f, y = _block_run(ctx, p, seed=seed, tag=tag)
    zero = _per_sample(y == 0)
    if zero.all(1).any():
        raise Fail(
            f"the skip connection is dropped too: the whole output of {float(zero.all(1).double().mean()):.0%} of "
            "the samples is 0. DropPath drops only the branch: out = x + drop_path(branch(x)), x always passes"
        )
    if zero.any():
        raise Fail(
            "some outputs are exactly 0: dropout is applied to the sum x + branch(x), element by element; drop "
            "the branch output of whole samples, before adding x"
        )
    same = _per_sample((y - x).abs() <= _TOL)
    if (
        _per_sample((y - f).abs() <= 1e-5).all(1).any()
        or _per_sample((y * (1 - p) - f).abs() <= 1e-5).all(1).any()
    ):
        raise Fail(
            "the skip connection is dropped instead of the branch: some samples give branch(x) without x. "
            "DropPath drops the branch: out = x + drop_path(branch(x)), x always passes"
        )
    if 0 < p < 1 and not same.all(1).any() and _per_sample((y * (1 - p) - x).abs() <= _TOL).all(1).any():
        raise Fail(
            "the skip connection is rescaled too: dropped samples give x/(1-p) instead of x (and kept ones "
            "(x + branch(x))/(1-p)); divide only the branch, x + branch(x) * mask/(1-p)"
        )
    if (same.any(1) & ~same.all(1)).any():
        raise Fail(
            "drops single elements of the branch output, not whole samples: within one sample the branch is "
            "kept for some values and dropped for others; draw one mask value per sample, shape (N, 1, 1)"
        )
    ratio = _per_sample((y - x) / f)
    spread = ratio.max(1).values - ratio.min(1).values
    if not (same.all(1) | (spread <= 1e-4 * ratio.abs().max(1).values.clamp(min=1.0))).all():
        raise Fail(
            "for some samples the output is neither x (branch dropped) nor x + c * branch(x) (branch kept and "
            "scaled): compute out = x + branch(x) * mask / (1-p) with one mask value per sample"
        )
    if not same.all(1).any():
        c = ratio.median(1).values
        lo, hi = float(c.min()), float(c.max())
        if hi - lo > 1e-4 * max(abs(hi), abs(lo), 1.0):
            raise Fail(
                f"no branch is removed completely: every sample gets x + c * branch(x), with c from {lo:.3g} to "
                f"{hi:.3g}; a dropped branch contributes nothing (out = x), a kept one branch(x) / (1-p)"
            )
    dropped = same.all(1)
    return Observation(dropped.numpy(), ratio[~dropped].flatten().numpy(), (x, f, y))


def _nothing_dropped(obs: Observation, p: float) -> None:
    x, f, y = obs.data
    if torch.allclose(y, x + f, rtol=1e-5, atol=_TOL):
        raise Fail(f"no branch is dropped at p={p:g} in training mode: every sample gets x + branch(x)")


def _skip_not_rescaled(ctx, obs: Observation, p: float) -> np.ndarray:
    """The kept branches' scales, after failing if x was rescaled with them."""
    x, f, y = obs.data
    kept = torch.from_numpy(~obs.dropped)
    ratio_sum = (y[kept] / (x + f)[kept]).flatten()
    if kept.any() and torch.allclose(ratio_sum, torch.full_like(ratio_sum, 1 / (1 - p)), rtol=1e-4):
        raise Fail(
            "the skip connection is rescaled too: kept samples give (x + branch(x))/(1-p); divide only "
            "the branch, x + branch(x) * mask/(1-p)"
        )
    return obs.ratios


def _check_identity(ctx, p: float, training: bool, seed: int) -> None:
    """Fail unless the block gives x + branch(x) (eval mode, or p=0)."""
    x, f, y = _block_run(ctx, p, training, seed)
    mode = f"at p={p:g} in training mode" if training else "in eval mode"
    if torch.allclose(y, x + f, rtol=1e-5, atol=_TOL):
        return
    if torch.allclose(y, f, rtol=1e-5, atol=_TOL):
        raise Fail(f"the skip connection is missing {mode}: return x + branch(x)")
    if torch.allclose(y, x, rtol=1e-5, atol=_TOL):
        raise Fail(f"the branch is skipped for every sample {mode}: return x + branch(x)")
    if (_per_sample((y - x).abs() <= _TOL).all(1)).any() or (y == 0).any():
        raise Fail(f"DropPath is still applied {mode}: return x + branch(x) for every sample")
    ratio = float(((y - x) / f).median())
    if abs(ratio - (1 - p)) < 1e-4:
        raise Fail(
            f"the branch is scaled by (1-p) {mode}: that is non-inverted dropout; kept branches "
            "were already divided by (1-p) in training, so return x + branch(x)"
        )
    if abs(ratio - 1 / (1 - p)) < 1e-4:
        raise Fail(f"rescaling by 1/(1-p) is still applied {mode}: return x + branch(x)")
    raise Fail(f"{mode} the output is not x + branch(x) (branch scaled by {ratio:.4g})")


def _is_module(ctx):
    block, branch = _build(ctx, 0.3)
    params = {id(t) for t in block.parameters()}
    if not all(id(t) in params for t in branch.parameters()):
        raise Fail(
            "the branch is not registered as a submodule, so its parameters are not in "
            "block.parameters() and would never be trained: assign it in __init__, `self.branch = branch`"
        )
    fail_if_torch_dropout_module(block, "uses", "write DropPath yourself")


_RESIDUAL = Adapter(
    unit="branches",
    one_unit="branch",
    kept="kept branch outputs",
    run=lambda ctx, p, training=True, seed=0, tag="": _block_run(ctx, p, training, seed, tag),
    observe=_observe,
    check_identity=_check_identity,
    mistakes={
        "same mask": "the same mask on every call: two calls on the same input dropped exactly the same samples' "
        "branches; draw a new random mask inside each call",
        "p1": "p=1 should drop every branch: the output is x",
        "p1 result": "return x",
        "torch dropout": "write DropPath's mask yourself",
    },
    patterns=[
        (
            0,
            "one decision is shared by the whole batch: all {n} branches were {state} together at p={p:g}; draw "
            "an independent mask value for each sample, shape (N, 1, 1)",
        )
    ],
    eval_name="eval mode gives x + branch(x)",
    eval_p=(0.5,),
    toggle=True,
    independence="an independent decision for each sample and each call",
    edge="p=1 gives x (no NaN), p=0 gives x + branch(x)",
    nothing_dropped=_nothing_dropped,
    kept_ratios=_skip_not_rescaled,
    build=lambda ctx, p: _build(ctx, p)[0],
    build_text=lambda ctx: f"{getattr(ctx.candidate, '__name__', 'ResidualBlock')}(branch, {{p}})",
    leading=[Property("is an nn.Module that registers its branch", 1, _is_module)],
)


CHECKS.append(
    CheckSpec(
        "ResidualBlock",
        mask_properties(_RESIDUAL),
        originality=Originality("write the residual block with your own DropPath", REFERENCES),
    ),
)

# --------------------------------------------------------------------------- hidden checks

CHECKS.append(
    CheckSpec(
        "attention_with_dropout_hidden",
        attention_properties(
            AttentionCase("attention_with_dropout", (6, 4), 12, 12, 16, 16), p_values=(0.1, 0.85)
        ),
        hidden=True,
        originality=_ATTENTION,
    ),
)
CHECKS.append(
    CheckSpec(
        "drop_path_hidden",
        forward_properties(function_caller, _drop_path_variant((500, 7)), p_values=(0.1, 0.85)),
        hidden=True,
        originality=_drop_path_originality(_drop_path_variant((500, 7))),
    ),
)
