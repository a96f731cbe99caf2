"""The engine behind every graded check.

A :class:`Task` describes one exercise: a float64 reference implementation, deterministic cases, the
known misconceptions (wrong implementations with the message that names each mistake) and property
checks. :func:`run_task` tries a learner's function on every case and returns a :class:`Result` whose
message is written for the learner: it never contains a traceback from the grader's insides, nor the
code of the fix (that is the second tier, :attr:`Result.hints`, shown by ``hint(...)`` in a notebook).

Bad input is handled uniformly: the stub's ``NotImplementedError`` is "not attempted yet"; an exception
from the learner's code is one line in the book's words (:func:`translate_error`) naming the function and
the line of their code; a function that runs too long is stopped; ``None``, the wrong type, shape or
dtype, NaN, mutated inputs (values or autograd state) and broken autograd (checked on every case, through
tensors inside lists, tuples and dicts) each get a message that says what was expected.

No free points (:class:`ForbiddenCallGuard`): while the learner's function runs, a profiler records
whether it entered the grader's own code (every function of ``attnbook.grading.tasks``: references,
misconceptions, helpers) or the book's implementation of the task's step (``Task.forbidden``); if it did,
the task earns 0 and the message says why. What is *not* caught: code copied as text (a pasted reference
or chapter cell runs as the learner's own code; ``tests/test_free_points.py`` keeps chapter code from
being a copy of an answer), answers computed before the function runs (a lookup table filled outside it),
work done in another thread or process, and C functions (PyTorch's own ``F.scaled_dot_product_attention``
is a valid answer, not a shortcut).

The trusted grader (``cli.py``) may call :func:`run_task` with a proxy callable that runs the learner's
function in another process; the proxy reports the learner's exception as :class:`LearnerError`, a time
out as :class:`LearnerTimeout` and forbidden calls seen there as :class:`ForbiddenUse`; the messages are
the same as for a local function.
"""

from __future__ import annotations

import contextlib
import copy
import ctypes
import dis
import functools
import importlib
import inspect
import math
import os
import re
import signal
import sys
import sysconfig
import threading
import traceback
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
from torch.utils._python_dispatch import (
    TorchDispatchMode,
    _get_current_dispatch_mode_stack,
    _pop_mode,
    _push_mode,
)

from ..i18n import translate

PASSED, FAILED, NOT_ATTEMPTED = "passed", "failed", "not attempted yet"
_PACKAGE_DIR = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

# The functions the checks compare with, as they were when the grader was imported: in a learner's kernel a
# cell may replace ``torch.allclose`` (say) by a function that always says yes; the checks keep using these.
# Results are compared as plain tensors (:func:`plain`), so a tensor subclass that answers comparisons its
# own way is not asked either.
_allclose, _isclose, _equal = torch.allclose, torch.isclose, torch.equal
_isfinite, _isnan, _where, _full_like = torch.isfinite, torch.isnan, torch.where, torch.full_like
_autograd_grad = torch.autograd.grad
_num_isclose, _num_isnan = math.isclose, math.isnan
_np_allclose, _np_array_equal = np.allclose, np.array_equal
_AS_SUBCLASS = torch.Tensor.as_subclass
_NO_SUBCLASS = torch._C.DisableTorchFunctionSubclass


def plain(value, depth: int = 0):
    """``value`` with every tensor in it (through tuples and lists) a plain ``torch.Tensor``: the same data
    and autograd graph, without a subclass's behaviour. Plain tensors are returned as they are."""
    if isinstance(value, torch.Tensor):
        if type(value) is torch.Tensor:
            return value
        with _NO_SUBCLASS():
            return _AS_SUBCLASS(value, torch.Tensor)
    if depth < 6 and isinstance(value, (tuple, list)):
        items = [plain(v, depth + 1) for v in value]
        if type(value) in (tuple, list) and all(a is b for a, b in zip(items, value)):
            return value
        return tuple(items) if isinstance(value, tuple) else items
    return value


#: qualified-name patterns forbidden in every task: all of the grader's task code (references,
#: misconceptions, case builders and their helpers)
ALWAYS_FORBIDDEN = ("attnbook.grading.tasks.*:*",)


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
    """A known-wrong implementation and the message that names the mistake.

    ``message`` is the first tier: it names the mistake, never the code of the fix. ``hint`` is the
    optional second tier (shown by ``hint(task_id)`` or on a second failure in a row): it may show how."""

    key: str
    message: str
    fn: Callable
    hint: str = ""


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
    #: callables ``(case, failure, fn) -> Fail or None``: this task's own words for a failure that the engine
    #: words generically (an exception whose likely cause this task knows, say); consulted in order when a
    #: case fails (``fn``: the learner's callable, a proxy too; ``failure.error``: what the code raised)
    rewords: Sequence[Callable] = ()
    #: names of the returned values, for messages (one name = a single return value)
    output_names: tuple = ("result",)
    #: for each returned value, the names of its axes (``(("B", "T_out"), ("B", "T_out", "N"))``), for shape
    #: messages: needed where an output has a size that is not one of the case's ``dims`` (it depends on the
    #: answer), so that a size is not named after another axis that happens to be as long
    output_axes: tuple = ()
    atol: float = 1e-6
    rtol: float = 1e-6
    #: check that gradients flow through the learner's function like through the reference (every case,
    #: through every floating tensor of the arguments, inside lists, tuples and dicts too)
    check_grad: bool = True
    timeout_s: float = 5.0
    #: second tier: how to do it (may contain code); shown by ``hint(task_id)``, never in the first message
    hint: str = ""
    #: further tiers of hints, after ``hint``
    hints: tuple = ()
    #: the name the task text gives the learner's function; defaults to the id's suffix
    function_name: str = ""
    #: ``"module:qualname"`` of the book's own implementations of this task's step; calling one while the
    #: graded function runs earns 0 (a class name covers its methods; ``"module:*"`` a whole module)
    forbidden: tuple = ()
    #: a by-hand task (the answer is numbers, not a function of tensors); ``None``: guessed from the id
    hand: bool | None = None
    #: what each number of a by-hand answer is, for messages (``"one score per source word"``)
    answer_words: str = ""
    #: an answer that takes the shortcut through ``forbidden[0]`` with this task's signature (for
    #: ``tests/test_free_points.py``); ``None`` when ``forbidden`` is empty
    shortcut_example: Callable | None = None

    def __post_init__(self):
        if not self.function_name:
            self.function_name = self.id.split(".", 1)[-1]
        if self.hand is None:
            self.hand = "hand" in self.id.split(".", 1)[-1]

    @property
    def set_id(self) -> str:
        return self.id.split(".", 1)[0]


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
    #: second and later tiers of help for this failure (may contain code), in order
    hints: tuple = ()

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

    #: ``(type_name, text, where, function)`` when the learner's code raised (see :func:`_raised`), for a
    #: task's ``rewords``
    error: tuple | None = None

    def __init__(self, message: str, diagnosis: str, hint: str = ""):
        super().__init__(message)
        self.message = message
        self.diagnosis = diagnosis
        self.hint = hint


class LearnerTimeout(BaseException):
    """Raised into a learner's function when it runs past the time limit (BaseException, so that a
    learner's ``except Exception`` cannot swallow it). A proxy callable may raise it too."""


class LearnerError(Exception):
    """An exception of the learner's code, reported by a proxy that ran it elsewhere.

    ``type_name``: the exception's class name (``"RuntimeError"``); ``text``: its message; ``where``: the
    learner's line, as :func:`learner_frame` gives it (``"line 7: scores = Q @ K"``, or the code alone, or
    ``""``); ``function``: the name of the learner's function that line is in (``""`` if unknown)."""

    def __init__(
        self,
        type_name: str,
        text: str,
        where: str = "",
        function: str = "",
        transposed_3d: bool | None = None,
    ):
        super().__init__(f"{type_name}: {text}")
        self.type_name, self.text, self.where, self.function = type_name, text, where, function
        self.transposed_3d = transposed_3d


class ForbiddenUse(Exception):
    """A proxy's report that the learner's function entered forbidden code (qualified names)."""

    def __init__(self, names: Sequence[str]):
        super().__init__(", ".join(names))
        self.names = list(names)


# ---------------------------------------------------------------------------------------- time limits
#
# A learner's function in the learner's own kernel is stopped by SIGALRM, which raises LearnerTimeout in
# it. A loop that swallows every exception (`except BaseException: pass`, a bare `except:`, `finally:
# continue`) would swallow that too, and check() would hang. So from the deadline on, a C-level trace
# function (PyEval_SetTrace through ctypes) makes every line of the learner's own code fail: an except
# handler or a finally block fails at its first line, and the error leaves each frame in turn until the
# learner's function has returned; the time limit then reports the timeout. A trace function written in
# Python cannot do this: CPython switches it off the first time it raises. Only the learner's code fails
# (not the grader's, PyTorch's or the standard library's, which clean up as usual), and nothing is
# traced before the deadline. What remains: a loop inside one C call (a huge tensor operation), work in
# other threads, and a learner who switches the alarm or tracing off on purpose.

_TRACE_LINE, _TRACE_RETURN = 2, 3  # PyTrace_LINE, PyTrace_RETURN
_NOT_LEARNER_DIRS: list = []


def _is_learner_code(code) -> bool:
    """True when ``code`` is neither this package's nor an installed library's or the standard library's.
    Decided by its file, once per file name (not per code object: CPython's code objects compare equal when
    only their file names differ, so a verdict kept per code object would serve both files)."""
    return _is_learner_file(code.co_filename)


@functools.lru_cache(maxsize=8192)
def _is_learner_file(filename: str) -> bool:
    return not filename.startswith("<frozen") and not _is_library_file(filename)


def _is_learner_frame(frame) -> bool:
    """:func:`_is_learner_code` for the code a frame runs, except that code compiled from a string (whose
    file name is ``<string>``, like the methods a dataclass makes) is a library's when its module is: a
    library's hook running after the deadline (pytest's, reporting an error that Python ignored) must not
    be stopped as if it were the learner's."""
    code = frame.f_code
    if code.co_filename.startswith("<") and not code.co_filename.startswith("<ipython"):
        module_file = frame.f_globals.get("__file__")
        if isinstance(module_file, str) and _is_library_file(module_file):
            return False
    return _is_learner_code(code)


@functools.lru_cache(maxsize=256)
def _is_library_file(path: str) -> bool:
    """True when the file ``path`` is this package's, an installed library's or the standard library's."""
    if not _NOT_LEARNER_DIRS:
        _NOT_LEARNER_DIRS.extend({_PACKAGE_DIR, os.path.realpath(_PACKAGE_DIR), *_library_dirs()})
    return os.path.realpath(path).startswith(tuple(_NOT_LEARNER_DIRS))


def _after_deadline(deadline, frame, what, arg) -> int:
    """The C-level trace function once a deadline has passed: -1 (an error at that line) for every line
    of the learner's code, until the learner's outermost frame has returned."""
    if not deadline.armed:
        return 0
    if what == _TRACE_LINE:
        return -1 if _is_learner_frame(frame) else 0
    if what == _TRACE_RETURN and frame.f_back is deadline.entry:
        deadline.armed = False  # back in the caller: the grader's code runs on undisturbed
    return 0


try:
    _TRACEFUNC = ctypes.CFUNCTYPE(
        ctypes.c_int, ctypes.py_object, ctypes.py_object, ctypes.c_int, ctypes.c_void_p
    )
    _SET_TRACE = ctypes.pythonapi.PyEval_SetTrace
    _SET_TRACE.argtypes = [ctypes.c_void_p, ctypes.py_object]  # the function pointer, or None (NULL)
    _SET_TRACE.restype = None
    _AFTER_DEADLINE_C = _TRACEFUNC(_after_deadline)  # kept alive: CPython holds only its address
    _AFTER_DEADLINE = ctypes.cast(_AFTER_DEADLINE_C, ctypes.c_void_p)
except (AttributeError, TypeError, OSError):  # pragma: no cover - not CPython: the limit stays soft
    _SET_TRACE = _AFTER_DEADLINE = None


class time_limit:  # noqa: N801 - used as ``with time_limit(seconds):``, like the function it replaces
    """Stop the body after ``seconds`` with :class:`LearnerTimeout` (main thread, POSIX only; elsewhere
    the body runs without a limit). The learner's code cannot swallow the timeout (see above): any error
    that leaves the body after the deadline is reported as :class:`LearnerTimeout`."""

    def __init__(self, seconds: float):
        self.seconds = seconds
        self.usable = False
        self.armed = self.expired = self.installed = False
        self.entry = self.previous = self.previous_trace = None

    def _alarm(self, signum, frame):
        self.expired = True
        if not self.installed and _SET_TRACE is not None:
            self.previous_trace = sys.gettrace()
            self.armed = self.installed = True
            _SET_TRACE(_AFTER_DEADLINE, self)
        # a weakref callback run by the garbage collector ignores an error raised in it (and reports it to
        # sys.unraisablehook, where pytest met the deadline's trace), and so does a generator being closed
        # when it is collected (a generator expression that all() left unfinished): in those the trace
        # stops the learner's next line instead
        if frame is not None and (
            os.path.basename(frame.f_code.co_filename) in _SWALLOWING_FILES
            or frame.f_code.co_flags & _GENERATOR_FLAGS
        ):
            return
        raise LearnerTimeout()

    def __enter__(self):
        self.usable = hasattr(signal, "setitimer") and threading.current_thread() is threading.main_thread()
        if self.usable:
            self.entry = sys._getframe(1)
            self.previous = signal.signal(signal.SIGALRM, self._alarm)
            signal.setitimer(signal.ITIMER_REAL, self.seconds)
        return self

    def __exit__(self, exc_type, exc, tb):
        if not self.usable:
            return False
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, self.previous)
        if self.installed:
            self.armed = self.installed = False
            if self.previous_trace is None:
                _SET_TRACE(None, None)
            else:  # a debugger's or coverage's tracer, put back
                sys.settrace(self.previous_trace)
            self.previous_trace = None
        self.entry = None
        if (
            self.expired
            and exc_type is not None
            and issubclass(exc_type, Exception)
            and not issubclass(exc_type, Fail)
        ):
            raise LearnerTimeout() from None  # what the deadline made the learner's lines raise
        return False


#: where an error is not raised but reported as unraisable and ignored (callbacks of weak references)
_SWALLOWING_FILES = frozenset({"weakref.py", "_weakrefset.py"})

#: code flags of generators, coroutines and async generators (an error raised while one is closed by the
#: garbage collector is ignored)
_GENERATOR_FLAGS = inspect.CO_GENERATOR | inspect.CO_COROUTINE | inspect.CO_ASYNC_GENERATOR

#: code that may call ``sys.settrace`` while a guard watches (putting back a tracer after a deadline)
_OWN_SETTER_CODES = frozenset({time_limit.__exit__.__code__})


# --------------------------------------------------------------------------------------------------
# No free points: a guard over the learner's function
# --------------------------------------------------------------------------------------------------


def forbidden_names(task: Task) -> list[str]:
    """The qualified-name patterns forbidden while ``task``'s function runs (strings only), so that a
    guard can be built elsewhere (in a learner's kernel) without importing the tasks."""
    return list(task.forbidden) + list(ALWAYS_FORBIDDEN)


def name_matches(pattern: str, module: str, qualname: str) -> bool:
    """``"pkg.mod:Cls"`` matches ``Cls`` and its methods in ``pkg.mod``; ``"pkg.*:*"`` all of ``pkg``."""
    pmod, _, pqual = pattern.partition(":")
    if pmod.endswith(".*"):
        base = pmod[:-2]
        if module != base and not module.startswith(base + "."):
            return False
    elif module != pmod:
        return False
    return pqual in ("", "*") or qualname == pqual or qualname.startswith(pqual + ".")


