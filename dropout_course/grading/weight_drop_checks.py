r"""Properties of a learner's tanh RNN with weight drop (DropConnect on the recurrent matrix, AWD-LSTM).

The candidate is a class ``WeightDropRNN(input_size, hidden_size, p)`` with two parameters, ``weight_ih``
``(hidden, input)`` and ``weight_hh`` ``(hidden, hidden)`` (no bias), whose ``forward(x)`` runs

.. math::
    h_0 = 0, \quad h_t = \tanh(x_t W_{ih}^T + h_{t-1} \tilde W^T), \quad
    \tilde W = \frac{M \odot W_{hh}}{1 - p},\ M_{ij} \sim \mathrm{Bernoulli}(1 - p)

over ``x`` ``(T, N, input)`` and returns every :math:`h_t`, ``(T, N, hidden)``: ONE mask per forward call,
used at every step, and :math:`\tilde W = W_{hh}` in eval mode.

The grader sets the weights and recovers, from the outputs alone, the recurrent matrix used at each step
(:mod:`.rnn_recovery`); the recovered matrices are judged like any dropout mask (binomial drop fraction,
``1/(1-p)`` scale, constant over the steps, fresh on every call), so any correct implementation passes whatever
the order of its random calls.
"""

from __future__ import annotations

import torch
from torch import nn

from .core import CheckContext, Fail, Property, fail_if_torch_dropout_module
from .mask_properties import check_rejects_bad_p
from .masks import (
    as_tensor_output,
    diagnose_drop_fraction,
    diagnose_eval,
    diagnose_scale,
    independent_draws,
    make_input,
    unchanged,
)
from .rnn_recovery import (
    RNNCase,
    case_inputs,
    case_weights,
    check_recurrence,
    one_matrix,
    recover,
    reference_rnn,
    weight_ratios,
)

INPLACE_MESSAGE = (
    "weight_hh was modified in place by forward (e.g. `self.weight_hh.data.mul_(mask)` or "
    "`self.weight_hh.data = ...`): that destroys the trained weights, since dropped entries stay 0 for good and "
    "kept ones grow by 1/(1-p) on every call; build a new tensor each call, `w_hh = self.weight_hh * mask / (1-p)`"
    ", and leave the parameter alone"
)


def _construct(ctx: CheckContext, case: RNNCase, p: float) -> nn.Module:
    cls = ctx.candidate
    if not isinstance(cls, type) or not issubclass(cls, nn.Module):
        raise Fail(f"expected a class derived from torch.nn.Module, got {type(cls).__name__} {cls!r}")
    module = ctx.call(cls, case.input_size, case.hidden_size, p)
    if not isinstance(module, nn.Module):
        raise Fail(
            f"`{cls.__name__}(input_size, hidden_size, p)` is not an nn.Module: subclass torch.nn.Module"
        )
    return module


def _parameters(module: nn.Module, case: RNNCase) -> dict[str, nn.Parameter]:
    """The module's ``weight_ih`` and ``weight_hh`` parameters; Fail if missing or of the wrong shape."""
    params = dict(module.named_parameters())
    expected = {
        "weight_ih": (case.hidden_size, case.input_size),
        "weight_hh": (case.hidden_size, case.hidden_size),
    }
    for name, shape in expected.items():
        if name not in params:
            plain = isinstance(getattr(module, name, None), torch.Tensor)
            raise Fail(
                f"`self.{name}` is {'a plain tensor, not an nn.Parameter' if plain else 'missing'}: register "
                f"`self.{name} = nn.Parameter(...)` of shape {shape} in __init__ (parameters found: "
                f"{', '.join(params) or 'none'})"
            )
        if tuple(params[name].shape) != shape:
            raise Fail(
                f"`{name}` has shape {tuple(params[name].shape)}, expected {shape} = "
                f"{'(hidden_size, input_size)' if name == 'weight_ih' else '(hidden_size, hidden_size)'}"
            )
    return params


def _set_weights(module: nn.Module, case: RNNCase, w_ih: torch.Tensor, w_hh: torch.Tensor) -> None:
    params = _parameters(module, case)
    with torch.no_grad():
        params["weight_ih"].copy_(w_ih)
        params["weight_hh"].copy_(w_hh)


