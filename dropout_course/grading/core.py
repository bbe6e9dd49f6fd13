"""Grader core: named checks made of properties with points, safe candidate calls, readable feedback.

A *check* (e.g. ``"dropout_forward"``) is a list of :class:`Property` objects, each worth some points.
A property is a function ``test(ctx) -> None`` that raises :class:`Fail` with a diagnosis of the likely
mistake ("kept values are scaled by p instead of 1/(1 - p)"). Any other exception raised while a
property runs (the learner's code crashing, a time-out, a wrong return type) also fails that property,
with a readable reason; grading never raises and never hangs.

``ctx.call(fn, *args)`` is how properties call learner code: arguments are deep-copied, the call has a
time limit (``signal.setitimer`` in the main thread, a watchdog thread elsewhere), and torch's own
dropout entry points are traced (:class:`~.detect.Trace`) so that "use torch's dropout" can be diagnosed by name.

A check whose task is to write something the course or torch already has carries an
:class:`~.detect.Originality`: calls of torch's dropout or of the course's reference code (runtime trace),
their names in the learner's source (``grader.check(name, fn, source=text)``; in a notebook the
candidate's own source) and a behavioural fingerprint computed from the candidate's outputs each cost the
whole check, every property reporting the finding.

Candidates may be proxies whose calls run in another process (the instructor's grading worker): checks
only call them and look at what they return. Such a judge passes ``seed_rng=callable(seed)`` to
:meth:`Grader.check` so that :meth:`CheckContext.seeded` seeds the worker's global RNGs.
"""

from __future__ import annotations

import copy
import html
import os
import random
import signal
import sys
import threading
import traceback
from collections.abc import Callable
from contextlib import contextmanager, redirect_stderr
from dataclasses import dataclass, field

import numpy as np

from ..config import torch_threads
from .detect import Originality, Trace, candidate_source, defined_by_exec, scan_source

DEFAULT_TIME_LIMIT = 10.0

__all__ = [
    "Fail",
    "Property",
    "CheckSpec",
    "CheckResult",
    "PropertyResult",
    "Grader",
    "load_checks",
    "CheckContext",
    "Originality",
]


class Fail(Exception):
    """Raised by a property test: the message is the diagnosis shown to the learner."""


class CandidateTimeout(BaseException):
    """Raised inside learner code when its time limit is over (a BaseException: ``except Exception`` in
    learner code cannot swallow it)."""


class CandidateError(Exception):
    """The learner's code raised: carries a short, readable description of where and what."""


@dataclass
class Property:
    """One named, pointed property of a check: ``test(ctx)`` returns normally if it holds."""

    name: str
    points: float
    test: Callable[[CheckContext], None]


def fail_if_torch_dropout_module(module, verb: str, fix: str) -> None:
    """Raise :class:`Fail` if ``module`` holds one of torch's own dropout modules: "<verb> torch's X: <fix>"."""
    for sub in module.modules():
        if sub is not module and type(sub).__module__.startswith("torch.nn.modules.dropout"):
            raise Fail(f"{verb} torch's {type(sub).__name__}: {fix}")


@dataclass
class CheckSpec:
    """A registered check: its name, its properties, and whether it is hidden from learners."""

    name: str
    properties: list[Property]
    hidden: bool = False
    description: str = ""
    originality: Originality | None = None

    @property
    def max_score(self) -> float:
        return float(sum(p.points for p in self.properties))


@dataclass
class PropertyResult:
    name: str
    points: float
    max_points: float
    passed: bool
    diagnosis: str = ""


