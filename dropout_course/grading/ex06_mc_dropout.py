"""Grader of ``ex06_mc_dropout``: vectorised MC-dropout prediction and expected calibration error.

Checks: ``mc_predict`` (``f(model, x, T) -> (T, N, C)`` class probabilities from ``T`` dropout samples,
only the dropout modules sampled, BatchNorm on its running statistics, modes restored, one batched
forward pass), ``expected_calibration_error`` (``f(probs, labels, n_bins=10) -> float``, equal-width
bins) and the hidden ``mc_predict_hidden`` (a network with ``torch.nn.Dropout`` and other sizes).

The samples are compared with the reference :func:`dropout_course.uncertainty.mc_predict` through the
per-example mean over ``T`` (z-scores with the reference's own spread), so any correct implementation
passes whatever the order of its random calls.
"""

from __future__ import annotations

import functools

import numpy as np
import torch
from torch import nn

from ..layers import Dropout
from ..uncertainty import mc_predict as reference_mc_predict
from .core import CheckSpec, Fail, Property, register

EXERCISE = "ex06_mc_dropout"
Z_MAX = 5.5  # largest allowed |z| of a per-example, per-class mean over the T samples


# --------------------------------------------------------------------------- mc_predict


def _one_thread(test):
    """Run a property test with torch on one thread (restored after): the test networks are tiny, and on a
    busy 2-core machine multi-threaded kernels are 10-100x slower than one thread for them."""

    @functools.wraps(test)
    def wrapper(ctx):
        threads = torch.get_num_threads()
        torch.set_num_threads(1)
        try:
            return test(ctx)
        finally:
            torch.set_num_threads(threads)

    return wrapper


def _prop(name: str, points: float, test) -> Property:
    return Property(name, points, _one_thread(test))


def _model(kind: str = "course"):
    """A small classifier with BatchNorm (running statistics far from a batch's) and dropout; input x."""
    d, h, c, n = (5, 32, 3, 8) if kind == "course" else (6, 24, 4, 5)
    drop = Dropout(0.3) if kind == "course" else nn.Dropout(0.4)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(11 if kind == "course" else 12)
        model = nn.Sequential(nn.Linear(d, h), nn.BatchNorm1d(h), nn.ReLU(), drop, nn.Linear(h, c))
        with torch.no_grad():
            bn = model[1]
            bn.running_mean.copy_(torch.randn(h) * 0.5 + 1.0)
            bn.running_var.copy_(torch.rand(h) * 2 + 2.0)
            model[4].weight.mul_(3.0)
        x = torch.randn(n, d)
    model.eval()
    return model, x


@functools.lru_cache(maxsize=4)
def _reference_stats(kind: str, T: int = 3000):
    """Per-example, per-class mean and spread of the reference's MC-dropout probabilities (cached)."""
    model, x = _model(kind)
    ref = reference_mc_predict(model, x, T, softmax=True, seed=0).double()
    return ref.mean(0), ref.std(0)


class _ForwardCounter:
    def __init__(self, model: nn.Module) -> None:
        self.sizes: list[int] = []
        self.handle = model.register_forward_pre_hook(lambda m, args: self.sizes.append(len(args[0])))


def _run(ctx, kind: str = "course", T: int = 50, mode: bool = False):
    def compute():
        model, x = _model(kind)
        model.train(mode)
        bn_before = model[1].running_mean.clone()
        counter = _ForwardCounter(model)
        out = ctx.call(ctx.candidate, model, x.clone(), T, copy_args=False)
        counter.handle.remove()
        return model, x, out, bn_before, counter.sizes

    return ctx.memo(("run", kind, T, mode), compute)


def _shape(ctx, kind: str = "course", T: int = 50):
    model, x, out, _, _ = _run(ctx, kind, T)
    n, c = len(x), model[4].out_features
    if out is None:
        raise Fail("`mc_predict` returns None: did you forget the `return` statement?")
    if isinstance(out, tuple):
        raise Fail(f"`mc_predict` returns a tuple of {len(out)} items; return one (T, N, C) tensor")
    if not isinstance(out, torch.Tensor):
        raise Fail(f"`mc_predict` returns a {type(out).__name__}, expected a torch.Tensor of shape (T, N, C)")
    shape = tuple(out.shape)
    if shape == (T, n, c):
        return out
    if shape == (n, T, c):
        raise Fail(
            f"output has shape (N, T, C) = {shape}: the samples must come first, (T, N, C) = {(T, n, c)}. "
            "After `x.repeat(T, 1)` row t*N + i is copy t of example i, so reshape to (T, N, C)"
        )
    if shape == (T * n, c):
        raise Fail(f"output has shape (T*N, C) = {shape}: reshape it to (T, N, C) = {(T, n, c)}")
    if shape == (n, c):
        raise Fail(
            f"output has shape (N, C) = {shape}: return all T samples, shape (T, N, C) = {(T, n, c)}, "
            "not their mean (the mean and spread are computed from them later)"
        )
    raise Fail(f"output has shape {shape}, expected (T, N, C) = {(T, n, c)} for T={T}, N={n}, C={c}")


