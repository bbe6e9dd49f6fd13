"""The judge <-> worker channel: length-prefixed frames, pickle one way, a safe decoder the other way.

* judge -> worker: requests are pickled (the worker may run anything anyway; it is the learner's process).
  Proxies of the worker's own objects travel as :class:`Ref` (a handle number), never as objects.
* worker -> judge: replies are *never unpickled*. They are written with ``torch.save`` and read with
  ``torch.load(weights_only=True)``, which only rebuilds tensors, numbers, strings, bytes, lists, tuples and
  dicts. NumPy arrays and scalars travel as tagged dicts holding raw bytes (:func:`encode_value` /
  :func:`decode_value`); anything else stays in the worker and comes back as a handle description.
"""

from __future__ import annotations

import builtins
import io
import os
import pickle
import select
import struct
import time
from dataclasses import dataclass

import numpy as np

MAX_REPLY_BYTES = 256 * 1024 * 1024
MAX_REPLY_ITEMS = 1_000_000  # values a reply may hold, each counted every time it is reached
MAX_REPLY_DEPTH = 200  # nesting of a reply (the worker's honest encoding stays far below)
_HEADER = struct.Struct("!Q")
NUMERIC_KINDS = "biufc"
# Objects the judge may use as its own when the worker names them: the course's code (not its grading or
# instructor packages, which a submission could have patched in the worker) and torch's modules.
TRUSTED_PREFIXES = ("dropout_course.", "torch.nn.")
UNTRUSTED_PREFIXES = ("dropout_course.grading", "dropout_course.instructor")


def trusted_allowed(module: str) -> bool:
    """Whether objects of ``module`` are named (and used by the judge as its own) rather than proxied."""
    return module.startswith(TRUSTED_PREFIXES) and not module.startswith(UNTRUSTED_PREFIXES)


class ChannelClosed(Exception):
    """The other end of the channel closed (the worker died) or sent a malformed frame."""


class ChannelTimeout(Exception):
    """No reply within the deadline."""


class WorkerLost(Exception):
    """The worker died, hung past its deadline, or answered nonsense; it was killed."""


_EXC_CLASSES: dict[str, type] = {}


def remote_exception(info: dict) -> BaseException:
    """An exception of the learner's exception's class name (builtins are the real classes)."""
    name = str(info.get("type", "Exception"))
    message = str(info.get("message", ""))
    where = str(info.get("where", ""))
    text = message.splitlines()[0] if message.strip() else ""
    if where:
        text = f"{text} ({where})" if text else f"({where})"
    cls = getattr(builtins, name, None)
    if not (isinstance(cls, type) and issubclass(cls, Exception)):
        cls = _EXC_CLASSES.setdefault(
            name, type(name if name.isidentifier() else "RemoteError", (Exception,), {})
        )
    try:
        return cls(text)
    except Exception:  # noqa: BLE001 - an exception class with another signature
        return RuntimeError(f"{name}: {text}")


@dataclass(frozen=True)
class Ref:
    """A handle to an object that lives in the worker (sent judge -> worker in place of the proxy)."""

    id: int


@dataclass(frozen=True)
class GradSlot:
    """Stands for the ``index``-th argument tensor that needs gradients (sent apart, as a leaf)."""

    index: int


def write_frame(fd: int, payload: bytes) -> None:
    data = _HEADER.pack(len(payload)) + payload
    view = memoryview(data)
    while view:
        n = os.write(fd, view)
        view = view[n:]


def _read_exact(fd: int, n: int, deadline: float | None) -> bytes:
    chunks, got = [], 0
    while got < n:
        if deadline is not None:
            left = deadline - time.monotonic()
            if left <= 0:
                raise ChannelTimeout()
            ready, _, _ = select.select([fd], [], [], left)
            if not ready:
                raise ChannelTimeout()
        chunk = os.read(fd, min(n - got, 1 << 20))
        if not chunk:
            raise ChannelClosed("the worker closed the channel")
        chunks.append(chunk)
        got += len(chunk)
    return b"".join(chunks)


def read_frame(fd: int, deadline: float | None = None, limit: int = MAX_REPLY_BYTES) -> bytes:
    (size,) = _HEADER.unpack(_read_exact(fd, _HEADER.size, deadline))
    if size > limit:
        raise ChannelClosed(f"a reply of {size} bytes is over the {limit} byte limit")
    return _read_exact(fd, size, deadline)


def dump_request(obj) -> bytes:
    return pickle.dumps(obj, protocol=pickle.HIGHEST_PROTOCOL)


def load_request(data: bytes):
    return pickle.loads(data)  # noqa: S301 - judge -> worker only: the judge is trusted


def dump_reply(obj) -> bytes:
    import torch

    buffer = io.BytesIO()
    torch.save(obj, buffer)
    return buffer.getvalue()


def load_reply(data: bytes):
    """Decode a worker reply without running any of its code (``weights_only`` unpickler)."""
    import torch

    try:
        reply = torch.load(io.BytesIO(data), weights_only=True, map_location="cpu")
    except Exception as exc:  # noqa: BLE001 - anything malformed is a closed channel
        raise ChannelClosed(f"malformed reply: {type(exc).__name__}: {str(exc)[:200]}") from None
    check_plain(reply)
    return reply


