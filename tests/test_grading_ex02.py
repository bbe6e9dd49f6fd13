"""The ex02 (regularize an over-fitting MLP) grader against realistic wrong answers and several correct ones.

Every wrong model must fail with its specific diagnosis (message text pinned); every correct one, whatever its
dropout modules or how it is written, must get full marks. The measured check trains networks (about 2 s each
on one thread), so only a few candidates go through it: the rest fail or pass on structure alone.
"""

from __future__ import annotations

import random

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch import nn

from dropout_course.grading import Grader
from dropout_course.grading import ex02_regularize_mlp as ex02
from dropout_course.grading.core import CheckResult
from dropout_course.layers import Dropout
from dropout_course.models import MLP, MLPConfig

EX = "ex02_regularize_mlp"


@pytest.fixture(scope="module")
def grader():
    return Grader(EX)


def _fails_with(result: CheckResult, *fragments: str) -> None:
    text = "\n".join(result.messages)
    assert not result.passed, text
    assert result.score < result.max_score
    for fragment in fragments:
        assert fragment in text, f"expected {fragment!r} in:\n{text}"


def _full_marks(result: CheckResult) -> None:
    assert result.passed and result.score == result.max_score, "\n".join(result.messages)


def _sequential(
    p_input=0.2, p_hidden=(0.5, 0.5), p_logits=0.0, width=256, drop=nn.Dropout, before_relu=False
):
    """The plain 784-width-width-10 network with dropout at the given sites (0 = no module there)."""
    layers: list[nn.Module] = [drop(p_input)] if p_input else []
    sizes = [(784, width), (width, width)]
    for (n_in, n_out), p in zip(sizes, p_hidden, strict=True):
        hidden = [nn.Linear(n_in, n_out), nn.ReLU()]
        if p:
            hidden.insert(1 if before_relu else 2, drop(p))
        layers += hidden
    layers.append(nn.Linear(width, 10))
    if p_logits:
        layers.append(drop(p_logits))
    return nn.Sequential(*layers)


# --------------------------------------------------------------------------- read_the_curves

RIGHT = {0.0: "over-fitting", 0.5: "good fit", 0.9: "under-fitting"}


@pytest.mark.parametrize(
    "answer",
    [
        RIGHT,
        lambda: dict(RIGHT),
        {0: "Over-fitting", "0.5": "good_fit", 0.9: "under fitting"},
    ],
    ids=["dict", "function", "spelling"],
)
def test_right_curve_diagnoses_get_full_marks(grader, answer):
    _full_marks(grader.check("read_the_curves", answer))


@pytest.mark.parametrize(
    ("answer", "fragments"),
    [
        (
            {**RIGHT, 0.9: "over-fitting"},
            ["p = 0.9: its *training* loss stays high", "under-fitting, not over"],
        ),
        ({**RIGHT, 0.0: "under-fitting"}, ["p = 0: its training loss goes to ~0", "over-fitting, not under"]),
        ({**RIGHT, 0.5: "over-fitting"}, ["p = 0.5: its validation loss stays well below"]),
        ({0.0: "over-fitting", 0.5: "good fit"}, ["no answer for p = 0.9"]),
        ({**RIGHT, 0.5: ...}, ["still `...`"]),
        ({**RIGHT, 0.5: "fine"}, ["the answer for p = 0.5 is 'fine'; use one of"]),
        (["over-fitting", "good fit", "under-fitting"], ["expected a dict {p: diagnosis}"]),
    ],
    ids=["0.9-as-over", "0-as-under", "0.5-as-over", "missing", "ellipsis", "unknown-word", "list"],
)
def test_wrong_curve_diagnoses_are_named(grader, answer, fragments):
    _fails_with(grader.check("read_the_curves", answer), *fragments)


def test_unimplemented_curve_answer(grader):
    def read_the_curves():
        raise NotImplementedError()

    result = grader.check("read_the_curves", read_the_curves)
    assert result.score == 0
    _fails_with(result, "is not implemented yet")