def _codes_of(values, depth: int = 0) -> set:
    """Code objects of the callables found in ``values`` (functions, partials, bound methods, modules,
    objects with ``__call__``), through lists, tuples and dicts."""
    found: set = set()
    if depth > 4:
        return found
    for value in values:
        if isinstance(value, (list, tuple)):
            found |= _codes_of(value, depth + 1)
        elif isinstance(value, dict):
            found |= _codes_of(value.values(), depth + 1)
        elif inspect.isfunction(value):
            found.add(value.__code__)
        elif isinstance(value, torch.Tensor):
            # a watched tensor (set 10) calls the grader's check when the grader next uses it; through
            # the trusted proxy that happens inside the guarded call
            hook = getattr(type(value), "on_inside", None)
            if hook is not None:
                found |= _codes_of([hook], depth + 1)
        elif inspect.ismethod(value):
            found |= _codes_of([value.__func__], depth + 1)
        elif hasattr(value, "func") and callable(value) and not isinstance(value, torch.Tensor):
            found |= _codes_of([value.func], depth + 1)  # functools.partial
        elif isinstance(value, torch.nn.Module) or (
            callable(value) and not isinstance(value, type) and not isinstance(value, torch.Tensor)
        ):
            for klass in type(value).__mro__:
                if klass.__module__.startswith(("torch", "builtins")):
                    continue
                found |= {v.__code__ for v in vars(klass).values() if inspect.isfunction(v)}
    return found


def _fingerprint(code) -> tuple:
    """What two compilations of the same function share: instructions, names, argument names and constants
    (nested functions by their own fingerprint), not the file name or line numbers."""
    consts = tuple(
        _fingerprint(c) if inspect.iscode(c) else (type(c).__name__, repr(c)) for c in code.co_consts
    )
    return (
        code.co_code,
        code.co_names,
        code.co_varnames[: code.co_argcount + code.co_kwonlyargcount],
        consts,
    )


_FINGERPRINTS: dict = {}
#: Functions shorter than this many instructions are not matched by fingerprint: a one-line step written
#: independently can compile to exactly the book's code, and must not cost a learner the point.
FINGERPRINT_MIN_INSTRUCTIONS = 40


def _forbidden_fingerprints(patterns: tuple) -> dict:
    """Fingerprint -> "module:qualname" of every function the patterns forbid that has at least
    ``FINGERPRINT_MIN_INSTRUCTIONS`` instructions (computed once per patterns). Modules of the book are
    imported to read them; a module that cannot be imported is skipped."""
    cached = _FINGERPRINTS.get(patterns)
    if cached is not None:
        return cached
    prints: dict = {}
    for pattern in patterns:
        pmod = pattern.partition(":")[0]
        base = pmod[:-2] if pmod.endswith(".*") else pmod
        try:
            importlib.import_module(base)
        except Exception:  # noqa: BLE001 - a name that is not a module of this installation
            continue
        names = [
            n for n in list(sys.modules) if n == base or (pmod.endswith(".*") and n.startswith(base + "."))
        ]
        for name in names:
            for value in list(vars(sys.modules[name]).values()):
                functions = (
                    [value]
                    if inspect.isfunction(value)
                    else (
                        [v for v in vars(value).values() if inspect.isfunction(v)]
                        if inspect.isclass(value)
                        else []
                    )
                )
                for function in functions:
                    if function.__module__ != name:
                        continue
                    code = function.__code__
                    qualname = getattr(code, "co_qualname", code.co_name)
                    long_enough = sum(1 for _ in dis.get_instructions(code)) >= FINGERPRINT_MIN_INSTRUCTIONS
                    if long_enough and name_matches(pattern, name, qualname):
                        prints.setdefault(_fingerprint(code), f"{name}:{qualname}")
    _FINGERPRINTS[patterns] = prints
    return prints


_MODULE_FILES: dict = {}
_MODULE_COUNT = [0]
_NAME_CACHES: dict = {}


def _module_of_file(filename: str) -> str:
    """The name of the imported module defined by ``filename`` ('' if none); rebuilt when modules load."""
    if len(sys.modules) != _MODULE_COUNT[0]:
        _MODULE_FILES.clear()
        for name, module in list(sys.modules.items()):
            path = getattr(module, "__file__", None)
            if isinstance(path, str):
                _MODULE_FILES.setdefault(path, name)
        _MODULE_COUNT[0] = len(sys.modules)
    return _MODULE_FILES.get(filename, "")


#: the name recorded when the learner's function switches the guard's profiler off or replaces it
TAMPERED = "<the grader's watch switched off>"
#: prefix of a pattern that forbids a builtin (C) method or function by its name, such as
#: ``"builtin:as_subclass"``: tensors of the grader's own types turned into plain ones escape its watch
BUILTIN = "builtin:"
#: prefix of a pattern that forbids an operation at PyTorch's dispatcher by its ATen name, such as
#: ``"aten:_safe_softmax"``: seen however the learner's code reaches it (see :class:`_OpWatch`)
ATEN = "aten:"
#: the name recorded when the learner's function removes the guard's dispatch mode
TAMPERED_OPS = "<the grader's watch over operations switched off>"
#: the name recorded when the learner's function returns, or computes with, a floating tensor that
#: neither came from its arguments nor from an operation the dispatch mode saw
UNSEEN_WORK = "<work the grader could not see>"
#: the name recorded when a function that read tensors out of PyTorch returns values brought back in
OUTSIDE_TORCH = "<an answer computed outside PyTorch>"
#: Python functions that take the dispatch mode off the stack: called from the learner's code (directly,
#: or through the standard library: ``with _disable_current_modes():``), they count as tampering
DISPATCH_ESCAPES = (
    "torch.utils._python_dispatch:_disable_current_modes",
    "torch.utils._python_dispatch:_pop_mode",
    "torch.utils._python_dispatch:_pop_mode_temporarily",
)
#: the standard library's folders (contextlib, functools...), seen between the learner's code and a call
_STDLIB_DIRS = tuple(
    os.path.join(path, "")
    for path in {
        *(os.path.realpath(sysconfig.get_paths()[k]) for k in ("stdlib", "platstdlib")),
        *(sysconfig.get_paths()[k] for k in ("stdlib", "platstdlib")),
    }
)


def _is_stdlib(filename: str) -> bool:
    """Whether ``filename`` is the standard library's (a venv's stdlib folder also holds site-packages)."""
    if filename.startswith("<frozen"):
        return True
    return filename.startswith(_STDLIB_DIRS) and f"{os.sep}site-packages{os.sep}" not in filename


#: the builtins that start a thread without the threading module (whose threads the guard watches)
_RAW_THREAD_STARTS = ("start_new_thread", "start_new", "start_joinable_thread")
#: the code that turns a tensor into a NumPy array (``np.asarray(t)``)
_TENSOR_ARRAY_CODE = torch.Tensor.__array__.__code__
#: tensor methods that hand a tensor's values to Python (NumPy, Python numbers, a Python callback)
_READING_OUT = frozenset({"numpy", "tolist", "item", "apply_", "map_", "map2_"})
#: operations that make a tensor from Python data (``torch.tensor([...])``): their input is not the
#: learner's earlier work
_ATEN_LIFTING = frozenset({"lift", "lift_fresh", "lift_fresh_copy"})
#: PyTorch's own attention layers and kernels: a task that asks for the layer forbids them
TORCH_ATTENTION = (
    "torch.nn.functional:multi_head_attention_forward",
    "torch.nn.modules.activation:MultiheadAttention",
    "torch._C._nn:scaled_dot_product_attention",
    # the same kernels by other doors (torch.ops.aten, torch._..., or through vmap), seen wherever called
    f"{BUILTIN}scaled_dot_product_attention",
    f"{BUILTIN}_scaled_dot_product_attention_math",
    f"{BUILTIN}_scaled_dot_product_flash_attention_for_cpu",
    f"{BUILTIN}_scaled_dot_product_flash_attention",
    f"{BUILTIN}_scaled_dot_product_efficient_attention",
    # and at PyTorch's dispatcher, where no door (TorchScript, a C-level call) hides them: the attention
    # kernel's softmax (``_safe_softmax``, which torch.softmax never uses) and the fused kernels
    f"{ATEN}_safe_softmax",
    f"{ATEN}_scaled_dot_product_flash_attention_for_cpu",
    f"{ATEN}_scaled_dot_product_flash_attention",
    f"{ATEN}_scaled_dot_product_efficient_attention",
    f"{ATEN}_scaled_dot_product_cudnn_attention",
    f"{ATEN}_native_multi_head_attention",
    f"{ATEN}_transformer_encoder_layer_fwd",
    *DISPATCH_ESCAPES,  # (taking the dispatcher's watch off)
)
#: what a learner calls to reach each of those dispatcher operations (for the message)
_ATEN_DOORS = {
    "_native_multi_head_attention": ("torch.nn", "MultiheadAttention"),
    "_transformer_encoder_layer_fwd": ("torch.nn", "TransformerEncoderLayer"),
}
#: ways of turning a watched tensor (set 10) into a plain one, which the watch cannot follow
SUBCLASS_ESCAPES = (f"{BUILTIN}as_subclass", f"{BUILTIN}_make_subclass")


_PROFILE_SETTERS = (sys.setprofile, threading.setprofile, sys.settrace)


class _OpWatch(TorchDispatchMode):
    """The guard's look at PyTorch's dispatcher: every operation the learner's call runs, in the ATen
    operators it comes down to, however it was reached (a tensor subclass's own methods, a conversion to a
    plain tensor, TorchScript, C code). Records forbidden operators (``aten:NAME`` patterns) in the
    guard's ``found`` and hands each operation to the guard's observers (set 10's block-width watch).
    Off (it passes operations through untouched) once the guarded call has ended."""

    def __init__(self, guard: ForbiddenCallGuard):
        super().__init__()
        self.guard = guard
        self.active = True

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        if not self.active:
            return func(*args, **kwargs)
        guard = self.guard
        name = func.overloadpacket.__name__
        if name in guard._aten_names:
            found = ATEN + name
            if found not in guard.found and not guard._allowed_here(sys._getframe(1)):
                guard.found.append(found)
        # where the values come from: every floating tensor an operation reads must be an argument's or
        # an earlier operation's (or hold one number), with the values it had then (a write into its
        # memory from NumPy, ctypes or with the dispatch switched off changes them unseen); looked at
        # before the operation, which may write into it. An operator of the learner's own (torch.library)
        # runs code the mode does not see.
        inputs = _tensors((args, kwargs))
        if UNSEEN_WORK not in guard.found and (
            func.namespace not in _SEEN_NAMESPACES
            or name not in _ATEN_LIFTING
            and not all(guard._as_seen(t) for t in inputs)
        ):
            guard.found.append(UNSEEN_WORK)
        out = func(*args, **kwargs)
        made = _tensors(out)
        # what it made, and what it wrote into (only an operation whose schema says so writes: in place,
        # out=), fingerprinted once each
        for t in made + inputs if func._schema.is_mutable else made:
            guard._saw(t)
        # values brought in from outside PyTorch (torch.from_numpy, torch.tensor of data) and what is
        # computed from them alone: allowed, but not as the answer of a function that read a tensor out
        # of PyTorch (into NumPy or Python numbers)
        sources = [_storage(t) for t in inputs if t.is_floating_point() and t.numel() > 1]
        if name in _ATEN_LIFTING or sources and all(st in guard.lifted for st in sources):
            guard.lifted.update(_storage(t) for t in made if t.is_floating_point())
        elif guard.lifted:  # made from PyTorch's values, if in memory where a freed lifted tensor was
            guard.lifted.difference_update(_storage(t) for t in made)
        for observe in guard.observers:
            observe(func, args, kwargs, out)
        return out


_WARM: list = []


def _warm_dispatch_modes() -> None:
    """PyTorch's first use of a Python dispatch mode in a process imports modules for about a second (3 s
    under the profiler): done once, before the learner's call and its time limit."""
    if not _WARM:
        with _Passing():
            (torch.ones(2, dtype=torch.float64) * 2).sum()
        _WARM.append(True)


class _Passing(TorchDispatchMode):
    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        return func(*args, **(kwargs or {}))


#: the namespaces of PyTorch's own operators (others are registered by code, such as torch.library's)
_SEEN_NAMESPACES = frozenset({"aten", "prim", "prims"})


def _storage(t: torch.Tensor) -> int:
    try:
        return t.untyped_storage().data_ptr()
    except Exception:  # a tensor without storage (a subclass of the learner's): it has no values of its own
        return -1


def _contents(t: torch.Tensor) -> int:
    """A fingerprint of the values in ``t``'s whole storage, read without a PyTorch operation."""
    try:
        storage = t.untyped_storage()
        size = storage.nbytes()
        return hash(ctypes.string_at(storage.data_ptr(), size)) if size else 0
    except Exception:
        return -1


