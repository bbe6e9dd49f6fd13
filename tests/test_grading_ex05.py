"""The ex05 (attention dropout, DropPath) grader against wrong and correct implementations; messages pinned."""

from __future__ import annotations

import math
import random

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch import nn

from dropout_course.grading import Grader
from dropout_course.layers import DropPath, dropout


@pytest.fixture(scope="module")
def grader():
    return Grader("ex05_attention_dropout", time_limit=3)


def _text(result) -> str:
    return "\n".join(result.messages)


# --------------------------------------------------------------------------- attention: correct


def _weights(q, k):
    return torch.softmax(q @ k.transpose(-2, -1) / math.sqrt(q.shape[-1]), dim=-1)


def ok_rand(q, k, v, p, training=True):
    w = _weights(q, k)
    if training and p > 0:
        w = torch.zeros_like(w) if p == 1 else w * (torch.rand_like(w) >= p) / (1 - p)
    return w @ v, w


def ok_bernoulli(q, k, v, p, training=True):
    w = _weights(q, k)
    if training:
        keep = torch.bernoulli(torch.full_like(w, 1 - p))
        w = w * keep * (0.0 if p == 1 else 1 / (1 - p))
    return w @ v, w


def ok_mask_first(q, k, v, p, training=True):
    """Draws the random numbers before any attention arithmetic, with torch.where, scales q first."""
    shape = (*q.shape[:-1], k.shape[-2])
    keep = torch.rand(shape, dtype=q.dtype) < 1 - p
    scores = (q / q.shape[-1] ** 0.5) @ k.transpose(-1, -2)
    w = scores.softmax(-1)
    if training:
        w = torch.where(keep, w / max(1 - p, 1e-12), torch.zeros_like(w))
    return torch.matmul(w, v), w


def ok_numpy_order(q, k, v, p, training=True):
    """A NumPy mask drawn with the last two axes swapped (another order of random numbers)."""
    w = torch.softmax(torch.einsum("...id,...jd->...ij", q, k) / math.sqrt(k.size(-1)), dim=-1)
    if training and p > 0:
        u = np.random.rand(*w.shape[:-2], w.shape[-1], w.shape[-2]).swapaxes(-1, -2)
        dropped = torch.from_numpy(u < p)
        w = w.masked_fill(dropped, 0.0) / (1 - p) if p < 1 else w * 0
    return torch.einsum("...ij,...jd->...id", w, v), w


def ok_course_dropout(q, k, v, p, training=True):
    w = _weights(q, k)
    w = dropout(w, p, training)
    return w @ v, w


OK_ATTENTION = [ok_rand, ok_bernoulli, ok_mask_first, ok_numpy_order]


@pytest.mark.parametrize("fn", OK_ATTENTION, ids=[f.__name__ for f in OK_ATTENTION])
def test_correct_attention_passes(grader, fn):
    for name in ("attention_with_dropout", "attention_with_dropout_hidden"):
        result = grader.check(name, fn)
        assert result.passed, _text(result)


# --------------------------------------------------------------------------- attention: wrong


def _drop(w, p):
    return w * (torch.rand_like(w) >= p) / (1 - p) if p < 1 else w * 0


def before_softmax(q, k, v, p, training=True):
    scores = q @ k.transpose(-2, -1) / math.sqrt(q.shape[-1])
    if training:
        scores = _drop(scores, p)
    w = torch.softmax(scores, dim=-1)
    return w @ v, w


def mask_scores_inf(q, k, v, p, training=True):
    scores = q @ k.transpose(-2, -1) / math.sqrt(q.shape[-1])
    if training:
        scores = scores.masked_fill(torch.rand_like(scores) < p, float("-inf"))
    w = torch.softmax(scores, dim=-1)
    return w @ v, w


def renormalise(q, k, v, p, training=True):
    w = _weights(q, k)
    if training:
        w = w * (torch.rand_like(w) >= p)
        w = w / w.sum(-1, keepdim=True)
    return w @ v, w


