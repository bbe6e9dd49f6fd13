"""Is the graded code the learner's own? Detectors of torch's dropout and of the course's reference code.

A check whose task is "write dropout yourself" carries an :class:`Originality`: what the learner must not
call (torch's dropout entry points, named reference objects of ``dropout_course``). Three independent
detectors look for it; any finding costs the whole check (see :meth:`Grader.check`):

* **runtime trace** (:class:`Trace`): while learner code runs, a ``TorchFunctionMode`` records every torch
  dropout entry point (``F.dropout*``, ``torch.dropout``, ``torch._VF.dropout`` saved earlier,
  ``torch.ops.aten.*dropout*``, ``nn.Dropout*`` ...) and a profile hook records calls into the course's
  reference code objects, however they were imported or aliased. It works wherever the learner's code
  runs in this process (the notebook's feedback; the grading worker).
* **static scan** (:func:`scan_source`): the learner's source text (``grader.check(..., source=text)``, or
  in a notebook the candidate's own source) is parsed; imports and attribute chains are resolved to dotted
  names, so ``from torch import dropout as d``, ``torch.ops.aten.native_dropout`` or
  ``from dropout_course.layers import Dropout`` are named; code built at run time (``exec``, ``eval``,
  ``__import__``) and reading the course's notebooks are reported too.
* **behavioural fingerprint** (:func:`fingerprint`): computed by the judge from what the candidate returns.
  Under the same global RNG state, torch's dropout and the course's reference give bit-identical outputs;
  they also reject ``p = 1.5`` with their own messages. Both together name the source. A from-scratch mask
  (``torch.rand_like(x) < 1 - p``, ``torch.bernoulli``, NumPy) never matches bit for bit, and a learner
  who happens to draw the same mask as torch (``torch.empty_like(x).bernoulli_(1 - p)``) does not also
  raise torch's own error text, so correct code is not flagged.
"""

from __future__ import annotations

import ast
import functools
import importlib
import inspect
import sys
import textwrap
import types
from collections.abc import Callable, Iterable
from contextlib import contextmanager
from dataclasses import dataclass, field

TORCH_DROPOUT_NAMES = frozenset(
    {
        "dropout",
        "dropout_",
        "dropout1d",
        "dropout2d",
        "dropout3d",
        "feature_dropout",
        "feature_dropout_",
        "alpha_dropout",
        "alpha_dropout_",
        "feature_alpha_dropout",
        "feature_alpha_dropout_",
        "native_dropout",
        "fused_dropout",
        "_fused_dropout",
    }
)
TORCH_DROPOUT_CLASSES = frozenset(
    {"Dropout", "Dropout1d", "Dropout2d", "Dropout3d", "AlphaDropout", "FeatureAlphaDropout"}
)
TORCH_ERROR_TEXT = "dropout probability has to be between 0 and 1"
COURSE_ERROR_TEXT = "(the chance of dropping)"
_DYNAMIC = {"exec", "eval", "compile", "__import__"}
_TAMPERING = ("DisableTorchFunction", "_disabled_torch_function", "setprofile", "settrace", "_pop_mode")


@dataclass(frozen=True)
class Originality:
    """What a check's candidate must not use: the task it replaces, torch's dropout, course references.

    Args:
        task: what the learner is asked to write, for the finding ("the task is to write dropout yourself").
        references: course objects the task re-implements, as ``"module:qualname"`` (``"dropout_course.
            layers:Dropout"``); their private helpers in the same module are included.
        torch_dropout: whether torch's own dropout entry points are forbidden.
        forbid_sdpa: whether ``F.scaled_dot_product_attention`` with ``dropout_p > 0`` counts as torch's
            dropout (attention exercises).
        fingerprint: optional ``fingerprint(ctx) -> finding | None`` run by the judge on the candidate's
            behaviour.
    """

    task: str = "write dropout yourself"
    references: tuple[str, ...] = ()
    torch_dropout: bool = True
    forbid_sdpa: bool = False
    fingerprint: Callable | None = field(default=None, compare=False)


