"""Judge-side stand-ins for a submission's functions, classes and modules, whose calls run in the worker.

A check calls a :class:`RemoteFunction` or builds a remote class like any candidate; each call becomes
a request ("call object #3 with these arguments") and the reply is decoded without unpickling
(:mod:`.wire`). What the grader's properties see:

* results: tensors, arrays, numbers, strings and containers of them, rebuilt in the judge;
* gradients: when an argument needs them, the result is tied to it by an autograd function whose
  backward asks the worker for the vector-Jacobian product of that call;
* modules: a :class:`~.mirror.RemoteModule` is a real ``nn.Module`` mirroring the learner's module (class names,
  sub-modules, parameters, buffers, train/eval flags); its calls run remotely, the judge's changes to the
  mirror (``copy_`` into a parameter, an optimiser step, ``.train()``) are sent before the next call and
  the worker's state comes back after it;
* arguments the call changed (a tensor modified in place, a module left in train mode, a NumPy generator
  that drew numbers) are updated in the judge, so the checks see the learner's side effects;
* trusted objects (an ``nn.Module`` class of ``dropout_course`` or ``torch.nn`` the learner merely
  re-exported) are the judge's own classes, so checks of "the course's reference used" see them. A function
  is never the judge's own: run here with a check's arguments, one of torch's that changes global state
  (``register_module_forward_pre_hook``) would change the judge for every later submission.
"""

from __future__ import annotations

import sys
import time

import numpy as np
import torch
from torch import nn

from . import wire
from .mirror import RemoteModule, module_class, rebuild_module, trusted
from .wire import WorkerLost, remote_exception

__all__ = ["Client", "RemoteFunction", "RemoteModule", "RemoteObject", "WorkerLost"]

DEFAULT_DEADLINE = 60.0


