"""The grading worker: the only process where a submission's code runs (started by :mod:`.sandbox`).

It executes the notebook's code cells in one namespace, keeps the objects the checks ask for, and answers
requests from the judge: call an object, compute a vector-Jacobian product of an earlier call, describe or
update a module, deep-copy an object. Every reply is made of plain values (see :mod:`.wire`); objects that
cannot be sent stay here and travel as numbered handles. Nothing this process says is trusted: the judge
computes every property from the values it gets back, and a reply it cannot decode fails the call.
"""

from __future__ import annotations

import copy
import linecache
import os
import sys
import traceback
import types

import numpy as np

from . import wire
from .encoding import (
    _NOT_PLAIN,
    MAX_DEPTH,
    _arg_at,
    _encode_leaf,
    _mutations,
    _plain_key,
    _snapshot_args,
    _trusted_name,
    trusted_tree,
)


class _Stub:
    """``display``/``get_ipython()`` stand-ins: notebook niceties do nothing here."""

    def __call__(self, *args, **kwargs):
        return None

    def __getattr__(self, name):
        return self


class Worker:
    def __init__(self, rfd: int, wfd: int) -> None:
        self.rfd, self.wfd = rfd, wfd
        self.ns: dict = {"__name__": "__main__", "display": _Stub(), "get_ipython": _Stub()}
        self.handles: dict[int, object] = {}
        self.graphs: dict[int, tuple[list, list]] = {}
        self.next_id = 1
        self.traces: dict = {}
        self.origins: dict[int, tuple[int, str]] = {}  # id(parameter) -> (judge's token, name)
        self.origin_refs: list = []

    # ----------------------------------------------------------------- values

    def keep(self, obj) -> int:
        for hid, value in self.handles.items():
            if value is obj:
                return hid
        hid, self.next_id = self.next_id, self.next_id + 1
        self.handles[hid] = obj
        return hid

    def resolve(self, item):
        """Replace :class:`wire.Ref` handles (anywhere in a request's arguments) by the objects."""
        if isinstance(item, wire.Ref):
            return self.handles[item.id]
        if isinstance(item, tuple) and type(item) is tuple:
            return tuple(self.resolve(v) for v in item)
        if isinstance(item, list) and type(item) is list:
            return [self.resolve(v) for v in item]
        if isinstance(item, dict) and type(item) is dict:
            return {k: self.resolve(v) for k, v in item.items()}
        return item

    def encode(self, value, tensors: list, depth: int = 0):
        """``value`` as plain data for the reply (tensors also appended to ``tensors``), else a handle."""
        from torch import nn

        if depth > MAX_DEPTH:
            return self.handle_of(value)
        plain = _encode_leaf(value, tensors)
        if plain is not _NOT_PLAIN:
            return plain
        if isinstance(value, (tuple, list)):
            kind = "tuple" if isinstance(value, tuple) else "list"
            return {"$": kind, "items": [self.encode(v, tensors, depth + 1) for v in value]}
        if isinstance(value, dict) and all(
            k is None or isinstance(k, (bool, int, float, str)) for k in value
        ):
            items = [[_plain_key(k), self.encode(v, tensors, depth + 1)] for k, v in value.items()]
            return {"$": "dict", "items": items}
        if isinstance(value, nn.Module):
            trusted = trusted_tree(value)
            if trusted is not None:
                return {"$": "handle", "kind": "tmodule", "tree": trusted}
            return {"$": "handle", "kind": "module", "id": self.keep(value), "tree": self.tree(value)}
        return self.handle_of(value)

    def handle_of(self, value) -> dict:
        from torch import nn

        is_module_class = isinstance(value, type) and issubclass(value, nn.Module)
        trusted = _trusted_name(value) if is_module_class else None  # the judge trusts only these
        if trusted:
            return {"$": "handle", "kind": "trusted", "module": trusted[0], "qualname": trusted[1]}
        info = {
            "$": "handle",
            "id": self.keep(value),
            "name": str(getattr(value, "__name__", type(value).__name__)),
            "qualname": str(getattr(value, "__qualname__", "")),
            "module": str(getattr(value, "__module__", "")),
            "type_name": type(value).__name__,
            "type_module": str(type(value).__module__),
            "callable": callable(value),
        }
        if isinstance(value, type):
            info["kind"] = "class"
            info["is_module"] = issubclass(value, nn.Module)
        elif isinstance(value, (types.FunctionType, types.MethodType, types.BuiltinFunctionType)):
            info["kind"] = "function"
        else:
            info["kind"] = "object"
        return info

    def tree(self, module, depth: int = 0) -> dict:
        """A module's structure and state: class, mode, parameters, buffers, children (recursively)."""
        return {
            "cls_module": str(type(module).__module__),
            "cls_name": type(module).__name__,
            "training": bool(module.training),
            "params": {
                k: (None if v is None else v.detach().cpu().clone()) for k, v in module._parameters.items()
            },
            "param_ids": {k: id(v) for k, v in module._parameters.items()},
            "origins": {
                k: list(self.origins[id(v)]) for k, v in module._parameters.items() if id(v) in self.origins
            },
            "grads": {k: bool(v is not None and v.requires_grad) for k, v in module._parameters.items()},
            "buffers": {
                k: (None if v is None else v.detach().cpu().clone()) for k, v in module._buffers.items()
            },
            "children": {
                k: (None if v is None or depth > MAX_DEPTH else self.tree(v, depth + 1))
                for k, v in module._modules.items()
            },
        }

    # ----------------------------------------------------------------- requests

    def error(self, exc: BaseException) -> dict:
        where = ""
        for frame in reversed(traceback.extract_tb(exc.__traceback__)):
            if frame.filename.startswith("<cell") or frame.filename.startswith("<"):
                where = f"line {frame.lineno} in {frame.name}"
                break
            if "dropout_course" not in frame.filename:
                where = f"line {frame.lineno} in {frame.name}"
                break
        text = str(exc).strip()
        return {
            "type": type(exc).__name__,
            "module": str(type(exc).__module__),
            "message": text[:2000],
            "where": where,
        }

    def do_exec(self, index: int, code: str) -> dict:
        filename = f"<cell {index}>"
        try:
            from IPython.core.inputtransformer2 import TransformerManager

            code = TransformerManager().transform_cell(code)
        except Exception:  # noqa: BLE001 - plain Python then
            pass
        linecache.cache[filename] = (len(code), None, code.splitlines(True), filename)
        try:
            exec(compile(code, filename, "exec"), self.ns)  # noqa: S102 - the learner's own cell
        except BaseException as exc:  # noqa: BLE001
            return {"ok": False, "error": self.error(exc)}
        return {"ok": True}

    def do_snapshot(self, names: dict) -> dict:
        items = {}
        for key, expr in names.items():
            try:
                value = eval(compile(expr, "<check>", "eval"), self.ns)  # noqa: S307 - the source's own names
            except BaseException as exc:  # noqa: BLE001
                items[key] = {"missing": self.error(exc)}
                continue
            items[key] = {"value": self.encode(value, [])}
        return {"ok": True, "items": items}

    def trace_for(self, check):
        """The trace of the judge's current check (its :class:`Originality`), or one that only records
        torch's dropout (no check, or an unknown one)."""
        from ..grading.core import load_checks
        from ..grading.detect import Trace

        if check not in self.traces:
            try:
                spec = load_checks(check[0]).get(check[1]) if check is not None else None
            except Exception:  # noqa: BLE001
                spec = None
            self.traces[check] = Trace(spec.originality if spec else None)
        return self.traces[check]

    def observe(self, args, kwargs, extras: dict) -> tuple[list, list]:
        """Record the forward hooks the judge had on its modules (it replays them) and where the judge's
        parameters went (so that a module built around one of them shares it in the judge's mirror)."""
        events: list = []
        handles = []
        for path, token in extras.get("origins", {}).items():
            root = _arg_at(args, kwargs, path)
            for name, param in root.named_parameters():
                self.origins[id(param)] = (int(token), name)
                self.origin_refs.append(param)
        for index, (path, name, kind) in enumerate(extras.get("observe", [])):
            module = dict(_arg_at(args, kwargs, path).named_modules()).get(name)
            if module is None:
                continue
            if kind == "pre":
                hook = module.register_forward_pre_hook(
                    lambda m, a, i=index: events.append([i, bool(m.training), a, None])
                )
            else:
                hook = module.register_forward_hook(
                    lambda m, a, out, i=index: events.append([i, bool(m.training), a, out])
                )
            handles.append(hook)
        return events, handles

    def do_call(self, target, method, args, kwargs, grad_leaves, check, extras=None) -> dict:
        import torch

        obj = self.resolve(target)
        leaves = [t.detach().requires_grad_(True) for t in grad_leaves]

        def fill(item):
            if isinstance(item, wire.GradSlot):
                return leaves[item.index]
            if isinstance(item, tuple) and type(item) is tuple:
                return tuple(fill(v) for v in item)
            if isinstance(item, list) and type(item) is list:
                return [fill(v) for v in item]
            if isinstance(item, dict) and type(item) is dict:
                return {k: fill(v) for k, v in item.items()}
            return item

        args = fill(self.resolve(args))
        kwargs = fill(self.resolve(kwargs))
        before = _snapshot_args(args, kwargs)
        events, hooks = self.observe(args, kwargs, extras or {})
        fn = obj if method is None else getattr(obj, method)
        trace = self.trace_for(check)
        calls_before, findings_before = len(trace.torch_calls), len(trace.findings)
        try:
            with trace.active():
                value = fn(*args, **kwargs)
        except BaseException as exc:  # noqa: BLE001
            return {"ok": False, "error": self.error(exc), "calls": trace.torch_calls[calls_before:]}
        finally:
            for hook in hooks:
                hook.remove()
        tensors: list = []
        encoded = self.encode(value, tensors)
        reply = {
            "ok": True,
            "value": encoded,
            "mutated": _mutations(before, args, kwargs),
            "calls": trace.torch_calls[calls_before:],
            "findings": trace.findings[findings_before:],
            "events": [[i, t, self.encode(a, []), self.encode(o, [])] for i, t, a, o in events[:20000]],
        }
        inputs = list(leaves)
        if isinstance(obj, torch.nn.Module):
            inputs += [p for p in obj.parameters() if p.requires_grad]
            reply["tree"] = self.tree(obj)
        if torch.is_grad_enabled() and inputs:
            flags = [bool(t.requires_grad) for t in tensors]
            if any(flags):
                gid = self.keep_graph([t for t, f in zip(tensors, flags, strict=True) if f], inputs)
                reply["graph"] = {"id": gid, "requires_grad": flags, "n_params": len(inputs) - len(leaves)}
        return reply

    def keep_graph(self, outputs: list, inputs: list) -> int:
        gid = self.next_id
        self.next_id += 1
        self.graphs[gid] = (outputs, inputs)
        for old in sorted(self.graphs)[:-64]:
            del self.graphs[old]
        return gid

    def do_vjp(self, gid: int, grads: list) -> dict:
        import torch

        outputs, inputs = self.graphs[gid]
        pairs = [(o, g) for o, g in zip(outputs, grads, strict=False) if g is not None]
        if not pairs:
            return {"ok": True, "grads": [None] * len(inputs)}
        try:
            result = torch.autograd.grad(
                [o for o, _ in pairs], inputs, [g for _, g in pairs], allow_unused=True, retain_graph=True
            )
        except BaseException as exc:  # noqa: BLE001
            return {"ok": False, "error": self.error(exc)}
        return {"ok": True, "grads": [None if g is None else g.detach().cpu().clone() for g in result]}

    def do_set_state(self, target, state: dict) -> dict:
        import torch

        module = self.resolve(target)
        try:
            with torch.no_grad():
                for name, value in state.get("params", {}).items():
                    module.get_parameter(name).copy_(value)
                for name, value in state.get("buffers", {}).items():
                    module.get_buffer(name).copy_(value)
            modules = dict(module.named_modules())
            for name, flag in state.get("training", {}).items():
                if name in modules:
                    modules[name].training = bool(flag)
        except BaseException as exc:  # noqa: BLE001
            return {"ok": False, "error": self.error(exc)}
        return {"ok": True}

    def do_deepcopy(self, target) -> dict:
        try:
            value = copy.deepcopy(self.resolve(target))
        except BaseException as exc:  # noqa: BLE001
            return {"ok": False, "error": self.error(exc)}
        return {"ok": True, "value": self.encode(value, [])}

    def do_seed(self, seed: int) -> dict:
        import random

        import torch

        torch.manual_seed(seed)
        np.random.seed(seed % 2**32)
        random.seed(seed)
        return {"ok": True}

    def serve(self) -> None:
        handlers = {
            "exec": self.do_exec,
            "snapshot": self.do_snapshot,
            "call": self.do_call,
            "vjp": self.do_vjp,
            "set_state": self.do_set_state,
            "deepcopy": self.do_deepcopy,
            "seed": self.do_seed,
        }
        while True:
            try:
                frame = wire.read_frame(self.rfd)
            except wire.ChannelClosed:
                os._exit(0)
            try:
                kind, *params = wire.load_request(frame)
                reply = handlers[kind](*params)
            except BaseException as exc:  # noqa: BLE001 - keep serving
                reply = {"ok": False, "error": self.error(exc)}
            try:
                payload = wire.dump_reply(reply)
            except BaseException as exc:  # noqa: BLE001
                payload = wire.dump_reply({"ok": False, "error": self.error(exc)})
            wire.write_frame(self.wfd, payload)


def main(rfd: int, wfd: int) -> None:
    """Entry point in the sandboxed child (never returns)."""
    import torch

    torch.set_num_threads(1)
    sys.setrecursionlimit(5000)
    try:
        Worker(rfd, wfd).serve()
    finally:
        os._exit(0)
