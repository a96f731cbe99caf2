"""The learner's side of trusted grading: runs inside the sandbox, one submission, then it is destroyed.

It executes the learner's cells (IPython, so magics work as in Jupyter) and, on the grader's request,
calls a learner's function on inputs sent over the wire and sends back its outputs, the arguments after
the call (so the grader sees in-place changes) and, later, gradients for a backward pass. It decides
nothing: every verdict is computed by the grader in its own process. Anything here can be tampered with
by the learner's code, and nothing here can change a grade.

Started by :mod:`attnbook.grading.sandbox` as ``python -c <bootstrap> READ_FD WRITE_FD`` (the pipes).
"""

from __future__ import annotations

import contextlib
import inspect
import os
import resource
import sys
import threading
import time

_T_START = float(os.environ.pop("ATTNBOOK_T_START", time.time()))

import torch  # noqa: E402

from . import wire  # noqa: E402

_T_TORCH = time.time()
_HANDLES: dict[int, tuple[list, list]] = {}
_STUBS: dict[tuple, object] = {}
_KEEP_HANDLES = 16


# --------------------------------------------------------------------------------------------------
# A guard that sees calls of the book's own implementations
# --------------------------------------------------------------------------------------------------


def _guard(names, allowed, observers=()):
    from . import engine

    if not names and not observers:
        return None
    return engine.ForbiddenCallGuard(names, allowed, observers)


# --------------------------------------------------------------------------------------------------
# The learner's errors, in a few plain strings
# --------------------------------------------------------------------------------------------------


def _error_reply(exc: BaseException) -> dict:
    text = str(exc).strip().splitlines()[0] if str(exc).strip() else ""
    from . import engine

    where, function = engine.learner_frame(exc)
    return {
        "status": "error",
        "type": wire.short(type(exc).__name__, 80),
        "text": wire.short(text, 600),
        "where": wire.short(where, 400),
        "function": wire.short(function, 80),
    }


# --------------------------------------------------------------------------------------------------
# Call-backs: a callable argument of the grader (a decoder step, a loss) is called over the wire
# --------------------------------------------------------------------------------------------------

_BUILTIN_ERRORS = {
    e.__name__: e
    for e in (
        IndexError,
        KeyError,
        TypeError,
        ValueError,
        RuntimeError,
        ZeroDivisionError,
        AttributeError,
        OverflowError,
    )
}


class _Stub:
    """The grader's callable, seen from the kernel."""

    def __init__(self, peer: wire.Peer, ident: int):
        self.peer, self.ident = peer, ident
        self.__name__ = self.__qualname__ = "step_fn"

    def __call__(self, *args, **kwargs):
        encoder = wire.Encoder(callables=_stub_id)
        node = encoder.encode((list(args), kwargs))
        grad = torch.is_grad_enabled()
        inputs = [t for t in encoder.tensors if t.requires_grad] if grad else []
        reply, data = self.peer.request(
            {"op": "callback", "cb": self.ident, "args": node, "grad": grad}, encoder.blob()
        )
        if reply.get("status") != "ok":
            error = _BUILTIN_ERRORS.get(reply.get("type"), RuntimeError)
            raise error(wire.short(reply.get("text", ""), 600))
        decoder = wire.Decoder(data, callables=_stub_for(self.peer))
        value = decoder.decode(reply.get("out"))
        outputs = decoder.tensors
        differentiable = [t.requires_grad for t in outputs]
        for t in outputs:
            t.requires_grad_(False)
        handle = reply.get("h")

        def backward(grad_outputs):
            encoder = wire.Encoder()
            node = encoder.encode([g for g in grad_outputs])
            answer, blob = self.peer.request(
                {"op": "callback_backward", "h": handle, "grads": node}, encoder.blob()
            )
            if answer.get("status") != "ok":
                raise RuntimeError(wire.short(answer.get("text", "the backward pass failed"), 600))
            return wire.decode_grads(wire.Decoder(blob), answer.get("grads"), inputs)

        linked = wire.link(inputs, outputs, differentiable, backward)
        return wire.replace_tensors(value, linked, [0])


def _stub_id(value):
    return value.ident if isinstance(value, _Stub) else None


def _stub_for(peer):
    def make(ident: int):
        key = (id(peer), ident)
        if key not in _STUBS:
            _STUBS[key] = _Stub(peer, ident)
        return _STUBS[key]

    return make


# --------------------------------------------------------------------------------------------------
# Watched arguments: the grader's watch (set 10's block widths), made again here
# --------------------------------------------------------------------------------------------------

