"""Grader of ``ex05_attention_dropout``: dropout on attention weights, and DropPath on a residual block.

Checks: ``attention_with_dropout`` (``f(q, k, v, p, training=True) -> (output, weights)``, its properties are
in :mod:`.attention_checks`), ``drop_path`` (``f(x, p, training=True)`` on ``(N, ...)``: one decision per
sample), ``ResidualBlock`` (an ``nn.Module`` class ``ResidualBlock(branch, p)`` computing
``x + drop_path(branch(x))``) and the hidden ``attention_with_dropout_hidden`` (4-d multi-head inputs, other
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
from .mask_properties import check_rejects_bad_p
from .masks import (
    as_tensor_output,
    diagnose_drop_fraction,
    diagnose_scale,
    independent_draws,
    make_input,
    unchanged,
)

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


def _instance(ctx, p: float):
    """The check's ONE ``ResidualBlock(branch, p)`` for ``p`` (reused, so state kept between calls shows)."""
    return ctx.memo(("block instance", p), lambda: _build(ctx, p))


def _block_run(ctx, p: float, training: bool = True, seed: int = 0, tag: str = ""):
    """Call the check's block for ``p`` in the given mode on a fresh x: (x, branch(x), y), detached."""

    def compute():
        block, branch = _instance(ctx, p)
        ctx.call(block.train if training else block.eval, copy_args=False)
        x = make_input(_SHAPE, seed)
        x_passed = x.clone()
        y = as_tensor_output(ctx.call(block, x_passed, copy_args=False), x, "ResidualBlock.forward")
        ctx.cache.setdefault("inplace", []).append((x, x_passed))
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


def _dropped_branches(
    ctx, p: float, tag: str = ""
) -> tuple[np.ndarray, torch.Tensor, torch.Tensor, torch.Tensor]:
    """Which samples had their branch dropped (y == x); Fail on a mask that is not per sample, or none."""
    x, f, y = _block_run(ctx, p, tag=tag)
    if torch.allclose(y, x + f, rtol=1e-5, atol=_TOL):
        raise Fail(f"no branch is dropped at p={p:g} in training mode: every sample gets x + branch(x)")
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
    return same.all(1).numpy(), x, f, y