class ForbiddenCallGuard:
    """Records which forbidden functions were entered while the body runs (reusable: each ``with``
    starts a new record).

    ``names``: qualified-name patterns (see :func:`name_matches`); ``allowed``: callables given to the
    learner's function as arguments (a step function of the grader's, say): forbidden code they run is
    not the learner's doing. Uses ``sys.setprofile`` (this thread only); a function's module is the module
    whose file defines its code, so re-wrapping a reference's code object in other globals is still seen.
    Each code object is classified once (the decision is cached per set of names), so a guarded call costs
    one dictionary look-up per Python call. ``found`` lists the names entered, first first.

    ``"aten:NAME"`` patterns forbid an operator at PyTorch's dispatcher, and ``observers`` (callables
    ``observe(func, args, kwargs, out)``, settable before each ``with``) are handed every operation the
    body runs: both through a dispatch mode (:class:`_OpWatch`) pushed for the body (and in the threads
    it starts, through :attr:`hook`). Removing that mode from the stack during the body is recorded as
    tampering, like switching the profiler off.
    """

    def __init__(self, names: Iterable[str], allowed: Iterable = (), observers: Iterable[Callable] = ()):
        self.patterns = tuple(names)
        self._aten_names = frozenset(p[len(ATEN) :] for p in self.patterns if p.startswith(ATEN))
        self.observers = list(observers)
        self._direct = tuple(p for p in DISPATCH_ESCAPES if p in self.patterns)
        self._mode: _OpWatch | None = None
        self._mode_threads: set = set()
        #: whether the body runs here (the mode is pushed only then; a proxy's call runs elsewhere)
        self.local = True
        #: the tensors given to the body (its arguments), whose values are the learner's to use
        self.inputs: list = []
        #: storage -> fingerprint of its values, for every storage the arguments or seen operations made
        self.known: dict = {}
        self._watched_flow = False
        #: storages of values brought in from outside PyTorch, and whether the body read a tensor out of
        #: PyTorch (into NumPy or Python numbers)
        self.lifted: set = set()
        self.read_numpy = False
        # builtins (C functions): "builtin:NAME" forbids every builtin method or function called NAME
        # (``as_subclass``), and a "torch._C...:name" pattern a module-level builtin by its module
        self._builtin_names = frozenset(p[len(BUILTIN) :] for p in self.patterns if p.startswith(BUILTIN))
        self._builtin_patterns = tuple(p for p in self.patterns if p.startswith("torch._C"))
        self._watch_builtins = bool(self._builtin_names or self._builtin_patterns)
        self.allowed = frozenset(_codes_of(list(allowed)))
        self.found: list[str] = []
        self._cache: dict = _NAME_CACHES.setdefault(self.patterns, {})
        self._previous = None
        self._entry = None
        self._closing = False

    def _name_of(self, frame) -> str:
        code = frame.f_code
        module = _module_of_file(code.co_filename) or frame.f_globals.get("__name__", "") or ""
        qualname = getattr(code, "co_qualname", code.co_name)
        for pattern in self.patterns:
            if name_matches(pattern, module, qualname):
                return f"{module}:{qualname}"
        # The same code compiled again elsewhere (`exec(inspect.getsource(attnbook.attention))`) has
        # another file name but the same instructions, names and constants.
        return _forbidden_fingerprints(self.patterns).get(_fingerprint(code), "")

    def _allowed_here(self, frame) -> bool:
        while frame is not None and frame is not self._entry:
            if frame.f_code in self.allowed:
                return True
            frame = frame.f_back
        return False

    def _profile(self, frame, event, arg):
        mode = self._mode
        if mode is not None and mode.active and threading.get_ident() not in self._mode_threads:
            # a thread the body started: the dispatch mode is per thread, so it is pushed here too
            self._mode_threads.add(threading.get_ident())
            _push_mode(mode)
        if event == "call":
            code = frame.f_code
            if code is _TENSOR_ARRAY_CODE and self._watched_flow:
                self.read_numpy = True  # np.asarray(t), np.array(t)
                if frame.f_back is not None and _is_learner_code(frame.f_back.f_code):
                    self._read_out(frame.f_locals.get("self"))
            name = self._cache.get(code)
            if name is None:
                name = self._cache[code] = self._name_of(frame)
            if name and name.split(".<locals>")[0] in self._direct:
                # taking the dispatch mode off counts when the learner's code asks for it, not PyTorch
                # (printing a tensor does it: torch/_tensor_str.py); code nested in those functions
                # is theirs
                caller = frame.f_back
                while caller is not None and _is_stdlib(caller.f_code.co_filename):
                    caller = caller.f_back
                if caller is not None and _is_learner_code(caller.f_code) and TAMPERED_OPS not in self.found:
                    self.found.append(TAMPERED_OPS)
            elif name and name not in self.found and not self._allowed_here(frame):
                self.found.append(name)
        elif event == "c_call":
            if self._watched_flow and getattr(arg, "__name__", "") in _READING_OUT:
                if isinstance(getattr(arg, "__self__", None), torch.Tensor):
                    self.read_numpy = True  # a tensor read out of PyTorch (into NumPy, Python numbers)
                    if _is_learner_code(frame.f_code):
                        self._read_out(arg.__self__)
            if (
                self._watched_flow
                and getattr(arg, "__name__", "") in _RAW_THREAD_STARTS
                and getattr(arg, "__module__", "") == "_thread"
                and UNSEEN_WORK not in self.found
                and _is_learner_code(frame.f_code)
            ):
                self.found.append(UNSEEN_WORK)  # a thread outside the threading module is not watched
            if (
                arg in _PROFILE_SETTERS
                and not self._closing
                and TAMPERED not in self.found
                and frame.f_code not in _OWN_SETTER_CODES
            ):
                self.found.append(TAMPERED)  # switching the watch off (even for a moment) is not allowed
            elif self._watch_builtins:
                name = self._builtin_name(arg)
                # a conversion counts only in the learner's own code (PyTorch and the package convert
                # tensors themselves); a forbidden kernel counts wherever it is reached from
                learners = name not in SUBCLASS_ESCAPES or _is_learner_code(frame.f_code)
                if name and name not in self.found and learners and not self._allowed_here(frame):
                    self.found.append(name)
        if self._previous is not None:
            self._previous(frame, event, arg)

    def _read_out(self, tensor) -> None:
        """The learner's code read ``tensor`` out of PyTorch (into NumPy or Python numbers): tell the
        observers that can judge it (set 10's block watch: a whole row read out at once is read at once),
        with the dispatch mode passing their own operations through. Never raises: a watch's failure to
        judge a read-out must not stop the learner's call."""
        if not isinstance(tensor, torch.Tensor):
            return
        mode = self._mode
        active = mode.active if mode is not None else False
        if mode is not None:
            mode.active = False
        try:
            for observe in self.observers:
                read_out = getattr(getattr(observe, "__self__", None), "read_out", None)
                if read_out is not None:
                    read_out(tensor)
        except Exception:  # noqa: BLE001 - a read-out the watch cannot place is not the learner's fault
            pass
        finally:
            if mode is not None:
                mode.active = active

    def _builtin_name(self, arg) -> str:
        """The forbidden name of the builtin ``arg`` about to be called ('' if it is allowed)."""
        name = getattr(arg, "__name__", "")
        module = getattr(arg, "__module__", None)
        if module and self._builtin_patterns:  # by module first: the more telling name
            qualname = getattr(arg, "__qualname__", name)
            key = (BUILTIN, module, qualname)  # decided once per builtin, like Python functions
            found = self._cache.get(key)
            if found is None:
                found = self._cache[key] = next(
                    (
                        f"{module}:{qualname}"
                        for p in self._builtin_patterns
                        if name_matches(p, module, qualname)
                    ),
                    "",
                )
            if found:
                return found
        return f"{BUILTIN}{name}" if name in self._builtin_names else ""

    @property
    def hook(self):
        """The profile function that does the watching, for other threads: install it with
        ``threading.setprofile(guard.hook)`` while the guarded call runs (and remove it after), so that
        threads the learner's function starts are watched too; they record into the same ``found``."""
        return self._profile

    def __enter__(self):
        self.found = []
        self._closing = False
        self._entry = sys._getframe(1)
        self._mode = None
        self._watched_flow = bool(self.local and (self._aten_names or self.observers))
        if self._watched_flow:
            _warm_dispatch_modes()
            self.known, self.lifted, self.read_numpy = {}, set(), False
            for t in _tensors(self.inputs):
                self._saw(t)
            self._mode = _OpWatch(self)
            self._mode_threads = {threading.get_ident()}
            _push_mode(self._mode)
        self._previous = sys.getprofile()
        sys.setprofile(self._profile)
        return self

    def __exit__(self, exc_type, exc, tb):
        # The profiler found off (or replaced) at the end is tampering, with one exception: CPython unsets
        # the profiler when an exception unwinds through the profile function, and the engine's own time
        # limit (or an interrupt) may fire while the watch itself runs. So a profiler that is merely off
        # when the body ends with an exception is not counted: a call that did not return earns nothing
        # anyway, and a learner who calls a setter (seen as a c_call) is recorded whatever the ending.
        current = sys.getprofile()
        unwound = exc_type is not None and current is None
        if current != self._profile and not unwound and TAMPERED not in self.found:  # bound methods: ==
            self.found.append(TAMPERED)
        self._closing = True
        sys.setprofile(self._previous)
        self._previous = None
        self._entry = None
        mode, self._mode = self._mode, None
        if mode is not None:
            mode.active = False
            stack = _get_current_dispatch_mode_stack()
            if mode in stack:  # modes the body pushed and left above it go with it
                while stack and stack[-1] is not mode:
                    _pop_mode()
                    stack = _get_current_dispatch_mode_stack()
                _pop_mode()
            elif TAMPERED_OPS not in self.found:
                self.found.append(TAMPERED_OPS)
        return False

    def _saw(self, t: torch.Tensor) -> None:
        """``t`` was made (or written) by an operation the mode saw: its storage and values are known."""
        if t.is_floating_point():
            self.known[_storage(t)] = _contents(t)

    def _as_seen(self, t: torch.Tensor) -> bool:
        """Whether ``t`` holds what the mode saw last in its storage (one number is always fine)."""
        if not t.is_floating_point() or t.numel() <= 1:
            return True
        seen = self.known.get(_storage(t))
        return seen is not None and seen == _contents(t)

    def check_result(self, value) -> None:
        """After the body returned ``value``: with the dispatch mode on, a floating tensor in it must come
        from the arguments or an operation the mode saw (a thread the guard does not watch, or PyTorch's
        dispatch switched off, makes tensors it never saw)."""
        if self._watched_flow and UNSEEN_WORK not in self.found:
            returned = [t for t in _tensors(value) if t.is_floating_point() and t.numel() > 1]
            if self.read_numpy and any(_storage(t) in self.lifted for t in returned):
                self.found.append(OUTSIDE_TORCH)  # an answer computed in NumPy (or Python) and brought back
            elif not all(self._as_seen(t) for t in returned):
                self.found.append(UNSEEN_WORK)


def _is_book_code(name: str) -> bool:
    return name.startswith("attnbook.") and not name.startswith("attnbook.grading.")


def forbidden_message(names: Sequence[str]) -> str:
    """The 0-point message for a function that entered ``names`` (qualified names); the book's own
    implementation is named first when one was used (a wrapper of the grader's may have called it)."""
    if TAMPERED in names:
        return (
            "0 points: your function switched off the grader's watch over the functions it calls "
            "(sys.setprofile or sys.settrace, or a RecursionError caught after recursing without end); a "
            "graded function only computes its answer."
        )
    if TAMPERED_OPS in names:
        return (
            "0 points: your function removed the grader's watch over the operations it runs (a PyTorch "
            "dispatch mode); a graded function only computes its answer."
        )
    if OUTSIDE_TORCH in names and len(names) == 1:
        return (
            "0 points: your function computes its answer outside PyTorch: it reads tensors into NumPy or "
            "Python numbers and brings the result back (torch.from_numpy, torch.tensor), where the grader "
            "cannot see how it reads them. The task asks for torch operations on the tensors you are given."
        )
    if UNSEEN_WORK in names and len(names) == 1:  # else the other names say more
        return (
            "0 points: your function returned (or computed with) a tensor made or changed where the grader "
            "could not see it: in NumPy or by writing into a tensor's memory, in a thread started without "
            "the threading module, inside an operator of your own, with PyTorch's dispatch switched off, "
            "or before the call. A graded function computes its answer from its arguments with PyTorch "
            "operations, in view."
        )
    names = [n for n in names if n not in (UNSEEN_WORK, OUTSIDE_TORCH)]
    aten = next((n for n in names if n.startswith(ATEN)), "")
    if aten and all(n.startswith(ATEN) for n in names):  # seen at the dispatcher only: worded as the
        # call that reaches it (a name seen on the way, if any, is the more telling one)
        module, layer = _ATEN_DOORS.get(
            aten[len(ATEN) :], ("torch.nn.functional", "scaled_dot_product_attention")
        )
        names = [f"{module}:{layer}"]
    escape = next((n for n in names if n in SUBCLASS_ESCAPES), "")
    if escape:
        method = escape[len(BUILTIN) :]
        return (
            f"0 points: your function turns the tensors it is given into another tensor type (`{method}`), "
            "which hides from the grader how it reads them. Work on the tensors you are given."
        )
    torch_layer = next((n for n in names if n in TORCH_ATTENTION or n.startswith("torch.")), "")
    if torch_layer and not any(_is_book_code(n) for n in names):
        module, _, qualname = torch_layer.partition(":")
        # where learners find it
        module = {"torch._C._nn": "torch.nn.functional", BUILTIN[:-1]: "torch"}.get(module, module)
        layer = qualname.split(".")[0]
        return (
            f"0 points: your function calls PyTorch's `{layer}` (in {module}), a ready-made implementation "
            "of what this task asks you to write. A point here means you wrote the step yourself."
        )
    name = next((n for n in names if _is_book_code(n)), names[0])
    module, _, qualname = name.partition(":")
    if _is_book_code(name):
        return (
            f"0 points: your function calls `{qualname}` from {module}, the book's own implementation "
            "of the step this task asks you to write. A point here means you wrote the step yourself."
        )
    return (
        f"0 points: your function calls the grader's own code (`{qualname}` in {module}); the checks "
        "compare against it, so using it proves nothing. A point here means you wrote the step yourself."
    )


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
        a = plain(a)  # the learner may have put a tensor of their own type into a list or dict argument
        return isinstance(b, torch.Tensor) and a.shape == b.shape and _equal(a, b)
    if isinstance(a, np.ndarray):
        return isinstance(b, np.ndarray) and a.shape == b.shape and _np_array_equal(a, b)
    if isinstance(a, torch.nn.Module):
        sa, sb = a.state_dict(), b.state_dict()
        return sa.keys() == sb.keys() and all(_equal(sa[k], sb[k]) for k in sa)
    if isinstance(a, (list, tuple)):
        return len(a) == len(b) and all(same_input(x, y) for x, y in zip(a, b))
    if isinstance(a, dict):
        return a.keys() == b.keys() and all(same_input(a[k], b[k]) for k in a)
    try:
        return bool(a == b)
    except Exception:
        return True


def _tensors(value, depth: int = 0) -> list[torch.Tensor]:
    """Every tensor in ``value``, through lists, tuples and dicts (in a fixed order)."""
    if isinstance(value, torch.Tensor):
        return [value]
    if depth > 6:
        return []
    if isinstance(value, (list, tuple)):
        return [t for v in value for t in _tensors(v, depth + 1)]
    if isinstance(value, dict):
        return [t for v in value.values() for t in _tensors(v, depth + 1)]
    return []


def _grad_of(t: torch.Tensor):
    """``t.grad`` cloned, or None; a tensor that is not a leaf (the learner's own, put into a list or dict
    argument) has none unless it retains it, and is not asked (PyTorch would warn)."""
    if not (t.is_leaf or t.retains_grad) or t.grad is None:
        return None
    return t.grad.detach().clone()


def autograd_state(value) -> list:
    """``(requires_grad, grad)`` of every tensor inside ``value`` (``grad`` cloned, or None)."""
    return [(t.requires_grad, _grad_of(t)) for t in (plain(t) for t in _tensors(value))]


def same_autograd_state(before: list, after: list) -> bool:
    if len(before) != len(after):
        return False
    for (rb, gb), (ra, ga) in zip(before, after):
        if rb != ra or (gb is None) != (ga is None):
            return False
        if gb is not None and not (gb.shape == ga.shape and _equal(gb, ga)):
            return False
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


def _shape_texts(task: Task, case: Case, index: int, got, exp) -> tuple[str, str]:
    """The learner's shape and the expected one in words: with the task's names of this output's axes when
    it gives them (sizes of other axes stay bare numbers), else with the case's ``dims``."""
    axes = task.output_axes[index] if index < len(task.output_axes) else ()
    if not axes or len(axes) != len(exp):
        return shape_text(got, case.dims), shape_text(exp, case.dims)
    expected = "(" + ", ".join(f"{a}={n}" for a, n in zip(axes, exp)) + ("," if len(exp) == 1 else "") + ")"
    return shape_text(got, dict(zip(axes, exp))), expected


def as_outputs(value, n: int) -> tuple:
    """The learner's return value as a tuple of ``n`` outputs (validated elsewhere)."""
    if n == 1:
        return (value,)
    return tuple(value)


