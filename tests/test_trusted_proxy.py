"""The trusted grader's proxy is faithful, and its wire cannot run code.

The proxy calls a learner's function in another process (here: a kernel served from a thread, through the
same pipes and wire as the sandbox) and must give the engine what a local call gives: the outputs, the
inputs' in-place changes (values, ``requires_grad``, ``.grad``), autograd through the call, the learner's
exceptions with their line, and call-backs into the grader's own callables (a decoder step, a loss).
The proof: the catalogue of learner-style wrong answers of sets 08 and 02 gets the same diagnosis through
the proxy as locally, and every reference passes.
"""

from __future__ import annotations

import os
import pickle
import resource
import threading

import numpy as np
import pytest
import test_catalogue_02
import test_catalogue_08
import test_catalogue_10
import torch

from attnbook.grading import get_task, run_task, wire
from attnbook.grading.kernel_side import Kernel
from attnbook.grading.sandbox import Limits
from attnbook.grading.trusted import RemoteFunction, Session


class _ThreadBox:
    """What :class:`Session` needs of a sandbox, with the kernel in a thread of this process.

    The kernel sets a soft CPU-time limit before each request (``kernel_side._cpu_budget``: in a sandbox,
    its own process's); here that is the test process's, so :meth:`kill` puts the limit it found back.
    Otherwise the process would be killed (SIGXCPU) a few CPU seconds after the box's last request, in
    whatever test runs then (seen as pytest-xdist workers that crashed)."""

    def __init__(self, namespace: dict, handlers: dict):
        self.cpu_limit = resource.getrlimit(resource.RLIMIT_CPU)
        to_kernel_r, to_kernel_w = os.pipe()
        from_kernel_r, from_kernel_w = os.pipe()
        self.kernel_peer = wire.Peer(to_kernel_r, from_kernel_w, Kernel(namespace).handlers())
        self.peer = wire.Peer(from_kernel_r, to_kernel_w, handlers)
        self.alive = True
        self.lock, self.closed = threading.Lock(), set()
        self.thread = threading.Thread(target=self._serve, daemon=True)
        self.thread.start()

    def _serve(self):
        try:
            self.kernel_peer.serve_forever()
        except wire.WireError:
            pass

    def stop(self):
        """As a sandbox's watchdog stop: the kernel side stops reading (a blocked write then fails)."""
        with self.lock:
            if self.kernel_peer.read_fd not in self.closed:
                self.closed.add(self.kernel_peer.read_fd)
                os.close(self.kernel_peer.read_fd)

    def kill(self):
        if self.alive:
            self.alive = False
            for fd in (self.peer.read_fd, self.peer.write_fd):
                os.close(fd)
            self.thread.join(5)
            with self.lock:
                for fd in (self.kernel_peer.read_fd, self.kernel_peer.write_fd):
                    if fd not in self.closed:
                        self.closed.add(fd)
                        os.close(fd)
            resource.setrlimit(resource.RLIMIT_CPU, self.cpu_limit)


def proxy_for(fn, task_id: str, namespace: dict | None = None):
    """A RemoteFunction for ``fn`` (served by a thread kernel) and its session, to be killed after."""
    task = get_task(task_id)
    name = "learner_fn"
    session = Session([], Limits())
    session.box = _ThreadBox({name: fn, **(namespace or {})}, session._handlers())
    info = session.resolve(name)
    return RemoteFunction(session, name, info, task), session


def grade_through_proxy(task_id: str, fn):
    proxy, session = proxy_for(fn, task_id)
    try:
        return run_task(get_task(task_id), proxy)
    finally:
        session.kill()


FAITHFUL = [
    (task_id, name, fn)
    for module in (test_catalogue_08, test_catalogue_02)
    for task_id, wrongs in module.WRONG.items()
    for name, fn, *_ in wrongs
]


@pytest.mark.parametrize("task_id, name, fn", FAITHFUL, ids=[f"{t}:{n}" for t, n, _ in FAITHFUL])
def test_a_wrong_answer_gets_the_same_diagnosis_through_the_proxy(task_id, name, fn):
    local = run_task(get_task(task_id), fn)
    remote = grade_through_proxy(task_id, fn)
    assert (remote.status, remote.diagnosis) == (local.status, local.diagnosis), (
        local.message,
        remote.message,
    )
    assert remote.points == local.points


RIGHT = [
    (task_id, i, fn)
    for module in (test_catalogue_08, test_catalogue_02)
    for task_id, fns in getattr(module, "CORRECT", {}).items()
    for i, fn in enumerate(fns if isinstance(fns, (list, tuple)) else [fns])
]


@pytest.mark.parametrize("task_id, i, fn", RIGHT, ids=[f"{t}:{i}" for t, i, _ in RIGHT])
def test_a_right_answer_passes_through_the_proxy(task_id, i, fn):
    result = grade_through_proxy(task_id, fn)
    assert result.passed, result.message