def no_rescale(q, k, v, p, training=True):
    w = _weights(q, k)
    if training:
        w = w * (torch.rand_like(w) >= p)
    return w @ v, w


def scale_by_p(q, k, v, p, training=True):
    w = _weights(q, k)
    if training:
        w = w * (torch.rand_like(w) >= p) * p
    return w @ v, w


def keep_prob(q, k, v, p, training=True):
    w = _weights(q, k)
    if training:
        w = w * (torch.rand_like(w) < p) / p
    return w @ v, w


def shared_over_batch(q, k, v, p, training=True):
    w = _weights(q, k)
    if training:
        w = w * (torch.rand(w.shape[-2:]) >= p) / max(1 - p, 1e-12) * (p < 1)
    return w @ v, w


def whole_rows(q, k, v, p, training=True):
    w = _weights(q, k)
    if training:
        w = w * (torch.rand(*w.shape[:-1], 1) >= p) / max(1 - p, 1e-12) * (p < 1)
    return w @ v, w


def dropout_in_eval(q, k, v, p, training=True):
    w = _drop(_weights(q, k), p)
    return w @ v, w


def rescale_in_eval(q, k, v, p, training=True):
    w = _weights(q, k)
    if training:
        w = w * (torch.rand_like(w) >= p)
    w = w / max(1 - p, 1e-12) * (p < 1 or not training)
    return w @ v, w


def non_inverted(q, k, v, p, training=True):
    w = _weights(q, k)
    w = w * (torch.rand_like(w) >= p) if training else w * (1 - p)
    return w @ v, w


def in_place(q, k, v, p, training=True):
    q /= math.sqrt(q.shape[-1])
    w = torch.softmax(q @ k.transpose(-2, -1), dim=-1)
    if training:
        w = _drop(w, p)
    return w @ v, w


def same_mask_every_call(q, k, v, p, training=True):
    w = _weights(q, k)
    if training:
        g = torch.Generator().manual_seed(0)
        w = w * (torch.rand(w.shape, generator=g) >= p) / max(1 - p, 1e-12) * (p < 1)
    return w @ v, w


def nan_at_p1(q, k, v, p, training=True):
    w = _weights(q, k)
    if training:
        w = w * (torch.rand_like(w) >= p) / torch.tensor(1 - p)
    return w @ v, w


def zero_division_at_p1(q, k, v, p, training=True):
    w = _weights(q, k)
    if training:
        w = w * (torch.rand_like(w) >= p) * (1 / (1 - p))
    return w @ v, w


def uses_f_dropout(q, k, v, p, training=True):
    w = F.dropout(_weights(q, k), p, training)
    return w @ v, w


def uses_nn_dropout(q, k, v, p, training=True):
    w = nn.Dropout(p).train(training)(_weights(q, k))
    return w @ v, w


def uses_sdpa(q, k, v, p, training=True):
    out = F.scaled_dot_product_attention(q, k, v, dropout_p=p if training else 0.0)
    w = _weights(q, k)
    if training:
        w = _drop(w, p)
    return out, w


def no_sqrt_d(q, k, v, p, training=True):
    w = torch.softmax(q @ k.transpose(-2, -1), dim=-1)
    if training:
        w = _drop(w, p)
    return w @ v, w


def divided_by_d(q, k, v, p, training=True):
    w = torch.softmax(q @ k.transpose(-2, -1) / q.shape[-1], dim=-1)
    if training:
        w = _drop(w, p)
    return w @ v, w


def softmax_wrong_dim(q, k, v, p, training=True):
    w = torch.softmax(q @ k.transpose(-2, -1) / math.sqrt(q.shape[-1]), dim=-2)
    if training:
        w = _drop(w, p)
    return w @ v, w


def dropout_on_output(q, k, v, p, training=True):
    w = _weights(q, k)
    out = w @ v
    return (_drop(out, p) if training else out), w