def _resolve(spec: str):
    module_name, _, qualname = spec.partition(":")
    obj = importlib.import_module(module_name)
    for part in qualname.split(".") if qualname else ():
        obj = getattr(obj, part)
    return obj


def _functions_of(obj) -> Iterable[tuple[types.FunctionType, str]]:
    """(function, dotted name of where it is defined) for a function, or every method of a class and its
    bases from this package."""
    if callable(obj) and not isinstance(obj, type):
        obj = inspect.unwrap(obj)  # decorators (contextmanager, torch.no_grad) share their wrapper's code
    if isinstance(obj, types.FunctionType):
        if (obj.__module__ or "").startswith("dropout_course"):
            yield obj, f"{obj.__module__}.{obj.__qualname__}"
    elif isinstance(obj, type):
        for klass in obj.__mro__:
            if not (klass.__module__ or "").startswith("dropout_course"):
                continue
            for value in vars(klass).values():
                value = getattr(value, "__func__", value)
                if isinstance(value, property):
                    value = value.fget
                if callable(value):
                    value = inspect.unwrap(value)
                if isinstance(value, types.FunctionType) and (value.__module__ or "").startswith(
                    "dropout_course"
                ):
                    yield value, f"{klass.__module__}.{klass.__qualname__}"


def reference_codes(originality: Originality) -> dict[types.CodeType, str]:
    """Code objects of the forbidden references (and their modules' private helpers) -> dotted name."""
    codes: dict[types.CodeType, str] = {}
    modules = set()
    for spec in originality.references:
        try:
            obj = _resolve(spec)
        except (ImportError, AttributeError):
            continue
        modules.add(spec.partition(":")[0])
        for fn, label in _functions_of(obj):
            codes[fn.__code__] = label
    for module_name in modules:
        module = sys.modules.get(module_name)
        for name, value in vars(module).items() if module else ():
            if name.startswith("_") and not name.startswith("__"):
                for fn, label in _functions_of(value):
                    if fn.__module__ == module_name:
                        codes.setdefault(fn.__code__, label)
    return codes


def _torch_label(func) -> str | None:
    """A readable dotted name if ``func`` (seen by a TorchFunctionMode) is one of torch's dropouts."""
    name = getattr(func, "__name__", "") or ""
    base = name.split(".")[0]
    if base not in TORCH_DROPOUT_NAMES:
        return None
    module = getattr(func, "__module__", "") or ""
    if module.startswith("torch._ops"):
        return f"torch.ops.aten.{name}"
    if module == "torch.nn.functional":
        return f"torch.nn.functional.{name}"
    return f"torch.{name}"


@functools.cache
def _torch_module_label(cls: type) -> str | None:
    """``"torch.nn.Dropout"`` (and so on) if ``cls`` is, or subclasses, one of torch's dropout modules."""
    for klass in cls.__mro__:
        if klass.__module__ == "torch.nn.modules.dropout" and klass.__name__ in TORCH_DROPOUT_CLASSES:
            return f"torch.nn.{klass.__name__}"
    return None


SDPA_DROPOUT = "torch.nn.functional.scaled_dot_product_attention(dropout_p > 0)"


def _sdpa_drops(args: tuple, kwargs: dict) -> bool:
    """Whether a ``scaled_dot_product_attention(q, k, v, attn_mask, dropout_p, ...)`` call applies dropout."""
    p = kwargs.get("dropout_p", args[4] if len(args) > 4 else 0.0)
    try:
        return float(p) > 0.0
    except (TypeError, ValueError):
        return True


_LIBRARY_DIRS = tuple({sys.prefix, sys.base_prefix, sys.exec_prefix})


