"""Reusable property sets for "write a dropout variant" checks (a function or an ``nn.Module`` class).

A variant is described by its *unit dims*: the dimensions its mask varies over. Element-wise dropout
varies over every dim; spatial dropout over (N, C) (constant over H, W); locked dropout over (N, H)
(constant over time); DropPath over N only. The same statistical properties then apply to all of them.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import torch
from torch import nn

from .core import CheckContext, Fail, Property, fail_if_torch_dropout_module
from .detect import fingerprint, probe_error_text
from .masks import (
    as_tensor_output,
    check_finite,
    diagnose_drop_fraction,
    diagnose_eval,
    diagnose_scale,
    independent_draws,
    make_input,
    unchanged,
)


@dataclass
class Variant:
    """What a dropout variant's mask looks like, and how to explain getting it wrong."""

    fn_name: str
    shape: tuple[int, ...]  # test input shape
    unit_dims: tuple[int, ...]  # dims the mask varies over
    unit: str = "elements"  # what one mask value drops, for messages
    not_constant_message: str = ""  # mask varies along a dim where it must be constant
    too_coarse_message: str = ""  # mask constant along a unit dim (other than the batch dim)
    shared_message: str = ""  # every row (sample) has the same mask; default: "shared by the whole batch"
    arg_name: str = "x"  # the function's input, for messages ("return x unchanged")
    inplace_message: str = ""  # the input was modified in place; default: `x *= mask` advice
    detached_message: str = ""  # the output is detached from autograd; default: about x


ELEMENT = Variant("dropout_forward", (200, 100), (0, 1), "elements")

Caller = Callable[[CheckContext, torch.Tensor, float, bool], object]


def function_caller(ctx: CheckContext, x: torch.Tensor, p: float, training: bool):
    """Call a learner function ``f(x, p, training)``."""
    return ctx.call(ctx.candidate, x, p, training, copy_args=False)


def module_instance(ctx: CheckContext, p: float):
    """The ONE instance of the learner's class for ``p`` in this check (built on first use, then reused, so
    that state kept on the instance between calls, such as a cached mask, shows)."""

    def build():
        module = ctx.call(ctx.candidate, p)
        if not isinstance(module, nn.Module):
            raise Fail(f"`{_name(ctx.candidate)}(p)` is not an nn.Module: subclass torch.nn.Module")
        return module

    return ctx.memo(("instance", p), build)


def module_caller(ctx: CheckContext, x: torch.Tensor, p: float, training: bool):
    """Call the check's instance of the learner's class for ``p`` on ``x`` in train or eval mode."""
    module = module_instance(ctx, p)
    ctx.call(module.train if training else module.eval, copy_args=False)
    return ctx.call(module, x, copy_args=False)


def _name(candidate) -> str:
    return getattr(candidate, "__name__", type(candidate).__name__)


def variant_fingerprint(
    v: Variant,
    references: list[Callable[[torch.Tensor, float], torch.Tensor]],
    is_module: bool = False,
):
    """A fingerprint (see :func:`.detect.fingerprint`) of a dropout-variant candidate (a function
    ``f(x, p, training)`` or a module class ``C(p)``) against torch's and the course's implementations
    (``references(x, p) -> y``)."""

    def fp(ctx: CheckContext):
        x = make_input(v.shape, 321)
        refs = list(references)
        if is_module:

            def run(p):
                module = ctx.call(ctx.candidate, p)
                ctx.call(module.train, copy_args=False)
                return ctx.call(module, x.clone(), copy_args=False)

            def probe():
                text = probe_error_text(ctx, ctx.candidate, 1.5)
                if text:
                    return text
                module = ctx.call(ctx.candidate, 1.5)
                return probe_error_text(ctx, module, x.clone())

        else:

            def run(p):
                return ctx.call(ctx.candidate, x.clone(), p, True, copy_args=False)

            def probe():
                return probe_error_text(ctx, ctx.candidate, x.clone(), 1.5, True)

        return fingerprint(ctx, run, [lambda p, r=r: r(x.clone(), p) for r in refs], probe)

    return fp


def _run(
    ctx: CheckContext,
    caller: Caller,
    v: Variant,
    p: float,
    training: bool = True,
    seed: int = 0,
    dtype=torch.float32,
    tag: str = "",
):
    """Call once on a fresh input; return (x, y) after checking type/shape and that x is unchanged."""

    def compute():
        x = make_input(v.shape, seed, dtype)
        x_passed = x.clone()
        y = caller(ctx, x_passed, p, training)
        y = as_tensor_output(y, x, v.fn_name)
        ctx.cache.setdefault("inplace", []).append((x, x_passed))
        return x, y.detach()

    return ctx.memo(("run", p, training, seed, dtype, tag), compute)


def dropped_units(x: torch.Tensor, y: torch.Tensor, v: Variant) -> np.ndarray:
    """Boolean array over the unit dims: True where the unit was dropped; Fail if the mask is inconsistent."""
    dropped = (y == 0).numpy()
    other = tuple(d for d in range(x.dim()) if d not in v.unit_dims)
    if other:
        all_dropped = dropped.all(axis=other)
        any_dropped = dropped.any(axis=other)
        if (all_dropped != any_dropped).any():
            raise Fail(v.not_constant_message)
        return all_dropped
    return dropped


