"""Grader of ``ex06_mc_dropout``: vectorised MC-dropout prediction and expected calibration error.

Checks: ``mc_predict`` (``f(model, x, T) -> (T, N, C)`` class probabilities from ``T`` dropout samples,
only the dropout modules sampled, BatchNorm on its running statistics, modes restored, one batched
forward pass), ``expected_calibration_error`` (``f(probs, labels, n_bins=10) -> float``, equal-width
bins; its properties are in :mod:`.calibration_checks`) and the hidden ``mc_predict_hidden`` (a network
with ``torch.nn.Dropout`` and other sizes).

The samples are compared with the reference :func:`dropout_course.uncertainty.mc_predict` through the
per-example mean over ``T`` (z-scores with the reference's own spread), so any correct implementation
passes whatever the order of its random calls.
"""

from __future__ import annotations

import functools

import numpy as np
import torch
from torch import nn

from ..layers import Dropout
from ..uncertainty import mc_predict as reference_mc_predict
from .calibration_checks import ece_properties
from .core import CheckSpec, Fail, Originality, Property

EXERCISE = "ex06_mc_dropout"
CHECKS: list[CheckSpec] = []  # this exercise\'s checks, in notebook order
Z_MAX = 5.5  # largest allowed |z| of a per-example, per-class mean over the T samples


# --------------------------------------------------------------------------- mc_predict

_MC_ORIGINALITY = Originality(
    "write MC-dropout prediction yourself",
    (
        "dropout_course.uncertainty:mc_predict",
        "dropout_course.uncertainty:mc_predict_loop",
        "dropout_course.uncertainty:mc_dropout_mode",
    ),
    torch_dropout=False,
)


def _model(kind: str = "course"):
    """A small classifier with BatchNorm (running statistics far from a batch's) and dropout; input x."""
    d, h, c, n = (5, 32, 3, 8) if kind == "course" else (6, 24, 4, 5)
    drop = Dropout(0.3) if kind == "course" else nn.Dropout(0.4)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(11 if kind == "course" else 12)
        model = nn.Sequential(nn.Linear(d, h), nn.BatchNorm1d(h), nn.ReLU(), drop, nn.Linear(h, c))
        with torch.no_grad():
            bn = model[1]
            bn.running_mean.copy_(torch.randn(h) * 0.5 + 1.0)
            bn.running_var.copy_(torch.rand(h) * 2 + 2.0)
            model[4].weight.mul_(3.0)
        x = torch.randn(n, d)
    model.eval()
    return model, x


@functools.lru_cache(maxsize=4)
def _reference_stats(kind: str, T: int = 3000):
    """Per-example, per-class mean and spread of the reference's MC-dropout probabilities (cached)."""
    model, x = _model(kind)
    ref = reference_mc_predict(model, x, T, softmax=True, seed=0).double()
    return ref.mean(0), ref.std(0)


class _ForwardCounter:
    """Batch sizes seen by the network's last layer (every way of running the network ends there)."""

    def __init__(self, model: nn.Sequential) -> None:
        self.sizes: list[int] = []
        self.handle = model[-1].register_forward_pre_hook(lambda m, args: self.sizes.append(len(args[0])))


def _set_modes(model: nn.Sequential, mode) -> None:
    """``mode``: True/False for the whole model, or "dropout-on" (eval, dropout in train: MC mode already
    on) / "batchnorm-eval" (train, BatchNorm in eval: a frozen-statistics fine-tuning setup)."""
    if mode == "dropout-on":
        model.eval()
        model[3].train()
    elif mode == "batchnorm-eval":
        model.train()
        model[1].eval()
    else:
        model.train(mode)


def _run(ctx, kind: str = "course", T: int = 50, mode=False):
    def compute():
        model, x = _model(kind)
        _set_modes(model, mode)
        bn_before = model[1].running_mean.clone()
        counter = _ForwardCounter(model)
        out = ctx.call(ctx.candidate, model, x.clone(), T, copy_args=False)
        counter.handle.remove()
        return model, x, out, bn_before, counter.sizes

    return ctx.memo(("run", kind, T, mode), compute)


