"""Structure of a learner's MLP: its Linear layers and the dropout sites of one traced forward pass.

Used by the ``ex02_regularize_mlp`` grader. :func:`trace_sites` records, with forward pre-hooks, the Linear
and dropout modules in the order one forward pass calls them, so ``nn.Sequential``, the course's ``MLP`` and
a hand-written ``nn.Module`` are read the same way: dropout before the first Linear is on the input, between
Linear k and k+1 after hidden layer k, after the last Linear on the logits. The property tests below
(``test(ctx)``, raising :class:`~.core.Fail` with a diagnosis) check the plain network's layers
784-256-256-10, dropout after every hidden activation, none on the logits, drop probabilities in a sensible
range, and train/eval behaviour. The learner's function is ``make(seed) -> nn.Module``.
"""

from __future__ import annotations

import copy
import functools
import math

import torch
from torch import nn

from ..config import seeded
from ..data import load_mnist
from ..layers import is_dropout_module, restored_modes
from .core import Fail

IN_FEATURES, HIDDEN, N_CLASSES = 784, (256, 256), 10
HIDDEN_P_RANGE = (0.1, 0.7)  # sensible drop probabilities after hidden activations (inclusive)
MAX_INPUT_P = 0.5  # more input dropout than this throws away most of every digit

__all__ = [
    "trace_sites",
    "build_model",
    "learner_model",
    "dropout_sites",
    "drops_in_train_mode",
    "returns_module",
    "keeps_layers",
    "hidden_sites",
    "not_on_logits",
    "sensible_p",
    "train_eval",
    "relu_activations",
]


def _is_dropout(module: nn.Module) -> bool:
    if is_dropout_module(module):
        return True
    return "dropout" in type(module).__name__.lower() and not any(True for _ in module.children())


def _p_of(module: nn.Module) -> float:
    p = getattr(module, "p", None)
    if isinstance(p, torch.Tensor) and p.numel() == 1:
        p = p.item()
    if isinstance(p, bool) or not isinstance(p, (int, float)) or math.isnan(float(p)):
        raise Fail(
            f"cannot read the drop probability of {type(module).__name__} (no numeric attribute `p`): use "
            "`nn.Dropout(p)` or `dropout_course.layers.Dropout(p)`"
        )
    return float(p)


def _eval_pass(model: nn.Module, x: torch.Tensor, handles: list) -> None:
    """One forward pass of ``model`` on ``x`` in eval mode without gradients, modes restored; then remove
    the hook ``handles`` (whatever happens)."""
    try:
        with restored_modes(model), torch.no_grad():
            model.eval()
            model(x)
    finally:
        for h in handles:
            h.remove()


def trace_sites(model: nn.Module, x: torch.Tensor) -> tuple[list[nn.Linear], list[list[float]]]:
    """The Linear layers of ``model`` in the order ``model(x)`` calls them, and the drop probabilities of
    the dropout modules called at each site: ``sites[0]`` before the first Linear (the input),
    ``sites[k]`` between Linear k and k+1 (hidden layer k), ``sites[-1]`` after the last (the logits).

    One forward pass in eval mode, without gradients; the model's modes are restored.
    """
    calls: list[nn.Module] = []
    handles = [
        m.register_forward_pre_hook(lambda module, args: calls.append(module))
        for m in model.modules()
        if isinstance(m, nn.Linear) or _is_dropout(m)
    ]
    _eval_pass(model, x, handles)
    linears: list[nn.Linear] = []
    sites: list[list[float]] = [[]]
    for module in calls:
        if isinstance(module, nn.Linear):
            linears.append(module)
            sites.append([])
        else:
            sites[-1].append(_p_of(module))
    return linears, sites


@functools.lru_cache(maxsize=1)
def _validation_images() -> torch.Tensor:
    return load_mnist(seed=0).val.X[:64].clone()  # (64, 784) real images


def _images(n: int = 16) -> torch.Tensor:
    return _validation_images()[:n].clone()


