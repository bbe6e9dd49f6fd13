r"""Grader of ``ex08_dropout_theory``: the theory of dropout, by computation, checked on unseen inputs.

Checks:

* ``ensemble_predictions(x, W, b, p) -> (arithmetic, geometric)``: the weighted arithmetic and the
  normalised geometric mean of all :math:`2^n` thinned softmax layers (inverted dropout on the ``n`` inputs,
  drop probability ``p``), for one input ``x`` of shape ``(n,)``, ``W`` ``(K, n)``, ``b`` ``(K,)``.
* ``dropout_penalty(X, w, p) -> float``: the closed form of
  :math:`\mathbb{E}_M\lVert y - (M \odot X / (1-p)) w\rVert^2 - \lVert y - X w\rVert^2
  = \tfrac{p}{1-p} \sum_j w_j^2 \sum_i X_{ij}^2`.
* ``monte_carlo_penalty(X, y, w, p, n_samples, generator) -> float``: the same quantity estimated with
  ``n_samples`` sampled masks drawn from ``generator``; judged statistically (unbiased at two ``p``,
  reproducible, spread shrinking like :math:`1/\sqrt{S}`).
* hidden: ``ensemble_predictions_hidden`` and ``dropout_penalty_hidden`` on other sizes and ``p``.

Every expected number is computed here by the course's own exact enumeration
(:mod:`dropout_course.theory`); each wrong answer is compared with the numbers that known mistakes give,
so the diagnosis names the mistake ("every mask weighted equally: weight mask m by its probability").
"""

from __future__ import annotations

import math

import torch

from .. import theory
from .core import CheckContext, CheckSpec, Fail, Originality, Property

EXERCISE = "ex08_dropout_theory"
CHECKS: list[CheckSpec] = []  # this exercise\'s checks, in notebook order

# (n inputs, K classes, p, seed): the visible check's problems; the hidden check uses other ones.
VISIBLE_ENSEMBLES = ((3, 4, 0.3, 11), (5, 3, 0.5, 12), (8, 5, 0.8, 13))
HIDDEN_ENSEMBLES = ((10, 7, 0.65, 21), (6, 2, 0.1, 22), (1, 3, 0.4, 23))
VISIBLE_PENALTIES = ((20, 3, 0.5, 31), (7, 6, 0.2, 32), (50, 4, 0.9, 33))
HIDDEN_PENALTIES = ((13, 9, 0.35, 41), (100, 2, 0.75, 42))
RTOL = 1e-6


