r"""Properties of a learner's tanh RNN with weight drop (DropConnect on the recurrent matrix, AWD-LSTM).

The candidate is a class ``WeightDropRNN(input_size, hidden_size, p)`` with two parameters, ``weight_ih``
``(hidden, input)`` and ``weight_hh`` ``(hidden, hidden)`` (no bias), whose ``forward(x)`` runs

.. math::
    h_0 = 0, \quad h_t = \tanh(x_t W_{ih}^T + h_{t-1} \tilde W^T), \quad
    \tilde W = \frac{M \odot W_{hh}}{1 - p},\ M_{ij} \sim \mathrm{Bernoulli}(1 - p)

over ``x`` ``(T, N, input)`` and returns every :math:`h_t`, ``(T, N, hidden)``: ONE mask per forward call,
used at every step, and :math:`\tilde W = W_{hh}` in eval mode.

The grader sets the weights and recovers, from the outputs alone, the recurrent matrix used at each step
(:mod:`.rnn_recovery`); the recovered matrices are judged by the shared properties of any dropout mask
(:mod:`.mask_properties`: binomial drop fraction, ``1/(1-p)`` scale, fresh on every call, ...) plus "constant
over the steps", so any correct implementation passes whatever the order of its random calls.
"""

from __future__ import annotations

import torch
from torch import nn

from .core import CheckContext, Fail, Property, fail_if_torch_dropout_module
from .mask_properties import Adapter, Observation, instance, mask_properties, observed, record_unchanged
from .masks import as_tensor_output, diagnose_eval, make_input, unchanged
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


def _weight_left_alone(w_hh: torch.Tensor, after_call: torch.Tensor, replaced: bool) -> None:
    if replaced:
        raise Fail(
            "forward replaces the parameter weight_hh (`self.weight_hh = ...`): the optimizer still holds "
            "the old one, which then gets no gradient; keep the parameter and compute the dropped matrix "
            "in a local variable, `w_hh = self.weight_hh * mask / (1-p)`"
        )
    unchanged(w_hh, after_call, "weight_hh", INPLACE_MESSAGE)


def _forward(ctx: CheckContext, case: RNNCase, module: nn.Module, x: torch.Tensor, w_hh: torch.Tensor):
    """Call the module on a copy of ``x``; record whether ``x`` and ``weight_hh`` survived (before the output is
    checked, so that those properties are judged even when the output is wrong)."""
    x_passed = x.clone()
    before = _parameters(module, case)["weight_hh"]
    y = ctx.call(module, x_passed, copy_args=False)
    replaced = dict(module.named_parameters()).get("weight_hh") is not before
    after_call = before.detach().clone()
    record_unchanged(ctx, lambda: _weight_left_alone(w_hh, after_call, replaced))
    record_unchanged(ctx, lambda: unchanged(x, x_passed, "the input tensor x"))
    return _as_states(y, x, case)


def _run(ctx: CheckContext, case: RNNCase, p: float, training: bool = True, seed: int = 0, tag: str = ""):
    """Call the check's module for ``p`` in the given mode, its weights set for ``seed``; returns
    ``(x, w_ih, w_hh, y)``, the output detached."""

    def compute():
        module = instance(ctx, p, lambda: _construct(ctx, case, p))
        w_ih, w_hh = case_weights(case, p, seed)
        _set_weights(module, case, w_ih, w_hh)
        ctx.call(module.train if training else module.eval, copy_args=False)
        x = case_inputs(case, seed)
        return x, w_ih, w_hh, _forward(ctx, case, module, x, w_hh).detach()

    return ctx.memo(("rnn", p, training, seed, tag), compute)


def _matrices(
    ctx, case: RNNCase, p: float, training: bool = True, seed: int = 0, tag: str = ""
) -> torch.Tensor:
    """The ratios ``W_used / W_hh`` at steps 2..T, ``(T-1, H, H)``, of one call."""
    x, w_ih, w_hh, y = _run(ctx, case, p, training, seed, tag)
    ratios = weight_ratios(recover(case, x, w_ih, y, p), w_hh)
    check_recurrence(ratios, p)
    return ratios


def _observe(ctx, case: RNNCase, p: float, seed: int = 0, tag: str = "") -> Observation:
    """A training-mode call: units are the weights of the matrix used at each step, ``(T-1, H, H)``."""
    ratios = _matrices(ctx, case, p, True, seed, tag)
    return Observation((ratios == 0).numpy(), ratios[ratios != 0].numpy(), (ratios,))