@dataclass
class CheckResult:
    """The outcome of one check: ``passed``, ``score``, ``max_score`` and readable ``messages``."""

    exercise: str
    name: str
    properties: list[PropertyResult] = field(default_factory=list)
    error: str = ""

    @property
    def score(self) -> float:
        return float(sum(p.points for p in self.properties))

    @property
    def max_score(self) -> float:
        return float(sum(p.max_points for p in self.properties))

    @property
    def passed(self) -> bool:
        return not self.error and all(p.passed for p in self.properties)

    @property
    def messages(self) -> list[str]:
        """One line per property (``PASS``/``FAIL``, points, the diagnosis on failure)."""
        lines = [f"{self.error}"] if self.error else []
        for p in self.properties:
            mark = "PASS" if p.passed else "FAIL"
            line = f"{mark} {p.name} ({_fmt(p.points)}/{_fmt(p.max_points)})"
            if not p.passed and p.diagnosis:
                line += f": {p.diagnosis}"
            lines.append(line)
        return lines

    def to_dict(self) -> dict:
        return {
            "exercise": self.exercise,
            "check": self.name,
            "score": self.score,
            "max_score": self.max_score,
            "passed": self.passed,
            "error": self.error,
            "messages": self.messages,
        }

    def __str__(self) -> str:
        head = f"{self.name}: {_fmt(self.score)}/{_fmt(self.max_score)} points"
        head += " - all properties hold" if self.passed else ""
        marks = {True: "[x]", False: "[ ]"}
        body = []
        if self.error:
            body.append(f"  !! {self.error}")
        for p in self.properties:
            body.append(f"  {marks[p.passed]} {p.name} ({_fmt(p.points)}/{_fmt(p.max_points)})")
            if not p.passed and p.diagnosis:
                body.append(f"      -> {p.diagnosis}")
        return "\n".join([head, *body])

    __repr__ = __str__

    def _repr_mimebundle_(self, include=None, exclude=None) -> dict:
        """How a notebook shows the result: the feedback as HTML, and the score alone as plain text.

        nbgrader's autograde reads a grade cell's plain-text result as its partial credit (a number from 0 to
        the cell's points; any other text would count as full marks), so a grade cell whose last line is
        ``grader.check(...)`` is scored by nbgrader exactly as ``dropout-course grade`` scores that check.
        """
        return {"text/plain": _fmt(self.score), "text/html": self._repr_html_()}

    def _repr_html_(self) -> str:
        color = "#2e7d32" if self.passed else "#c62828"
        rows = []
        if self.error:
            rows.append(f"<div style='color:#c62828'>{html.escape(self.error)}</div>")
        for p in self.properties:
            mark = "&#10004;" if p.passed else "&#10008;"
            c = "#2e7d32" if p.passed else "#c62828"
            diag = ""
            if not p.passed and p.diagnosis:
                diag = f"<div style='margin-left:1.6em;color:#555'>{html.escape(p.diagnosis)}</div>"
            rows.append(
                f"<div><span style='color:{c};font-weight:bold'>{mark}</span> {html.escape(p.name)} "
                f"<span style='color:#777'>({_fmt(p.points)}/{_fmt(p.max_points)})</span></div>{diag}"
            )
        return (
            f"<div style='border-left:4px solid {color};padding:4px 10px;font-family:sans-serif'>"
            f"<div style='font-weight:bold;color:{color}'>{html.escape(self.name)}: "
            f"{_fmt(self.score)}/{_fmt(self.max_score)} points</div>{''.join(rows)}</div>"
        )


def _fmt(x: float) -> str:
    return f"{x:g}"


# --------------------------------------------------------------------------- the checks of an exercise


def load_checks(exercise: str) -> dict[str, CheckSpec]:
    """The checks of ``exercise`` by name: the ``CHECKS`` list of its grader module (see ``EXERCISES``)."""
    import importlib

    from . import EXERCISES

    if exercise not in EXERCISES:
        raise ValueError(f"unknown exercise {exercise!r}; known exercises: {', '.join(sorted(EXERCISES))}")
    module = importlib.import_module(f"{__package__}.{EXERCISES[exercise]}")
    return {spec.name: spec for spec in module.CHECKS}


# --------------------------------------------------------------------------- safe calls


def _in_main_thread() -> bool:
    return threading.current_thread() is threading.main_thread()


def run_with_time_limit(fn: Callable, seconds: float):
    """Run ``fn()``; raise :class:`CandidateTimeout` if it takes longer than ``seconds``.

    In the main thread (a Jupyter kernel, pytest) a ``SIGALRM`` timer interrupts even ``while True: pass``;
    elsewhere the call runs in a daemon thread that is abandoned on time-out.
    """
    if hasattr(signal, "setitimer") and _in_main_thread():

        def on_alarm(signum, frame):
            raise CandidateTimeout()

        previous = signal.signal(signal.SIGALRM, on_alarm)
        signal.setitimer(signal.ITIMER_REAL, seconds)
        try:
            return fn()
        finally:
            signal.setitimer(signal.ITIMER_REAL, 0)
            signal.signal(signal.SIGALRM, previous)
    box: dict = {}

    def target():
        try:
            box["value"] = fn()
        except BaseException as exc:  # noqa: BLE001 - handed to the caller
            box["error"] = exc

    thread = threading.Thread(target=target, daemon=True)
    thread.start()
    thread.join(seconds)
    if thread.is_alive():
        raise CandidateTimeout()
    if "error" in box:
        raise box["error"]
    return box.get("value")


def _describe_exception(exc: BaseException) -> str:
    frames = traceback.extract_tb(exc.__traceback__)
    where = ""
    for frame in reversed(frames):
        if "dropout_course/grading" not in frame.filename.replace(os.sep, "/"):
            where = f" (line {frame.lineno} in {frame.name})"
            break
    text = str(exc).strip().splitlines()[0] if str(exc).strip() else ""
    return f"{type(exc).__name__}{': ' + text if text else ''}{where}"


