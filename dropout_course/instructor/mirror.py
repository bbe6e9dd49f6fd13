"""The judge's mirror of a learner's ``nn.Module`` living in the worker, and modules rebuilt in the judge.

* :class:`RemoteModule`: a real ``nn.Module`` with the learner's class name, sub-modules (placeholders
  named like the learner's classes), parameters, buffers and train/eval flags. Its calls run in the worker;
  the judge's changes to the mirror are sent before the next call and the worker's state comes back after.
  A parameter that came from a module the judge passed in (``ResidualBlock(branch, p)``) is the judge's own
  parameter object in the mirror.
* :func:`rebuild_module`: a module made only of torch's and the course's classes, sent as plain data, is
  rebuilt here with the judge's own classes, so their code runs in the judge.
* :func:`trusted`: the judge's own object for a course/``torch.nn`` name the worker gives (only modules already
  loaded here; nothing is imported or called for the worker).
"""

from __future__ import annotations

import dataclasses
import sys
import types

import torch
from torch import nn

from . import wire
from .wire import WorkerLost, remote_exception, trusted_allowed

# Nothing is imported for the worker: a trusted object's module must already be loaded here.
_CLASSES: dict[tuple, type] = {}


def trusted(module: str, qualname: str, kind: type | None = None):
    """The judge's own object ``module.qualname`` (already loaded; of type ``kind`` if given).

    Only an object defined there under that very name: a path through another module
    (``dropout_course.layers`` + ``torch.os._exit``) would let the worker pick any function the judge can
    reach and have the judge call it with a check's arguments.
    """
    loaded = sys.modules.get(module)
    if not trusted_allowed(module) or loaded is None:
        raise WorkerLost(f"refused to use {module}.{qualname} for the worker")
    obj = loaded
    for part in qualname.split("."):
        obj = getattr(obj, part, None)
        if isinstance(obj, types.ModuleType):
            raise WorkerLost(f"refused to use {module}.{qualname} for the worker")
    if (
        obj is None
        or not callable(obj)
        or getattr(obj, "__module__", None) != module
        or getattr(obj, "__qualname__", None) != qualname
        or (kind is not None and not (isinstance(obj, type) and issubclass(obj, kind)))
    ):
        raise WorkerLost(f"refused to use {module}.{qualname} for the worker")
    return obj


def _plain_value(value):
    if isinstance(value, dict) and value.get("$") in ("tuple", "list"):
        items = [_plain_value(v) for v in value["items"]]
        return tuple(items) if value["$"] == "tuple" else items
    if isinstance(value, dict) and value.get("$") == "dataclass":
        cls = trusted(*[str(v) for v in value["cls"]], kind=object)
        if not dataclasses.is_dataclass(cls):
            raise WorkerLost("a module attribute that is not a dataclass")
        return cls(**{str(k): _plain_value(v) for k, v in value["fields"].items()})
    if isinstance(value, (type(None), bool, int, float, str)):
        return value
    raise WorkerLost(f"unexpected module attribute {type(value).__name__}")


MAX_REBUILT_MODULES = 10_000  # a module run in the judge: far above the course's models
MAX_REBUILT_ELEMENTS = 1 << 24  # parameter and buffer elements (64 MiB of float32)
_MODULE_INTERNALS = frozenset(vars(nn.Module()))


def rebuild_module(tree: dict, budget: list[int] | None = None) -> nn.Module:
    """A module of torch's/the course's classes rebuilt in the judge from plain data (no learner code).

    It runs in the judge, outside the sandbox's limits: one larger than MAX_REBUILT_MODULES modules or
    MAX_REBUILT_ELEMENTS elements, or whose attributes would replace ``nn.Module``'s own, is refused.
    """
    budget = [MAX_REBUILT_MODULES, MAX_REBUILT_ELEMENTS] if budget is None else budget
    cls = trusted(*[str(v) for v in tree["cls"]], kind=nn.Module)
    module = cls.__new__(cls)
    nn.Module.__init__(module)
    for key, value in dict(tree.get("attrs", {})).items():
        if str(key) in _MODULE_INTERNALS:
            raise WorkerLost(f"a module attribute {str(key)[:40]!r} that would replace nn.Module's own")
        module.__dict__[str(key)] = _plain_value(value)
    module.training = bool(tree.get("training", True))
    grads = dict(tree.get("grads", {}))
    tensors = [
        v for v in list(dict(tree.get("params", {})).values()) + list(dict(tree.get("buffers", {})).values())
    ]
    budget[0] -= 1
    budget[1] -= sum(int(v.numel()) for v in tensors if isinstance(v, torch.Tensor))
    if budget[0] < 0 or budget[1] < 0:
        raise WorkerLost(
            f"a module of torch's/the course's classes larger than {MAX_REBUILT_MODULES} modules or "
            f"{MAX_REBUILT_ELEMENTS} elements: too large to run in the judge"
        )
    for key, value in dict(tree.get("params", {})).items():
        module._parameters[key] = (
            None if value is None else nn.Parameter(value, requires_grad=bool(grads.get(key)))
        )
    persistent = set(tree.get("persistent", []))
    for key, value in dict(tree.get("buffers", {})).items():
        module._buffers[key] = value
        if key not in persistent:
            module._non_persistent_buffers_set.add(key)
    for key, child in dict(tree.get("children", {})).items():
        module._modules[key] = None if child is None else rebuild_module(child, budget)
    return module


