"""Engine checks that every task gets: gradients on every case and through dict arguments, mutation of
values and of autograd state, task-independent diagnoses (float32 inside a float64 task, mixed batch
items, rows with no key left, `.T` on a 3-D tensor), and blame on an earlier task's failing function."""

from __future__ import annotations

import pytest
import torch

from attnbook.grading import Case, Task, registry, run_task
from attnbook.grading.engine import referenced_names

D = torch.float64


def _g(seed=0):
    return torch.Generator().manual_seed(seed)


# ------------------------------------------------------------------ a masked-softmax task, two cases


def _masked_ref(scores, mask):
    x = scores.masked_fill(~mask, float("-inf"))
    m = x.amax(-1, keepdim=True)
    m = torch.where(torch.isfinite(m), m, torch.zeros_like(m))
    e = torch.exp(x - m)
    s = e.sum(-1, keepdim=True)
    return e / torch.where(s > 0, s, torch.ones_like(s))


def _masked_cases():
    g = _g(1)
    keep = torch.rand(2, 3, 5, generator=g) < 0.7
    keep[..., 0] = True
    partly = keep.clone()
    partly[1, 2] = False  # one query of item 1 has no key left; the other queries keep theirs
    return [
        Case(
            "B=2, T_q=3, T_k=5",
            (torch.randn(2, 3, 5, generator=g, dtype=D), keep),
            dims={"B": 2, "T_q": 3, "T_k": 5},
        ),
        Case(
            "B=2, T_q=3, T_k=5, a query with no key",
            (torch.randn(2, 3, 5, generator=g, dtype=D), partly),
            dims={"B": 2, "T_q": 3, "T_k": 5},
        ),
    ]


MASKED = Task("97.masked", "masked softmax (engine test)", _masked_ref, _masked_cases, points=3)


def test_a_correct_answer_passes():
    assert run_task(
        MASKED, lambda s, m: torch.softmax(s.masked_fill(~m, -torch.inf), -1).nan_to_num(0.0)
    ).passed


def test_gradients_are_checked_on_every_case_not_only_the_first():
    def detached_when_a_row_is_empty(scores, mask):
        out = _masked_ref(scores, mask)
        return out.detach().requires_grad_() if not mask.any(-1).all() else out

    result = run_task(MASKED, detached_when_a_row_is_empty)
    assert result.diagnosis == "breaks_autograd" and "a query with no key" in result.message, result.message


def test_only_the_rows_with_no_key_are_wrong():
    def nan_rows(scores, mask):
        return torch.softmax(scores.masked_fill(~mask, float("-inf")), -1)

    result = run_task(MASKED, nan_rows)
    assert result.diagnosis == "wrong_fully_masked_rows", result.message
    assert "no key left" in result.message and "overflow" not in result.message


def test_float32_inside_a_float64_task_is_named_even_within_tolerance():
    def in_float32(scores, mask):
        return _masked_ref(scores.float(), mask).double()

    result = run_task(MASKED, in_float32)
    assert result.diagnosis == "float32_computation" and "float32" in result.message, result.message


def test_batch_items_mixed_only_when_each_item_alone_is_right():
    def first_items_mask(scores, mask):
        return _masked_ref(scores, mask[:1].expand_as(mask))

    result = run_task(MASKED, first_items_mask)
    assert result.diagnosis == "batch_items_mixed" and "given alone" in result.message, result.message

    def wrong_where_no_key_is_masked(scores, mask):  # a mistake of each item, alone or not: not mixing
        out = _masked_ref(scores, mask)
        return torch.where(mask.all(-1, keepdim=True), out * 0.5, out)

    assert run_task(MASKED, wrong_where_no_key_is_masked).diagnosis != "batch_items_mixed"


def switches_requires_grad_on(scores, mask):
    scores.requires_grad_(True)
    return _masked_ref(scores, mask)


def backward_into_the_input(scores, mask):
    out = _masked_ref(scores, mask)
    if scores.requires_grad:  # a debugging backward() left in: it fills the caller's .grad
        out.sum().backward(retain_graph=True)
    return out


@pytest.mark.parametrize("fn", [switches_requires_grad_on, backward_into_the_input])
def test_mutation_covers_autograd_state(fn):
    result = run_task(MASKED, fn)
    assert result.diagnosis == "mutates_input" and "autograd state" in result.message, result.message