def returns_undropped_weights(q, k, v, p, training=True):
    w = _weights(q, k)
    used = _drop(w, p) if training else w
    return used @ v, w


def output_from_undropped(q, k, v, p, training=True):
    w = _weights(q, k)
    out = w @ v
    if training:
        w = _drop(w, p)
    return out, w


def returns_only_output(q, k, v, p, training=True):
    return ok_rand(q, k, v, p, training)[0]


def swapped_return(q, k, v, p, training=True):
    out, w = ok_rand(q, k, v, p, training)
    return w, out


def transposed_weights(q, k, v, p, training=True):
    w = (
        _drop(torch.softmax(k @ q.transpose(-2, -1) / math.sqrt(q.shape[-1]), dim=-2), p)
        if training
        else None
    )
    w = w if training else torch.softmax(k @ q.transpose(-2, -1) / math.sqrt(q.shape[-1]), dim=-2)
    return w.transpose(-2, -1) @ v, w


def no_grad(q, k, v, p, training=True):
    with torch.no_grad():
        return ok_rand(q, k, v, p, training)


def casts_to_float32(q, k, v, p, training=True):
    return ok_rand(q.float(), k.float(), v.float(), p, training)


WRONG_ATTENTION = {
    before_softmax: ["dropout was applied before the softmax"],
    mask_scores_inf: ["renormalised (dropout before the softmax", "whole rows of weights are NaN"],
    renormalise: ["renormalised", "whole rows of weights are NaN"],
    no_rescale: ["kept attention weights are not rescaled"],
    scale_by_p: ["kept attention weights are scaled by p instead of 1/(1-p)"],
    keep_prob: ["`p` is read as the keep probability"],
    shared_over_batch: ["one mask is shared by the whole batch"],
    whole_rows: ["whole rows are dropped"],
    dropout_in_eval: ["dropout is still applied with training=False"],
    rescale_in_eval: ["rescaling by 1/(1-p) is still applied with training=False"],
    non_inverted: ["scaled by (1-p) with training=False", "kept attention weights are not rescaled"],
    in_place: ["the input `q` was modified in place"],
    same_mask_every_call: ["the same mask on every call"],
    nan_at_p1: ["p=1 gives NaN"],
    zero_division_at_p1: ["p=1 divides by zero"],
    uses_f_dropout: ["not credited: calls torch.nn.functional.dropout"],
    uses_nn_dropout: ["not credited: calls torch.nn", "the task is to write attention dropout yourself"],
    uses_sdpa: ["not credited: calls torch.nn.functional.scaled_dot_product_attention(dropout_p > 0)"],
    ok_course_dropout: ["not credited: calls dropout_course.layers.dropout"],
    no_sqrt_d: ["the scores are not scaled: divide q @ k^T by sqrt(d)"],
    divided_by_d: ["the scores are divided by d = 8 instead of sqrt(d)"],
    softmax_wrong_dim: ["softmax over the wrong dimension"],
    dropout_on_output: ["dropout is applied to the output (weights @ v)"],
    returns_undropped_weights: ["return the weights you multiplied with v"],
    output_from_undropped: ["the output is computed from the weights before dropout"],
    returns_only_output: ["returns one tensor", "return the pair `(output, weights)`"],
    swapped_return: ["returns (weights, output)"],
    transposed_weights: ["(..., T_k, T_q): transposed"],
    no_grad: ["the output is detached from autograd"],
    casts_to_float32: ["wrong dtype: float64 inputs give torch.float32 output"],
}


@pytest.mark.parametrize("fn", list(WRONG_ATTENTION), ids=[f.__name__ for f in WRONG_ATTENTION])
def test_wrong_attention_is_diagnosed(grader, fn):
    result = grader.check("attention_with_dropout", fn)
    text = _text(result)
    assert not result.passed
    for fragment in WRONG_ATTENTION[fn]:
        assert fragment in text, f"expected {fragment!r} in:\n{text}"
    if fn in (shared_over_batch, whole_rows):  # the fraction test must not blame p for a shared mask
        assert "PASS drops a fraction p of the attention weights" in text
    if fn in (no_sqrt_d, divided_by_d, softmax_wrong_dim):  # a softmax mistake is blamed once, not as scaling
        assert "PASS scales the kept attention weights" in text


