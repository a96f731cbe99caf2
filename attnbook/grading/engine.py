"""The engine behind every graded check.

A :class:`Task` describes one exercise: a float64 reference implementation, deterministic cases, the
known misconceptions (wrong implementations with the message that names each mistake) and property
checks. :func:`run_task` tries a learner's function on every case and returns a :class:`Result` whose
message is written for the learner: it never contains a traceback from the grader's insides.

Bad input is handled uniformly: the stub's ``NotImplementedError`` is "not attempted yet"; an exception
from the learner's code is one line naming it and the line of their code; a function that runs too long
is stopped; ``None``, the wrong type, shape or dtype, NaN, mutated inputs and broken autograd each get a
message that says what was expected.
"""

from __future__ import annotations

import contextlib
import copy
import inspect
import math
import os
import signal
import sysconfig
import threading
import traceback
from dataclasses import dataclass, field
from typing import Any, Callable, Sequence

import numpy as np
import torch

PASSED, FAILED, NOT_ATTEMPTED = "passed", "failed", "not attempted yet"
_PACKAGE_DIR = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


@dataclass
class Case:
    """One input on which a learner's function is tried.

    ``dims`` names the sizes used (``{"B": 2, "T_q": 3, ...}``) so that shape messages can say
    ``(B, T_q, T_k)`` instead of bare numbers; ``note`` says in words what is special about the case.
    """

    name: str
    args: tuple
    kwargs: dict = field(default_factory=dict)
    dims: dict = field(default_factory=dict)
    note: str = ""

    def describe(self) -> str:
        return f"case '{self.name}'" + (f" ({self.note})" if self.note else "")


@dataclass
class Misconception:
    """A known-wrong implementation and the message that names the mistake."""

    key: str
    message: str
    fn: Callable


@dataclass
class Task:
    """One graded exercise. See the module docstring."""

    id: str
    title: str
    reference: Callable
    cases: Callable[[], list[Case]]
    points: int = 1
    misconceptions: Sequence[Misconception] = ()
    #: callables ``(case, outputs) -> message or None``; consulted when values are wrong
    properties: Sequence[Callable] = ()
    #: names of the returned values, for messages (one name = a single return value)
    output_names: tuple = ("result",)
    atol: float = 1e-6
    rtol: float = 1e-6
    #: check that gradients flow through the learner's function like through the reference
    check_grad: bool = True
    timeout_s: float = 5.0
    #: one sentence shown when the values are wrong and no misconception matched
    hint: str = ""


@dataclass
class Result:
    task_id: str
    title: str
    status: str
    message: str
    points: int
    max_points: int
    #: key of the diagnosed misconception or failure kind (for tests and statistics), e.g. "not_attempted"
    diagnosis: str = ""

    @property
    def passed(self) -> bool:
        return self.status == PASSED

    def as_dict(self) -> dict:
        return {
            "task": self.task_id,
            "title": self.title,
            "status": self.status,
            "message": self.message,
            "points": self.points,
            "max_points": self.max_points,
            "diagnosis": self.diagnosis,
        }


class Fail(Exception):
    """Raised inside the engine to stop at the first problem, with a learner-facing message."""

    def __init__(self, message: str, diagnosis: str):
        super().__init__(message)
        self.message = message
        self.diagnosis = diagnosis


class LearnerTimeout(BaseException):
    """Raised into a learner's function when it runs past the time limit (BaseException, so that a
    learner's ``except Exception`` cannot swallow it)."""


@contextlib.contextmanager
def time_limit(seconds: float):
    """Stop the body after ``seconds`` with :class:`LearnerTimeout` (main thread, POSIX only; elsewhere
    the body runs without a limit)."""
    usable = hasattr(signal, "setitimer") and threading.current_thread() is threading.main_thread()
    if not usable:
        yield
        return

    def _handler(signum, frame):
        raise LearnerTimeout()

    previous = signal.signal(signal.SIGALRM, _handler)
    signal.setitimer(signal.ITIMER_REAL, seconds)
    try:
        yield
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, previous)


# --------------------------------------------------------------------------------------------------
# Values: copying, comparing, describing
# --------------------------------------------------------------------------------------------------


def clone(value):
    """Deep copy of a case's inputs (tensors cloned, modules deep-copied)."""
    if isinstance(value, torch.Tensor):
        return value.detach().clone()
    if isinstance(value, np.ndarray):
        return value.copy()
    if isinstance(value, (list, tuple)):
        return type(value)(clone(v) for v in value)
    if isinstance(value, dict):
        return {k: clone(v) for k, v in value.items()}
    return copy.deepcopy(value)