# --------------------------------------------------------------------------- make_regularized_mlp: correct


class HandWritten(nn.Module):
    """One dropout module used at both hidden sites, input dropout from the course's layers."""

    def __init__(self):
        super().__init__()
        self.fc1, self.fc2, self.out = nn.Linear(784, 256), nn.Linear(256, 256), nn.Linear(256, 10)
        self.drop_in, self.drop = Dropout(0.1), nn.Dropout(0.4)

    def forward(self, x):
        x = self.drop(F.relu(self.fc1(self.drop_in(x.flatten(1)))))
        return self.out(self.drop(torch.relu(self.fc2(x))))


def _inplace_with_flatten(seed):
    """Flatten first, in-place ReLU and dropout, named layers: an unusual but valid style."""
    from collections import OrderedDict

    return nn.Sequential(
        OrderedDict(
            flat=nn.Flatten(),
            fc1=nn.Linear(784, 256),
            relu1=nn.ReLU(inplace=True),
            drop1=nn.Dropout(0.5, inplace=True),
            fc2=nn.Linear(256, 256),
            relu2=nn.ReLU(inplace=True),
            drop2=nn.Dropout(p=0.5, inplace=True),
            logits=nn.Linear(256, 10),
        )
    )


CORRECT = {
    "inplace_named_with_flatten": _inplace_with_flatten,
    "sequential_nn_dropout": lambda seed: _sequential(),
    "hidden_only_course_dropout": lambda seed: _sequential(0.0, (0.5, 0.5), drop=Dropout),
    "before_relu_other_ps": lambda seed: _sequential(0.3, (0.6, 0.4), before_relu=True),
    "hand_written_module": lambda seed: HandWritten(),
}


@pytest.mark.parametrize("name", list(CORRECT))
def test_correct_models_pass_the_structure_check(grader, name):
    _full_marks(grader.check("make_regularized_mlp", CORRECT[name]))


def test_trace_reads_every_site_of_the_course_mlp():
    model = MLP(MLPConfig(hidden=(256, 256), input_dropout=0.2, hidden_dropout=0.5))
    linears, sites = ex02.trace_sites(model, torch.rand(4, 784))
    assert [(m.in_features, m.out_features) for m in linears] == [(784, 256), (256, 256), (256, 10)]
    assert sites == [[0.2], [0.5], [0.5], []]
    assert model.training  # modes restored


# --------------------------------------------------------------------------- make_regularized_mlp: wrong

_GLOBAL_MODEL = _sequential()


class NoTrainingFlag(nn.Module):
    """F.dropout without training=self.training: still drops in eval mode."""

    def __init__(self):
        super().__init__()
        self.fc1, self.fc2, self.out = nn.Linear(784, 256), nn.Linear(256, 256), nn.Linear(256, 10)

    def forward(self, x):
        x = F.dropout(F.relu(self.fc1(x)), 0.5)
        return self.out(F.dropout(F.relu(self.fc2(x)), 0.5))


class DeclaredNotUsed(nn.Module):
    def __init__(self):
        super().__init__()
        self.body = nn.Sequential(nn.Linear(784, 256), nn.ReLU(), nn.Linear(256, 256), nn.ReLU())
        self.out, self.dropout = nn.Linear(256, 10), nn.Dropout(0.5)

    def forward(self, x):
        return self.out(self.body(x))


class Softmaxed(nn.Module):
    def __init__(self):
        super().__init__()
        self.net = _sequential()

    def forward(self, x):
        return torch.softmax(self.net(x), dim=1)


class DropoutBuiltInForward(nn.Module):
    """nn.Dropout(p)(x) inside forward: a new module at every call, never a sub-module, always in train mode."""

    def __init__(self):
        super().__init__()
        self.fc1, self.fc2, self.out = nn.Linear(784, 256), nn.Linear(256, 256), nn.Linear(256, 10)

    def forward(self, x):
        x = nn.Dropout(0.5)(F.relu(self.fc1(x)))
        return self.out(nn.Dropout(0.5)(F.relu(self.fc2(x))))


