"""The ex03 (spatial dropout) grader against wrong and correct implementations; messages pinned."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch import nn

from dropout_course.grading import Grader
from dropout_course.layers import SpatialDropout, dropout


@pytest.fixture(scope="module")
def grader():
    return Grader("ex03_spatial_dropout", time_limit=1.5)


def ok_rand(x, p, training=True):
    if not training or p == 0:
        return x
    if p == 1:
        return torch.zeros_like(x)
    m = (torch.rand(x.shape[0], x.shape[1], 1, 1, dtype=x.dtype) >= p).to(x.dtype)
    return x * m / (1 - p)


def ok_bernoulli_expand(x, p, training=True):
    if not training:
        return x
    keep = torch.bernoulli(torch.full(x.shape[:2], 1 - p, dtype=x.dtype))
    scale = 0.0 if p == 1 else 1 / (1 - p)
    return x * keep[:, :, None, None].expand_as(x) * scale


def ok_numpy(x, p, training=True):
    if not training:
        return x
    keep = np.random.rand(x.shape[1], x.shape[0]).T < 1 - p  # drawn in another order
    scale = 0.0 if p == 1 else 1 / (1 - p)
    return x * torch.from_numpy(keep.copy()).to(x.dtype)[..., None, None] * scale


def ok_empty_bernoulli(x, p, training=True):
    if not training or p == 0:
        return x
    if p == 1:
        return x * 0
    return x * x.new_empty(x.shape[0], x.shape[1], 1, 1).bernoulli_(1 - p).div_(1 - p)  # torch's own draw


@pytest.mark.parametrize("fn", [ok_rand, ok_bernoulli_expand, ok_numpy, ok_empty_bernoulli])
def test_correct_spatial_dropout_passes(grader, fn):
    for name in ("spatial_dropout", "spatial_dropout_hidden"):
        result = grader.check(name, fn)
        assert result.passed, "\n".join(result.messages)


def make_module(fn=ok_rand, cache=False, own_flag=False):
    class Candidate(nn.Module):
        def __init__(self, p=0.5):
            super().__init__()
            if not 0 <= p <= 1:
                raise ValueError(f"p must be in [0, 1], got {p}")
            self.p, self.mask, self.flag = p, None, True

        def forward(self, x):
            training = self.flag if own_flag else self.training
            if not cache:
                return fn(x, self.p, training)
            if not training:
                return x
            if self.mask is None or self.mask.shape[:2] != x.shape[:2]:  # a mask kept for the next calls
                self.mask = (torch.rand(x.shape[0], x.shape[1], 1, 1) >= self.p).to(x.dtype)
            return x * self.mask / max(1 - self.p, 1e-12) * (self.p < 1)

    return Candidate


@pytest.mark.parametrize("fn", [ok_rand, ok_numpy])
def test_correct_modules_pass(grader, fn):
    result = grader.check("SpatialDropout", make_module(fn))
    assert result.passed, "\n".join(result.messages)


@pytest.mark.parametrize(
    "cls, fragment",
    [
        (make_module(cache=True), "the same mask on every call"),
        (make_module(own_flag=True), "dropout is still applied in eval mode"),
        (SpatialDropout, "calls dropout_course.layers.SpatialDropout"),
        (nn.Dropout2d, "calls torch.nn"),
    ],
    ids=["cached-mask", "own-flag", "course-reference", "torch-module"],
)
def test_wrong_modules_are_diagnosed(grader, cls, fragment):
    result = grader.check("SpatialDropout", cls)
    text = "\n".join(result.messages)
    assert not result.passed and fragment in text, text


def element_wise(x, p, training=True):
    if not training:
        return x
    return x * (torch.rand_like(x) >= p).to(x.dtype) / max(1 - p, 1e-12) * (p < 1)


def course_function(x, p, training=True):
    return SpatialDropout(p).train(training)(x)


def course_dropout(x, p, training=True):
    return dropout(x, p, training)


def ones_mask_trick(x, p, training=True):
    return x * F.dropout(torch.ones(x.shape[0], x.shape[1], 1, 1), p, training)


def aten_feature(x, p, training=True):
    return torch.ops.aten.feature_dropout(x, p, training)


def ignores_training(x, p, training=True):
    return ok_rand(x, p, True)


def wrong_mask_shape(x, p, training=True):  # one value per (sample, channel, row): constant over W only
    if not training:
        return x
    return (
        x * (torch.rand(x.shape[0], x.shape[1], x.shape[2], 1) >= p).to(x.dtype) / max(1 - p, 1e-12) * (p < 1)
    )


def returns_float32(x, p, training=True):
    if not training:
        return x
    return (x * (torch.rand(x.shape[0], x.shape[1], 1, 1) >= p) / max(1 - p, 1e-12) * (p < 1)).float()


def shared_over_batch(x, p, training=True):
    if not training:
        return x
    return x * (torch.rand(1, x.shape[1], 1, 1) >= p).to(x.dtype) / max(1 - p, 1e-12) * (p < 1)


def per_sample(x, p, training=True):
    if not training:
        return x
    return x * (torch.rand(x.shape[0], 1, 1, 1) >= p).to(x.dtype) / max(1 - p, 1e-12) * (p < 1)


def keep_prob(x, p, training=True):
    if not training:
        return x
    return x * (torch.rand(x.shape[0], x.shape[1], 1, 1) < p).to(x.dtype) / p


def no_rescale(x, p, training=True):
    return x * (torch.rand(x.shape[0], x.shape[1], 1, 1) >= p).to(x.dtype) if training else x


def uses_dropout2d(x, p, training=True):
    return F.dropout2d(x, p, training)


def in_place(x, p, training=True):
    if training:
        x.mul_((torch.rand(x.shape[0], x.shape[1], 1, 1) >= p).to(x.dtype) / max(1 - p, 1e-12) * (p < 1))
    return x


WRONG = {
    element_wise: ["drops single elements, not whole channels"],
    shared_over_batch: ["one mask is shared by the whole batch"],
    per_sample: ["whole samples are dropped (every channel of a sample at once)"],
    keep_prob: ["`p` is read as the keep probability"],
    no_rescale: ["kept values are not rescaled"],
    uses_dropout2d: ["not credited: calls torch.nn.functional.dropout2d"],
    in_place: ["was modified in place"],
    course_function: ["not credited: calls dropout_course.layers.SpatialDropout"],
    course_dropout: ["not credited: calls dropout_course.layers.dropout"],
    ones_mask_trick: ["not credited: calls torch.nn.functional.dropout"],
    aten_feature: ["not credited: calls torch.ops.aten.feature_dropout"],
    ignores_training: ["dropout is still applied in eval mode"],
    wrong_mask_shape: ["drops single elements, not whole channels"],
    returns_float32: ["wrong dtype"],
}


@pytest.mark.parametrize("fn", list(WRONG), ids=[f.__name__ for f in WRONG])
def test_wrong_spatial_dropout_is_diagnosed(grader, fn):
    result = grader.check("spatial_dropout", fn)
    text = "\n".join(result.messages)
    assert not result.passed
    for fragment in WRONG[fn]:
        assert fragment in text, f"expected {fragment!r} in:\n{text}"
    if fn in (shared_over_batch, per_sample):  # the fraction test must not blame p for a shared mask
        assert "PASS drops a fraction p of the channels" in text
    hidden = grader.check("spatial_dropout_hidden", fn)  # the hidden check catches the same mistake
    assert hidden.score < hidden.max_score, "\n".join(hidden.messages)