@pytest.mark.parametrize("task_id", sorted(set(test_catalogue_08.WRONG) | set(test_catalogue_02.WRONG)))
def test_the_graders_own_reference_earns_nothing_through_the_proxy(task_id):
    result = grade_through_proxy(task_id, get_task(task_id).reference)
    assert result.points == 0 and result.diagnosis == "forbidden_call", result.message


def test_a_learners_exception_keeps_its_line_and_function():
    def causal_mask(T):
        mask = torch.ones(T, T).tril()
        return mask[T + 5]

    remote = grade_through_proxy("08.causal_mask", causal_mask)
    local = run_task(get_task("08.causal_mask"), causal_mask)
    assert remote.message == local.message and "mask[T + 5]" in remote.message


def test_in_place_changes_of_requires_grad_and_grad_reach_the_grader():
    def sdpa(Q, K, V, mask=None):
        Q.requires_grad_(False) if Q.requires_grad else Q.requires_grad_(True)
        K.grad = torch.ones_like(K)
        w = torch.softmax(Q @ K.mT / Q.shape[-1] ** 0.5, -1)
        return w @ V, w

    proxy, session = proxy_for(sdpa, "08.sdpa")
    try:
        Q, K, V = (torch.randn(2, 3, 4, dtype=torch.float64) for _ in range(3))
        proxy(Q, K, V)
        assert Q.requires_grad and K.grad is not None and torch.equal(K.grad, torch.ones_like(K))
    finally:
        session.kill()


def test_gradients_flow_back_through_the_proxy_and_a_detach_is_seen():
    def attached(x):
        return (x**2).sum(-1)

    def detached(x):
        return (x**2).sum(-1).detach()

    for fn, flows in ((attached, True), (detached, False)):
        proxy, session = proxy_for(fn, "08.causal_mask")
        try:
            x = torch.randn(3, 2, dtype=torch.float64, requires_grad=True)
            out = proxy(x)
            assert out.requires_grad is flows
            if flows:
                (grad,) = torch.autograd.grad(out.sum(), x)
                assert torch.allclose(grad, 2 * x.detach())
        finally:
            session.kill()


# ------------------------------------------------------------------------------------------------
# The wire: data only
# ------------------------------------------------------------------------------------------------


def _roundtrip(value):
    encoder = wire.Encoder()
    node = encoder.encode(value)
    return wire.Decoder(encoder.blob()).decode(node)


def test_values_travel_unchanged():
    value = {
        "a": [torch.arange(6).reshape(2, 3), (1, 2.5, None, True)],
        3: "text",
        "b": torch.tensor([[True, False]]),
        "c": np.arange(4.0),
        "d": torch.float64,
        "e": torch.empty(0, 3),
        "f": float("nan"),
        "g": torch.tensor(1.5, dtype=torch.bfloat16),
    }
    back = _roundtrip(value)
    assert torch.equal(back["a"][0], value["a"][0]) and back["a"][1] == value["a"][1]
    assert back[3] == "text" and torch.equal(back["b"], value["b"]) and np.array_equal(back["c"], value["c"])
    assert back["d"] is torch.float64 and back["e"].shape == (0, 3) and back["f"] != back["f"]
    assert back["g"].dtype == torch.bfloat16 and float(back["g"]) == 1.5


def test_objects_that_cannot_travel_arrive_as_their_type_name_only():
    class Sneaky:
        def __reduce__(self):
            raise AssertionError("the wire must never pickle")

    back = _roundtrip([Sneaky(), lambda x: x])
    assert type(back[0]).__name__ == "Sneaky" and isinstance(back[0], wire.Opaque)
    assert type(back[1]).__name__ == "function" and not callable(back[1])


@pytest.mark.parametrize(
    "header, blob",
    [
        ({"t": "float64", "s": [4], "o": 0, "n": 999}, b"\0" * 8),  # size does not match
        ({"t": "object", "s": [1], "o": 0, "n": 8}, b"\0" * 8),  # unknown dtype
        ({"t": "float64", "s": [-1], "o": 0, "n": 8}, b"\0" * 8),  # negative shape
        ({"cb": 1}, b""),  # a callable the reader never gave
        ({"py": "os.system"}, b""),  # an unknown kind
        ({"L": [{"L": []}] * 3}, b""),  # fine, for contrast
    ],
)
def test_malformed_values_are_refused(header, blob):
    decoder = wire.Decoder(blob)
    if "L" in header:
        assert decoder.decode(header) == [[], [], []]
        return
    with pytest.raises(wire.WireError):
        decoder.decode(header)


def test_a_pickle_on_the_wire_is_not_a_message():
    r, w = os.pipe()
    payload = pickle.dumps({"status": "ok"})
    os.write(w, len(payload).to_bytes(4, "big") + (0).to_bytes(4, "big") + payload)
    os.close(w)
    with pytest.raises(wire.WireError):
        wire.Peer(r, -1).receive()
    os.close(r)