WRONG = {
    "dropout_module_built_in_forward": (
        lambda seed: DropoutBuiltInForward(),
        [
            "`nn.Dropout(p)(x)`, which creates a new module at every call",
            "a dropout module created inside forward (`nn.Dropout(p)(x)`) is always in train mode",
            "not checked: dropout is still on in eval mode",
        ],
    ),
    "dropout1d": (
        lambda seed: _sequential(0.0, (0.5, 0.5), drop=nn.Dropout1d),
        ["Dropout1d drops whole channels", "it zeroes whole examples"],
    ),
    "alpha_dropout": (
        lambda seed: _sequential(0.0, (0.5, 0.5), drop=nn.AlphaDropout),
        ["AlphaDropout is meant for SELU networks"],
    ),
    "no_dropout": (lambda seed: _sequential(0.0, (0.0, 0.0)), ["the model has no dropout at all"]),
    "dropout_on_logits": (
        lambda seed: _sequential(0.0, (0.5, 0.5), p_logits=0.5),
        ["dropout on the logits (p = 0.5 after the output layer)"],
    ),
    "only_on_logits": (
        lambda seed: _sequential(0.0, (0.0, 0.0), p_logits=0.3),
        ["dropout only after the output layer (on the logits)", "dropout on the logits"],
    ),
    "keep_probability_hidden": (
        lambda seed: _sequential(0.2, (0.8, 0.8)),
        ["hidden p = 0.8 drops 80% of the hidden units", "did you mean keep probability 0.8, i.e. p = 0.2?"],
    ),
    "keep_probability_input": (
        lambda seed: _sequential(0.8, (0.5, 0.5)),
        ["input p = 0.8 drops 80% of every digit's pixels"],
    ),
    "too_little": (lambda seed: _sequential(0.0, (0.05, 0.05)), ["hidden p = 0.05 is too little"]),
    "only_input": (lambda seed: _sequential(0.2, (0.0, 0.0)), ["dropout only on the input pixels"]),
    "only_first_hidden": (lambda seed: _sequential(0.2, (0.5, 0.0)), ["no dropout after hidden layer 2"]),
    "p_left_at_zero": (
        lambda seed: nn.Sequential(
            nn.Linear(784, 256),
            nn.ReLU(),
            nn.Dropout(0.0),
            nn.Linear(256, 256),
            nn.ReLU(),
            nn.Dropout(0.0),
            nn.Linear(256, 10),
        ),
        ["the dropout after hidden layer 1 and 2 has p = 0, which drops nothing"],
    ),
    "course_mlp": (
        lambda seed: MLP(MLPConfig(hidden=(256, 256), input_dropout=0.2, hidden_dropout=0.5)),
        ["not credited: calls dropout_course.models.MLP", "build the network yourself"],
    ),
    "activation_missing": (
        lambda seed: nn.Sequential(
            nn.Dropout(0.2),
            nn.Linear(784, 256),
            nn.Dropout(0.5),
            nn.Linear(256, 256),
            nn.ReLU(),
            nn.Dropout(0.5),
            nn.Linear(256, 10),
        ),
        ["no activation after hidden layer 1"],
    ),
    "tanh_instead_of_relu": (
        lambda seed: nn.Sequential(
            nn.Linear(784, 256),
            nn.Tanh(),
            nn.Dropout(0.5),
            nn.Linear(256, 256),
            nn.Tanh(),
            nn.Dropout(0.5),
            nn.Linear(256, 10),
        ),
        ["hidden layer 1 uses tanh instead of ReLU"],
    ),
    "functional_without_training_flag": (
        lambda seed: NoTrainingFlag(),
        [
            "dropout is applied inside forward by something that is not a sub-module of the model",
            "in eval mode two forward passes",
        ],
    ),
    "declared_not_used": (lambda seed: DeclaredNotUsed(), ["its forward pass never calls them"]),
    "softmax_output": (lambda seed: Softmaxed(), ["returns probabilities (a softmax at the end)"]),
    "wider_network": (
        lambda seed: _sequential(width=512),
        ["Linear 784 -> 512 -> 512 -> 10; keep the plain network's layers", "fix the layers first"],
    ),
    "no_output_layer": (
        lambda seed: nn.Sequential(nn.Linear(784, 256), nn.ReLU(), nn.Dropout(0.5)),
        ["to shape (16, 256), expected (N, 10) logits"],
    ),
    "same_object_every_call": (lambda seed: _GLOBAL_MODEL, ["returns the same model object on every call"]),
    "returns_the_class": (lambda seed: HandWritten, ["returns the class HandWritten, not a model"]),
    "returns_a_config": (
        lambda seed: MLPConfig(input_dropout=0.2, hidden_dropout=0.5),
        ["returns an MLPConfig"],
    ),
    "returns_none": (lambda seed: None, ["returns None"]),
}