class Client:
    """The judge's connection to one worker: requests with deadlines, decoding, the current check."""

    def __init__(self, sandbox) -> None:
        self.sandbox = sandbox
        self.broken = ""
        self.check: tuple[str, str] | None = None
        self.deadline = DEFAULT_DEADLINE
        self.exports: dict[int, nn.Module] = {}
        self.leftovers = 0  # other processes of the sandbox still running when it was killed

    def request(self, kind: str, *params, deadline: float | None = None) -> dict:
        if self.broken:
            raise WorkerLost(self.broken)
        try:
            wire.write_frame(self.sandbox.to_worker, wire.dump_request((kind, *params)))
            limit = self.deadline if deadline is None else deadline
            reply = wire.load_reply(wire.read_frame(self.sandbox.from_worker, time.monotonic() + limit))
        except wire.ChannelTimeout:
            self.lose(f"no answer within {limit:g} s (an endless loop?); the worker was stopped")
            raise WorkerLost(self.broken) from None
        except (wire.ChannelClosed, BrokenPipeError, OSError) as exc:
            self.lose(f"the worker process died or broke the channel ({exc})")
            raise WorkerLost(self.broken) from None
        except BaseException:
            # a time limit raised in the judge (SIGALRM) while waiting: the worker is busy and out of step
            self.lose("stopped at its time limit; the worker was stopped")
            raise
        if not isinstance(reply, dict):
            self.lose("the worker answered something that is not a reply")
            raise WorkerLost(self.broken)
        return reply

    def lose(self, why: str) -> None:
        if not self.broken:
            self.broken = why
            self.leftovers += self.sandbox.kill()

    # ----------------------------------------------------------------- values

    def decode(self, item, tensors: list | None = None):
        def make_handle(desc):
            return self.proxy(desc)

        value = wire.decode_value(item, make_handle)
        if tensors is not None:
            _collect_tensors(value, tensors)
        return value

    def proxy(self, desc: dict):
        kind = desc.get("kind")
        if kind == "trusted":  # a module class only: a function would run here with the check's arguments
            return trusted(str(desc["module"]), str(desc["qualname"]), kind=nn.Module)
        if kind == "tmodule":
            return rebuild_module(desc["tree"])
        if kind == "module":
            cls = module_class(str(desc["tree"]["cls_module"]), str(desc["tree"]["cls_name"]))
            module = cls.__new__(cls)
            nn.Module.__init__(module)
            module._attach(self, int(desc["id"]), desc["tree"])
            return module
        if kind == "class":
            return _class_proxy(self, desc)
        if kind == "function":
            return RemoteFunction(self, desc)
        return _object_proxy(self, desc)

    def call(self, target: int, method: str | None, args: tuple, kwargs: dict, module=None):
        """Call remote object ``target`` (``method`` of it) and return the decoded result."""
        if module is not None:
            module._push()
        for value in list(args) + list(kwargs.values()):
            if isinstance(value, RemoteModule):
                value._push()
        plan = _CallPlan(self, target, method, args, kwargs, module)
        try:
            params: list[torch.Tensor] = []
            if module is not None:
                params = [p for p in module.parameters() if p.requires_grad]
            needs_graph = torch.is_grad_enabled() and bool(plan.grad_inputs or params)
            if not needs_graph:
                return self._finish(self._call(plan), plan)
            box: dict = {}
            outs = _RemoteCall.apply(self, box, plan, *plan.grad_inputs, *params)
        finally:
            plan.restore_hooks()
        value = box["value"]
        return _replace_tensors(value, list(outs)) if box["n"] else value

    def export(self, module: nn.Module) -> int:
        """A token for a judge-side module sent to the worker (its parameters keep their identity)."""
        for token, value in self.exports.items():
            if value is module:
                return token
        token = len(self.exports) + 1
        self.exports[token] = module
        return token

    def _call(self, plan: _CallPlan):
        extras = {"observe": plan.observe, "origins": plan.origins}
        reply = self.request(
            "call",
            wire.Ref(plan.target),
            plan.method,
            plan.args,
            plan.kwargs,
            plan.leaves,
            self.check,
            extras,
        )
        self._report(reply)
        if not reply.get("ok"):
            raise remote_exception(reply.get("error", {}))
        return reply

    def _finish(self, reply: dict, plan: _CallPlan, tensors: list | None = None):
        value = self.decode(reply["value"], tensors)
        plan.replay(reply.get("events", []))
        _apply_mutations(reply.get("mutated", []), plan.orig_args, plan.orig_kwargs)
        if plan.module is not None and "tree" in reply:
            plan.module._sync(reply["tree"])
        return value

    def _report(self, reply: dict) -> None:
        """Hand the worker's dropout/reference findings to the check that is running (if any)."""
        calls = [str(c) for c in reply.get("calls", [])]
        findings = [str(c) for c in reply.get("findings", [])]
        if not (calls or findings):
            return
        ctx = _current_check_context()
        if ctx is not None:
            ctx.torch_dropout_calls.extend(calls)
            trace = getattr(ctx, "trace", None)
            if trace is not None:
                trace.findings.extend(findings)


def _current_check_context():
    from ..grading.core import CheckContext

    frame = sys._getframe(1)
    while frame is not None:
        candidate = frame.f_locals.get("self")
        if isinstance(candidate, CheckContext):
            return candidate
        frame = frame.f_back
    return None


class _CallPlan:
    """One remote call: arguments with gradient slots, the judge's hooks set aside (replayed after)."""

    def __init__(self, client: Client, target: int, method, args: tuple, kwargs: dict, module) -> None:
        self.client, self.target, self.method, self.module = client, target, method, module
        self.orig_args, self.orig_kwargs = args, kwargs
        self.grad_inputs: list[torch.Tensor] = []
        self.args = _slot_grads(args, self.grad_inputs)
        self.kwargs = _slot_grads(kwargs, self.grad_inputs)
        self.leaves = [t.detach() for t in self.grad_inputs]
        self.observe: list[tuple] = []
        self.hooks: list[tuple[nn.Module, str, object]] = []
        self.origins: dict[tuple, int] = {}
        items = [(("a", i), v) for i, v in enumerate(args)] + [(("k", k), v) for k, v in kwargs.items()]
        for path, value in items:
            if isinstance(value, nn.Module) and not isinstance(value, RemoteModule):
                self.origins[path] = client.export(value)
                for name, sub in value.named_modules():
                    for kind, attr in (("pre", "_forward_pre_hooks"), ("post", "_forward_hooks")):
                        hooks = getattr(sub, attr)
                        if hooks:
                            self.observe.append((path, name, kind))
                            self.hooks.append((sub, attr, hooks))
                            setattr(sub, attr, type(hooks)())  # not sent: the worker records, we replay

    def restore_hooks(self) -> None:
        for sub, attr, hooks in self.hooks:
            setattr(sub, attr, hooks)
        self.hooks_restored = True

    def replay(self, events: list) -> None:
        """Run the judge's own hooks on what the worker saw at each hooked module (mode, inputs, output)."""
        for event in events:
            try:
                index, training, args, output = event
                path, name, kind = self.observe[int(index)]
                sub, attr, hooks = self.hooks[int(index)]
            except (ValueError, IndexError, TypeError):
                continue
            saved = sub.training
            sub.training = bool(training)
            try:
                args = self.client.decode(args)
                args = tuple(args) if isinstance(args, (list, tuple)) else (args,)
                for hook in list(hooks.values()):
                    if kind == "pre":
                        hook(sub, args)
                    else:
                        hook(sub, args, self.client.decode(output))
            except Exception:  # noqa: BLE001 - an observer failing changes nothing
                pass
            finally:
                sub.training = saved


