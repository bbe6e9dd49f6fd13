"""The ex03 (spatial dropout) grader against wrong and correct implementations; messages pinned."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F

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


def ok_reference(x, p, training=True):
    return SpatialDropout(p).train(training)(x)


@pytest.mark.parametrize("fn", [ok_rand, ok_bernoulli_expand, ok_numpy, ok_reference])
def test_correct_spatial_dropout_passes(grader, fn):
    for name in ("spatial_dropout", "spatial_dropout_hidden"):
        result = grader.check(name, fn)
        assert result.passed, "\n".join(result.messages)


def test_reference_module_passes(grader):
    assert grader.check("SpatialDropout", SpatialDropout).passed


def element_wise(x, p, training=True):
    return dropout(x, p, training)


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
    uses_dropout2d: ["calls torch's own dropout", "torch.nn.functional.dropout2d"],
    in_place: ["was modified in place"],
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