def module_class(module: str, name: str) -> type:
    key = ("module", module, name)
    cls = _CLASSES.get(key)
    if cls is None:
        cls = type(name if name.isidentifier() else "RemoteModule", (RemoteModule,), {})
        cls.__module__ = module
        _CLASSES[key] = cls
    return cls


class _Part(nn.Module):
    """A sub-module of a learner's module, mirrored (structure and state only; the whole module runs)."""

    def forward(self, *args, **kwargs):
        raise RuntimeError("a part of the learner's module cannot be called on its own in the judge")


_PART_CLASSES: dict[tuple, type] = {}


def _part_class(module: str, name: str) -> type:
    key = (module, name)
    if key not in _PART_CLASSES:
        cls = type(name if name.isidentifier() else "Part", (_Part,), {})
        cls.__module__ = module
        _PART_CLASSES[key] = cls
    return _PART_CLASSES[key]


def _sync_params(local: nn.Module, tree: dict, exports: dict) -> None:
    """Parameters: the judge's own where they came from the judge, else kept objects updated in place."""
    grads = dict(tree.get("grads", {}))
    origins = dict(tree.get("origins", {}))
    ids = dict(tree.get("param_ids", {}))
    for name, value in dict(tree.get("params", {})).items():
        current = local._parameters.get(name)
        origin = _origin_param(origins.get(name), exports)
        if value is None:
            local._parameters[name] = None
            continue
        if origin is not None:
            local._parameters[name] = current = origin
        same_object = origin is not None or local.__dict__.get("_param_ids", {}).get(name) == ids.get(name)
        if isinstance(current, nn.Parameter) and same_object and current.shape == value.shape:
            if not torch.equal(current.detach(), value.to(current.dtype)):
                with torch.no_grad():
                    current.copy_(value)
        else:
            local._parameters[name] = nn.Parameter(value, requires_grad=bool(grads.get(name, True)))
    for name in [n for n in local._parameters if n not in tree.get("params", {})]:
        del local._parameters[name]
    local.__dict__["_param_ids"] = ids


def _sync_module(local: nn.Module, tree: dict, exports: dict) -> None:
    """Make ``local`` mirror the worker's module ``tree`` (mode, parameters, buffers, sub-modules)."""
    local.training = bool(tree.get("training", True))
    _sync_params(local, tree, exports)
    for name, value in dict(tree.get("buffers", {})).items():
        current = local._buffers.get(name)
        if value is not None and isinstance(current, torch.Tensor) and current.shape == value.shape:
            if current.dtype == value.dtype:
                current.copy_(value)
                continue
        local._buffers[name] = value
    for name in [n for n in local._buffers if n not in tree.get("buffers", {})]:
        del local._buffers[name]
    children = dict(tree.get("children", {}))
    for name, child in children.items():
        if child is None:
            local._modules[name] = None
            continue
        cls = _part_class(str(child["cls_module"]), str(child["cls_name"]))
        if type(local._modules.get(name)) is not cls:
            local._modules[name] = cls()
        _sync_module(local._modules[name], child, exports)
    for name in [n for n in local._modules if n not in children]:
        del local._modules[name]


def _origin_param(origin, exports: dict):
    """The judge's own parameter that the worker's parameter came from (None if it is the learner's)."""
    if not origin:
        return None
    try:
        return exports[int(origin[0])].get_parameter(str(origin[1]))
    except (KeyError, AttributeError, ValueError, TypeError):
        return None


class RemoteModule(nn.Module):
    """A learner's ``nn.Module`` instance living in the worker, mirrored here (see the module docstring)."""

    def _attach(self, client, hid: int, tree: dict) -> None:
        self.__dict__["_client"] = client
        self.__dict__["_hid"] = hid
        self._sync(tree)

    def _sync(self, tree: dict) -> None:
        _sync_module(self, tree, self._client.exports)
        self.__dict__["_synced"] = self._state_key()

    def _state_key(self):
        return (
            tuple((n, id(p), p._version) for n, p in self.named_parameters()),
            tuple((n, id(b), b._version) for n, b in self.named_buffers()),
            tuple((n, m.training) for n, m in self.named_modules()),
        )

    def _push(self) -> None:
        """Send the judge's changes to the mirror (parameters, buffers, modes) to the worker."""
        if self.__dict__.get("_synced") == self._state_key():
            return
        state = {
            "params": {n: p.detach().clone() for n, p in self.named_parameters()},
            "buffers": {n: b.detach().clone() for n, b in self.named_buffers()},
            "training": {n: m.training for n, m in self.named_modules()},
        }
        reply = self._client.request("set_state", wire.Ref(self._hid), state)
        if not reply.get("ok"):
            raise remote_exception(reply.get("error", {}))
        self.__dict__["_synced"] = self._state_key()

    def forward(self, *args, **kwargs):
        return self._client.call(self._hid, "__call__", args, kwargs, module=self)

    def train(self, mode: bool = True):
        self._push()
        self._client.call(self._hid, "train", (bool(mode),), {}, module=self)
        return self

    def __deepcopy__(self, memo):
        self._push()
        reply = self._client.request("deepcopy", wire.Ref(self._hid))
        if not reply.get("ok"):
            raise remote_exception(reply.get("error", {}))
        return self._client.decode(reply["value"])

    def __reduce_ex__(self, protocol):
        return (wire.Ref, (self._hid,))

    def extra_repr(self) -> str:
        return "runs in the grading worker"