def _learner_frame(frame) -> bool:
    """Whether ``frame`` runs code outside the installed libraries (imports exec module code, numpy
    compiles docstrings: those are not the learner's)."""
    filename = frame.f_code.co_filename
    return not (filename.startswith("<frozen") or filename.startswith(_LIBRARY_DIRS))


_LABELS: dict = {}  # torch function -> _torch_label (or SDPA_DROPOUT, or None): the mode's hot path


def _label_of(func) -> str | None:
    """:func:`_torch_label` of ``func``, ``SDPA_DROPOUT`` for attention (its ``dropout_p`` decides), else
    None; remembered per function (every torch call of the learner's code asks)."""
    try:
        return _LABELS[func]
    except KeyError:
        pass
    except TypeError:  # not hashable
        return _torch_label(func)
    label = _torch_label(func)
    if label is None and getattr(func, "__name__", "") == "scaled_dot_product_attention":
        label = SDPA_DROPOUT
    if len(_LABELS) > 10_000:
        _LABELS.clear()
    _LABELS[func] = label
    return label


@functools.cache
def _dropout_mode_class():
    """A ``TorchFunctionMode`` class that reports every torch dropout entry point called to its trace."""
    from torch.overrides import TorchFunctionMode

    class _DropoutMode(TorchFunctionMode):
        def __init__(self, trace: Trace) -> None:
            super().__init__()
            self.trace = trace

        def __torch_function__(self, func, types_, args=(), kwargs=None):
            label = _label_of(func)
            if label is SDPA_DROPOUT:
                if _sdpa_drops(args, kwargs or {}):
                    self.trace.record_torch(label, sdpa=True)
            elif label is not None:
                self.trace.record_torch(label)
            return func(*args, **(kwargs or {}))

    return _DropoutMode


class Trace:
    """Record, while learner code runs, every call of torch's dropout (``torch_calls``, whatever the check)
    and what the check's :class:`Originality` forbids (``findings``).

    The one detector of torch's dropout in grading: a ``TorchFunctionMode`` sees every torch entry point
    however it was reached (``F.dropout*``, ``torch.dropout`` imported or saved under another name,
    ``torch._VF.dropout``, ``torch.ops.aten.*dropout*``, ``scaled_dot_product_attention`` with
    ``dropout_p > 0``) and a forward pre-hook names ``nn.Dropout*`` modules (``torch_calls`` only, so that
    a finding names the function). Reference code and ``exec()`` are found by a profile hook.
    """

    def __init__(self, originality: Originality | None) -> None:
        self.originality = originality
        self.codes = reference_codes(originality) if originality else {}
        self.findings: list[str] = []
        self.torch_calls: list[str] = []

    def record_torch(self, label: str, sdpa: bool = False) -> None:
        """A call of torch's dropout (``sdpa``: attention with ``dropout_p > 0``): a finding if forbidden."""
        self.torch_calls.append(label)
        forbidden = self.originality is not None and (
            self.originality.forbid_sdpa if sdpa else self.originality.torch_dropout
        )
        if forbidden:
            self.findings.append(label)

    @contextmanager
    def active(self):
        """Trace the block: the current thread, and (reference code only) the ``threading.Thread``s started
        meanwhile; not threads started before, nor torch's dropout in another thread."""
        import threading

        from torch.nn.modules.module import register_module_forward_pre_hook

        thread = threading.get_ident()

        def module_hook(module, args):
            label = _torch_module_label(type(module))
            if label and threading.get_ident() == thread:
                self.torch_calls.append(label)

        previous, previous_threads = sys.getprofile(), threading.getprofile()
        hook = register_module_forward_pre_hook(module_hook)
        if self.originality is not None:
            sys.setprofile(self._profiler(previous))
            threading.setprofile(self._profiler(None))  # threads the learner's code starts meanwhile
        try:
            with _dropout_mode_class()(self):
                yield
        finally:
            if self.originality is not None:
                sys.setprofile(previous)
                threading.setprofile(previous_threads)
            hook.remove()

    def _profiler(self, previous):
        """A ``sys.setprofile`` hook: calls into the reference code objects, ``exec``/``eval``/``compile``
        from the learner's code (then the ``previous`` hook)."""
        findings, codes = self.findings, self.codes
        dynamic = {id(exec): "exec", id(eval): "eval", id(compile): "compile"}

        def profile(frame, event, arg):
            if event == "call":
                label = codes.get(frame.f_code)
                if label is not None:
                    findings.append(label)
            elif event == "c_call" and id(arg) in dynamic and _learner_frame(frame):
                findings.append(f"{dynamic[id(arg)]}() (code built at run time)")
            if previous is not None:
                previous(frame, event, arg)

        return profile

    def describe(self) -> str | None:
        """ "calls X, Y" naming what was called (private helpers only when nothing public was), or None."""
        if not self.findings:
            return None
        names = sorted(set(self.findings))
        public = [n for n in names if not n.rsplit(".", 1)[-1].startswith("_")]
        return "calls " + ", ".join(public or names)


