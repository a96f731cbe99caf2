"""Trusted grading: verdicts computed where the learner's code cannot reach.

The task list, the points and the graded cells come from the released exercise set
(``exercises/NN_*.ipynb`` and the task registry), never from the submission: a graded cell that is missing
grades 0, one from another set is ignored, an edited one is replaced by the released one. The learner's
kernel (:mod:`kernel_side`, inside a :mod:`sandbox`) runs only the learner's own cells. At each graded
cell, the grader, in its own process, calls :func:`engine.run_task` with a :class:`RemoteFunction`: a
callable that sends each case's inputs over the :mod:`wire`, calls the learner's function in the kernel,
and brings back its outputs, the arguments after the call (in-place changes, ``requires_grad`` and
``.grad`` included) and, through autograd, the gradients. Nothing the learner's code writes, patches or
prints reaches the grader's process: what comes back is data, checked like any answer.

A cell that runs past its limit, crashes the kernel or breaks the wire is an *offender*: the sandbox is
destroyed, a fresh one re-runs the cells before it (without the offenders) and grading goes on.
"""

from __future__ import annotations

import contextlib
import inspect
import keyword
import re
import threading
import time
import warnings
from collections.abc import Mapping
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path

import nbformat
import torch

from .. import i18n
from . import engine, wire
from .engine import FAILED, NOT_ATTEMPTED, PASSED, Result
from .registry import get_task
from .sandbox import Limits, Pool, Sandbox, backend

CHECK_CALL = re.compile(r"""\bcheck\(\s*["']([\w.]+)["']\s*,\s*([A-Za-z_]\w*)""")
CHECK_LINE = re.compile(r"^\s*check\(.*$", re.M)
SET_PREFIX = re.compile(r"^(\d\d)_")
NOT_RUN = "not run"
RELEASE_DIR = Path(__file__).resolve().parents[2] / "exercises"
#: a submitted notebook larger than this is refused unread (the grader reads a notebook whole)
MAX_NOTEBOOK_MB = 64
#: what a hostile kernel can make the grader's reading of its messages raise, besides WireError (a
#: header nested deeper than the JSON parser's recursion limit, say): each is a broken wire
WIRE_FAULTS = (
    wire.WireError,
    RecursionError,
    ValueError,
    TypeError,
    OverflowError,
    MemoryError,
    RuntimeError,
)


class NotGradable(Exception):
    """The file cannot be graded (unreadable, not a notebook, not an exercise set, the wrong set)."""


# --------------------------------------------------------------------------------------------------
# The released exercise sets
# --------------------------------------------------------------------------------------------------


@dataclass
class GradedCell:
    task_id: str
    function: str
    cell_id: str
    source: str


@dataclass
class Release:
    set_id: str
    path: Path
    graded: list[GradedCell]
    cell_ids: set = field(default_factory=set)

    @property
    def max_points(self) -> int:
        return sum(get_task(g.task_id).points for g in self.graded)


def load_release(path: Path) -> Release:
    nb = nbformat.read(path, as_version=4)
    graded = []
    for cell in nb.cells:
        if cell.cell_type == "code" and "graded" in cell.metadata.get("tags", []):
            for task_id, function in CHECK_CALL.findall(cell.source):
                graded.append(GradedCell(task_id, function, cell.get("id", ""), cell.source))
    match = SET_PREFIX.match(path.name)
    set_id = match.group(1) if match else path.stem
    return Release(set_id, path, graded, {c.get("id") for c in nb.cells if c.get("id")})


@lru_cache(maxsize=8)
def releases(release_dir: str | None = None) -> dict[str, Release]:
    folder = Path(release_dir) if release_dir else RELEASE_DIR
    if not folder.is_dir():
        raise NotGradable(f"the released exercise sets are not at {folder}: pass --release DIR")
    found = {}
    for path in sorted(folder.glob("*.ipynb")):
        release = load_release(path)
        if release.graded:
            found[release.set_id] = release
    return found


