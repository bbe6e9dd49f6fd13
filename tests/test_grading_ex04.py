"""The ex04 (locked dropout) grader against wrong and correct implementations; messages pinned."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch import nn

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


def ok_like_torch(x, p, training=True):
    if not training or p == 0:
        return x
    if p == 1:
        return x * 0
    return x * x.new_empty(x.shape[0], 1, x.shape[2]).bernoulli_(1 - p).div_(1 - p)  # torch's own draw


@pytest.mark.parametrize("fn", [ok_rand, ok_bernoulli_repeat, ok_numpy, ok_like_torch])
def test_correct_locked_dropout_passes(grader, fn):
    for name in ("locked_dropout", "locked_dropout_hidden"):
        result = grader.check(name, fn)
        assert result.passed, "\n".join(result.messages)


def make_module(fn=ok_rand, cache=False):
    class Candidate(nn.Module):
        def __init__(self, p=0.5):
            super().__init__()
            if not 0 <= p <= 1:
                raise ValueError(f"p must be in [0, 1], got {p}")
            self.p, self.mask = p, None

        def forward(self, x):
            if not cache or not self.training:
                return fn(x, self.p, self.training)
            if self.mask is None or self.mask.shape[0] != x.shape[0]:  # a mask kept for the next calls
                self.mask = (torch.rand(x.shape[0], 1, x.shape[2]) >= self.p).to(x.dtype)
            return x * self.mask / max(1 - self.p, 1e-12) * (self.p < 1)

    return Candidate


def test_correct_module_passes(grader):
    result = grader.check("LockedDropout", make_module())
    assert result.passed, "\n".join(result.messages)


@pytest.mark.parametrize(
    "cls, fragment",
    [
        (make_module(cache=True), "the same mask on every call"),
        (LockedDropout, "not credited: calls dropout_course.layers.LockedDropout"),
    ],
    ids=["cached-mask", "course-reference"],
)
def test_wrong_modules_are_diagnosed(grader, cls, fragment):
    result = grader.check("LockedDropout", cls)
    text = "\n".join(result.messages)
    assert not result.passed and fragment in text, text


def per_step(x, p, training=True):
    if not training:
        return x
    return x * (torch.rand_like(x) >= p).to(x.dtype) / max(1 - p, 1e-12) * (p < 1)


def course_reference(x, p, training=True):
    return LockedDropout(p).train(training)(x)


def ones_mask_trick(x, p, training=True):
    return x * torch.ops.aten.native_dropout(torch.ones(x.shape[0], 1, x.shape[2]), p, training)[0]


def ignores_training(x, p, training=True):
    return ok_rand(x, p, True)


def time_major(
    x, p, training=True
):  # treats dim 0 as time: one mask per (step, feature), shared by the batch
    if not training:
        return x
    return x * (torch.rand(1, x.shape[1], x.shape[2]) >= p).to(x.dtype) / max(1 - p, 1e-12) * (p < 1)


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
    uses_dropout1d: ["not credited: calls torch.nn.functional.dropout1d"],
    in_place: ["was modified in place"],
    course_reference: ["not credited: calls dropout_course.layers.LockedDropout"],
    ones_mask_trick: ["not credited: calls torch.ops.aten.native_dropout"],
    ignores_training: ["dropout is still applied in eval mode"],
    time_major: ["a new mask at every time step"],
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
    hidden = grader.check("locked_dropout_hidden", fn)  # the hidden check catches the same mistake
    assert hidden.score < hidden.max_score, "\n".join(hidden.messages)


# --------------------------------------------------------------------------- weight_drop (a function)


def wd_rand_like(weight, p, training=True):
    if not training or p == 0:
        return weight
    if p == 1:
        return weight * 0.0
    return weight * (torch.rand_like(weight) >= p) / (1 - p)


def wd_bernoulli(weight, p, training=True):
    if not training:
        return weight
    keep = torch.bernoulli(torch.full_like(weight, 1 - p))
    return weight * keep * (0.0 if p == 1 else 1 / (1 - p))


def wd_numpy_where(weight, p, training=True):
    if not training or p == 0:
        return weight
    keep = torch.from_numpy(np.random.rand(*weight.shape[::-1]).T >= p)  # drawn in another order
    return torch.where(keep, weight / max(1 - p, 1e-12), torch.zeros_like(weight))


def wd_reference(weight, p, training=True):
    return dropout(weight, p, training)


@pytest.mark.parametrize("fn", [wd_rand_like, wd_bernoulli, wd_numpy_where])
def test_correct_weight_drop_passes(grader, fn):
    for name in ("weight_drop", "weight_drop_hidden"):
        result = grader.check(name, fn)
        assert result.passed, "\n".join(result.messages)


def wd_no_rescale(weight, p, training=True):
    return weight * (torch.rand_like(weight) >= p) if training else weight


def wd_scaled_by_p(weight, p, training=True):
    return weight * (torch.rand_like(weight) >= p) * p if training else weight


def wd_keep_prob(weight, p, training=True):
    return weight * (torch.rand_like(weight) < p) / p if training and p > 0 else weight


def wd_always(weight, p, training=True):  # ignores `training`
    return weight * (torch.rand_like(weight) >= p) / (1 - p) if p < 1 else weight * 0.0


def wd_data_mul_(weight, p, training=True):  # AWD-style, but destroys the weights
    if training and p < 1:
        weight.data.mul_((torch.rand_like(weight) >= p) / (1 - p))
    return weight


def wd_detached(weight, p, training=True):
    if not training or p == 0:
        return weight
    return weight.detach() * (torch.rand_like(weight) >= p) / max(1 - p, 1e-12) * (p < 1)


def wd_reseeded(weight, p, training=True):
    g = torch.Generator().manual_seed(0)
    return (
        wd_rand_like(weight, p, training)
        if p in (0, 1) or not training
        else (weight * (torch.rand(weight.shape, generator=g) >= p) / (1 - p))
    )


def wd_nan_at_1(weight, p, training=True):
    if not training:
        return weight
    return weight * (torch.rand_like(weight) >= p) / torch.tensor(1 - p)


def wd_torch_dropout(weight, p, training=True):
    return F.dropout(weight, p, training)  # what AWD-LSTM does; here the mask is the exercise


def wd_rows(weight, p, training=True):
    if not training or p == 0:
        return weight
    return weight * (torch.rand(weight.shape[0], 1) >= p) / max(1 - p, 1e-12) * (p < 1)


def wd_columns(weight, p, training=True):
    if not training or p == 0:
        return weight
    return weight * (torch.rand(weight.shape[1]) >= p) / max(1 - p, 1e-12) * (p < 1)


WRONG_WD = {
    wd_no_rescale: ["kept values are not rescaled"],
    wd_scaled_by_p: ["scaled by p instead of 1/(1-p)"],
    wd_keep_prob: ["`p` is read as the keep probability"],
    wd_always: ["dropout is still applied in eval mode (training=False)", "return weight unchanged"],
    wd_data_mul_: [
        "the weight was modified in place",
        "weight.data.mul_(mask)",
        "destroys the trained weights",
    ],
    wd_detached: ["the dropped weight is detached from autograd", "never be trained"],
    wd_reseeded: ["the same mask on every call"],
    wd_nan_at_1: ["p=1 gives NaN"],
    wd_torch_dropout: ["not credited: calls torch.nn.functional.dropout"],
    wd_reference: ["not credited: calls dropout_course.layers.dropout"],
    wd_rows: ["whole rows of the weight matrix are dropped"],
    wd_columns: ["every row of the weight matrix has the same entries dropped"],
}


@pytest.mark.parametrize("fn", list(WRONG_WD), ids=[f.__name__ for f in WRONG_WD])
def test_wrong_weight_drop_is_diagnosed(grader, fn):
    result = grader.check("weight_drop", fn)
    text = "\n".join(result.messages)
    assert not result.passed
    for fragment in WRONG_WD[fn]:
        assert fragment in text, f"expected {fragment!r} in:\n{text}"


# --------------------------------------------------------------------------- WeightDropRNN (a module)


class RNN(nn.Module):
    """A correct WeightDropRNN: one dropped W_hh per forward call, used at every step."""

    def __init__(self, input_size, hidden_size, p=0.5):
        super().__init__()
        if not 0 <= p <= 1:
            raise ValueError(f"p must be in [0, 1], got {p}")
        self.p = p
        self.weight_ih = nn.Parameter(torch.randn(hidden_size, input_size) / input_size**0.5)
        self.weight_hh = nn.Parameter(torch.randn(hidden_size, hidden_size) / hidden_size**0.5)

    def dropped(self):
        return wd_rand_like(self.weight_hh, self.p, self.training)

    def step(self, x_t, h, w_hh):
        return torch.tanh(x_t @ self.weight_ih.T + h @ w_hh.T)

    def forward(self, x):
        w_hh = self.dropped()
        h = x.new_zeros(x.shape[1], self.weight_hh.shape[0])
        states = []
        for x_t in x:
            h = self.step(x_t, h, w_hh)
            states.append(h)
        return torch.stack(states)


class RNNLinear(RNN):  # F.linear, a bernoulli mask, states written into a preallocated tensor
    def dropped(self):
        return wd_bernoulli(self.weight_hh, self.p, self.training)

    def forward(self, x):
        w_hh = self.dropped()
        out = x.new_empty(x.shape[0], x.shape[1], self.weight_hh.shape[0])
        h = torch.zeros(x.shape[1], self.weight_hh.shape[0])
        for t in range(x.shape[0]):
            h = torch.tanh(F.linear(x[t], self.weight_ih) + F.linear(h, w_hh))
            out[t] = h
        return out


class RNNNumpyMask(RNN):  # the mask from NumPy, the input projection for all steps at once
    def dropped(self):
        return wd_numpy_where(self.weight_hh, self.p, self.training)

    def forward(self, x):
        w_hh = self.dropped()
        gates_x = torch.einsum("tnd,hd->tnh", x, self.weight_ih)
        h = torch.zeros_like(gates_x[0])
        states = []
        for t in range(len(x)):
            h = torch.tanh(gates_x[t] + h @ w_hh.t())
            states.append(h)
        return torch.stack(states, dim=0)


class RNNReference(RNN):  # the course's own dropout on the weight (like CharRNN's weight_drop)
    def dropped(self):
        return dropout(self.weight_hh, self.p, self.training)


@pytest.mark.parametrize("cls", [RNN, RNNLinear, RNNNumpyMask])
def test_correct_weight_drop_rnn_passes(grader, cls):
    for name in ("WeightDropRNN", "WeightDropRNN_hidden"):
        result = grader.check(name, cls)
        assert result.passed, "\n".join(result.messages)


class PerStep(RNN):
    def forward(self, x):
        h = x.new_zeros(x.shape[1], self.weight_hh.shape[0])
        states = []
        for x_t in x:
            h = self.step(x_t, h, self.dropped())  # a new mask at every step
            states.append(h)
        return torch.stack(states)


class DataMul(RNN):  # the classic bug: the parameter itself is masked
    def dropped(self):
        if self.training and self.p < 1:
            self.weight_hh.data.mul_((torch.rand_like(self.weight_hh) >= self.p) / (1 - self.p))
        return self.weight_hh


class ReplacesParameter(RNN):
    def dropped(self):
        if self.training:
            self.weight_hh = nn.Parameter(wd_rand_like(self.weight_hh.detach(), self.p))
        return self.weight_hh


class AlwaysDrops(RNN):
    def dropped(self):
        return wd_rand_like(self.weight_hh, self.p, True)


class NonInverted(RNN):
    def dropped(self):
        if self.training:
            return self.weight_hh * (torch.rand_like(self.weight_hh) >= self.p)
        return self.weight_hh * (1 - self.p)


class NoRescale(RNN):
    def dropped(self):
        return wd_no_rescale(self.weight_hh, self.p, self.training)


class ScaledByP(RNN):
    def dropped(self):
        return wd_scaled_by_p(self.weight_hh, self.p, self.training)


class KeepProb(RNN):
    def dropped(self):
        return wd_keep_prob(self.weight_hh, self.p, self.training)


class MaskInInit(RNN):
    def __init__(self, input_size, hidden_size, p=0.5):
        super().__init__(input_size, hidden_size, p)
        self.register_buffer("mask", (torch.rand(hidden_size, hidden_size) >= p).float())

    def dropped(self):
        if not self.training or self.p in (0, 1):
            return wd_rand_like(self.weight_hh, self.p, self.training)
        return self.weight_hh * self.mask / (1 - self.p)


class Detached(RNN):
    def dropped(self):
        return wd_detached(self.weight_hh, self.p, self.training)


class NaNAtOne(RNN):
    def dropped(self):
        return wd_nan_at_1(self.weight_hh, self.p, self.training)


class TorchDropout(RNN):
    def dropped(self):
        return F.dropout(self.weight_hh, self.p, self.training)


class Transposed(RNN):
    def step(self, x_t, h, w_hh):
        return torch.tanh(x_t @ self.weight_ih.T + h @ w_hh)


class DropsInputWeights(RNN):
    def step(self, x_t, h, w_hh):
        w_ih = self.w_ih_dropped
        return torch.tanh(x_t @ w_ih.T + h @ w_hh.T)

    def forward(self, x):
        self.w_ih_dropped = wd_rand_like(self.weight_ih, self.p, self.training)
        return super().forward(x)


class RecurrentDropoutInstead(RNN):  # a locked mask on h_(t-1): variational dropout, not weight drop
    def forward(self, x):
        h = x.new_zeros(x.shape[1], self.weight_hh.shape[0])
        mask = (torch.rand(x.shape[1], h.shape[1]) >= self.p) / (1 - self.p) if self.training else 1.0
        states = []
        for x_t in x:
            h = self.step(x_t, h * mask, self.weight_hh)
            states.append(h)
        return torch.stack(states)


class LastStateOnly(RNN):
    def forward(self, x):
        return super().forward(x)[-1]


class NoTanh(RNN):
    def step(self, x_t, h, w_hh):
        return x_t @ self.weight_ih.T + h @ w_hh.T


class ReluRNN(RNN):
    def step(self, x_t, h, w_hh):
        return torch.relu(x_t @ self.weight_ih.T + h @ w_hh.T)


class SigmoidRNN(RNN):
    def step(self, x_t, h, w_hh):
        return torch.sigmoid(x_t @ self.weight_ih.T + h @ w_hh.T)


class ColumnMask(RNN):
    def dropped(self):
        return wd_columns(self.weight_hh, self.p, self.training)


class StateNotFedBack(RNN):
    def forward(self, x):
        w_hh = self.dropped()
        h0 = x.new_zeros(x.shape[1], self.weight_hh.shape[0])
        return torch.stack([self.step(x_t, h0, w_hh) for x_t in x])


class AcceptsAnyP(RNN):
    def __init__(self, input_size, hidden_size, p=0.5):
        nn.Module.__init__(self)
        self.p = p
        self.weight_ih = nn.Parameter(torch.randn(hidden_size, input_size))
        self.weight_hh = nn.Parameter(torch.randn(hidden_size, hidden_size))


WRONG_RNN = {
    PerStep: ["a new mask at every time step", "ONCE per forward call"],
    DataMul: [
        "weight_hh was modified in place",
        "self.weight_hh.data.mul_(mask)",
        "destroys the trained weights",
    ],
    ReplacesParameter: ["forward replaces the parameter weight_hh"],
    AlwaysDrops: ["dropout is still applied in eval mode", "use weight_hh itself in eval mode"],
    NonInverted: ["scaled by (1-p) in eval mode", "kept weights of W_hh are not rescaled"],
    NoRescale: ["kept weights of W_hh are not rescaled"],
    ScaledByP: ["kept weights of W_hh are scaled by p instead of 1/(1-p)"],
    KeepProb: ["`p` is read as the keep probability"],
    MaskInInit: ["the same mask on every call", "not in __init__"],
    Detached: ["no gradient reaches weight_hh"],
    NaNAtOne: ["p=1 gives NaN"],
    TorchDropout: ["not credited: calls torch.nn.functional.dropout"],
    RNNReference: ["not credited: calls dropout_course.layers.dropout"],
    Transposed: ["uses h_(t-1) @ W_hh instead of h_(t-1) @ W_hh.T"],
    DropsInputWeights: ["weight_ih is dropped too"],
    RecurrentDropoutInstead: ["for one matrix W shared by the whole batch", "not of the hidden state"],
    LastStateOnly: ["returns only the last hidden state"],
    NoTanh: ["not passed through tanh"],
    ReluRNN: ["the activation is ReLU, not tanh"],
    SigmoidRNN: ["the activation is sigmoid, not tanh"],
    ColumnMask: ["whole columns of W_hh are dropped"],
    StateNotFedBack: ["the recurrent term h_(t-1) W_hh^T is missing"],
    AcceptsAnyP: ["`AcceptsAnyP(input_size, hidden_size, -0.1)` is accepted", "raise ValueError"],
}


@pytest.mark.parametrize("cls", list(WRONG_RNN), ids=[c.__name__ for c in WRONG_RNN])
def test_wrong_weight_drop_rnn_is_diagnosed(grader, cls):
    result = grader.check("WeightDropRNN", cls)
    text = "\n".join(result.messages)
    assert not result.passed
    for fragment in WRONG_RNN[cls]:
        assert fragment in text, f"expected {fragment!r} in:\n{text}"
    if cls is PerStep:  # the per-step bug costs only its own property: each step's matrix is a valid mask
        assert "PASS drops a fraction p" in text and "PASS a fresh mask on every call" in text
    if cls is DataMul:
        assert "PASS samples ONE dropped W_hh per call" in text
    if cls is LastStateOnly:  # judged on the call itself, whatever it returns
        assert (
            "PASS leaves weight_hh and the input unchanged" in text and "PASS does not call torch's" in text
        )
    if cls is ScaledByP:
        assert "p=0 should use weight_hh unchanged" in text


@pytest.mark.parametrize("fn", list(WRONG_WD), ids=[f.__name__ for f in WRONG_WD])
def test_wrong_weight_drop_loses_hidden_points_too(grader, fn):
    result = grader.check("weight_drop_hidden", fn)
    assert result.score < result.max_score, "\n".join(result.messages)


@pytest.mark.parametrize("cls", list(WRONG_RNN), ids=[c.__name__ for c in WRONG_RNN])
def test_wrong_weight_drop_rnn_loses_hidden_points_too(grader, cls):
    result = grader.check("WeightDropRNN_hidden", cls)
    assert result.score < result.max_score, "\n".join(result.messages)
