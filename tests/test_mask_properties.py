"""The shared mask property set (grading/mask_properties.py) on a toy adapter: a candidate ``f(n, p, training)``
returning the scale of each of ``n`` units (0 where dropped), observed as a (20, n/20) mask."""

from __future__ import annotations

import numpy as np
import pytest

from dropout_course.grading import Grader
from dropout_course.grading.core import CheckSpec, Fail
from dropout_course.grading.mask_properties import Adapter, Observation, mask_properties

N = 1000


def _run(ctx, p, training=True, seed=0, tag=""):
    return ctx.memo(
        ("run", p, training, seed, tag), lambda: np.asarray(ctx.call(ctx.candidate, N, p, training))
    )


def _observe(ctx, p, seed, tag):
    y = _run(ctx, p, True, seed, tag)
    if not np.isfinite(y).all():
        raise Fail(f"NaN at p={p:g}")
    return Observation((y == 0).reshape(20, -1), y[y != 0], (y,))


def _identity(ctx, p, training, seed):
    if not (_run(ctx, p, training, seed) == 1).all():
        raise Fail(f"not the identity {'in training mode' if training else 'in eval mode'} at p={p:g}")


def _build(ctx, p):
    if not 0 <= p <= 1:
        raise Fail("`Toy` raised ValueError: p")
    return "a toy"


TOY = Adapter(
    unit="units",
    one_unit="unit",
    kept="kept units",
    run=_run,
    observe=_observe,
    check_identity=_identity,
    mistakes={
        "same mask": "the same mask on every call",
        "p1": "p=1 keeps {kept:.0%}",
        "p1 result": "return zeros",
        "torch dropout": "write it yourself",
    },
    patterns=[(0, "shared by all {n} samples (at p={p:g})"), (1, "whole samples")],
    build=_build,
    build_text=lambda ctx: "Toy({p})",
)


def correct(n, p, training=True):
    if not training:
        return np.ones(n)
    return np.where(np.random.rand(n) >= p, 1 / max(1 - p, 1e-12), 0.0)


def reseeds(n, p, training=True):
    np.random.seed(0)
    return correct(n, p, training)


def shared(n, p, training=True):
    return np.tile(correct(n // 20, p, training), 20)


def per_sample(n, p, training=True):
    return np.repeat(correct(20, p, training), n // 20)


def divides_by_zero(n, p, training=True):
    return np.ones(n) if not training else np.where(np.random.rand(n) >= p, 1 / (1 - p), 0.0)


def ignores_p(n, p, training=True):
    return np.ones(n)


@pytest.fixture
def check():
    grader = Grader("ex01_inverted_dropout")
    grader.specs["toy"] = CheckSpec("toy", mask_properties(TOY))
    return lambda fn: grader.check("toy", fn)


def test_the_shared_set_in_order_with_its_points():
    props = mask_properties(TOY)
    assert [(p.name, p.points) for p in props] == [
        ("is the identity in eval mode", 1),
        ("drops a fraction p of the units", 2),
        ("scales the kept units by 1/(1-p)", 2),
        ("a fresh, independent mask for each sample and each call", 1),
        ("p=1 gives zeros (no NaN), p=0 the identity", 1),
        ("does not modify its input", 1),
        ("raises ValueError for p outside [0, 1]", 1),
        ("does not call torch's own dropout", 1),
    ]


def test_a_correct_candidate_gets_full_marks(check):
    result = check(correct)
    assert result.passed and result.score == result.max_score == 10, "\n".join(result.messages)


@pytest.mark.parametrize(
    "fn, fragment",
    [
        (
            reseeds,
            "FAIL a fresh, independent mask for each sample and each call (0/1): the same mask on every call",
        ),
        (shared, "shared by all 20 samples ("),
        (per_sample, "whole samples"),
        (
            divides_by_zero,
            "p=1 divides by zero (1-p = 0): when p == 1 every unit is dropped, so return zeros (",
        ),
        (ignores_p, "p=1 keeps 100%"),
    ],
)
def test_the_adapters_mistake_table_names_the_mistake(check, fn, fragment):
    result = check(fn)
    text = "\n".join(result.messages)
    assert not result.passed and fragment in text, text