def read_submission(path: Path):
    if not path.exists():
        raise NotGradable(f"no notebook at {path}")
    if not path.is_file():
        raise NotGradable(f"{path} is not a file")
    size = path.stat().st_size
    if size > MAX_NOTEBOOK_MB * 2**20:
        raise NotGradable(
            f"{path} is {size / 2**20:.0f} MB, more than an exercise notebook can be "
            f"({MAX_NOTEBOOK_MB} MB): clear its outputs and submit it again"
        )
    try:
        with (
            warnings.catch_warnings()
        ):  # nbformat's repairs (duplicate cell ids...) are not news for the grader
            warnings.simplefilter("ignore")
            return nbformat.read(path, as_version=4)
    except UnicodeDecodeError:
        raise NotGradable(f"{path} is not a notebook (not UTF-8 text)") from None
    except Exception as exc:  # JSON errors, nbformat validation
        first = str(exc).strip().splitlines()[0][:160] if str(exc).strip() else type(exc).__name__
        raise NotGradable(f"{path} is not a readable notebook ({first})") from None


def identify(nb, path: Path, known: dict[str, Release], set_id: str | None = None) -> Release:
    """The release a submission belongs to: by its cell ids, its graded calls and its file name."""
    called = {
        t.split(".")[0] for c in nb.cells if c.cell_type == "code" for t, _ in CHECK_CALL.findall(c.source)
    }
    ids = {c.get("id") for c in nb.cells if c.get("id")}
    prefix = SET_PREFIX.match(path.name)
    scores = {}
    for sid, release in known.items():
        scores[sid] = (
            2 * len(ids & release.cell_ids)
            + 3 * (sid in called)
            + (1 if prefix and prefix.group(1) == sid else 0)
        )
    best = max(scores, key=scores.get) if scores else None
    if set_id is not None:
        if set_id not in known:
            raise NotGradable(
                f"there is no released exercise set {set_id!r}; known sets: {', '.join(sorted(known))}"
            )
        if best is not None and scores[best] > scores[set_id] and scores[best] >= 3:
            raise NotGradable(f"{path} looks like exercise set {best}, not set {set_id} (wrong file?)")
        return known[set_id]
    if best is None or scores[best] == 0:
        raise NotGradable(
            f"{path} is not one of the book's exercise notebooks (no cell of a released set found)"
        )
    return known[best]


# --------------------------------------------------------------------------------------------------
# What runs: the learner's cells, with the graded cells taken from the release
# --------------------------------------------------------------------------------------------------


@dataclass
class Step:
    kind: str  # "cell" or "task"
    index: int
    source: str = ""
    graded: GradedCell | None = None


def plan(nb, release: Release) -> tuple[list[Step], list[GradedCell]]:
    """Steps in notebook order, and the released graded cells the submission lacks."""
    by_id = {g.cell_id: g for g in release.graded if g.cell_id}
    by_task = {g.task_id: g for g in release.graded}
    found: set[str] = set()
    steps: list[Step] = []
    for index, cell in enumerate(nb.cells):
        if cell.cell_type != "code":
            continue
        source = cell.source if isinstance(cell.source, str) else "".join(cell.source)
        graded = by_id.get(cell.get("id"))
        if graded is not None and graded.task_id not in found:
            found.add(graded.task_id)
            steps.append(Step("task", index, graded=graded))
            continue
        if graded is not None or "graded" in cell.metadata.get("tags", []):
            # a copy of a graded cell, or a graded cell of another set: nothing of it runs
            for task_id, _ in CHECK_CALL.findall(source):
                if task_id in by_task and task_id not in found:
                    found.add(task_id)
                    steps.append(Step("task", index, graded=by_task[task_id]))
            continue
        calls = [t for t, _ in CHECK_CALL.findall(source)]
        rest = CHECK_LINE.sub("", source) if calls else source
        if rest.strip():
            steps.append(Step("cell", index, rest))
        for task_id in calls:  # a graded cell re-created by hand (new id): the release's call stands
            if task_id in by_task and task_id not in found:
                found.add(task_id)
                steps.append(Step("task", index, graded=by_task[task_id]))
    missing = [g for g in release.graded if g.task_id not in found]
    return steps, missing