def close(a, b, atol: float, rtol: float, equal_nan: bool = False) -> bool:
    """Tolerant equality of two outputs of the same kind (tensors, arrays, numbers, nested lists)."""
    if b is None:
        return a is None
    a, b = plain(a), plain(b)
    if isinstance(b, torch.Tensor):
        if not isinstance(a, torch.Tensor) or a.shape != b.shape:
            return False
        return bool(
            _allclose(a.detach().double(), b.detach().double(), atol=atol, rtol=rtol, equal_nan=equal_nan)
        )
    if isinstance(b, np.ndarray):
        a = np.asarray(a)
        return a.shape == b.shape and bool(_np_allclose(a, b, atol=atol, rtol=rtol, equal_nan=equal_nan))
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
        return _num_isclose(a, float(b), rel_tol=rtol, abs_tol=atol) or (
            equal_nan and _num_isnan(a) and _num_isnan(float(b))
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
    got, expected = plain(got), plain(expected)
    diff = (got.detach().double() - expected.detach().double()).abs()
    diff = _where(_isnan(diff), _full_like(diff, float("inf")), diff)
    index = (
        tuple(int(i) for i in np.unravel_index(int(diff.argmax()), tuple(diff.shape))) if diff.dim() else ()
    )
    where = f" at index {index}" if index else ""
    if not (expected.is_floating_point() or expected.is_complex()):  # ids, counts, masks: whole numbers
        return f"first difference{where}: expected {int(expected[index])}, got {_whole(got[index])}"
    shown_expected, shown_got = _apart(float(expected[index]), float(got[index]))
    return f"first big difference{where}: expected {shown_expected}, got {shown_got}"


def _apart(expected: float, got: float) -> tuple[str, str]:
    """Two different numbers written with 4 decimals, or with as many more as it takes for them to read
    differently (-2.1464 and -2.1464 say nothing; -2.146412 and -2.146395 do)."""
    for places in range(4, 17):
        a, b = f"{expected:.{places}f}", f"{got:.{places}f}"
        if a != b:
            return a, b
    return repr(expected), repr(got)


def _whole(x: torch.Tensor) -> str:
    """A learner's entry where a whole number is expected: as an integer when it is one."""
    value = float(x)
    return str(int(value)) if math.isfinite(value) and value == int(value) else f"{value:.4f}"


def _library_dirs() -> tuple[str, ...]:
    paths = sysconfig.get_paths()
    return tuple(
        {
            os.path.realpath(paths[key])
            for key in ("stdlib", "platstdlib", "purelib", "platlib")
            if key in paths
        }
    )


def learner_frame(exc: BaseException) -> tuple[str, str]:
    """``("line 7: scores = Q @ K", "dot_scores")`` for the innermost frame of the learner's own code, or
    ``("", "")``. Frames of attnbook, of installed libraries (torch, numpy) and of the standard library
    are skipped, its frozen modules too (importlib's ``<frozen importlib._bootstrap>``, whose file name is
    no path). A proxy builds :class:`LearnerError` from this, so both sides report alike."""
    skip = (_PACKAGE_DIR,) + _library_dirs()
    frames = [
        f
        for f in traceback.extract_tb(exc.__traceback__)
        if not f.filename.startswith("<frozen") and not os.path.realpath(f.filename).startswith(skip)
    ]
    if not frames:
        return "", ""
    frame = frames[-1]
    code = (frame.line or "").strip()
    return f"line {frame.lineno}" + (f": {code}" if code else ""), frame.name


def learner_line(exc: BaseException) -> str:
    """' (line 7: `return x @ y`)' for the innermost frame of the learner's own code, or ''."""
    where, _ = learner_frame(exc)
    number, code = _split_where(where)
    if not number and not code:
        return ""
    return f" (line {number}" + (f": `{code}`" if code else "") + ")"


def _split_where(where: str) -> tuple[str, str]:
    """``"line 7: x = 1"`` -> ``("7", "x = 1")``; a bare code line -> ``("", code)``."""
    match = re.match(r"\s*line (\d+)(?::\s?(.*))?$", where or "", re.S)
    if match:
        return match.group(1), (match.group(2) or "").strip()
    return "", (where or "").strip()


# --------------------------------------------------------------------------------------------------
# Errors in the book's words
# --------------------------------------------------------------------------------------------------

_REDUCTION = re.compile(r"\b(sum|max|amax|min|amin|mean|logsumexp|norm|std|var|prod)\s*\(")
_DOT_T = re.compile(r"\.T\b")
_SIZES = (
    re.compile(r"mat1 and mat2 shapes cannot be multiplied \((\d+)x(\d+) and (\d+)x(\d+)\)"),
    re.compile(
        r"Expected size for first two dimensions of batch2 tensor to be: \[([\d, ]+)\] but got: \[([\d, ]+)\]"
    ),
    re.compile(r"size mismatch, got input \((\d+)\), mat \((\d+)x(\d+)\), vec \((\d+)\)"),
    re.compile(r"inconsistent tensor size, expected tensor \[(\d+)\] and src \[(\d+)\]"),
)
_BROADCAST = re.compile(
    r"The (?:size|expanded size) of (?:the )?tensor(?: a)? \((\d+)\) must match the (?:size|existing size)"
    r"(?: of tensor b)? \((\d+)\) at non-singleton dimension (\d+)"
)
_MASK_USE = re.compile(r"masked_fill|torch\.where|\bwhere\(|mask\w*\s*[&|*]|[&|*~]\s*\w*mask|\[[^\]]*mask")
_TRANSPOSE_HINT = (
    "Swap only the last two axes, with `.transpose(-2, -1)` (or `.mT`): it works with and "
    "without a batch axis in front."
)


def _matmul_sizes(text: str) -> tuple[str, str] | None:
    for i, pattern in enumerate(_SIZES):
        match = pattern.search(text)
        if not match:
            continue
        g = match.groups()
        if i == 0:
            return g[1], g[2]
        if i == 1:
            return g[0].split(",")[-1].strip(), g[1].split(",")[-1].strip()
        if i == 2:
            return g[2], g[3]
        return g[0], g[1]
    return None


def _a(python_type: str) -> str:
    """A Python type's name as words: ``NoneType`` -> ``None``, ``Tensor`` -> ``a tensor``, ``int`` -> ``an int``."""
    words = {"NoneType": "None", "Tensor": "a tensor", "torch.Tensor": "a tensor"}
    if python_type in words:
        return words[python_type]
    return ("an " if python_type[:1].lower() in "aeiou" else "a ") + python_type


def _explain(type_name: str, text: str, code: str, transposed_3d: bool | None = None) -> tuple[str, str]:
    """(explanation in the book's words, second-tier hint); ``("", "")`` when there is nothing to add."""
    if "t() expects a tensor with <= 2 dimensions" in text:
        return (
            "`.t()` swaps the two axes of a matrix only, and this tensor has more axes (a batch axis in "
            "front); you want to swap only the last two",
            _TRANSPOSE_HINT,
        )
    sizes = _matmul_sizes(text)
    broadcast = _BROADCAST.search(text)
    size_error = bool(sizes or broadcast or "does not broadcast" in text)
    if size_error and transposed_3d:
        return (
            "`.T` reverses every axis of a tensor with more than 2 axes (it turns (B, T, d) into "
            "(d, T, B)); you want to swap only the last two",
            _TRANSPOSE_HINT,
        )
    maybe_T = transposed_3d is None and _DOT_T.search(code)
    causes = (
        "a missing transpose, `.T` on a tensor with more than 2 axes (it reverses every axis), or "
        "the two factors in the wrong order"
        if maybe_T
        else "a missing transpose or the two factors in the wrong order"
    )
    if sizes:
        return (
            f"a matrix product needs the last size of the left factor to equal the second-to-last size "
            f"of the right one, and here {sizes[0]} meets {sizes[1]}; the usual cause is {causes}",
            "Write each factor's shape under the line, e.g. (B, T_q, d) @ (B, d, T_k): the inner sizes "
            "must be equal, and the outer ones are the result's.",
        )
    if "both arguments to matmul need to be at least 1D" in text:
        return ("a matrix product got a single number (0-D tensor) as a factor", "")
    if broadcast:
        a, b, axis = broadcast.groups()
        clash = f"sizes {a} and {b} clash at axis {axis}"
        keep = (
            "Keep the reduced axis as a size-1 axis (`keepdim=True`), so that broadcasting lines the "
            "two tensors up again."
        )
        if _REDUCTION.search(code) and "keepdim" not in code:
            return (
                "the reduction on this line removes the axis it reduces over, so its result no longer "
                f"lines up with the tensor it is combined with ({clash})",
                keep,
            )
        elementwise = re.search(r"[^@*/+\-=<>!]\s[+\-*/]\s|[+\-*/]=", code)
        if ("@" in code or "matmul" in code or "bmm" in code) and not elementwise:
            return (
                f"the leading (batch) axes of a matrix product do not line up ({clash}): they must be "
                f"equal or 1 in both factors; the usual cause is {causes}",
                "Write both factors' shapes under the line: only the last two axes take part in the "
                "product; the axes in front must match.",
            )
        if _MASK_USE.search(code):
            return (
                f"the mask does not line up with the tensor it is applied to ({clash}): a mask needs "
                "the same axes, or size-1 axes where it is shared",
                "Write the shapes of the mask and of the scores one above the other, aligned on the "
                "right; add a size-1 axis (`unsqueeze`) where the mask is shared (over queries, say).",
            )
        if "@" in code or "matmul" in code:
            return (
                f"two tensors on this line do not line up ({clash}), in an element-by-element operation "
                "(a bias added, say: is it the one of this layer?) or in the leading axes of a matrix "
                "product",
                "Write the shape of every operand under the line; element by element, sizes "
                "must be equal or 1, aligned on the right.",
            )
        return (
            f"two tensors combined element by element do not line up ({clash}); if one of them comes "
            "from a reduction (sum, max, mean), it lost the reduced axis",
            keep,
        )
    if "does not broadcast" in text and "einsum" in text:
        return (
            "the letters of your einsum do not fit the operands: one letter stands for two different sizes",
            "Write each operand's shape under its letters; a letter shared by two operands "
            "must have the same size in both.",
        )
    if "Can't call numpy() on Tensor that requires grad" in text:
        if "np." in code or "numpy." in code:
            return (
                "a NumPy function cannot work on a tensor that tracks gradients, and the grader's "
                "inputs track them (so that it can check them): this step leaves PyTorch",
                "Use the torch operation of the same name (torch.exp, torch.sum, torch.max, ...); "
                "`.detach()` would silence the error and cut the gradients.",
            )
        return (
            "`.numpy()` leaves PyTorch, and a tensor that tracks gradients (as the grader's inputs "
            "do) cannot leave without losing them",
            "Stay in torch operations from input to output; `.detach()` would silence the error and "
            "cut the gradients.",
        )
    match = re.search(r"a Tensor with (\d+) elements cannot be converted to Scalar", text)
    if match:
        return (
            f"`.item()`, `float()` or `int()` needs a tensor of one number, and this one holds "
            f"{match.group(1)}: the step works on whole tensors, not single numbers",
            "Keep the values in tensors and use tensor operations (torch.where, torch.maximum, "
            "masks) instead of Python numbers.",
        )
    if "Boolean value of Tensor with more than one value is ambiguous" in text:
        return (
            "a tensor of several values was used as one True/False (in `if`, `and`/`or`, Python's "
            "`max()`/`min()`, or a chained comparison)",
            "Compare element by element with tensor operations (torch.where, torch.maximum, a mask).",
        )
    dtypes = (
        re.search(r"expected scalar type (\w+) but found (\w+)", text)
        or re.search(r"same dtype, but got: (\w+) != (\w+)", text)
        or re.search(r"[Ee]xpected object of scalar type (\w+) but got scalar type (\w+)", text)
    )
    if dtypes:
        names = {"Double": "float64", "double": "float64", "Float": "float32", "float": "float32"}
        a, b = (names.get(x, x) for x in dtypes.groups())
        return (
            f"{a} and {b} tensors meet in one operation: a tensor you created (torch.tensor, "
            "torch.zeros, torch.ones, torch.arange, ...) gets float32 by default, while the grader's "
            "inputs are float64",
            "Create new tensors with the inputs' dtype and device: `torch.zeros(shape, dtype=x.dtype, "
            "device=x.device)` or `x.new_zeros(shape)`.",
        )
    match = re.search(r"result type (\w+) can't be cast to the desired output type (\w+)", text)
    if match:
        return (
            f"an in-place operation would store {match.group(1)} values in a tensor of {match.group(2)}",
            "Create the tensor that collects the results with the dtype of the values it will hold.",
        )
    if "Expected all tensors to be on the same device" in text:
        found = re.search(r"found at least two devices, ([\w:]+) and ([\w:]+)", text)
        which = f" ({found.group(1)} and {found.group(2)})" if found else ""
        return (
            f"tensors on two devices{which} meet in one operation: a tensor you created lives on the "
            "CPU by default, while the inputs may live elsewhere",
            "Create new tensors on the inputs' device: `device=x.device`, or `x.new_zeros(...)`.",
        )
    if "view size is not compatible with input tensor's size and stride" in text:
        return (
            "`.view` needs the tensor's memory laid out in order (contiguous), and after a transpose "
            "or permute it is not: the axes moved, the memory did not",
            "Use `.reshape(...)`, which copies when it must (or `.contiguous().view(...)`).",
        )
    match = re.search(r"shape '\[([-\d, ]+)\]' is invalid for input of size (\d+)", text)
    if match:
        return (
            f"reshaping to [{match.group(1)}] does not fit a tensor of {match.group(2)} numbers: one "
            "of the sizes is not the one you meant",
            "Compute the new sizes from the tensor's own "
            "shape (`x.shape`) rather than from numbers you assume.",
        )
    match = re.search(
        r"Dimension out of range \(expected to be in range of \[(-?\d+), (-?\d+)\], but got "
        r"(-?\d+)\)",
        text,
    )
    if match:
        n = int(match.group(2)) + 1
        return (
            f"axis {match.group(3)} does not exist on a tensor with {n} axes (they are numbered 0 to "
            f"{n - 1}, or -{n} to -1 from the end)",
            "Count axes from the end (-1 is the last, -2 the one before): the same code then works "
            "with and without a batch axis in front.",
        )
    if "a leaf Variable that requires grad is being used in an in-place operation" in text:
        return (
            "an in-place operation (`+=`, `x[...] = ...`, a method ending in `_`) changes one of the "
            "inputs, which track gradients and must stay as they were",
            "Work on new tensors: `x = x - m` rather than `x -= m`, `masked_fill` rather than "
            "`masked_fill_`.",
        )
    if "only supports boolean masks" in text:
        return (
            "a mask must hold True/False (dtype bool), and this one holds numbers",
            "Build the mask with a comparison, which gives bools (e.g. positions compared with the lengths).",
        )
    if "with a bool tensor is not supported" in text:
        return (
            "arithmetic on a True/False mask (such as `1 - mask`) is not defined in PyTorch",
            "Flip a boolean mask with `~mask` (logical not).",
        )
    if type_name == "TypeError" and "softmax" in text and ("dim" in text or "invalid combination" in text):
        return (
            "softmax was not told which axis to normalise over (the keys' axis)",
            "Pass the axis: `torch.softmax(scores, dim=-1)`.",
        )
    match = re.search(r"index (-?\d+) is out of bounds for dimension (\d+) with size (\d+)", text)
    if match:
        return (
            f"index {match.group(1)} is past the end of axis {match.group(2)}, which has "
            f"{match.group(3)} positions numbered 0 to {int(match.group(3)) - 1}",
            "",
        )
    match = re.search(r"name '(\w+)' is not defined", text)
    if match and type_name in ("NameError", "UnboundLocalError"):
        return (
            f"`{match.group(1)}` is not defined where your function looks for it: a typo, a name from "
            "a cell that has not been run, or a variable of another function",
            "",
        )
    if type_name == "ZeroDivisionError":
        return (
            "a division by zero: an empty group (a length of 0, an empty bucket, no key left) "
            "reached a division",
            "Decide what an empty group gives (the task text says) and handle it before dividing.",
        )
    if "does not require grad and does not have a grad_fn" in text:
        return (
            "a gradient was asked of something that does not depend on any tensor that tracks "
            "gradients: the tensor you differentiate with respect to was never marked to track them, "
            "or was cut off (detached) on the way",
            "Make a copy of the input that tracks gradients (`.detach().clone().requires_grad_(True)`), "
            "compute from that copy, then ask for its gradient.",
        )
    match = re.search(r"(too many|not enough) values to unpack \(expected (\d+)(?:, got (\d+))?\)", text)
    if match:
        got = f" and got {match.group(3)}" if match.group(3) else ""
        return (
            f"unpacking expected {match.group(2)} values{got}: the value unpacked has a different "
            "number of parts than names on the left (a function returning another number of values, "
            "or a tensor unpacked along its first axis)",
            "",
        )
    match = re.search(r"cannot unpack non-iterable (\w+) object", text)
    if match:
        return (
            f"a single {match.group(1)} was unpacked into several names: the value is one thing, not "
            "a tuple (a function that returns one value, or None)",
            "",
        )
    match = re.search(r"'(\w+)' object is not subscriptable", text)
    if match:
        return (
            f"a {match.group(1)} was indexed with [...]: the value is not the tensor or list you "
            "expected (a function that returned something else, or a reused name)",
            "",
        )
    match = re.search(r"'(\w+)' object is not callable", text)
    if match:
        return (
            f"a {match.group(1)} was called like a function: a name that held a function now holds "
            "a value (reused as a variable), or round brackets where square ones were meant",
            "",
        )
    if "return_types" in text:
        kind = re.search(r"return_types\.(\w+)", text)
        name = kind.group(1) if kind else "max"
        return (
            f"`{name}(dim=...)` gives a pair (values, indices), not a tensor, and the pair was used as a "
            "tensor",
            f"Take the values of the pair: `x.{name}(dim=-1).values` (or use `amax`, which "
            "returns the values alone).",
        )
    if "Class values must be non-negative" in text:
        return (
            "one_hot needs class indices of 0 or more, and one is negative (a `length - 1` is -1 for "
            "a sentence of length 0)",
            "",
        )
    match = re.search(r"unsupported operand type\(s\) for ([^:]+): '([\w.]+)' and '([\w.]+)'", text)
    if match:
        op, a, b = match.groups()
        return (
            f"`{op.strip()}` between {_a(a)} and {_a(b)} is not defined: one of the two is not what you "
            "expected (None from a function without `return`, or a list where a tensor is needed)",
            "",
        )
    match = re.search(r"'(\w+)' object has no attribute '(\w+)'", text)
    if match:
        return (
            f"a {match.group(1)} has no attribute `{match.group(2)}`: the value is not the kind you "
            "expected, or the name is misspelt",
            "",
        )
    if "list index out of range" in text or "tuple index out of range" in text:
        return (
            "an index past the end of a list: positions count from 0, so the last of n items is "
            "n - 1, and an empty list has none",
            "",
        )
    if (
        "number of dims don't match in permute" in text
        or "number of dimensions in the tensor input does not match the length of the desired ordering"
        in text
    ):
        return (
            "a permutation needs exactly one entry per axis of the tensor, and yours has a different number",
            "",
        )
    if "only integer tensors of a single element can be converted to an index" in text:
        return (
            "a tensor used as an index or a count (in `range()`, say) must be one integer, and this "
            "one is a float or holds several numbers",
            "",
        )
    if re.search(
        r"[Dd]imension size must be non-negative|negative dimensions are not allowed|"
        r"negative dimension -?\d+",
        text,
    ):
        return (
            "a tensor was asked to have a negative size: a size computed from the inputs came out "
            "below 0 (a length minus 1 for a sentence of length 0, say)",
            "Work out the size your line asks for on the case named, by hand; the task allows lengths of 0.",
        )
    match = re.search(r"'(\S+)' not supported between instances of '([\w.]+)' and '([\w.]+)'", text)
    if match:
        op, a, b = match.groups()
        return (
            f"`{op}` compares {_a(a)} with {_a(b)}, which cannot be ordered: one side is not what you "
            "expected (None from a function without `return`, or a list where a tensor is needed)",
            "",
        )
    match = re.search(r"Tensors must have same number of dimensions: got (\d+) and (\d+)", text)
    if match:
        return (
            f"torch.cat joins tensors along an axis they already have, and these have different "
            f"numbers of axes ({match.group(1)} and {match.group(2)}): one lacks an axis the other has",
            "Give the pieces the same axes first (`unsqueeze`), or use `torch.stack`, which makes the "
            "new axis itself.",
        )
    match = re.search(
        r"Sizes of tensors must match except in dimension (\d+)\. Expected size (\d+) but got "
        r"size (\d+)",
        text,
    )
    if match:
        axis, a, b = match.groups()
        return (
            f"torch.cat joins tensors along axis {axis}, and all their other axes must agree; here one "
            f"has size {a} and another {b}: the pieces come from different inputs, or the joining axis "
            "is not the one you meant",
            "Write the shape of every piece one above the other: only the joining axis may differ.",
        )
    match = re.search(
        r"stack expects each tensor to be equal size, but got \[([\d, ]*)\] at entry (\d+) and "
        r"\[([\d, ]*)\] at entry (\d+)",
        text,
    )
    if match:
        a, i, b, j = match.groups()
        return (
            f"torch.stack needs pieces of one shape, and piece {i} has shape ({a}) while piece {j} has "
            f"({b}): the pieces were not computed alike (a different length, or a different axis)",
            "",
        )
    if "expects a non-empty TensorList" in text:
        return (
            "torch.stack (or torch.cat) got an empty list: the loop that fills it ran zero times (a "
            "length of 0, or a range that is empty)",
            "Decide what an empty input gives (the task text says) and build that result without the loop.",
        )
    match = re.search(
        r"einsum\(\): the number of subscripts in the equation \((\d+)\) does not match the "
        r"number of dimensions \((\d+)\) for operand (\d+)",
        text,
    )
    if match:
        m, n, k = match.groups()
        return (
            f"operand {k} of your einsum has {n} axes but its letters name {m}: one letter per axis "
            "(or `...` for the leading ones)",
            "",
        )
    match = re.search(
        r"einsum\(\): output subscript (\w) does not appear in the equation for any input", text
    )
    if match:
        return (
            f"the letter {match.group(1)} of your einsum's result appears in no operand: every output "
            "letter must come from an input",
            "",
        )
    if "masked_fill" in text and "only supports a 0-dimensional value tensor" in text:
        return (
            "masked_fill fills every masked position with one single value, and the value given holds "
            "several numbers",
            "To take values from another tensor where a mask says so, choose "
            "element by element: `torch.where(mask, a, b)`.",
        )
    if "tensors used as indices must be long, int, byte or bool tensors" in text:
        return (
            "a tensor of floats was used as an index (or as positions): indices are whole numbers, "
            "or a True/False mask",
            "Build positions with `torch.arange` (integers), or compare to get a mask.",
        )
    if "Class values must be smaller than num_classes" in text:
        return (
            "one_hot got a class index at or beyond the number of classes given (indices count from "
            "0, so the largest allowed is the number of classes minus 1)",
            "",
        )
    match = re.search(r"\b(tril|triu)\b.*must have at least 2 dimensions", text)
    if match:
        return (f"`{match.group(1)}` works on a matrix (at least 2 axes), and this tensor has fewer", "")
    if re.search(
        r"batch1 must be a 3D tensor|Expected 3-dimensional tensor, but got \d+-dimensional tensor "
        r"for argument #\d+ 'batch",
        text,
    ):
        return (
            "`bmm` multiplies batches of matrices (3 axes each: batch, rows, columns), and a factor "
            "here has another number of axes",
            "`@` (matmul) takes factors with or without a batch axis in front.",
        )
    match = re.search(r"too many indices for tensor of dimension (\d+)", text)
    if match:
        return (
            f"the tensor was indexed at more positions than it has axes ({match.group(1)}): it has fewer "
            "axes than you assumed (no batch axis, or one already removed)",
            "",
        )
    if re.search(r"(len\(\)|iteration) over a 0-d tensor|len\(\) of a 0-d tensor", text):
        return (
            "a single number (a 0-D tensor) was used like a sequence (len, a for loop, unpacking): it "
            "has no items; an indexing or a reduction before removed the axis you meant to go over",
            "",
        )
    if "only one element tensors can be converted to Python scalars" in text:
        return (
            "`float()`, `int()` or `.item()` needs a tensor of one number, and this one holds several: "
            "the step works on whole tensors, not single numbers",
            "Keep the values in tensors and use "
            "tensor operations (torch.where, torch.maximum, masks) instead of Python numbers.",
        )
    if "cannot be converted to type int64_t without overflow" in text or (
        "cannot be converted to type" in text and "without overflow" in text
    ):
        return (
            "a tensor of integers (a mask or lengths turned into numbers, say) was given -inf, inf or "
            "a number too large, which integers cannot hold",
            "Fill a floating tensor (the scores) rather than an integer one.",
        )
    if "modified by an inplace operation" in text:
        return (
            "an in-place operation (`+=`, `x[...] = ...`, a method ending in `_`) changed a tensor that "
            "autograd still needed for the gradients",
            "Replace in-place operations by ones that make new tensors.",
        )
    match = re.search(r"(\w+)\(\): argument '(\w+)' \(position \d+\) must be ([\w ,]+?), not (\w+)", text)
    if match:
        fn, arg, want, got = match.groups()
        return (
            f"`{fn}` got {_a(got)} for its argument `{arg}`, which must be {want}: the value is not what "
            "you expected (None from a function without `return`, say)",
            "",
        )
    if "same dtype" in text or ("dtype" in text and re.search(r"\b(Float|Double)\b", text)):
        return (
            "tensors of two dtypes meet in one operation: a tensor you created (torch.tensor, "
            "torch.zeros, torch.ones, torch.arange, ...) gets float32 (or int64) by default, while "
            "the grader's inputs are float64",
            "Create new tensors with the inputs' dtype: `dtype=x.dtype`, or `x.new_zeros(shape)`.",
        )
    if type_name == "RecursionError":
        return (
            "your function calls itself without end (or too deep): Python stops a recursion at its limit of "
            "calls in progress",
            "",
        )
    if type_name == "NotImplementedError":
        if re.search(r"\braise\s+NotImplementedError\b", code):
            return (
                "this part of your function is not written yet: the line raises NotImplementedError, the "
                "exercises' placeholder for code still to be written",
                "",
            )
        if not text:
            return (
                "what this line calls is not written yet: it raises NotImplementedError without a word, as "
                "the exercises' placeholder for code still to be written does",
                "",
            )
        return (f"an operation is not implemented for these inputs (PyTorch says: {text[:120]})", "")
    return "", ""


def translate_error(
    type_name: str, text: str, where: str = "", function: str = "", transposed_3d: bool | None = None
) -> tuple[str, str]:
    """A learner's exception in the book's words: ``(message, hint)``.

    A pure function of the exception's type name, its text, the learner's line (``"line 7: code"`` or the
    code alone, as :func:`learner_frame` gives it) and the name of the function that line is in, so that
    an exception reported from another process reads exactly like a local one. ``transposed_3d``: whether
    the call used ``.T`` on a tensor with more than 2 axes, when known (a local call is re-run to find out);
    ``None`` words a size error on a line with ``.T`` to cover both causes. The message names the
    function, the line and the mistake, never the code of the fix; the hint (second tier) may."""
    text = " ".join(str(text).split()) if text else ""
    _, code = _split_where(where)
    explanation, hint = _explain(type_name, text, code, transposed_3d)
    if not explanation:
        first = text.split(". ")[0] if len(text) > 200 else text
        explanation = first[:200].rstrip(".")
    message = raised_words(type_name, where, function) + (f": {explanation}" if explanation else "")
    return message, hint


def raised_words(type_name: str, where: str = "", function: str = "") -> str:
    """The start of :func:`translate_error`'s message, who raised what where (`` `f` raised RuntimeError at
    line 7 (`code`)``), for a task that words the rest itself (``Task.rewords``)."""
    number, code = _split_where(where)
    who = f"`{function}`" if function and not function.startswith("<") else "your function"
    at = ""
    if number or code:
        at = f" at line {number}" if number else ""
        at += f" (`{code}`)" if code else ""
    return f"{who} raised {type_name}{at}"


def raised_fail(error: tuple, explanation: str, case: Case, diagnosis: str, hint: str = "") -> Fail:
    """A learner's exception (``Fail.error``) with a task's own ``explanation`` of it (``Task.rewords``),
    worded like :func:`translate_error`'s."""
    type_name, _, where, function = error
    return Fail(
        f"{raised_words(type_name, where, function)}: {explanation}. Seen on {case.describe()}.",
        diagnosis,
        hint,
    )


# --------------------------------------------------------------------------------------------------
# Running a task
# --------------------------------------------------------------------------------------------------

_STUB_LINE = re.compile(r"^raise\s+NotImplementedError\b")


def _not_attempted() -> Fail:
    return Fail(
        "not attempted yet: replace `raise NotImplementedError()` with your code, run that cell, "
        "then run this one again.",
        "not_attempted",
    )


def _raised(
    type_name: str, text: str, where: str, function: str, fn, case: Case, transposed_3d: bool | None = None
) -> Fail:
    """The Fail for a learner's exception (local or reported by a proxy): same words either way."""
    _, code = _split_where(where)
    called = getattr(fn, "__name__", "")
    # the stub's line, or a bare NotImplementedError (PyTorch's always say what is missing) from a line
    # whose code cannot be read (a function compiled from a string, or run in another process)
    stub = _STUB_LINE.match(code) or (not code and not str(text or "").strip())
    if type_name == "NotImplementedError" and (not where or stub):
        if not function or not where or function == called or function.startswith("<"):
            return _not_attempted()
        return Fail(
            f"your function calls `{function}`, which is not written yet (it still raises "
            f"NotImplementedError): write `{function}` first, run its cell, then this one. Seen on "
            f"{case.describe()}.",
            "calls_unwritten",
        )
    message, hint = translate_error(type_name, text, where, function, transposed_3d)
    failure = Fail(f"{message}. Seen on {case.describe()}.", "raised", hint)
    failure.error = (type_name, str(text or ""), where, function)
    return failure


def _watch_types(value) -> list[type]:
    """The distinct tensor types in ``value`` that watch the learner's call (``observe``, ``settle`` and
    ``discard``, as :class:`attnbook.blockwise.ScoreWatch`)."""
    found: list[type] = []
    for t in _tensors(value):
        kind = type(t)
        if callable(getattr(kind, "observe", None)) and callable(getattr(kind, "settle", None)):
            if kind not in found:
                found.append(kind)
    return found


def _call(
    task: Task,
    fn: Callable,
    case: Case,
    args: tuple,
    kwargs: dict,
    guard: ForbiddenCallGuard | None = None,
    tries: int = 1,
):
    """Call the learner's function under the time limit (and ``guard``, when given); every way it can
    go wrong becomes a :class:`Fail`. ``tries``: which attempt this is (a time-out says how many)."""
    # arguments that watch how the learner's function reads them (set 10's blocks): the guard hands
    # them every operation of the call at PyTorch's dispatcher (only here: a proxy's call runs in another
    # process, whose guard does the same there), and they judge the record right after the call
    watches = _watch_types((args, kwargs))
    if guard is not None:
        guard.local = not getattr(fn, "runs_elsewhere", False)
        guard.observers = [w.observer() for w in watches] if guard.local else []
        guard.inputs = [args, kwargs]
    # threads the function starts are watched too, as in the trusted grader's kernel
    threads = guard is not None and guard.local and threading.getprofile() is None
    try:
        try:
            if threads:
                threading.setprofile(guard.hook)
            with guard if guard is not None else contextlib.nullcontext(), time_limit(task.timeout_s):
                value = fn(*args, **kwargs)
            if guard is not None:
                guard.check_result(value)
        except BaseException:
            for watch in watches:  # a call that did not return is judged by how it ended, not its record
                watch.discard()
            raise
        finally:
            if threads:
                threading.setprofile(None)
            if guard is not None and guard.found:
                raise ForbiddenUse(guard.found)
        for watch in watches:
            watch.settle()
        return value
    except ForbiddenUse as use:
        raise Fail(
            forbidden_message(use.names),
            "forbidden_call",
            "Write the step with torch operations yourself; the chapter shows how, one line at a time.",
        ) from None
    except LearnerTimeout:
        stopped = (
            f"your function was stopped after {task.timeout_s:g} s on {case.describe()} without "
            "returning (the time limit of this task)"
            if tries == 1
            else f"your function was stopped twice, after {task.timeout_s:g} s each time, on "
            f"{case.describe()} without returning (the time limit of this task; a first call that is "
            "stopped is tried once more, in case it was slow to start)"
        )
        if _has_loop(fn) is False:
            raise Fail(
                f"{stopped}. It has no loop, so the time went to slow work inside it: an import, the first "
                "use of something slow to start (torch.func, say), or a very large computation; on a busy "
                "machine these take longer. Run the graded cell again; if it stops again, move the slow "
                "work out of the function.",
                "timeout",
            ) from None
        raise Fail(
            f"{stopped}: the usual cause is a loop that never ends (a `while` whose condition never "
            "changes, or a decoding loop without a stop); very slow work inside the function (an import, "
            "the first use of torch.func, a large computation) counts too.",
            "timeout",
        ) from None
    except LearnerError as exc:
        raise _raised(exc.type_name, exc.text, exc.where, exc.function, fn, case, exc.transposed_3d) from None
    except Fail:
        raise
    except Exception as exc:  # the learner's own error, reported in one line
        where, function = learner_frame(exc)
        transposed_3d = None
        if _DOT_T.search(where) and (inspect.isfunction(fn) or inspect.ismethod(fn)):
            transposed_3d = "dot_T" in _trace(task, fn, case, args, kwargs)
        raise _raised(type(exc).__name__, str(exc), where, function, fn, case, transposed_3d) from None


_LOOP_OPS = frozenset(
    op
    for name, op in __import__("dis").opmap.items()
    if name.startswith("JUMP_BACKWARD") or name in ("FOR_ITER", "JUMP_ABSOLUTE")
)


def _has_loop(fn) -> bool | None:
    """Whether the learner's function, or a function of theirs it calls by name, contains a loop
    (``for``/``while``, comprehensions included); ``None`` when unknown. A proxy may say so in a
    ``has_loop`` attribute (the kernel computes it with this function; it only words a message)."""
    if not (inspect.isfunction(fn) or inspect.ismethod(fn)):
        said = getattr(fn, "has_loop", None)
        return said if isinstance(said, bool) else None
    import dis

    fn = getattr(fn, "__func__", fn)
    scope = dict(getattr(fn, "__globals__", {}) or {})
    for name, cell in zip(fn.__code__.co_freevars, fn.__closure__ or ()):
        with contextlib.suppress(ValueError):
            scope[name] = cell.cell_contents
    codes, seen = [fn.__code__], set()
    for name in referenced_names(fn):
        value = scope.get(name)
        module = getattr(value, "__module__", "") or ""
        if inspect.isfunction(value) and not module.startswith(("attnbook", "torch", "numpy")):
            codes.append(value.__code__)
    while codes:
        code = codes.pop()
        if code in seen:
            continue
        seen.add(code)
        if any(ins.opcode in _LOOP_OPS for ins in dis.get_instructions(code)):
            return True
        codes.extend(c for c in code.co_consts if inspect.iscode(c))
    return False


def _check_types(task: Task, case: Case, value, expected: tuple) -> tuple:
    n = len(expected)
    if value is None:
        raise Fail("your function returned None: did you forget the `return` statement?", "returned_none")
    asked = ", ".join(f"`{name}`" for name in task.output_names)
    if isinstance(value, tuple) and len(value) > n and (n > 1 or not isinstance(expected[0], (tuple, list))):
        # more values than asked for (the scores as well as the weights, say): name what the task asks for
        raise Fail(
            f"your function returns {len(value)} values, but this task asks for "
            + (f"{n} ({asked}), in that order." if n > 1 else f"one ({asked}): return only that one."),
            "too_many_outputs",
        )
    if n > 1:
        if not isinstance(value, (tuple, list)) or len(value) != n:
            returned = type_name(value)
            if isinstance(value, (tuple, list)):  # say how many: a tuple of 3 is not "a tuple"
                kind = "tuple" if isinstance(value, tuple) else "list"
                returned = f"a {kind} of {len(value)} value{'s' if len(value) != 1 else ''}"
            raise Fail(
                f"your function should return {n} values ({', '.join(task.output_names)}) as a tuple, "
                f"but returned {returned}.",
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
                hint = (
                    " (a new tensor made without dtype=... is float32)"
                    if got.dtype == torch.float32 and exp.dtype == torch.float64
                    else ""
                )
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
            raise Fail(f"{m.message}. Seen on {case.describe()}.", m.key, m.hint)
    for prop in task.properties if properties else ():
        message = prop(case, outputs)
        if message:
            raise Fail(
                f"{message}. Seen on {case.describe()}.",
                getattr(prop, "key", prop.__name__),
                getattr(prop, "hint", ""),
            )


# ------------------------------------------------------------------ task-independent detectors


def _to_float32(value):
    if isinstance(value, torch.Tensor):
        return value.detach().float() if value.dtype == torch.float64 else value.detach().clone()
    if isinstance(value, (list, tuple)):
        return type(value)(_to_float32(v) for v in value)
    if isinstance(value, dict):
        return {k: _to_float32(v) for k, v in value.items()}
    return clone(value)


def _float32_computation(task: Task, case: Case, got: torch.Tensor, exp: torch.Tensor, index: int) -> bool:
    """True when ``got`` is what the reference gives computed in float32, not in float64: some step of
    the learner's computation ran in float32."""
    if exp.dtype != torch.float64 or not _isfinite(got).all() or not _isfinite(exp).all():
        return False
    try:
        with torch.no_grad(), time_limit(task.timeout_s):
            low = as_outputs(
                task.reference(*_to_float32(case.args), **_to_float32(case.kwargs)), len(task.output_names)
            )[index]
    except (Exception, LearnerTimeout):
        return False
    if not isinstance(low, torch.Tensor) or low.shape != exp.shape:
        return False
    got, exp = got.detach(), exp.detach()
    scale = 1.0 + float(exp.abs().max()) if exp.numel() else 1.0
    noise = float((low.detach().double() - exp).abs().max()) if exp.numel() else 0.0
    error = float((got.double() - exp).abs().max()) if exp.numel() else 0.0
    # the learner's error is float32 rounding: small, and of the size float32 rounding has here
    return 0 < noise and error <= 1e-4 * scale and error <= 50 * noise + 1e-7 * scale


def _float32_number(task: Task, case: Case, got, exp: float, index: int) -> bool:
    """:func:`_float32_computation` for a task whose answer is one number (a float): ``got`` is what the
    reference gives computed in float32."""
    try:
        value = float(got)
        with torch.no_grad(), time_limit(task.timeout_s):
            low = as_outputs(
                task.reference(*_to_float32(case.args), **_to_float32(case.kwargs)), len(task.output_names)
            )[index]
        low = float(low)
    except (Exception, LearnerTimeout):
        return False
    if not all(math.isfinite(x) for x in (value, low, exp)):
        return False
    scale = 1.0 + abs(exp)
    noise, error = abs(low - exp), abs(value - exp)
    return 0 < noise and error <= 1e-4 * scale and error <= 50 * noise + 1e-7 * scale


def _has_mask_argument(task: Task, case: Case) -> bool:
    try:
        names = list(inspect.signature(task.reference).parameters)
    except (TypeError, ValueError):
        names = []
    named = any("mask" in n or "length" in n for n in names)
    return named or any(isinstance(a, torch.Tensor) and a.dtype == torch.bool for a in case.args)


def _fully_masked_rows_only(task: Task, case: Case, label: str, got: torch.Tensor, exp: torch.Tensor) -> None:
    """Wrong (or NaN) only in the rows of queries that have no key left: name that."""
    if got.shape != exp.shape or exp.dim() == 0 or not exp.numel() or not _has_mask_argument(task, case):
        return
    g, e = got.detach().double(), exp.detach().double()
    bad_rows = (
        (~_isclose(g, e, atol=task.atol, rtol=task.rtol, equal_nan=True)).reshape(-1, exp.shape[-1]).any(-1)
    )
    empty_rows = (e.reshape(-1, exp.shape[-1]) == 0).all(-1)
    if bad_rows.any() and bool(empty_rows[bad_rows].all()) and bool((~bad_rows & ~empty_rows).any()):
        raise Fail(
            f"{label} is right everywhere except in the rows of queries that have no key left (every key "
            f"masked, or a length of 0) on {case.describe()}: your code does not handle a query that may "
            "attend to nothing.",
            "wrong_fully_masked_rows",
            "The task text says what such a row holds; make sure that value survives every step (a row of "
            "-inf scores gives NaN in a plain softmax: 0/0).",
        )


def _engine_diagnosis(
    task: Task, case: Case, label: str, got: torch.Tensor, exp: torch.Tensor, index: int, fn=None
) -> None:
    """The most specific task-independent diagnosis of a wrong, finite tensor (raises :class:`Fail`)."""
    if got.shape != exp.shape:
        return
    if _float32_computation(task, case, got, exp, index):
        raise _float32_fail(label, case)
    if exp.dim() == 0:
        return
    bad = ~_isclose(
        got.detach().double(), exp.detach().double(), atol=task.atol, rtol=task.rtol, equal_nan=True
    )
    _constant_factor(task, case, label, got, exp)
    _wrong_at_masked_positions(task, case, label, got, exp, bad)
    B = case.dims.get("B")
    if fn is not None and isinstance(B, int) and B >= 2 and exp.dim() >= 1 and exp.shape[0] == B:
        bad_items = bad.reshape(B, -1).any(-1)
        if bad_items.any() and _right_item_by_item(task, fn, case, B, index):
            right = [int(i) for i in torch.nonzero(~bad_items).flatten()]
            wrong = [int(i) for i in torch.nonzero(bad_items).flatten()]
            right_text = f"right for batch item(s) {right} but " if right else ""
            raise Fail(
                f"{label} is {right_text}wrong for batch item(s) {wrong} on {case.describe()}, yet right "
                "when each item is given alone: the batch items are mixed (one item's keys, length or mask "
                "used for another, a reduction over the batch axis, or a reshape that mixes the batch axis "
                "with another).",
                "batch_items_mixed",
                "Follow one batch item through your code: every tensor it touches should be indexed by "
                "its own b, and reshapes should keep B as the first axis.",
            )


def _factor_in_words(c: float, dims: dict) -> str:
    """``"√(d_k/T_k)"`` when the factor ``c`` is a simple expression of the case's sizes, else ''."""
    sizes = {name: float(n) for name, n in dims.items() if isinstance(n, int) and n > 1}
    candidates = []
    for a, na in sizes.items():
        candidates += [(na, a), (na**0.5, f"√{a}"), (1 / na, f"1/{a}"), (na**-0.5, f"1/√{a}")]
        for b, nb in sizes.items():
            if a != b and na != nb:
                candidates += [(na / nb, f"{a}/{b}"), ((na / nb) ** 0.5, f"√({a}/{b})")]
    for value, words in candidates:
        if math.isclose(c, value, rel_tol=1e-6):
            return words
    return ""


def _constant_factor(task: Task, case: Case, label: str, got: torch.Tensor, exp: torch.Tensor) -> None:
    """``got`` is ``exp`` times one constant everywhere: a scale factor is wrong or missing, or the sign."""
    g, e = got.detach().double().flatten(), exp.detach().double().flatten()
    if not (_isfinite(g).all() and _isfinite(e).all()) or e.numel() < 2:
        return
    scale = float(e.abs().max())
    big = e.abs() > 1e-6 * max(scale, 1e-300)
    if scale == 0 or int(big.sum()) < 2 or (g[~big].abs() > task.atol).any():
        return
    ratios = g[big] / e[big]
    c = float(ratios.median())
    if not math.isfinite(c) or abs(c) < 1e-12 or math.isclose(c, 1.0, rel_tol=1e-6):
        return
    if not _allclose(g, c * e, atol=task.atol, rtol=1e-6):
        return
    if math.isclose(c, -1.0, rel_tol=1e-6):
        raise Fail(
            f"{label} has the opposite sign of the expected one everywhere on {case.describe()}: a "
            "difference or a product taken the other way round.",
            "opposite_sign",
        )
    words = _factor_in_words(c, case.dims)
    named = f" = {words}" if words else ""
    raise Fail(
        f"{label} is the expected one times {c:.4g}{named} everywhere on {case.describe()}: a scale factor "
        "is wrong, missing or applied twice (compare the factor with this case's sizes).",
        "constant_factor",
        "Write the formula with its scale factor next to your line: which size goes under the square "
        "root, and is it applied exactly once?",
    )


def _wrong_at_masked_positions(
    task: Task, case: Case, label: str, got: torch.Tensor, exp: torch.Tensor, bad: torch.Tensor
) -> None:
    """Wrong only where a boolean mask argument removes positions: the mask is not honoured there."""
    if not bad.any():
        return
    for arg in list(case.args) + list(case.kwargs.values()):
        if not (isinstance(arg, torch.Tensor) and arg.dtype == torch.bool):
            continue
        try:
            keep = arg.expand(exp.shape)
        except RuntimeError:
            continue
        if bool((bad & keep).any()) or not bool((~keep).any()):
            continue
        raise Fail(
            f"{label} is right at every kept position but wrong at masked (removed) ones on "
            f"{case.describe()}: a removed key must take no part (weight exactly 0).",
            "wrong_at_masked_positions",
            "Remove the masked keys before the softmax (their scores become -inf), not after it.",
        )


def _slice_item(value, B: int, b: int):
    if isinstance(value, torch.Tensor) and value.dim() >= 1 and value.shape[0] == B:
        return value[b : b + 1].clone()
    return clone(value)


def _right_item_by_item(task: Task, fn: Callable, case: Case, B: int, index: int) -> bool:
    """True when ``fn`` gives the reference's answer on every batch item fed alone (a batch of 1): then
    what is wrong with the whole batch is that its items are mixed."""
    if not any(isinstance(a, torch.Tensor) and a.dim() >= 1 and a.shape[0] == B for a in case.args):
        return False
    n = len(task.output_names)
    try:
        with time_limit(task.timeout_s * 2):
            for b in range(B):
                args = tuple(_slice_item(a, B, b) for a in case.args)
                kwargs = {k: _slice_item(v, B, b) for k, v in case.kwargs.items()}
                expected = as_outputs(task.reference(*clone(args), **clone(kwargs)), n)[index]
                got = as_outputs(plain(fn(*args, **kwargs)), n)[index]
                if not close(got, expected, task.atol, task.rtol, equal_nan=True):
                    return False
    except (Exception, LearnerTimeout):
        return False
    return True


def _trace(task: Task, fn: Callable, case: Case, args=None, kwargs=None) -> set:
    """Re-run ``fn`` under a recording torch-function mode (only to word a message): ``{"dot_T"}`` when it
    used ``.T`` on a tensor with more than 2 axes, ``{"float32"}`` when an operation made a float32 (or
    half) tensor."""
    from torch.overrides import TorchFunctionMode

    seen: set = set()
    low = (torch.float32, torch.float16, torch.bfloat16)

    class _Mode(TorchFunctionMode):
        def __torch_function__(self, func, types, args=(), kwargs=None):
            if (
                getattr(getattr(func, "__self__", None), "__name__", "") == "T"
                and args
                and isinstance(args[0], torch.Tensor)
                and args[0].dim() > 2
            ):
                seen.add("dot_T")
            out = func(*args, **(kwargs or {}))
            if any(isinstance(t, torch.Tensor) and t.dtype in low for t in _tensors(out)):
                seen.add("float32")
            return out

    try:
        with _Mode(), time_limit(task.timeout_s):
            fn(
                *clone(case.args if args is None else args),
                **clone(case.kwargs if kwargs is None else kwargs),
            )
    except (Exception, LearnerTimeout):
        pass
    return seen


_EXP_FUNCTIONS = frozenset(
    {"exp", "exp_", "softmax", "_softmax", "log_softmax", "_log_softmax", "logsumexp", "softmin"}
)
_COMPUTES_EXP: dict = {}


def _computes_exp(task: Task, case: Case) -> bool:
    """Whether the task's step involves an exponential (a softmax, exp, logsumexp), found by running its
    reference once under a recording torch-function mode; only to word the message on NaN or inf."""
    known = _COMPUTES_EXP.get(task.id)
    if known is not None:
        return known
    from torch.overrides import TorchFunctionMode

    seen: list = []

    class _Mode(TorchFunctionMode):
        def __torch_function__(self, func, types, args=(), kwargs=None):
            if getattr(func, "__name__", "") in _EXP_FUNCTIONS:
                seen.append(func)
            return func(*args, **(kwargs or {}))

    try:
        with _Mode(), time_limit(task.timeout_s):
            task.reference(*clone(case.args), **clone(case.kwargs))
    except Fail:
        raise  # a watched tensor's check (set 10), due at the grader's first use of it
    except (Exception, LearnerTimeout):
        pass
    _COMPUTES_EXP[task.id] = bool(seen)
    return bool(seen)


def _traced_transpose(task: Task, fn: Callable, case: Case) -> bool:
    return "dot_T" in _trace(task, fn, case)


def _float32_fail(label: str, case: Case) -> Fail:
    return Fail(
        f"{label} agrees with the answer computed in float32 (about 7 significant digits) but not to "
        f"float64 precision on {case.describe()}: a step of your computation runs in float32 (a tensor "
        "created without a dtype, a float32 constant, or a conversion) before the result comes back "
        "as float64.",
        "float32_computation",
        "Keep every intermediate in the inputs' dtype: create tensors with `dtype=x.dtype`, and do not "
        "convert with `.float()` on the way.",
    )


def _check_precision(task: Task, case: Case, outputs: tuple, expected: tuple, fn=None) -> None:
    """Right within the task's tolerance, yet only to float32's precision: some step ran in float32.

    A float64 answer computed in another order agrees to ~1e-13; float32 rounding leaves ~1e-7. Flagged
    only when the error is what the reference computed in float32 shows, and (for a local function) an
    operation of the learner's made a float32 tensor."""
    for index, (name, got, exp) in enumerate(zip(task.output_names, outputs, expected)):
        if not (
            isinstance(exp, torch.Tensor)
            and isinstance(got, torch.Tensor)
            and exp.dtype == torch.float64
            and got.shape == exp.shape
            and exp.numel()
        ):
            continue
        g, e = got.detach().double(), exp.detach().double()
        finite = _isfinite(e) & _isfinite(g)
        if not finite.any():
            continue
        scale = 1.0 + float(e[finite].abs().max())
        if float((g[finite] - e[finite]).abs().max()) <= 1e-9 * scale:
            continue
        label = "your result" if len(expected) == 1 else f"`{name}`"
        if _float32_computation(task, case, got, exp, index) and (
            fn is None or "float32" in _trace(task, fn, case)
        ):
            raise _float32_fail(label, case)


_DOT_T_FAIL = Fail(
    "`.T` reverses every axis of a tensor with more than 2 axes (it turns (B, T, d) into (d, T, B)); you "
    "want to swap only the last two",
    "transpose_all_axes",
    _TRANSPOSE_HINT,
)


def _check_order(task: Task, case: Case, outputs: tuple, expected: tuple) -> None:
    """The right values returned in another order than the task's: say so (after the task's own
    misconceptions, which may name it more precisely)."""
    import itertools

    n = len(expected)
    if n < 2 or n > 4:
        return
    if all(close(g, e, task.atol, task.rtol, equal_nan=True) for g, e in zip(outputs, expected)):
        return
    for order in itertools.permutations(range(n)):
        if order == tuple(range(n)):
            continue
        if all(
            close(outputs[j], expected[i], task.atol, task.rtol, equal_nan=True) for i, j in enumerate(order)
        ):
            _diagnose(task, case, outputs, properties=False)
            got = ", ".join(task.output_names[i] for i in sorted(range(n), key=lambda i: order[i]))
            raise Fail(
                f"your function returns the right values in the wrong order: ({got}) instead of the "
                f"task's ({', '.join(task.output_names)}). Seen on {case.describe()}.",
                "swapped_outputs",
            )


def _check_values(task: Task, case: Case, outputs: tuple, expected: tuple, fn=None) -> None:
    """Compare with the reference; when wrong, give the most specific diagnosis available: the task's
    misconceptions and properties first, then the engine's task-independent detectors, then the generic
    message. ``fn`` (the learner's callable) lets the engine re-run it to word a message."""
    local = fn if inspect.isfunction(fn) or inspect.ismethod(fn) else None
    _check_order(task, case, outputs, expected)
    for index, (name, got, exp) in enumerate(zip(task.output_names, outputs, expected)):
        label = "your result" if len(expected) == 1 else f"`{name}`"
        if isinstance(exp, torch.Tensor) and got.shape != exp.shape:
            got_text, exp_text = _shape_texts(task, case, index, got.shape, exp.shape)
            _diagnose(task, case, outputs, properties=False)
            if local is not None and "dot_T" in _trace(task, local, case):
                raise Fail(
                    f"{_DOT_T_FAIL.message}. Seen on {case.describe()}.",
                    _DOT_T_FAIL.diagnosis,
                    _DOT_T_FAIL.hint,
                )
            if got.dim() >= 2 and tuple(got.shape[:-2]) + (got.shape[-1], got.shape[-2]) == tuple(exp.shape):
                raise Fail(
                    f"{label} has shape {got_text} but should have shape "
                    f"{exp_text}: the last two axes are swapped (transposed).",
                    "transposed",
                )
            raise Fail(
                f"{label} has shape {got_text} but should have shape {exp_text}. Seen on {case.describe()}.",
                "wrong_shape",
            )
    for index, (name, got, exp) in enumerate(zip(task.output_names, outputs, expected)):
        # NaN matches NaN only where the reference itself is NaN (a NaN where a number is due still fails).
        if close(got, exp, task.atol, task.rtol, equal_nan=True):
            continue
        _diagnose(task, case, outputs)
        label = "your result" if len(expected) == 1 else f"`{name}`"
        if isinstance(exp, torch.Tensor):
            _fully_masked_rows_only(task, case, label, got, exp)
            if not _isfinite(got).all() and _isfinite(exp).all():
                if _computes_exp(task, case):
                    raise Fail(
                        f"{label} contains NaN or inf on {case.describe()}; the expected values are finite. "
                        "Large scores overflow exp(): subtract the maximum first.",
                        "not_finite",
                    )
                raise Fail(
                    f"{label} contains NaN or inf on {case.describe()}; the expected values are finite: a step "
                    "of your computation is undefined or overflows at these inputs (a division by 0, 0 · inf, "
                    "inf - inf, or a number too large for float64).",
                    "not_finite",
                )
            if local is not None and "dot_T" in _trace(task, local, case):
                raise Fail(
                    f"{_DOT_T_FAIL.message}. Seen on {case.describe()}.",
                    _DOT_T_FAIL.diagnosis,
                    _DOT_T_FAIL.hint,
                )
            _engine_diagnosis(task, case, label, got, exp, index, fn)
            detail = first_difference(got, exp) + _distribution_words(got, exp)
        else:  # numbers and lists (hand tasks): never reveal the expected answer
            detail = f"your answer {_rounded(got)} is not what the check computes"
            if (
                not task.hand
                and isinstance(exp, float)
                and _float32_number(task, case, got, exp, index)
                and (local is None or "float32" in _trace(task, local, case))
            ):
                raise _float32_fail(label, case)
            form, key = _answer_form(task, got, exp)
            if form:
                raise Fail(f"{form}. Seen on {case.describe()}.", key)
            if isinstance(exp, list) and isinstance(got, (list, tuple)) and len(got) == len(exp):
                i = next(
                    i
                    for i, (g, e) in enumerate(zip(got, exp))
                    if not close(g, e, task.atol, task.rtol, equal_nan=True)
                )
                should = "; it should be None" if exp[i] is None else ""
                detail = (
                    f"item {i} of your answer, {_rounded(got[i])}, is not what the check computes{should}"
                )
        right = [
            n
            for i, (n, g, e) in enumerate(zip(task.output_names, outputs, expected))
            if i != index and close(g, e, task.atol, task.rtol, equal_nan=True)
        ]
        if right:
            names = ", ".join(f"`{n}`" for n in right)
            detail += (
                f" ({names} {'is' if len(right) == 1 else 'are'} right: look at what only {label} depends on)"
            )
        raise Fail(f"{label} is wrong on {case.describe()}: {detail}.", "wrong_values")


def _decimals(x: float) -> int:
    """How many decimals ``x`` is written with (at most 7)."""
    for k in range(8):
        if round(x, k) == x:
            return k
    return 8


def _answer_form(task: Task, got, exp) -> tuple[str, str]:
    """What is wrong with the form of a by-hand answer, and its diagnosis: a list of another length, a
    table where a flat list is due, or the right numbers rounded too coarsely (``("", "")`` for none)."""
    words = f" ({task.answer_words})" if task.answer_words else ""
    if isinstance(exp, list) and isinstance(got, (list, tuple)):
        tables = [g for g in got if isinstance(g, (list, tuple))]
        if tables and not any(isinstance(e, (list, tuple)) for e in exp):
            return (
                f"your answer is a table, a list of {len(got)} lists, but the task asks for one flat list of "
                f"{len(exp)} numbers{words}",
                "wrong_shape",
            )
        if len(got) != len(exp):
            unit = "number" if len(got) == 1 else "numbers"
            return (
                f"your answer has {len(got)} {unit}, but the task asks for {len(exp)}{words}",
                "wrong_length",
            )
    pairs = list(zip(got, exp)) if isinstance(exp, list) and isinstance(got, (list, tuple)) else [(got, exp)]
    try:
        numbers = [(float(g), float(e)) for g, e in pairs]
    except (TypeError, ValueError):
        return "", ""
    if not numbers or not all(math.isfinite(g) for g, _ in numbers):
        return "", ""
    places = max(_decimals(g) for g, _ in numbers)
    needed = max(0, math.ceil(-math.log10(task.atol))) if task.atol > 0 else 8
    # whole numbers are a slip more likely than a rounding, and are left to the value check
    if 1 <= places < needed and all(abs(g - e) <= 0.5 * 10.0**-places + 1e-12 for g, e in numbers):
        rounded = "rounded to 1 decimal" if places == 1 else f"rounded to {places} decimals"
        if not task.hand:  # a function's result: the function rounds it
            return (
                f"your function's result is the right one, rounded ({places} decimals kept): the rounding is "
                f"what is wrong. The check compares with a tolerance of {task.atol:g}, so return what your "
                "function computes without rounding it",
                "rounded_result",
            )
        return (
            f"your numbers are the right ones {rounded}, which is not precise enough: the check allows a "
            f"difference of {task.atol:g} per number, so give at least {needed} decimals",
            "not_precise",
        )
    return "", ""


def _row_distributions(t: torch.Tensor) -> bool:
    """True when every row (last axis) of ``t`` is non-negative and sums to 1 or is all 0 (a query with
    no key left), and ``t`` is not just zeros and ones."""
    if not t.is_floating_point() or t.dim() < 1 or t.shape[-1] < 2 or not t.numel():
        return False
    x = t.detach().double()
    if not _isfinite(x).all() or (x < -1e-12).any() or bool(((x == 0) | (x == 1)).all()):
        return False
    sums = x.sum(-1)
    return bool((((sums - 1).abs() < 1e-6) | (x == 0).all(-1)).all())


def _distribution_words(got: torch.Tensor, exp: torch.Tensor) -> str:
    """For an output that is a distribution on each row (weights): what property the learner's has."""
    if got.shape != exp.shape or not _row_distributions(exp):
        return ""
    if _row_distributions(got):
        return (
            "; each of your rows is a distribution (non-negative, summing to 1) as it should be, but not "
            "this one: the scores that go into the softmax differ"
        )
    g = got.detach().double()
    if not _isfinite(g).all():
        return ""
    sums = g.sum(-1)
    negative = ", and some weights are negative" if (g < -1e-12).any() else ""
    return (
        f"; each row should be a distribution (non-negative, summing to 1), and yours is not: your rows "
        f"sum to between {float(sums.min()):.4g} and {float(sums.max()):.4g}{negative}"
    )


def _float_tensors(args, dicts: bool = True) -> list[torch.Tensor]:
    found = []
    for a in args:
        if isinstance(a, torch.Tensor) and a.is_floating_point():
            found.append(a)
        elif isinstance(a, (list, tuple)):
            found.extend(_float_tensors(a, dicts))
        elif dicts and isinstance(a, dict):
            found.extend(_float_tensors(list(a.values()), dicts))
    return found


def _mutation_message(name: str, case: Case, before) -> Fail:
    hint = (
        "Work on new tensors: `x = x - m` rather than `x -= m`; `masked_fill` rather than `masked_fill_`."
        if isinstance(before, (torch.Tensor, np.ndarray))
        else "Build a new list or value instead of changing this one (no .append, .sort, or item "
        "assignment on it)."
    )
    return Fail(
        f"your function changed its input `{name}` in place on {case.describe()}: the caller's "
        "data must stay as it was.",
        "mutates_input",
        hint,
    )


def _check_inputs_unchanged(names: list, originals: tuple, after: tuple, states: list, case: Case) -> None:
    for name, before, now, state in zip(names, originals, after, states):
        if not same_input(now, before):
            raise _mutation_message(name, case, before)
        if not same_autograd_state(state, autograd_state(now)):
            raise Fail(
                f"your function changed the autograd state of its input `{name}` (its requires_grad or "
                f".grad) on {case.describe()}: whether and how an input tracks gradients is the "
                "caller's business.",
                "mutates_input",
                "Do not call `.requires_grad_()`, `.backward()` or `.detach_()` on the inputs inside the "
                "function; return the result and let the caller decide.",
            )


def _has_empty_row(task: Task, case: Case, expected: tuple) -> bool:
    """True when the case has a query with no key left: a mask argument, and an expected output with a
    row (last axis) of zeros."""
    if not _has_mask_argument(task, case):
        return False
    for e in expected:
        if isinstance(e, torch.Tensor) and e.dim() >= 2 and e.numel() and e.is_floating_point():
            rows = e.detach().reshape(-1, e.shape[-1])
            if bool((rows == 0).all(-1).any()):
                return True
    return False


#: said with every gradient failure: the task texts speak of values, and a learner may not expect this check
GRADIENTS_CHECKED = (
    "The grader checks gradients too, because a model is trained through this step: gradients must flow "
    "back through it to its inputs."
)


def _nan_gradient_fail(task: Task, case: Case, expected: tuple) -> Fail:
    """The values are right but the gradient that flows back is NaN (or inf) where the reference's is
    finite: say where the NaN comes from, in the book's words (not "detached": nothing is cut off)."""
    if _has_empty_row(task, case, expected):
        return Fail(
            f"your values are right, but the gradients that flow back through your function are NaN on "
            f"{case.describe()}, where a query has no key left: your value for that row is right, yet the "
            "backward pass still goes through the row's -inf scores, and there -inf - (-inf) or 0 · inf "
            "gives NaN, which reaches the inputs (in training, one step would make the parameters NaN). "
            f"Setting a NaN result to 0 afterwards fixes the values only, not the gradients. {GRADIENTS_CHECKED}",
            "nan_gradient",
            "Let no -inf take part in arithmetic whose gradient flows back to the inputs: filling masked "
            "scores (masked_fill, torch.where) sends them no gradient, adding a -inf mask does; and take "
            "the softmax of a row with no key left from finite scores, then set that row to 0.",
        )
    return Fail(
        f"your values are right, but the gradients that flow back through your function are NaN or inf on "
        f"{case.describe()}, where the expected ones are finite: a step's derivative is not finite at these "
        "inputs (-inf - (-inf), 0 · inf, the square root or log of 0), even if the values were repaired "
        f"afterwards. {GRADIENTS_CHECKED}",
        "nan_gradient",
        "Find the step whose inputs hold -inf or 0 there and keep those entries out of the arithmetic "
        "(fill them with finite numbers first, then put the special values back at the end).",
    )


def _check_grad(task: Task, fn: Callable, case: Case, names: list, guard=None) -> None:
    """The learner's function must let gradients flow exactly like the reference, into every floating
    tensor of the arguments (inside lists, tuples and dicts too), and leave the inputs' autograd state."""
    ref_args, learner_args = clone(case.args), clone(case.args)
    ref_kwargs, learner_kwargs = clone(case.kwargs), clone(case.kwargs)
    ref_leaves = _float_tensors(ref_args) + _float_tensors(list(ref_kwargs.values()))
    learner_leaves = _float_tensors(learner_args) + _float_tensors(list(learner_kwargs.values()))
    for t in ref_leaves + learner_leaves:
        t.requires_grad_(True)
    states = [autograd_state(a) for a in learner_args]
    expected = as_outputs(task.reference(*ref_args, **ref_kwargs), len(task.output_names))
    value = plain(_call(task, fn, case, learner_args, learner_kwargs, guard))
    _check_inputs_unchanged(names, case.args, learner_args, states, case)
    got = as_outputs(value, len(task.output_names))
    generator = torch.Generator().manual_seed(0)
    ref_loss, learner_loss = 0.0, 0.0
    for g, e in zip(got, expected):
        if not isinstance(e, torch.Tensor) or not e.requires_grad:
            continue
        if not isinstance(g, torch.Tensor) or not g.requires_grad:
            raise Fail(
                f"your result is cut off from autograd on {case.describe()} (no gradient can flow back "
                "to the inputs): .item(), .numpy(), .detach(), .data or a new tensor built with "
                "torch.tensor(...) breaks the chain, and so does computing under torch.no_grad(), "
                f"where nothing is recorded for autograd. {GRADIENTS_CHECKED}",
                "breaks_autograd",
                "Build every intermediate with torch operations on the inputs (torch.stack, torch.cat, "
                "torch.where instead of lists of numbers).",
            )
        weight = torch.randn(e.shape, generator=generator, dtype=e.dtype)
        ref_loss = ref_loss + (e * weight).sum()
        learner_loss = learner_loss + (g * weight).sum()
    if isinstance(ref_loss, float):
        return
    ref_grads = _autograd_grad(ref_loss, ref_leaves, allow_unused=True)
    try:
        learner_grads = _autograd_grad(learner_loss, learner_leaves, allow_unused=True)
    except RuntimeError as exc:
        text = str(exc).strip().splitlines()[0] if str(exc).strip() else ""
        if "inplace operation" in text or "in-place operation" in text:
            raise Fail(
                f"your values are right, but backpropagating through your function fails on {case.describe()}: "
                "an in-place operation (`+=`, `x[...] = ...`, a method ending in `_`) changed a tensor that "
                f"autograd still needed for the gradients. {GRADIENTS_CHECKED}",
                "breaks_autograd",
                "Replace in-place operations (`x += ...`, `.masked_fill_`, `x[...] = ...`) by ones that "
                "make new tensors.",
            ) from None
        raise Fail(
            f"your values are right, but backpropagating through your function fails on {case.describe()} "
            f"(PyTorch says: {text[:160]}): a gradient cannot be computed through one of its steps. "
            f"{GRADIENTS_CHECKED}",
            "breaks_autograd",
            "Build the result from differentiable torch operations on the inputs.",
        ) from None
    for r, g in zip(ref_grads, learner_grads):
        r = torch.zeros(()) if r is None else r
        g = torch.zeros(()) if g is None else g
        if not _isfinite(g).all() and _isfinite(r).all():
            raise _nan_gradient_fail(task, case, expected)
        if not _allclose(r.double(), g.double(), atol=1e-5, rtol=1e-4):
            raise Fail(
                f"your values are right but the gradients that flow back through your function are not, "
                f"on {case.describe()}: part of the computation is detached from autograd (.detach(), "
                ".data, .item() or a tensor rebuilt with torch.tensor), or runs under torch.no_grad(). "
                f"{GRADIENTS_CHECKED}",
                "breaks_autograd",
            )


# --------------------------------------------------------------------------------------------------
# Dependencies between the tasks of a set
# --------------------------------------------------------------------------------------------------


def referenced_names(fn) -> list[str]:
    """Global and free names a Python function's code (and its nested functions') refers to, in order."""
    code = getattr(fn, "__code__", None)
    if code is None:
        return []
    names: list[str] = []
    stack = [code]
    while stack:
        c = stack.pop(0)
        for n in tuple(c.co_names) + tuple(c.co_freevars):
            if n not in names:
                names.append(n)
        stack.extend(k for k in c.co_consts if inspect.iscode(k))
    return names


def used_task_functions(task: Task, fn) -> dict[str, tuple[Task, Callable]]:
    """``{name: (earlier task, learner's function)}`` for the functions of earlier tasks of the same set
    that ``fn`` uses (looked up by name in its globals and closure)."""
    from .registry import all_tasks

    earlier = {}
    for other in all_tasks().values():
        if other.id == task.id:
            break
        if other.set_id == task.set_id:
            earlier[other.function_name] = other
    if not earlier:
        return {}
    scope = dict(getattr(fn, "__globals__", {}) or {})
    closure = getattr(fn, "__closure__", None) or ()
    for name, cell in zip(getattr(getattr(fn, "__code__", None), "co_freevars", ()), closure):
        with contextlib.suppress(ValueError):
            scope[name] = cell.cell_contents
    found = {}
    for name in referenced_names(fn):
        value = scope.get(name)
        if name in earlier and callable(value) and value is not fn:
            module = getattr(value, "__module__", "") or ""
            if not module.startswith(("attnbook", "torch", "numpy")):
                found[name] = (earlier[name], value)
    return found


def _blame_dependency(task: Task, fn, failure: Fail, dependencies) -> Fail:
    if failure.diagnosis in ("not_attempted", "not_callable", "wrong_signature", "forbidden_call"):
        return failure
    if dependencies is None:
        try:
            deps = used_task_functions(task, fn)
        except Exception:
            return failure
    else:
        from .registry import get_task

        deps = {}
        for name, value in dependencies.items():
            known = getattr(value, "task", None)  # a proxy may say which task its function answers
            if isinstance(known, Task) and known.id != task.id:
                deps[name] = (known, value)
                continue
            for other_id in _task_ids_named(task, name):
                deps[name] = (get_task(other_id), value)
    for name, (other, dep_fn) in deps.items():
        result = run_task(other, dep_fn, dependencies={})
        if not result.passed:
            state = "is not written yet for" if result.status == NOT_ATTEMPTED else "fails"
            return Fail(
                f"task {task.id} uses your `{name}`, which {state} task {other.id}: fix that one first.",
                "dependency_fails",
                f"Run the graded cell of {other.id} to see what is wrong there; this task may pass "
                "once that one does.",
            )
    return failure


def _task_ids_named(task: Task, name: str) -> list[str]:
    from .registry import all_tasks

    ids = []
    for other in all_tasks().values():
        if other.id == task.id:
            break
        if other.set_id == task.set_id and other.function_name == name:
            ids.append(other.id)
    return ids


# --------------------------------------------------------------------------------------------------
# The entry point
# --------------------------------------------------------------------------------------------------


def _reworded(task: Task, case: Case | None, failure: Fail, fn) -> Fail:
    """``failure`` in the task's own words where one of its ``rewords`` has them."""
    for reword in task.rewords if case is not None else ():
        try:
            better = reword(case, failure, fn)
        except Exception:  # a reword that cannot read this failure has nothing to say
            better = None
        if isinstance(better, Fail):
            return better
    return failure


def _recursed_to_the_limit(task: Task, fn: Callable, case: Case, guard: ForbiddenCallGuard | None) -> bool:
    """Whether the guard's watch was found off because the learner's function recursed to Python's
    recursion limit: a RecursionError raised while the watch's profile function runs switches it off,
    and a function that catches that error (``except RecursionError``, or every exception) then returns
    as if nothing happened. Found out by calling the (local) function again, unguarded, while counting
    how deep its calls go; the verdict (0 points) stays, only its words change."""
    if guard is None or not any(str(n).startswith("<the grader's watch") for n in guard.found):
        return False
    frame, depth_here = sys._getframe(), 0
    while frame is not None:
        depth_here, frame = depth_here + 1, frame.f_back
    room = sys.getrecursionlimit() - depth_here
    depth = [0, 0]  # now, deepest

    def count(frame, event, arg):
        if event == "call":
            depth[0] += 1
            depth[1] = max(depth[1], depth[0])
        elif event == "return":
            depth[0] -= 1

    previous = sys.getprofile()
    try:
        with time_limit(task.timeout_s):
            sys.setprofile(count)
            try:
                fn(*clone(case.args), **clone(case.kwargs))
            finally:
                sys.setprofile(previous)
    except (Exception, LearnerTimeout):
        pass
    return room > 0 and depth[1] >= 0.8 * room


def _runaway_recursion() -> Fail:
    return Fail(
        "0 points: your function calls itself without end, and catches the RecursionError with which Python "
        "stops such a recursion at its limit (an `except RecursionError`, or an `except` that catches every "
        "exception). That error also switched off the grader's watch over the functions your function "
        "calls, so the answer earns nothing: a recursion needs a case that ends it well before the limit.",
        "runaway_recursion",
    )


def _hints_for(task: Task, failure: Fail) -> tuple:
    tiers = [failure.hint] if failure.hint else []
    tiers += [h for h in (task.hint, *task.hints) if h]
    return tuple(dict.fromkeys(tiers))


def run_task(
    task: Task, fn: Any, *, guard: bool = True, dependencies: Mapping[str, Callable] | None = None
) -> Result:
    """Try ``fn`` on every case of ``task``; return the learner-facing :class:`Result`.

    ``fn`` may be any callable, a proxy for a function that runs elsewhere included (see
    :class:`LearnerError`). ``guard=False`` turns the forbidden-call guard off (for the grader's own
    tests of its references). ``dependencies``: ``{name: callable}`` of the learner's functions of
    earlier tasks that ``fn`` uses (a proxy's; a value with a ``task`` attribute says which task it
    answers, else the name is matched with ``Task.function_name``); by default they are found in
    ``fn``'s globals."""

    def result(status: str, message: str, diagnosis: str = "", hints: tuple = ()) -> Result:
        points = task.points if status == PASSED else 0
        # the learner's language (attnbook.set_language / ATTNBOOK_LANG); English text is left as it is
        hints = tuple(translate(h) for h in hints)
        return Result(
            task.id, translate(task.title), status, translate(message), points, task.points, diagnosis, hints
        )

    if fn is None or fn is Ellipsis:
        return result(
            NOT_ATTEMPTED, "not attempted yet: write the function, then run this cell.", "not_attempted"
        )
    case = None  # the case being tried, for a task's rewords
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
            fits = len(required) <= len(expected_names) and (
                varargs or len(positional) >= len(expected_names)
            )
            if not fits:
                raise Fail(
                    f"your function takes {len(positional)} argument(s) but the task's signature is "
                    f"({', '.join(expected_names)}): keep the signature given in the task.",
                    "wrong_signature",
                )
        except (TypeError, ValueError):
            pass
        cases = task.cases()
        allowed = [c.args for c in cases] + [list(c.kwargs.values()) for c in cases]
        watch = ForbiddenCallGuard(forbidden_names(task), allowed) if guard else None
        for number, case in enumerate(cases):
            args, kwargs = clone(case.args), clone(case.kwargs)
            states = [autograd_state(a) for a in args]
            try:
                value = _call(task, fn, case, args, kwargs, watch)
            except Fail as failure:
                local = inspect.isfunction(fn) or inspect.ismethod(fn)
                if (
                    failure.diagnosis == "forbidden_call"
                    and local
                    and _recursed_to_the_limit(task, fn, case, watch)
                ):
                    raise _runaway_recursion() from None
                if number or failure.diagnosis != "timeout" or not local:
                    raise
                # the first call may pay once for imports and warm-up (torch.func, say): try it again
                # (a local function only: a proxy's sandbox is torn down after a time-out)
                args, kwargs = clone(case.args), clone(case.kwargs)
                value = _call(task, fn, case, args, kwargs, watch, tries=2)
            value = plain(value)  # compared as plain tensors, whatever type the learner's are
            _check_inputs_unchanged(expected_names, case.args, args, states, case)
            expected = as_outputs(
                task.reference(*clone(case.args), **clone(case.kwargs)), len(task.output_names)
            )
            outputs = _check_types(task, case, value, expected)
            _check_values(task, case, outputs, expected, fn)
            _check_precision(
                task, case, outputs, expected, fn if inspect.isfunction(fn) or inspect.ismethod(fn) else None
            )
        if task.check_grad:
            for case in cases:
                _check_grad(task, fn, case, expected_names, watch)
    except Fail as failure:
        failure = _reworded(task, case, failure, fn)
        failure = _blame_dependency(task, fn, failure, dependencies)
        status = NOT_ATTEMPTED if failure.diagnosis == "not_attempted" else FAILED
        return result(status, failure.message, failure.diagnosis, _hints_for(task, failure))
    except Exception as exc:  # the checker itself could not handle what it got: say so, no traceback
        return result(
            FAILED,
            f"the checker could not handle your result ({type(exc).__name__}: "
            f"{str(exc).strip().splitlines()[0] if str(exc).strip() else 'no detail'}); check its type and shape "
            "against the task text.",
            "unhandled_result",
        )
    n = len(cases)
    unit = "point" if task.points == 1 else "points"
    return result(PASSED, f"passed {n} case{'s' if n != 1 else ''}, {task.points}/{task.points} {unit}")
