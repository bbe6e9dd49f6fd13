"""The ex01 grader against a catalogue of realistic wrong implementations and several correct ones.

Every wrong implementation must fail with its specific diagnosis (the message text is pinned); every
correct one, whatever its RNG calls, must get full marks.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch import nn

from dropout_course.grading import Grader
from dropout_course.grading.core import CheckResult

EX = "ex01_inverted_dropout"


@pytest.fixture(scope="module")
def grader():
    return Grader(EX, time_limit=1.5)


def _fails_with(result: CheckResult, *fragments: str) -> None:
    text = "\n".join(result.messages)
    assert not result.passed, text
    assert result.score < result.max_score
    for fragment in fragments:
        assert fragment in text, f"expected {fragment!r} in:\n{text}"


# --------------------------------------------------------------------------- correct dropout_forward


def ok_rand(x, p, training=True):
    if not training or p == 0:
        return x
    if p == 1:
        return torch.zeros_like(x)
    return x * (torch.rand_like(x) >= p).to(x.dtype) / (1 - p)


def ok_bernoulli(x, p, training=True):
    if not training:
        return x.clone()
    if p == 1:
        return x * 0
    mask = torch.bernoulli(torch.full_like(x, 1 - p))
    return mask * x / (1 - p)


def ok_numpy(x, p, training=True):
    if not training:
        return x
    keep = np.random.rand(*x.shape) < 1 - p
    scale = 0.0 if p == 1 else 1 / (1 - p)
    return x * torch.from_numpy(keep).to(x.dtype) * scale


def ok_where_other_rng_order(x, p, training=True):
    torch.rand(3)  # an extra RNG call first: graders must not depend on the call order
    if not training:
        return x
    u = torch.rand(x.shape, dtype=x.dtype).flip(0)
    return torch.where(u > p, x / max(1 - p, 1e-12), torch.zeros_like(x))


def ok_empty_bernoulli_(x, p, training=True):
    if not training or p == 0.0:
        return x
    if p == 1.0:
        return torch.zeros_like(x)
    return x * x.new_empty(x.shape).bernoulli_(1 - p).div_(1 - p)


@pytest.mark.parametrize(
    "fn", [ok_rand, ok_bernoulli, ok_numpy, ok_where_other_rng_order, ok_empty_bernoulli_]
)
def test_correct_dropout_forward_gets_full_marks(grader, fn):
    result = grader.check("dropout_forward", fn)
    assert result.passed and result.score == result.max_score, "\n".join(result.messages)
    hidden = grader.check("dropout_forward_hidden", fn)
    assert hidden.passed, "\n".join(hidden.messages)


def test_reference_layers_are_not_credited(grader):
    from dropout_course.layers import Dropout, dropout, dropout_backward_numpy, dropout_forward_numpy

    cases = [
        ("dropout_forward", dropout, {}),
        ("Dropout", Dropout, {}),
        ("dropout_forward_numpy", dropout_forward_numpy, {}),
        ("dropout_backward_numpy", dropout_backward_numpy, {"forward": dropout_forward_numpy}),
    ]
    for name, ref, extra in cases:
        result = grader.check(name, ref, **extra)
        assert result.score == 0, "\n".join(result.messages)
        assert f"calls dropout_course.layers.{ref.__name__}" in result.messages[0], result.messages[0]


# --------------------------------------------------------------------------- wrong dropout_forward


def no_rescale(x, p, training=True):
    return x * (torch.rand_like(x) >= p) if training else x


def scale_by_p(x, p, training=True):
    return x * (torch.rand_like(x) >= p) * p if training else x


def keep_prob(x, p, training=True):
    return x * (torch.rand_like(x) < p) / p if training else x


def shared_mask(x, p, training=True):
    if not training:
        return x
    mask = (torch.rand(x.shape[1:]) >= p).to(x.dtype)
    return x * mask / (1 - p)


def whole_rows(x, p, training=True):
    if not training:
        return x
    mask = (torch.rand(x.shape[0], *([1] * (x.dim() - 1))) >= p).to(x.dtype)
    return x * mask / (1 - p)


def ignores_training(x, p, training=True):
    return x * (torch.rand_like(x) >= p) / (1 - p)


def eval_scales(x, p, training=True):
    return x * (torch.rand_like(x) >= p) / (1 - p) if training else x * (1 - p)


def in_place(x, p, training=True):
    if not training:
        return x
    x *= (torch.rand_like(x) >= p) / (1 - p)
    return x


def reseeds(x, p, training=True):
    torch.manual_seed(0)
    return x * (torch.rand_like(x) >= p) / (1 - p) if training else x


_CACHED = {}


def cached_mask(x, p, training=True):
    if not training:
        return x
    key = (tuple(x.shape), p)
    if key not in _CACHED:
        _CACHED[key] = (torch.rand_like(x) >= p).to(x.dtype) / (1 - p) if p < 1 else torch.zeros_like(x)
    return x * _CACHED[key]


def nan_at_one(x, p, training=True):
    return x * (torch.rand_like(x) >= p) / (1 - p) if training else x


def float32_mask(x, p, training=True):
    if not training:
        return x
    if p == 1:
        return torch.zeros_like(x)
    return (x * ((torch.rand(x.shape) >= p).float() / (1 - p))).float()


def uses_f_dropout(x, p, training=True):
    return F.dropout(x, p, training)


def uses_module(x, p, training=True):
    layer = nn.Dropout(p)
    layer.train(training)
    return layer(x)


def uses_torch_dropout(x, p, training=True):
    return torch.dropout(x, p, training)


from torch.nn.functional import dropout as aliased  # noqa: E402 - imported under another name on purpose


def uses_alias(x, p, training=True):
    return aliased(x, p=p, training=training)


def returns_numpy(x, p, training=True):
    return (x * (torch.rand_like(x) >= p) / (1 - p)).numpy()


def returns_nothing(x, p, training=True):
    x * (torch.rand_like(x) >= p) / (1 - p)


def crashes(x, p, training=True):
    return x * mask  # noqa: F821 - NameError on purpose


def endless(x, p, training=True):
    while True:
        pass


def swallows_everything(x, p, training=True):
    while True:
        try:
            while True:
                pass
        except Exception:
            pass


def detached(x, p, training=True):
    if not training:
        return x
    mask = np.random.rand(*x.shape) >= p
    return torch.from_numpy(x.detach().numpy() * mask / (1 - p)).to(x.dtype)


def raises_not_implemented(x, p, training=True):
    # YOUR CODE HERE
    raise NotImplementedError()


def zeroes_everything(x, p, training=True):  # nothing is ever kept: the scale must not pass vacuously
    return torch.zeros_like(x)


WRONG = {
    zeroes_everything: ["nothing is kept in training mode: every element is dropped", "same cause"],
    no_rescale: ["kept values are not rescaled"],
    scale_by_p: ["scaled by p instead of 1/(1-p)"],
    keep_prob: ["`p` is read as the keep probability", "scaled by 1/p instead of 1/(1-p)"],
    shared_mask: ["one mask is shared by the whole batch"],
    whole_rows: ["whole samples are dropped"],
    ignores_training: ["dropout is still applied in eval mode (training=False)"],
    eval_scales: ["scaled by (1-p) in eval mode (training=False)", "non-inverted"],
    in_place: ["was modified in place"],
    reseeds: ["the same mask on every call"],
    cached_mask: ["the same mask on every call"],
    nan_at_one: ["p=1 gives NaN"],
    float32_mask: ["wrong dtype: a float64 input gives a torch.float32 output"],
    uses_f_dropout: [
        "not credited: calls torch.nn.functional.dropout: the task is to write dropout yourself"
    ],
    uses_module: ["not credited: calls torch.nn", "the task is to write dropout yourself"],
    uses_torch_dropout: ["not credited: calls torch.dropout"],
    uses_alias: ["not credited: calls torch.nn.functional.dropout"],
    returns_numpy: ["returns a NumPy array"],
    returns_nothing: ["returns None: did you forget the `return` statement?"],
    crashes: ["raised NameError: name 'mask' is not defined (line"],
    endless: ["did not finish within 1.5 s"],
    swallows_everything: ["did not finish within 1.5 s"],
    detached: ["detached from autograd"],
    raises_not_implemented: ["is not implemented yet"],
}


@pytest.mark.parametrize("fn", list(WRONG), ids=[f.__name__ for f in WRONG])
def test_wrong_dropout_forward_is_diagnosed(grader, fn):
    _fails_with(grader.check("dropout_forward", fn), *WRONG[fn])


def test_grading_leaves_learner_state_alone(grader):
    torch.manual_seed(123)
    expected = torch.rand(3)
    torch.manual_seed(123)
    np.random.seed(5)
    np_expected = np.random.rand(2)
    np.random.seed(5)
    grader.check("dropout_forward", ok_numpy)
    assert torch.equal(torch.rand(3), expected), "the learner's torch RNG stream was changed by grading"
    assert np.array_equal(np.random.rand(2), np_expected)
    assert F.dropout is not None and F.dropout.__name__ == "dropout"
    assert torch._VF.dropout.__name__ == "dropout" and nn.Dropout.forward.__name__ == "forward"


def test_checks_run_on_one_thread_and_restore_the_count(grader):
    seen = []

    def spy(x, p, training=True):
        seen.append(torch.get_num_threads())
        return ok_numpy(x, p, training)

    threads = torch.get_num_threads()
    torch.set_num_threads(2)
    try:
        grader.check("dropout_forward", spy)
        assert seen and set(seen) == {1}, f"checks should run torch on one thread, saw {set(seen)}"
        assert torch.get_num_threads() == 2
    finally:
        torch.set_num_threads(threads)


def test_results_render_as_text_and_html(grader):
    result = grader.check("dropout_forward", scale_by_p)
    text, html = str(result), result._repr_html_()
    assert "dropout_forward:" in text and "[ ]" in text and "[x]" in text and "-> " in text
    assert "&#10008;" in html and "scaled by p instead" in html
    assert any(m.startswith("FAIL scales the kept elements") for m in result.messages)
    summary = grader.summary()
    assert "dropout_forward" in str(summary) and "<table>" in summary._repr_html_()


def test_unknown_check_and_exercise():
    g = Grader(EX)
    assert "no check named" in g.check("nope", ok_rand).error
    with pytest.raises(ValueError, match="unknown exercise"):
        Grader("ex99_nothing")


# --------------------------------------------------------------------------- Dropout module


def make_module(forward_fn=ok_rand, check_p=True, own_flag=False):
    class Candidate(nn.Module):
        def __init__(self, p=0.5):
            super().__init__()
            if check_p and not 0 <= p <= 1:
                raise ValueError(f"p must be in [0, 1], got {p}")
            self.p = p
            self.flag = True

        def forward(self, x):
            return forward_fn(x, self.p, self.flag if own_flag else self.training)

    return Candidate


class WrapsTorch(nn.Module):
    def __init__(self, p=0.5):
        super().__init__()
        if not 0 <= p <= 1:
            raise ValueError(p)
        self.inner = nn.Dropout(p)

    def forward(self, x):
        return self.inner(x)


class NotAModule:
    def __init__(self, p):
        self.p = p

    def __call__(self, x):
        return x


@pytest.mark.parametrize("fwd", [ok_rand, ok_bernoulli, ok_numpy])
def test_correct_modules_pass(grader, fwd):
    result = grader.check("Dropout", make_module(fwd))
    assert result.passed, "\n".join(result.messages)


@pytest.mark.parametrize(
    "cls, fragments",
    [
        (make_module(check_p=False), ["`Candidate(-0.1)` is accepted", "raise ValueError"]),
        (make_module(own_flag=True), ["dropout is still applied in eval mode"]),
        (make_module(no_rescale), ["kept values are not rescaled"]),
        (WrapsTorch, ["not credited: calls torch.nn", "the task is to write dropout yourself"]),
        (NotAModule, ["expected a class derived from torch.nn.Module"]),
    ],
    ids=["no-p-check", "own-flag", "no-rescale", "wraps-torch", "not-module"],
)
def test_wrong_modules_are_diagnosed(grader, cls, fragments):
    _fails_with(grader.check("Dropout", cls), *fragments)


# --------------------------------------------------------------------------- NumPy pair


def np_ok_rng_order(x, p, mode="train", rng=None):
    if mode == "test":
        return x, {"mask": None, "mode": mode}
    u = rng.uniform(size=x.shape[::-1]).T  # a different draw order than the reference
    mask = (u < 1 - p) / (1 - p) if p < 1 else np.zeros_like(x)
    return x * mask, {"mask": mask, "mode": mode}


def np_ok_binomial(x, p, mode="train", rng=None):
    if mode == "test":
        return x.copy(), (None, mode)
    mask = rng.binomial(1, 1 - p, size=x.shape) * (0.0 if p == 1 else 1 / (1 - p))
    return x * mask, (mask, mode)


def np_ok_backward_rng_order(dout, cache):
    mask, mode = (cache["mask"], cache["mode"]) if isinstance(cache, dict) else cache
    return dout if mode == "test" else dout * mask


def np_global_rng(x, p, mode="train", rng=None):
    if mode == "test":
        return x, {}
    mask = (np.random.rand(*x.shape) >= p) / (1 - p) if p < 1 else np.zeros_like(x)
    return x * mask, {"mask": mask}


def np_no_scale(x, p, mode="train", rng=None):
    if mode == "test":
        return x, {}
    mask = rng.random(x.shape) >= p
    return x * mask, {"mask": mask}


def np_only_out(x, p, mode="train", rng=None):
    return x * (rng.random(x.shape) >= p) / (1 - p)


def np_test_scales(x, p, mode="train", rng=None):
    if mode == "test":
        return x * (1 - p), {}
    mask = (rng.random(x.shape) >= p) / (1 - p) if p < 1 else np.zeros_like(x)
    return x * mask, {"mask": mask}


@pytest.mark.parametrize("fn", [np_ok_rng_order, np_ok_binomial])
def test_correct_numpy_forward_passes(grader, fn):
    result = grader.check("dropout_forward_numpy", fn)
    assert result.passed, "\n".join(result.messages)
    back = grader.check("dropout_backward_numpy", np_ok_backward_rng_order, forward=fn)
    assert back.passed, "\n".join(back.messages)


@pytest.mark.parametrize(
    "fn, fragments",
    [
        (np_global_rng, ["draw the mask from the `rng` argument"]),
        (np_no_scale, ["kept values are not rescaled"]),
        (np_only_out, ["should return a pair (out, cache)"]),
        (np_test_scales, ["scaled by (1-p) in test mode"]),
    ],
    ids=["global-rng", "no-scale", "no-cache", "test-scales"],
)
def test_wrong_numpy_forward_is_diagnosed(grader, fn, fragments):
    _fails_with(grader.check("dropout_forward_numpy", fn), *fragments)


def bw_ignores_mask(dout, cache):
    return dout


def bw_forgets_scale(dout, cache):
    mask = cache["mask"]
    return dout if mask is None else dout * (mask != 0)


def bw_returns_none(dout, cache):
    dout * cache["mask"]


@pytest.mark.parametrize(
    "fn, fragments",
    [
        (bw_ignores_mask, ["backward ignores the mask"]),
        (bw_forgets_scale, ["backward forgets the 1/(1-p) scale"]),
        (bw_returns_none, ["returns None"]),
    ],
    ids=["ignores-mask", "forgets-scale", "none"],
)
def test_wrong_numpy_backward_is_diagnosed(grader, fn, fragments):
    from dropout_course.layers import dropout_forward_numpy

    _fails_with(grader.check("dropout_backward_numpy", fn, forward=dropout_forward_numpy), *fragments)


def test_backward_without_forward_explains(grader):
    from dropout_course.layers import dropout_backward_numpy

    _fails_with(grader.check("dropout_backward_numpy", dropout_backward_numpy), "pass your forward pass too")


def python_division(x, p, training=True):
    if not training:
        return x
    return x * (torch.rand_like(x) >= p).to(x.dtype) * (1.0 / (1.0 - p))


def test_zero_division_at_p_one_gets_a_hint(grader):
    _fails_with(grader.check("dropout_forward", python_division), "p=1 divides by zero", "return zeros")


# --------------------------------------------------------------------------- not the learner's own code
#
# Using torch's dropout (any entry point) or the course's reference code where the task is to write it
# costs the whole check, and the finding names what was used. Three detectors: a runtime trace, a static
# scan of the source, and a fingerprint of the behaviour (checked here on its own too, as the grading
# judge sees only what a sandboxed candidate returns).

import dropout_course.layers as course_layers  # noqa: E402
from dropout_course.grading.core import CheckContext  # noqa: E402
from dropout_course.grading.detect import scan_source  # noqa: E402

_SAVED_VF = torch._VF.dropout


def cheat_vf_saved(x, p, training=True):
    return _SAVED_VF(x, p, training)


def cheat_aten_dropout(x, p, training=True):
    return torch.ops.aten.dropout(x, p, training)


def cheat_aten_native(x, p, training=True):
    return torch.ops.aten.native_dropout(x, p, training)[0] if training else x


def cheat_aten_feature(x, p, training=True):
    return torch.ops.aten.feature_dropout(x, p, training)


def cheat_feature_dropout(x, p, training=True):
    return torch.feature_dropout(x, p, training)


def cheat_alpha_dropout(x, p, training=True):
    return torch.alpha_dropout(x, p, training)


def cheat_getattr(x, p, training=True):
    return getattr(F, "drop" + "out")(x, p, training)


def cheat_course_function(x, p, training=True):
    return course_layers.dropout(x, p, training)


def cheat_course_module(x, p, training=True):
    layer = course_layers.Dropout(p)
    layer.train(training)
    return layer(x)


def cheat_course_droppath(x, p, training=True):
    return course_layers.DropConnectLinear  # only referenced: the static scan names it


class CheatSubclass(course_layers.Dropout):
    pass


class CheatModuleNative(nn.Module):
    def __init__(self, p=0.5):
        super().__init__()
        if not 0 <= p <= 1:
            raise ValueError(p)
        self.p = p

    def forward(self, x):
        return torch.ops.aten.native_dropout(x, self.p, self.training)[0]


DETECTED = {
    uses_f_dropout: "torch.nn.functional.dropout",
    uses_module: "torch.nn",
    uses_torch_dropout: "torch.dropout",
    uses_alias: "torch.nn.functional.dropout",
    cheat_vf_saved: "torch.dropout",
    cheat_aten_dropout: "torch.ops.aten.dropout",
    cheat_aten_native: "torch.ops.aten.native_dropout",
    cheat_aten_feature: "torch.ops.aten.feature_dropout",
    cheat_feature_dropout: "torch.feature_dropout",
    cheat_alpha_dropout: "torch.alpha_dropout",
    cheat_getattr: "torch.nn.functional.dropout",
    cheat_course_function: "dropout_course.layers.dropout",
    cheat_course_module: "dropout_course.layers.Dropout",
}


@pytest.mark.parametrize("fn", list(DETECTED), ids=[f.__name__ for f in DETECTED])
def test_torch_and_course_dropout_cost_the_whole_check(grader, fn):
    for name in ("dropout_forward", "dropout_forward_hidden"):
        result = grader.check(name, fn)
        assert result.score == 0, "\n".join(result.messages)
        assert DETECTED[fn] in result.messages[0], result.messages[0]
        assert "the task is to write dropout yourself" in result.messages[0]


@pytest.mark.parametrize(
    "cls, fragment",
    [
        (course_layers.Dropout, "dropout_course.layers.Dropout"),
        (CheatSubclass, "dropout_course.layers.Dropout"),
        (CheatModuleNative, "torch.ops.aten.native_dropout"),
        (WrapsTorch, "torch.nn"),
    ],
)
def test_modules_using_torch_or_course_dropout_get_nothing(grader, cls, fragment):
    result = grader.check("Dropout", cls)
    assert result.score == 0, "\n".join(result.messages)
    assert fragment in result.messages[0]


_SOLUTION = """
def dropout_forward(x, p, training=True):
    if not training or p == 0.0:
        return x
    return x * (torch.rand_like(x) >= p).to(x.dtype) / (1.0 - p)