def same_input(a, b) -> bool:
    """True when the input ``a`` (after a call) still equals its saved copy ``b``."""
    if isinstance(a, torch.Tensor):
        return isinstance(b, torch.Tensor) and a.shape == b.shape and torch.equal(a, b)
    if isinstance(a, np.ndarray):
        return isinstance(b, np.ndarray) and a.shape == b.shape and np.array_equal(a, b)
    if isinstance(a, torch.nn.Module):
        sa, sb = a.state_dict(), b.state_dict()
        return sa.keys() == sb.keys() and all(torch.equal(sa[k], sb[k]) for k in sa)
    if isinstance(a, (list, tuple)):
        return len(a) == len(b) and all(same_input(x, y) for x, y in zip(a, b))
    if isinstance(a, dict):
        return a.keys() == b.keys() and all(same_input(a[k], b[k]) for k in a)
    try:
        return bool(a == b)
    except Exception:
        return True


def type_name(value) -> str:
    if value is None:
        return "None"
    if isinstance(value, torch.Tensor):
        return f"torch.Tensor of shape {tuple(value.shape)}"
    if isinstance(value, np.ndarray):
        return f"numpy array of shape {value.shape}"
    return type(value).__name__


def shape_text(shape, dims: dict) -> str:
    """``(2, 3, 5)`` with dims ``{"B": 2, "T_q": 3, "T_k": 5}`` -> ``(B=2, T_q=3, T_k=5)``."""
    names = {}
    for name, size in dims.items():
        names.setdefault(size, []).append(name)
    parts = []
    for size in shape:
        candidates = names.get(size, [])
        parts.append(f"{candidates[0]}={size}" if len(candidates) == 1 else str(size))
    return "(" + ", ".join(parts) + ("," if len(parts) == 1 else "") + ")"


def as_outputs(value, n: int) -> tuple:
    """The learner's return value as a tuple of ``n`` outputs (validated elsewhere)."""
    if n == 1:
        return (value,)
    return tuple(value)


def close(a, b, atol: float, rtol: float, equal_nan: bool = False) -> bool:
    """Tolerant equality of two outputs of the same kind (tensors, arrays, numbers, nested lists)."""
    if b is None:
        return a is None
    if isinstance(b, torch.Tensor):
        if not isinstance(a, torch.Tensor) or a.shape != b.shape:
            return False
        return bool(
            torch.allclose(a.detach().double(), b.detach().double(), atol=atol, rtol=rtol, equal_nan=equal_nan)
        )
    if isinstance(b, np.ndarray):
        a = np.asarray(a)
        return a.shape == b.shape and bool(np.allclose(a, b, atol=atol, rtol=rtol, equal_nan=equal_nan))
    if isinstance(b, (list, tuple)):
        return (
            isinstance(a, (list, tuple))
            and len(a) == len(b)
            and all(close(x, y, atol, rtol, equal_nan) for x, y in zip(a, b))
        )
    if isinstance(b, (bool, np.bool_)):
        return a is b or a == b
    if isinstance(b, (int, float, np.integer, np.floating)):
        try:
            a = float(a)
        except (TypeError, ValueError):
            return False
        return math.isclose(a, float(b), rel_tol=rtol, abs_tol=atol) or (
            equal_nan and math.isnan(a) and math.isnan(float(b))
        )
    try:
        return bool(a == b)
    except Exception:  # e.g. an array compared with a scalar: not equal, and no crash
        return False


def _rounded(value):
    """A short, rounded rendering of a learner's number or list, for messages."""
    if isinstance(value, (list, tuple)):
        inner = ", ".join(str(_rounded(v)) for v in value[:12])
        return f"[{inner}{', ...' if len(value) > 12 else ''}]"
    if isinstance(value, (float, np.floating)):
        return f"{float(value):.4g}"
    if isinstance(value, torch.Tensor) and value.numel() == 1:
        return f"{float(value):.4g}"
    return repr(value) if len(repr(value)) <= 80 else repr(value)[:77] + "..."


def first_difference(got: torch.Tensor, expected: torch.Tensor) -> str:
    diff = (got.detach().double() - expected.detach().double()).abs()
    diff = torch.where(torch.isnan(diff), torch.full_like(diff, float("inf")), diff)
    index = tuple(int(i) for i in np.unravel_index(int(diff.argmax()), tuple(diff.shape))) if diff.dim() else ()
    where = f" at index {index}" if index else ""
    return (
        f"first big difference{where}: expected {float(expected[index]):.4f}, got {float(got[index]):.4f}"
    )


