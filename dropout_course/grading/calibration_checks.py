"""Properties of an ``expected_calibration_error(probs, labels, n_bins) -> float`` check, with diagnoses.

The learner's value is compared with the ECE on fixed data (equal-width bins on [0, 1], the bin of a
confidence ``c`` is ``(b/B, (b+1)/B]``, 1.0 in the last bin, each bin weighted by its share of examples);
when it differs, it is compared with the typical wrong versions (no absolute value, unweighted bins,
averaging over all bins, the true class's probability as confidence, equal-mass bins, n_bins - 1 bins, bins over the data's range,
squared gaps, |correct - conf| averaged per example) to name the mistake.
The data have no confidence on a bin edge, so any edge convention passes there.
"""

from __future__ import annotations

import numpy as np
import torch
from torch import nn

from .core import Fail, Property

__all__ = ["ece_properties"]


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


def _bins(conf: np.ndarray, correct: np.ndarray, n_bins: int, lo: float = 0.0, hi: float = 1.0):
    """Per non-empty equal-width bin on [lo, hi]: share of the examples, accuracy, mean confidence."""
    edges = np.linspace(lo, hi, n_bins + 1)
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
    fewer = _bins(conf, correct, n_bins - 1) if n_bins > 1 else (np.zeros(0),) * 3
    which = np.clip(np.searchsorted(np.linspace(0, 1, n_bins + 1)[1:-1], conf, side="left"), 0, n_bins - 1)
    rw, racc, rcf = _bins(conf, correct, n_bins, conf.min(), conf.max())
    inside = np.bincount(which, weights=np.abs(correct - conf), minlength=n_bins)
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
        "one_bin_less": float(np.sum(fewer[0] * np.abs(fewer[1] - fewer[2]))),
        "squared": float(np.sum(w * (acc - cf) ** 2)),
        "data_range": float(np.sum(rw * np.abs(racc - rcf))),
        "abs_per_example": float(inside.sum() / len(conf)),
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
    "one_bin_less": "there are n_bins - 1 bins: n_bins bins need n_bins + 1 edges, "
    "`torch.linspace(0, 1, n_bins + 1)`",
    "data_range": "the bins split [min conf, max conf], the range of this data: use equal-width bins on [0, 1], "
    "edges 0, 1/n_bins, ..., 1, the same for every data set",
    "squared": "the gaps are squared: the ECE weights |acc(B) - conf(B)|, the absolute gap, by |B| / N",
    "abs_per_example": "averages |correct_i - conf_i| over the examples of a bin: take the gap between the bin's "
    "accuracy and its mean confidence, |acc(B) - conf(B)|, after averaging each",
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
        if abs(value - 100 * _variants(probs, labels, 10)["reference"]) <= 1e-2:
            raise Fail(f"returns the ECE in percent ({value:.4g}): return a fraction in [0, 1]")
        raise Fail(f"the ECE must lie in [0, 1], got {value:.4g}")
    raw = ctx.call(ctx.candidate, probs.clone(), labels.clone(), 10, copy_args=False)
    if not isinstance(raw, float):
        raise Fail(
            f"returns a {type(raw).__name__}, not a Python float as the task states: return `float(ece)` "
            "(or `ece.item()` for a one-element tensor)"
        )


def _diagnose(value: float, probs, labels, n_bins: int) -> None:
    variants = _variants(probs, labels, n_bins)
    if abs(value - variants["reference"]) <= 1e-4:
        return
    if abs(value - 100 * variants["reference"]) <= 1e-2:
        raise Fail(f"ECE {value:.4g} is in percent: return the fraction, {variants['reference']:.4f}")
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
    _ece_matches(ctx)  # a mistake already seen with 10 bins is named as such
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
    main_probs, main_labels = _ece_data()
    if abs(value - 0.5) > 1e-6:
        # a mistake that already shows on the main data is the likely cause: name it, not the edge case
        _diagnose(_ece_call(ctx, main_probs, main_labels, 10), main_probs, main_labels, 10)
        raise Fail(
            f"8 one-hot predictions (confidence 1.0), 4 of them wrong, give ECE {value:.4g} instead of 0.5: "
            "a confidence of exactly 1.0 belongs to the LAST bin (e.g. `min(int(conf * n_bins), n_bins - 1)`)"
        )
    # a confidence exactly on an inner edge must land in a bin, and a single bin is fine
    probs = torch.tensor([[0.7, 0.3], [0.3, 0.7], [0.45, 0.55]])
    value = _ece_call(ctx, probs, torch.tensor([0, 0, 1]), 1)
    expected = abs(2 / 3 - (0.7 + 0.7 + 0.55) / 3)
    if abs(value - expected) > 1e-6:
        _diagnose(_ece_call(ctx, main_probs, main_labels, 10), main_probs, main_labels, 10)
        raise Fail(f"with n_bins=1 the ECE is |accuracy - mean confidence| = {expected:.4f}, got {value:.4f}")


def ece_properties() -> list[Property]:
    """The properties of the ``expected_calibration_error`` check (6 points)."""
    return [
        Property("returns one Python float in [0, 1]", 1, _ece_number),
        Property("equal-width bins, |acc - conf| weighted by |B|/N", 3, _ece_matches),
        Property("uses n_bins", 1, _ece_n_bins),
        Property("confidence 1.0 and empty bins", 1, _ece_edges),
    ]
