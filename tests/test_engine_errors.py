"""Errors in the book's words: every raw PyTorch/NumPy error a learner commonly meets is translated into
a message that names the mistake, the learner's function and line, and never the code of the fix; the
translation is a pure function, so an error reported from another process reads the same."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from attnbook.grading import Case, Task, run_task
from attnbook.grading.engine import ForbiddenUse, LearnerError, LearnerTimeout, learner_frame, translate_error

D = torch.float64


def _ref(Q, K):
    return torch.softmax(Q @ K.transpose(-2, -1), dim=-1)


def _cases():
    g = torch.Generator().manual_seed(0)
    return [
        Case(
            "B=2, T_q=3, T_k=5, d=4",
            (torch.randn(2, 3, 4, generator=g, dtype=D), torch.randn(2, 5, 4, generator=g, dtype=D)),
            dims={"B": 2, "T_q": 3, "T_k": 5, "d": 4},
        )
    ]


TASK = Task("99.weights", "test weights", _ref, _cases, points=2)


def message_of(fn):
    result = run_task(TASK, fn)
    assert not result.passed
    assert "\n" not in result.message and "Traceback" not in result.message
    return result


def dot_T(Q, K):
    scores = Q @ K.T
    return torch.softmax(scores, dim=-1)


def t_method(Q, K):
    return torch.softmax(Q @ K.t(), dim=-1)


def no_transpose(Q, K):
    return torch.softmax(Q @ K, dim=-1)


def no_keepdim(Q, K):
    s = Q @ K.transpose(-2, -1)
    e = torch.exp(s - s.max(dim=-1).values)
    return e / e.sum(dim=-1, keepdim=True)


def with_numpy(Q, K):
    s = (Q @ K.transpose(-2, -1)).numpy()
    return torch.from_numpy(np.exp(s) / np.exp(s).sum(-1, keepdims=True))


def np_function(Q, K):
    s = Q @ K.transpose(-2, -1)
    e = np.exp(s)
    return torch.as_tensor(e / e.sum(-1, keepdims=True))


def float_constant(Q, K):
    scale = torch.ones(Q.shape[-1], K.shape[-2])
    return torch.softmax(Q @ scale, dim=-1)


def helper_that_fails(Q, K):
    return torch.softmax(_my_scores(Q, K), dim=-1)


def _my_scores(Q, K):
    return Q @ K


def view_after_transpose(Q, K):
    s = (Q @ K.transpose(-2, -1)).transpose(0, 1).view(-1)
    return s


@pytest.mark.parametrize(
    "fn, words",
    [
        (dot_T, ["`dot_T`", "`scores = Q @ K.T`", "reverses every axis", "only the last two"]),
        (t_method, ["`t_method`", "matrix only", "only the last two"]),
        (no_transpose, ["`no_transpose`", "4 meets 5", "transpose", "wrong order"]),
        (no_keepdim, ["`no_keepdim`", "removes the axis it reduces over", "5 and 3"]),
        (with_numpy, ["`with_numpy`", "`.numpy()` leaves PyTorch"]),
        (np_function, ["`np_function`", "NumPy function"]),
        (float_constant, ["`float_constant`", "float64 and float32", "float32 by default"]),
        (helper_that_fails, ["`_my_scores`", "`return Q @ K`", "4 meets 5"]),
        (view_after_transpose, ["contiguous", "the axes moved"]),
    ],
)
def test_raw_errors_are_translated_with_function_and_line(fn, words):
    result = message_of(fn)
    assert result.diagnosis == "raised", result.message
    for word in words:
        assert word in result.message, (word, result.message)
    # the first tier names the mistake; the code of the fix is kept for the second tier
    explanation = result.message.split("`): ", 1)[-1]  # what follows the learner's own quoted line
    for fix in ("transpose(-2, -1)", "keepdim=True", ".mT", "dtype=x.dtype"):
        assert fix not in explanation, result.message


def test_the_fix_is_in_the_second_tier():
    assert any(".transpose(-2, -1)" in h for h in message_of(dot_T).hints)
    assert any("keepdim=True" in h for h in message_of(no_keepdim).hints)


@pytest.mark.parametrize(
    "type_name, text, where, words",
    [
        (
            "RuntimeError",
            "Expected all tensors to be on the same device, but found at least two devices, cuda:0 and cpu!",
            "line 3: x = Q + torch.zeros(3)",
            ["two devices (cuda:0 and cpu)", "CPU by default"],
        ),
        (
            "RuntimeError",
            "a Tensor with 15 elements cannot be converted to Scalar",
            "line 2: m = s.max().item()",
            ["holds 15", "whole tensors"],
        ),
        (
            "RuntimeError",
            "Boolean value of Tensor with more than one value is ambiguous",
            "line 4: if s > 0:",
            ["one True/False"],
        ),
        (
            "IndexError",
            "Dimension out of range (expected to be in range of [-2, 1], but got 2)",
            "line 1: s.sum(2)",
            ["axis 2 does not exist on a tensor with 2 axes"],
        ),
        (
            "RuntimeError",
            "masked_fill_ only supports boolean masks, but got mask with dtype double",
            "",
            ["True/False"],
        ),
        (
            "RuntimeError",
            "shape '[2, 3, 2, 4]' is invalid for input of size 40",
            "line 5: x.view(2, 3, 2, 4)",
            ["[2, 3, 2, 4]", "40 numbers"],
        ),
        ("NameError", "name 'scroes' is not defined", "line 2: return scroes", ["`scroes` is not defined"]),
        (
            "NotImplementedError",
            "Could not run 'aten::foo' with arguments from the 'Sparse' backend",
            "line 1: y = f(x)",
            ["not implemented for these inputs"],
        ),
        (
            "TypeError",
            "unsupported operand type(s) for -: 'Tensor' and 'torch.return_types.max'",
            "line 2: x = scores - scores.max(dim=-1)",
            ["gives a pair (values, indices)"],
        ),
        (
            "RuntimeError",
            "Class values must be non-negative.",
            "line 3: F.one_hot(lengths - 1, T)",
            ["one_hot needs class indices of 0 or more"],
        ),
        (
            "RuntimeError",
            "The size of tensor a (5) must match the size of tensor b (3) at non-singleton dimension 1",
            "line 4: y = torch.tanh(v @ W_c.T + b_y)",
            ["a bias added", "5 and 3"],
        ),
        (
            "ValueError",
            "something only the learner knows",
            "line 9: raise ValueError('x')",
            ["something only the learner knows", "line 9"],
        ),
    ],
)
def test_translation_is_a_pure_function(type_name, text, where, words):
    message, hint = translate_error(type_name, text, where, "f")
    assert message.startswith(f"`f` raised {type_name}")
    for word in words:
        assert word in message, (word, message)
    assert "\n" not in message


def test_an_error_from_another_process_reads_like_a_local_one():
    local = message_of(no_transpose)
    try:
        no_transpose(*_cases()[0].args)
    except RuntimeError as exc:
        where, function = learner_frame(exc)
        text = str(exc)

    def proxy(Q, K):
        raise LearnerError("RuntimeError", text, where, function)

    remote = message_of(proxy)
    assert (remote.message, remote.diagnosis, remote.hints) == (local.message, local.diagnosis, local.hints)


def test_a_proxy_can_report_a_timeout_and_forbidden_calls():
    def slow(Q, K):
        raise LearnerTimeout()

    result = message_of(slow)
    assert result.diagnosis == "timeout" and "time limit" in result.message

    def borrowed(Q, K):
        raise ForbiddenUse(["attnbook.attention:softmax"])

    result = message_of(borrowed)
    assert result.diagnosis == "forbidden_call" and result.points == 0
    assert (
        "`softmax` from attnbook.attention" in result.message
        and "book's own implementation" in result.message
    )


def test_not_implemented_error_from_the_stub_elsewhere_and_from_torch():
    def weights(Q, K):
        raise NotImplementedError()

    assert run_task(TASK, weights).status == "not attempted yet"

    def scores(Q, K):
        raise NotImplementedError()

    def uses_unwritten(Q, K):
        return torch.softmax(scores(Q, K), dim=-1)

    result = message_of(uses_unwritten)
    assert result.diagnosis == "calls_unwritten" and "`scores`" in result.message

    def proxy_stub(Q, K):  # the proxy names the learner's function, whose stub line raised
        raise LearnerError("NotImplementedError", "", "line 2: raise NotImplementedError()", "proxy_stub")

    assert run_task(TASK, proxy_stub).status == "not attempted yet"

    def library(Q, K):
        raise LearnerError(
            "NotImplementedError", "Could not run 'aten::x'", "line 3: y = torch.x(Q)", "library"
        )

    assert message_of(library).diagnosis == "raised"


def test_the_success_line_shows_points():
    result = run_task(TASK, _ref, guard=False)
    assert result.passed and result.message == "passed 1 case, 2/2 points"


# Errors raised by real PyTorch/NumPy calls (so that the test follows PyTorch's wording): the message is in
# the book's words, the raw text is gone.
REAL_ERRORS = {
    "negative size": (lambda Q, K: torch.zeros(Q.shape[1] - 4), "negative size", "must be non-negative"),
    "negative size (NumPy)": (lambda Q, K: np.zeros(Q.shape[1] - 4), "negative size", "not allowed"),
    "None compared": (lambda Q, K: Q < None, "compares a tensor with None", "not supported"),
    "cat of 2-D and 1-D": (
        lambda Q, K: torch.cat([Q[0], K[0, 0]]),
        "different numbers of axes",
        "same number",
    ),
    "cat of other sizes": (
        lambda Q, K: torch.cat([Q, K], dim=-1),
        "joins tensors along axis 2",
        "Sizes of tensors",
    ),
    "stack of other shapes": (
        lambda Q, K: torch.stack([Q, K]),
        "piece 0 has shape (2, 3, 4)",
        "stack expects",
    ),
    "stack of nothing": (lambda Q, K: torch.stack([Q[0, i] for i in range(0)]), "empty list", "TensorList"),
    "einsum letters": (
        lambda Q, K: torch.einsum("ij,kj->ik", Q, K),
        "has 3 axes but its letters name 2",
        "einsum(): ",
    ),
    "masked_fill with a tensor": (
        lambda Q, K: Q.masked_fill(Q > 0, K[0, 0]),
        "one single value",
        "0-dimensional",
    ),
    "float index": (
        lambda Q, K: Q[:, torch.tensor([0.0, 1.0])],
        "floats was used as an index",
        "must be long",
    ),
    "tril of a vector": (lambda Q, K: torch.tril(Q[0, 0]), "`tril` works on a matrix", "input tensor must"),
    "bmm of matrices": (lambda Q, K: torch.bmm(Q[0], K[0].mT), "`bmm` multiplies batches", "3D"),
    "too many indices": (lambda Q, K: Q[0, 0, 0, 0], "more positions than it has axes", "too many indices"),
    "len of a number": (lambda Q, K: len(Q.sum()), "used like a sequence", "0-d tensor"),
    "float of many": (lambda Q, K: float(Q[0, 0]), "needs a tensor of one number", "only one element"),
    "-inf into integers": (
        lambda Q, K: (Q > 0).long().masked_fill(Q < 0, float("-inf")),
        "integers cannot hold",
        "int64_t",
    ),
}


@pytest.mark.parametrize("name", list(REAL_ERRORS))
def test_more_raw_errors_are_translated(name):
    fn, words, raw = REAL_ERRORS[name]
    result = message_of(fn)
    assert result.diagnosis == "raised" and words in result.message, result.message
    explanation = result.message.split("`): ", 1)[-1]  # after the learner's quoted line
    assert raw not in explanation, result.message


# ------------------------------------------------------------------ red team, round 4


def recurses_and_catches_the_error(Q, K):
    try:
        return recurses_and_catches_the_error(Q, K)
    except RecursionError:
        return _ref(Q, K)


def recurses_without_end(Q, K):
    return recurses_without_end(Q, K)


def test_a_recursion_without_end_that_catches_the_error_is_named():
    """Recursing to Python's limit switches the guard's watch off (the RecursionError is raised inside it);
    a function that catches that error was told it had "switched off the grader's watch"."""

    def catches_everything(Q, K):
        try:
            return catches_everything(Q, K)
        except Exception:
            return _ref(Q, K)

    for fn in (recurses_and_catches_the_error, catches_everything):
        result = message_of(fn)
        assert result.diagnosis == "runaway_recursion" and result.points == 0, result.message
        assert "calls itself without end" in result.message and "catches the RecursionError" in result.message
        assert "sys.setprofile" not in result.message

    result = message_of(recurses_without_end)
    assert result.diagnosis == "raised" and "calls itself without end" in result.message, result.message


def _compiled_from_a_string(source: str, name: str):
    """A function whose source lines cannot be read (compiled from a string, as a proxy may report it)."""
    namespace = {"torch": torch}
    exec(compile(source, "<a cell whose source is gone>", "exec"), namespace)
    return namespace[name]


def test_a_leftover_stub_is_never_called_a_pytorch_error():
    """Where the stub's line cannot be read, its bare NotImplementedError was quoted as PyTorch's
    ("an operation is not implemented for these inputs (PyTorch says: )")."""
    stub = _compiled_from_a_string(
        "def weights(Q, K):\n    # YOUR CODE HERE\n    raise NotImplementedError()\n", "weights"
    )
    assert run_task(TASK, stub).status == "not attempted yet"
    helper = _compiled_from_a_string(
        "def scores(Q, K):\n    raise NotImplementedError()\n\n"
        "def weights(Q, K):\n    return torch.softmax(scores(Q, K), dim=-1)\n",
        "weights",
    )
    result = message_of(helper)
    assert result.diagnosis == "calls_unwritten" and "`scores`, which is not written yet" in result.message

    def weights(Q, K):  # a placeholder of the learner's own, on a line with other code
        if Q.shape[0] > 1: raise NotImplementedError()  # noqa: E701  # fmt: skip
        return _ref(Q, K)

    result = message_of(weights)
    assert "not written yet" in result.message and "PyTorch says" not in result.message, result.message
    message, _ = translate_error("NotImplementedError", "", "line 3: s = my_scores(Q, K)", "f")
    assert "not written yet" in message and "PyTorch says" not in message, message


def test_more_values_than_asked_for_are_counted_and_named():
    """A tuple longer than asked was told to use torch.stack (one output) or only 'a tuple of 3 values'."""

    def with_scores(Q, K):
        s = Q @ K.transpose(-2, -1)
        return torch.softmax(s, dim=-1), s

    result = message_of(with_scores)
    assert result.diagnosis == "too_many_outputs", result.message
    assert "returns 2 values, but this task asks for one (`result`)" in result.message
    assert "torch.stack" not in result.message

    two = Task("99.pair", "a pair", lambda Q, K: (_ref(Q, K), Q), _cases, output_names=("weights", "Q"))
    result = run_task(two, lambda Q, K: (_ref(Q, K), Q, K))
    assert "returns 3 values, but this task asks for 2 (`weights`, `Q`)" in result.message, result.message


def test_two_numbers_shown_side_by_side_never_read_the_same():
    from attnbook.grading.engine import first_difference

    expected = torch.tensor([1.0, -2.146372, 0.5], dtype=D)
    got = torch.tensor([1.0, -2.146391, 0.5], dtype=D)
    assert first_difference(got, expected).endswith("expected -2.14637, got -2.14639")
    got = torch.tensor([1.0, -3.5, 0.5], dtype=D)
    assert first_difference(got, expected).endswith("expected -2.1464, got -3.5000")


def test_the_new_messages_read_fully_in_korean():
    from attnbook import i18n

    def with_scores(Q, K):
        return _ref(Q, K), Q

    def own_placeholder(Q, K):
        if Q.shape[0] > 1: raise NotImplementedError()  # noqa: E701  # fmt: skip
        return _ref(Q, K)

    with i18n.using("ko"):
        i18n.untranslated(clear=True)
        for fn in (recurses_and_catches_the_error, recurses_without_end, with_scores, own_placeholder):
            message = run_task(TASK, fn).message
            assert "작성" in message or "함수" in message, message
        message, _ = translate_error("NotImplementedError", "", "line 3: s = my_scores(Q, K)", "f")
        assert "아직 작성되지 않았습니다" in i18n.translate(message)
        assert i18n.untranslated(clear=True) == []


def folds_with_a_missing_helper(x, h):
    import importlib

    helper = importlib.import_module("attnbook_no_such_helper")  # raised inside importlib's frozen frames
    return helper.fold(x, h)


def test_a_frame_of_importlib_is_never_named_as_the_learners():
    """importlib's frames come from frozen modules (``<frozen importlib._bootstrap>``, no path): they are
    skipped like the standard library's, so the learner's own line is named, in both graders."""
    from test_trusted_proxy import grade_through_proxy

    from attnbook.grading import get_task

    local = run_task(get_task("09.fold_heads"), folds_with_a_missing_helper)
    remote = grade_through_proxy("09.fold_heads", folds_with_a_missing_helper)
    assert (remote.diagnosis, remote.message) == (local.diagnosis, local.message)
    assert "`folds_with_a_missing_helper` raised ModuleNotFoundError" in local.message, local.message
    assert 'importlib.import_module("attnbook_no_such_helper")' in local.message, local.message
    assert "_find_and_load" not in local.message