def _library_dirs() -> tuple[str, ...]:
    paths = sysconfig.get_paths()
    return tuple({os.path.realpath(paths[key]) for key in ("stdlib", "platstdlib", "purelib", "platlib") if key in paths})


def learner_line(exc: BaseException) -> str:
    """' (line 7: `return x @ y`)' for the innermost frame of the learner's own code, or ''.

    Frames of attnbook, of installed libraries (torch, numpy) and of the standard library are skipped."""
    skip = (_PACKAGE_DIR,) + _library_dirs()
    frames = [f for f in traceback.extract_tb(exc.__traceback__)
              if not os.path.realpath(f.filename).startswith(skip)]
    if not frames:
        return ""
    frame = frames[-1]
    code = f": `{frame.line.strip()}`" if frame.line else ""
    return f" (line {frame.lineno}{code})"


# --------------------------------------------------------------------------------------------------
# Running a task
# --------------------------------------------------------------------------------------------------


def _call(task: Task, fn: Callable, case: Case, args: tuple, kwargs: dict):
    try:
        with time_limit(task.timeout_s):
            return fn(*args, **kwargs)
    except NotImplementedError:
        raise Fail(
            "not attempted yet: replace `raise NotImplementedError()` with your code, run that cell, "
            "then run this one again.",
            "not_attempted",
        )
    except LearnerTimeout:
        raise Fail(
            f"your function was stopped after {task.timeout_s:g} s on {case.describe()} without "
            "returning: is there a loop that never ends (a `while` whose condition never changes, or a "
            "decoding loop without a stop)?",
            "timeout",
        )
    except Fail:
        raise
    except Exception as exc:  # the learner's own error, reported in one line
        text = str(exc).strip().splitlines()[0] if str(exc).strip() else ""
        raise Fail(
            f"your function raised {type(exc).__name__}{': ' + text if text else ''}{learner_line(exc)} "
            f"on {case.describe()}.",
            "raised",
        )


def _check_types(task: Task, case: Case, value, expected: tuple) -> tuple:
    n = len(expected)
    if value is None:
        raise Fail("your function returned None: did you forget the `return` statement?", "returned_none")
    if n > 1:
        if not isinstance(value, (tuple, list)) or len(value) != n:
            raise Fail(
                f"your function should return {n} values ({', '.join(task.output_names)}) as a tuple, "
                f"but returned {type_name(value)}.",
                "wrong_type",
            )
    outputs = as_outputs(value, n)
    for name, got, exp in zip(task.output_names, outputs, expected):
        label = "your function" if n == 1 else f"`{name}`"
        if isinstance(exp, torch.Tensor):
            if got is None:
                raise Fail(f"{label} is None: did you forget to return it?", "returned_none")
            if isinstance(got, np.ndarray):
                raise Fail(
                    f"{label} returned a NumPy array; this task expects a torch.Tensor: use torch "
                    "operations (torch.exp, torch.softmax, @) instead of NumPy ones.",
                    "wrong_type",
                )
            if not isinstance(got, torch.Tensor):
                raise Fail(
                    f"{label} returned {type_name(got)}; this task expects a torch.Tensor "
                    f"(build it with torch operations such as torch.stack rather than a Python list).",
                    "wrong_type",
                )
            if got.dtype != exp.dtype:
                hint = (" (a new tensor made without dtype=... is float32)"
                        if got.dtype == torch.float32 and exp.dtype == torch.float64 else "")
                raise Fail(
                    f"{label} returned dtype {got.dtype} but this task expects {exp.dtype}{hint}.",
                    "wrong_dtype",
                )
        elif isinstance(exp, (float, int)) and not isinstance(exp, bool):
            ok = isinstance(got, (int, float, np.integer, np.floating)) or (
                isinstance(got, torch.Tensor) and got.numel() == 1
            )
            if not ok:
                raise Fail(f"{label} returned {type_name(got)}; this task expects a number.", "wrong_type")
        elif isinstance(exp, list) and not isinstance(got, (list, tuple)):
            raise Fail(f"{label} returned {type_name(got)}; this task expects a list.", "wrong_type")
    return outputs