@contextmanager
def preserved_global_rngs(seed: int):
    """Seed torch/NumPy/Python global RNGs for the block and restore the learner's RNG states after."""
    import torch

    np_state = np.random.get_state()
    py_state = random.getstate()
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        np.random.seed(seed)
        random.seed(seed)
        try:
            yield
        finally:
            np.random.set_state(np_state)
            random.setstate(py_state)


class CheckContext:
    """What a property test gets: the candidate, extra context, a safe ``call`` and a shared cache."""

    def __init__(
        self, candidate, time_limit: float, seed: int, extra: dict, originality: Originality | None = None
    ) -> None:
        self.candidate = candidate
        self.time_limit = time_limit
        self.seed = seed
        self.extra = extra
        self.cache: dict = {}
        self.timed_out = ""
        self.trace = Trace(originality)
        self.torch_dropout_calls = self.trace.torch_calls  # torch's dropout entry points the code called

    def fail_if_torch_dropout(self, fix: str) -> None:
        """Raise :class:`Fail` naming torch's dropout functions the learner's code called, then ``fix``."""
        calls = self.torch_dropout_calls
        if calls:
            used = ", ".join(sorted(set(calls)))
            raise Fail(f"calls torch's own dropout ({used}): {fix}")

    @contextmanager
    def seeded(self, seed: int, local: bool = False):
        """Seed the global RNGs the candidate draws from (restored after); ``local``: this process only.

        When the candidate runs in another process, the judge's ``seed_rng`` hook (an ``extra`` of the
        check) seeds that process instead.
        """
        hook = None if local else self.extra.get("seed_rng")
        if hook is not None:
            hook(seed)
            yield
            return
        with preserved_global_rngs(seed):
            yield

    def originality_finding(self, originality: Originality) -> str | None:
        """What the three detectors found (runtime trace, static scan, fingerprint), or None."""
        found = self.trace.describe()
        if found:
            return found
        source = self.extra.get("source")
        if source is None:
            if defined_by_exec(self.candidate):
                return "is code run by exec() (e.g. read from a notebook), not written in this notebook"
            source = candidate_source(self.candidate)
        if source:
            names = scan_source(source, originality, getattr(self.candidate, "__name__", None))
            if names:
                return "uses " + ", ".join(names)
        if originality.fingerprint is not None:
            try:
                with preserved_global_rngs(self.seed), torch_threads(1):
                    return originality.fingerprint(self)
            except Fail:
                return None
        return None

    def call(self, fn, *args, copy_args: bool = True, traced: bool = True, **kwargs):
        """Call learner code safely: deep-copied arguments, time limit, traced (torch's dropout and, for a
        check with an :class:`Originality`, what it forbids: see :class:`~.detect.Trace`).

        Raises :class:`Fail` with a readable reason if the code raises or runs past the time limit.
        ``traced=False`` for learner code that is not the candidate (not judged for originality here).
        """
        if copy_args:
            args = copy.deepcopy(args)
            kwargs = copy.deepcopy(kwargs)
        name = getattr(fn, "__name__", type(fn).__name__)
        if self.timed_out:  # one time-out per check is enough: do not wait again for every property
            raise Fail(self.timed_out)

        def run():
            if not traced:  # learner code other than the candidate (e.g. their forward pass passed along)
                return fn(*args, **kwargs)
            with self.trace.active():
                return fn(*args, **kwargs)

        try:
            return run_with_time_limit(run, self.time_limit)
        except CandidateTimeout:
            self.timed_out = (
                f"`{name}` did not finish within {self.time_limit:g} s (an endless loop, or far too slow)"
            )
            raise Fail(self.timed_out) from None
        except NotImplementedError:
            raise Fail(f"`{name}` is not implemented yet (it raises NotImplementedError)") from None
        except Fail:
            raise
        except Exception as exc:  # noqa: BLE001 - the learner's error becomes the diagnosis
            raise Fail(f"`{name}` raised {_describe_exception(exc)}") from None
        except BaseException as exc:  # SystemExit, KeyboardInterrupt from learner code
            if isinstance(exc, KeyboardInterrupt):
                raise
            raise Fail(f"`{name}` raised {_describe_exception(exc)}") from None

    def memo(self, key, compute: Callable):
        """Compute ``compute()`` once per check (a failure is remembered and re-raised too)."""
        if key not in self.cache:
            try:
                self.cache[key] = ("ok", compute())
            except Fail as exc:
                self.cache[key] = ("fail", str(exc))
        status, value = self.cache[key]
        if status == "fail":
            raise Fail(value)
        return value


# --------------------------------------------------------------------------- the grader