# --------------------------------------------------------------------------------------------------
# The learner's function, called from the grader
# --------------------------------------------------------------------------------------------------


def _signature(described) -> inspect.Signature | None:
    if not isinstance(described, list):
        return None
    try:
        params = []
        for item in described[:64]:
            name, kind, has_default = item
            if not isinstance(name, str) or not name.isidentifier() or keyword.iskeyword(name):
                return None
            kind = getattr(inspect.Parameter, str(kind), None)
            if not isinstance(kind, type(inspect.Parameter.POSITIONAL_ONLY)):
                return None
            default = (
                None
                if has_default is True and kind not in (kind.VAR_POSITIONAL, kind.VAR_KEYWORD)
                else inspect.Parameter.empty
            )
            params.append(inspect.Parameter(name, kind, default=default))
        return inspect.Signature(params)
    except (TypeError, ValueError):
        return None


class RemoteFunction:
    """The learner's function ``name`` in the sandbox, as a callable for :func:`engine.run_task`."""

    #: the engine hands watched arguments' operations to this process's guard only for local calls
    runs_elsewhere = True

    def __init__(self, session: Session, name: str, info: dict, task):
        self.session, self.task = session, task
        self.__name__ = self.__qualname__ = name
        self.__signature__ = _signature(info.get("sig"))
        self.forbid = engine.forbidden_names(task) if hasattr(engine, "forbidden_names") else []
        # whether the learner's function has a loop (the kernel says): a timeout's message depends on it
        self.has_loop = info.get("loops") if isinstance(info.get("loops"), bool) else None

    def __call__(self, *args, **kwargs):
        return self.session.call(self, args, kwargs)

    def __repr__(self) -> str:
        return f"<learner's function {self.__name__}>"


def _raw(t: torch.Tensor) -> torch.Tensor:
    return t.detach().reshape(-1).contiguous().view(torch.uint8) if t.numel() else t.detach().reshape(-1)


def _same_tensor(a: torch.Tensor, b: torch.Tensor) -> bool:
    return a.shape == b.shape and a.dtype == b.dtype and torch.equal(_raw(a), _raw(b))


def _sync(mine, after) -> None:
    """Copy what the learner's function changed in its arguments (in the kernel) into the grader's."""
    if isinstance(mine, torch.Tensor):
        if not isinstance(after, torch.Tensor):
            return
        if not _same_tensor(mine, after):
            with torch.no_grad():
                if mine.shape == after.shape and mine.dtype == after.dtype:
                    mine.copy_(after)
                else:
                    mine.data = after.detach()
        if (
            mine.is_leaf
            and mine.requires_grad != after.requires_grad
            and (mine.is_floating_point() or mine.is_complex())
        ):
            mine.requires_grad_(after.requires_grad)
        if after.grad is None and mine.grad is not None:
            mine.grad = None
        elif after.grad is not None and (mine.grad is None or not _same_tensor(mine.grad, after.grad)):
            if after.grad.shape == mine.shape and after.grad.dtype == mine.dtype:
                mine.grad = after.grad
        return
    if isinstance(mine, list):
        if isinstance(after, list) and len(after) == len(mine):
            for i, (m, a) in enumerate(zip(mine, after)):
                if isinstance(m, (torch.Tensor, list, dict, tuple)):
                    _sync(m, a)
                elif not callable(m) and type(m) is type(a) and m != a:
                    mine[i] = a
        elif isinstance(after, list):
            mine[:] = after
        return
    if isinstance(mine, dict):
        if isinstance(after, dict) and after.keys() == mine.keys():
            for k in mine:
                if isinstance(mine[k], (torch.Tensor, list, dict, tuple)):
                    _sync(mine[k], after[k])
                elif not callable(mine[k]) and type(mine[k]) is type(after[k]) and mine[k] != after[k]:
                    mine[k] = after[k]
        elif isinstance(after, dict):
            mine.clear()
            mine.update(after)
        return
    if isinstance(mine, tuple) and isinstance(after, tuple) and len(mine) == len(after):
        for m, a in zip(mine, after):
            _sync(m, a)