class _RemoteCall(torch.autograd.Function):
    """A remote call inside autograd: forward runs it, backward asks the worker for the VJP."""

    @staticmethod
    def forward(ctx, client, box, plan, *inputs):
        reply = client._call(plan)
        tensors: list = []
        box["value"] = client._finish(reply, plan, tensors)
        box["n"] = len(tensors)
        graph = reply.get("graph")
        ctx.client, ctx.graph = client, graph
        ctx.n_inputs = len(inputs)
        if not tensors:
            return torch.zeros(0)
        flags = list(graph["requires_grad"]) if graph else [False] * len(tensors)
        outs = tuple(t for t in tensors)
        ctx.differentiable = [i for i, f in enumerate(flags) if f and outs[i].is_floating_point()]
        ctx.mark_non_differentiable(*[o for i, o in enumerate(outs) if i not in ctx.differentiable])
        return outs

    @staticmethod
    def backward(ctx, *grads):
        none = (None, None, None) + (None,) * ctx.n_inputs
        if not ctx.graph:
            return none
        wanted = [grads[i] for i in ctx.differentiable]
        reply = ctx.client.request(
            "vjp", int(ctx.graph["id"]), [None if g is None else g.detach() for g in wanted]
        )
        if not reply.get("ok"):
            raise RuntimeError(str(reply.get("error", {}).get("message", "backward failed in the worker")))
        result = [None if g is None else g for g in reply.get("grads", [])]
        result += [None] * (ctx.n_inputs - len(result))
        return (None, None, None, *result[: ctx.n_inputs])


def _slot_grads(item, found: list):
    if isinstance(item, torch.Tensor) and item.requires_grad and torch.is_grad_enabled():
        found.append(item)
        return wire.GradSlot(len(found) - 1)
    if type(item) is tuple:
        return tuple(_slot_grads(v, found) for v in item)
    if type(item) is list:
        return [_slot_grads(v, found) for v in item]
    if type(item) is dict:
        return {k: _slot_grads(v, found) for k, v in item.items()}
    return item


def _collect_tensors(value, out: list) -> None:
    if isinstance(value, torch.Tensor):
        out.append(value)
    elif isinstance(value, (list, tuple)):
        for v in value:
            _collect_tensors(v, out)
    elif isinstance(value, dict):
        for v in value.values():
            _collect_tensors(v, out)


def _replace_tensors(value, outs: list):
    if isinstance(value, torch.Tensor):
        return outs.pop(0)
    if isinstance(value, tuple):
        return tuple(_replace_tensors(v, outs) for v in value)
    if isinstance(value, list):
        return [_replace_tensors(v, outs) for v in value]
    if isinstance(value, dict):
        return {k: _replace_tensors(v, outs) for k, v in value.items()}
    return value