def three_dims_only(q, k, v, p, training=True):
    """Transposes dims 1 and 2: right for (N, T, d) inputs, wrong with a head dimension (N, H, T, d)."""
    w = torch.softmax(torch.bmm(q, k.transpose(1, 2)) / math.sqrt(q.shape[-1]), dim=-1)
    if training:
        w = _drop(w, p)
    return w @ v, w


def test_attention_for_3d_inputs_only_fails_the_hidden_check(grader):
    result = grader.check("attention_with_dropout", three_dims_only)
    assert result.passed, _text(result)
    result = grader.check("attention_with_dropout_hidden", three_dims_only)
    assert not result.passed and "`three_dims_only` raised RuntimeError" in _text(result)


# --------------------------------------------------------------------------- drop_path


def ok_dp_rand(x, p, training=True):
    if not training or p == 0:
        return x
    if p == 1:
        return torch.zeros_like(x)
    keep = (torch.rand(x.shape[0], *[1] * (x.dim() - 1), dtype=x.dtype) >= p).to(x.dtype)
    return x * keep / (1 - p)


def ok_dp_bernoulli_view(x, p, training=True):
    if not training:
        return x
    keep = x.new_empty(x.shape[0]).bernoulli_(1 - p)
    scale = 0.0 if p == 1 else 1 / (1 - p)
    return x * keep.view(-1, *([1] * (x.dim() - 1))) * scale


def ok_dp_numpy_loop(x, p, training=True):
    if not training:
        return x
    out = torch.zeros_like(x)
    for i in reversed(range(len(x))):  # one draw per sample, last sample first
        if random.random() >= p:
            out[i] = x[i] / (1 - p)
    return out


def ok_dp_reference(x, p, training=True):
    return DropPath(p).train(training)(x)


OK_DROP_PATH = [ok_dp_rand, ok_dp_bernoulli_view, ok_dp_numpy_loop]


@pytest.mark.parametrize("fn", OK_DROP_PATH, ids=[f.__name__ for f in OK_DROP_PATH])
def test_correct_drop_path_passes(grader, fn):
    for name in ("drop_path", "drop_path_hidden"):
        result = grader.check(name, fn)
        assert result.passed, _text(result)


def _elementwise(x, p, training=True):
    if not training:
        return x
    return x * (torch.rand_like(x) >= p).to(x.dtype) / max(1 - p, 1e-12) * (p < 1)


def dp_elementwise(x, p, training=True):
    return _elementwise(x, p, training)


def dp_course_dropout(x, p, training=True):
    return dropout(x, p, training)


def dp_one_decision(x, p, training=True):
    if not training or random.random() >= p:
        return x / (1 - p) if training else x
    return torch.zeros_like(x)


def dp_keep_prob(x, p, training=True):
    if not training:
        return x
    return x * (torch.rand(x.shape[0], *[1] * (x.dim() - 1)) < p).to(x.dtype) / p


def dp_no_rescale(x, p, training=True):
    return x * (torch.rand(x.shape[0], *[1] * (x.dim() - 1)) >= p).to(x.dtype) if training else x


def dp_scale_by_p(x, p, training=True):
    return x * (torch.rand(x.shape[0], *[1] * (x.dim() - 1)) >= p).to(x.dtype) * p if training else x


def dp_in_eval(x, p, training=True):
    return ok_dp_rand(x, p, True)


def dp_in_place(x, p, training=True):
    if training:
        x.mul_((torch.rand(x.shape[0], *[1] * (x.dim() - 1)) >= p).to(x.dtype) / max(1 - p, 1e-12) * (p < 1))
    return x


