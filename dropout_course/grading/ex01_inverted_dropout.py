"""Grader of ``ex01_inverted_dropout``: inverted dropout in torch (function and module) and in NumPy.

Checks: ``dropout_forward`` (``f(x, p, training=True) -> Tensor``), ``Dropout`` (an ``nn.Module`` class),
``dropout_forward_numpy`` (``f(x, p, mode, rng) -> (out, cache)``), ``dropout_backward_numpy``
(``f(dout, cache) -> dx``, checked against a numerical gradient of the learner's own forward, passed as
``forward=``), and the hidden ``dropout_forward_hidden`` (other shapes, p values and dtypes).
"""

from __future__ import annotations

import numpy as np
import torch.nn.functional as F

from .. import layers
from .core import CheckSpec, Fail, Originality, Property
from .detect import fingerprint, probe_error_text
from .dropout_checks import (
    ELEMENT,
    Variant,
    forward_properties,
    function_caller,
    module_properties,
    variant_fingerprint,
)
from .masks import (
    as_array_output,
    check_finite,
    diagnose_drop_fraction,
    diagnose_eval,
    diagnose_scale,
    unchanged,
)

EXERCISE = "ex01_inverted_dropout"
CHECKS: list[CheckSpec] = []  # this exercise\'s checks, in notebook order

# what the exercise re-implements: the course's dropout family (check_probability stays allowed)
REFERENCES = tuple(
    f"dropout_course.layers:{name}"
    for name in (
        "dropout",
        "Dropout",
        "SpatialDropout",
        "LockedDropout",
        "GaussianDropout",
        "DropPath",
        "DropConnectLinear",
        "dropout_forward_numpy",
        "dropout_backward_numpy",
    )
)
_ELEMENT_REFS = [lambda x, p: F.dropout(x, p, True), lambda x, p: layers.dropout(x, p, True)]
_MODULE = Variant("Dropout", (200, 100), (0, 1))


def _originality(fingerprint_fn=None) -> Originality:
    return Originality("write dropout yourself", REFERENCES, fingerprint=fingerprint_fn)


CHECKS.append(
    CheckSpec(
        "dropout_forward",
        forward_properties(function_caller, ELEMENT),
        description="torch function",
        originality=_originality(variant_fingerprint(ELEMENT, _ELEMENT_REFS)),
    ),
)
CHECKS.append(
    CheckSpec(
        "Dropout",
        module_properties(_MODULE),
        description="nn.Module",
        originality=_originality(variant_fingerprint(_MODULE, _ELEMENT_REFS, is_module=True)),
    ),
)

_HIDDEN = Variant("dropout_forward", (16, 30, 20), (0, 1, 2))
CHECKS.append(
    CheckSpec(
        "dropout_forward_hidden",
        forward_properties(function_caller, _HIDDEN, p_values=(0.1, 0.9)),
        hidden=True,
        description="3-d input, p = 0.1 and 0.9",
        originality=_originality(variant_fingerprint(_HIDDEN, _ELEMENT_REFS)),
    ),
)

# --------------------------------------------------------------------------- NumPy pair

_SHAPE = (200, 100)


def _np_input(seed: int, shape=_SHAPE) -> np.ndarray:
    rng = np.random.default_rng(seed)
    return (rng.uniform(0.5, 1.5, size=shape) * rng.choice([-1.0, 1.0], size=shape)).astype(np.float64)


def _np_forward(ctx, fn, p: float, mode: str = "train", seed: int = 0, rng_seed: int = 42, x_seed: int = 0):
    """Call the learner's NumPy forward on a fresh input with a fresh Generator; return (x, out, cache)."""

    def compute():
        x = _np_input(x_seed)
        x_passed = x.copy()
        result = ctx.call(fn, x_passed, p, mode, np.random.default_rng(rng_seed), copy_args=False)
        name = getattr(fn, "__name__", "dropout_forward_numpy")
        if not isinstance(result, tuple) or len(result) != 2:
            raise Fail(f"`{name}` should return a pair (out, cache), got {type(result).__name__}")
        out, cache = result
        out = as_array_output(out, x, name)
        unchanged(x, x_passed, "the input array")
        return x, out, cache

    return ctx.memo(("np", id(fn), p, mode, rng_seed, x_seed), compute)


def _np_returns(ctx):
    _np_forward(ctx, ctx.candidate, 0.2)


def _np_fraction_and_scale(ctx):
    for p in (0.2, 0.7):
        x, out, _ = _np_forward(ctx, ctx.candidate, p)
        check_finite(out, p)
        dropped = out == 0
        diagnose_drop_fraction(float(dropped.mean()), p, dropped.size)
        diagnose_scale((out[~dropped] / x[~dropped]).ravel(), p)


def _np_test_mode(ctx):
    for p in (0.2, 0.5):
        x, out, _ = _np_forward(ctx, ctx.candidate, p, mode="test")
        diagnose_eval(out, x, p, "in test mode")


def _np_uses_rng(ctx):
    _, a, _ = _np_forward(ctx, ctx.candidate, 0.5, rng_seed=1)
    _, b, _ = _np_forward(ctx, ctx.candidate, 0.5, rng_seed=2)
    again = ctx.call(ctx.candidate, _np_input(0), 0.5, "train", np.random.default_rng(1), copy_args=False)
    again_out = again[0] if isinstance(again, tuple) else again
    if not np.array_equal(np.asarray(again_out), a):
        raise Fail(
            "two calls with generators on the same seed give different masks: draw the mask from the `rng` "
            "argument (`rng.random(x.shape)`), not from np.random's global state or a new generator"
        )
    if np.array_equal(a, b):
        raise Fail(
            "generators on different seeds give the same mask: the mask must come from the `rng` argument "
            "(do not reseed inside the function)"
        )