def build_model(ctx, seed: int) -> nn.Module:
    """``make_regularized_mlp(seed)`` inside ``seeded(seed)``, as experiments.compare builds models."""
    with seeded(seed):
        model = ctx.call(ctx.candidate, seed)
    name = getattr(ctx.candidate, "__name__", "make_regularized_mlp")
    if model is None:
        raise Fail(f"`{name}` returns None: did you forget `return model`?")
    if isinstance(model, type) and issubclass(model, nn.Module):
        raise Fail(
            f"`{name}` returns the class {model.__name__}, not a model: return an instance, e.g. `Net()`"
        )
    if type(model).__name__ == "MLPConfig":
        raise Fail(f"`{name}` returns an MLPConfig: build the model from it, `MLP(config)`")
    if not isinstance(model, nn.Module):
        raise Fail(f"`{name}` returns a {type(model).__name__}, expected a torch nn.Module")
    return model


def learner_model(ctx) -> nn.Module:
    """The learner's model for seed 0 (checked to be a fresh nn.Module mapping images to 10 logits)."""

    def compute():
        model = build_model(ctx, 0)
        again = build_model(ctx, 1)
        if again is model:
            raise Fail(
                "`make_regularized_mlp` returns the same model object on every call: build a new model "
                "inside the function (each seed must start from fresh weights)"
            )
        x = _images()
        model = copy.deepcopy(model)
        model.eval()
        with torch.no_grad():
            out = ctx.call(model, x, copy_args=False)
        if not isinstance(out, torch.Tensor):
            raise Fail(f"the model returns a {type(out).__name__}, expected a tensor of logits (N, 10)")
        if tuple(out.shape) != (len(x), N_CLASSES):
            raise Fail(
                f"the model maps a batch of {len(x)} images (N, 784) to shape {tuple(out.shape)}, expected "
                f"(N, 10) logits: keep the output layer Linear(256, 10) at the end"
            )
        if not torch.isfinite(out).all():
            raise Fail("the model's outputs contain NaN or inf")
        if out.min() >= 0 and torch.allclose(out.sum(1), torch.ones(len(x)), atol=1e-4):
            raise Fail(
                "the model returns probabilities (a softmax at the end): return the logits; the "
                "cross-entropy loss applies the softmax itself"
            )
        return model

    return ctx.memo("model", compute)


def dropout_sites(ctx):
    return ctx.memo("sites", lambda: trace_sites(learner_model(ctx), _images()))


def returns_module(ctx):
    learner_model(ctx)


def keeps_layers(ctx):
    linears, _ = dropout_sites(ctx)
    found = [(m.in_features, m.out_features) for m in linears]
    expected = [(IN_FEATURES, HIDDEN[0]), (HIDDEN[0], HIDDEN[1]), (HIDDEN[1], N_CLASSES)]
    if found != expected:
        shown = " -> ".join([str(found[0][0])] + [str(o) for _, o in found]) if found else "no Linear layer"
        raise Fail(
            f"the forward pass goes through Linear {shown}; keep the plain network's layers, Linear "
            "784 -> 256 -> 256 -> 10 (the exercise changes only the dropout, so the comparison is fair)"
        )


def _layers_ok(ctx):
    try:
        keeps_layers(ctx)
    except Fail:
        raise Fail('skipped: fix the layers first (see "keeps the plain network\'s layers")') from None


def _between_linears(model: nn.Module, x: torch.Tensor) -> list[tuple[torch.Tensor, torch.Tensor]]:
    """(output of Linear k, input of Linear k+1) for consecutive Linear calls of one eval-mode pass."""
    events: list[tuple[str, torch.Tensor]] = []
    handles = []
    for m in model.modules():
        if isinstance(m, nn.Linear):
            handles.append(m.register_forward_pre_hook(lambda mod, args: events.append(("in", args[0]))))
            handles.append(m.register_forward_hook(lambda mod, args, out: events.append(("out", out))))
    _eval_pass(model, x, handles)
    pairs = []
    for (kind_a, a), (kind_b, b) in zip(events, events[1:], strict=False):
        if kind_a == "out" and kind_b == "in":
            pairs.append((a, b))
    return pairs