def _problem(n: int, k: int, seed: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    return (
        torch.randn(n, generator=g, dtype=torch.float64),
        torch.randn(k, n, generator=g, dtype=torch.float64) * 1.5,
        torch.randn(k, generator=g, dtype=torch.float64) * 0.5,
    )


def _regression(n: int, d: int, seed: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    X = torch.randn(n, d, generator=g, dtype=torch.float64) * torch.linspace(0.5, 2.0, d, dtype=torch.float64)
    w = torch.randn(d, generator=g, dtype=torch.float64)
    y = X @ w + 0.3 * torch.randn(n, generator=g, dtype=torch.float64)
    return X, y, w


def _as_vector(value, k: int, what: str) -> torch.Tensor:
    """``value`` as a float64 vector of length ``k``; Fail naming what is wrong otherwise."""
    try:
        vector = torch.as_tensor(value.detach() if isinstance(value, torch.Tensor) else value).to(
            torch.float64
        )
    except (TypeError, ValueError, RuntimeError):
        raise Fail(f"the {what} must be a tensor of shape ({k},), got {type(value).__name__}") from None
    if vector.shape != (k,):
        raise Fail(
            f"the {what} must have shape ({k},) (one probability per class), got {tuple(vector.shape)}"
        )
    if not bool(torch.isfinite(vector).all()):
        raise Fail(f"the {what} contains NaN or inf")
    return vector


# --------------------------------------------------------------------------- the exact ensemble


def _ensembles(
    x, W, b, p: float, *, keep_as_drop=False, scaled=True, uniform=False, flipped=False, missing=None
):
    """(arithmetic, geometric, unnormalised geometric) of the thinned networks, optionally with a mistake:
    ``flipped``: the mask weighted as a keep-mask is applied as a drop-mask (the scale stays 1/(1-p));
    ``missing``: the index of a mask left out (0: the all-dropped one, -1: the all-kept one)."""
    n = x.shape[0]
    q = 1 - p if keep_as_drop else p  # the drop probability actually used
    masks = theory.all_masks(n)
    scale = 1 / (1 - q) if scaled and q < 1 else 1.0
    scale = 1 / p if scaled == "by p" else scale
    logits = ((1 - masks if flipped else masks) * x * scale) @ W.T + b  # (2^n, K)
    log_probs = torch.log_softmax(logits, dim=-1)
    weights = (
        torch.full((2**n,), 1 / 2**n, dtype=torch.float64) if uniform else theory.mask_probabilities(masks, q)
    )
    if missing is not None:
        weights = weights.clone()
        weights[missing] = 0.0
    arithmetic = weights @ log_probs.exp()
    log_geo = weights @ log_probs
    return arithmetic, torch.softmax(log_geo, dim=-1), log_geo.exp()


_ALL_MASKS = "enumerate all 2^n masks, `range(2**n)` or `itertools.product([0, 1], repeat=n)`"


def _ensemble_mistakes(x, W, b, p: float) -> list[tuple[str, torch.Tensor, torch.Tensor]]:
    """(diagnosis, arithmetic, geometric) that common mistakes produce for this problem."""
    a_u, g_u, _ = _ensembles(x, W, b, p, uniform=True)
    a_k, g_k, _ = _ensembles(x, W, b, p, keep_as_drop=True)
    a_s, g_s, _ = _ensembles(x, W, b, p, scaled=False)
    a_f, g_f, _ = _ensembles(x, W, b, p, flipped=True)
    a_p, g_p, _ = _ensembles(x, W, b, p, scaled="by p")
    a_0, g_0, _ = _ensembles(x, W, b, p, missing=0)
    a_1, g_1, _ = _ensembles(x, W, b, p, missing=-1)
    return [
        (
            "the mask is applied as a DROP mask (m = 1 drops the unit) but weighted as a keep mask: with "
            "m = 1 meaning kept, use m * x / (1-p) and Pr(m) = (1-p)^|m| p^(n-|m|)",
            a_f,
            g_f,
        ),
        (
            "the kept inputs are scaled by 1/p; inverted dropout divides by the KEEP probability, 1/(1-p)",
            a_p,
            g_p,
        ),
        (f"the mask that drops every unit is missing: {_ALL_MASKS}", a_0, g_0),
        (f"the mask that keeps every unit is missing: {_ALL_MASKS}", a_1, g_1),
        ("every mask is weighted equally: weight mask m by its probability (1-p)^|m| p^(n-|m|)", a_u, g_u),
        ("p is used as the KEEP probability: a unit is kept with probability 1 - p", a_k, g_k),
        (
            "the kept inputs are not scaled by 1/(1-p) (inverted dropout scales them during training)",
            a_s,
            g_s,
        ),
    ]


def _close(a: torch.Tensor, b: torch.Tensor) -> bool:
    return bool(torch.allclose(a, b, rtol=RTOL, atol=1e-9))


def _ensemble_answer(ctx: CheckContext, problem: tuple):
    """The candidate's (arithmetic, geometric) for ``problem`` = (n, K, p, seed), computed once per check."""
    return ctx.memo(("ensemble", problem), lambda: _call_ensemble(ctx, *problem))


def _call_ensemble(ctx: CheckContext, n: int, k: int, p: float, seed: int):
    x, W, b = _problem(n, k, seed)
    out = ctx.call(ctx.candidate, x.clone(), W.clone(), b.clone(), p)
    if not isinstance(out, (tuple, list)) or len(out) != 2:
        raise Fail(f"must return a pair (arithmetic, geometric), got {type(out).__name__}")
    return (x, W, b), _as_vector(out[0], k, "arithmetic mean"), _as_vector(out[1], k, "geometric mean")


def _ensemble_shape(problems):
    def test(ctx: CheckContext) -> None:
        for problem in problems:
            _, arithmetic, geometric = _ensemble_answer(ctx, problem)
            n, _, p, _ = problem
            for what, vector in (("arithmetic", arithmetic), ("geometric", geometric)):
                if bool((vector < -1e-12).any()) or not math.isclose(vector.sum().item(), 1.0, abs_tol=1e-6):
                    hint = (
                        " (the geometric mean must be renormalised: divide the product by its sum over classes)"
                        if what == "geometric"
                        else ""
                    )
                    for left_out, weight in (("drops", p**n), ("keeps", (1 - p) ** n)):
                        if what == "arithmetic" and math.isclose(
                            vector.sum().item(), 1 - weight, abs_tol=1e-9
                        ):
                            hint = (
                                f" = 1 - Pr(the mask that {left_out} every unit): it is missing; {_ALL_MASKS}"
                            )
                    raise Fail(
                        f"the {what} mean is not a probability vector: it sums to {vector.sum().item():.6g}{hint}"
                    )

    return test


def _ensemble_value(problems, index: int):
    what = ("arithmetic", "geometric")[index]

    def test(ctx: CheckContext) -> None:
        for problem in problems:
            n, _, p, _ = problem
            try:
                (x, W, b), *out = _ensemble_answer(ctx, problem)
            except Fail as exc:
                raise Fail(f"not checked: {exc}") from None
            got = out[index]
            arithmetic, geometric, unnormalised = _ensembles(x, W, b, p)
            want = (arithmetic, geometric)[index]
            if _close(got, want):
                continue
            where = f"for n = {n} inputs, p = {p}"
            if index == 1 and _close(got, arithmetic):
                raise Fail(
                    f"{where}: returns the arithmetic mean as the geometric one (use the mean of log P_m)"
                )
            if index == 0 and _close(got, geometric):
                raise Fail(
                    f"{where}: returns the geometric mean, which equals the weight-scaled network softmax(Wx + b), "
                    "as the arithmetic one: average the probabilities P_m, not their logs"
                )
            if index == 1 and _close(got, unnormalised):
                raise Fail(f"{where}: the geometric mean is not renormalised over the classes")
            for diagnosis, a_wrong, g_wrong in _ensemble_mistakes(x, W, b, p):
                if _close(got, (a_wrong, g_wrong)[index]):
                    raise Fail(f"{where}: {diagnosis}")
            error = (got - want).abs().max().item()
            if error < 1e-5:
                raise Fail(
                    f"{where}: the {what} mean is off by up to {error:.3g}, the rounding error of float32: "
                    "work in float64 throughout (a Python float times a float32 tensor stays float32)"
                )
            raise Fail(f"{where}: the {what} mean is off by up to {error:.3g} from the exact enumeration")

    return test


def _ensemble_properties(problems) -> list[Property]:
    return [
        Property("returns two probability vectors of shape (K,)", 2, _ensemble_shape(problems)),
        Property("the arithmetic mean of all 2^n thinned networks", 5, _ensemble_value(problems, 0)),
        Property(
            "the normalised geometric mean of all 2^n thinned networks", 5, _ensemble_value(problems, 1)
        ),
    ]


# --------------------------------------------------------------------------- the dropout penalty


def _penalty_mistakes(X, w, p: float) -> list[tuple[str, float]]:
    column_norms = (X**2).sum(dim=0)
    return [
        (
            "missing the factor 1/(1-p): the variance of a kept-and-scaled unit m/(1-p) is p/(1-p)",
            p * (w**2 * column_norms).sum(),
        ),
        (
            "the factor is p/(1-p)^2; the variance of m/(1-p) is p(1-p)/(1-p)^2 = p/(1-p)",
            p / (1 - p) ** 2 * (w**2 * column_norms).sum(),
        ),
        (
            "this is plain L2, p/(1-p) * ||w||^2: each w_j^2 is weighted by the squared norm of its column X[:, j]",
            p / (1 - p) * (w**2).sum(),
        ),
        (
            "uses the whole Gram matrix w^T X^T X w; the masks of different features are independent, so only "
            "its diagonal diag(X^T X) remains",
            p / (1 - p) * (w @ X.T @ X @ w),
        ),
        (
            "averaged over the rows; the loss is a SUM over the N examples",
            p / (1 - p) * (w**2 * column_norms).sum() / X.shape[0],
        ),
        (
            "the factor is (1-p)/p, p and 1-p swapped: p is the DROP probability, the variance of the "
            "kept-and-scaled unit m/(1-p) is p/(1-p)",
            (1 - p) / p * (w**2 * column_norms).sum() if p > 0 else math.inf,
        ),
        (
            "the factor is p(1-p), the variance of the mask m itself; the inputs are scaled by 1/(1-p), "
            "so the variance of m/(1-p) is p(1-p)/(1-p)^2 = p/(1-p)",
            p * (1 - p) * (w**2 * column_norms).sum(),
        ),
        (
            "the product ||w||^2 * ||X||^2 of two sums: each w_j^2 is weighted by the squared norm of ITS "
            "column, sum_j w_j^2 sum_i X_ij^2",
            p / (1 - p) * (w**2).sum() * column_norms.sum(),
        ),
    ]


def _penalty_value(problems):
    def test(ctx: CheckContext) -> None:
        for n, d, p, seed in problems:
            X, _, w = _regression(n, d, seed)
            got = ctx.call(ctx.candidate, X.clone(), w.clone(), p)
            if isinstance(got, torch.Tensor) and got.numel() == 1:
                got = got.item()
            if isinstance(got, bool) or not isinstance(got, (int, float)):
                raise Fail(f"must return a number, got {type(got).__name__}")
            want = theory.dropout_penalty(X, w, p).item()
            if math.isclose(got, want, rel_tol=RTOL, abs_tol=1e-9):
                continue
            for diagnosis, wrong in _penalty_mistakes(X, w, p):
                if math.isclose(got, float(wrong), rel_tol=RTOL, abs_tol=1e-9):
                    raise Fail(f"for X of shape {tuple(X.shape)}, p = {p}: {diagnosis}")
            raise Fail(
                f"for X of shape {tuple(X.shape)}, p = {p}: got {got:.6g}, the closed form gives {want:.6g}"
            )

    return test


def _returns_python_float(make_args):
    def test(ctx: CheckContext) -> None:
        got = ctx.call(ctx.candidate, *make_args())
        if not isinstance(got, float):  # a NumPy float64 is a float too (as in ex06)
            raise Fail(
                f"must return a Python float (use .item()), got {type(got).__name__}"
                + (f" of shape {tuple(got.shape)}" if isinstance(got, torch.Tensor) else "")
            )

    return test


def _penalty_limits(ctx: CheckContext) -> None:
    X, _, w = _regression(10, 3, 51)
    zero = ctx.call(ctx.candidate, X.clone(), w.clone(), 0.0)
    zero = zero.item() if isinstance(zero, torch.Tensor) else zero
    if not math.isclose(float(zero), 0.0, abs_tol=1e-9):
        raise Fail(f"at p = 0 nothing is dropped, so the penalty must be 0, got {float(zero):.6g}")


def _penalty_properties(problems, with_type: bool) -> list[Property]:
    props = [Property("the closed form p/(1-p) * sum_j w_j^2 sum_i X_ij^2", 5, _penalty_value(problems))]
    if with_type:
        props.insert(
            0,
            Property(
                "returns a Python float",
                1,
                _returns_python_float(lambda: (*_regression(8, 3, 61)[::2], 0.5)),
            ),
        )
        props.append(Property("is 0 at p = 0", 1, _penalty_limits))
    return props


# --------------------------------------------------------------------------- the Monte Carlo estimate


def _mc_estimates(ctx: CheckContext, n_samples: int, repeats: int, seed0: int, p: float = 0.5) -> list[float]:
    X, y, w = _regression(12, 3, 71)
    values = []
    for r in range(repeats):
        got = ctx.call(
            ctx.candidate,
            X.clone(),
            y.clone(),
            w.clone(),
            p,
            n_samples,
            torch.Generator().manual_seed(seed0 + r),
        )
        got = got.item() if isinstance(got, torch.Tensor) and got.numel() == 1 else got
        if isinstance(got, bool) or not isinstance(got, (int, float)) or not math.isfinite(got):
            raise Fail(f"must return a finite number, got {got!r}")
        values.append(float(got))
    return values


def _mc_reproducible(ctx: CheckContext) -> None:
    X, y, w = _regression(12, 3, 71)

    def estimate(seed: int) -> float:
        got = ctx.call(
            ctx.candidate, X.clone(), y.clone(), w.clone(), 0.5, 50, torch.Generator().manual_seed(seed)
        )
        return float(got.item() if isinstance(got, torch.Tensor) else got)

    first, again, other = estimate(5), estimate(5), estimate(6)
    if first != again:
        raise Fail(
            "two calls with generators seeded alike give different estimates: draw every mask from `generator` "
            "(e.g. torch.rand(..., generator=generator)), not from the global RNG"
        )
    if first == other:
        raise Fail(
            "generators with different seeds give the same estimate: the masks must come from `generator`"
        )


def _mc_biases(X, y, w, p: float) -> list[tuple[str, float]]:
    """(diagnosis, the mean that the mistake gives) for typical biased Monte Carlo estimates."""
    want = theory.dropout_penalty(X, w, p).item()
    plain = ((y - X @ w) ** 2).sum().item()
    a = p / (1 - p)  # the mean of m/(1-p) when m is kept with probability p
    keep_as_drop = ((y - a * X @ w) ** 2).sum().item() + want - plain
    return [
        (
            "returns the expected dropout LOSS; subtract the loss without dropout ||y - Xw||^2 to get the penalty",
            want + plain,
        ),
        (
            f"biased at p = {p}: a unit is KEPT with probability p (e.g. `torch.rand(...) < p` used as the keep "
            "mask); p is the DROP probability, keep where `torch.rand(...) >= p`",
            keep_as_drop,
        ),
        (
            "the squared errors are averaged over the N rows (a mean squared error); the loss is their SUM",
            want / X.shape[0],
        ),
    ]


def _mc_unbiased(ctx: CheckContext) -> None:
    X, y, w = _regression(12, 3, 71)
    for p, seed0 in ((0.5, 1000), (0.2, 4000)):
        want = theory.dropout_penalty(X, w, p).item()
        values = torch.tensor(
            ctx.memo(("mc200", p), lambda p=p, seed0=seed0: _mc_estimates(ctx, 200, 40, seed0, p)),
            dtype=torch.float64,
        )
        mean, se = values.mean().item(), (values.std() / math.sqrt(len(values))).item()
        if abs(mean - want) <= 6 * se + 1e-9:
            continue
        for diagnosis, biased in _mc_biases(X, y, w, p):
            if abs(mean - biased) <= 6 * se + 1e-9:
                raise Fail(diagnosis)
        raise Fail(
            f"at p = {p} the estimates average {mean:.4g} (standard error {se:.2g}); the closed form is {want:.4g}"
        )


def _mc_spread(ctx: CheckContext) -> None:
    small = torch.tensor(ctx.memo("mc50", lambda: _mc_estimates(ctx, 50, 30, 2000)), dtype=torch.float64)
    large = torch.tensor(ctx.memo("mc800", lambda: _mc_estimates(ctx, 800, 30, 3000)), dtype=torch.float64)
    ratio = small.std().item() / max(large.std().item(), 1e-12)
    if ratio < 2.0:  # 1/sqrt(S) predicts 4; 2 leaves room for the sampling error of two 30-sample stds
        raise Fail(
            f"the spread of the estimates shrinks by {ratio:.2f}x from 50 to 800 samples, 1/sqrt(S) predicts 4x: "
            "average n_samples independent masks, each of shape (N, d)"
        )


def _mc_properties() -> list[Property]:
    return [
        Property(
            "returns a Python float",
            1,
            _returns_python_float(
                lambda: (*_regression(8, 3, 61), 0.5, 10, torch.Generator().manual_seed(0))
            ),
        ),
        Property("draws its masks from `generator` (reproducible)", 2, _mc_reproducible),
        Property("unbiased: the estimates average to the closed form", 4, _mc_unbiased),
        Property("averages n_samples fresh masks (spread ~ 1/sqrt(n_samples))", 3, _mc_spread),
    ]


# the theory module computes what the tasks ask for: using it is not doing them
_ORIGINALITY = Originality(
    "compute it yourself",
    tuple(
        f"dropout_course.theory:{name}"
        for name in (
            "all_masks",
            "mask_probabilities",
            "subnetwork_log_probs",
            "normalized_geometric_mean",
            "arithmetic_mean",
            "exact_softmax_ensemble",
            "dropout_penalty",
            "expected_dropout_loss",
            "monte_carlo_dropout_loss",
            "dropout_ridge_solution",
        )
    ),
    torch_dropout=False,
)
CHECKS.append(
    CheckSpec("ensemble_predictions", _ensemble_properties(VISIBLE_ENSEMBLES), originality=_ORIGINALITY),
)
CHECKS.append(
    CheckSpec(
        "dropout_penalty", _penalty_properties(VISIBLE_PENALTIES, with_type=True), originality=_ORIGINALITY
    ),
)
CHECKS.append(CheckSpec("monte_carlo_penalty", _mc_properties(), originality=_ORIGINALITY))
CHECKS.append(
    CheckSpec(
        "ensemble_predictions_hidden",
        _ensemble_properties(HIDDEN_ENSEMBLES),
        hidden=True,
        originality=_ORIGINALITY,
    ),
)
CHECKS.append(
    CheckSpec(
        "dropout_penalty_hidden",
        _penalty_properties(HIDDEN_PENALTIES, with_type=False),
        hidden=True,
        originality=_ORIGINALITY,
    ),
)