def _probabilities(ctx, kind: str = "course"):
    out = _shape(ctx, kind).detach().double()
    if not torch.isfinite(out).all():
        raise Fail("the output contains NaN or inf")
    if out.min() >= 0 and torch.allclose(out.sum(-1), torch.ones(()).double(), atol=1e-4):
        return
    if out.min() >= 0 and torch.allclose(out.sum(0), torch.ones(()).double(), atol=1e-4):
        raise Fail("softmax over the wrong dimension (the samples, dim 0): use `torch.softmax(out, dim=-1)`")
    if out.min() >= 0 and torch.allclose(out.sum(1), torch.ones(()).double(), atol=1e-4):
        raise Fail("softmax over the wrong dimension (the examples, dim 1): use `torch.softmax(out, dim=-1)`")
    raise Fail(
        "the outputs are not probabilities (rows do not sum to 1 over the classes, or are negative): these "
        "are logits; apply `torch.softmax(logits, dim=-1)`"
    )


def _dropout_on(ctx, kind: str = "course"):
    out = _shape(ctx, kind).detach().double()
    spread = out.std(0)  # (N, C)
    if float(spread.max()) < 1e-7:
        raise Fail(
            "all T samples are identical: dropout is not active. Put the dropout modules in train mode for "
            "the passes (and run T different copies, e.g. `x.repeat(T, 1)`, not one pass copied T times)"
        )
    if float(spread.min(dim=1).values.min()) < 1e-7:
        raise Fail("some examples have T identical samples: every copy of every example needs its own mask")


def _distribution(ctx, kind: str = "course"):
    model, x, out, bn_before, _ = _run(ctx, kind, 50)
    out = _shape(ctx, kind).detach().double()
    if not torch.equal(model[1].running_mean, bn_before):
        raise Fail(
            "BatchNorm ran in train mode: it normalised with the statistics of the batch and changed its "
            "running statistics. Call `model.eval()` first and switch ONLY the dropout modules to train mode"
        )
    _dropout_on(ctx, kind)
    mean, std = _reference_stats(kind)
    z = (out.mean(0) - mean) / (std / np.sqrt(len(out)) + 1e-6)
    if float(z.abs().max()) <= Z_MAX:
        return
    if torch.allclose(out.mean(0).sum(-1), torch.ones(()).double(), atol=1e-4):
        swapped = out.reshape(-1, out.shape[-1]).reshape(len(x), len(out), -1).transpose(0, 1).mean(0)
        if float(((swapped - mean) / (std / np.sqrt(len(out)) + 1e-6)).abs().max()) <= Z_MAX:
            raise Fail(
                "out[:, i] does not hold the samples of example i: the repeated batch and the reshape do not "
                "match. With `x.repeat(T, 1)` (copies one after the other) reshape (T*N, C) -> (T, N, C); "
                "`repeat_interleave` would need (N, T, C) and a transpose"
            )
    raise Fail(
        f"the mean of the samples differs from MC dropout's (largest z-score {float(z.abs().max()):.1f}): "
        "the model in eval mode, only its dropout modules in train mode, one softmax per sample"
    )


def _restores(ctx, kind: str = "course"):
    for mode in (False, True):
        model, _, out, _, _ = _run(ctx, kind, 50, mode)
        wrong = [type(m).__name__ for m in model.modules() if m.training != mode]
        if wrong:
            raise Fail(
                f"the model was in {'train' if mode else 'eval'} mode before the call, but afterwards "
                f"{', '.join(sorted(set(wrong)))} {'is' if len(set(wrong)) == 1 else 'are'} in "
                f"{'eval' if mode else 'train'} mode: save every module's mode and restore it at the end"
            )


def _vectorised(ctx):
    _, x, _, _, sizes = _run(ctx, "course", 50)
    if len(sizes) >= 50:
        raise Fail(
            f"the model ran {len(sizes)} times on batches of {sizes[0]} rows: a Python loop over T. Repeat the "
            "batch T times (`x.repeat(T, 1)`, shape (T*N, ...)) and run ONE forward pass"
        )
    if not sizes or max(sizes) <= len(x):
        raise Fail(f"the model never ran on more than N={len(x)} rows: run it once on the (T*N, ...) batch")


