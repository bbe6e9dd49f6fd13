"""Statistical diagnosis of a (learner's) dropout output: which units were dropped, how kept ones scale.

Inputs used by the graders are bounded away from zero (``|x| in [0.5, 1.5]``), so a unit is *dropped*
exactly when its output is 0, and the scale of a kept unit is ``y / x``. Drop fractions are compared with
``p`` using the binomial spread: a fraction within ``SIGMAS`` standard deviations passes, whatever the
order of the learner's random calls.
"""

from __future__ import annotations

import math

import numpy as np
import torch

from .core import Fail

SIGMAS = 6.0
RATIO_RTOL = 1e-4


def make_input(shape, seed: int, dtype=torch.float32) -> torch.Tensor:
    """A tensor of ``shape`` with entries of random sign and magnitude in [0.5, 1.5] (never 0)."""
    g = torch.Generator().manual_seed(seed)
    magnitude = torch.rand(shape, generator=g, dtype=torch.float64) + 0.5
    sign = torch.where(torch.rand(shape, generator=g) < 0.5, -1.0, 1.0).to(torch.float64)
    return (magnitude * sign).to(dtype)


def as_tensor_output(y, x: torch.Tensor, fn_name: str) -> torch.Tensor:
    """Check that ``y`` is a tensor of ``x``'s shape (else :class:`Fail` with the reason)."""
    if isinstance(y, tuple):
        raise Fail(f"`{fn_name}` returns a tuple of {len(y)} items; return only the output tensor")
    if isinstance(y, np.ndarray):
        raise Fail(f"`{fn_name}` returns a NumPy array; return a torch.Tensor (e.g. torch.from_numpy(...))")
    if y is None:
        raise Fail(f"`{fn_name}` returns None: did you forget the `return` statement?")
    if not isinstance(y, torch.Tensor):
        raise Fail(f"`{fn_name}` returns a {type(y).__name__}, expected a torch.Tensor")
    if tuple(y.shape) != tuple(x.shape):
        raise Fail(f"wrong shape: output has shape {tuple(y.shape)}, the input has shape {tuple(x.shape)}")
    return y


def as_array_output(y, x: np.ndarray, fn_name: str) -> np.ndarray:
    if y is None:
        raise Fail(f"`{fn_name}` returns None as its output: did you forget to return it?")
    if isinstance(y, torch.Tensor):
        raise Fail(f"`{fn_name}` returns a torch.Tensor; this is the NumPy version: return a numpy array")
    if not isinstance(y, np.ndarray):
        raise Fail(f"`{fn_name}` returns a {type(y).__name__} as its output, expected a numpy.ndarray")
    if y.shape != x.shape:
        raise Fail(f"wrong shape: output has shape {y.shape}, the input has shape {x.shape}")
    return y


def to_numpy(t) -> np.ndarray:
    if isinstance(t, torch.Tensor):
        return t.detach().to("cpu", torch.float64).numpy()
    return np.asarray(t, dtype=np.float64)


def check_finite(y, p: float) -> None:
    a = to_numpy(y)
    if np.isnan(a).any() or np.isinf(a).any():
        what = "NaN" if np.isnan(a).any() else "inf"
        if p == 1.0:
            raise Fail(
                f"p=1 gives {what}: 0/0 from dividing by 1-p = 0; when p == 1 every unit is dropped, "
                "so return zeros"
            )
        raise Fail(f"the output contains {what} at p={p:g}")


def binomial_ok(fraction: float, p: float, n: int) -> bool:
    sigma = math.sqrt(max(p * (1 - p), 1e-12) / n)
    return abs(fraction - p) <= SIGMAS * sigma + 1e-9