_ACTIVATIONS = {
    "tanh": torch.tanh,
    "sigmoid": torch.sigmoid,
    "LeakyReLU": torch.nn.functional.leaky_relu,
    "GELU": torch.nn.functional.gelu,
    "ELU": torch.nn.functional.elu,
}


def relu_activations(ctx):
    """Each hidden Linear's output goes through a ReLU before the next Linear (eval mode: no dropout)."""
    _layers_ok(ctx)
    pairs = ctx.memo("between", lambda: _between_linears(learner_model(ctx), _images()))
    for k, (a, b) in enumerate(pairs, start=1):
        if a.shape != b.shape:
            continue
        if torch.allclose(b, torch.relu(a), rtol=1e-5, atol=1e-6):
            continue
        if torch.allclose(b, a, rtol=1e-5, atol=1e-6):
            raise Fail(
                f"no activation after hidden layer {k}: the plain network has a ReLU after each hidden Linear; "
                "without it the Linear layers collapse into one linear map (keep `nn.ReLU()`; dropout goes "
                "after it)"
            )
        for name, act in _ACTIVATIONS.items():
            if torch.allclose(b, act(a), rtol=1e-5, atol=1e-6):
                raise Fail(
                    f"hidden layer {k} uses {name} instead of ReLU: keep the plain network's ReLU (the exercise "
                    "changes only the dropout, so the comparison with the plain network is fair)"
                )
        if not _eval_is_deterministic(ctx):
            raise Fail(
                "not checked: dropout is still on in eval mode, so the values between the layers are random "
                '(see "drops in train mode, deterministic in eval mode")'
            )
        raise Fail(
            f"between hidden layer {k} and the next Linear the values are not ReLU(Linear output): keep "
            "Linear -> ReLU -> Dropout, with nothing else in between"
        )


def _eval_is_deterministic(ctx) -> bool:
    """Whether two eval-mode forward passes of (a copy of) the model on the same images agree."""

    def compute():
        model = copy.deepcopy(learner_model(ctx)).eval()
        x = _images(64)
        with torch.no_grad():
            return torch.equal(ctx.call(model, x, copy_args=False), ctx.call(model, x, copy_args=False))

    return ctx.memo("eval deterministic", compute)


# torch's dropouts that do not drop single units of (N, 256) activations: whole channels (Dropout2d is
# element-wise there, each (n, c) being a channel without extent), or SELU's self-normalising variant
_NOT_ELEMENTWISE = {
    "Dropout1d": "drops whole channels: on (N, 256) activations, which it reads as (channels, length), it "
    "zeroes whole examples",
    "Dropout3d": "drops whole channels (3-D feature maps): on (N, 256) activations, which it reads as "
    "(channels, depth), it zeroes whole examples",
    "AlphaDropout": "is meant for SELU networks (it sets dropped units to SELU's negative saturation and keeps "
    "a self-normalising mean and variance), not for ReLU activations",
    "FeatureAlphaDropout": "drops whole channels of a SELU network, not single units of a ReLU MLP",
}


def drops_in_train_mode(ctx) -> bool:
    """Whether two train-mode forward passes of (a copy of) the model on the same images differ."""
    model = copy.deepcopy(learner_model(ctx)).train()
    x = _images(64)
    with torch.no_grad():
        return not torch.equal(ctx.call(model, x, copy_args=False), ctx.call(model, x, copy_args=False))


