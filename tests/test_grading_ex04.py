"""The ex04 (locked dropout) grader against wrong and correct implementations; messages pinned."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from dropout_course.grading import Grader
from dropout_course.layers import LockedDropout, dropout


@pytest.fixture(scope="module")
def grader():
    return Grader("ex04_locked_dropout", time_limit=1.5)


def ok_rand(x, p, training=True):
    if not training or p == 0:
        return x
    if p == 1:
        return torch.zeros_like(x)
    m = (torch.rand(x.shape[0], 1, x.shape[2], dtype=x.dtype) >= p).to(x.dtype)
    return x * m / (1 - p)


def ok_bernoulli_repeat(x, p, training=True):
    if not training:
        return x
    keep = torch.bernoulli(torch.full((x.shape[0], x.shape[2]), 1 - p, dtype=x.dtype))
    scale = 0.0 if p == 1 else 1 / (1 - p)
    return x * keep[:, None, :].repeat(1, x.shape[1], 1) * scale


def ok_numpy(x, p, training=True):
    if not training:
        return x
    keep = np.random.rand(x.shape[2], x.shape[0]).T < 1 - p  # drawn in another order
    scale = 0.0 if p == 1 else 1 / (1 - p)
    return x * torch.from_numpy(keep.copy()).to(x.dtype)[:, None, :] * scale


def ok_reference(x, p, training=True):
    return LockedDropout(p).train(training)(x)


@pytest.mark.parametrize("fn", [ok_rand, ok_bernoulli_repeat, ok_numpy, ok_reference])
def test_correct_locked_dropout_passes(grader, fn):
    for name in ("locked_dropout", "locked_dropout_hidden"):
        result = grader.check(name, fn)
        assert result.passed, "\n".join(result.messages)


def test_reference_module_passes(grader):
    assert grader.check("LockedDropout", LockedDropout).passed


def per_step(x, p, training=True):
    return dropout(x, p, training)


def shared_over_batch(x, p, training=True):
    if not training:
        return x
    return x * (torch.rand(1, 1, x.shape[2]) >= p).to(x.dtype) / max(1 - p, 1e-12) * (p < 1)


def whole_sequences(x, p, training=True):
    if not training:
        return x
    return x * (torch.rand(x.shape[0], 1, 1) >= p).to(x.dtype) / max(1 - p, 1e-12) * (p < 1)


def keep_prob(x, p, training=True):
    if not training:
        return x
    return x * (torch.rand(x.shape[0], 1, x.shape[2]) < p).to(x.dtype) / p


def no_rescale(x, p, training=True):
    return x * (torch.rand(x.shape[0], 1, x.shape[2]) >= p).to(x.dtype) if training else x


def uses_dropout1d(x, p, training=True):
    return F.dropout1d(x.transpose(1, 2), p, training).transpose(1, 2)


def in_place(x, p, training=True):
    if training:
        x.mul_((torch.rand(x.shape[0], 1, x.shape[2]) >= p).to(x.dtype) / max(1 - p, 1e-12) * (p < 1))
    return x


WRONG = {
    per_step: ["a new mask at every time step"],
    shared_over_batch: ["one mask is shared by the whole batch"],
    whole_sequences: ["whole sequences are dropped"],
    keep_prob: ["`p` is read as the keep probability"],
    no_rescale: ["kept values are not rescaled"],
    uses_dropout1d: ["calls torch's own dropout", "torch.nn.functional.dropout1d"],
    in_place: ["was modified in place"],
}


@pytest.mark.parametrize("fn", list(WRONG), ids=[f.__name__ for f in WRONG])
def test_wrong_locked_dropout_is_diagnosed(grader, fn):
    result = grader.check("locked_dropout", fn)
    text = "\n".join(result.messages)
    assert not result.passed
    for fragment in WRONG[fn]:
        assert fragment in text, f"expected {fragment!r} in:\n{text}"
    if fn in (shared_over_batch, whole_sequences):  # the fraction test must not blame p for a shared mask
        assert "PASS drops a fraction p of the features" in text