_CRASH = (
    "SystemExit",
    "the Python process that ran your code ended while it ran (os._exit(), a crash, or it ran out of memory)",
)


# --------------------------------------------------------------------------------------------------
# One submission
# --------------------------------------------------------------------------------------------------


@dataclass
class Timing:
    sandbox_start: float = 0.0  # bwrap and the Python interpreter, in the sandbox (from its own clock)
    torch_import: float = 0.0  # importing torch (and attnbook) in the sandbox
    kernel_wait: float = 0.0  # time the grader waited for a kernel (not hidden by starting it early)
    learner_cells: float = 0.0
    cases: float = 0.0
    restarts: int = 0
    total: float = 0.0

    def as_dict(self) -> dict:
        return {k: round(v, 3) if isinstance(v, float) else v for k, v in self.__dict__.items()}


class GiveUp(Exception):
    pass


class Session:
    """Grades one submission: one sandbox at a time, replaced after an offending cell."""

    def __init__(
        self,
        steps: list[Step],
        limits: Limits,
        pool: Pool | None = None,
        prefetch: bool = False,
        max_restarts: int = 4,
    ):
        self.steps, self.limits = steps, limits
        self.pool = pool or Pool(limits, spare=0)
        self.prefetch = prefetch
        self.max_restarts = max_restarts
        self.box: Sandbox | None = None
        self.done: list[Step] = []  # cells run, replayed in a fresh sandbox
        self.cell_status: dict[int, tuple[str, str]] = {}
        self.timing = Timing()
        self.callables: dict[int, object] = {}
        self._callable_ids: dict[int, int] = {}
        self._handles: dict[int, tuple[list, list]] = {}
        self._next = 0
        self.call_timeout = 10.0
        self.starts = 0
        self.deadline = time.monotonic() + limits.notebook_timeout  # the whole submission's budget

    @contextlib.contextmanager
    def watchdog(self, deadline: float):
        """Kill the sandbox if this request is not over 1 s after ``deadline``. The wire's deadline covers
        waiting for a reply, not sending: a kernel that stops reading (its receive loop patched) would
        leave the grader blocked in a write of a large message, a cell's source or a call's arguments."""
        box = self.box
        timer = threading.Timer(max(0.0, deadline - time.monotonic()) + 1.0, box.stop)
        timer.daemon = True
        timer.start()
        try:
            yield
        finally:
            timer.cancel()

    def check_budget(self) -> None:
        """Stop grading this submission once its wall-clock budget is spent (many slow cells, each under
        the cell limit, or many slow checks)."""
        if time.monotonic() >= self.deadline:
            self.kill()
            raise GiveUp(
                f"grading this notebook took longer than its budget of {self.limits.notebook_timeout:g} s "
                "(cells that are slow, or that never end); the rest was not graded"
            )

    # sandboxes
    def _handlers(self) -> dict:
        return {"callback": self._on_callback, "callback_backward": self._on_callback_backward}

    def alive(self) -> bool:
        return self.box is not None and self.box.alive and not self.box.peer.closed

    def kill(self) -> None:
        if self.box is not None:
            self.box.kill()

    def ensure_kernel(self) -> None:
        while not self.alive():
            if self.starts > self.max_restarts:
                raise GiveUp(f"the notebook stopped its kernel {self.starts} times; the rest was not graded")
            self.kill()
            start = time.perf_counter()
            self.box = self.pool.take(prefetch=self.prefetch)
            self.box.set_handlers(self._handlers())
            self.starts += 1
            if self.starts > 1:
                self.timing.restarts += 1
            try:
                info = self.box.wait_ready()
            except WIRE_FAULTS as exc:
                self.kill()
                raise GiveUp(f"the sandbox could not start a kernel ({exc})") from None
            finally:
                self.timing.kernel_wait += time.perf_counter() - start
            if self.starts == 1:
                self.timing.sandbox_start = max(0.0, info.get("t_start", 0) - self.box.started)
                self.timing.torch_import = max(0.0, info.get("t_torch", 0) - info.get("t_start", 0))
            replay, self.done = self.done, []
            for step in replay:
                if not self.run_cell(step):
                    break

    def run_cell(self, step: Step) -> bool:
        """Run a learner's cell; False when it was an offender (the sandbox is gone)."""
        self.check_budget()
        start = time.perf_counter()
        cell_deadline = time.monotonic() + self.limits.cell_timeout
        deadline = min(cell_deadline, self.deadline)
        try:
            with self.watchdog(deadline):
                reply, _ = self.box.peer.request(
                    {"op": "run", "code": step.source, "cpu": self.limits.cell_timeout}, deadline=deadline
                )
        except wire.PeerTimeout:
            self.kill()
            if time.monotonic() < cell_deadline:  # the notebook's budget ran out first
                self.check_budget()
            self.cell_status[step.index] = ("timeout", f"was stopped after {self.limits.cell_timeout:g} s")
            return False
        except WIRE_FAULTS:
            self.kill()
            if time.monotonic() >= deadline:  # stopped by the watchdog: a kernel that no longer read
                self.check_budget()
                self.cell_status[step.index] = (
                    "timeout",
                    f"was stopped after {self.limits.cell_timeout:g} s",
                )
                return False
            self.cell_status[step.index] = (
                "crash",
                "ended the kernel (a crash, os._exit(), or the memory or CPU-time limit)",
            )
            return False
        finally:
            self.timing.learner_cells += time.perf_counter() - start
        if reply.get("ok") is True:
            self.cell_status[step.index] = ("ok", "")
        else:
            self.cell_status[step.index] = (
                "error",
                f"{wire.short(reply.get('ename', 'an error'), 80)}: "
                f"{wire.short(reply.get('evalue', ''), 200)}".rstrip(": "),
            )
        self.done.append(step)
        return True

    # the grader's callables, called from the kernel
    def _callable_id(self, value):
        key = id(value)
        if key not in self._callable_ids:
            self._next += 1
            self._callable_ids[key] = self._next
            self.callables[self._next] = value
        return self._callable_ids[key]

    def _on_callback(self, peer, message, blob):
        fn = self.callables.get(message.get("cb"))
        if fn is None:
            raise wire.WireError("a call-back to an unknown function")
        decoder = wire.Decoder(blob, callables=self.callables.get)
        packed = decoder.decode(message.get("args"))
        if not (
            isinstance(packed, tuple)
            and len(packed) == 2
            and isinstance(packed[0], list)
            and isinstance(packed[1], dict)
        ):
            raise wire.WireError("malformed call-back arguments")
        grad = message.get("grad") is True
        inputs = [t for t in decoder.tensors if t.requires_grad]
        try:
            with torch.set_grad_enabled(grad):
                value = fn(*packed[0], **packed[1])
            encoder = wire.Encoder(callables=self._callable_id)
            node = encoder.encode(value)
        except Exception as exc:
            text = str(exc).strip().splitlines()[0] if str(exc).strip() else ""
            return {"status": "error", "type": type(exc).__name__, "text": wire.short(text, 600)}, b""
        self._next += 1
        self._handles[self._next] = (inputs, list(encoder.tensors))
        if len(self._handles) > 512:  # a backward pass needs only recent calls; memory stays bounded
            del self._handles[next(iter(self._handles))]
        return {"status": "ok", "out": node, "h": self._next}, encoder.blob()

    def _on_callback_backward(self, peer, message, blob):
        inputs, outputs = self._handles.get(message.get("h"), (None, None))
        if inputs is None:
            return {"status": "error", "text": "unknown call"}, b""
        try:
            grads = wire.Decoder(blob).decode(message.get("grads"))
            if not isinstance(grads, list):
                raise ValueError("malformed gradients")
            pairs = [
                (o, g)
                for o, g in zip(outputs, grads)
                if isinstance(g, torch.Tensor) and o.requires_grad and g.shape == o.shape
            ]
            result = [None] * len(inputs)
            if pairs and inputs:
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
            return {"status": "error", "text": wire.short(str(exc), 600)}, b""
        encoder = wire.Encoder()
        node = encoder.encode(result)
        return {"status": "ok", "grads": node}, encoder.blob()

    # the learner's functions, called from the grader
    def resolve(self, name: str) -> dict:
        deadline = time.monotonic() + self.limits.cell_timeout
        try:
            with self.watchdog(deadline):
                reply, _ = self.box.peer.request({"op": "resolve", "name": name}, deadline=deadline)
        except WIRE_FAULTS:
            self.kill()
            return {"dead": True}
        return reply

    def call(self, fn: RemoteFunction, args: tuple, kwargs: dict):
        if not self.alive():
            raise engine.LearnerError(*_CRASH, "", fn.__name__)
        encoder = wire.Encoder(callables=self._callable_id)
        args_node, kwargs_node = encoder.encode(list(args)), encoder.encode(dict(kwargs))
        grad = torch.is_grad_enabled()
        inputs = [t for t in encoder.tensors if t.requires_grad] if grad else []
        limit = fn.task.timeout_s + self.call_timeout  # the engine's own time limit comes first
        message = {
            "op": "call",
            "name": fn.__name__,
            "args": args_node,
            "kwargs": kwargs_node,
            "grad": grad,
            "forbid": fn.forbid,
            "cpu": limit + 5,
        }
        deadline = time.monotonic() + limit
        try:
            with self.watchdog(deadline):
                reply, blob = self.box.peer.request(message, encoder.blob(), deadline)
        except wire.PeerTimeout:
            self.kill()
            raise engine.LearnerTimeout() from None
        except WIRE_FAULTS:
            self.kill()
            if time.monotonic() >= deadline:  # stopped by the watchdog
                raise engine.LearnerTimeout() from None
            raise engine.LearnerError(*_CRASH, "", fn.__name__) from None
        except BaseException:  # the engine's time limit fired while we waited: the kernel is stuck
            self.kill()
            raise
        status = reply.get("status")
        if status == "forbidden":
            names = reply.get("names")
            raise engine.ForbiddenUse(
                [wire.short(n, 200) for n in names if isinstance(n, str)]
                if isinstance(names, list)
                else ["?"]
            )
        if status == "error":
            raise engine.LearnerError(
                wire.short(reply.get("type", "Exception"), 80),
                wire.short(reply.get("text", ""), 600),
                wire.short(reply.get("where", ""), 400),
                wire.short(reply.get("function", ""), 80),
            )
        if status == "unsendable":
            raise engine.LearnerError(
                "ValueError", "your function returned a value too large to check", "", fn.__name__
            )
        if status != "ok":
            self.kill()
            raise engine.LearnerError(*_CRASH, "", fn.__name__)
        try:
            decoder = wire.Decoder(blob, callables=self.callables.get)
            value = decoder.decode(reply.get("out"))
            outputs = list(decoder.tensors)
            after = decoder.decode(reply.get("after"))
        except WIRE_FAULTS:  # the kernel may be hostile now: it goes, and the answer is not read
            self.kill()
            raise engine.LearnerError(
                "ValueError",
                "your function returned a value the grader cannot read (too "
                "many items, nested too deeply, or malformed)",
                "",
                fn.__name__,
            ) from None
        if isinstance(after, tuple) and len(after) == 2:
            for mine, changed in zip(args, after[0]):
                _sync(mine, changed)
            _sync(kwargs, after[1])
        differentiable = [t.requires_grad for t in outputs]
        for t in outputs:
            t.requires_grad_(False)
        handle, box = reply.get("h"), self.box

        def backward(grad_outputs):
            if box is not self.box or not self.alive():
                raise RuntimeError("the kernel that ran your function is gone")
            encoder = wire.Encoder()
            node = encoder.encode(list(grad_outputs))
            deadline = time.monotonic() + fn.task.timeout_s + self.call_timeout
            try:
                with self.watchdog(deadline):
                    answer, data = box.peer.request(
                        {"op": "backward", "h": handle, "grads": node}, encoder.blob(), deadline
                    )
            except WIRE_FAULTS:
                self.kill()
                raise RuntimeError("the backward pass through your function did not finish") from None
            if answer.get("status") != "ok":
                raise RuntimeError(wire.short(answer.get("text", "the backward pass failed"), 600))
            return wire.decode_grads(wire.Decoder(data), answer.get("grads"), inputs)

        linked = wire.link(inputs, outputs, differentiable, backward)
        return wire.replace_tensors(value, linked, [0])