def dp_nan_at_p1(x, p, training=True):
    if not training:
        return x
    keep = (torch.rand(x.shape[0], *[1] * (x.dim() - 1)) >= p).to(x.dtype)
    return x * keep / torch.tensor(1 - p)


def dp_f_dropout_trick(x, p, training=True):
    return x * F.dropout(torch.ones(x.shape[0], *[1] * (x.dim() - 1)), p, training)


def dp_same_mask(x, p, training=True):
    torch.manual_seed(0)
    return ok_dp_rand(x, p, training)


def dp_three_dims(x, p, training=True):
    """Hard-codes a 3-d input: the mask (N, 1, 1) broadcasts a 2-d (N, D) input to (N, N, D)."""
    if not training or p == 0:
        return x
    return x * (torch.rand(x.shape[0], 1, 1) >= p).to(x.dtype) / max(1 - p, 1e-12) * (p < 1)


WRONG_DROP_PATH = {
    dp_elementwise: ["drops single elements, not whole samples"],
    dp_one_decision: ["one decision is shared by the whole batch"],
    dp_keep_prob: ["`p` is read as the keep probability"],
    dp_no_rescale: ["kept values are not rescaled"],
    dp_scale_by_p: ["kept values are scaled by p instead of 1/(1-p)"],
    dp_in_eval: ["dropout is still applied in eval mode (training=False)"],
    dp_in_place: ["was modified in place"],
    dp_nan_at_p1: ["p=1 gives NaN"],
    dp_f_dropout_trick: ["not credited: calls torch.nn.functional.dropout"],
    ok_dp_reference: ["not credited: calls dropout_course.layers.DropPath"],
    dp_course_dropout: ["not credited: calls dropout_course.layers.dropout"],
    dp_same_mask: ["the same mask on every call"],
}


@pytest.mark.parametrize("fn", list(WRONG_DROP_PATH), ids=[f.__name__ for f in WRONG_DROP_PATH])
def test_wrong_drop_path_is_diagnosed(grader, fn):
    result = grader.check("drop_path", fn)
    text = _text(result)
    assert not result.passed
    for fragment in WRONG_DROP_PATH[fn]:
        assert fragment in text, f"expected {fragment!r} in:\n{text}"
    if fn is dp_one_decision:  # the fraction test must not blame p for one decision per batch
        assert "PASS drops a fraction p of the samples" in text


def test_drop_path_for_3d_inputs_only_fails_the_hidden_check(grader):
    assert grader.check("drop_path", dp_three_dims).passed
    result = grader.check("drop_path_hidden", dp_three_dims)
    assert not result.passed and "wrong shape: output has shape (500, 500, 7)" in _text(result)


# --------------------------------------------------------------------------- ResidualBlock


class OkBlock(nn.Module):
    def __init__(self, branch, p=0.1):
        super().__init__()
        if not 0.0 <= p <= 1.0:
            raise ValueError(f"p must be in [0, 1], got {p}")
        self.branch, self.p = branch, p

    def forward(self, x):
        return x + ok_dp_rand(self.branch(x), self.p, self.training)


class OkBlockCourseDropPath(nn.Module):
    def __init__(self, branch, p):
        super().__init__()
        self.branch = branch
        self.drop_path = DropPath(p)  # raises ValueError for a bad p

    def forward(self, x):
        return x + self.drop_path(self.branch(x))


class OkBlockKeptOnly(nn.Module):
    """Runs the branch on the kept samples only (saves compute), adds it back with index_add."""

    def __init__(self, branch, p):
        super().__init__()
        if p < 0 or p > 1:
            raise ValueError(p)
        self.branch, self.p = branch, p

    def forward(self, x):
        if not self.training:
            return x + self.branch(x)
        kept = torch.nonzero(torch.rand(len(x)) >= self.p).flatten()
        if len(kept) == 0:
            return x.clone()
        return x.index_add(0, kept, self.branch(x[kept]) / (1 - self.p))