def _np_edge(ctx):
    x, out, _ = _np_forward(ctx, ctx.candidate, 1.0)
    check_finite(out, 1.0)
    if not (out == 0).all():
        raise Fail("p=1 should drop every unit (all zeros)")
    x, out, _ = _np_forward(ctx, ctx.candidate, 0.0)
    if not np.allclose(out, x):
        raise Fail("p=0 should return the input unchanged")


def _np_fingerprint(ctx):
    x = _np_input(8, shape=(40, 30))
    refs = [layers.dropout_forward_numpy]

    def out_of(result):
        return result[0] if isinstance(result, tuple) and len(result) == 2 else result

    def run(p):
        return out_of(
            ctx.call(ctx.candidate, x.copy(), p, "train", np.random.default_rng(5), copy_args=False)
        )

    def ref_run(ref):
        return lambda p: out_of(ref(x.copy(), p, "train", np.random.default_rng(5)))

    def probe():
        return probe_error_text(ctx, ctx.candidate, x.copy(), 1.5, "train", np.random.default_rng(5))

    return fingerprint(ctx, run, [ref_run(r) for r in refs], probe)


CHECKS.append(
    CheckSpec(
        "dropout_forward_numpy",
        originality=Originality(
            "write dropout yourself in NumPy", REFERENCES, torch_dropout=True, fingerprint=_np_fingerprint
        ),
        properties=[
            Property("returns (out, cache) with out of the input's shape; x unchanged", 1, _np_returns),
            Property("drops a fraction p and scales the kept units by 1/(1-p)", 2, _np_fraction_and_scale),
            Property("is the identity in test mode", 1, _np_test_mode),
            Property("draws its mask from the rng argument", 1, _np_uses_rng),
            Property("p=1 gives zeros (no NaN), p=0 the identity", 1, _np_edge),
        ],
    ),
)


def _numerical_gradient(ctx, forward, x: np.ndarray, w: np.ndarray, p: float, mode: str, h: float = 1e-6):
    """d sum(w * forward(x)) / dx by central differences, with the same rng seed for every evaluation."""

    def loss(z):
        out = ctx.call(forward, z, p, mode, np.random.default_rng(7), copy_args=False, traced=False)[0]
        return float(np.sum(w * np.asarray(out, dtype=np.float64)))

    grad = np.zeros_like(x)
    for i in np.ndindex(x.shape):
        xp, xm = x.copy(), x.copy()
        xp[i] += h
        xm[i] -= h
        grad[i] = (loss(xp) - loss(xm)) / (2 * h)
    return grad


def _backward_case(ctx, p: float, mode: str):
    forward = ctx.extra.get("forward")
    if forward is None:
        raise Fail(
            "pass your forward pass too: grader.check('dropout_backward_numpy', backward, forward=forward)"
        )
    x = _np_input(3, shape=(4, 6))
    w = _np_input(4, shape=(4, 6))
    result = ctx.call(forward, x.copy(), p, mode, np.random.default_rng(7), copy_args=False, traced=False)
    if not isinstance(result, tuple) or len(result) != 2:
        raise Fail("the forward pass must return (out, cache); fix dropout_forward_numpy first")
    out, cache = result
    dx = ctx.call(ctx.candidate, w.copy(), cache)
    if dx is None:
        raise Fail("`dropout_backward_numpy` returns None: did you forget to return dx?")
    if not isinstance(dx, np.ndarray) or dx.shape != x.shape:
        raise Fail(
            f"dx must be an array of the input's shape {x.shape}, got {type(dx).__name__} "
            f"{getattr(dx, 'shape', '')}"
        )
    numeric = _numerical_gradient(ctx, forward, x, w, p, mode)
    if np.allclose(dx, numeric, rtol=1e-5, atol=1e-6):
        return
    out = np.asarray(out, dtype=np.float64)
    kept = out != 0
    if mode == "train":
        if np.allclose(dx, w):
            raise Fail(
                "backward ignores the mask: dx must be dout * mask / (1-p), zero where a unit was dropped"
            )
        if np.allclose(dx, w * kept):
            raise Fail("backward forgets the 1/(1-p) scale: dx = dout * mask / (1-p)")
        if np.allclose(dx, w * kept * p):
            raise Fail("backward scales by p instead of 1/(1-p): dx = dout * mask / (1-p)")
    err = float(np.max(np.abs(dx - numeric)) / max(np.max(np.abs(numeric)), 1e-12))
    raise Fail(
        f"gradient check failed in {mode} mode at p={p:g}: max relative error {err:.2g} between your dx "
        "and the numerical gradient of your forward pass"
    )


def _bw_train(ctx):
    for p in (0.2, 0.6):
        _backward_case(ctx, p, "train")


def _bw_test(ctx):
    _backward_case(ctx, 0.4, "test")


CHECKS.append(
    CheckSpec(
        "dropout_backward_numpy",
        originality=Originality("write the backward pass yourself", REFERENCES),
        properties=[
            Property("matches the numerical gradient in train mode", 2, _bw_train),
            Property("passes the gradient through in test mode", 1, _bw_test),
        ],
    ),
)