# --------------------------------------------------------------------------- static scan


def candidate_source(candidate) -> str | None:
    """The candidate's source text when this process can see it (a notebook kernel), else None."""
    targets = [candidate]
    if isinstance(candidate, type):
        targets = [v for v in vars(candidate).values() if isinstance(v, types.FunctionType)] or targets
    parts = []
    for target in targets:
        try:
            parts.append(textwrap.dedent(inspect.getsource(target)))
        except (OSError, TypeError):
            continue
    return "\n".join(parts) if parts else None


def defined_by_exec(candidate) -> bool:
    """Whether the candidate (a function, or a class's methods) was compiled from a string by ``exec``
    (e.g. solution cells read from a notebook file) rather than written in a cell or a file."""
    targets = [candidate]
    if isinstance(candidate, type):
        targets = [v for v in vars(candidate).values() if isinstance(v, types.FunctionType)]
    for target in targets:
        code = getattr(inspect.unwrap(target), "__code__", None) if callable(target) else None
        if isinstance(code, types.CodeType) and code.co_filename in ("<string>", "<exec>", "<unknown>"):
            return True
    return False


class _Scanner(ast.NodeVisitor):
    def __init__(self, originality: Originality) -> None:
        self.originality = originality
        self.aliases: dict[str, str] = {}
        self.findings: list[str] = []
        self.refs = {spec.replace(":", ".") for spec in originality.references}
        self.ref_modules = {spec.partition(":")[0] for spec in originality.references}

    def visit_Import(self, node: ast.Import) -> None:
        for alias in node.names:
            if alias.asname:
                self.aliases[alias.asname] = alias.name
            else:
                top = alias.name.split(".")[0]
                self.aliases[top] = top
            self._judge(alias.name)

    def visit_ImportFrom(self, node: ast.ImportFrom) -> None:
        module = node.module or ""
        for alias in node.names:
            full = f"{module}.{alias.name}"
            self.aliases[alias.asname or alias.name] = full
            self._judge(full)

    def _dotted(self, node) -> str | None:
        parts = []
        while isinstance(node, ast.Attribute):
            parts.append(node.attr)
            node = node.value
        if not isinstance(node, ast.Name):
            return None
        base = self.aliases.get(node.id)
        if base is None:
            return None
        return ".".join([base, *reversed(parts)])

    def _judge(self, dotted: str) -> None:
        parts = dotted.split(".")
        if any(word in parts[-1] for word in _TAMPERING):
            self.findings.append(f"{dotted} (turns off the grader's tracing)")
        if self.originality.torch_dropout and parts[0] == "torch":
            last = parts[-1].split("(")[0]
            if last in TORCH_DROPOUT_NAMES or last in TORCH_DROPOUT_CLASSES or last == "_VF":
                self.findings.append(dotted)
        if parts[0] == "dropout_course":
            if dotted.startswith(("dropout_course.grading", "dropout_course.instructor")) and dotted not in (
                "dropout_course.grading",
                "dropout_course.grading.Grader",
            ):
                self.findings.append(dotted)
            elif dotted in self.refs or any(dotted.startswith(ref + ".") for ref in self.refs):
                self.findings.append(dotted)
            elif dotted in self.ref_modules:
                pass  # the module itself: judged where a name of it is used
            elif any(dotted.startswith(m + "._") for m in self.ref_modules):
                self.findings.append(dotted)

    def visit_Attribute(self, node: ast.Attribute) -> None:
        dotted = self._dotted(node)
        if dotted is not None:
            self._judge(dotted)
            return
        self.generic_visit(node)

    def visit_Name(self, node: ast.Name) -> None:
        if node.id in self.aliases and isinstance(node.ctx, ast.Load):
            self._judge(self.aliases[node.id])

    def visit_Call(self, node: ast.Call) -> None:
        func = node.func
        name = func.id if isinstance(func, ast.Name) else None
        dotted = self._dotted(func) if isinstance(func, ast.Attribute) else None
        target = dotted or (self.aliases.get(name) if name else None) or ""
        if self.originality.forbid_sdpa and target.endswith("scaled_dot_product_attention"):
            p = next((k.value for k in node.keywords if k.arg == "dropout_p"), None)
            p = node.args[4] if p is None and len(node.args) > 4 else p
            if p is not None and not (isinstance(p, ast.Constant) and p.value in (0, 0.0)):
                self.findings.append(f"{target}(dropout_p=...)")
        if name in _DYNAMIC and name not in self.aliases:
            self.findings.append(f"{name}() (code built at run time)")
        if dotted in ("importlib.import_module", "importlib.__import__", "builtins.exec", "builtins.eval"):
            self.findings.append(f"{dotted}() (code built at run time)")
        if name == "getattr" and node.args:
            target = (
                self._dotted(node.args[0]) if isinstance(node.args[0], (ast.Attribute, ast.Name)) else None
            )
            if target and target.split(".")[0] in ("torch", "dropout_course"):
                attr = node.args[1] if len(node.args) > 1 else None
                if isinstance(attr, ast.Constant) and isinstance(attr.value, str):
                    self._judge(f"{target}.{attr.value}")
                else:
                    self.findings.append(f"getattr({target}, ...) (a name built at run time)")
        for arg in node.args:
            if isinstance(arg, ast.Constant) and isinstance(arg.value, str):
                if ".ipynb" in arg.value or "exercises/source" in arg.value:
                    self.findings.append(f"reads {arg.value!r}")
        self.generic_visit(node)