def _shape(ctx, kind: str = "course", T: int = 50):
    model, x, out, _, _ = _run(ctx, kind, T)
    n, c = len(x), model[4].out_features
    if out is None:
        raise Fail("`mc_predict` returns None: did you forget the `return` statement?")
    if isinstance(out, tuple):
        raise Fail(f"`mc_predict` returns a tuple of {len(out)} items; return one (T, N, C) tensor")
    if not isinstance(out, torch.Tensor):
        raise Fail(f"`mc_predict` returns a {type(out).__name__}, expected a torch.Tensor of shape (T, N, C)")
    shape = tuple(out.shape)
    if shape == (T, n, c):
        return out
    if shape == (n, T, c):
        raise Fail(
            f"output has shape (N, T, C) = {shape}: the samples must come first, (T, N, C) = {(T, n, c)}. "
            "After `x.repeat(T, 1)` row t*N + i is copy t of example i, so reshape to (T, N, C)"
        )
    if shape == (T * n, c):
        raise Fail(f"output has shape (T*N, C) = {shape}: reshape it to (T, N, C) = {(T, n, c)}")
    if shape == (n, c):
        raise Fail(
            f"output has shape (N, C) = {shape}: return all T samples, shape (T, N, C) = {(T, n, c)}, "
            "not their mean (the mean and spread are computed from them later)"
        )
    raise Fail(f"output has shape {shape}, expected (T, N, C) = {(T, n, c)} for T={T}, N={n}, C={c}")


def _probabilities(ctx, kind: str = "course"):
    out = _shape(ctx, kind).detach().double()
    if not torch.isfinite(out).all():
        raise Fail("the output contains NaN or inf")
    if out.min() >= 0 and torch.allclose(out.sum(-1), torch.ones(()).double(), atol=1e-4):
        return
    if out.min() >= 0 and torch.allclose(out.sum(0), torch.ones(()).double(), atol=1e-4):
        raise Fail("softmax over the wrong dimension (the samples, dim 0): use `torch.softmax(out, dim=-1)`")
    if out.min() >= 0 and torch.allclose(out.sum(1), torch.ones(()).double(), atol=1e-4):
        raise Fail("softmax over the wrong dimension (the examples, dim 1): use `torch.softmax(out, dim=-1)`")
    if out.max() <= 0 and torch.allclose(out.exp().sum(-1), torch.ones(()).double(), atol=1e-4):
        raise Fail(
            "the outputs are log-probabilities (`log_softmax`): return probabilities, "
            "`torch.softmax(logits, dim=-1)`"
        )
    raise Fail(
        "the outputs are not probabilities (rows do not sum to 1 over the classes, or are negative): these "
        "are logits; apply `torch.softmax(logits, dim=-1)`"
    )


def _samples_differ_with_torch_dropout(ctx) -> bool:
    """Whether the candidate samples on a network whose dropout is torch's ``nn.Dropout`` (any failure: no)."""
    try:
        _, _, out, _, _ = _run(ctx, "torch", 50)
        return isinstance(out, torch.Tensor) and out.dim() == 3 and float(out.detach().std(0).max()) > 1e-7
    except Exception:  # a crash or a wrong output on that network is diagnosed by its own check
        return False


def _dropout_on(ctx, kind: str = "course"):
    out = _shape(ctx, kind).detach().double()
    spread = out.std(0)  # (N, C)
    if float(spread.max()) < 1e-7:
        if kind == "course" and _samples_differ_with_torch_dropout(ctx):
            raise Fail(
                "all T samples are identical: the course's `Dropout` module never ran in train mode, while "
                "torch's `nn.Dropout` in another network does. The course's "
                "`Dropout` is not an `nn.Dropout` subclass, so `isinstance(m, nn.Dropout)` misses it: look for "
                '"Dropout" in `type(m).__name__` (or test for both classes)'
            )
        raise Fail(
            "all T samples are identical: dropout is not active. Put the dropout modules in train mode for "
            "the passes (and run T different copies, e.g. `x.repeat(T, 1)`, not one pass copied T times)"
        )
    if float(spread.min(dim=1).values.min()) < 1e-7:
        raise Fail("some examples have T identical samples: every copy of every example needs its own mask")


def _distribution(ctx, kind: str = "course"):
    model, x, out, bn_before, _ = _run(ctx, kind, 50)
    out = _shape(ctx, kind).detach().double()
    if not torch.equal(model[1].running_mean, bn_before):
        raise Fail(
            "BatchNorm ran in train mode: it normalised with the statistics of the batch and changed its "
            "running statistics. Call `model.eval()` first and switch ONLY the dropout modules to train mode"
        )
    trained, _, _, trained_bn_before, _ = _run(ctx, kind, 50, True)
    if not torch.equal(trained[1].running_mean, trained_bn_before):
        raise Fail(
            "when the model is in train mode before the call (e.g. during training), BatchNorm stays in train "
            "mode: it normalises with the batch's statistics and changes its running statistics. Call "
            "`model.eval()` first, then switch ONLY the dropout modules to train mode"
        )
    _dropout_on(ctx, kind)
    mean, std = _reference_stats(kind)
    z = (out.mean(0) - mean) / (std / np.sqrt(len(out)) + 1e-6)
    if float(z.abs().max()) <= Z_MAX:
        return
    if torch.allclose(out.mean(0).sum(-1), torch.ones(()).double(), atol=1e-4):
        swapped = out.reshape(-1, out.shape[-1]).reshape(len(x), len(out), -1).transpose(0, 1).mean(0)
        if float(((swapped - mean) / (std / np.sqrt(len(out)) + 1e-6)).abs().max()) <= Z_MAX:
            raise Fail(
                "out[:, i] does not hold the samples of example i: the repeated batch and the reshape do not "
                "match. With `x.repeat(T, 1)` (copies one after the other) reshape (T*N, C) -> (T, N, C); "
                "`repeat_interleave` would need (N, T, C) and a transpose"
            )
    raise Fail(
        f"the mean of the samples differs from MC dropout's (largest z-score {float(z.abs().max()):.1f}): "
        "the model in eval mode, only its dropout modules in train mode, one softmax per sample"
    )