class _Dependencies(Mapping):
    """The learner's functions of earlier tasks that this task's function uses, for the engine's
    "task 3 uses your `f`, which fails task 2". Read only after a failure, outside any time limit: a
    kernel the failure destroyed (a time-out) is replaced first, so that the earlier function is judged
    on its own."""

    def __init__(self, session: Session, names: list):
        self.session, self.names = session, names
        self._proxies: dict | None = None

    def _load(self) -> dict:
        if self._proxies is None:
            self._proxies = {}
            if self.names:
                try:
                    self.session.ensure_kernel()
                except GiveUp:
                    return self._proxies
                for name, task in self.names:
                    info = self.session.resolve(name)
                    if info.get("exists") and info.get("callable"):
                        self._proxies[name] = RemoteFunction(self.session, name, info, task)
        return self._proxies

    def __getitem__(self, key):
        return self._load()[key]

    def __iter__(self):
        return iter(self._load())

    def __len__(self) -> int:
        return len(self._load())


# --------------------------------------------------------------------------------------------------
# Grading a submission
# --------------------------------------------------------------------------------------------------


def _entry(task, status: str, message: str, diagnosis: str) -> dict:
    return Result(
        task.id, i18n.translate(task.title), status, i18n.translate(message), 0, task.points, diagnosis
    ).as_dict()