"""


def cheat_exec_at_call_time(x, p, training=True):
    namespace = {"torch": torch}
    exec(_SOLUTION, namespace)  # e.g. a solution cell read from a notebook
    return namespace["dropout_forward"](x, p, training)


def test_code_executed_at_call_time_is_not_credited(grader):
    result = grader.check("dropout_forward", cheat_exec_at_call_time)
    assert result.score == 0 and "exec() (code built at run time)" in result.messages[0], result.messages


FORBIDDEN_SOURCES = {
    "from torch import dropout as d\ndef f(x, p, training=True):\n    return d(x, p, training)": "torch.dropout",
    "import torch\ndef f(x, p, training=True):\n    return torch._VF.dropout(x, p, training)": "torch._VF",
    "import torch as T\ndef f(x, p, t=True):\n    return T.ops.aten.native_dropout(x, p, t)[0]": "native_dropout",
    "from torch.nn import functional\ndef f(x, p, t=True):\n    return functional.dropout(x, p)": "dropout",
    "from dropout_course import layers as L\ndef f(x, p, t=True):\n    return L.dropout(x, p)": "layers.dropout",
    "from dropout_course.layers import Dropout\nclass D(Dropout):\n    pass": "layers.Dropout",
    "def f(x, p, t=True):\n    exec(open('exercises/source/ex01.ipynb').read())": "exec",
    "import importlib\ndef f(x, p, t=True):\n    return importlib.import_module('torch').dropout(x, p, t)": "import_module",
    "from dropout_course.grading.core import x\ndef f(x, p, t=True):\n    return x(p)": "grading.core",
    "from dropout_course.instructor import judge\ndef f(x, p, t=True):\n    return judge.x(p)": "instructor",
}


@pytest.mark.parametrize("source", list(FORBIDDEN_SOURCES))
def test_static_scan_names_what_the_source_uses(grader, source):
    names = scan_source(source, grader.specs["dropout_forward"].originality)
    assert any(FORBIDDEN_SOURCES[source] in n for n in names), names


def test_static_scan_leaves_own_code_alone(grader):
    source = (
        "import torch\nfrom torch import nn\nfrom dropout_course.layers import check_probability\n"
        "def dropout_forward(x, p, training=True):\n"
        '    """Unlike torch.nn.functional.dropout, this is mine."""\n'
        "    check_probability(p)\n"
        "    self_dropout = torch.rand_like(x) >= p  # not F.dropout\n"
        "    return x * self_dropout / (1 - p)\n"
    )
    assert scan_source(source, grader.specs["dropout_forward"].originality) == []


def test_source_passed_by_the_judge_is_scanned(grader):
    text = "def dropout_forward(x, p, training=True):\n    return torch.nn.functional.dropout(x, p)\n"
    result = grader.check("dropout_forward", ok_rand, source="import torch\n" + text)
    assert result.score == 0 and "uses torch.nn.functional.dropout" in result.messages[0]


class _Proxy:
    """Stands for a sandboxed candidate: only calls go through (no source, no trace of its insides)."""

    def __init__(self, fn):
        self.fn = fn

    def __call__(self, *args, **kwargs):
        with torch._C.DisableTorchFunction():
            return self.fn(*args, **kwargs)


def _fingerprint(grader, name, candidate):
    spec = grader.specs[name]
    ctx = CheckContext(candidate, 2.0, grader.seed, {"source": ""}, spec.originality)
    return spec.originality.fingerprint(ctx)


@pytest.mark.parametrize(
    "cheat, whose",
    [
        (uses_f_dropout, "torch's dropout"),
        (uses_torch_dropout, "torch's dropout"),
        (cheat_vf_saved, "torch's dropout"),
        (cheat_aten_dropout, "torch's dropout"),
        (cheat_course_function, "the course's reference"),
        (cheat_course_module, "the course's reference"),
    ],
)
def test_fingerprint_alone_names_torch_and_the_course(grader, cheat, whose):
    finding = _fingerprint(grader, "dropout_forward", _Proxy(cheat))
    assert finding and whose in finding, finding


def _bernoulli_torch_text(x, p, training=True):
    if not 0 <= p <= 1:  # torch's own message, copied from nn.Dropout's source
        raise ValueError(f"dropout probability has to be between 0 and 1, but got {p}")
    if not training or p == 0:
        return x
    if p == 1:
        return torch.zeros_like(x)
    return x * (torch.rand_like(x) < 1 - p) / (1 - p)


def _bernoulli_like_torch(x, p, training=True):
    if not 0 <= p <= 1:
        raise ValueError("p out of range")
    if not training or p == 0.0:
        return x
    if p == 1:
        return torch.zeros_like(x)
    return x * torch.empty_like(x).bernoulli_(1 - p).div_(1 - p)  # the very mask torch draws


@pytest.mark.parametrize(
    "fn",
    [
        ok_rand,
        ok_bernoulli,
        ok_numpy,
        ok_where_other_rng_order,
        ok_empty_bernoulli_,
        _bernoulli_torch_text,
        _bernoulli_like_torch,
    ],
)
def test_fingerprint_leaves_from_scratch_code_alone(grader, fn):
    assert _fingerprint(grader, "dropout_forward", _Proxy(fn)) is None
    result = grader.check("dropout_forward", fn)
    assert result.passed, "\n".join(result.messages)


def test_fingerprint_of_the_module_and_numpy(grader):
    assert "reference" in _fingerprint(grader, "Dropout", _Proxy(course_layers.Dropout))
    assert "reference" in _fingerprint(grader, "dropout_forward_numpy", course_layers.dropout_forward_numpy)
    assert _fingerprint(grader, "dropout_forward_numpy", np_ok_rng_order) is None
    assert _fingerprint(grader, "Dropout", _Proxy(make_module(ok_empty_bernoulli_))) is None


def test_static_scan_judges_the_candidate_and_what_it_uses(grader):
    originality = grader.specs["dropout_forward"].originality
    notebook = (
        "import torch\nimport torch.nn.functional as F\n"
        "print(F.dropout(torch.ones(3), 0.5))  # a scratch cell comparing with torch\n"
        "def helper(x, p):\n    return x * (torch.rand_like(x) >= p) / (1 - p)\n"
        "def dropout_forward(x, p, training=True):\n    return helper(x, p) if training else x\n"
        "def cheat(x, p, training=True):\n    return F.dropout(x, p, training)\n"
        "def uses_cheat(x, p, training=True):\n    return cheat(x, p, training)\n"
        "from dropout_course.layers import dropout as imported\n"
    )
    assert scan_source(notebook, originality, "dropout_forward") == []
    assert scan_source(notebook, originality, "uses_cheat") == ["torch.nn.functional.dropout"]
    assert scan_source(notebook, originality, "imported") == ["dropout_course.layers.dropout"]


# --------------------------------------------------------------------------- more learner mistakes


def normal_noise(x, p, training=True):  # torch.randn_like instead of torch.rand_like
    if not training:
        return x
    return x * (torch.randn_like(x) >= p).to(x.dtype) / max(1 - p, 1e-12) * (p < 1)


def under_no_grad(x, p, training=True):
    if not training:
        return x
    with torch.no_grad():
        return x * (torch.rand_like(x) >= p).to(x.dtype) / max(1 - p, 1e-12) * (p < 1)


def data_attribute(x, p, training=True):
    if not training:
        return x
    return x.data * (torch.rand_like(x) >= p).to(x.dtype) / max(1 - p, 1e-12) * (p < 1)


def masked_fill_in_place(x, p, training=True):
    if not training or p == 0:
        return x
    x.masked_fill_(torch.rand_like(x) < p, 0.0)
    return x / (1 - p) if p < 1 else x


def mask_of_first_row(x, p, training=True):  # one mask per feature, broadcast over the batch
    if not training:
        return x
    return x * (torch.rand(x.shape[-1]) >= p).to(x.dtype) / max(1 - p, 1e-12) * (p < 1)


MORE_WRONG = {
    normal_noise: ["drops"],
    under_no_grad: ["detached from autograd"],
    data_attribute: ["detached from autograd"],
    masked_fill_in_place: ["was modified in place"],
    mask_of_first_row: ["one mask is shared by the whole batch"],
}


@pytest.mark.parametrize("fn", list(MORE_WRONG), ids=[f.__name__ for f in MORE_WRONG])
def test_more_wrong_dropout_forward_is_diagnosed(grader, fn):
    _fails_with(grader.check("dropout_forward", fn), *MORE_WRONG[fn])


_NOT_HIDDEN = {endless, swallows_everything}  # time-outs are slow: the visible check covers them


@pytest.mark.parametrize(
    "fn",
    [f for f in [*WRONG, *MORE_WRONG] if f not in _NOT_HIDDEN],
    ids=[f.__name__ for f in WRONG if f not in _NOT_HIDDEN] + [f.__name__ for f in MORE_WRONG],
)
def test_wrong_dropout_forward_loses_hidden_points_too(grader, fn):
    result = grader.check("dropout_forward_hidden", fn)
    assert result.score < result.max_score, "\n".join(result.messages)


class CachedMaskModule(nn.Module):
    def __init__(self, p=0.5):
        super().__init__()
        if not 0 <= p <= 1:
            raise ValueError(p)
        self.p, self.mask = p, None

    def forward(self, x):
        if not self.training:
            return x
        if self.mask is None or self.mask.shape != x.shape:  # drawn once, reused by later calls
            self.mask = (torch.rand_like(x) >= self.p).to(x.dtype)
        return x * self.mask / max(1 - self.p, 1e-12) * (self.p < 1)


def test_a_mask_cached_on_the_module_fails(grader):
    _fails_with(grader.check("Dropout", CachedMaskModule), "the same mask on every call")


def test_one_cause_fails_one_property(grader):
    result = grader.check("dropout_forward", returns_numpy)
    failed = [p for p in result.properties if not p.passed]
    assert "returns a NumPy array" in failed[0].diagnosis
    assert all(p.diagnosis.startswith("skipped: fix") for p in failed[1:]), "\n".join(result.messages)


def test_the_judges_seed_hook_seeds_the_candidates_process(grader):
    seeds = []
    spec = grader.specs["dropout_forward"]
    ctx = CheckContext(ok_rand, 2.0, grader.seed, {"seed_rng": seeds.append}, spec.originality)
    with ctx.seeded(5):
        pass
    with ctx.seeded(6, local=True):
        pass
    assert seeds == [5]


def test_functions_defined_by_exec_are_not_credited(grader):
    namespace = {"torch": torch}
    exec(_SOLUTION, namespace)  # what running the source notebook's solution cells amounts to
    result = grader.check("dropout_forward", namespace["dropout_forward"])
    assert result.score == 0 and "exec()" in result.messages[0], result.messages


def test_turning_off_the_tracing_is_named(grader):
    source = (
        "import torch\nimport torch.nn.functional as F\n"
        "def dropout_forward(x, p, training=True):\n"
        "    with torch._C.DisableTorchFunction():\n"
        "        return F.dropout(x, p, training)\n"
    )
    names = scan_source(source, grader.specs["dropout_forward"].originality, "dropout_forward")
    assert any("turns off the grader's tracing" in n for n in names), names


def cheat_hidden_from_the_mode(x, p, training=True):
    with torch._C.DisableTorchFunction():
        return _SAVED_VF(x, p, training)


def test_a_call_hidden_from_the_trace_is_still_caught(grader):
    result = grader.check("dropout_forward", cheat_hidden_from_the_mode)
    assert result.score == 0, "\n".join(result.messages)
    assert "turns off the grader's tracing" in result.messages[0] or "bit-for-bit" in result.messages[0]
    finding = _fingerprint(grader, "dropout_forward", cheat_hidden_from_the_mode)
    assert finding and "torch's dropout" in finding, finding