def _build(ctx: CheckContext, case: RNNCase, p: float, training: bool, seed: int = 0):
    module = _construct(ctx, case, p)
    w_ih, w_hh = case_weights(case, p, seed)
    _set_weights(module, case, w_ih, w_hh)
    ctx.call(module.train if training else module.eval, copy_args=False)
    return module, w_ih, w_hh


def _as_states(y, x: torch.Tensor, case: RNNCase) -> torch.Tensor:
    """Check that ``y`` is the ``(T, N, hidden)`` tensor of every hidden state; Fail naming the mistake."""
    t, n, h = case.steps, case.batch, case.hidden_size
    if isinstance(y, (tuple, list)) and y and isinstance(y[0], torch.Tensor):
        raise Fail(
            f"`{case.name}.forward` returns a {type(y).__name__} of {len(y)} items; return only the tensor of "
            f"every hidden state, shape (T, N, hidden) = {(t, n, h)} (e.g. `torch.stack(states)`)"
        )
    if isinstance(y, torch.Tensor) and tuple(y.shape) != (t, n, h):
        shape = tuple(y.shape)
        if shape == (n, h):
            raise Fail(
                f"returns only the last hidden state {shape}; return every h_t stacked, shape (T, N, hidden) "
                f"= {(t, n, h)}"
            )
        if shape == (n, t, h):
            raise Fail(f"returns {shape} = (N, T, hidden): stack the states along dim 0, shape {(t, n, h)}")
        raise Fail(
            f"wrong shape: returns {shape}, expected (T, N, hidden) = {(t, n, h)} for x of shape {tuple(x.shape)}"
        )
    return as_tensor_output(y, torch.empty(t, n, h), f"{case.name}.forward")


def _forward(ctx: CheckContext, case: RNNCase, module: nn.Module, x: torch.Tensor, w_hh: torch.Tensor):
    """Call the module on a copy of ``x``; record whether ``x`` and ``weight_hh`` survived (before the output is
    checked, so that those properties are judged even when the output is wrong)."""
    x_passed = x.clone()
    before = _parameters(module, case)["weight_hh"]
    y = ctx.call(module, x_passed, copy_args=False)
    ctx.cache.setdefault("inplace_x", []).append((x, x_passed))
    replaced = dict(module.named_parameters()).get("weight_hh") is not before
    ctx.cache.setdefault("inplace_w", []).append((w_hh, before.detach().clone(), replaced))
    return _as_states(y, x, case)


def _run(ctx: CheckContext, case: RNNCase, p: float, training: bool = True, seed: int = 0, calls: int = 1):
    """Build the module (weights set, mode set) and call it ``calls`` times on the same input (the weights are
    set again before each call). Returns ``(x, w_ih, w_hh, [y, ...])``, the outputs detached."""

    def compute():
        module, w_ih, w_hh = _build(ctx, case, p, training, seed)
        x = case_inputs(case, seed)
        ys = []
        for _ in range(calls):
            _set_weights(module, case, w_ih, w_hh)
            ys.append(_forward(ctx, case, module, x, w_hh).detach())
        return x, w_ih, w_hh, ys

    return ctx.memo(("rnn", case.name, p, training, seed, calls), compute)


def _matrices(ctx, case: RNNCase, p: float, training: bool = True, seed: int = 0, calls: int = 1):
    """Per call: the ratios ``W_used / W_hh`` at steps 2..T, ``(T-1, H, H)``."""

    def compute():
        x, w_ih, w_hh, ys = _run(ctx, case, p, training, seed, calls)
        ratios = [weight_ratios(recover(case, x, w_ih, y, p), w_hh) for y in ys]
        check_recurrence(ratios[0], p)
        return ratios

    return ctx.memo(("ratios", case.name, p, training, seed, calls), compute)


# --------------------------------------------------------------------------- properties


