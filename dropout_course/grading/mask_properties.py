"""One property set for every "write a dropout mask" check, judged on *observations* made by an adapter.

Whatever an exercise drops (elements, channels, time-shared features, weights, attention weights, residual
branches, the weights of a recurrent matrix), a correct inverted dropout has the same properties: it drops a
fraction ``p`` of its units, scales the kept ones by ``1/(1-p)``, draws a fresh, independent mask for each
sample and each call, drops everything at ``p=1`` and nothing at ``p=0``, is the identity in eval mode,
leaves its inputs alone and does not call torch's dropout. :func:`mask_properties` writes these once.

An :class:`Adapter` says, for one exercise, how to call the candidate and how to see one call as an
:class:`Observation` (which units were dropped, how the kept ones were scaled), what its units are called in
property names and diagnoses, its table of known mistakes, and the few properties only that exercise has.
Candidates may be proxies of objects in another process: adapters only call them and look at what comes back.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field

import numpy as np

from .core import CheckContext, Fail, Property
from .masks import diagnose_drop_fraction, diagnose_scale, independent_draws

__all__ = [
    "Observation",
    "Adapter",
    "mask_properties",
    "observed",
    "record_unchanged",
    "instance",
    "TOGGLE_MESSAGE",
]

TOGGLE_MESSAGE = (
    "after .train() nothing is dropped: read the mode from `self.training` in forward (set by "
    ".train()/.eval()), do not store a flag of your own"
)


@dataclass
class Observation:
    """One training-mode call of a candidate, seen in its adapter's units.

    ``dropped`` is a boolean array over the units; its axis 0 indexes what must get independent masks
    (samples), its other axes are the ones named by :attr:`Adapter.patterns`. ``ratios`` are the kept
    units' scales (output over what the unit would be without dropout): ``1/(1-p)`` when correct. ``data``
    is the adapter's own view of the call (inputs and outputs), for its hooks and extra properties.
    """

    dropped: np.ndarray
    ratios: np.ndarray
    data: tuple = ()


Observe = Callable[[CheckContext, float, int, str], Observation]


@dataclass
class Adapter:
    """How one exercise's candidate is called and observed, its unit words and its table of mistakes.

    ``run(ctx, p, training, seed, tag)`` calls the candidate once (memoized; it records what must stay
    unchanged with :func:`record_unchanged`) and ``observe(ctx, p, seed, tag)`` turns a training-mode call into
    an :class:`Observation`; both raise :class:`Fail` naming what is wrong with the result itself (type,
    shape, NaN, a mask that is not one of this exercise's units). ``check_identity(ctx, p, training, seed)``
    fails unless that call is the identity (eval mode, or p=0 in training mode), naming the mode.

    ``mistakes`` is the table of diagnoses, by key: ``same mask`` (two calls dropped the same units), ``p1``
    (not everything dropped at p=1; ``{kept}`` is the kept fraction), ``p1 result`` (what p=1 returns, for the
    divide-by-zero hint), ``torch dropout`` (the fix when torch's dropout is called). ``patterns`` lists
    ``(axis, diagnosis)``: the mask must not be constant along ``axis`` of ``dropped`` (``{n}`` is that axis's
    length, ``{state}`` "dropped" if every unit was, else "kept", ``{p}`` the probability).
    """

    unit: str  # what one mask value drops, plural: "elements", "attention weights"
    one_unit: str  # singular, for "every {one_unit} is dropped"
    kept: str  # what the scale diagnoses call the kept units: "kept values"
    run: Callable[..., object]
    observe: Observe
    check_identity: Callable[[CheckContext, float, bool, int], None]
    mistakes: Mapping[str, str]
    patterns: Sequence[tuple[int, str]] = ()
    # property names (the points are fixed by the exercise notebooks)
    returns: str = ""  # name of the "returns the right thing" property; none if empty
    eval_name: str = "is the identity in eval mode"
    eval_points: float = 1
    eval_p: tuple[float, ...] = (0.2, 0.5)
    toggle: bool = False  # a module: also "follows .train() / .eval()"
    independence: str = "a fresh, independent mask for each sample and each call"
    edge: str = "p=1 gives zeros (no NaN), p=0 the identity"
    inplace: str = "does not modify its input"
    # hooks; defaults do nothing more
    nothing_dropped: Callable[[Observation, float], None] = lambda obs, p: None  # no unit dropped: explain
    kept_ratios: Callable[[CheckContext, Observation, float], np.ndarray] | None = None
    check_p1: Callable[[Observation], None] = lambda obs: None  # more to check when everything is dropped
    build: Callable[[CheckContext, float], object] | None = None  # a constructor taking p: rejects bad p
    build_text: Callable[[CheckContext], str] = lambda ctx: ""  # how that call is shown, ``{p}`` for p
    leading: list[Property] = field(default_factory=list)  # before the shared ones (is a module, ...)
    extra: list[Property] = field(default_factory=list)  # after the scale (the exercise's own behaviour)
    trailing: list[Property] = field(default_factory=list)  # after "does not modify" (dtype, gradients)


def instance(ctx: CheckContext, p: float, build: Callable[[], object]):
    """The check's ONE instance of the candidate's class for ``p``, ``build()`` on first use and then reused, so
    that state kept on the instance between calls (a cached mask) shows."""
    return ctx.memo(("instance", p), build)


def record_unchanged(ctx: CheckContext, check: Callable[[], None]) -> None:
    """Remember ``check`` (which fails if the candidate modified something it was given) for the in-place
    property: recorded at the call, judged even when the result is wrong."""
    ctx.cache.setdefault("unchanged", []).append(check)


def _check_rejects_bad_p(ctx: CheckContext, build: Callable[[float], object], call_text: str) -> None:
    """Fail unless ``build(p)`` (the learner's constructor, called through ``ctx.call``) raises ValueError for
    p = -0.1 and 1.5; ``call_text`` shows the call, with ``{p}`` for the value."""
    for bad in (-0.1, 1.5):
        shown = call_text.format(p=bad)
        try:
            run = build(bad)
        except Fail as exc:
            if "ValueError" in str(exc):
                continue
            raise Fail(f"`{shown}` should raise ValueError, got: {exc}") from None
        shown_run = repr(run) if "\n" not in repr(run) else f"it makes a {type(run).__name__}"
        raise Fail(f"`{shown}` is accepted ({shown_run}); raise ValueError for p outside [0, 1]")


def observed(
    ctx: CheckContext, a: Adapter, p: float, seed: int = 0, tag: str = "", explain=False
) -> Observation:
    """``a.observe`` once per check and call; ``explain``: when nothing was dropped, let the adapter say why."""
    obs = ctx.memo(("observation", p, seed, tag), lambda: a.observe(ctx, p, seed, tag))
    if explain and not obs.dropped.any():
        a.nothing_dropped(obs, p)
    return obs


def _constant_along(dropped: np.ndarray, axis: int) -> bool:
    return bool((dropped.all(axis=axis) == dropped.any(axis=axis)).all())


def mask_properties(a: Adapter, p_values: tuple[float, float] = (0.2, 0.7)) -> list[Property]:
    """The properties of a dropout mask seen through adapter ``a``, in order: ``a.leading``, returns,
    eval identity, train/eval toggle, drop fraction, scale, ``a.extra``, independence, p=1 / p=0,
    inputs unchanged, ``a.trailing``, rejects bad p, no torch dropout."""

    def returns(ctx):
        a.run(ctx, p_values[0])

    def eval_identity(ctx):
        for p in a.eval_p:
            a.check_identity(ctx, p, False, 0)

    def toggle(ctx):
        a.check_identity(ctx, 0.5, False, 11)
        a.run(ctx, 0.5, True, 11)  # then .train(): a failing call fails here
        try:
            a.check_identity(ctx, 0.5, True, 11)
        except Fail:
            return  # training mode changes the output; whether rightly is judged by the other properties
        raise Fail(TOGGLE_MESSAGE)

    def never_kept(ctx):
        """One cause, one diagnosis: a candidate that drops everything fails the fraction, the scale and the
        independence with this same text (shown once), not a vacuous pass or a guess at sharing or p."""
        if all(observed(ctx, a, p).dropped.all() for p in p_values):
            raise Fail(
                f"nothing is kept in training mode: every {a.one_unit} is dropped at p={p_values[0]:g} and at "
                f"p={p_values[1]:g}; drop a fraction p of them and scale the kept ones by 1/(1-p)"
            )

    def drop_fraction(ctx):
        never_kept(ctx)
        for p in p_values:
            dropped = observed(ctx, a, p, explain=True).dropped
            diagnose_drop_fraction(float(dropped.mean()), p, independent_draws(dropped), a.unit)

    def scaling(ctx):
        never_kept(ctx)
        for p in p_values:
            obs = observed(ctx, a, p, explain=True)
            ratios = obs.ratios if a.kept_ratios is None else a.kept_ratios(ctx, obs, p)
            diagnose_scale(ratios, p, a.kept)

    def independent(ctx):
        never_kept(ctx)
        p = 0.5  # two calls in a row, made here: the RNG is reset before each property
        dropped = observed(ctx, a, p, tag="first call", explain=True).dropped
        for axis, message in a.patterns:
            if dropped.shape[axis] > 1 and _constant_along(dropped, axis):
                state = "dropped" if dropped.all() else "kept"
                raise Fail(message.format(n=dropped.shape[axis], state=state, p=p))
        if np.array_equal(dropped, observed(ctx, a, p, tag="second call").dropped):
            raise Fail(a.mistakes["same mask"])

    def edge_cases(ctx):
        try:
            obs = observed(ctx, a, 1.0)
        except Fail as exc:
            if "ZeroDivisionError" in str(exc):
                raise Fail(
                    f"p=1 divides by zero (1-p = 0): when p == 1 every {a.one_unit} is dropped, so "
                    f"{a.mistakes['p1 result']} ({exc})"
                ) from None
            raise
        if not obs.dropped.all():
            raise Fail(a.mistakes["p1"].format(kept=float(1 - obs.dropped.mean())))
        a.check_p1(obs)
        a.check_identity(ctx, 0.0, True, 0)

    def called(ctx):
        """Call the candidate once; a wrong result does not matter if the call itself happened (recorded)."""
        try:
            a.run(ctx, p_values[0])
        except Fail:
            if not ctx.cache.get("unchanged"):
                raise

    def inputs_unchanged(ctx):
        called(ctx)
        for check in ctx.cache.get("unchanged", []):
            check()

    def rejects_bad_p(ctx):
        _check_rejects_bad_p(ctx, lambda bad: a.build(ctx, bad), a.build_text(ctx))

    def no_torch_dropout(ctx):
        called(ctx)
        ctx.fail_if_torch_dropout(a.mistakes["torch dropout"])

    props = list(a.leading)
    if a.returns:
        props.append(Property(a.returns, 1, returns))
    props.append(Property(a.eval_name, a.eval_points, eval_identity))
    if a.toggle:
        props.append(Property("follows .train() / .eval()", 1, toggle))
    props += [
        Property(f"drops a fraction p of the {a.unit}", 2, drop_fraction),
        Property(f"scales the kept {a.unit} by 1/(1-p)", 2, scaling),
        *a.extra,
        Property(a.independence, 1, independent),
        Property(a.edge, 1, edge_cases),
        Property(a.inplace, 1, inputs_unchanged),
        *a.trailing,
    ]
    if a.build is not None:
        props.append(Property("raises ValueError for p outside [0, 1]", 1, rejects_bad_p))
    props.append(Property("does not call torch's own dropout", 1, no_torch_dropout))
    return props
