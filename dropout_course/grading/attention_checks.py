"""Properties of a learner's scaled dot-product attention with (inverted) dropout on the attention weights.

The candidate is ``f(q, k, v, p, training=True) -> (output, weights)`` with ``q (..., T_q, d)``,
``k (..., T_k, d)``, ``v (..., T_k, d_v)``; ``weights (..., T_q, T_k)`` are the attention weights AFTER
dropout and ``output = weights @ v``. On the test inputs every reference weight
``softmax(q k^T / sqrt(d))`` is far from 0, so a weight is dropped exactly when it is 0 and a kept weight's
scale is its ratio to the reference; drop fractions are judged with the binomial spread, so any correct
implementation passes whatever the order of its random calls. The weights are the units of an adapter to the
shared properties of :mod:`.mask_properties`; this module adds what only attention has (plain softmax
attention in eval mode, ``output = weights @ v``, no renormalised rows, gradients to q, k and v).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import torch

from .core import CheckContext, Fail, Property
from .mask_properties import Adapter, Observation, mask_properties, observed, record_unchanged
from .masks import check_finite, make_input, unchanged

ATOL = 1e-5


@dataclass
class AttentionCase:
    """Test sizes: leading (batch, head) dims, query and key lengths, key and value widths."""

    fn_name: str
    batch: tuple[int, ...] = (40,)
    t_q: int = 10
    t_k: int = 14
    d: int = 8
    d_v: int = 6

    def shapes(self) -> dict[str, tuple[int, ...]]:
        b = self.batch
        return {
            "q": (*b, self.t_q, self.d),
            "k": (*b, self.t_k, self.d),
            "v": (*b, self.t_k, self.d_v),
            "output": (*b, self.t_q, self.d_v),
            "weights": (*b, self.t_q, self.t_k),
        }


def reference_weights(q: torch.Tensor, k: torch.Tensor, scale: float | None = None, dim: int = -1):
    """softmax(q k^T / scale) in float64 (scale defaults to sqrt(d))."""
    scale = math.sqrt(q.shape[-1]) if scale is None else scale
    return torch.softmax(q.double() @ k.double().transpose(-2, -1) / scale, dim=dim)


def _close(a: torch.Tensor, b: torch.Tensor, rtol: float = 1e-4) -> bool:
    return a.shape == b.shape and torch.allclose(a.double(), b.double(), rtol=rtol, atol=ATOL)


def _as_pair(result, case: AttentionCase) -> tuple[torch.Tensor, torch.Tensor]:
    """Check that ``result`` is ``(output, weights)`` with the right shapes; Fail naming the mistake."""
    name, shapes = case.fn_name, case.shapes()
    if result is None:
        raise Fail(f"`{name}` returns None: did you forget `return output, weights`?")
    if isinstance(result, torch.Tensor):
        raise Fail(
            f"`{name}` returns one tensor of shape {tuple(result.shape)}; return the pair `(output, weights)`: "
            "the attention output and the attention weights after dropout"
        )
    if not isinstance(result, (tuple, list)) or len(result) != 2:
        what = f"{len(result)} items" if isinstance(result, (tuple, list)) else f"a {type(result).__name__}"
        raise Fail(f"`{name}` returns {what}; return the pair `(output, weights)`")
    for item, label in zip(result, ("output", "weights"), strict=True):
        if isinstance(item, np.ndarray):
            raise Fail(f"`{name}` returns the {label} as a NumPy array; return torch tensors")
        if not isinstance(item, torch.Tensor):
            raise Fail(f"`{name}` returns the {label} as a {type(item).__name__}, expected a torch.Tensor")
    out, w = result
    got = (tuple(out.shape), tuple(w.shape))
    if got == (shapes["output"], shapes["weights"]):
        return out, w
    if got == (shapes["weights"], shapes["output"]):
        raise Fail("returns (weights, output): return the output first, `return output, weights`")
    b = case.batch
    if tuple(w.shape) == (*b, case.t_k, case.t_q):
        raise Fail(
            f"the weights have shape {tuple(w.shape)} = (..., T_k, T_q): transposed; the scores are "
            f"q @ k.transpose(-2, -1), one row per query, shape (..., T_q, T_k) = {shapes['weights']}"
        )
    raise Fail(
        f"wrong shapes: output {got[0]} and weights {got[1]}; expected output {shapes['output']} "
        f"(..., T_q, d_v) and weights {shapes['weights']} (..., T_q, T_k) for q {shapes['q']}, "
        f"k {shapes['k']}, v {shapes['v']}"
    )


def _run(ctx: CheckContext, case: AttentionCase, p: float, training: bool = True, seed: int = 0, tag=""):
    """Call once on fresh inputs; return (q, k, v, output, weights), detached, after checking the types."""

    def compute():
        s = case.shapes()
        qkv = [make_input(s[n], seed + 100 * i) for i, n in enumerate("qkv")]
        passed = [t.clone() for t in qkv]
        result = ctx.call(ctx.candidate, *passed, p, training, copy_args=False)
        out, w = _as_pair(result, case)
        for name, before, after in zip("qkv", qkv, passed, strict=True):
            record_unchanged(ctx, lambda b=before, a=after, n=name: unchanged(b, a, f"the input `{n}`"))
        return (*qkv, out.detach(), w.detach())

    return ctx.memo(("attention", case.fn_name, p, training, seed, tag), compute)


def _observe(ctx, case: AttentionCase, p: float, seed: int = 0, tag: str = "") -> Observation:
    """A training-mode call: units are the attention weights, (samples, T_q, T_k); Fail on NaN or inf."""
    q, k, v, out, w = _run(ctx, case, p, True, seed, tag)
    bad = ~torch.isfinite(w)
    if 0 < p < 1 and bad.any() and (bad == bad.all(-1, keepdim=True)).all() and (w[~bad] == 0).any():
        raise Fail(
            f"whole rows of weights are NaN at p={p:g} ({float(bad.all(-1).double().mean()):.1%} of the rows): "
            "masking scores with -inf before the softmax, or renormalising each row after dropout, gives 0/0 "
            "when every weight of a row is dropped. Apply inverted dropout to the softmax output: multiply by "
            "the mask and divide by 1-p"
        )
    if p == 1 and not (torch.isfinite(w).all() and torch.isfinite(out).all()):
        raise Fail(
            "p=1 gives NaN: 0/0 (from dividing by 1-p = 0, by a row sum of 0, or a softmax over scores "
            "that are all -inf); when p == 1 every weight is dropped, so return zeros"
        )
    check_finite(w, p)
    check_finite(out, p)
    kept = w != 0
    ratios = (w.double()[kept] / reference_weights(q, k)[kept]).numpy()
    return Observation((w == 0).numpy().reshape(-1, case.t_q, case.t_k), ratios, (q, k, v, out, w))


# --------------------------------------------------------------------------- diagnoses


def _diagnose_output(out, w, v, p: float, mode: str) -> None:
    """Fail unless ``out == w @ v`` (float32 tolerance)."""
    if _close(out, w.double() @ v.double()):
        return
    zeros = float((out == 0).double().mean())
    if zeros > 0.5 * p > 0:
        raise Fail(
            f"dropout is applied to the output (weights @ v) {mode}: {zeros:.0%} of the output values are 0; "
            "drop entries of the attention weights (after the softmax), then multiply by v"
        )
    raise Fail(
        f"the output is not weights @ v {mode}: return the weights you multiplied with v (the weights after "
        "dropout) and `output = weights @ v`"
    )


def _diagnose_plain(w, q, k, p: float, mode: str) -> None:
    """Fail unless ``w`` is plain softmax(q k^T / sqrt(d)); name the usual mistakes."""
    ref = reference_weights(q, k)
    w = w.double()
    if _close(w, ref):
        return
    zeros = float((w == 0).double().mean())
    if zeros == 1:
        raise Fail(f"every attention weight is 0 {mode}; expected plain softmax(q k^T / sqrt(d))")
    if zeros > 0:
        raise Fail(
            f"dropout is still applied {mode}: {zeros:.0%} of the attention weights are 0; return plain "
            "attention, softmax(q k^T / sqrt(d)) and its weights @ v"
        )
    ratio = float((w / ref).median())
    if _close(w, ref * ratio):
        if abs(ratio - (1 - p)) < 1e-4:
            raise Fail(
                f"the weights are scaled by (1-p) {mode}: that is the old, non-inverted dropout; the kept "
                "weights were already divided by (1-p) in training, so use the plain softmax weights"
            )
        if p < 1 and abs(ratio - 1 / (1 - p)) < 1e-4:
            raise Fail(f"rescaling by 1/(1-p) is still applied {mode}: use the plain softmax weights")
    d = q.shape[-1]
    for scale, message in (
        (1.0, f"the scores are not scaled: divide q @ k^T by sqrt(d) = sqrt({d}) before the softmax"),
        (float(d), f"the scores are divided by d = {d} instead of sqrt(d) = {math.sqrt(d):.3g}"),
    ):
        if _close(w, reference_weights(q, k, scale)):
            raise Fail(message)
    if _close(w, reference_weights(q, k, dim=-2)):
        raise Fail(
            "softmax over the wrong dimension (the queries, dim=-2): normalise over the keys, "
            "`torch.softmax(scores, dim=-1)`, so that each query's row of weights sums to 1"
        )
    scores = q.double() @ k.double().transpose(-2, -1) / math.sqrt(d)
    if _close(w, scores):
        raise Fail("the weights are the raw scores q k^T / sqrt(d): apply `torch.softmax(scores, dim=-1)`")
    raise Fail(
        f"the attention weights differ from softmax(q k^T / sqrt(d)) {mode} (largest difference "
        f"{float((w - ref).abs().max()):.3g})"
    )


def _diagnose_nothing_dropped(q, k, v, out, w, p: float) -> None:
    """No weight is 0 in training mode: say where the dropout went instead."""
    ref = reference_weights(q, k)
    w64 = w.double()
    if _close(w64, ref):
        if _close(out, ref @ v.double()):
            raise Fail(f"nothing is dropped in training mode: no attention weight is 0 at p={p:g}")
        _diagnose_output(out, w, v, p, "in training mode")
    if torch.allclose(w64.sum(-1), torch.ones((), dtype=torch.float64), atol=1e-4):
        raise Fail(
            "no attention weight is 0, but the weights differ from softmax(q k^T / sqrt(d)) and every row "
            "still sums to 1: dropout was applied before the softmax (to the scores, or to q or k); apply it "
            "to the weights after the softmax"
        )
    raise Fail(f"no attention weight is 0 at p={p:g}: in training mode a fraction p of them must be 0")


def _kept_ratios(ctx, case: AttentionCase, obs: Observation, p: float) -> np.ndarray:
    """Kept weights divided by softmax(q k^T / sqrt(d)); if those ratios are not constant, by the learner's own
    eval-mode weights when they are, so that a softmax mistake is blamed once (by the eval property).
    Fail first if the kept weights were renormalised (every row sums to the same value)."""
    q, k, v, out, w = obs.data
    w = w.double()
    kept = w != 0
    mixed = kept.any(-1) & ~kept.all(-1)  # rows with dropped and kept weights
    sums = w.sum(-1)[mixed]
    if sums.numel() > 1 and torch.allclose(sums, sums[0].expand_as(sums), rtol=1e-5, atol=1e-7):
        raise Fail(
            f"every row of the dropped weights sums to the same {float(sums[0]):.4g}: the kept weights "
            "were renormalised (dropout before the softmax, e.g. masking scores with -inf, or dividing "
            "by the row sum). Apply inverted dropout to the softmax output: kept weights are divided "
            "by 1-p, so a row sums to 1 only on average"
        )
    ratios = obs.ratios
    if ratios.size == 0 or ratios.max() - ratios.min() <= 1e-3 * np.abs(ratios).max():
        return ratios
    try:
        _, _, _, _, w_eval = _run(ctx, case, p, training=False)
    except Fail:
        return ratios
    w_eval = w_eval.double()
    if w_eval.shape == w.shape and bool((w_eval > 0).all()) and bool(torch.isfinite(w_eval).all()):
        own = w[kept] / w_eval[kept]
        if float(own.max() - own.min()) <= 1e-3 * float(own.abs().max()):
            return own.numpy()
    return ratios


# --------------------------------------------------------------------------- properties


def attention_properties(case: AttentionCase, p_values=(0.2, 0.7)) -> list[Property]:
    """The properties of ``attention_with_dropout`` on the sizes of ``case``: the shared mask properties of
    :mod:`.mask_properties` on the attention weights, and "the output is the dropped weights @ v"."""

    def check_identity(ctx, p: float, training: bool, seed: int) -> None:
        q, k, v, out, w = _run(ctx, case, p, training, seed)
        check_finite(w, p)
        mode = f"at p={p:g} in training mode" if training else "with training=False"
        _diagnose_plain(w, q, k, p, mode)
        _diagnose_output(out, w, v, p, mode)

    def nothing_dropped(obs: Observation, p: float) -> None:
        _diagnose_nothing_dropped(*obs.data, p)

    def output_uses_weights(ctx):
        p = p_values[0]
        q, k, v, out, w = observed(ctx, adapter, p, explain=True).data
        if not _close(out, w.double() @ v.double()) and _close(out, reference_weights(q, k) @ v.double()):
            raise Fail(
                "the output is computed from the weights before dropout: multiply v by the dropped weights "
                "(the ones you return)"
            )
        _diagnose_output(out, w, v, p, "in training mode")

    def check_p1(obs: Observation) -> None:
        if not (obs.data[3] == 0).all():
            raise Fail("p=1 should drop every attention weight: weights and output all zeros")

    def dtype_and_grad(ctx):
        s = case.shapes()
        qkv = [make_input(s[n], 7 + i, torch.float64).requires_grad_(True) for i, n in enumerate("qkv")]
        out, w = _as_pair(ctx.call(ctx.candidate, *qkv, 0.4, True, copy_args=False), case)
        if out.dtype != torch.float64 or w.dtype != torch.float64:
            raise Fail(
                f"wrong dtype: float64 inputs give {out.dtype} output and {w.dtype} weights; build the mask "
                "with the weights' dtype (e.g. `torch.rand_like(weights)`)"
            )
        if not out.requires_grad:
            raise Fail(
                "the output is detached from autograd (NumPy round trip, .detach(), .data or torch.no_grad?): "
                "gradients cannot flow back to q, k and v"
            )
        keep = (w.detach() != 0).double()
        ref_out = (reference_weights(*qkv[:2]) * keep / 0.6) @ qkv[2]
        if not _close(out.detach(), ref_out.detach()):
            raise Fail(
                "cannot check the gradients: the output differs from (softmax(q k^T / sqrt(d)) * mask/(1-p)) @ v "
                "with the mask of the returned weights (see the properties above)"
            )
        g = make_input(out.shape, 9, torch.float64)
        try:
            grads = torch.autograd.grad((out * g).sum(), qkv, allow_unused=True)
        except RuntimeError as exc:
            raise Fail(f"backpropagating through the output failed: {exc}") from None
        expected = torch.autograd.grad((ref_out * g).sum(), qkv)
        for name, got, exp in zip("qkv", grads, expected, strict=True):
            if got is None:
                raise Fail(f"no gradient reaches `{name}`: is part of the computation detached?")
            if not torch.allclose(got, exp, rtol=1e-4, atol=1e-8):
                raise Fail(
                    f"the gradient with respect to `{name}` is wrong: it should flow through the softmax and "
                    "the same mask/(1-p) that made the output"
                )

    weights = case.shapes()["weights"]
    adapter = Adapter(
        unit="attention weights",
        one_unit="weight",
        kept="kept attention weights",
        run=lambda ctx, p, training=True, seed=0, tag="": _run(ctx, case, p, training, seed, tag),
        observe=lambda ctx, p, seed, tag: _observe(ctx, case, p, seed, tag),
        check_identity=check_identity,
        mistakes={
            "same mask": "the same mask on every call: two calls on the same inputs dropped exactly the same "
            "weights; draw a new random mask inside each call (do not reseed the RNG or reuse a stored mask)",
            "p1": "p=1 should drop every attention weight: weights and output all zeros",
            "p1 result": "the weights and the output are zeros",
            "torch dropout": "the exercise is to write the mask yourself, e.g. with torch.rand_like or "
            "torch.bernoulli",
        },
        patterns=[
            (
                0,
                "one mask is shared by the whole batch: every sample has the same attention weights dropped; "
                f"draw a mask of the weights' full shape {weights}",
            ),
            (
                2,
                "whole rows are dropped: each query keeps all its keys or none (a mask of shape (..., T_q, 1)); "
                "draw one mask value per weight, shape (..., T_q, T_k)",
            ),
            (
                1,
                "whole keys are dropped for every query (a mask of shape (..., 1, T_k)); draw one mask value "
                "per weight, shape (..., T_q, T_k)",
            ),
        ],
        returns=f"returns (output, weights) of shapes {case.shapes()['output']}, {weights}",
        eval_name="with training=False: plain softmax(q k^T / sqrt(d)) attention",
        eval_points=2,
        eval_p=(0.0, p_values[1]),
        independence="a fresh, independent mask for each weight, sample and call",
        edge="p=1 gives zeros (no NaN), p=0 plain attention",
        inplace="does not modify q, k, v",
        nothing_dropped=nothing_dropped,
        kept_ratios=lambda ctx, obs, p: _kept_ratios(ctx, case, obs, p),
        check_p1=check_p1,
        extra=[Property("the output is the dropped weights @ v", 1, output_uses_weights)],
        trailing=[Property("keeps float64; gradients flow to q, k and v", 1, dtype_and_grad)],
    )
    return mask_properties(adapter, p_values)