def _analyse(ctx, caller, v: Variant, p: float, seed: int = 0):
    x, y = _run(ctx, caller, v, p, seed=seed)
    check_finite(y, p)
    units = dropped_units(x, y, v)
    return x, y, units


def _effective_n(units: np.ndarray) -> int:
    """Number of independent mask draws behind ``units`` (fewer if the mask is shared; that mistake is
    diagnosed by the independence property, so the fraction test must not blame it on p)."""
    return independent_draws(units.reshape(units.shape[0], -1))


def _nothing_dropped(x, y, units: np.ndarray, p: float) -> None:
    """Fail if training mode changed nothing (before a shared mask that happened to keep all is blamed)."""
    if not units.any() and torch.equal(y, x):
        raise Fail(f"nothing is dropped at p={p:g} in training mode: the output equals the input")


def _kept_ratios(x, y) -> np.ndarray:
    keep = (y != 0).numpy()
    return (y.double().numpy()[keep] / x.double().numpy()[keep]).ravel()


def forward_properties(
    caller: Caller, v: Variant, p_values=(0.2, 0.7), is_module: bool = False
) -> list[Property]:
    """The standard properties of an inverted-dropout forward pass of variant ``v``."""

    def returns_tensor(ctx):
        _run(ctx, caller, v, p_values[0])

    def drop_fraction(ctx):
        for p in p_values:
            x, y, units = _analyse(ctx, caller, v, p)
            _nothing_dropped(x, y, units, p)
            diagnose_drop_fraction(float(units.mean()), p, _effective_n(units), v.unit)

    def scaling(ctx):
        for p in p_values:
            x, y, _ = _analyse(ctx, caller, v, p)
            diagnose_scale(_kept_ratios(x, y), p)

    def independent_masks(ctx):
        p = 0.5
        x, y, units = _analyse(ctx, caller, v, p, seed=0)
        _nothing_dropped(x, y, units, p)
        rows = units.reshape(units.shape[0], -1)
        if rows.shape[1] == 1 and units.shape[0] > 1 and (rows == rows[0]).all():
            raise Fail(
                f"one decision is shared by the whole batch: all {units.shape[0]} samples were "
                f"{'dropped' if rows[0, 0] else 'kept'} together at p={p:g}; draw an independent mask value "
                f"for each sample (a mask of shape {_mask_shape(v)})"
            )
        if rows.shape[1] > 1:
            if (rows == rows[0]).all() and units.shape[0] > 1:
                raise Fail(
                    v.shared_message
                    or f"one mask is shared by the whole batch: every sample has the same {v.unit} dropped; "
                    f"draw an independent mask value for each sample (a mask of shape {_mask_shape(v)})"
                )
            if (rows.all(axis=1) | (~rows).all(axis=1)).all():
                raise Fail(
                    v.too_coarse_message
                    or f"whole samples are dropped (one mask value per sample); drop single {v.unit} instead"
                )
        # a fresh mask on every call: same input again
        x_b, y_b = _run(ctx, caller, v, p, seed=0, tag="second call")
        units_b = dropped_units(x_b, y_b, v)
        if np.array_equal(units, units_b):
            raise Fail(
                "the same mask on every call: two calls on the same input dropped exactly the same "
                f"{v.unit}; draw a new random mask inside each call (do not reseed the RNG or reuse a "
                "mask stored earlier)"
            )

    def eval_identity(ctx):
        for p in (0.2, 0.5):
            x, y = _run(ctx, caller, v, p, training=False)
            mode = "in eval mode (training=False)" if not is_module else "in eval mode"
            diagnose_eval(y, x, p, mode, fix=f"return {v.arg_name} unchanged")

    def edge_cases(ctx):
        try:
            x, y = _run(ctx, caller, v, 1.0)
        except Fail as exc:
            if "ZeroDivisionError" in str(exc):
                raise Fail(
                    f"p=1 divides by zero (1-p = 0): when p == 1 every unit is dropped, so return zeros ({exc})"
                ) from None
            raise
        check_finite(y, 1.0)
        if not (y == 0).all():
            raise Fail(
                f"p=1 should drop every unit (all zeros); {float((y != 0).double().mean()):.0%} are not 0"
            )
        x, y = _run(ctx, caller, v, 0.0)
        check_finite(y, 0.0)
        if not torch.allclose(y, x, rtol=1e-6, atol=0):
            raise Fail("p=0 should return the input unchanged (nothing dropped, scale 1/(1-0) = 1)")

    def no_inplace(ctx):
        _run(ctx, caller, v, p_values[0])
        for x, x_passed in ctx.cache.get("inplace", []):
            unchanged(x, x_passed, "the input tensor", v.inplace_message)

    def dtype_device_grad(ctx):
        x, y = _run(ctx, caller, v, 0.3, dtype=torch.float64)
        if y.dtype != torch.float64:
            raise Fail(
                f"wrong dtype: a float64 input gives a {y.dtype} output; build the mask with the input's "
                "dtype (e.g. `torch.rand_like(x)` or `mask.to(x.dtype)`)"
            )
        if y.device != x.device:
            raise Fail(
                f"wrong device: the output is on {y.device}, the input on {x.device}; create the mask like "
                "the input (`torch.rand_like(x)`, or `device=x.device`)"
            )
        x = make_input(v.shape, 5).requires_grad_(True)
        y = caller(ctx, x, 0.4, True)
        y = as_tensor_output(y, x, v.fn_name)
        if not y.requires_grad:
            raise Fail(
                v.detached_message
                or "the output is detached from autograd (NumPy round trip, .detach() or .data on x?): "
                "gradients cannot flow back through your dropout"
            )
        w = make_input(v.shape, 6)
        try:
            (grad,) = torch.autograd.grad((y * w).sum(), x)
        except RuntimeError as exc:
            raise Fail(f"backpropagating through the output failed: {exc}") from None
        expected = w * y.detach() / x.detach()
        if not torch.allclose(grad, expected, rtol=1e-4, atol=1e-6):
            raise Fail("the gradient is not the upstream gradient times mask/(1-p)")

    def no_torch_dropout(ctx):
        _run(ctx, caller, v, p_values[0])
        ctx.fail_if_torch_dropout(
            "the exercise is to write the mask yourself, e.g. with torch.rand_like or torch.bernoulli"
        )

    return [
        Property(f"returns a tensor of the input's shape {v.shape}", 1, returns_tensor),
        Property("drops a fraction p of the " + v.unit, 2, drop_fraction),
        Property("scales the kept " + v.unit + " by 1/(1-p)", 2, scaling),
        Property("a fresh, independent mask for each sample and each call", 1, independent_masks),
        Property(
            "is the identity in eval mode" if is_module else "is the identity when training=False",
            1,
            eval_identity,
        ),
        Property("p=1 gives zeros (no NaN), p=0 the identity", 1, edge_cases),
        Property("does not modify its input", 1, no_inplace),
        Property("keeps dtype and device, gradients flow through the mask", 1, dtype_device_grad),
        Property("does not call torch's own dropout", 1, no_torch_dropout),
    ]