#: the only factories a watch spec may name
WATCH_FACTORIES = ("attnbook.blockwise:watch_scores",)


def _rewatch(watches: list, args: list, kwargs: dict) -> tuple[list, dict]:
    """``args`` and ``kwargs`` with the tensors the grader sent watched replaced by watched ones (one
    watch per token, made by the factory the spec names, recording only the learner's operations).
    Their record goes back with the outputs and the arguments after the call (see :mod:`wire`)."""
    import importlib

    groups: dict[str, list] = {}
    for tensor, spec in watches:
        if spec["name"] in WATCH_FACTORIES:
            groups.setdefault(spec["token"], []).append((tensor, spec))
    swap: dict[int, torch.Tensor] = {}
    for token, members in groups.items():
        spec = members[0][1]
        module, _, name = spec["name"].partition(":")
        factory = getattr(importlib.import_module(module), name)
        watched = factory(
            [t for t, _ in members],
            rows=spec["rows"],
            exempt=spec["exempt"],
            outside_only=True,
            token=token,
            keys=spec.get("keys", 0),
            batch=spec.get("batch", 0),
            block=spec.get("block", 0),
        )
        swap.update({id(t): w for (t, _), w in zip(members, watched)})

    def replace(value, depth=0):
        if isinstance(value, torch.Tensor):
            return swap.get(id(value), value)
        if depth > wire.MAX_DEPTH:
            return value
        if type(value) in (list, tuple):
            return type(value)(replace(v, depth + 1) for v in value)
        if type(value) is dict:
            return {k: replace(v, depth + 1) for k, v in value.items()}
        return value

    return replace(args), replace(kwargs)


# --------------------------------------------------------------------------------------------------
# Requests
# --------------------------------------------------------------------------------------------------


def _cpu_budget(seconds) -> None:
    """A soft CPU-time limit for the next request (a cell, a call); the hard one, set before any
    learner code ran, stays. Beyond it the kernel gets SIGXCPU; the grader's wall clock is the limit
    that counts."""
    if isinstance(seconds, (int, float)) and not isinstance(seconds, bool) and seconds > 0:
        try:
            used = resource.getrusage(resource.RUSAGE_SELF)
            soft, hard = resource.getrlimit(resource.RLIMIT_CPU)
            want = int(used.ru_utime + used.ru_stime + seconds) + 1
            if hard != resource.RLIM_INFINITY:
                want = min(want, hard)
            resource.setrlimit(resource.RLIMIT_CPU, (want, hard))
        except (ValueError, OSError):
            pass


class _Namespace:
    """A stand-in for IPython's shell when the kernel serves functions given directly (tests)."""

    def __init__(self, namespace: dict):
        self.user_ns = namespace