def _nothing_dropped(obs: Observation, p: float) -> None:
    (ratios,) = obs.data
    if torch.allclose(ratios, torch.ones_like(ratios), rtol=1e-4):
        raise Fail(f"nothing is dropped at p={p:g} in training mode: every step used weight_hh itself")
    raise Fail(f"nothing is dropped at p={p:g} in training mode: no weight of W_hh is 0")


def _check_identity(ctx, case: RNNCase, p: float, training: bool, seed: int) -> None:
    """Fail unless every step used ``weight_hh`` itself (eval mode, or p=0)."""
    try:
        ratios = _matrices(ctx, case, p, training, seed)
    except Fail as exc:
        if training and "recurrent term" in str(exc):
            raise Fail(
                f"p={p:g} should use weight_hh unchanged (nothing dropped, scale 1/(1-{p:g}) = 1), but every step "
                "is tanh(x_t W_ih^T), as if W_hh were 0"
            ) from None
        raise
    if training:
        if not torch.allclose(ratios, torch.ones_like(ratios), rtol=1e-4, atol=0):
            raise Fail(f"p={p:g} should use weight_hh unchanged (nothing dropped, scale 1/(1-{p:g}) = 1)")
        return
    ratios = one_matrix(ratios)
    diagnose_eval(
        ratios,
        torch.ones_like(ratios),
        p,
        "in eval mode",
        "weights of W_hh",
        "use weight_hh itself in eval mode",
    )


# --------------------------------------------------------------------------- properties


def rnn_properties(case: RNNCase, p_values=(0.2, 0.7)) -> list[Property]:
    """The properties of a ``WeightDropRNN`` class (see the module docstring): the shared mask properties of
    :mod:`.mask_properties` on the recovered recurrent matrices, and "one W_hh per call, used at every step"."""

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

    def one_mask_per_call(ctx):
        one_matrix(observed(ctx, adapter, 0.5).data[0])

    def gradients(ctx):
        p = 0.4
        module = _construct(ctx, case, p)
        w_ih, w_hh = case_weights(case, p, 3)
        _set_weights(module, case, w_ih, w_hh)
        ctx.call(module.train, copy_args=False)
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

    adapter = Adapter(
        unit="weights of W_hh",
        one_unit="weight of W_hh",
        kept="kept weights of W_hh",
        run=lambda ctx, p, training=True, seed=0, tag="": _run(ctx, case, p, training, seed, tag),
        observe=lambda ctx, p, seed, tag: _observe(ctx, case, p, seed, tag),
        check_identity=lambda ctx, p, training, seed: _check_identity(ctx, case, p, training, seed),
        mistakes={
            "same mask": "the same mask on every call: two forward calls dropped exactly the same weights of "
            "W_hh; sample a new mask inside forward (not in __init__, and do not reseed the RNG)",
            "p1": "p=1 should drop every weight of W_hh; {kept:.0%} are kept",
            "p1 result": "use a matrix of zeros",
            "torch dropout": "write the weight mask yourself, e.g. with torch.rand_like(weight) >= p",
        },
        patterns=[
            (
                2,
                "whole rows of W_hh are dropped (a mask of shape (hidden, 1)): that drops units of the new "
                "state, not single weights; draw one mask value per weight, a mask of W_hh's shape "
                "(hidden, hidden)",
            ),
            (
                1,
                "whole columns of W_hh are dropped (a mask of shape (hidden,) or (1, hidden)): that drops units "
                "of h_(t-1), not single weights; draw one mask value per weight, of W_hh's shape "
                "(hidden, hidden)",
            ),
        ],
        eval_name="eval mode is the plain tanh RNN",
        eval_p=(0.5,),
        toggle=True,
        independence="a fresh mask on every call, one value per weight",
        edge="p=1 uses a zero W_hh (no NaN), p=0 weight_hh itself",
        inplace="leaves weight_hh and the input unchanged",
        nothing_dropped=_nothing_dropped,
        build=lambda ctx, p: _construct(ctx, case, p),
        build_text=lambda ctx: (
            f"{getattr(ctx.candidate, '__name__', case.name)}(input_size, hidden_size, {{p}})"
        ),
        leading=[Property("is an nn.Module with parameters weight_ih and weight_hh", 1, is_module)],
        extra=[Property("samples ONE dropped W_hh per call and uses it at every step", 2, one_mask_per_call)],
        trailing=[Property("gradients reach weight_hh through the mask", 1, gradients)],
    )
    return mask_properties(adapter, p_values)


__all__ = ["RNNCase", "rnn_properties", "recover", "INPLACE_MESSAGE"]