def _not_defined(session: Session, steps: list[Step], step: Step, name: str) -> tuple[str, str]:
    definer = re.compile(rf"^\s*(def\s+{re.escape(name)}\s*\(|{re.escape(name)}\s*=)", re.M)
    for earlier in reversed([s for s in steps if s.kind == "cell" and s.index < step.index]):
        if definer.search(earlier.source):
            state, detail = session.cell_status.get(earlier.index, ("not run", ""))
            if state == "timeout":
                return (
                    f"`{name}` is not defined: the cell that defines it {detail} (a loop that never "
                    "ends?), so it never finished",
                    "cell_timeout",
                )
            if state == "crash":
                return f"`{name}` is not defined: the cell that defines it {detail}", "cell_crash"
            if state == "error":
                return f"`{name}` is not defined: the cell that defines it raised {detail}", "cell_error"
            break
    return (
        f"`{name}` is not defined when its graded cell runs: define it in a cell above the graded cell "
        "(keep the name the task gives)",
        "not_defined",
    )


def notebook_language(nb) -> str | None:
    """The language a notebook asks its grader to speak (``metadata.attnbook.language``, as the Korean
    exercises carry it); None when it names none, or one the grader does not speak."""
    meta = nb.metadata.get("attnbook", {}) if isinstance(nb.metadata, dict) else {}
    lang = meta.get("language") if isinstance(meta, dict) else None
    if not isinstance(lang, str) or i18n._normalise(lang) not in i18n.LANGUAGES:
        return None
    return i18n._normalise(lang)