register(
    EXERCISE,
    CheckSpec(
        "mc_predict",
        [
            _prop("returns a tensor of shape (T, N, C)", 2, _shape),
            _prop("returns probabilities (softmax over the classes)", 1, _probabilities),
            _prop("dropout is on: the T samples differ", 2, _dropout_on),
            _prop("samples have MC dropout's mean; BatchNorm keeps its running statistics", 2, _distribution),
            _prop("restores the train/eval mode of every module", 1, _restores),
            _prop("one batched forward pass (no Python loop over T)", 1, _vectorised),
        ],
    ),
)
register(
    EXERCISE,
    CheckSpec(
        "mc_predict_hidden",
        [
            _prop("shape (T, N, C), torch nn.Dropout network", 1, lambda c: _shape(c, "torch")),
            _prop("probabilities", 1, lambda c: _probabilities(c, "torch")),
            _prop("MC dropout's mean, BatchNorm in eval mode", 2, lambda c: _distribution(c, "torch")),
            _prop("modes restored", 1, lambda c: _restores(c, "torch")),
        ],
        hidden=True,
    ),
)

# --------------------------------------------------------------------------- expected_calibration_error


def _ece_data(seed: int = 0, n: int = 600, c: int = 4):
    """Probabilities with a wide range of confidences; labels over- and under-confident in places."""
    rng = np.random.default_rng(seed)
    logits = rng.normal(size=(n, c)) * rng.uniform(0.2, 4.0, size=(n, 1))
    probs = np.exp(logits) / np.exp(logits).sum(1, keepdims=True)
    conf, pred = probs.max(1), probs.argmax(1)
    p_correct = np.clip(0.5 + 1.4 * (conf - 0.6), 0.05, 0.98)  # too confident at the top, not at the bottom
    correct = rng.random(n) < p_correct
    other = (pred + rng.integers(1, c, size=n)) % c
    labels = np.where(correct, pred, other)
    return torch.tensor(probs, dtype=torch.float32), torch.tensor(labels, dtype=torch.int64)


def _bins(conf: np.ndarray, correct: np.ndarray, n_bins: int):
    """Per non-empty equal-width bin: share of the examples, accuracy, mean confidence."""
    edges = np.linspace(0, 1, n_bins + 1)
    which = np.clip(np.searchsorted(edges[1:-1], conf, side="left"), 0, n_bins - 1)
    count = np.bincount(which, minlength=n_bins)
    used = count > 0
    acc = np.bincount(which, weights=correct, minlength=n_bins)[used] / count[used]
    cf = np.bincount(which, weights=conf, minlength=n_bins)[used] / count[used]
    return count[used] / len(conf), acc, cf


def _variants(probs: torch.Tensor, labels: torch.Tensor, n_bins: int) -> dict[str, float]:
    """The ECE and typical wrong versions of it, for diagnosis."""
    p = probs.double().numpy()
    y = labels.numpy()
    conf, correct = p.max(1), (p.argmax(1) == y).astype(float)
    w, acc, cf = _bins(conf, correct, n_bins)
    tw, tacc, tcf = _bins(p[np.arange(len(y)), y], correct, n_bins)
    quant = np.array_split(np.argsort(conf, kind="stable"), n_bins)
    return {
        "reference": float(np.sum(w * np.abs(acc - cf))),
        "no_abs": abs(float(np.sum(w * (acc - cf)))),
        "signed": float(np.sum(w * (acc - cf))),
        "unweighted": float(np.mean(np.abs(acc - cf))),
        "all_bins": float(np.sum(np.abs(acc - cf)) / n_bins),
        "true_class": float(np.sum(tw * np.abs(tacc - tcf))),
        "equal_mass": float(
            sum(len(q) / len(conf) * abs(correct[q].mean() - conf[q].mean()) for q in quant if len(q))
        ),
    }


_DIAGNOSES = {
    "no_abs": "the gaps acc - conf are summed with their sign, so over- and under-confident bins cancel "
    "(the result is just |overall accuracy - mean confidence|): take |acc(B) - conf(B)| in every bin",
    "signed": "the gaps acc - conf are summed with their sign, so over- and under-confident bins cancel: "
    "take |acc(B) - conf(B)| in every bin",
    "unweighted": "every non-empty bin counts the same: weight each bin's gap by its share of the examples, "
    "|B| / N",
    "all_bins": "the gaps are averaged over all n_bins bins: weight each bin's gap by its share of the "
    "examples, |B| / N (empty bins weigh 0)",
    "true_class": "the confidence must be the TOP class probability max_c p_c (the predicted class), not the "
    "probability of the true class",
    "equal_mass": "the bins hold equal numbers of examples (quantiles): use equal-width bins on [0, 1], "
    "edges 0, 1/n_bins, 2/n_bins, ..., 1",
}