def test_changing_values_in_place_is_a_mutation():
    def fills_input(scores, mask):
        scores.masked_fill_(~mask, float("-inf"))
        return _masked_ref(scores, mask)

    result = run_task(MASKED, fills_input)
    assert result.diagnosis == "mutates_input" and "`scores`" in result.message


# ------------------------------------------------------------------ gradients through a params dict


def _dict_ref(x, params):
    return torch.tanh(x @ params["W"].T + params["b"])


def _dict_cases():
    g = _g(2)
    return [
        Case(
            "B=3, d_in=4, d_out=2",
            (
                torch.randn(3, 4, generator=g, dtype=D),
                {"W": torch.randn(2, 4, generator=g, dtype=D), "b": torch.randn(2, generator=g, dtype=D)},
            ),
            dims={"B": 3},
        )
    ]


DICT = Task("97.dict", "dict params (engine test)", _dict_ref, _dict_cases)


def test_gradients_flow_into_tensors_inside_a_dict_argument():
    assert run_task(DICT, _dict_ref, guard=False).passed

    def detached_weights(x, params):
        return torch.tanh(x @ params["W"].detach().T + params["b"])

    assert run_task(DICT, detached_weights).diagnosis == "breaks_autograd"


def test_dot_T_on_a_3d_tensor_is_named_when_sizes_happen_to_fit():
    def ref(Q, K):
        return Q @ K.transpose(-2, -1)

    def cases():
        g = _g(3)  # B = d = T_k: Q @ K.T runs (and is wrong) instead of raising
        return [
            Case(
                "B=3, T_q=2, T_k=3, d=3",
                (torch.randn(3, 2, 3, generator=g, dtype=D), torch.randn(3, 3, 3, generator=g, dtype=D)),
                dims={"B": 3, "T_q": 2},
            )
        ]

    task = Task("97.scores", "scores (engine test)", ref, cases)
    result = run_task(task, lambda Q, K: Q @ K.T)
    assert result.diagnosis == "transpose_all_axes" and "reverses every axis" in result.message


# ------------------------------------------------------------------ blame on an earlier task


def first(x):
    return x * 3.0  # wrong: the task asks for 2 x


def second(x):
    return first(x) + 1.0


def _twice(x):
    return x * 2.0


def _cases_x():
    return [Case("d=3", (torch.arange(3, dtype=D),), dims={"d": 3})]


@pytest.fixture
def two_tasks():
    a = registry.register(Task("96.first", "first (engine test)", _twice, _cases_x))
    b = registry.register(Task("96.second", "second (engine test)", lambda x: _twice(x) + 1.0, _cases_x))
    yield a, b
    registry._TASKS.pop("96.first")
    registry._TASKS.pop("96.second")


def test_a_failing_earlier_function_is_blamed_first(two_tasks):
    assert "first" in referenced_names(second)
    result = run_task(two_tasks[1], second)
    assert result.diagnosis == "dependency_fails"
    assert result.message == (
        "task 96.second uses your `first`, which fails task 96.first: fix that one first."
    )


def test_a_proxy_passes_the_dependencies_it_knows(two_tasks):
    result = run_task(two_tasks[1], lambda x: x * 3.0 + 1.0, dependencies={"first": first})
    assert result.diagnosis == "dependency_fails"
    assert run_task(two_tasks[1], lambda x: x * 3.0 + 1.0, dependencies={}).diagnosis == "wrong_values"


def test_the_right_values_in_the_wrong_order_are_named():
    def ref(Q, K):
        w = torch.softmax(Q @ K.transpose(-2, -1), -1)
        return w @ K, w

    def cases():
        g = _g(4)
        return [
            Case(
                "B=2, T_q=3, T_k=5, d=4",
                (torch.randn(2, 3, 4, generator=g, dtype=D), torch.randn(2, 5, 4, generator=g, dtype=D)),
                dims={"B": 2},
            )
        ]

    task = Task("97.pair", "a pair (engine test)", ref, cases, output_names=("output", "weights"))
    result = run_task(task, lambda Q, K: ref(Q, K)[::-1])
    assert result.diagnosis == "swapped_outputs", result.message
    assert "(weights, output) instead of the task's (output, weights)" in result.message