def _top_level_names(node) -> list[str]:
    if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
        return [node.name]
    targets = []
    if isinstance(node, ast.Assign):
        targets = node.targets
    elif isinstance(node, (ast.AnnAssign, ast.AugAssign)):
        targets = [node.target]
    names = []
    for target in targets:
        names += [n.id for n in ast.walk(target) if isinstance(n, ast.Name)]
    return names


def _reachable(tree: ast.Module, entry: str) -> list[ast.AST] | None:
    """Top-level statements defining ``entry`` and, transitively, the top-level names they use; None if
    ``entry`` is not defined (or imported) at top level."""
    defs: dict[str, list[ast.AST]] = {}
    imported = set()
    for node in tree.body:
        if isinstance(node, (ast.Import, ast.ImportFrom)):
            imported |= {(a.asname or a.name).split(".")[0] for a in node.names}
            continue
        for name in _top_level_names(node):
            defs.setdefault(name, []).append(node)
    if entry not in defs:
        return [] if entry in imported else None
    seen: set[str] = set()
    todo, nodes = [entry], []
    while todo:
        name = todo.pop()
        if name in seen or name not in defs:
            continue
        seen.add(name)
        for node in defs[name]:
            if node not in nodes:
                nodes.append(node)
            todo += [n.id for n in ast.walk(node) if isinstance(n, ast.Name) and n.id in defs]
    return nodes