OK_BLOCKS = [OkBlock, OkBlockKeptOnly]


@pytest.mark.parametrize("cls", OK_BLOCKS, ids=[c.__name__ for c in OK_BLOCKS])
def test_correct_residual_block_passes(grader, cls):
    result = grader.check("ResidualBlock", cls)
    assert result.passed, _text(result)


def _block(forward, init=None):
    """A block class whose forward is ``forward(self, x)``; __init__ like OkBlock unless given (named after it)."""
    name = init.__name__ if init else forward.__name__
    return type(name, (OkBlock,), {"forward": forward, **({"__init__": init} if init else {})})


def drop_whole_output(self, x):
    return ok_dp_rand(x + self.branch(x), self.p, self.training)


def dropout_on_sum(self, x):
    return _elementwise(x + self.branch(x), self.p, self.training)


def elementwise_branch(self, x):
    return x + _elementwise(self.branch(x), self.p, self.training)


def drops_skip_instead(self, x):
    return ok_dp_rand(x, self.p, self.training) + self.branch(x)


def no_skip(self, x):
    return ok_dp_rand(self.branch(x), self.p, self.training)


def ignores_branch(self, x):  # never adds the branch: the fraction and scale must not pass vacuously
    return x


def cached_mask_init(self, branch, p=0.5):
    OkBlock.__init__(self, branch, p)
    self.mask = None


def cached_mask(self, x):
    if not self.training:
        return x + self.branch(x)
    if self.mask is None:  # drawn once, reused on every later call
        self.mask = (torch.rand(len(x), 1, 1) >= self.p).to(x.dtype)
    return x + self.branch(x) * self.mask / max(1 - self.p, 1e-12) * (self.p < 1)


def branch_twice_noise(self, x):  # the branch output is dropped, then a second, unscaled copy is added
    return x + ok_dp_rand(self.branch(x), self.p, self.training) + 0.1 * self.branch(x)


def rescales_skip(self, x):
    if not self.training:
        return x + self.branch(x)
    keep = (torch.rand(len(x), 1, 1) >= self.p).to(x.dtype)
    return (x + keep * self.branch(x)) / max(1 - self.p, 1e-12)


def block_no_rescale(self, x):
    keep = (torch.rand(len(x), 1, 1) >= self.p).to(x.dtype) if self.training else 1.0
    return x + keep * self.branch(x)


def one_decision(self, x):
    return x + dp_one_decision(self.branch(x), self.p, self.training)


def ignores_mode(self, x):
    return x + ok_dp_rand(self.branch(x), self.p, True)


def skips_branch_in_eval(self, x):
    return x + ok_dp_rand(self.branch(x), self.p, True) if self.training else x


def scales_in_eval(self, x):
    return x + (ok_dp_rand(self.branch(x), self.p, True) if self.training else self.branch(x) * (1 - self.p))


def adds_in_place(self, x):
    x += ok_dp_rand(self.branch(x), self.p, self.training)
    return x


def block_nan_at_p1(self, x):
    return x + dp_nan_at_p1(self.branch(x), self.p, self.training)


def no_value_error(self, branch, p=0.5):
    nn.Module.__init__(self)
    self.branch, self.p = branch, p


def unregistered(self, branch, p=0.5):
    nn.Module.__init__(self)
    if not 0 <= p <= 1:
        raise ValueError(p)
    self.parts, self.p = [branch], p  # a plain list hides the branch from nn.Module


def unregistered_forward(self, x):
    return x + ok_dp_rand(self.parts[0](x), self.p, self.training)


def torch_dropout_init(self, branch, p=0.5):
    OkBlock.__init__(self, branch, p)
    self.drop = nn.Dropout(p)


def torch_dropout_forward(self, x):
    return x + self.drop(self.branch(x))