def test_a_constant_factor_is_named_with_the_sizes_it_comes_from():
    def ref(Q, K):
        return Q @ K.transpose(-2, -1) / Q.shape[-1] ** 0.5

    def cases():
        g = _g(5)
        return [
            Case(
                "B=2, T_q=3, T_k=5, d=7",
                (torch.randn(2, 3, 7, generator=g, dtype=D), torch.randn(2, 5, 7, generator=g, dtype=D)),
                dims={"B": 2, "T_q": 3, "T_k": 5, "d": 7},
            )
        ]

    task = Task("97.scaled", "scaled scores (engine test)", ref, cases)
    result = run_task(task, lambda Q, K: Q @ K.transpose(-2, -1) / K.shape[-2] ** 0.5)
    assert result.diagnosis == "constant_factor" and "√(d/T_k)" in result.message, result.message
    assert run_task(task, lambda Q, K: -ref(Q, K)).diagnosis == "opposite_sign"


def test_wrong_only_at_masked_positions_is_named():
    def zero_filled(scores, mask):
        return torch.softmax(scores.masked_fill(~mask, -torch.inf), -1).nan_to_num(0.0) + (~mask) * 0.25

    result = run_task(MASKED, zero_filled)
    assert result.diagnosis == "wrong_at_masked_positions", result.message


def test_a_nan_gradient_from_a_row_with_no_key_is_named_not_called_detached():
    def additive_mask(scores, mask):
        bias = torch.zeros(mask.shape, dtype=scores.dtype).masked_fill(~mask, float("-inf"))
        return torch.softmax(scores + bias, -1).nan_to_num(0.0)  # values right, backward NaN

    result = run_task(MASKED, additive_mask)
    assert result.diagnosis == "nan_gradient", result.message
    assert "NaN" in result.message and "no key left" in result.message and "-inf - (-inf)" in result.message
    assert "detached" not in result.message and "nan_to_num" not in result.message


def test_a_nan_gradient_elsewhere_is_named_too():
    def ref(x):
        return x.abs()

    def via_sqrt(x):
        return torch.sqrt(x * x)  # right values; derivative 0/0 at x = 0

    task = Task(
        "97.abs",
        "absolute value (engine test)",
        ref,
        lambda: [Case("a zero among the inputs", (torch.tensor([0.0, -2.0, 3.0], dtype=D),))],
    )
    result = run_task(task, via_sqrt)
    assert result.diagnosis == "nan_gradient" and "NaN or inf" in result.message, result.message


def test_the_generic_message_says_which_output_is_right_and_what_property_fails():
    def ref(scores):
        w = torch.softmax(scores, -1)
        return w, w.sum(-1)

    task = Task(
        "97.pair",
        "weights and their sums (engine test)",
        ref,
        lambda: [Case("B=2, T_k=5", (torch.randn(2, 5, generator=_g(3), dtype=D),), dims={"B": 2, "T_k": 5})],
        output_names=("weights", "total"),
    )

    def other_distribution(scores):
        w = torch.softmax(scores.flip(-1) ** 2, -1)
        return w, w.sum(-1)

    def not_normalised(scores):
        w = torch.exp(scores) / (torch.exp(scores).sum(-1, keepdim=True) + 1.0)  # a 1 too many below
        return w, torch.softmax(scores, -1).sum(-1)

    first = run_task(task, other_distribution)
    assert first.diagnosis == "wrong_values" and "is a distribution" in first.message, first.message
    assert "`total` is right" in first.message
    second = run_task(task, not_normalised)
    assert "should be a distribution" in second.message and "sum to between" in second.message, second.message


def test_a_failing_backward_pass_is_called_in_place_only_when_it_is():
    def in_place(scores, mask):
        out = torch.softmax(scores.masked_fill(~mask, float("-inf")), -1)
        out[torch.isnan(out)] = 0.0  # right values; softmax's backward needed its output unchanged
        return out

    class NoBackward(torch.autograd.Function):
        @staticmethod
        def forward(ctx, x):
            return x.clone()

        @staticmethod
        def backward(ctx, grad):
            raise RuntimeError("my backward is not written")

    def custom(scores, mask):
        return NoBackward.apply(_masked_ref(scores, mask))

    first = run_task(MASKED, in_place)
    assert first.diagnosis == "breaks_autograd" and "in-place operation" in first.message, first.message
    second = run_task(MASKED, custom)
    assert second.diagnosis == "breaks_autograd" and "in-place" not in second.message, second.message
    assert "my backward is not written" in second.message