def independent_draws(dropped: np.ndarray) -> int:
    """How many independent mask draws can lie behind the boolean array ``dropped``.

    Its size, divided by the length of every axis (of length > 1) along which it is constant: a mask
    shared by the whole batch, or one value per row, makes fewer draws than elements. The drop fraction is
    then judged with the right binomial spread, and the sharing is diagnosed by the properties about it
    rather than blamed on ``p``.
    """
    if dropped.size and dropped.ndim and (dropped == dropped.flat[0]).all():
        return max(dropped.size // dropped.shape[0], 1)  # all alike: one mask shared by the batch at most
    n = dropped.size
    for axis, length in enumerate(dropped.shape):
        if length > 1 and (dropped.all(axis=axis) == dropped.any(axis=axis)).all():
            n //= length
    return max(n, 1)


def diagnose_drop_fraction(fraction: float, p: float, n: int, unit: str = "elements") -> None:
    """Fail with a diagnosis unless ``fraction`` of ``n`` independent units is consistent with ``p``."""
    if binomial_ok(fraction, p, n):
        return
    sigma = math.sqrt(p * (1 - p) / n)
    if fraction == 0.0:
        raise Fail(f"nothing is dropped at p={p:g} in training mode: no {unit} of the output is 0")
    if abs(p - 0.5) > 0.05 and binomial_ok(fraction, 1 - p, n):
        raise Fail(
            f"drops {fraction:.1%} of the {unit} at p={p:g}, about 1-p: `p` is read as the keep "
            f"probability; in this course p is the probability of DROPPING a unit (keep with 1-p)"
        )
    raise Fail(
        f"drops {fraction:.1%} of the {unit} at p={p:g}; expected {p:.0%} "
        f"(within {SIGMAS * sigma:.1%}, {SIGMAS:g} binomial standard deviations)"
    )


def diagnose_scale(ratios: np.ndarray, p: float, what: str = "kept values") -> None:
    """Fail unless every kept ``y / x`` equals ``1 / (1 - p)``; name the usual wrong scalings."""
    if ratios.size == 0:
        return
    target = 1.0 / (1.0 - p)
    lo, hi = float(ratios.min()), float(ratios.max())
    if np.allclose(ratios, target, rtol=RATIO_RTOL, atol=0):
        return
    if hi - lo > RATIO_RTOL * max(abs(hi), 1.0) * 10:
        raise Fail(
            f"{what} are not a constant multiple of the input (y/x ranges from {lo:.3g} to {hi:.3g}); "
            f"each kept unit should be x/(1-p) = {target:.4g}*x"
        )
    r = float(np.median(ratios))
    candidates = [
        (1.0, f"{what} are not rescaled: divide them by (1-p) so that the expected output equals the input"),
        (p, f"{what} are scaled by p instead of 1/(1-p)"),
        (
            1.0 / p if p > 0 else math.inf,
            f"{what} are scaled by 1/p instead of 1/(1-p): p is the DROP probability",
        ),
        (1.0 - p, f"{what} are multiplied by (1-p) instead of divided by it: scale by 1/(1-p)"),
    ]
    for value, message in candidates:
        if math.isfinite(value) and abs(r - value) <= RATIO_RTOL * max(abs(value), 1.0):
            raise Fail(f"{message} (kept y/x = {r:.4g}, expected 1/(1-p) = {target:.4g} at p={p:g})")
    raise Fail(f"{what} are scaled by {r:.4g}; expected 1/(1-p) = {target:.4g} at p={p:g}")


def diagnose_eval(
    y, x, p: float, mode_text: str = "in eval mode", what: str = "outputs", fix: str = "return x unchanged"
) -> None:
    """Fail unless ``y`` equals ``x`` (inverted dropout is the identity at test time).

    ``what`` names the values in the messages and ``fix`` says what to return instead (e.g. "weights",
    "return weight unchanged" when ``y`` is a dropped weight matrix).
    """
    a, b = to_numpy(y), to_numpy(x)
    if a.shape != b.shape:
        raise Fail(f"wrong shape {mode_text}: {a.shape} instead of {b.shape}")
    if np.allclose(a, b, rtol=1e-6, atol=1e-7):
        return
    zeros = float((a == 0).mean())
    if zeros > 0:
        raise Fail(f"dropout is still applied {mode_text}: {zeros:.0%} of the {what} are 0; {fix}")
    ratio = float(np.median(a / b))
    if abs(ratio - (1 - p)) < 1e-4:
        raise Fail(
            f"the output is scaled by (1-p) {mode_text}: that is the old, non-inverted dropout; with inverted "
            f"dropout the kept units were already divided by (1-p) in training, so {fix}"
        )
    if abs(ratio - 1 / (1 - p)) < 1e-4:
        raise Fail(f"rescaling by 1/(1-p) is still applied {mode_text}: {fix}")
    raise Fail(
        f"{'the output differs' if what == 'outputs' else f'the {what} differ'} from the input {mode_text} "
        f"(median y/x = {ratio:.4g}); {fix}"
    )


def unchanged(before, after, name: str = "the input", message: str = "") -> None:
    """Fail unless ``after`` (what the learner's code got) still equals ``before``; ``message`` replaces the
    default diagnosis (``{name} was modified in place ...``)."""
    if isinstance(before, torch.Tensor):
        same = torch.equal(before, after)
    else:
        same = np.array_equal(before, after)
    if not same:
        raise Fail(
            message
            or f"{name} was modified in place (e.g. `x *= mask` or `x[mask] = 0`): the caller's tensor must stay "
            "unchanged; compute a new tensor instead (`x * mask`)"
        )