def _diagnose(task: Task, case: Case, outputs: tuple, properties: bool = True) -> None:
    """Called when outputs are wrong: name the misconception if one matches, else a property message.

    Properties assume outputs of the right shape, so they are skipped (``properties=False``) when the
    shape is already wrong."""
    n = len(outputs)
    for m in task.misconceptions:
        try:
            with time_limit(task.timeout_s):
                wrong = as_outputs(m.fn(*clone(case.args), **clone(case.kwargs)), n)
        except (Exception, LearnerTimeout):
            continue
        if all(close(g, w, task.atol, task.rtol, equal_nan=True) for g, w in zip(outputs, wrong)):
            raise Fail(f"{m.message}. Seen on {case.describe()}.", m.key)
    for prop in task.properties if properties else ():
        message = prop(case, outputs)
        if message:
            raise Fail(f"{message}. Seen on {case.describe()}.", getattr(prop, "key", prop.__name__))


def _check_values(task: Task, case: Case, outputs: tuple, expected: tuple) -> None:
    for name, got, exp in zip(task.output_names, outputs, expected):
        label = "your result" if len(expected) == 1 else f"`{name}`"
        if isinstance(exp, torch.Tensor) and got.shape != exp.shape:
            _diagnose(task, case, outputs, properties=False)
            if got.dim() >= 2 and tuple(got.shape[:-2]) + (got.shape[-1], got.shape[-2]) == tuple(exp.shape):
                raise Fail(
                    f"{label} has shape {shape_text(got.shape, case.dims)} but should have shape "
                    f"{shape_text(exp.shape, case.dims)}: the last two axes are swapped (transposed).",
                    "transposed",
                )
            raise Fail(
                f"{label} has shape {shape_text(got.shape, case.dims)} but should have shape "
                f"{shape_text(exp.shape, case.dims)}. Seen on {case.describe()}.",
                "wrong_shape",
            )
    for name, got, exp in zip(task.output_names, outputs, expected):
        # NaN matches NaN only where the reference itself is NaN (a NaN where a number is due still fails).
        if close(got, exp, task.atol, task.rtol, equal_nan=True):
            continue
        _diagnose(task, case, outputs)
        label = "your result" if len(expected) == 1 else f"`{name}`"
        if isinstance(exp, torch.Tensor):
            if not torch.isfinite(got).all() and torch.isfinite(exp).all():
                raise Fail(
                    f"{label} contains NaN or inf on {case.describe()}; the expected values are finite. "
                    "Large scores overflow exp(): subtract the maximum first.",
                    "not_finite",
                )
            detail = first_difference(got, exp)
        else:  # numbers and lists (hand tasks): never reveal the expected answer
            detail = f"your answer {_rounded(got)} is not what the check computes"
            if isinstance(exp, list) and isinstance(got, (list, tuple)) and len(got) == len(exp):
                index = next(i for i, (g, e) in enumerate(zip(got, exp))
                             if not close(g, e, task.atol, task.rtol, equal_nan=True))
                should = "; it should be None" if exp[index] is None else ""
                detail = f"item {index} of your answer, {_rounded(got[index])}, is not what the check computes{should}"
        hint = f" {task.hint}" if task.hint else ""
        raise Fail(f"{label} is wrong on {case.describe()}: {detail}.{hint}", "wrong_values")


def _float_tensors(args) -> list[torch.Tensor]:
    found = []
    for a in args:
        if isinstance(a, torch.Tensor) and a.is_floating_point():
            found.append(a)
        elif isinstance(a, (list, tuple)):
            found.extend(_float_tensors(a))
    return found