def _ece_call(ctx, probs, labels, n_bins):
    value = ctx.call(ctx.candidate, probs.clone(), labels.clone(), n_bins, copy_args=False)
    if value is None:
        raise Fail("`expected_calibration_error` returns None: did you forget the `return` statement?")
    if isinstance(value, torch.Tensor) and value.numel() != 1 or isinstance(value, (tuple, list)):
        raise Fail("`expected_calibration_error` must return one number (the ECE), not several values")
    try:
        number = float(value)
    except (TypeError, ValueError):
        raise Fail(
            f"`expected_calibration_error` returns a {type(value).__name__}, expected a float"
        ) from None
    if not np.isfinite(number):
        raise Fail(f"the ECE is {number}: an empty bin divides 0 by 0? Skip empty bins (weight 0)")
    return number


def _ece_number(ctx):
    probs, labels = _ece_data()
    value = _ece_call(ctx, probs, labels, 10)
    if not 0.0 <= value <= 1.0:
        raise Fail(f"the ECE must lie in [0, 1], got {value:.4g}")


def _diagnose(value: float, probs, labels, n_bins: int) -> None:
    variants = _variants(probs, labels, n_bins)
    if abs(value - variants["reference"]) <= 1e-4:
        return
    for key, message in _DIAGNOSES.items():
        if abs(value - variants[key]) <= 1e-4:
            raise Fail(message)
    raise Fail(
        f"ECE {value:.4f} on a test set of {len(labels)} examples with n_bins={n_bins}, expected "
        f"{variants['reference']:.4f}: sum over bins of |B|/N * |acc(B) - conf(B)|"
    )


def _ece_matches(ctx):
    probs, labels = _ece_data()
    _diagnose(_ece_call(ctx, probs, labels, 10), probs, labels, 10)


def _ece_n_bins(ctx):
    probs, labels = _ece_data(seed=1, n=500)
    for n_bins in (4, 25):
        value = _ece_call(ctx, probs, labels, n_bins)
        ten = _variants(probs, labels, 10)["reference"]
        if abs(value - ten) <= 1e-4 and abs(ten - _variants(probs, labels, n_bins)["reference"]) > 1e-4:
            raise Fail(f"with n_bins={n_bins} the result is the 10-bin ECE: use the n_bins argument")
        _diagnose(value, probs, labels, n_bins)


def _ece_edges(ctx):
    # one-hot predictions (confidence exactly 1.0), half of them wrong: ECE = 0.5; all other bins empty
    labels = torch.tensor([0, 1, 2, 0, 1, 2, 0, 1])
    pred = torch.tensor([0, 1, 2, 0, 2, 0, 1, 2])
    probs = nn.functional.one_hot(pred, 3).float()
    value = _ece_call(ctx, probs, labels, 10)
    if abs(value - 0.5) > 1e-6:
        raise Fail(
            f"8 one-hot predictions (confidence 1.0), 4 of them wrong, give ECE {value:.4g} instead of 0.5: "
            "a confidence of exactly 1.0 belongs to the LAST bin (e.g. `min(int(conf * n_bins), n_bins - 1)`)"
        )
    # a confidence exactly on an inner edge must land in a bin, and a single bin is fine
    probs = torch.tensor([[0.7, 0.3], [0.3, 0.7], [0.45, 0.55]])
    value = _ece_call(ctx, probs, torch.tensor([0, 0, 1]), 1)
    expected = abs(2 / 3 - (0.7 + 0.7 + 0.55) / 3)
    if abs(value - expected) > 1e-6:
        raise Fail(f"with n_bins=1 the ECE is |accuracy - mean confidence| = {expected:.4f}, got {value:.4f}")


register(
    EXERCISE,
    CheckSpec(
        "expected_calibration_error",
        [
            _prop("returns one number in [0, 1]", 1, _ece_number),
            _prop("equal-width bins, |acc - conf| weighted by |B|/N", 3, _ece_matches),
            _prop("uses n_bins", 1, _ece_n_bins),
            _prop("confidence 1.0 and empty bins", 1, _ece_edges),
        ],
    ),
)
