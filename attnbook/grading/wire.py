"""The wire between the trusted grader and the learner's sandboxed kernel.

Values travel as a JSON header plus raw bytes for tensors and arrays. Reading a message never runs code:
no pickle, no ``torch.load``; only ``None``, ``bool``, ``int``, ``float``, ``str``, lists, tuples, dicts,
tensors and arrays of a fixed list of dtypes, dtypes, numbers, and two markers: a callable of the other
side (called back through the wire) and an opaque object (only its type name travels). A tensor may carry
a watch spec (plain data: set 10's block-width watch, see below). Sizes, depth and counts are capped, so a
hostile peer cannot make the reader allocate without bound.

:class:`Peer` sends requests and waits for the reply while serving the other side's nested requests (a
learner's function that calls a decoder step given by the grader, a backward pass through it).
:class:`RemoteCall` makes a remote call part of autograd: its backward sends the output gradients to the
side that computed the outputs and returns the input gradients it gets back.
"""

from __future__ import annotations

import json
import math
import os
import select
import struct
import time
import weakref
from collections.abc import Callable
from typing import Any

import numpy as np
import torch

MAX_MESSAGE = 256 * 2**20
MAX_DEPTH = 24
MAX_NODES = 200_000
MAX_TEXT = 4000

DTYPES = {
    "float16": torch.float16,
    "bfloat16": torch.bfloat16,
    "float32": torch.float32,
    "float64": torch.float64,
    "complex64": torch.complex64,
    "complex128": torch.complex128,
    "int8": torch.int8,
    "int16": torch.int16,
    "int32": torch.int32,
    "int64": torch.int64,
    "uint8": torch.uint8,
    "bool": torch.bool,
}
DTYPE_NAMES = {v: k for k, v in DTYPES.items()}
NP_DTYPES = {
    "float16",
    "float32",
    "float64",
    "complex64",
    "complex128",
    "int8",
    "int16",
    "int32",
    "int64",
    "uint8",
    "uint16",
    "uint32",
    "uint64",
    "bool",
}
_HEAD = struct.Struct("!II")


class WireError(Exception):
    """A malformed, oversized or unexpected message, or a peer that went away."""


class PeerTimeout(WireError):
    """No complete message before the deadline."""


class Opaque:
    """Stands for an object that cannot travel; ``type(obj).__name__`` is the learner's type name."""

    def __repr__(self) -> str:
        return f"<{type(self).__name__} object>"


def opaque(type_name: str) -> Opaque:
    name = "".join(c for c in str(type_name)[:60] if c.isalnum() or c == "_") or "object"
    if name[0].isdigit():
        name = "_" + name
    return type(name, (Opaque,), {})()


# --------------------------------------------------------------------------------------------------
# Encoding and decoding values
# --------------------------------------------------------------------------------------------------


