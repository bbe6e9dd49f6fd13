"""How the worker describes its values to the judge: plain data (see :mod:`.wire`), or nothing.

* :func:`_encode_leaf`: numbers, strings, tensors, NumPy arrays and scalars as plain data;
* :func:`trusted_tree`: a module made only of torch's and the course's classes, as plain data the judge
  rebuilds with its own classes;
* :func:`_mutations`: the new state of the arguments a call changed (tensors, arrays, modules' modes and
  state, NumPy generators), which the judge applies to its own arguments.
"""

from __future__ import annotations

import numpy as np

from . import wire

MAX_DEPTH = 12


def _trusted_name(obj) -> tuple[str, str] | None:
    """(module, qualname) if ``obj`` is a function/class that its module really exports under that name."""
    import importlib

    module = getattr(obj, "__module__", None) or ""
    qualname = getattr(obj, "__qualname__", None) or ""
    if not wire.trusted_allowed(module):
        return None
    if "<" in qualname or not qualname:
        return None
    try:
        target = importlib.import_module(module)
        for part in qualname.split("."):
            target = getattr(target, part)
    except Exception:  # noqa: BLE001
        return None
    return (module, qualname) if target is obj else None


def _leaves(args, kwargs):
    """(path, value) of the top-level arguments the judge wants back if a call changes them."""
    items = [(("a", i), v) for i, v in enumerate(args)] + [(("k", k), v) for k, v in kwargs.items()]
    return items


def _plain_key(key):
    for kind in (bool, int, float, str):
        if isinstance(key, kind):
            return kind(key)
    return None


def _encode_leaf(value, tensors: list):
    """Numbers, strings, tensors, NumPy arrays and scalars as plain data; ``_NOT_PLAIN`` for anything else."""
    import torch

    if value is None or isinstance(value, (bool, str, bytes)):
        return value if type(value) in (type(None), bool, str, bytes) else _plain_key(value)
    if isinstance(value, (int, float)):
        return _plain_key(value)
    if isinstance(value, complex):
        return {"$": "complex", "re": value.real, "im": value.imag}
    if isinstance(value, torch.Tensor):
        tensors.append(value)
        out = value.detach().to("cpu")
        if out.layout != torch.strided:
            out = out.to_dense()
        return out.as_subclass(torch.Tensor).clone().contiguous()
    if isinstance(value, np.ndarray) and value.dtype.kind in wire.NUMERIC_KINDS:
        return wire.encode_array(value)
    if isinstance(value, np.generic) and value.dtype.kind in wire.NUMERIC_KINDS:
        return wire.encode_numpy_scalar(value)
    return _NOT_PLAIN


_PRIMITIVES = (type(None), bool, int, float, str)
_MODULE_INTERNALS: set[str] = set()


def _plain_attr(value):
    """``value`` if it is made of plain data (else a marker): a module rebuilt in the judge keeps only these."""
    import dataclasses

    if isinstance(value, _PRIMITIVES):
        return value
    if isinstance(value, (tuple, list)) and all(isinstance(v, _PRIMITIVES) for v in value):
        return {"$": "tuple" if isinstance(value, tuple) else "list", "items": list(value)}
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        name = _trusted_name(type(value))
        fields = {f.name: _plain_attr(getattr(value, f.name)) for f in dataclasses.fields(value)}
        if name and all(v is not _NOT_PLAIN for v in fields.values()):
            return {"$": "dataclass", "cls": list(name), "fields": fields}
    return _NOT_PLAIN


_NOT_PLAIN = object()


def trusted_tree(module, depth: int = 0) -> dict | None:
    """A module made only of torch's and the course's classes, as plain data the judge rebuilds with its own
    classes (so their code runs in the judge); None if any part is the learner's own (or hooked)."""
    from torch import nn

    if not _MODULE_INTERNALS:
        _MODULE_INTERNALS.update(vars(nn.Module()))
    cls = type(module)
    name = _trusted_name(cls)
    if depth > MAX_DEPTH or not name:
        return None
    attrs = {}
    for key, value in vars(module).items():
        if key in _MODULE_INTERNALS:
            if key.endswith("hooks") and value:
                return None  # the learner hooked it: keep it remote
            continue
        plain = _plain_attr(value)
        if plain is _NOT_PLAIN:
            return None
        attrs[key] = plain
    children = {}
    for key, child in module._modules.items():
        children[key] = None if child is None else trusted_tree(child, depth + 1)
        if child is not None and children[key] is None:
            return None
    return {
        "cls": list(name),
        "attrs": attrs,
        "training": bool(module.training),
        "params": {k: None if v is None else v.detach().cpu().clone() for k, v in module._parameters.items()},
        "grads": {k: bool(v is not None and v.requires_grad) for k, v in module._parameters.items()},
        "buffers": {k: None if v is None else v.detach().cpu().clone() for k, v in module._buffers.items()},
        "persistent": [k for k in module._buffers if k not in module._non_persistent_buffers_set],
        "children": children,
    }


def _arg_at(args, kwargs, path):
    where, key = path
    return args[int(key)] if where == "a" else kwargs[key]


def _snapshot_args(args, kwargs) -> dict:
    import torch

    before = {}
    for path, value in _leaves(args, kwargs):
        if isinstance(value, torch.Tensor):
            before[path] = value.detach().clone()
        elif isinstance(value, np.ndarray):
            before[path] = value.copy()
    return before


def _mutations(before: dict, args, kwargs) -> list:
    """New state of every argument the call changed: tensors, arrays, modules (modes, state), generators."""
    import torch
    from torch import nn

    changes = []
    for path, value in _leaves(args, kwargs):
        path = list(path)
        if isinstance(value, torch.Tensor) and tuple(path) in before:
            old = before[tuple(path)]
            new = value.detach()
            if old.shape != new.shape or old.dtype != new.dtype or not torch.equal(old, new):
                changes.append({"path": path, "kind": "tensor", "value": new.cpu().clone()})
        elif isinstance(value, np.ndarray) and tuple(path) in before:
            if value.dtype.kind in wire.NUMERIC_KINDS and not np.array_equal(before[tuple(path)], value):
                changes.append({"path": path, "kind": "array", "value": wire.encode_array(value)})
        elif isinstance(value, nn.Module):
            changes.append(
                {
                    "path": path,
                    "kind": "module",
                    "training": {k: bool(m.training) for k, m in value.named_modules()},
                    "state": {k: v.detach().cpu().clone() for k, v in value.state_dict().items()},
                }
            )
        elif isinstance(value, np.random.Generator):
            changes.append({"path": path, "kind": "generator", "state": _plain(value.bit_generator.state)})
    return changes


def _plain(value):
    if isinstance(value, dict):
        return {str(k): _plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    if isinstance(value, np.ndarray):
        return value.tolist()
    if isinstance(value, np.generic):
        return value.item()
    return value