class Summary:
    """A table of every check of an exercise: score, max and status (HTML in notebooks, text elsewhere)."""

    def __init__(self, grader: Grader) -> None:
        self.grader = grader

    def rows(self) -> list[tuple[str, str, float, float]]:
        rows = []
        for spec in self.grader.specs.values():
            result = self.grader.results.get(spec.name)
            if result is None:
                status = "hidden: run by the autograder" if spec.hidden else "not run yet"
                rows.append((spec.name, status, 0.0, spec.max_score))
            else:
                status = "passed" if result.passed else "failed"
                rows.append((spec.name, status, result.score, result.max_score))
        return rows

    def __str__(self) -> str:
        lines = [f"{self.grader.exercise}: {_fmt(self.grader.total)}/{_fmt(self.grader.max_total)} points"]
        width = max([len(r[0]) for r in self.rows()] + [5])
        for name, status, score, max_score in self.rows():
            lines.append(f"  {name:<{width}}  {_fmt(score):>5}/{_fmt(max_score):<5} {status}")
        return "\n".join(lines)

    __repr__ = __str__

    def _repr_html_(self) -> str:
        body = "".join(
            f"<tr><td>{html.escape(n)}</td><td style='text-align:right'>{_fmt(s)}/{_fmt(m)}</td>"
            f"<td>{html.escape(st)}</td></tr>"
            for n, st, s, m in self.rows()
        )
        return (
            f"<div><b>{html.escape(self.grader.exercise)}: {_fmt(self.grader.total)}/"
            f"{_fmt(self.grader.max_total)} points</b><table><tr><th>check</th><th>points</th>"
            f"<th>status</th></tr>{body}</table></div>"
        )


class Grader:
    """Grades the checks of one exercise notebook: ``Grader("ex01_inverted_dropout").check(name, fn)``.

    Args:
        exercise: the exercise id (the notebook's assignment folder name).
        time_limit: seconds each call of learner code may take before it counts as hanging.
        seed: base seed of the statistical tests (the learner's global RNG states are restored after).
    """

    def __init__(self, exercise: str, time_limit: float = DEFAULT_TIME_LIMIT, seed: int = 1234) -> None:
        self.exercise = exercise
        self.specs = load_checks(exercise)
        self.time_limit = float(time_limit)
        self.seed = int(seed)
        self.results: dict[str, CheckResult] = {}

    @property
    def total(self) -> float:
        """Points scored so far (the latest result of each check)."""
        return float(sum(r.score for r in self.results.values()))

    @property
    def max_total(self) -> float:
        """Points available in the whole exercise, hidden checks included."""
        return float(sum(s.max_score for s in self.specs.values()))

    def check(self, name: str, candidate=None, **extra) -> CheckResult:
        """Run check ``name`` on the learner's ``candidate`` (a function or class); never raises.

        Anything written to stderr meanwhile (the learner's prints, warnings) goes to stdout: nbgrader gives
        no credit to a grade cell with output on stderr.
        """
        spec = self.specs.get(name)
        if spec is None:
            return CheckResult(
                self.exercise,
                name,
                error=f"no check named {name!r} in {self.exercise}; checks: {', '.join(self.specs)}",
            )
        with redirect_stderr(sys.stdout):
            result = self._judge(spec, candidate, extra)
        self.results[name] = result
        return result

    def _judge(self, spec: CheckSpec, candidate, extra: dict) -> CheckResult:
        result = CheckResult(self.exercise, spec.name)
        ctx = CheckContext(candidate, self.time_limit, self.seed, extra, spec.originality)
        first_failed: dict[str, str] = {}  # diagnosis -> the property that reported it first
        for prop in spec.properties:
            passed, diagnosis = False, ""
            try:
                with preserved_global_rngs(self.seed), torch_threads(1):
                    prop.test(ctx)
                passed = True
            except Fail as exc:
                diagnosis = str(exc)
            except KeyboardInterrupt:
                raise
            except BaseException as exc:  # noqa: BLE001 - a grader bug must not crash the learner's kernel
                diagnosis = f"could not be checked: {_describe_exception(exc)}"
            if not passed:  # one cause, one failing property: the others that hit it say so
                if diagnosis in first_failed:
                    diagnosis = f'skipped: fix "{first_failed[diagnosis]}" first (same cause)'
                else:
                    first_failed[diagnosis] = prop.name
            result.properties.append(
                PropertyResult(prop.name, prop.points if passed else 0.0, prop.points, passed, diagnosis)
            )
        if spec.originality is not None and candidate is not None:
            finding = None
            try:
                finding = ctx.originality_finding(spec.originality)
            except KeyboardInterrupt:
                raise
            except BaseException:  # noqa: BLE001 - a detector failing must not crash grading
                finding = None
            if finding:
                reason = f"not credited: {finding}: the task is to {spec.originality.task}"
                result.error = reason
                for prop in result.properties:
                    prop.points, prop.passed = 0.0, False
                    prop.diagnosis = "not credited: uses code the task is to write (see above)"
        return result

    def summary(self) -> Summary:
        """A table of every check of this exercise so far."""
        return Summary(self)