def _restores(ctx, kind: str = "course"):
    for mode in (False, True, "dropout-on", "batchnorm-eval"):
        model, _, out, _, _ = _run(ctx, kind, 50, mode)
        expected, _ = _model(kind)
        _set_modes(expected, mode)
        wrong = [
            (type(m).__name__, m.training)
            for m, e in zip(model.modules(), expected.modules(), strict=True)
            if m.training != e.training
        ]
        if not wrong:
            continue
        names = sorted({n for n, _ in wrong})
        now = "train" if wrong[0][1] else "eval"
        if isinstance(mode, bool):
            before = f"the model was in {'train' if mode else 'eval'} mode before the call"
        else:
            before = (
                "before the call the modules were in different modes (the model in eval mode, its dropout in "
                "train mode)"
                if mode == "dropout-on"
                else "before the call the modules were in different modes (the model in train mode, its "
                "BatchNorm in eval mode)"
            )
        raise Fail(
            f"{before}, but afterwards {', '.join(names)} {'is' if len(names) == 1 else 'are'} in {now} mode: "
            "save EVERY module's own mode (`{m: m.training for m in model.modules()}`) and restore each one "
            "at the end; `model.train(was_training)` sets all modules alike"
        )


def _no_grad(ctx, kind: str = "course"):
    model, x, out, _, _ = _run(ctx, kind, 50)
    _shape(ctx, kind)
    if out.requires_grad or out.grad_fn is not None:
        raise Fail(
            "the samples carry gradients (the output has a grad_fn): predictions need none; wrap the forward "
            "pass in `with torch.no_grad():` (it also saves the memory of T copies of the activations)"
        )


def _vectorised(ctx, kind: str = "course"):
    _, x, _, _, sizes = _run(ctx, kind, 50)
    if len(sizes) >= 50:
        raise Fail(
            f"the model ran {len(sizes)} times on batches of {sizes[0]} rows: a Python loop over T. Repeat the "
            "batch T times (`x.repeat(T, 1)`, shape (T*N, ...)) and run ONE forward pass"
        )
    if not sizes or max(sizes) <= len(x):
        raise Fail(f"the model never ran on more than N={len(x)} rows: run it once on the (T*N, ...) batch")


CHECKS.append(
    CheckSpec(
        "mc_predict",
        [
            Property("returns a tensor of shape (T, N, C)", 2, _shape),
            Property("returns probabilities (softmax over the classes)", 1, _probabilities),
            Property("dropout is on: the T samples differ", 2, _dropout_on),
            Property(
                "samples have MC dropout's mean; BatchNorm keeps its running statistics", 2, _distribution
            ),
            Property("restores the train/eval mode of every module", 1, _restores),
            Property("one batched forward pass (no Python loop over T)", 1, _vectorised),
            Property("computed without gradients (torch.no_grad)", 1, _no_grad),
        ],
        originality=_MC_ORIGINALITY,
    ),
)
CHECKS.append(
    CheckSpec(
        "mc_predict_hidden",
        [
            Property("shape (T, N, C), torch nn.Dropout network", 1, lambda c: _shape(c, "torch")),
            Property("probabilities", 1, lambda c: _probabilities(c, "torch")),
            Property("dropout is on: the T samples differ", 1, lambda c: _dropout_on(c, "torch")),
            Property("MC dropout's mean, BatchNorm in eval mode", 2, lambda c: _distribution(c, "torch")),
            Property("modes restored", 1, lambda c: _restores(c, "torch")),
            Property("one batched forward pass", 1, lambda c: _vectorised(c, "torch")),
            Property("no gradients", 1, lambda c: _no_grad(c, "torch")),
        ],
        hidden=True,
        originality=_MC_ORIGINALITY,
    ),
)

CHECKS.append(
    CheckSpec(
        "expected_calibration_error",
        ece_properties(),
        originality=Originality(
            "compute the ECE yourself",
            (
                "dropout_course.uncertainty:expected_calibration_error",
                "dropout_course.uncertainty:reliability_diagram",
            ),
            torch_dropout=False,
        ),
    ),
)