def scan_source(source: str, originality: Originality, entry: str | None = None) -> list[str]:
    """Names of forbidden things the source uses (resolved through imports and aliases); [] if none.

    With ``entry`` (the candidate's name), only its definition and the top-level definitions it uses are
    judged (imports anywhere resolve names), so a scratch cell comparing with torch's dropout costs
    nothing; a candidate that is an imported name is judged by what it imports.
    """
    try:
        tree = ast.parse(textwrap.dedent(source))
    except (SyntaxError, ValueError):
        return []
    scanner = _Scanner(originality)
    for node in ast.walk(tree):  # imports first (anywhere in the text), then every use
        if isinstance(node, ast.Import):
            scanner.visit_Import(node)
        elif isinstance(node, ast.ImportFrom):
            scanner.visit_ImportFrom(node)
    scanner.findings.clear()
    nodes = _reachable(tree, entry) if entry else None
    if nodes is None:
        scanner.visit(tree)
    else:
        if entry in scanner.aliases and not nodes:
            scanner._judge(scanner.aliases[entry])
        for node in nodes:
            scanner.visit(node)
    return sorted(set(scanner.findings))


# --------------------------------------------------------------------------- behavioural fingerprint


def error_text_source(text: str) -> str | None:
    """Whose validation message ``text`` is: torch's dropout, the course's reference, or None."""
    if TORCH_ERROR_TEXT in text:
        return "torch's dropout"
    if COURSE_ERROR_TEXT in text:
        return "the course's reference"
    return None


def fingerprint(
    ctx,
    run_candidate: Callable[[float], object],
    references: Iterable[Callable[[float], object]],
    reject_probe: Callable[[], str],
    p_values=(0.3, 0.65),
    seed: int = 97,
) -> str | None:
    """A finding if the candidate reproduces one of ``references`` bit for bit AND rejects a bad ``p`` with
    torch's or the course's own message; else None.

    ``run_candidate(p)`` and each ``reference(p)`` return outputs (tensors or arrays) for the same input;
    each runs after the global RNGs were seeded with ``seed`` (``ctx.seeded``: the candidate's process,
    which may be the grading worker; the references run here). ``reject_probe()`` returns the text of the
    error the candidate raises for ``p = 1.5`` ("" if none).
    """
    import numpy as np
    import torch

    from .core import Fail

    def same(a, b) -> bool:
        if isinstance(a, torch.Tensor) and isinstance(b, torch.Tensor):
            return a.shape == b.shape and a.dtype == b.dtype and torch.equal(a.detach(), b.detach())
        if isinstance(a, np.ndarray) and isinstance(b, np.ndarray):
            return a.shape == b.shape and a.dtype == b.dtype and np.array_equal(a, b)
        return False

    try:
        got = {}
        for p in p_values:
            with ctx.seeded(seed):
                got[p] = run_candidate(p)
        matched = False
        for reference in references:
            ok = True
            for p in p_values:
                with ctx.seeded(seed, local=True):
                    want = reference(p)
                if not same(got[p], want):
                    ok = False
                    break
            if ok:
                matched = True
                break
        if not matched:
            return None
        whose = error_text_source(reject_probe())
    except Fail:
        return None
    if whose is None:
        return None
    return (
        f"its output is bit-for-bit {whose} (the same mask from the same random state, and the same error "
        "text for p=1.5)"
    )


def probe_error_text(ctx, fn, *args) -> str:
    """The text of the error ``fn(*args)`` raises through ``ctx.call`` ("" if it returns normally)."""
    from .core import Fail

    try:
        ctx.call(fn, *args, copy_args=False)
    except Fail as exc:
        return str(exc)
    return ""