class Encoder:
    """``encode(value) -> node``; tensors are appended to ``blob``, in order, also kept in ``tensors``."""

    def __init__(self, callables: Callable[[Any], int | None] | None = None, with_grad: bool = False):
        self.chunks: list[bytes] = []
        self.size = 0
        self.tensors: list[torch.Tensor] = []
        self.callables = callables
        self.with_grad = with_grad

    def _bytes(self, data: bytes) -> tuple[int, int]:
        offset = self.size
        self.chunks.append(data)
        self.size += len(data)
        if self.size > MAX_MESSAGE:
            raise WireError("a value is too large to send")
        return offset, len(data)

    def tensor(self, t: torch.Tensor, grad: bool = True) -> dict:
        self.tensors.append(t)
        plain = t.detach()
        if plain.layout != torch.strided:
            plain = plain.to_dense()
        plain = plain.cpu().resolve_conj().resolve_neg().contiguous()
        if type(plain) is not torch.Tensor:
            plain = plain.as_subclass(torch.Tensor)
        if plain.dtype not in DTYPE_NAMES:
            return {"x": f"tensor of dtype {plain.dtype}"}
        raw = plain.reshape(-1).view(torch.uint8).numpy().tobytes() if plain.numel() else b""
        offset, n = self._bytes(raw)
        node = {
            "t": DTYPE_NAMES[plain.dtype],
            "s": list(plain.shape),
            "o": offset,
            "n": n,
            "rg": bool(t.requires_grad),
            "gf": t.grad_fn is not None,
        }
        watch = _watch_spec(t) if grad else None
        if watch is not None:
            node["w"] = watch
        if grad and self.with_grad and t.is_leaf and t.grad is not None:
            node["g"] = self.tensor(t.grad, grad=False)
            self.tensors.pop()
        return node

    def encode(self, value, depth: int = 0):
        if depth > MAX_DEPTH:
            raise WireError("a value is nested too deeply to send")
        if value is None or isinstance(value, (bool, str)):
            return value if not isinstance(value, str) else value[: MAX_MESSAGE // 4]
        if isinstance(value, int) and type(value) is int:
            return value if abs(value) < 2**63 else {"x": "int"}
        if isinstance(value, float) and type(value) is float:
            return value
        if isinstance(value, torch.Tensor):
            return self.tensor(value)
        if isinstance(value, np.ndarray):
            if value.dtype.name not in NP_DTYPES:
                return {"x": f"numpy array of dtype {value.dtype}"}
            offset, n = self._bytes(np.ascontiguousarray(value).tobytes())
            return {"a": value.dtype.name, "s": list(value.shape), "o": offset, "n": n}
        if isinstance(value, (np.generic,)) and value.dtype.name in NP_DTYPES:
            item = value.item()
            return {"ns": value.dtype.name, "v": item if not isinstance(item, complex) else str(item)}
        if isinstance(value, torch.dtype):
            return {"dt": DTYPE_NAMES.get(value, str(value))}
        if isinstance(value, (bool, int, float)):  # subclasses (np.float64, a learner's int subclass)
            return {"x": type(value).__name__, "v": float(value) if isinstance(value, float) else int(value)}
        if isinstance(value, torch.Size):
            return {"T": [int(v) for v in value]}
        if type(value) in (list, tuple):
            return {"L" if type(value) is list else "T": [self.encode(v, depth + 1) for v in value]}
        if type(value) is dict:
            return {"D": [[self.encode(k, depth + 1), self.encode(v, depth + 1)] for k, v in value.items()]}
        if callable(value) and self.callables is not None:
            ident = self.callables(value)
            if ident is not None:
                return {"cb": ident}
        return {"x": type(value).__name__}

    def blob(self) -> bytes:
        return b"".join(self.chunks)


# --------------------------------------------------------------------------------------------------
# Watched tensors (set 10's block-width watch): settings out, record back, as data
# --------------------------------------------------------------------------------------------------
#
# A tensor whose type has ``wire_spec()`` (:class:`attnbook.blockwise.ScoreWatch`) travels with that
# plain-data spec: the factory's qualified name, its settings, a token, and its record (``widths``, ``ran``,
# ``second_pass``, ``outside``).
# Decoding never acts on a spec by itself: the kernel's decoder (``watches="collect"``) only lists the
# specs in ``Decoder.watches`` (the kernel decides what to make of them), and the grader's decoder (the
# default, ``watches="report"``) hands a record to the watch this process sent under that token, and to
# nothing else: the record is a list of integers, given to a method of the grader's own class.

_WATCHES: weakref.WeakValueDictionary[str, type] = weakref.WeakValueDictionary()
_MAX_WIDTHS = 1024


def _watch_spec(t: torch.Tensor) -> dict | None:
    spec_of = getattr(type(t), "wire_spec", None)
    if not callable(spec_of) or type(t) is torch.Tensor:
        return None
    spec = spec_of()
    token = spec.get("token")
    if isinstance(token, str) and token:
        _WATCHES.setdefault(token, type(t))  # the first class sent under a token owns it
    return spec


def _checked_spec(spec) -> dict:
    """A watch spec from the other side, checked to be the data it should be."""

    def ints(values, limit):
        return (
            isinstance(values, list)
            and len(values) <= limit
            and all(type(v) is int and 0 <= v < 2**31 for v in values)
        )

    if not (
        isinstance(spec, dict)
        and isinstance(spec.get("name"), str)
        and len(spec["name"]) <= 200
        and isinstance(spec.get("token"), str)
        and len(spec["token"]) <= 64
        and type(spec.get("rows")) is int
        and 0 <= spec["rows"] < 2**31
        and ints(spec.get("exempt"), 64)
        and type(spec.get("keys", 0)) is int
        and 0 <= spec.get("keys", 0) < 2**31
        and type(spec.get("batch", 0)) is int
        and 0 <= spec.get("batch", 0) < 2**31
        and ints(spec.get("widths"), _MAX_WIDTHS)
        and isinstance(spec.get("ran"), bool)
        and type(spec.get("block", 0)) is int
        and 0 <= spec.get("block", 0) < 2**31
        and isinstance(spec.get("second_pass", False), bool)
        and type(spec.get("outside", 0)) is int
        and 0 <= spec.get("outside", 0) < 2**31
    ):
        raise WireError("a malformed watch")
    return spec


class Decoder:
    """``decode(node) -> value``; every tensor made is kept in ``tensors``, in the encoder's order.

    ``watches``: what to do with a watched tensor's spec (see above): ``"report"`` its record to this
    process's watch of that token (the grader), or ``"collect"`` ``(tensor, spec)`` in ``watches`` (the
    kernel)."""

    def __init__(self, blob: bytes, callables: Callable[[int], Any] | None = None, watches: str = "report"):
        self.blob = blob
        self.nodes = 0
        self.tensors: list[torch.Tensor] = []
        self.callables = callables
        self.mode = watches
        self.watches: list[tuple[torch.Tensor, dict]] = []

    def _segment(self, node) -> memoryview:
        offset, n = node.get("o"), node.get("n")
        if not (
            isinstance(offset, int)
            and isinstance(n, int)
            and 0 <= offset
            and 0 <= n
            and offset + n <= len(self.blob)
        ):
            raise WireError("a malformed array")
        return memoryview(self.blob)[offset : offset + n]

    def _shape(self, node) -> tuple[int, ...]:
        shape = node.get("s")
        if not (
            isinstance(shape, list)
            and len(shape) <= 16
            and all(isinstance(s, int) and not isinstance(s, bool) and 0 <= s for s in shape)
        ):
            raise WireError("a malformed shape")
        return tuple(shape)

    def tensor(self, node, keep: bool = True) -> torch.Tensor:
        dtype = DTYPES.get(node.get("t"))
        if dtype is None:
            raise WireError("a tensor of an unknown dtype")
        shape = self._shape(node)
        data = self._segment(node)
        numel = math.prod(shape)  # Python integers: a crafted shape cannot overflow
        itemsize = torch.empty((), dtype=dtype).element_size()
        if numel * itemsize > MAX_MESSAGE or numel * itemsize != len(data):
            raise WireError("a tensor whose size does not match its shape")
        if numel == 0:
            t = torch.empty(shape, dtype=dtype)
        else:
            t = torch.frombuffer(bytearray(data), dtype=torch.uint8).view(dtype).reshape(shape)
        if node.get("rg") is True and t.is_floating_point() or node.get("rg") is True and t.is_complex():
            t.requires_grad_(True)
        if isinstance(node.get("g"), dict):
            grad = self.tensor(node["g"], keep=False)
            if grad.shape == t.shape and grad.dtype == t.dtype:
                t.grad = grad
        if keep:
            self.tensors.append(t)
        if keep and "w" in node:
            spec = _checked_spec(node["w"])
            if self.mode == "collect":
                self.watches.append((t, spec))
            elif self.mode == "report":
                watch = _WATCHES.get(spec["token"])
                if watch is not None and callable(getattr(watch, "report", None)):
                    watch.report(
                        list(spec["widths"]),
                        spec["ran"],
                        spec.get("second_pass", False),
                        spec.get("outside", 0),
                    )
        return t

    def decode(self, node, depth: int = 0):
        self.nodes += 1
        if self.nodes > MAX_NODES or depth > MAX_DEPTH:
            raise WireError("a value too large or nested too deeply")
        if node is None or isinstance(node, (bool, int, float, str)):
            return node
        if isinstance(node, list):
            raise WireError("a bare list in a message")
        if not isinstance(node, dict) or len(node) == 0:
            raise WireError("a malformed value")
        if "t" in node:
            return self.tensor(node)
        if "L" in node or "T" in node:
            items = node.get("L", node.get("T"))
            if not isinstance(items, list):
                raise WireError("a malformed list")
            values = [self.decode(v, depth + 1) for v in items]
            return values if "L" in node else tuple(values)
        if "D" in node:
            pairs = node["D"]
            if not isinstance(pairs, list) or not all(isinstance(p, list) and len(p) == 2 for p in pairs):
                raise WireError("a malformed dict")
            out = {}
            for k, v in pairs:
                key = self.decode(k, depth + 1)
                try:
                    out[key] = self.decode(v, depth + 1)
                except TypeError:  # an unhashable key
                    raise WireError("a dict key that cannot be a key") from None
            return out
        if "a" in node:
            if node["a"] not in NP_DTYPES:
                raise WireError("an array of an unknown dtype")
            dtype, shape = np.dtype(node["a"]), self._shape(node)
            data = self._segment(node)
            if math.prod(shape) * dtype.itemsize > MAX_MESSAGE or math.prod(shape) * dtype.itemsize != len(
                data
            ):
                raise WireError("an array whose size does not match its shape")
            return np.frombuffer(bytes(data), dtype=dtype).reshape(shape).copy()
        if "ns" in node:
            if node["ns"] not in NP_DTYPES or not isinstance(node.get("v"), (bool, int, float, str)):
                raise WireError("a malformed number")
            try:
                return np.dtype(node["ns"]).type(
                    complex(node["v"]) if isinstance(node["v"], str) else node["v"]
                )
            except (TypeError, ValueError, OverflowError):
                raise WireError("a malformed number") from None
        if "dt" in node:
            return DTYPES.get(node["dt"], opaque("dtype"))
        if "cb" in node:
            if self.callables is None or not isinstance(node["cb"], int):
                raise WireError("an unexpected callable")
            return self.callables(node["cb"])
        if "x" in node:
            return opaque(node["x"])
        raise WireError("a value of an unknown kind")


# --------------------------------------------------------------------------------------------------
# Messages over a pair of pipes
# --------------------------------------------------------------------------------------------------


def _check_header(header) -> dict:
    if not isinstance(header, dict):
        raise WireError("a message that is not an object")
    return header


class Peer:
    """One end of the wire: ``request`` a reply, serving the other side's nested requests meanwhile.

    ``handlers`` maps an operation name to ``handler(peer, message, blob) -> (reply, blob)``; an
    operation without a handler is a protocol error (the grader accepts only call-backs)."""

    def __init__(
        self, read_fd: int, write_fd: int, handlers: dict | None = None, max_message: int = MAX_MESSAGE
    ):
        self.read_fd, self.write_fd = read_fd, write_fd
        self.handlers = handlers or {}
        self.max_message = max_message
        self.buffer = bytearray()
        self.closed = False

    # raw frames
    def send(self, header: dict, blob: bytes = b"") -> None:
        head = json.dumps(header, ensure_ascii=True, allow_nan=True).encode()
        data = _HEAD.pack(len(head), len(blob)) + head + blob
        view = memoryview(data)
        try:
            while view:
                n = os.write(self.write_fd, view)
                view = view[n:]
        except OSError as exc:
            self.closed = True
            raise WireError(f"the other side went away ({exc.strerror})") from None

    def _fill(self, n: int, deadline: float | None) -> None:
        while len(self.buffer) < n:
            if deadline is not None:
                left = deadline - time.monotonic()
                if left <= 0:
                    raise PeerTimeout("no reply in time")
                ready, _, _ = select.select([self.read_fd], [], [], left)
                if not ready:
                    continue
            try:
                chunk = os.read(self.read_fd, max(65536, min(n - len(self.buffer), 2**24)))
            except OSError as exc:
                self.closed = True
                raise WireError(f"the other side went away ({exc.strerror})") from None
            if not chunk:
                self.closed = True
                raise WireError("the other side went away")
            self.buffer += chunk

    def receive(self, deadline: float | None = None) -> tuple[dict, bytes]:
        self._fill(_HEAD.size, deadline)
        n_head, n_blob = _HEAD.unpack(bytes(self.buffer[: _HEAD.size]))
        if n_head > 16 * 2**20 or n_head + n_blob > self.max_message:
            self.closed = True
            raise WireError("a message too large")
        total = _HEAD.size + n_head + n_blob
        self._fill(total, deadline)
        head = bytes(self.buffer[_HEAD.size : _HEAD.size + n_head])
        blob = bytes(self.buffer[_HEAD.size + n_head : total])
        del self.buffer[:total]
        try:
            header = json.loads(head.decode("utf-8"))
        except (UnicodeDecodeError, ValueError, RecursionError):
            self.closed = True
            raise WireError("a message that is not JSON") from None
        return _check_header(header), blob

    # requests
    def request(self, header: dict, blob: bytes = b"", deadline: float | None = None) -> tuple[dict, bytes]:
        self.send(header, blob)
        return self.wait_reply(deadline, header.get("op"))

    def wait_reply(self, deadline: float | None = None, op: str | None = None) -> tuple[dict, bytes]:
        while True:
            message, data = self.receive(deadline)
            if "re" in message:
                if op is not None and message["re"] != op:
                    self.closed = True
                    raise WireError("a reply to another request")
                return message, data
            self.serve_one(message, data)

    def serve_one(self, message: dict, data: bytes) -> None:
        handler = self.handlers.get(message.get("op"))
        if handler is None:
            self.closed = True
            raise WireError(f"an unexpected message {str(message.get('op'))[:40]!r}")
        reply, blob = handler(self, message, data)
        reply["re"] = message.get("op")
        self.send(reply, blob)

    def serve_forever(self) -> None:
        while True:
            message, data = self.receive()
            self.serve_one(message, data)


# --------------------------------------------------------------------------------------------------
# A remote call inside autograd
# --------------------------------------------------------------------------------------------------


class RemoteCall(torch.autograd.Function):
    """``RemoteCall.apply(backward_fn, differentiable, *inputs_and_outputs)``.

    The call itself has happened already; this only links its outputs to its inputs for autograd.
    ``backward_fn(grad_outputs) -> input gradients`` goes to the side that computed the outputs.
    ``differentiable`` says, for each output, whether it came back attached to autograd (a learner's
    ``.detach()`` on the far side shows here as an output that does not require grad)."""

    @staticmethod
    def forward(ctx, backward_fn, differentiable, n_inputs, *tensors):
        ctx.backward_fn = backward_fn
        ctx.n_inputs = n_inputs
        ctx.n_outputs = len(tensors) - n_inputs
        outputs = tuple(t.detach() for t in tensors[n_inputs:])
        fixed = [o for o, d in zip(outputs, differentiable) if not d]
        if fixed:
            ctx.mark_non_differentiable(*fixed)
        return outputs

    @staticmethod
    def backward(ctx, *grad_outputs):
        grads = ctx.backward_fn(list(grad_outputs))
        if len(grads) != ctx.n_inputs:
            raise RuntimeError("the remote side sent the wrong number of gradients")
        return (None, None, None, *grads, *([None] * ctx.n_outputs))


def link(
    inputs: list[torch.Tensor], outputs: list[torch.Tensor], differentiable: list[bool], backward_fn
) -> list[torch.Tensor]:
    """Outputs attached to ``inputs`` through :class:`RemoteCall` (unchanged if nothing needs grad)."""
    if not outputs or not inputs or not torch.is_grad_enabled() or not any(differentiable):
        return outputs
    return list(RemoteCall.apply(backward_fn, differentiable, len(inputs), *inputs, *outputs))


def replace_tensors(value, new: list[torch.Tensor], counter: list[int]):
    """``value`` with its tensors (in encoding order) replaced by ``new``."""
    if isinstance(value, torch.Tensor):
        counter[0] += 1
        return new[counter[0] - 1]
    if type(value) in (list, tuple):
        return type(value)(replace_tensors(v, new, counter) for v in value)
    if type(value) is dict:
        return {k: replace_tensors(v, new, counter) for k, v in value.items()}
    return value


def decode_grads(decoder: Decoder, node, inputs: list[torch.Tensor]) -> list:
    """Gradients for ``inputs`` from a reply: a list of tensors or None, checked against the inputs."""
    grads = decoder.decode(node)
    if not isinstance(grads, list) or len(grads) != len(inputs):
        raise RuntimeError("the other side sent malformed gradients")
    out = []
    for g, x in zip(grads, inputs):
        if g is None:
            out.append(None)
        elif isinstance(g, torch.Tensor) and g.shape == x.shape:
            out.append(g.to(x.dtype).detach())
        else:
            raise RuntimeError("the other side sent a gradient of the wrong shape")
    return out


def short(text, limit: int = MAX_TEXT) -> str:
    text = str(text)
    return text if len(text) <= limit else text[: limit - 3] + "..."