def _mask_shape(v: Variant) -> str:
    dims = (
        ["N", "C", "H", "W"] if len(v.shape) == 4 else (["N", "T", "H"] if len(v.shape) == 3 else ["N", "D"])
    )
    return "(" + ", ".join(d if i in v.unit_dims else "1" for i, d in enumerate(dims)) + ")"


def check_rejects_bad_p(ctx: CheckContext, build: Callable[[float], object], call_text: str) -> None:
    """Fail unless ``build(p)`` (the learner's constructor, called through ``ctx.call``) raises ValueError for
    p = -0.1 and 1.5; ``call_text`` shows the call, with ``{p}`` for the value."""
    for bad in (-0.1, 1.5):
        shown = call_text.format(p=bad)
        try:
            run = build(bad)
        except Fail as exc:
            if "ValueError" in str(exc):
                continue
            raise Fail(f"`{shown}` should raise ValueError, got: {exc}") from None
        shown_run = repr(run) if "\n" not in repr(run) else f"it makes a {type(run).__name__}"
        raise Fail(f"`{shown}` is accepted ({shown_run}); raise ValueError for p outside [0, 1]")


def module_properties(v: Variant) -> list[Property]:
    """Forward properties of a learner's dropout *class* plus the module-specific ones."""

    def is_module(ctx):
        cls = ctx.candidate
        if not callable(cls):
            raise Fail(f"expected a class derived from torch.nn.Module, got {type(cls).__name__} {cls!r}")
        module = ctx.call(cls, 0.3)
        if not isinstance(module, nn.Module):
            raise Fail(
                f"expected a class derived from torch.nn.Module, got {_name(cls)}(p) = a {type(module).__name__}"
            )
        fail_if_torch_dropout_module(module, "wraps", "write the dropout yourself")

    def train_eval_toggle(ctx):
        module = module_instance(ctx, 0.5)
        x = make_input(v.shape, 11)
        ctx.call(module.eval, copy_args=False)
        y_eval = as_tensor_output(ctx.call(module, x), x, v.fn_name)
        diagnose_eval(y_eval.detach(), x, 0.5, "after .eval()")
        ctx.call(module.train, copy_args=False)
        y_train = as_tensor_output(ctx.call(module, x), x, v.fn_name)
        if not (y_train == 0).any():
            raise Fail(
                "after .train() nothing is dropped: read the mode from `self.training` in forward "
                "(set by .train()/.eval()), do not store a flag of your own"
            )

    def rejects_bad_p(ctx):
        check_rejects_bad_p(ctx, lambda bad: ctx.call(ctx.candidate, bad), f"{_name(ctx.candidate)}({{p}})")

    props = [Property("is an nn.Module built from p", 1, is_module)]
    props += forward_properties(module_caller, v, is_module=True)
    props += [
        Property("follows .train() / .eval()", 1, train_eval_toggle),
        Property("raises ValueError for p outside [0, 1]", 1, rejects_bad_p),
    ]
    return props