def _residual_properties() -> list[Property]:
    def is_module(ctx):
        block, branch = _build(ctx, 0.3)
        params = {id(t) for t in block.parameters()}
        if not all(id(t) in params for t in branch.parameters()):
            raise Fail(
                "the branch is not registered as a submodule, so its parameters are not in "
                "block.parameters() and would never be trained: assign it in __init__, `self.branch = branch`"
            )
        fail_if_torch_dropout_module(block, "uses", "write DropPath yourself")

    def train_eval(ctx):
        p = 0.5
        x, f, y = _block_run(ctx, p, training=False)
        if torch.allclose(y, x + f, rtol=1e-5, atol=_TOL):
            pass
        elif torch.allclose(y, f, rtol=1e-5, atol=_TOL):
            raise Fail("the skip connection is missing in eval mode: return x + branch(x)")
        elif torch.allclose(y, x, rtol=1e-5, atol=_TOL):
            raise Fail("the branch is skipped for every sample in eval mode: return x + branch(x)")
        elif (_per_sample((y - x).abs() <= _TOL).all(1)).any() or (y == 0).any():
            raise Fail("DropPath is still applied in eval mode: return x + branch(x) for every sample")
        else:
            ratio = float(((y - x) / f).median())
            if abs(ratio - (1 - p)) < 1e-4:
                raise Fail(
                    "the branch is scaled by (1-p) in eval mode: that is non-inverted dropout; kept branches "
                    "were already divided by (1-p) in training, so return x + branch(x)"
                )
            if abs(ratio - 1 / (1 - p)) < 1e-4:
                raise Fail("rescaling by 1/(1-p) is still applied in eval mode: return x + branch(x)")
            raise Fail("in eval mode the output is not x + branch(x)")
        x, f, y = _block_run(ctx, p)
        if torch.allclose(y, x + f, rtol=1e-5, atol=_TOL):
            raise Fail(
                "after .train() nothing changes (every sample gets x + branch(x)): read the mode from "
                "`self.training` in forward (set by .train()/.eval()), do not store a flag of your own"
            )

    def drop_fraction(ctx):
        for p in (0.2, 0.7):
            dropped, *_ = _dropped_branches(ctx, p)
            diagnose_drop_fraction(float(dropped.mean()), p, independent_draws(dropped), "samples' branches")

    def scaling(ctx):
        for p in (0.2, 0.7):
            dropped, x, f, y = _dropped_branches(ctx, p)
            kept = torch.from_numpy(~dropped)
            if not kept.any():
                continue  # nothing kept to measure; the fraction and independence properties say why
            ratio_sum = (y[kept] / (x + f)[kept]).flatten()
            if torch.allclose(ratio_sum, torch.full_like(ratio_sum, 1 / (1 - p)), rtol=1e-4):
                raise Fail(
                    "the skip connection is rescaled too: kept samples give (x + branch(x))/(1-p); divide only "
                    "the branch, x + branch(x) * mask/(1-p)"
                )
            diagnose_scale(((y - x)[kept] / f[kept]).flatten().numpy(), p, "kept branch outputs")

    def independent(ctx):
        p = 0.5
        dropped, *_ = _dropped_branches(ctx, p)
        if dropped.all() or not dropped.any():
            raise Fail(
                f"one decision is shared by the whole batch: all {len(dropped)} branches were "
                f"{'dropped' if dropped.all() else 'kept'} together at p={p:g}; draw an independent mask value "
                "for each sample, shape (N, 1, 1)"
            )
        again, *_ = _dropped_branches(ctx, p, tag="second call")
        if np.array_equal(dropped, again):
            raise Fail(
                "the same mask on every call: two calls on the same input dropped exactly the same samples' "
                "branches; draw a new random mask inside each call"
            )

    def edge_cases(ctx):
        try:
            x, f, y = _block_run(ctx, 1.0)
        except Fail as exc:
            if "ZeroDivisionError" in str(exc):
                raise Fail(
                    f"p=1 divides by zero (1-p = 0): when p == 1 every branch is dropped, so return x ({exc})"
                ) from None
            raise
        if not torch.allclose(y, x, rtol=1e-6, atol=_TOL):
            raise Fail("p=1 should drop every branch: the output is x")
        x, f, y = _block_run(ctx, 0.0)
        if not torch.allclose(y, x + f, rtol=1e-5, atol=_TOL):
            raise Fail("p=0 should keep every branch unscaled: the output is x + branch(x)")

    def rejects_bad_p(ctx):
        name = getattr(ctx.candidate, "__name__", "ResidualBlock")
        check_rejects_bad_p(ctx, lambda bad: _build(ctx, bad)[0], f"{name}(branch, {{p}})")

    def no_inplace(ctx):
        _block_run(ctx, 0.2)
        for x, x_passed in ctx.cache.get("inplace", []):
            unchanged(x, x_passed, "the input tensor")

    def no_torch_dropout(ctx):
        _block_run(ctx, 0.2)
        ctx.fail_if_torch_dropout("write DropPath's mask yourself")

    return [
        Property("is an nn.Module that registers its branch", 1, is_module),
        Property("eval mode gives x + branch(x); follows .train() / .eval()", 2, train_eval),
        Property("drops the branch (not x) of a fraction p of the samples", 2, drop_fraction),
        Property("scales kept branches, and only them, by 1/(1-p)", 2, scaling),
        Property("an independent decision for each sample and each call", 1, independent),
        Property("p=1 gives x (no NaN), p=0 gives x + branch(x)", 1, edge_cases),
        Property("raises ValueError for p outside [0, 1]", 1, rejects_bad_p),
        Property("does not modify its input", 1, no_inplace),
        Property("does not call torch's own dropout", 1, no_torch_dropout),
    ]


CHECKS.append(
    CheckSpec(
        "ResidualBlock",
        _residual_properties(),
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