def _in_a_thread(compute):
    def causal_mask(T):
        out = {}
        worker = threading.Thread(target=lambda: out.setdefault("mask", compute(T)))
        worker.start()
        worker.join()
        return out["mask"]

    return causal_mask


def test_the_books_implementation_earns_nothing_even_from_a_thread_or_with_the_watch_switched_off():
    import sys

    import attnbook.attention as book

    def switched_off(T):
        sys.setprofile(None)
        return book.causal_mask(T)

    for fn in (book.causal_mask, _in_a_thread(book.causal_mask), switched_off):
        result = grade_through_proxy("08.causal_mask", fn)
        assert result.points == 0 and result.diagnosis == "forbidden_call", result.message
    own_work = _in_a_thread(lambda T: torch.ones(T, T).tril().bool())
    assert grade_through_proxy("08.causal_mask", own_work).passed


# ------------------------------------------------------------------------------------------------
# Set 10's block-width watch runs in the learner's process, and judges as locally
# ------------------------------------------------------------------------------------------------

BLOCKWISE = [
    (task_id, name, fn, diagnosis)
    for task_id, wrongs in test_catalogue_10.WRONG.items()
    if task_id != "10.combine_max_sum"
    for name, fn, diagnosis, _ in wrongs
]


def test_the_block_check_has_cases_to_prove():
    assert {d for *_, d in BLOCKWISE} >= {"block_size_ignored", "blocks_too_small"}


@pytest.mark.parametrize(
    "task_id, name, fn, diagnosis", BLOCKWISE, ids=[f"{t}:{n}" for t, n, *_ in BLOCKWISE]
)
def test_a_blockwise_answer_gets_the_same_diagnosis_through_the_proxy(task_id, name, fn, diagnosis):
    local = run_task(get_task(task_id), fn)
    remote = grade_through_proxy(task_id, fn)
    assert (remote.status, remote.diagnosis, remote.message) == (local.status, local.diagnosis, local.message)
    assert local.diagnosis == diagnosis


BLOCKWISE_RIGHT = [
    (task_id, i, fn) for task_id, fns in test_catalogue_10.CORRECT.items() for i, fn in enumerate(fns)
]


@pytest.mark.parametrize("task_id, i, fn", BLOCKWISE_RIGHT, ids=[f"{t}:{i}" for t, i, _ in BLOCKWISE_RIGHT])
def test_a_right_blockwise_answer_passes_through_the_proxy(task_id, i, fn):
    result = grade_through_proxy(task_id, fn)
    assert result.passed, result.message


def test_a_watch_spec_is_data_and_reaches_only_the_watch_that_sent_it():
    from attnbook.blockwise import watch_scores

    (x,) = watch_scores([torch.zeros(2, 5, dtype=torch.float64)], rows=2)
    encoder = wire.Encoder()
    node = encoder.encode(x)
    assert set(node["w"]) == {
        "name",
        "rows",
        "keys",
        "batch",
        "exempt",
        "token",
        "widths",
        "ran",
        "block",
        "second_pass",
        "outside",
    }
    # the kernel's decoder only lists the spec; it makes nothing of it
    kernel = wire.Decoder(encoder.blob(), watches="collect")
    plain = kernel.decode(node)
    assert type(plain) is torch.Tensor and kernel.watches[0][1]["token"] == type(x).token
    # a record comes back: the grader's decoder gives it to that watch, and to no other
    back = dict(node, w=dict(node["w"], widths=[5], ran=True, outside=4))
    wire.Decoder(encoder.blob()).decode(back)
    assert type(x).widths == [5] and type(x).ran and type(x).outside == 4
    stranger = dict(node, w=dict(node["w"], token="not-a-watch-of-ours", widths=[9], ran=True))
    wire.Decoder(encoder.blob()).decode(stranger)
    assert type(x).widths == [5]
    for bad in (
        {"token": 1},
        {"widths": ["os.system"]},
        {"widths": [-1]},
        {"ran": "yes"},
        {"name": None},
        {"keys": "11"},
        {"keys": -1},
        {"block": -1},
        {"second_pass": "yes"},
        {"outside": -1},
        {"outside": "10"},
    ):
        with pytest.raises(wire.WireError):
            wire.Decoder(encoder.blob()).decode(dict(node, w=dict(node["w"], **bad)))


def test_the_kernel_says_whether_a_function_has_a_loop():
    def looped(T):
        while True:
            pass

    for fn, loops in ((looped, True), (lambda T: torch.ones(T, T).tril().bool(), False)):
        proxy, session = proxy_for(fn, "08.causal_mask")
        try:
            assert session.resolve("learner_fn")["loops"] is loops
        finally:
            session.kill()


def test_a_thread_kernel_leaves_the_test_process_cpu_limit_as_it_found_it():
    before = resource.getrlimit(resource.RLIMIT_CPU)
    grade_through_proxy("08.causal_mask", lambda T: torch.ones(T, T).tril().bool())
    assert resource.getrlimit(resource.RLIMIT_CPU) == before
