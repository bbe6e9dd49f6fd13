"""The ex09 (debug a training script) grader: the script's bugs each fail their own property, with the
diagnosis of that bug; correct fixes written in other styles pass."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from grader_helpers import failed_diagnoses as failed
from torch import nn

from dropout_course.grading import Grader


@pytest.fixture(scope="module")
def grader():
    return Grader("ex09_debug_dropout", time_limit=5)


# --------------------------------------------------------------------------- evaluate


def ok_evaluate(model, X, y):
    modes = {m: m.training for m in model.modules()}
    model.eval()
    with torch.inference_mode():
        acc = (model(X).argmax(-1) == y).sum().item() / len(y)
    for m, mode in modes.items():
        m.training = mode
    return float(acc)


def script_evaluate(model, X, y):
    return (model(X).argmax(1) == y).float().mean()


def eval_top_only(model, X, y):
    was = model.training
    model.eval()
    with torch.no_grad():
        acc = (model(X).argmax(1) == y).float().mean().item()
    model.train(was)  # sets every child to the parent's mode: mixed modes are lost
    return acc


def eval_with_graph(model, X, y):
    was = [m.training for m in model.modules()]
    model.eval()
    acc = (model(X).argmax(1) == y).float().mean().item()
    for m, mode in zip(model.modules(), was, strict=True):
        m.training = mode
    return acc


def ok_evaluate_numpy_scalar(model, X, y):  # a NumPy float64 is a float (accepted as in ex06)
    return np.float64(ok_evaluate(model, X, y))


@pytest.mark.parametrize("fn", [ok_evaluate, ok_evaluate_numpy_scalar])
def test_evaluate_fix_passes(grader, fn):
    result = grader.check("evaluate", fn)
    assert result.passed, result.messages


@pytest.mark.parametrize(
    ("fn", "prop", "diagnosis"),
    [
        (
            script_evaluate,
            "dropout is off while evaluating (deterministic, eval-mode accuracy)",
            "model.eval()",
        ),
        (eval_top_only, "leaves every module in the mode it found it", "restore it"),
        (eval_with_graph, "no autograd graph; returns a Python float", "torch.no_grad()"),
        (
            lambda m, X, y: torch.tensor(ok_evaluate(m, X, y)),
            "no autograd graph; returns a Python float",
            "Python float",
        ),
        (
            lambda m, X, y: 100 * ok_evaluate(m, X, y),
            "dropout is off while evaluating (deterministic, eval-mode accuracy)",
            "percentage",
        ),
        (
            lambda m, X, y: round(ok_evaluate(m, X, y) * len(y)),  # (pred == y).sum().item()
            "dropout is off while evaluating (deterministic, eval-mode accuracy)",
            "returns the NUMBER of correct predictions (108 of 400)",
        ),
    ],
)
def test_evaluate_bugs_fail_their_property(grader, fn, prop, diagnosis):
    result = grader.check("evaluate", fn)
    assert diagnosis in failed(result).get(prop, ""), result.messages


def test_script_evaluate_fails_every_property_it_gets_wrong(grader):
    assert set(failed(grader.check("evaluate", script_evaluate))) == {
        "dropout is off while evaluating (deterministic, eval-mode accuracy)",
        "no autograd graph; returns a Python float",
    }


# --------------------------------------------------------------------------- build_classifier


def script_build(in_features, hidden, n_classes, keep_prob):
    layers, width = [], in_features
    for h in hidden:
        layers += [nn.Linear(width, h), nn.ReLU()]
        width = h
    layers += [nn.Linear(width, n_classes), nn.Dropout(keep_prob)]
    return nn.Sequential(*layers)


def build(in_features, hidden, n_classes, keep_prob, *, p_of=lambda k: 1 - k, logits=False, act=True):
    layers, width = [], in_features
    for h in hidden:
        layers += [nn.Linear(width, h), *([nn.ReLU()] if act else []), nn.Dropout(p_of(keep_prob))]
        width = h
    layers.append(nn.Linear(width, n_classes))
    if logits:
        layers.append(nn.Dropout(p_of(keep_prob)))
    return nn.Sequential(*layers)


def nested_build(in_features, hidden, n_classes, keep_prob):
    blocks, width = [], in_features
    for h in hidden:
        blocks.append(nn.Sequential(nn.Linear(width, h), nn.GELU(), nn.Dropout(p=1 - keep_prob)))
        width = h
    return nn.Sequential(*blocks, nn.Linear(width, n_classes))


def two_hidden_layers_only(in_features, hidden, n_classes, keep_prob):  # right for hidden = (16, 8) only
    p = 1 - keep_prob
    return nn.Sequential(
        nn.Linear(in_features, hidden[0]),
        nn.ReLU(),
        nn.Dropout(p),
        nn.Linear(hidden[0], hidden[1]),
        nn.ReLU(),
        nn.Dropout(p),
        nn.Linear(hidden[1], n_classes),
    )


def widths_zip_build(
    in_features, hidden, n_classes, keep_prob
):  # consecutive widths zipped, add_module names
    model, widths = nn.Sequential(), [in_features, *hidden]
    for i, (a, b) in enumerate(zip(widths[:-1], widths[1:], strict=True)):
        model.add_module(f"fc{i}", nn.Linear(a, b))
        model.add_module(f"act{i}", nn.ReLU(inplace=True))
        model.add_module(f"drop{i}", nn.Dropout(p=round(1.0 - keep_prob, 6)))
    model.add_module("out", nn.Linear(widths[-1], n_classes))
    return model


@pytest.mark.parametrize("fn", [build, nested_build, widths_zip_build])
def test_classifier_fixes_pass(grader, fn):
    result = grader.check("build_classifier", fn)
    assert result.passed, result.messages


@pytest.mark.parametrize(
    ("fn", "prop", "diagnosis"),
    [
        (
            lambda *a: build(*a, p_of=lambda k: k),
            "nn.Dropout gets the DROP probability 1 - keep_prob",
            "probability of DROPPING",
        ),
        (lambda *a: build(*a, logits=True), "no dropout on the logits", "after the output layer"),
        (lambda *a: build(*a, act=False), "dropout after every hidden activation", "no activation"),
        (script_build, "nn.Dropout gets the DROP probability 1 - keep_prob", "probability of DROPPING"),
        (script_build, "no dropout on the logits", "after the output layer"),
        (script_build, "dropout after every hidden activation", "no dropout between hidden layers"),
        (
            two_hidden_layers_only,
            "builds 10 -> 16 -> 8 -> 3 and runs",
            "build one Linear -> ReLU -> Dropout per entry",
        ),
    ],
)
def test_classifier_bugs_fail_their_property(grader, fn, prop, diagnosis):
    result = grader.check("build_classifier", fn)
    assert diagnosis in failed(result).get(prop, ""), result.messages


# --------------------------------------------------------------------------- mc_predict


def dropout_modules(model):
    return [m for m in model.modules() if isinstance(m, nn.modules.dropout._DropoutNd)]


def ok_mc(model, x, T=50):
    modes = [m.training for m in model.modules()]
    model.eval()
    for m in dropout_modules(model):
        m.train()
    with torch.no_grad():
        out = torch.softmax(model(x.repeat(T, 1)), 1).reshape(T, len(x), -1).mean(0)
    for m, mode in zip(model.modules(), modes, strict=True):
        m.training = mode
    return out


def script_mc(model, x, T=50):
    model.train()
    return torch.stack([torch.softmax(model(x), dim=1) for _ in range(T)]).mean(0)


def mc_no_restore(model, x, T=50):
    model.eval()
    for m in dropout_modules(model):
        m.train()
    with torch.no_grad():
        return torch.stack([torch.softmax(model(x), 1) for _ in range(T)]).mean(0)


def mc_eval_only(model, x, T=50):
    was = [m.training for m in model.modules()]
    model.eval()
    with torch.no_grad():
        out = torch.softmax(model(x), 1)
    for m, mode in zip(model.modules(), was, strict=True):
        m.training = mode
    return out


def mc_one_pass(model, x, T=50):
    return ok_mc(model, x, 1)


@torch.no_grad()
def ok_mc_running_sum(model, x, T=50):  # a loop with a running sum; dropout modules found by their type name
    saved = {m: m.training for m in model.modules()}
    model.eval()
    for m in model.modules():
        if "Dropout" in type(m).__name__:
            m.train()
    total = torch.zeros(())
    for _ in range(T):
        total = total + model(x).softmax(dim=-1)
    for m, mode in saved.items():
        m.train(mode) if not any(True for _ in m.children()) else setattr(m, "training", mode)
    return total / T


@pytest.mark.parametrize("fn", [ok_mc, ok_mc_running_sum])
def test_mc_fix_passes_visible_and_hidden(grader, fn):
    for name in ("mc_predict", "mc_predict_hidden"):
        result = grader.check(name, fn)
        assert result.passed, result.messages


def _mc_loop(model, x, T, *, call_eval=True, grad=False, average="probabilities"):
    modes = [m.training for m in model.modules()]
    if call_eval:
        model.eval()
    for m in dropout_modules(model):
        m.train()
    with torch.set_grad_enabled(grad):
        logits = torch.stack([model(x) for _ in range(T)])
    for m, mode in zip(model.modules(), modes, strict=True):
        m.training = mode
    return logits.mean(0).softmax(1) if average == "logits" else logits.softmax(2).mean(0)


def mc_mean_of_logits(model, x, T=50):
    return _mc_loop(model, x, T, average="logits")


def mc_keeps_graph(model, x, T=50):
    return _mc_loop(model, x, T, grad=True)


def mc_dropout_on_without_eval(model, x, T=50):  # fixes "dropout on" but not the model's train mode
    return _mc_loop(model, x, T, call_eval=False)


def mc_repeat_interleave_reshaped_t_first(model, x, T=50):  # rows of different examples averaged
    modes = [m.training for m in model.modules()]
    model.eval()
    for m in dropout_modules(model):
        m.train()
    with torch.no_grad():
        out = torch.softmax(model(x.repeat_interleave(T, 0)), 1).reshape(T, len(x), -1).mean(0)
    for m, mode in zip(model.modules(), modes, strict=True):
        m.training = mode
    return out


MC_MISTAKES = {
    mc_repeat_interleave_reshaped_t_first: {
        "dropout samples: T passes with fresh masks, averaged": "row i must be the mean over the T passes of example i"
    },
    mc_mean_of_logits: {
        "dropout samples: T passes with fresh masks, averaged": "averages the LOGITS of the T passes"
    },
    mc_keeps_graph: {"no autograd graph": "`torch.no_grad()`"},
    mc_dropout_on_without_eval: {
        "BatchNorm uses its running statistics (p = 0 gives the eval prediction)": "call `model.eval()` first",
        "BatchNorm's running statistics are left unchanged": "running statistics changed",
    },
}


@pytest.mark.parametrize("fn", list(MC_MISTAKES), ids=[f.__name__ for f in MC_MISTAKES])
def test_mc_mistakes_fail_exactly_their_properties(grader, fn):
    result = grader.check("mc_predict", fn)
    assert set(failed(result)) == set(MC_MISTAKES[fn]), result.messages
    for prop, diagnosis in MC_MISTAKES[fn].items():
        assert diagnosis in failed(result)[prop], result.messages
    assert not grader.check("mc_predict_hidden", fn).passed


@pytest.mark.parametrize(
    ("fn", "prop", "diagnosis"),
    [
        (
            script_mc,
            "BatchNorm uses its running statistics (p = 0 gives the eval prediction)",
            "batch's own statistics",
        ),
        (script_mc, "BatchNorm's running statistics are left unchanged", "running statistics changed"),
        (mc_no_restore, "restores every module's mode", "not restored"),
        (mc_eval_only, "dropout samples: T passes with fresh masks, averaged", "dropout must stay ON"),
        (mc_one_pass, "dropout samples: T passes with fresh masks, averaged", "average the T passes"),
    ],
)
def test_mc_bugs_fail_their_property(grader, fn, prop, diagnosis):
    result = grader.check("mc_predict", fn)
    assert diagnosis in failed(result).get(prop, ""), result.messages


# --------------------------------------------------------------------------- FreshDropout


class ScriptDropout(nn.Module):
    def __init__(self, p):
        super().__init__()
        self.p, self.mask = p, None

    def forward(self, x):
        if not self.training:
            return x
        if self.mask is None or self.mask.shape != x.shape:
            self.mask = (torch.rand_like(x) >= self.p).to(x.dtype) / (1 - self.p)
        return x * self.mask


class Fresh(nn.Module):
    def __init__(self, p):
        super().__init__()
        self.p = p

    def forward(self, x):
        if not self.training:
            return x
        return x * torch.bernoulli(torch.full_like(x, 1 - self.p)) / (1 - self.p)


class BatchShared(Fresh):
    def forward(self, x):
        if not self.training:
            return x
        return x * (torch.rand(x.shape[1:]) >= self.p).to(x.dtype) / (1 - self.p)


class WrapsTorch(nn.Module):
    def __init__(self, p):
        super().__init__()
        self.drop = nn.Dropout(p)

    def forward(self, x):
        return self.drop(x)


def test_fresh_dropout_fix_passes(grader):
    for name in ("FreshDropout", "FreshDropout_hidden"):
        result = grader.check(name, Fresh)
        assert result.passed, result.messages


class FreshBernoulliInPlace(nn.Module):  # bernoulli_ on an empty tensor, the input scaled in place
    def __init__(self, p):
        super().__init__()
        self.p = p

    def forward(self, x):
        if not self.training:
            return x
        return x.mul_(torch.empty_like(x).bernoulli_(1 - self.p).div_(1 - self.p))


def test_fresh_dropout_in_another_style_passes(grader):
    for name in ("FreshDropout", "FreshDropout_hidden"):
        result = grader.check(name, FreshBernoulliInPlace)
        assert result.passed, result.messages


class ReturnsTheScaledMask(Fresh):  # forgets to multiply by x: right on an input of ones only
    def forward(self, x):
        if not self.training:
            return x
        return (torch.rand_like(x) >= self.p).to(x.dtype) / (1 - self.p)


class KeepsWithProbabilityP(Fresh):
    def forward(self, x):
        if not self.training:
            return x
        return x * (torch.rand_like(x) < self.p).to(x.dtype) / (1 - self.p)


@pytest.mark.parametrize(
    ("cls", "prop", "diagnosis"),
    [
        (KeepsWithProbabilityP, "drops a fraction p and scales the kept units by 1/(1-p)", "about 1 - p"),
        (
            ReturnsTheScaledMask,
            "drops a fraction p and scales the kept units by 1/(1-p)",
            "the output is the scaled mask itself; return x * mask / (1 - p)",
        ),
        (ScriptDropout, "a fresh mask on every forward call", "cached and reused"),
        (BatchShared, "drops a fraction p and scales the kept units by 1/(1-p)", "share one mask"),
        (WrapsTorch, "a fresh mask on every forward call", "wraps a ready-made dropout layer (Dropout)"),
    ],
)
def test_fresh_dropout_bugs_fail_their_property(grader, cls, prop, diagnosis):
    result = grader.check("FreshDropout", cls)
    assert diagnosis in failed(result).get(prop, ""), result.messages
    assert not grader.check("FreshDropout_hidden", cls).passed


def test_the_course_reference_and_torch_dropout_are_not_credited(grader):
    from dropout_course.layers import Dropout
    from dropout_course.uncertainty import mc_predict

    for name in ("FreshDropout", "FreshDropout_hidden"):
        for cls, finding in [(Dropout, "dropout_course.layers.Dropout"), (nn.Dropout, "torch.nn")]:
            result = grader.check(name, cls)
            assert result.score == 0 and finding in result.messages[0], "\n".join(result.messages)
    result = grader.check("mc_predict", lambda model, x, T=50: mc_predict(model, x, T).mean(0))
    assert result.score == 0 and "dropout_course.uncertainty.mc_predict" in result.messages[0], (
        result.messages
    )
