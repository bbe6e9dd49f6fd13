"""The adapter of "write a dropout variant" checks (a function or an ``nn.Module`` class) to the shared
properties of :mod:`.mask_properties`.

A variant is described by its *unit dims*: the dimensions its mask varies over. Element-wise dropout
varies over every dim; spatial dropout over (N, C) (constant over H, W); locked dropout over (N, H)
(constant over time); DropPath over N only; weight drop over both dims of a weight matrix. A
:class:`Variant` also holds the diagnoses of the mistakes particular to it (its mistake table).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import torch
from torch import nn

from .core import CheckContext, Fail, Property, fail_if_torch_dropout_module
from .detect import fingerprint, probe_error_text
from .mask_properties import Adapter, Observation, instance, mask_properties, record_unchanged
from .masks import as_tensor_output, check_finite, diagnose_eval, make_input, unchanged


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


def _build_module(ctx: CheckContext, p: float) -> nn.Module:
    module = ctx.call(ctx.candidate, p)
    if not isinstance(module, nn.Module):
        raise Fail(f"`{_name(ctx.candidate)}(p)` is not an nn.Module: subclass torch.nn.Module")
    return module


def module_caller(ctx: CheckContext, x: torch.Tensor, p: float, training: bool):
    """Call the check's instance of the learner's class for ``p`` on ``x`` in train or eval mode."""
    module = instance(ctx, p, lambda: _build_module(ctx, p))
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


def _call(ctx: CheckContext, caller: Caller, v: Variant, p: float, training: bool, seed: int, dtype):
    """Call once on a fresh input; return (x, y) after checking type/shape, recording that x must not change."""
    x = make_input(v.shape, seed, dtype)
    x_passed = x.clone()
    y = as_tensor_output(caller(ctx, x_passed, p, training), x, v.fn_name)
    record_unchanged(ctx, lambda: unchanged(x, x_passed, "the input tensor", v.inplace_message))
    return x, y


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


def _kept_ratios(x, y) -> np.ndarray:
    keep = (y != 0).numpy()
    return (y.double().numpy()[keep] / x.double().numpy()[keep]).ravel()


def _patterns(v: Variant) -> list[tuple[int, str]]:
    """The mask shapes that are too coarse for ``v`` (see :attr:`.mask_properties.Adapter.patterns`)."""
    if len(v.unit_dims) == 1:  # one mask value per sample
        return [
            (
                0,
                "one decision is shared by the whole batch: all {n} samples were {state} together at p={p:g}; "
                f"draw an independent mask value for each sample (a mask of shape {_mask_shape(v)})",
            )
        ]
    return [
        (
            0,
            v.shared_message
            or f"one mask is shared by the whole batch: every sample has the same {v.unit} dropped; draw an "
            f"independent mask value for each sample (a mask of shape {_mask_shape(v)})",
        ),
        (
            1,
            v.too_coarse_message
            or f"whole samples are dropped (one mask value per sample); drop single {v.unit} instead",
        ),
    ]


def variant_adapter(caller: Caller, v: Variant, is_module: bool = False) -> Adapter:
    """The :class:`.mask_properties.Adapter` of dropout variant ``v`` called by ``caller``: units are the
    mask values over ``v.unit_dims``, flattened per sample; kept ratios are ``y / x``."""
    one = v.unit[:-1]  # "elements" -> "element"

    def run(ctx, p: float, training: bool = True, seed: int = 0, tag: str = ""):
        def compute():
            x, y = _call(ctx, caller, v, p, training, seed, torch.float32)
            return x, y.detach()

        return ctx.memo(("run", p, training, seed, tag), compute)

    def observe(ctx, p: float, seed: int, tag: str) -> Observation:
        x, y = run(ctx, p, True, seed, tag)
        check_finite(y, p)
        units = dropped_units(x, y, v)
        return Observation(
            units.reshape(len(units), -1) if units.ndim > 1 else units, _kept_ratios(x, y), (x, y)
        )

    def nothing_dropped(obs: Observation, p: float) -> None:
        """Fail if training mode changed nothing (before a shared mask that happened to keep all is blamed)."""
        x, y = obs.data
        if torch.equal(y, x):
            raise Fail(f"nothing is dropped at p={p:g} in training mode: the output equals the input")

    def check_identity(ctx, p: float, training: bool, seed: int) -> None:
        x, y = run(ctx, p, training, seed)
        if training:
            check_finite(y, p)
        mode = f"at p={p:g} in training mode" if training else "in eval mode"
        if not training and not is_module:
            mode += " (training=False)"
        diagnose_eval(y, x, p, mode, fix=f"return {v.arg_name} unchanged")

    def dtype_device_grad(ctx):
        x, y = _call(ctx, caller, v, 0.3, True, 0, torch.float64)
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
        y = as_tensor_output(caller(ctx, x, 0.4, True), x, v.fn_name)
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
        if not torch.allclose(grad, w * y.detach() / x.detach(), rtol=1e-4, atol=1e-6):
            raise Fail("the gradient is not the upstream gradient times mask/(1-p)")

    return Adapter(
        unit=v.unit,
        one_unit=one,
        kept="kept values",
        run=run,
        observe=observe,
        check_identity=check_identity,
        mistakes={
            "same mask": "the same mask on every call: two calls on the same input dropped exactly the same "
            f"{v.unit}; draw a new random mask inside each call (do not reseed the RNG or reuse a mask stored "
            "earlier)",
            "p1": f"p=1 should drop every {one} (all zeros); {{kept:.0%}} are not 0",
            "p1 result": "return zeros",
            "torch dropout": "the exercise is to write the mask yourself, e.g. with torch.rand_like or "
            "torch.bernoulli",
        },
        patterns=_patterns(v),
        returns=f"returns a tensor of the input's shape {v.shape}",
        eval_name="is the identity in eval mode" if is_module else "is the identity when training=False",
        toggle=is_module,
        nothing_dropped=nothing_dropped,
        trailing=[Property("keeps dtype and device, gradients flow through the mask", 1, dtype_device_grad)],
    )


def forward_properties(caller: Caller, v: Variant, p_values=(0.2, 0.7)) -> list[Property]:
    """The properties of an inverted-dropout function ``f(x, p, training)`` of variant ``v``."""
    return mask_properties(variant_adapter(caller, v), p_values)


def _mask_shape(v: Variant) -> str:
    dims = (
        ["N", "C", "H", "W"] if len(v.shape) == 4 else (["N", "T", "H"] if len(v.shape) == 3 else ["N", "D"])
    )
    return "(" + ", ".join(d if i in v.unit_dims else "1" for i, d in enumerate(dims)) + ")"


def module_properties(v: Variant) -> list[Property]:
    """The properties of a learner's dropout *class* ``C(p)`` of variant ``v``."""

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

    adapter = variant_adapter(module_caller, v, is_module=True)
    adapter.leading = [Property("is an nn.Module built from p", 1, is_module)]
    adapter.build = lambda ctx, p: ctx.call(ctx.candidate, p)
    adapter.build_text = lambda ctx: f"{_name(ctx.candidate)}({{p}})"
    return mask_properties(adapter)