WRONG_BLOCKS = {
    _block(drop_whole_output): ["the skip connection is dropped too"],
    _block(dropout_on_sum): ["some outputs are exactly 0: dropout is applied to the sum x + branch(x)"],
    _block(elementwise_branch): ["drops single elements of the branch output, not whole samples"],
    _block(rescales_skip): ["the skip connection is rescaled too"],
    _block(block_no_rescale): ["kept branch outputs are not rescaled"],
    _block(one_decision): ["one decision is shared by the whole batch"],
    _block(ignores_mode): ["DropPath is still applied in eval mode"],
    _block(skips_branch_in_eval): ["the branch is skipped for every sample in eval mode"],
    _block(scales_in_eval): ["the branch is scaled by (1-p) in eval mode"],
    _block(adds_in_place): ["was modified in place"],
    _block(block_nan_at_p1): ["p=1 gives NaN", "return x"],
    _block(OkBlock.forward, no_value_error): ["raise ValueError for p outside [0, 1]"],
    _block(unregistered_forward, unregistered): ["the branch is not registered as a submodule"],
    _block(torch_dropout_forward, torch_dropout_init): ["not credited: calls torch.nn"],
    OkBlockCourseDropPath: ["not credited: calls dropout_course.layers.DropPath"],
    _block(drops_skip_instead): ["the skip connection is dropped instead of the branch"],
    _block(no_skip): ["the skip connection is dropped"],
    _block(ignores_branch): ["nothing is kept in training mode: every branch is dropped", "same cause"],
    _block(cached_mask, cached_mask_init): ["the same mask on every call"],
    _block(branch_twice_noise): ["no branch is removed completely"],
}


@pytest.mark.parametrize("cls", list(WRONG_BLOCKS), ids=[c.__name__ for c in WRONG_BLOCKS])
def test_wrong_residual_block_is_diagnosed(grader, cls):
    result = grader.check("ResidualBlock", cls)
    text = _text(result)
    assert not result.passed
    for fragment in WRONG_BLOCKS[cls]:
        assert fragment in text, f"expected {fragment!r} in:\n{text}"
    assert "one decision is shared by the whole batch" not in text or cls.__name__ == "one_decision", text


def test_grading_leaves_the_learner_rng_and_objects_alone(grader):
    torch.manual_seed(3)
    expected = torch.rand(3)
    torch.manual_seed(3)
    cls = OkBlock
    before = dict(vars(cls))
    grader.check("ResidualBlock", cls)
    grader.check("attention_with_dropout", ok_rand)
    assert torch.equal(torch.rand(3), expected)
    assert dict(vars(cls)) == before


@pytest.mark.parametrize("fn", list(WRONG_ATTENTION), ids=[f.__name__ for f in WRONG_ATTENTION])
def test_wrong_attention_loses_hidden_points_too(grader, fn):
    result = grader.check("attention_with_dropout_hidden", fn)
    assert result.score < result.max_score, _text(result)


@pytest.mark.parametrize("fn", list(WRONG_DROP_PATH), ids=[f.__name__ for f in WRONG_DROP_PATH])
def test_wrong_drop_path_loses_hidden_points_too(grader, fn):
    result = grader.check("drop_path_hidden", fn)
    assert result.score < result.max_score, _text(result)


def test_static_scan_flags_sdpa_only_with_dropout(grader):
    from dropout_course.grading.detect import scan_source

    originality = grader.specs["attention_with_dropout"].originality
    head = "import torch.nn.functional as F\n"
    with_p = (
        head
        + "def f(q, k, v, p, training=True):\n    return F.scaled_dot_product_attention(q, k, v, dropout_p=p)\n"
    )
    without = head + "def f(q, k, v, p, training=True):\n    return F.scaled_dot_product_attention(q, k, v)\n"
    assert scan_source(with_p, originality, "f") == [
        "torch.nn.functional.scaled_dot_product_attention(dropout_p=...)"
    ]
    assert scan_source(without, originality, "f") == []