def _apply_mutations(changes: list, args, kwargs) -> None:
    """Update the judge's arguments in place with the state the call left them in."""
    for change in changes:
        try:
            where, key = change["path"]
            target = args[int(key)] if where == "a" else kwargs[str(key)]
        except (KeyError, IndexError, TypeError, ValueError):
            continue
        kind = change.get("kind")
        try:
            if kind == "tensor" and isinstance(target, torch.Tensor):
                new = change["value"]
                if new.shape == target.shape:
                    with torch.no_grad():
                        target.copy_(new.to(target.dtype))
            elif kind == "array" and isinstance(target, np.ndarray):
                new = wire.decode_value(change["value"], lambda d: None)
                if new.shape == target.shape:
                    target[...] = new
            elif kind == "module" and isinstance(target, nn.Module) and not isinstance(target, RemoteModule):
                target.load_state_dict(dict(change.get("state", {})), strict=False)
                modules = dict(target.named_modules())
                for name, flag in dict(change.get("training", {})).items():
                    if name in modules:
                        modules[name].training = bool(flag)
            elif kind == "generator" and isinstance(target, np.random.Generator):
                target.bit_generator.state = change["state"]
        except Exception:  # noqa: BLE001 - a state we cannot apply is ignored, never trusted
            continue


class RemoteFunction:
    """A learner's function: calling it calls it in the worker."""

    def __init__(self, client: Client, desc: dict) -> None:
        self._client = client
        self._id = int(desc["id"])
        self.__name__ = str(desc.get("name") or "function")
        self.__qualname__ = str(desc.get("qualname") or self.__name__)
        self.__module__ = str(desc.get("module") or "__main__")

    def __call__(self, *args, **kwargs):
        return self._client.call(self._id, None, args, kwargs)

    def __reduce__(self):
        return (wire.Ref, (self._id,))  # sent back to the worker as its own object

    def __deepcopy__(self, memo):
        return self

    def __repr__(self) -> str:
        return f"<function {self.__qualname__} (runs in the grading worker)>"


class RemoteObject:
    """Any other object of the learner's: it can be passed back to the learner's code, or called."""

    _client: Client
    _id: int

    def __call__(self, *args, **kwargs):
        return self._client.call(self._id, None, args, kwargs)

    def __reduce__(self):
        return (wire.Ref, (self._id,))

    def __deepcopy__(self, memo):
        return self

    def __repr__(self) -> str:
        return f"<{type(self).__name__} object (in the grading worker)>"


_CLASSES: dict[tuple, type] = {}


def _object_proxy(client: Client, desc: dict) -> RemoteObject:
    key = ("object", desc.get("type_module"), desc.get("type_name"))
    name = str(desc.get("type_name") or "object")
    cls = _CLASSES.get(key)
    if cls is None:
        cls = type(name if name.isidentifier() else "RemoteObject", (RemoteObject,), {})
        cls.__module__ = str(desc.get("type_module") or "__main__")
        _CLASSES[key] = cls
    obj = object.__new__(cls)
    obj._client, obj._id = client, int(desc["id"])
    return obj


def _class_proxy(client: Client, desc: dict) -> type:
    """A class standing for the learner's class: instantiating it instantiates the learner's class."""
    name = str(desc.get("name") or "Remote")
    class_id = int(desc["id"])
    safe = name if name.isidentifier() else "RemoteClass"
    if desc.get("is_module"):

        def __init__(self, *args, **kwargs):
            nn.Module.__init__(self)
            for arg in list(args) + list(kwargs.values()):
                if isinstance(arg, RemoteModule):
                    arg._push()
            plan = _CallPlan(client, class_id, None, args, kwargs, None)
            try:
                reply = client._call(plan)
            finally:
                plan.restore_hooks()
            plan.replay(reply.get("events", []))
            value = reply["value"]
            if not (isinstance(value, dict) and value.get("kind") == "module"):
                raise TypeError(f"{name}(...) did not build an nn.Module")
            self._attach(client, int(value["id"]), value["tree"])

        cls = type(safe, (RemoteModule,), {"__init__": __init__})
    else:

        def __new__(cls, *args, **kwargs):
            return client.call(class_id, None, args, kwargs)

        cls = type(safe, (RemoteObject,), {"__new__": __new__})
    cls.__module__ = str(desc.get("module") or "__main__")
    cls.__qualname__ = str(desc.get("qualname") or name)
    cls._remote_class = class_id
    return cls