def _tensor_problem(t) -> str | None:
    """Why tensor ``t`` is not one the worker's honest encoding makes (None if it is)."""
    import torch

    if type(t) is not torch.Tensor:
        return f"a tensor of class {type(t).__name__}"
    if t.layout != torch.strided or t.device.type != "cpu" or t.is_quantized or t.requires_grad:
        return f"a {t.layout} tensor on {t.device} (quantized: {t.is_quantized}, requires_grad: {t.requires_grad})"
    if t.numel() * t.element_size() > t.untyped_storage().nbytes():
        return f"a tensor of {t.numel()} elements viewing a storage of {t.untyped_storage().nbytes()} bytes"
    return None


def check_plain(reply) -> None:
    """Raise ChannelClosed unless ``reply`` is plain data of a bounded size: at most MAX_REPLY_ITEMS values
    (shared ones counted every time they are reached, so a small reply cannot expand into billions of
    items when decoded), nested at most MAX_REPLY_DEPTH deep, dict keys that are plain scalars, and tensors
    that are ordinary dense CPU tensors no larger than their storage (no views with zero strides, no meta,
    sparse, quantized or gradient-requiring tensors, no subclasses)."""
    import torch

    todo = [(reply, 0)]
    count = 0
    while todo:
        item, depth = todo.pop()
        count += 1
        if count > MAX_REPLY_ITEMS or depth > MAX_REPLY_DEPTH:
            raise ChannelClosed(
                f"a reply of more than {MAX_REPLY_ITEMS} values or nested more than {MAX_REPLY_DEPTH} deep"
            )
        if isinstance(item, torch.Tensor):
            problem = _tensor_problem(item)
            if problem:
                raise ChannelClosed(f"a reply holding {problem}")
        elif isinstance(item, (list, tuple)):
            todo.extend((v, depth + 1) for v in item)
        elif isinstance(item, dict):
            for key, value in item.items():
                if not isinstance(key, (type(None), bool, int, float, str)):
                    raise ChannelClosed(f"a reply holding a dict key of type {type(key).__name__}")
                todo.append((value, depth + 1))
        elif not isinstance(item, (type(None), bool, int, float, str, bytes)):
            raise ChannelClosed(f"a reply holding a {type(item).__name__}")


# --------------------------------------------------------------------------- values


def _bytes_tensor(raw: bytes):
    import torch

    return torch.frombuffer(bytearray(raw), dtype=torch.uint8) if raw else torch.zeros(0, dtype=torch.uint8)


def encode_array(a: np.ndarray) -> dict:
    a = np.ascontiguousarray(a)
    return {"$": "nd", "dtype": a.dtype.str, "shape": list(a.shape), "data": _bytes_tensor(a.tobytes())}


def encode_numpy_scalar(v: np.generic) -> dict:
    return {"$": "np", "dtype": v.dtype.str, "data": _bytes_tensor(np.asarray(v).tobytes())}


def _numeric_dtype(name) -> np.dtype:
    try:
        dtype = np.dtype(str(name))
    except (TypeError, ValueError):
        raise ChannelClosed(f"unknown NumPy dtype {str(name)[:40]!r}") from None
    if dtype.kind not in NUMERIC_KINDS or dtype.itemsize == 0:
        raise ChannelClosed(f"array of dtype {dtype} is not allowed")
    return dtype


def _array_from(item: dict) -> np.ndarray:
    dtype = _numeric_dtype(item["dtype"])
    raw = item["data"].numpy().tobytes()
    try:
        return np.frombuffer(raw, dtype=dtype).reshape([int(s) for s in item["shape"]]).copy()
    except (TypeError, ValueError) as exc:
        raise ChannelClosed(f"malformed array: {str(exc)[:120]}") from None


def _scalar_from(item: dict):
    raw = item["data"].numpy().tobytes()
    dtype = _numeric_dtype(item["dtype"])
    if len(raw) != dtype.itemsize:
        raise ChannelClosed(f"a NumPy scalar of {len(raw)} bytes for dtype {dtype}")
    return np.frombuffer(raw, dtype=dtype)[0]


def _dict_from(item: dict, make_handle) -> dict:
    keys = [decode_value(k, make_handle) for k, _ in item["items"]]
    if not all(isinstance(k, (type(None), bool, int, float, str)) for k in keys):
        raise ChannelClosed("a dict whose keys are not plain scalars")
    return {k: decode_value(v, make_handle) for k, (_, v) in zip(keys, item["items"], strict=True)}


def decode_value(item, make_handle):
    """Rebuild a value encoded by the worker; ``make_handle(description)`` turns handles into proxies."""
    import torch

    if isinstance(item, (type(None), bool, int, float, str, bytes, torch.Tensor)):
        return item
    if isinstance(item, list):
        return [decode_value(v, make_handle) for v in item]
    if isinstance(item, tuple):
        return tuple(decode_value(v, make_handle) for v in item)
    if isinstance(item, dict):
        tag = item.get("$")
        if tag == "nd":
            return _array_from(item)
        if tag == "np":
            return _scalar_from(item)
        if tag == "tuple":
            return tuple(decode_value(v, make_handle) for v in item["items"])
        if tag == "list":
            return [decode_value(v, make_handle) for v in item["items"]]
        if tag == "dict":
            return _dict_from(item, make_handle)
        if tag == "handle":
            return make_handle(item)
        if tag == "complex":
            return complex(float(item["re"]), float(item["im"]))
    raise ChannelClosed(f"unexpected item in a reply: {type(item).__name__}")