def rnn_properties(case: RNNCase, p_values=(0.2, 0.7)) -> list[Property]:
    """The properties of a ``WeightDropRNN`` class (see the module docstring)."""

    def is_module(ctx):
        module = _construct(ctx, case, 0.3)
        params = _parameters(module, case)
        extra = [n for n in params if n not in ("weight_ih", "weight_hh")]
        if extra:
            raise Fail(
                f"unexpected parameters {', '.join(extra)}: this RNN has exactly two, weight_ih and weight_hh "
                "(no bias)"
            )
        fail_if_torch_dropout_module(module, "uses", "write the weight mask yourself")

    def eval_and_train(ctx):
        p = 0.5
        (ratios,) = _matrices(ctx, case, p, training=False)
        ratios = one_matrix(ratios)
        diagnose_eval(
            ratios,
            torch.ones_like(ratios),
            p,
            "in eval mode",
            "weights of W_hh",
            "use weight_hh itself in eval mode",
        )
        (ratios,) = _matrices(ctx, case, p)
        if (ratios != 0).all() and torch.allclose(ratios, torch.ones_like(ratios), rtol=1e-4):
            raise Fail(
                "after .train() nothing is dropped: read the mode from `self.training` in forward (set by "
                ".train()/.eval()), do not store a flag of your own"
            )

    def one_mask_per_call(ctx):
        (ratios,) = _matrices(ctx, case, 0.5)
        one_matrix(ratios)

    def drop_fraction(ctx):
        for p in p_values:
            (ratios,) = _matrices(ctx, case, p)
            dropped = (ratios == 0).numpy()
            if not dropped.any() and torch.allclose(ratios, torch.ones_like(ratios), rtol=1e-4):
                raise Fail(
                    f"nothing is dropped at p={p:g} in training mode: every step used weight_hh itself"
                )
            diagnose_drop_fraction(float(dropped.mean()), p, independent_draws(dropped), "weights of W_hh")

    def scaling(ctx):
        for p in p_values:
            (ratios,) = _matrices(ctx, case, p)
            diagnose_scale(ratios[ratios != 0].numpy(), p, "kept weights of W_hh")

    def fresh_mask(ctx):
        p = 0.5
        first, second = (r[0] == 0 for r in _matrices(ctx, case, p, calls=2))  # the matrices at step 2
        if not first.any():
            raise Fail(f"nothing is dropped at p={p:g} in training mode: every step used weight_hh itself")
        if (first.all(1) | (~first).all(1)).all():
            raise Fail(
                "whole rows of W_hh are dropped (a mask of shape (hidden, 1)): that drops units of the new state, "
                "not single weights; draw one mask value per weight, a mask of W_hh's shape (hidden, hidden)"
            )
        if (first.all(0) | (~first).all(0)).all():
            raise Fail(
                "whole columns of W_hh are dropped (a mask of shape (hidden,) or (1, hidden)): that drops units of "
                "h_(t-1), not single weights; draw one mask value per weight, of W_hh's shape (hidden, hidden)"
            )
        if torch.equal(first, second):
            raise Fail(
                "the same mask on every call: two forward calls dropped exactly the same weights of W_hh; sample "
                "a new mask inside forward (not in __init__, and do not reseed the RNG)"
            )

    def edge_cases(ctx):
        try:
            (ratios,) = _matrices(ctx, case, 1.0)
        except Fail as exc:
            if "ZeroDivisionError" in str(exc):
                raise Fail(
                    f"p=1 divides by zero (1-p = 0): when p == 1 every weight of W_hh is dropped, so use a "
                    f"matrix of zeros ({exc})"
                ) from None
            raise
        if (ratios != 0).any():
            raise Fail(
                f"p=1 should drop every weight of W_hh; {float((ratios != 0).double().mean()):.0%} are kept"
            )
        try:
            (ratios,) = _matrices(ctx, case, 0.0)
        except Fail as exc:
            if "recurrent term" in str(exc):
                raise Fail(
                    "p=0 should use weight_hh unchanged (nothing dropped, scale 1/(1-0) = 1), but every step is "
                    "tanh(x_t W_ih^T), as if W_hh were 0"
                ) from None
            raise
        if not torch.allclose(ratios, torch.ones_like(ratios), rtol=1e-4, atol=0):
            raise Fail("p=0 should use weight_hh unchanged (nothing dropped, scale 1/(1-0) = 1)")

    def gradients(ctx):
        p = 0.4
        module, w_ih, w_hh = _build(ctx, case, p, True, seed=3)
        param = _parameters(module, case)["weight_hh"]
        x = case_inputs(case, 3)
        y = _as_states(ctx.call(module, x.clone(), copy_args=False), x, case)
        ratios = weight_ratios(recover(case, x, w_ih, y.detach(), p), w_hh)
        check_recurrence(ratios, p)
        if not y.requires_grad:
            raise Fail("the output is detached from autograd (.detach(), .data or a NumPy round trip?)")
        upstream = make_input(y.shape, 9)
        try:
            (grad,) = torch.autograd.grad((y * upstream).sum(), [param], allow_unused=True)
        except RuntimeError as exc:
            raise Fail(f"backpropagating through the output failed: {exc}") from None
        if grad is None or not grad.any():
            raise Fail(
                "no gradient reaches weight_hh: the dropped matrix is built from `self.weight_hh.data`, "
                "`.detach()`, a copy or under torch.no_grad(), so W_hh would never be trained; compute "
                "`self.weight_hh * mask / (1-p)` with autograd on"
            )
        w_var = w_hh.double().requires_grad_(True)
        y_ref = reference_rnn(x, w_ih, w_var, ratios)
        (expected,) = torch.autograd.grad((y_ref * upstream.double()).sum(), [w_var])
        if float((grad.double() - expected).norm() / expected.norm()) > 1e-3:
            raise Fail(
                "the gradient reaching weight_hh is not the gradient through the dropped matrix (upstream "
                "gradient times mask/(1-p)): apply the mask with an ordinary product, `weight_hh * mask / (1-p)`"
            )

    def run_even_if_wrong(ctx):
        """Call the module at p_values[0]; a wrong output does not matter if the call itself happened."""
        try:
            _run(ctx, case, p_values[0])
        except Fail:
            if not ctx.cache.get("inplace_x"):
                raise

    def leaves_weights(ctx):
        run_even_if_wrong(ctx)
        for w_hh, after_call, replaced in ctx.cache.get("inplace_w", []):
            if replaced:
                raise Fail(
                    "forward replaces the parameter weight_hh (`self.weight_hh = ...`): the optimizer still holds "
                    "the old one, which then gets no gradient; keep the parameter and compute the dropped matrix "
                    "in a local variable, `w_hh = self.weight_hh * mask / (1-p)`"
                )
            unchanged(w_hh, after_call, "weight_hh", INPLACE_MESSAGE)
        for x, x_passed in ctx.cache.get("inplace_x", []):
            unchanged(x, x_passed, "the input tensor x")

    def rejects_bad_p(ctx):
        check_rejects_bad_p(
            ctx,
            lambda bad: _construct(ctx, case, bad),
            f"{getattr(ctx.candidate, '__name__', case.name)}(input_size, hidden_size, {{p}})",
        )

    def no_torch_dropout(ctx):
        run_even_if_wrong(ctx)
        ctx.fail_if_torch_dropout("write the weight mask yourself, e.g. with torch.rand_like(weight) >= p")

    return [
        Property("is an nn.Module with parameters weight_ih and weight_hh", 1, is_module),
        Property("eval mode is the plain tanh RNN; follows .train() / .eval()", 2, eval_and_train),
        Property("samples ONE dropped W_hh per call and uses it at every step", 2, one_mask_per_call),
        Property("drops a fraction p of the weights of W_hh", 2, drop_fraction),
        Property("scales the kept weights by 1/(1-p)", 2, scaling),
        Property("a fresh mask on every call, one value per weight", 1, fresh_mask),
        Property("p=1 uses a zero W_hh (no NaN), p=0 weight_hh itself", 1, edge_cases),
        Property("gradients reach weight_hh through the mask", 1, gradients),
        Property("leaves weight_hh and the input unchanged", 1, leaves_weights),
        Property("raises ValueError for p outside [0, 1]", 1, rejects_bad_p),
        Property("does not call torch's own dropout", 1, no_torch_dropout),
    ]


__all__ = ["RNNCase", "rnn_properties", "recover", "INPLACE_MESSAGE"]
