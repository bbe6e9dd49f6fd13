"""The ex06 (MC dropout, ECE) grader against realistic wrong implementations and several correct ones.

Every wrong implementation must fail with its specific diagnosis (message text pinned); every correct one,
whatever the order of its random calls, must get full marks, hidden checks included.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch

from dropout_course.grading import Grader
from dropout_course.uncertainty import DROPOUT_TYPES, expected_calibration_error, mc_predict

EX = "ex06_mc_dropout"


@pytest.fixture(scope="module")
def grader():
    return Grader(EX)


def _fails_with(result, *fragments):
    text = "\n".join(result.messages)
    assert not result.passed, text
    assert result.score < result.max_score
    for fragment in fragments:
        assert fragment in text, f"expected {fragment!r} in:\n{text}"


def _mc_mode(model):
    """Eval mode, dropout modules in train mode; returns the saved modes."""
    modes = {m: m.training for m in model.modules()}
    model.eval()
    for m in model.modules():
        if isinstance(m, DROPOUT_TYPES):
            m.train()
    return modes


def _restore(modes):
    for m, mode in modes.items():
        m.training = mode


# --------------------------------------------------------------------------- correct mc_predict


@torch.no_grad()
def ok_repeat(model, x, T):
    modes = _mc_mode(model)
    try:
        out = model(x.repeat(T, 1))  # (T*N, C)
    finally:
        _restore(modes)
    return torch.softmax(out.reshape(T, len(x), -1), dim=-1)


def ok_interleave_transpose(model, x, T):
    torch.rand(2)  # another RNG call order
    was = [m.training for m in model.modules()]
    model.eval()
    for m in model.modules():
        if "Dropout" in type(m).__name__:
            m.train()
    with torch.no_grad():
        logits = model(x.repeat_interleave(T, dim=0)).reshape(len(x), T, -1).transpose(0, 1)
    for m, mode in zip(model.modules(), was, strict=True):
        m.train(mode)
    return logits.softmax(-1)


def ok_expand(model, x, T):
    n = x.shape[0]
    modes = _mc_mode(model)
    big = x.unsqueeze(0).expand(T, *x.shape).reshape(T * n, *x.shape[1:])
    probs = torch.softmax(model(big).detach(), dim=1).view(T, n, -1)
    _restore(modes)
    return probs


def ok_reference(model, x, T):
    return mc_predict(model, x, T, softmax=True)


def ok_inference_mode(model, x, T):  # inference_mode instead of no_grad; dropout modules found by their p
    saved = [(m, m.training) for m in model.modules()]
    model.eval()
    model.apply(lambda m: m.train() if "dropout" in type(m).__name__.lower() else None)
    with torch.inference_mode():
        out = model(torch.cat([x] * T)).view(T, x.shape[0], -1)
    for m, mode in saved:
        m.train(mode) if not list(m.children()) else setattr(m, "training", mode)
    return torch.nn.functional.softmax(out, dim=2)


OK_MC = [ok_repeat, ok_interleave_transpose, ok_expand, ok_inference_mode]


@pytest.mark.parametrize("fn", OK_MC, ids=[f.__name__ for f in OK_MC])
def test_correct_mc_predict_gets_full_marks(grader, fn):
    for name in ("mc_predict", "mc_predict_hidden"):
        result = grader.check(name, fn)
        assert result.passed and result.score == result.max_score, "\n".join(result.messages)


# --------------------------------------------------------------------------- wrong mc_predict


@torch.no_grad()
def no_dropout(model, x, T):
    was = model.training
    model.eval()
    out = model(x.repeat(T, 1)).reshape(T, len(x), -1).softmax(-1)
    model.train(was)
    return out


@torch.no_grad()
def one_pass_copied(model, x, T):
    modes = _mc_mode(model)
    out = model(x).softmax(-1).expand(T, -1, -1)
    _restore(modes)
    return out


@torch.no_grad()
def batchnorm_train(model, x, T):
    was = model.training
    model.train()
    out = model(x.repeat(T, 1)).reshape(T, len(x), -1).softmax(-1)
    model.train(was)
    return out


@torch.no_grad()
def not_restored(model, x, T):
    _mc_mode(model)
    return model(x.repeat(T, 1)).reshape(T, len(x), -1).softmax(-1)


@torch.no_grad()
def ends_in_eval(model, x, T):
    _mc_mode(model)
    out = model(x.repeat(T, 1)).reshape(T, len(x), -1).softmax(-1)
    model.eval()
    return out


@torch.no_grad()
def loop(model, x, T):
    modes = _mc_mode(model)
    out = torch.stack([model(x).softmax(-1) for _ in range(T)])
    _restore(modes)
    return out


@torch.no_grad()
def shape_ntc(model, x, T):
    modes = _mc_mode(model)
    out = model(x.repeat(T, 1)).softmax(-1).reshape(len(x), T, -1)
    _restore(modes)
    return out


@torch.no_grad()
def order_mixed(model, x, T):
    modes = _mc_mode(model)
    out = model(x.repeat_interleave(T, 0)).softmax(-1).reshape(T, len(x), -1)
    _restore(modes)
    return out


@torch.no_grad()
def logits(model, x, T):
    modes = _mc_mode(model)
    out = model(x.repeat(T, 1)).reshape(T, len(x), -1)
    _restore(modes)
    return out


@torch.no_grad()
def softmax_over_samples(model, x, T):
    modes = _mc_mode(model)
    out = model(x.repeat(T, 1)).reshape(T, len(x), -1).softmax(0)
    _restore(modes)
    return out


def mean_only(model, x, T):
    return ok_repeat(model, x, T).mean(0)


@torch.no_grad()
def no_reshape(model, x, T):
    modes = _mc_mode(model)
    out = model(x.repeat(T, 1)).softmax(-1)
    _restore(modes)
    return out


@torch.no_grad()
def restores_top_level_only(model, x, T):
    was = model.training
    _mc_mode(model)
    out = model(x.repeat(T, 1)).reshape(T, len(x), -1).softmax(-1)
    model.train(was)  # every module gets the top-level flag: a module in another mode is not restored
    return out


def with_gradients(model, x, T):
    modes = _mc_mode(model)
    try:
        out = model(x.repeat(T, 1))
    finally:
        _restore(modes)
    return torch.softmax(out.reshape(T, len(x), -1), dim=-1)


def uses_course_mode(model, x, T):
    from dropout_course.uncertainty import mc_dropout_mode

    with torch.no_grad(), mc_dropout_mode(model):
        out = model(x.repeat(T, 1))
    return torch.softmax(out.reshape(T, len(x), -1), dim=-1)


@torch.no_grad()
def all_train(model, x, T):  # dropout on by putting the whole model in train mode: BatchNorm too
    modes = {m: m.training for m in model.modules()}
    model.train()
    out = model(x.repeat(T, 1)).reshape(T, len(x), -1).softmax(-1)
    _restore(modes)
    return out


@torch.no_grad()
def dropout_on_without_eval(model, x, T):  # switches dropout on but never calls model.eval()
    modes = {m: m.training for m in model.modules()}
    for m in model.modules():
        if isinstance(m, DROPOUT_TYPES):
            m.train()
    out = model(x.repeat(T, 1)).reshape(T, len(x), -1).softmax(-1)
    _restore(modes)
    return out


@torch.no_grad()
def log_probabilities(model, x, T):
    modes = _mc_mode(model)
    out = model(x.repeat(T, 1)).reshape(T, len(x), -1).log_softmax(-1)
    _restore(modes)
    return out


WRONG_MC = {
    dropout_on_without_eval: ["when the model is in train mode before the call", "Call `model.eval()` first"],
    log_probabilities: ["the outputs are log-probabilities (`log_softmax`)"],
    ok_reference: ["not credited: calls", "dropout_course.uncertainty.mc_predict:"],
    uses_course_mode: ["not credited: calls dropout_course.uncertainty.mc_dropout_mode"],
    restores_top_level_only: ["before the call the modules were in different modes", "save EVERY module's"],
    with_gradients: ["the samples carry gradients", "torch.no_grad"],
    all_train: ["BatchNorm ran in train mode"],
    no_dropout: ["all T samples are identical: dropout is not active"],
    one_pass_copied: ["all T samples are identical"],
    batchnorm_train: ["BatchNorm ran in train mode", "PASS dropout is on"],
    not_restored: ["the model was in eval mode before the call", "Dropout is in train mode"],
    ends_in_eval: ["the model was in train mode before the call", "are in eval mode"],
    loop: ["a Python loop over T", "PASS samples have MC dropout's mean"],
    shape_ntc: ["output has shape (N, T, C) = (8, 50, 3)"],
    order_mixed: ["out[:, i] does not hold the samples of example i"],
    logits: ["these are logits; apply `torch.softmax(logits, dim=-1)`"],
    softmax_over_samples: ["softmax over the wrong dimension (the samples, dim 0)"],
    mean_only: ["output has shape (N, C) = (8, 3): return all T samples"],
    no_reshape: ["output has shape (T*N, C) = (400, 3): reshape it"],
}


@pytest.mark.parametrize("fn", list(WRONG_MC), ids=[f.__name__ for f in WRONG_MC])
def test_wrong_mc_predict_is_diagnosed_and_loses_hidden_points(grader, fn):
    hidden = grader.check("mc_predict_hidden", fn)
    assert hidden.score < hidden.max_score, "\n".join(hidden.messages)
    _fails_with(grader.check("mc_predict", fn), *WRONG_MC[fn])


@torch.no_grad()
def only_torch_dropout(model, x, T):  # isinstance(m, nn.Dropout) misses the course's Dropout
    modes = {m: m.training for m in model.modules()}
    model.eval()
    for m in model.modules():
        if isinstance(m, torch.nn.Dropout):
            m.train()
    out = model(x.repeat(T, 1)).reshape(T, len(x), -1).softmax(-1)
    _restore(modes)
    return out


def test_dropout_found_by_torch_class_only_is_named(grader):
    result = grader.check("mc_predict", only_torch_dropout)
    _fails_with(
        result, "the course's `Dropout` module never ran in train mode", "`isinstance(m, nn.Dropout)`"
    )
    assert "never ran in train mode" not in "\n".join(grader.check("mc_predict", no_dropout).messages)


def test_grading_leaves_learner_rng_alone(grader):
    torch.manual_seed(5)
    expected = torch.rand(3)
    torch.manual_seed(5)
    grader.check("mc_predict", ok_repeat)
    assert torch.equal(torch.rand(3), expected)


# --------------------------------------------------------------------------- expected_calibration_error


def ok_ece_loop(probs, labels, n_bins=10):
    conf, pred = probs.max(dim=1)
    correct = (pred == labels).float()
    ece = 0.0
    for b in range(n_bins):
        lo, hi = b / n_bins, (b + 1) / n_bins
        in_bin = (conf > lo) & (conf <= hi) if b > 0 else (conf <= hi)
        if in_bin.any():
            ece += in_bin.float().mean() * (correct[in_bin].mean() - conf[in_bin].mean()).abs()
    return float(ece)


def ok_ece_numpy_floor(probs, labels, n_bins=10):
    p = np.asarray(probs, dtype=np.float64)
    conf, correct = p.max(1), p.argmax(1) == np.asarray(labels)
    idx = np.minimum((conf * n_bins).astype(int), n_bins - 1)  # [b/n, (b+1)/n), 1.0 in the last bin
    total = 0.0
    for b in np.unique(idx):
        sel = idx == b
        total += sel.sum() / len(conf) * abs(correct[sel].mean() - conf[sel].mean())
    return total


def ok_ece_reference(probs, labels, n_bins=10):
    return expected_calibration_error(probs, labels, n_bins)


def ece_numpy_float(probs, labels, n_bins=10):  # np.float64 is a float
    return np.float64(ok_ece_loop(probs, labels, n_bins))


def ok_ece_histogram(probs, labels, n_bins=10):  # sums per bin with np.histogram; |B|/N folded in
    p = probs.double().numpy()
    conf, correct = p.max(1), (p.argmax(1) == labels.numpy()).astype(float)
    s_conf, _ = np.histogram(conf, bins=n_bins, range=(0, 1), weights=conf)
    s_correct, _ = np.histogram(conf, bins=n_bins, range=(0, 1), weights=correct)
    return float(np.abs(s_correct - s_conf).sum() / len(conf))


def ok_ece_bucketize(probs, labels, n_bins=10):  # torch.bucketize and scatter_add, no Python loop
    conf, pred = probs.double().max(1)
    correct = (pred == labels).double()
    which = torch.bucketize(conf, torch.linspace(0, 1, n_bins + 1, dtype=torch.float64)[1:-1])
    gap = torch.zeros(n_bins, dtype=torch.float64).scatter_add_(0, which, correct - conf)
    return (gap.abs().sum() / len(conf)).item()


OK_ECE = [ok_ece_loop, ok_ece_numpy_floor, ece_numpy_float, ok_ece_histogram, ok_ece_bucketize]


@pytest.mark.parametrize("fn", OK_ECE, ids=[f.__name__ for f in OK_ECE])
def test_correct_ece_gets_full_marks(grader, fn):
    result = grader.check("expected_calibration_error", fn)
    assert result.passed and result.score == result.max_score, "\n".join(result.messages)


def _binned(probs, labels, n_bins, conf=None):
    p = probs.double()
    top, pred = p.max(1)
    conf = top if conf is None else conf
    correct = (pred == labels).double()
    idx = torch.clamp((conf * n_bins).long(), max=n_bins - 1)
    rows = []
    for b in range(n_bins):
        sel = idx == b
        if sel.any():
            rows.append((sel.double().mean(), correct[sel].mean(), conf[sel].mean()))
    return rows


def no_abs(probs, labels, n_bins=10):
    return float(sum(w * (a - c) for w, a, c in _binned(probs, labels, n_bins)))


def unweighted(probs, labels, n_bins=10):
    rows = _binned(probs, labels, n_bins)
    return float(sum(abs(a - c) for _, a, c in rows) / len(rows))


def over_all_bins(probs, labels, n_bins=10):
    return float(sum(abs(a - c) for _, a, c in _binned(probs, labels, n_bins)) / n_bins)


def true_class_confidence(probs, labels, n_bins=10):
    conf = probs.double().gather(1, labels[:, None]).squeeze(1)
    return float(sum(w * abs(a - c) for w, a, c in _binned(probs, labels, n_bins, conf)))


def equal_mass(probs, labels, n_bins=10):
    conf, pred = probs.double().max(1)
    correct = (pred == labels).double()
    order = conf.argsort()
    return float(
        sum(len(ch) / len(conf) * abs(correct[ch].mean() - conf[ch].mean()) for ch in order.chunk(n_bins))
    )


def drops_confidence_one(probs, labels, n_bins=10):
    conf, pred = probs.double().max(1)
    correct = (pred == labels).double()
    idx = (conf * n_bins).long()  # conf == 1.0 -> bin n_bins, never visited
    total = 0.0
    for b in range(n_bins):
        sel = idx == b
        if sel.any():
            total += sel.double().mean() * abs(correct[sel].mean() - conf[sel].mean())
    return float(total)


def fixed_ten_bins(probs, labels, n_bins=10):
    return ok_ece_loop(probs, labels, 10)


def nan_for_empty_bins(probs, labels, n_bins=10):
    conf, pred = probs.double().max(1)
    correct = (pred == labels).double()
    idx = torch.clamp((conf * n_bins).long(), max=n_bins - 1)
    total = 0.0
    for b in range(n_bins):
        sel = idx == b
        total += sel.double().mean() * abs(correct[sel].mean() - conf[sel].mean())
    return float(total)


def returns_per_bin(probs, labels, n_bins=10):
    return torch.tensor([float(abs(a - c)) for _, a, c in _binned(probs, labels, n_bins)])


def ece_tensor(probs, labels, n_bins=10):
    return torch.tensor(ok_ece_loop(probs, labels, n_bins))


def _edges_loop(probs, labels, edges, gap):
    conf, pred = probs.max(1)
    correct = (pred == labels).float()
    ece = 0.0
    for i, (lo, hi) in enumerate(zip(edges[:-1], edges[1:], strict=True)):
        sel = ((conf > lo) | ((i == 0) & (conf >= lo))) & (conf <= hi)
        if sel.any():
            ece += sel.float().mean() * gap(correct[sel], conf[sel])
    return float(ece)


def _abs_gap(correct, conf):
    return (correct.mean() - conf.mean()).abs()


def linspace_n_bins(probs, labels, n_bins=10):  # n_bins edges: n_bins - 1 bins
    return _edges_loop(probs, labels, torch.linspace(0, 1, n_bins), _abs_gap)


def squared_gaps(probs, labels, n_bins=10):
    return _edges_loop(
        probs, labels, torch.linspace(0, 1, n_bins + 1), lambda a, c: (a.mean() - c.mean()) ** 2
    )


def abs_per_example(probs, labels, n_bins=10):
    return _edges_loop(probs, labels, torch.linspace(0, 1, n_bins + 1), lambda a, c: (a - c).abs().mean())


def in_percent(probs, labels, n_bins=10):
    return 100 * ok_ece_loop(probs, labels, n_bins)


def bins_over_data_range(probs, labels, n_bins=10):
    conf = probs.max(1).values
    return _edges_loop(
        probs, labels, torch.linspace(float(conf.min()), float(conf.max()), n_bins + 1), _abs_gap
    )


WRONG_ECE = {
    linspace_n_bins: ["there are n_bins - 1 bins", "`torch.linspace(0, 1, n_bins + 1)`"],
    squared_gaps: ["the gaps are squared"],
    abs_per_example: ["averages |correct_i - conf_i| over the examples of a bin"],
    in_percent: ["returns the ECE in percent", "is in percent: return the fraction"],
    bins_over_data_range: ["the bins split [min conf, max conf], the range of this data"],
    ok_ece_reference: ["not credited: calls dropout_course.uncertainty.expected_calibration_error"],
    ece_tensor: ["returns a Tensor", "Python float"],
    no_abs: ["summed with their sign"],
    unweighted: ["every non-empty bin counts the same"],
    over_all_bins: ["averaged over all n_bins bins"],
    true_class_confidence: ["TOP class probability"],
    equal_mass: ["equal numbers of examples (quantiles)"],
    drops_confidence_one: ["exactly 1.0 belongs to the LAST bin", "PASS equal-width bins"],
    fixed_ten_bins: ["use the n_bins argument", "PASS equal-width bins"],
    nan_for_empty_bins: ["Skip empty bins"],
    returns_per_bin: ["must return one number"],
}


@pytest.mark.parametrize("fn", list(WRONG_ECE), ids=[f.__name__ for f in WRONG_ECE])
def test_wrong_ece_is_diagnosed(grader, fn):
    result = grader.check("expected_calibration_error", fn)
    _fails_with(result, *WRONG_ECE[fn])
    if fn is not drops_confidence_one:  # the edge case is not blamed for a mistake seen elsewhere
        assert "LAST bin" not in "\n".join(result.messages)


def test_unknown_model_errors_become_diagnoses(grader):
    def crashes(model, x, T):
        return model(x.reshape(T, -1))

    result = grader.check("mc_predict", crashes)
    _fails_with(result, "`crashes` raised RuntimeError")