@pytest.mark.parametrize("name", list(WRONG))
def test_wrong_models_fail_the_structure_check_with_their_diagnosis(grader, name):
    make, fragments = WRONG[name]
    result = grader.check("make_regularized_mlp", make)
    _fails_with(result, *fragments)
    if name in ("activation_missing", "tanh_instead_of_relu"):  # one cause, one failing property
        assert sum(not p.passed for p in result.properties) == 1, "\n".join(result.messages)


def test_unimplemented_and_hanging_models_fail_cleanly():
    def make_regularized_mlp(seed):
        raise NotImplementedError()

    result = Grader(EX).check("make_regularized_mlp", make_regularized_mlp)
    assert result.score == 0 and "is not implemented yet" in "\n".join(result.messages)

    class Hangs(nn.Module):
        def forward(self, x):
            while True:
                pass

    result = Grader(EX, time_limit=0.5).check("make_regularized_mlp", lambda seed: Hangs())
    _fails_with(result, "did not finish within 0.5 s")


# --------------------------------------------------------------------------- measured improvement


def test_correct_choices_improve_the_validation_loss_measurably(grader):
    for make in (CORRECT["sequential_nn_dropout"], CORRECT["hidden_only_course_dropout"]):
        _full_marks(grader.check("validation_improvement", make))
    _full_marks(grader.check("validation_improvement_hidden", CORRECT["sequential_nn_dropout"]))


def test_too_little_dropout_shows_no_improvement(grader):
    result = grader.check("validation_improvement", lambda seed: _sequential(0.0, (0.05, 0.05)))
    _fails_with(result, "no clear improvement", "still memorises the images, too little dropout")
    assert result.properties[1].passed  # it does fit the training data


def test_no_dropout_is_not_trained(grader):
    result = grader.check("validation_improvement", WRONG["no_dropout"][0])
    _fails_with(result, "the model drops nothing (no dropout with p > 0)")


def test_keep_probability_under_fits(grader):
    result = grader.check("validation_improvement", lambda seed: _sequential(0.1, (0.9, 0.9)))
    _fails_with(result, "too much dropout: the model under-fits", "under-fitting: the final training loss")
    assert result.score == 0


def test_a_broken_structure_is_not_trained(grader):
    result = grader.check("validation_improvement", WRONG["wider_network"][0])
    _fails_with(result, "fix make_regularized_mlp first", "Linear 784 -> 512 -> 512 -> 10")


def test_grading_leaves_the_learners_rng_and_model_alone(grader):
    model = _sequential()
    before = {k: v.clone() for k, v in model.state_dict().items()}
    torch.manual_seed(123)
    np.random.seed(123)
    random.seed(123)
    state = (torch.get_rng_state(), np.random.get_state()[1].copy(), random.getstate())
    calls = []

    def make(seed):
        calls.append(seed)
        return _sequential() if calls[:-1] else model  # the first model built is the learner's object

    grader.check("make_regularized_mlp", make)
    assert torch.equal(torch.get_rng_state(), state[0])
    assert np.array_equal(np.random.get_state()[1], state[1]) and random.getstate() == state[2]
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())
    assert model.training