def _check_grad(task: Task, fn: Callable, case: Case) -> None:
    """The learner's function must let gradients flow exactly like the reference."""
    ref_args, learner_args = clone(case.args), clone(case.args)
    ref_leaves, learner_leaves = _float_tensors(ref_args), _float_tensors(learner_args)
    for t in ref_leaves + learner_leaves:
        t.requires_grad_(True)
    expected = as_outputs(task.reference(*ref_args, **clone(case.kwargs)), len(task.output_names))
    got = as_outputs(_call(task, fn, case, learner_args, clone(case.kwargs)), len(task.output_names))
    generator = torch.Generator().manual_seed(0)
    ref_loss, learner_loss = 0.0, 0.0
    for g, e in zip(got, expected):
        if not isinstance(e, torch.Tensor) or not e.requires_grad:
            continue
        if not isinstance(g, torch.Tensor) or not g.requires_grad:
            raise Fail(
                "your result is cut off from autograd (no gradient can flow back to the inputs): avoid "
                ".item(), .numpy(), .detach(), .data and building new tensors with torch.tensor(...).",
                "breaks_autograd",
            )
        weight = torch.randn(e.shape, generator=generator, dtype=e.dtype)
        ref_loss = ref_loss + (e * weight).sum()
        learner_loss = learner_loss + (g * weight).sum()
    if isinstance(ref_loss, float):
        return
    ref_grads = torch.autograd.grad(ref_loss, ref_leaves, allow_unused=True)
    try:
        learner_grads = torch.autograd.grad(learner_loss, learner_leaves, allow_unused=True)
    except RuntimeError as exc:
        raise Fail(
            f"backpropagating through your function fails ({str(exc).splitlines()[0]}): an in-place "
            "operation (such as `x += ...` or `.masked_fill_`) changed a tensor autograd needed.",
            "breaks_autograd",
        )
    for r, g in zip(ref_grads, learner_grads):
        r = torch.zeros(()) if r is None else r
        g = torch.zeros(()) if g is None else g
        if not torch.allclose(r.double(), g.double(), atol=1e-5, rtol=1e-4):
            raise Fail(
                "your values are right but the gradients that flow back through your function are not: "
                "part of the computation is detached from autograd (.detach(), .data, .item() or a "
                "tensor rebuilt with torch.tensor).",
                "breaks_autograd",
            )


def run_task(task: Task, fn: Any) -> Result:
    """Try ``fn`` on every case of ``task``; return the learner-facing :class:`Result`."""

    def result(status: str, message: str, diagnosis: str = "") -> Result:
        points = task.points if status == PASSED else 0
        return Result(task.id, task.title, status, message, points, task.points, diagnosis)

    if fn is None or fn is Ellipsis:
        return result(NOT_ATTEMPTED, "not attempted yet: write the function, then run this cell.", "not_attempted")
    if not callable(fn):
        return result(
            FAILED,
            f"check() needs your function itself (its name, without parentheses), not {type_name(fn)}.",
            "not_callable",
        )
    try:
        expected_names = list(inspect.signature(task.reference).parameters)
        try:
            learner_params = inspect.signature(fn).parameters
            positional = [
                p for p in learner_params.values() if p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD)
            ]
            required = [p for p in positional if p.default is p.empty]
            varargs = any(p.kind == p.VAR_POSITIONAL for p in learner_params.values())
            # Extra optional parameters (a `mask=None`, say) are fine; the task's arguments must fit.
            fits = len(required) <= len(expected_names) and (varargs or len(positional) >= len(expected_names))
            if not fits:
                raise Fail(
                    f"your function takes {len(positional)} argument(s) but the task's signature is "
                    f"({', '.join(expected_names)}): keep the signature given in the task.",
                    "wrong_signature",
                )
        except (TypeError, ValueError):
            pass
        cases = task.cases()
        for case in cases:
            args, kwargs = clone(case.args), clone(case.kwargs)
            value = _call(task, fn, case, args, kwargs)
            for name, before, after in zip(expected_names, case.args, args):
                if not same_input(after, before):
                    hint = ("work on new tensors (x = x - m rather than x -= m; masked_fill rather than "
                            "masked_fill_)" if isinstance(before, (torch.Tensor, np.ndarray))
                            else "build a new list or value instead of changing this one (no .append, "
                            ".sort, or item assignment on it)")
                    raise Fail(
                        f"your function changed its input `{name}` in place on {case.describe()}: {hint}.",
                        "mutates_input",
                    )
            expected = as_outputs(task.reference(*clone(case.args), **clone(case.kwargs)), len(task.output_names))
            outputs = _check_types(task, case, value, expected)
            _check_values(task, case, outputs, expected)
        if task.check_grad and cases:
            _check_grad(task, fn, cases[0])
    except Fail as failure:
        status = NOT_ATTEMPTED if failure.diagnosis == "not_attempted" else FAILED
        return result(status, failure.message, failure.diagnosis)
    except Exception as exc:  # the checker itself could not handle what it got: say so, no traceback
        return result(
            FAILED,
            f"the checker could not handle your result ({type(exc).__name__}: "
            f"{str(exc).strip().splitlines()[0] if str(exc).strip() else 'no detail'}); check its type and shape "
            "against the task text.",
            "unhandled_result",
        )
    return result(PASSED, f"passed ({len(cases)} case{'s' if len(cases) != 1 else ''})")