def grade(
    path: Path,
    *,
    release_dir: str | None = None,
    set_id: str | None = None,
    only=None,
    limits: Limits | None = None,
    pool: Pool | None = None,
    prefetch: bool = False,
    language: str | None = None,
) -> dict:
    """Grade one submission; the report as a dict (see :mod:`attnbook.grading.cli`).

    The messages are in ``language`` when given, else in the notebook's (``metadata.attnbook.language``),
    else in the grader's default (:func:`attnbook.i18n.get_language`); a report in another language than
    English says which in ``"language"``."""
    start = time.perf_counter()
    nb = read_submission(path)
    with i18n.using(language or notebook_language(nb)):
        lang = i18n.get_language()
        report = _grade(
            nb,
            path,
            start,
            release_dir=release_dir,
            set_id=set_id,
            only=only,
            limits=limits,
            pool=pool,
            prefetch=prefetch,
        )
    if lang != "en":
        report["language"] = lang
    return report


def _grade(
    nb,
    path: Path,
    start: float,
    *,
    release_dir: str | None,
    set_id: str | None,
    only,
    limits: Limits | None,
    pool: Pool | None,
    prefetch: bool,
) -> dict:
    limits = limits or Limits()
    release = identify(nb, path, releases(release_dir), set_id)
    for g in release.graded:
        try:
            get_task(g.task_id)
        except KeyError:
            raise NotGradable(
                f"the released set {release.set_id} ({release.path.name}) has a graded cell for "
                f"{g.task_id}, which the grader does not know: regenerate the exercises"
            ) from None
    selected = [g for g in release.graded if only is None or g.task_id in only]
    if only is not None and not selected:
        raise NotGradable(
            f"set {release.set_id} has no task {', '.join(sorted(only))}; its tasks: "
            f"{', '.join(g.task_id for g in release.graded)}"
        )
    steps, missing = plan(nb, release)
    wanted = {g.task_id for g in selected}
    last = max(
        (i for i, s in enumerate(steps) if s.kind == "task" and s.graded.task_id in wanted), default=-1
    )
    steps_run = steps[: last + 1]
    session = Session(steps_run, limits, pool, prefetch)
    results: dict[str, dict] = {}
    try:
        for step in steps_run:
            if step.kind == "cell":
                if not session.alive():
                    session.ensure_kernel()
                session.run_cell(step)
                continue
            graded = step.graded
            if graded.task_id not in wanted:
                continue
            task = get_task(graded.task_id)
            session.check_budget()
            session.ensure_kernel()
            info = session.resolve(graded.function)
            if info.get("dead"):
                results[task.id] = _entry(
                    task, FAILED, "looking up your function ended the kernel", "cell_crash"
                )
                continue
            if not info.get("exists"):
                message, diagnosis = _not_defined(session, steps_run, step, graded.function)
                results[task.id] = _entry(task, FAILED, message, diagnosis)
                continue
            if info.get("none"):
                fn = None
            elif info.get("ellipsis"):
                fn = Ellipsis
            elif info.get("callable"):
                fn = RemoteFunction(session, graded.function, info, task)
            else:
                fn = wire.opaque(info.get("type", "object"))
            refs = set(info.get("refs") or [])
            names = []
            for other in release.graded:
                if other.task_id == task.id:
                    break
                if other.function in refs and other.function != graded.function:
                    names.append((other.function, get_task(other.task_id)))
            dependencies = _Dependencies(session, names)
            case_start = time.perf_counter()
            try:
                result = engine.run_task(task, fn, dependencies=dependencies)
            finally:
                session.timing.cases += time.perf_counter() - case_start
            results[task.id] = result.as_dict()
    except GiveUp as stop:
        reason = str(stop)
    else:
        reason = ""
    finally:
        session.kill()
    tasks = []
    for g in selected:
        task = get_task(g.task_id)
        if g in missing:
            tasks.append(
                _entry(
                    task,
                    FAILED,
                    "the graded cell of this task is missing from the notebook (deleted?): "
                    f'copy it back from the released exercise, `check("{g.task_id}", {g.function})`',
                    "graded_cell_missing",
                )
            )
        elif g.task_id in results:
            entry = results[g.task_id]
            entry["points"] = task.points if entry.get("status") == PASSED else 0  # points from the registry
            entry["max_points"] = task.points
            tasks.append(entry)
        else:
            tasks.append(_entry(task, NOT_RUN, reason or "its graded cell was not reached", "not_run"))
    session.timing.total = time.perf_counter() - start
    return {
        "notebook": str(path),
        "set": release.set_id,
        "tasks": tasks,
        "points": sum(t["points"] for t in tasks),
        "max_points": sum(get_task(g.task_id).points for g in selected),
        "stopped_cells": [
            {"cell": index, "status": state, "detail": detail}
            for index, (state, detail) in sorted(session.cell_status.items())
            if state in ("timeout", "crash")
        ],
        "isolation": backend(),
        "timing": session.timing.as_dict(),
    }


__all__ = [
    "NOT_ATTEMPTED",
    "NOT_RUN",
    "NotGradable",
    "RemoteFunction",
    "Session",
    "grade",
    "plan",
    "releases",
]