class Kernel:
    """The requests the grader may send. ``namespace``: serve these functions instead of running cells
    in IPython (the proxy's own tests run a kernel this way, in a thread)."""

    def __init__(self, namespace: dict | None = None):
        if namespace is not None:
            self.shell = _Namespace(namespace)
        else:
            from IPython.core.interactiveshell import InteractiveShell
            from traitlets.config import Config

            config = Config()
            config.HistoryManager.enabled = False
            config.InteractiveShell.colors = "NoColor"
            self.shell = InteractiveShell.instance(config=config)
        self.handles = 0

    def handlers(self) -> dict:
        return {"run": self.run, "resolve": self.resolve, "call": self.call, "backward": self.backward}

    def run(self, peer, message, blob):
        _cpu_budget(message.get("cpu"))
        start = time.perf_counter()
        result = self.shell.run_cell(str(message.get("code", "")), store_history=True)
        error = result.error_before_exec or result.error_in_exec
        reply = {"ok": error is None, "s": time.perf_counter() - start}
        if error is not None:
            reply.update(
                ename=wire.short(type(error).__name__, 80),
                evalue=wire.short(str(error).strip().splitlines()[0] if str(error).strip() else "", 300),
            )
        return reply, b""

    def resolve(self, peer, message, blob):
        name = str(message.get("name", ""))
        if name not in self.shell.user_ns:
            return {"exists": False}, b""
        fn = self.shell.user_ns[name]
        reply = {
            "exists": True,
            "callable": callable(fn),
            "type": wire.short(type(fn).__name__, 80),
            "none": fn is None,
            "ellipsis": fn is Ellipsis,
        }
        try:
            reply["sig"] = [
                [p.name, p.kind.name, p.default is not p.empty]
                for p in inspect.signature(fn).parameters.values()
            ]
        except (TypeError, ValueError):
            reply["sig"] = None
        from . import engine

        ns = self.shell.user_ns
        reply["refs"] = [n for n in engine.referenced_names(fn) if n != name and callable(ns.get(n))][:64]
        try:  # whether it has a loop: only to word a time-out message in the grader
            reply["loops"] = engine._has_loop(fn)
        except Exception:
            reply["loops"] = None
        return reply, b""

    def call(self, peer, message, blob):
        fn = self.shell.user_ns.get(str(message.get("name", "")))
        decoder = wire.Decoder(blob, callables=_stub_for(peer), watches="collect")
        args, kwargs = decoder.decode(message.get("args")), decoder.decode(message.get("kwargs"))
        if not isinstance(args, list) or not isinstance(kwargs, dict):
            raise wire.WireError("malformed arguments")
        inputs = [t for t in decoder.tensors if t.requires_grad]
        if decoder.watches:  # watched tensors (set 10): the same watch here, its record goes back
            args, kwargs = _rewatch(decoder.watches, args, kwargs)
        grad = bool(message.get("grad", True))
        _cpu_budget(message.get("cpu"))
        # the watched arguments see every operation of the call at the dispatcher too (through the guard)
        from . import engine

        observers = [w.observer() for w in engine._watch_types((args, kwargs))]
        guard = _guard([str(n) for n in message.get("forbid") or []], list(_STUBS.values()), observers)
        if guard is not None:
            guard.inputs = [args, kwargs]
        value, error = None, None
        # threads the function starts are watched too (forked processes and C-level tricks are not)
        threading.setprofile(guard.hook if guard is not None else None)
        try:
            with guard or contextlib.nullcontext(), torch.set_grad_enabled(grad):
                value = fn(*args, **kwargs)
            if guard is not None:
                guard.check_result(value)
        except BaseException as exc:  # the learner's error, SystemExit and KeyboardInterrupt included
            error = exc
        finally:
            threading.setprofile(None)
        used = [wire.short(n, 200) for n in (guard.found if guard is not None else [])][:10]
        if used:
            return {"status": "forbidden", "names": used}, b""
        if error is not None:
            return _error_reply(error), b""
        try:
            encoder = wire.Encoder(callables=_stub_id, with_grad=True)
            out = encoder.encode(value)
            outputs = list(encoder.tensors)
            after = encoder.encode((args, kwargs))
        except wire.WireError as exc:
            return {"status": "unsendable", "text": str(exc)}, b""
        self.handles += 1
        _HANDLES[self.handles] = (inputs, outputs)
        for old in [h for h in _HANDLES if h <= self.handles - _KEEP_HANDLES]:
            del _HANDLES[old]
        return {"status": "ok", "out": out, "after": after, "h": self.handles}, encoder.blob()

    def backward(self, peer, message, blob):
        inputs, outputs = _HANDLES.get(message.get("h"), (None, None))
        if inputs is None:
            return {"status": "error", "text": "this call is no longer known"}, b""
        try:
            grads = wire.Decoder(blob).decode(message.get("grads"))
            pairs = [
                (o, g)
                for o, g in zip(outputs, grads)
                if isinstance(g, torch.Tensor) and o.requires_grad and g.shape == o.shape
            ]
            if not pairs or not inputs:
                result = [None] * len(inputs)
            else:
                result = list(
                    torch.autograd.grad(
                        [o for o, _ in pairs],
                        inputs,
                        grad_outputs=[g.to(o.dtype) for o, g in pairs],
                        allow_unused=True,
                        retain_graph=True,
                    )
                )
        except Exception as exc:
            return {
                "status": "error",
                "text": wire.short(
                    str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__, 600
                ),
            }, b""
        encoder = wire.Encoder()
        node = encoder.encode(result)
        return {"status": "ok", "grads": node}, encoder.blob()


def main() -> None:
    read_fd, write_fd = int(sys.argv[1]), int(sys.argv[2])
    kernel = Kernel()
    peer = wire.Peer(read_fd, write_fd, handlers=kernel.handlers())
    peer.send(
        {"re": "ready", "t_start": _T_START, "t_torch": _T_TORCH, "t_ready": time.time(), "pid": os.getpid()}
    )
    try:
        peer.serve_forever()
    except wire.WireError:
        pass
    os._exit(0)


if __name__ == "__main__":
    main()