def hidden_sites(ctx):
    _layers_ok(ctx)
    _, sites = dropout_sites(ctx)
    hidden = sites[1:-1]
    if not any(sites):
        if any(_is_dropout(m) for m in learner_model(ctx).modules()):
            raise Fail(
                "the model has dropout modules but its forward pass never calls them: use them in `forward` "
                "(or list them in the nn.Sequential)"
            )
        if ctx.torch_dropout_calls or drops_in_train_mode(ctx):
            raise Fail(
                "dropout is applied inside forward by something that is not a sub-module of the model "
                "(`F.dropout(...)`, or `nn.Dropout(p)(x)`, which creates a new module at every call): create "
                "the dropout modules (`nn.Dropout(p)` or `dropout_course.layers.Dropout(p)`) in `__init__` or "
                "the nn.Sequential, so that `model.eval()` switches them and the grader can read their p"
            )
        raise Fail("the model has no dropout at all: add `nn.Dropout(P_HIDDEN)` after each hidden ReLU")
    missing = [k + 1 for k, ps in enumerate(hidden) if not ps]
    if len(missing) == len(hidden) and sites[0]:
        raise Fail(
            "dropout only on the input pixels: the hidden units are where co-adaptation happens, and where "
            "dropout regularises most; add dropout after each hidden ReLU"
        )
    if len(missing) == len(hidden) and sites[-1]:
        raise Fail(
            "dropout only after the output layer (on the logits), none after the hidden layers: move it "
            "after each hidden ReLU"
        )
    if missing:
        raise Fail(
            f"no dropout after hidden layer {' and '.join(map(str, missing))}: every hidden layer's "
            "activations need dropout (after its ReLU, before the next Linear)"
        )
    zero = [k + 1 for k, ps in enumerate(hidden) if max(ps) == 0.0]
    if zero:
        raise Fail(
            f"the dropout after hidden layer {' and '.join(map(str, zero))} has p = 0, which drops nothing: "
            "set P_HIDDEN to the drop probability you chose"
        )
    for module in learner_model(ctx).modules():
        name = type(module).__name__
        if name in _NOT_ELEMENTWISE:
            raise Fail(
                f"{name} {_NOT_ELEMENTWISE[name]}: use `nn.Dropout(p)` (or the course's `Dropout(p)`), which "
                "drops single units"
            )


def not_on_logits(ctx):
    _layers_ok(ctx)
    _, sites = dropout_sites(ctx)
    if any(p > 0 for p in sites[-1]):
        raise Fail(
            f"dropout on the logits (p = {max(sites[-1]):g} after the output layer): it zeroes class scores at "
            "random, so the loss trains against noise in the predictions themselves. Dropout goes on the "
            "inputs of layers (input pixels, hidden activations), never after the last layer"
        )


def sensible_p(ctx):
    _layers_ok(ctx)
    _, sites = dropout_sites(ctx)
    lo, hi = HIDDEN_P_RANGE
    hidden = [p for ps in sites[1:-1] for p in ps if p > 0]
    for p in hidden:
        if p > hi:
            raise Fail(
                f"hidden p = {p:g} drops {p:.0%} of the hidden units at every step: p is the probability of "
                f"DROPPING (did you mean keep probability {p:g}, i.e. p = {1 - p:.2g}?). So much dropout "
                "under-fits; the usual hidden p is 0.5"
            )
        if p < lo:
            raise Fail(
                f"hidden p = {p:g} is too little to regularise this network measurably; the usual hidden p is "
                "0.5 (Srivastava et al., 2014)"
            )
    for p in sites[0]:
        if p > MAX_INPUT_P:
            raise Fail(
                f"input p = {p:g} drops {p:.0%} of every digit's pixels: p is the probability of DROPPING "
                f"(keep probability {p:g} would be p = {1 - p:.2g}); Hinton et al. (2012) drop 20% of the "
                "input (p = 0.2)"
            )


def train_eval(ctx):
    if not _eval_is_deterministic(ctx):
        raise Fail(
            "in eval mode two forward passes on the same images differ: dropout is still on at evaluation. "
            "`F.dropout(x, p)` defaults to training=True, and a dropout module created inside forward "
            "(`nn.Dropout(p)(x)`) is always in train mode: create the modules in `__init__` or the "
            "nn.Sequential, so that `model.eval()` switches them"
        )
    if not drops_in_train_mode(ctx):
        raise Fail("in train mode two forward passes give the same output: the model never drops anything")
