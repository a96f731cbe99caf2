"""Set 09 (self-attention and multi-head attention): every known-wrong implementation is caught, with the
right diagnosis. Written the way learners write them, independently of the grader's misconception models.
"""

from __future__ import annotations

import dataclasses
import math

import pytest
import torch

from attnbook.grading import get_task, run_task

# ------------------------------------------------------------------------------------------ split / merge


def split_reshape(x, h):
    B, T, D = x.shape
    return x.reshape(B, h, T, D // h)


def split_view_only(x, h):
    B, T, D = x.shape
    return x.view(B, T, h, D // h)


def split_wrong_order(x, h):
    B, T, D = x.shape
    return x.view(B, T, D // h, h).permute(0, 3, 1, 2)


def split_chunks_stacked_on_time(x, h):
    return torch.stack(x.chunk(h, dim=-1), dim=2)  # (B, T, h, d_h): heads not moved in front of time


def split_transpose_wrong_axes(x, h):
    B, T, D = x.shape
    return x.view(B, T, h, D // h).transpose(0, 2)  # (h, T, B, d_h)


def split_in_place(x, h):
    x.mul_(1.0)
    x.add_(0.0).unsqueeze_(0).squeeze_(0)
    x.resize_(x.shape[0], x.shape[1], x.shape[2])
    x[0, 0, 0] = x[0, 0, 0] + 1.0
    B, T, D = x.shape
    return x.view(B, T, h, D // h).permute(0, 2, 1, 3)


def merge_reshape(x):
    B, h, T, d_h = x.shape
    return x.reshape(B, T, h * d_h)


def merge_view_after_transpose(x):
    B, h, T, d_h = x.shape
    return x.transpose(1, 2).view(B, T, h * d_h)  # view on a non-contiguous tensor raises


def merge_wrong_permute(x):
    B, h, T, d_h = x.shape
    return x.permute(0, 2, 3, 1).reshape(B, T, -1)


def merge_mean(x):
    return x.mean(1)


def merge_sum(x):
    return torch.sum(x, dim=1)


def merge_cat_on_time(x):
    return torch.cat(x.unbind(1), dim=1)  # (B, h·T, d_h)


# ------------------------------------------------------------------------------------------ multi-head


def _heads(t, h):
    B, T, D = t.shape
    return t.view(B, T, h, D // h).transpose(1, 2)


def _concat(t):
    B, h, T, d_h = t.shape
    return t.transpose(1, 2).contiguous().view(B, T, h * d_h)


def mha_single_head(x, W_q, W_k, W_v, W_o, h):
    Q, K, V = x @ W_q, x @ W_k, x @ W_v
    weights = torch.softmax(Q @ K.transpose(-2, -1) / math.sqrt(Q.shape[-1]), dim=-1)
    return (weights @ V) @ W_o


def mha_scale_d_model(x, W_q, W_k, W_v, W_o, h):
    Q, K, V = _heads(x @ W_q, h), _heads(x @ W_k, h), _heads(x @ W_v, h)
    weights = (Q @ K.transpose(-2, -1) / math.sqrt(x.shape[-1])).softmax(-1)
    return _concat(weights @ V) @ W_o


def mha_no_scale(x, W_q, W_k, W_v, W_o, h):
    Q, K, V = _heads(x @ W_q, h), _heads(x @ W_k, h), _heads(x @ W_v, h)
    return _concat((Q @ K.transpose(-2, -1)).softmax(-1) @ V) @ W_o


def mha_no_W_o(x, W_q, W_k, W_v, W_o, h):
    Q, K, V = _heads(x @ W_q, h), _heads(x @ W_k, h), _heads(x @ W_v, h)
    d_h = Q.shape[-1]
    return _concat(torch.softmax(Q @ K.transpose(-2, -1) / d_h ** 0.5, -1) @ V)


def mha_reshape_heads(x, W_q, W_k, W_v, W_o, h):
    B, T, D = x.shape
    Q, K, V = ((x @ W).reshape(B, h, T, D // h) for W in (W_q, W_k, W_v))
    weights = torch.softmax(Q @ K.transpose(-2, -1) / math.sqrt(D // h), -1)
    return _concat(weights @ V) @ W_o


def mha_linear_convention(x, W_q, W_k, W_v, W_o, h):
    lin = torch.nn.functional.linear
    Q, K, V = _heads(lin(x, W_q), h), _heads(lin(x, W_k), h), _heads(lin(x, W_v), h)
    weights = torch.softmax(Q @ K.mT / math.sqrt(Q.shape[-1]), -1)
    return lin(_concat(weights @ V), W_o)


def mha_softmax_dim2(x, W_q, W_k, W_v, W_o, h):
    Q, K, V = _heads(x @ W_q, h), _heads(x @ W_k, h), _heads(x @ W_v, h)
    weights = torch.softmax(Q @ K.mT / math.sqrt(Q.shape[-1]), dim=2)
    return _concat(weights @ V) @ W_o


def mha_returns_weights_too(x, W_q, W_k, W_v, W_o, h):
    Q, K, V = _heads(x @ W_q, h), _heads(x @ W_k, h), _heads(x @ W_v, h)
    weights = torch.softmax(Q @ K.mT / math.sqrt(Q.shape[-1]), -1)
    return _concat(weights @ V) @ W_o, weights


def mha_exp_without_max(x, W_q, W_k, W_v, W_o, h):
    Q, K, V = _heads(x @ W_q, h), _heads(x @ W_k, h), _heads(x @ W_v, h)
    e = torch.exp(Q @ K.mT / math.sqrt(Q.shape[-1]))
    return _concat(e / e.sum(-1, keepdim=True) @ V) @ W_o


def mha_numpy_detour(x, W_q, W_k, W_v, W_o, h):
    out = torch.tensor(get_task("09.multi_head_attention").reference(x, W_q, W_k, W_v, W_o, h).detach().numpy())
    return out


def mha_loops_forever(x, W_q, W_k, W_v, W_o, h):
    head = 0
    while head < h:
        pass


WRONG = {
    "09.split_heads": [
        ("bare reshape", split_reshape, "reshape_without_permute", "permute"),
        ("view, no permute", split_view_only, "not_permuted", "(B, h, T, d_h)"),
        ("split as (d_h, h)", split_wrong_order, "interleaved_heads", "consecutive"),
        ("chunks stacked on axis 2", split_chunks_stacked_on_time, "not_permuted", "permute(0, 2, 1, 3)"),
        ("transpose(0, 2)", split_transpose_wrong_axes, "wrong_shape", "should have shape"),
        ("changes x in place", split_in_place, "mutates_input", "`x`"),
        ("forgot return", lambda x, h: None if x.view(x.shape[0], x.shape[1], h, -1) is not None else 0,
         "returned_none", "return"),
        ("h does not divide", lambda x, h: x.view(x.shape[0], h, x.shape[1], 5), "raised", "RuntimeError"),
    ],
    "09.merge_heads": [
        ("bare reshape", merge_reshape, "reshape_without_permute", "mixes positions and heads"),
        ("view after transpose", merge_view_after_transpose, "raised", "contiguous"),
        ("permute (0, 2, 3, 1)", merge_wrong_permute, "interleaved_heads", "interleaves"),
        ("mean over heads", merge_mean, "averaged_heads", "concatenates"),
        ("sum over heads", merge_sum, "summed_heads", "concatenates"),
        ("cat along time", merge_cat_on_time, "wrong_shape", "should have shape"),
        ("list of heads", lambda x: list(x.unbind(1)), "wrong_type", "torch.Tensor"),
    ],
    "09.multi_head_attention": [
        ("one big head", mha_single_head, "heads_not_split", "split Q, K and V"),
        ("√d_model", mha_scale_d_model, "scaled_by_d_model", "√d_h"),
        ("no scaling", mha_no_scale, "not_scaled", "√d_h"),
        ("no W_o", mha_no_W_o, "no_output_projection", "W_o"),
        ("reshape to heads", mha_reshape_heads, "reshape_without_permute", "mixes positions and heads"),
        ("F.linear", mha_linear_convention, "transposed_weights", "x @ W_q"),
        ("softmax over dim 2", mha_softmax_dim2, "softmax_over_queries", "over the keys"),
        ("also returns weights", mha_returns_weights_too, "wrong_type", "tuple"),
        ("exp without the max", mha_exp_without_max, "not_finite", "subtract the maximum"),
        ("through NumPy", mha_numpy_detour, "breaks_autograd", "autograd"),
    ],
}


def test_other_correct_implementations_pass():
    assert run_task(get_task("09.split_heads"), lambda x, h: torch.stack(x.chunk(h, -1), dim=1)).passed
    assert run_task(get_task("09.merge_heads"), lambda x: torch.cat(x.unbind(1), dim=-1)).passed
    assert run_task(get_task("09.multi_head_attention"), mha_single_head_per_slice).passed


def mha_single_head_per_slice(x, W_q, W_k, W_v, W_o, h):
    """Correct, written with a loop over heads and torch's SDPA."""
    d_h = x.shape[-1] // h
    Q, K, V = x @ W_q, x @ W_k, x @ W_v
    heads = [torch.nn.functional.scaled_dot_product_attention(Q[..., j * d_h:(j + 1) * d_h], K[..., j * d_h:(j + 1) * d_h],
                                                              V[..., j * d_h:(j + 1) * d_h]) for j in range(h)]
    return torch.cat(heads, dim=-1) @ W_o


def test_multi_head_attention_reference_equals_the_book_module():
    """The task's convention (x @ W) is nn.Linear's with the weights transposed, without biases."""
    from attnbook.multihead import MultiHeadAttention

    task = get_task("09.multi_head_attention")
    x, W_q, W_k, W_v, W_o, h = task.cases()[0].args
    mha = MultiHeadAttention(x.shape[-1], h, bias=False, dtype=x.dtype)
    with torch.no_grad():
        for linear, W in ((mha.W_q, W_q), (mha.W_k, W_k), (mha.W_v, W_v), (mha.W_o, W_o)):
            linear.weight.copy_(W.T)
    torch.testing.assert_close(mha(x, x, x)[0], task.reference(x, W_q, W_k, W_v, W_o, h))


def test_infinite_loop_is_stopped():
    task = dataclasses.replace(get_task("09.multi_head_attention"), timeout_s=0.5)
    assert run_task(task, mha_loops_forever).diagnosis == "timeout"
