"""Set 09 (multi-head attention): every known-wrong implementation is caught, with the right diagnosis.
Written the way learners write them, independently of the grader's misconception models.
"""

from __future__ import annotations

import dataclasses
import math

import pytest
import torch

from attnbook.grading import get_task, run_task

# ------------------------------------------------------------------------------------------ fold / unfold


def fold_bare_reshape(x, h):
    B, T, D = x.shape
    return x.reshape(B * h, T, D // h)


def fold_head_major(x, h):
    B, T, D = x.shape
    heads = x.view(B, T, h, D // h).permute(2, 0, 1, 3)  # (h, B, T, d_k): heads outside
    return heads.reshape(h * B, T, D // h)


def fold_interleaved(x, h):
    B, T, D = x.shape
    return x.view(B, T, D // h, h).permute(0, 3, 1, 2).reshape(B * h, T, D // h)


def fold_not_folded(x, h):
    B, T, D = x.shape
    return x.view(B, T, h, D // h).transpose(1, 2)


def fold_skips_permute(x, h):
    B, T, D = x.shape
    return x.view(B, T, h, D // h).reshape(B * h, T, D // h)


def fold_sqrt_width(x, h):
    B, T, D = x.shape
    d_k = int(math.isqrt(D))  # right only when d_model is a perfect square with h == d_k
    return x.view(B, T, h, d_k).permute(0, 2, 1, 3).reshape(B * h, T, d_k)


def fold_view_after_permute(x, h):
    B, T, D = x.shape
    return x.view(B, T, h, D // h).permute(0, 2, 1, 3).view(B * h, T, D // h)


def fold_chapter_import(x, h):
    from attnbook.multihead import split_heads

    return split_heads(x, h).reshape(-1, x.shape[1], x.shape[2] // h)


def fold_list(x, h):
    B, T, D = x.shape
    return [x[b, :, j * (D // h) : (j + 1) * (D // h)] for b in range(B) for j in range(h)]


def unfold_bare_reshape(x, h):
    Bh, T, d_k = x.shape
    return x.reshape(Bh // h, T, h * d_k)


def unfold_head_major(x, h):
    Bh, T, d_k = x.shape
    return x.view(h, Bh // h, T, d_k).permute(1, 2, 0, 3).reshape(Bh // h, T, h * d_k)


def unfold_interleaved(x, h):
    Bh, T, d_k = x.shape
    return x.view(Bh // h, h, T, d_k).permute(0, 2, 3, 1).reshape(Bh // h, T, -1)


def unfold_mean(x, h):
    return x.view(x.shape[0] // h, h, *x.shape[1:]).mean(1)


def unfold_sum(x, h):
    return x.view(x.shape[0] // h, h, *x.shape[1:]).sum(dim=1)


def unfold_stops_early(x, h):
    return x.view(x.shape[0] // h, h, *x.shape[1:])


def unfold_view_after_transpose(x, h):
    Bh, T, d_k = x.shape
    return x.view(Bh // h, h, T, d_k).transpose(1, 2).view(Bh // h, T, h * d_k)


def unfold_float32(x, h):
    Bh, T, d_k = x.shape
    out = torch.zeros(Bh // h, T, h * d_k)  # float32 by default
    for j in range(h):
        out[:, :, j * d_k : (j + 1) * d_k] = x[j::h]
    return out.to(x.dtype)


# ------------------------------------------------------------------------------------------ multi-head


def _heads(t, h):
    B, T, D = t.shape
    return t.view(B, T, h, D // h).transpose(1, 2)


def _concat(t):
    B, h, T, d_k = t.shape
    return t.transpose(1, 2).contiguous().view(B, T, h * d_k)


def _lin(x, W):
    return x @ W.T


def mha_single_head(x, W_q, W_k, W_v, W_o, h):
    Q, K, V = _lin(x, W_q), _lin(x, W_k), _lin(x, W_v)
    weights = torch.softmax(Q @ K.transpose(-2, -1) / math.sqrt(Q.shape[-1]), dim=-1)
    return _lin(weights @ V, W_o)


def mha_scale_d_model(x, W_q, W_k, W_v, W_o, h):
    Q, K, V = _heads(_lin(x, W_q), h), _heads(_lin(x, W_k), h), _heads(_lin(x, W_v), h)
    weights = (Q @ K.transpose(-2, -1) / math.sqrt(x.shape[-1])).softmax(-1)
    return _lin(_concat(weights @ V), W_o)


def mha_divide_by_d_k(x, W_q, W_k, W_v, W_o, h):
    Q, K, V = _heads(_lin(x, W_q), h), _heads(_lin(x, W_k), h), _heads(_lin(x, W_v), h)
    weights = (Q @ K.transpose(-2, -1) / Q.shape[-1]).softmax(-1)
    return _lin(_concat(weights @ V), W_o)


def mha_scale_T(x, W_q, W_k, W_v, W_o, h):
    Q, K, V = _heads(_lin(x, W_q), h), _heads(_lin(x, W_k), h), _heads(_lin(x, W_v), h)
    weights = (Q @ K.mT / Q.shape[-2] ** 0.5).softmax(-1)
    return _lin(_concat(weights @ V), W_o)


def mha_no_scale(x, W_q, W_k, W_v, W_o, h):
    Q, K, V = _heads(_lin(x, W_q), h), _heads(_lin(x, W_k), h), _heads(_lin(x, W_v), h)
    return _lin(_concat((Q @ K.transpose(-2, -1)).softmax(-1) @ V), W_o)


def mha_no_W_o(x, W_q, W_k, W_v, W_o, h):
    Q, K, V = _heads(_lin(x, W_q), h), _heads(_lin(x, W_k), h), _heads(_lin(x, W_v), h)
    d_k = Q.shape[-1]
    return _concat(torch.softmax(Q @ K.transpose(-2, -1) / d_k**0.5, -1) @ V)


def mha_reshape_heads(x, W_q, W_k, W_v, W_o, h):
    B, T, D = x.shape
    Q, K, V = (_lin(x, W).reshape(B, h, T, D // h) for W in (W_q, W_k, W_v))
    weights = torch.softmax(Q @ K.transpose(-2, -1) / math.sqrt(D // h), -1)
    return _lin(_concat(weights @ V), W_o)


def mha_x_at_W(x, W_q, W_k, W_v, W_o, h):
    Q, K, V = _heads(x @ W_q, h), _heads(x @ W_k, h), _heads(x @ W_v, h)
    weights = torch.softmax(Q @ K.mT / math.sqrt(Q.shape[-1]), -1)
    return _concat(weights @ V) @ W_o


def mha_softmax_dim2(x, W_q, W_k, W_v, W_o, h):
    Q, K, V = _heads(_lin(x, W_q), h), _heads(_lin(x, W_k), h), _heads(_lin(x, W_v), h)
    weights = torch.softmax(Q @ K.mT / math.sqrt(Q.shape[-1]), dim=2)
    return _lin(_concat(weights @ V), W_o)


def mha_softmax_heads(x, W_q, W_k, W_v, W_o, h):
    Q, K, V = _heads(_lin(x, W_q), h), _heads(_lin(x, W_k), h), _heads(_lin(x, W_v), h)
    weights = torch.softmax(Q @ K.mT / math.sqrt(Q.shape[-1]), dim=1)
    return _lin(_concat(weights @ V), W_o)


def mha_softmax_batch_folded(x, W_q, W_k, W_v, W_o, h):
    """Folded into (B·h, T, d_k) for bmm, then softmax over dim 0: heads and sentences mixed."""
    B, T, D = x.shape
    Q, K, V = (_heads(_lin(x, W), h).reshape(B * h, T, D // h) for W in (W_q, W_k, W_v))
    weights = torch.bmm(Q, K.transpose(1, 2)).div(math.sqrt(D // h)).softmax(0)
    return _lin(torch.bmm(weights, V).view(B, h, T, D // h).transpose(1, 2).reshape(B, T, D), W_o)


def mha_returns_weights_too(x, W_q, W_k, W_v, W_o, h):
    Q, K, V = _heads(_lin(x, W_q), h), _heads(_lin(x, W_k), h), _heads(_lin(x, W_v), h)
    weights = torch.softmax(Q @ K.mT / math.sqrt(Q.shape[-1]), -1)
    return _lin(_concat(weights @ V), W_o), weights


def mha_exp_without_max(x, W_q, W_k, W_v, W_o, h):
    Q, K, V = _heads(_lin(x, W_q), h), _heads(_lin(x, W_k), h), _heads(_lin(x, W_v), h)
    e = torch.exp(Q @ K.mT / math.sqrt(Q.shape[-1]))
    return _lin(_concat(e / e.sum(-1, keepdim=True) @ V), W_o)


def mha_detached(x, W_q, W_k, W_v, W_o, h):
    Q, K, V = _heads(_lin(x, W_q), h), _heads(_lin(x, W_k), h), _heads(_lin(x, W_v), h)
    weights = torch.softmax(Q @ K.mT / math.sqrt(Q.shape[-1]), -1).detach()
    return _lin(_concat(weights @ V), W_o)


def mha_book_module(x, W_q, W_k, W_v, W_o, h):
    from attnbook.multihead import MultiHeadAttention

    layer = MultiHeadAttention(x.shape[-1], h, bias=False, dtype=x.dtype)
    with torch.no_grad():
        for lin, W in ((layer.W_q, W_q), (layer.W_k, W_k), (layer.W_v, W_v), (layer.W_o, W_o)):
            lin.weight.copy_(W)
    return layer(x, x, x)[0]


def mha_loops_forever(x, W_q, W_k, W_v, W_o, h):
    head = 0
    while head < h:
        pass


def mha_scale_sqrt_h(x, W_q, W_k, W_v, W_o, h):
    Q, K, V = _heads(_lin(x, W_q), h), _heads(_lin(x, W_k), h), _heads(_lin(x, W_v), h)
    weights = (Q @ K.mT / math.sqrt(h)).softmax(-1)
    return _lin(_concat(weights @ V), W_o)


WRONG = {
    "09.fold_heads": [
        ("bare reshape", fold_bare_reshape, "reshape_without_permute", "position"),
        ("head-major rows", fold_head_major, "head_major", "b·h + j"),
        ("split as (d_k, h)", fold_interleaved, "interleaved_heads", "consecutive"),
        ("split but not folded", fold_not_folded, "not_folded", "(B·h, T, d_k)"),
        ("fold without the permute", fold_skips_permute, "reshape_without_permute", "in front of time"),
        ("d_k = isqrt(d_model)", fold_sqrt_width, "raised", "fold_sqrt_width"),
        ("view after permute", fold_view_after_permute, "raised", "contiguous"),
        ("the book's split_heads", fold_chapter_import, "forbidden_call", "0 points"),
        ("a list of slices", fold_list, "wrong_type", "torch.Tensor"),
    ],
    "09.unfold_heads": [
        ("bare reshape", unfold_bare_reshape, "reshape_without_permute", "mixes positions and heads"),
        ("head-major rows", unfold_head_major, "head_major", "head j of sentence b"),
        ("head axis last", unfold_interleaved, "interleaved_heads", "interleaves"),
        ("mean over heads", unfold_mean, "averaged_heads", "concatenates"),
        ("sum over heads", unfold_sum, "summed_heads", "concatenates"),
        ("stops at (B, h, T, d_k)", unfold_stops_early, "not_concatenated", "(B, T, h·d_k)"),
        ("view after transpose", unfold_view_after_transpose, "raised", "contiguous"),
        ("float32 buffer, rows j::h", unfold_float32, "float32_computation", "float32"),
    ],
    "09.multi_head_attention": [
        ("one big head", mha_single_head, "heads_not_split", "split Q, K and V"),
        ("√d_model", mha_scale_d_model, "scaled_by_d_model", "√d_k"),
        ("divided by d_k", mha_divide_by_d_k, "scaled_by_d_k", "square root"),
        ("√T", mha_scale_T, "scaled_by_T", "number of positions"),
        ("√h", mha_scale_sqrt_h, "scaled_by_sqrt_h", "number of heads"),
        ("no scaling", mha_no_scale, "not_scaled", "√d_k"),
        ("no W_o", mha_no_W_o, "no_output_projection", "W_o"),
        ("reshape to heads", mha_reshape_heads, "reshape_without_permute", "mixes positions and heads"),
        ("x @ W", mha_x_at_W, "weights_not_transposed", "(out_features, in_features)"),
        ("softmax over dim 2", mha_softmax_dim2, "softmax_over_queries", "over the keys"),
        ("softmax over the heads", mha_softmax_heads, "softmax_over_heads", "each head has its own"),
        ("softmax over the folded batch", mha_softmax_batch_folded, "softmax_over_batch", "batch axis"),
        ("also returns weights", mha_returns_weights_too, "too_many_outputs", "asks for one (`result`)"),
        ("exp without the max", mha_exp_without_max, "not_finite", "maximum"),
        ("detached weights", mha_detached, "breaks_autograd", "autograd"),
        ("the book's MultiHeadAttention", mha_book_module, "forbidden_call", "0 points"),
    ],
}


def mha_head_loop(x, W_q, W_k, W_v, W_o, h):
    """A loop over heads with torch's SDPA: PyTorch's kernel does the attention (earns 0 since round 1)."""
    d_k = x.shape[-1] // h
    Q, K, V = _lin(x, W_q), _lin(x, W_k), _lin(x, W_v)
    heads = []
    for j in range(h):
        part = slice(j * d_k, (j + 1) * d_k)
        heads.append(
            torch.nn.functional.scaled_dot_product_attention(Q[..., part], K[..., part], V[..., part])
        )
    return _lin(torch.cat(heads, dim=-1), W_o)


def mha_einsum(x, W_q, W_k, W_v, W_o, h):
    B, T, D = x.shape
    Q, K, V = (torch.nn.functional.linear(x, W).view(B, T, h, D // h) for W in (W_q, W_k, W_v))
    s = torch.einsum("bqhd,bkhd->bhqk", Q, K) / math.sqrt(D // h)
    out = torch.einsum("bhqk,bkhd->bqhd", s.softmax(-1), V).reshape(B, T, D)
    return torch.nn.functional.linear(out, W_o)


def mha_folded_bmm(x, W_q, W_k, W_v, W_o, h):
    B, T, D = x.shape
    fold = lambda t: t.view(B, T, h, D // h).permute(0, 2, 1, 3).reshape(B * h, T, D // h)
    Q, K, V = (fold(_lin(x, W)) for W in (W_q, W_k, W_v))
    w = torch.softmax(torch.bmm(Q, K.transpose(1, 2)) / math.sqrt(D // h), dim=-1)
    out = torch.bmm(w, V).view(B, h, T, D // h).permute(0, 2, 1, 3).reshape(B, T, D)
    return _lin(out, W_o)


def mha_float32_inside(x, W_q, W_k, W_v, W_o, h):
    return mha_folded_bmm(x.float(), W_q.float(), W_k.float(), W_v.float(), W_o.float(), h).double()


CORRECT = {
    "09.fold_heads": [
        lambda x, h: torch.stack(x.chunk(h, dim=-1), dim=1).flatten(0, 1),
        lambda x, h: torch.cat(
            [x[b : b + 1].view(1, x.shape[1], h, -1).permute(2, 0, 1, 3)[:, 0] for b in range(x.shape[0])]
        ),
    ],
    "09.unfold_heads": [
        lambda x, h: torch.cat(x.view(x.shape[0] // h, h, *x.shape[1:]).unbind(1), dim=-1),
        lambda x, h: x.unflatten(0, (-1, h)).permute(0, 2, 1, 3).flatten(2),
    ],
    "09.multi_head_attention": [mha_einsum, mha_folded_bmm],
}


WRONG["09.multi_head_attention"].append(
    ("computed in float32", mha_float32_inside, "float32_computation", "float32")
)
# PyTorch's attention kernel does the step the task asks for: since the red team's round 1 it earns 0 here
WRONG["09.multi_head_attention"].append(
    ("a loop over heads with torch's SDPA", mha_head_loop, "forbidden_call", "scaled_dot_product_attention")
)


# ------------------------------------------------------------------ red team, round 4 (sibling gaps)


def mha_merged_by_reshape(x, W_q, W_k, W_v, W_o, h):
    B, T, D = x.shape
    Q, K, V = _heads(_lin(x, W_q), h), _heads(_lin(x, W_k), h), _heads(_lin(x, W_v), h)
    heads = torch.softmax(Q @ K.mT / math.sqrt(D // h), -1) @ V  # (B, h, T, d_k)
    return _lin(heads.reshape(B, T, D), W_o)  # "concatenate the heads"


def mha_reshape_both_ways(x, W_q, W_k, W_v, W_o, h):
    B, T, D = x.shape
    Q, K, V = (_lin(x, W).reshape(B, h, T, D // h) for W in (W_q, W_k, W_v))
    heads = torch.softmax(Q @ K.transpose(-2, -1) / math.sqrt(D // h), -1) @ V
    return _lin(heads.reshape(B, T, D), W_o)


def mha_keys_reshaped(x, W_q, W_k, W_v, W_o, h):
    B, T, D = x.shape
    Q, K, V = _heads(_lin(x, W_q), h), _heads(_lin(x, W_k), h), _heads(_lin(x, W_v), h)
    scores = Q @ K.reshape(B, h, D // h, T) / math.sqrt(D // h)
    return _lin(_concat(torch.softmax(scores, -1) @ V), W_o)


WRONG["09.multi_head_attention"] += [
    ("heads merged with a bare reshape", mha_merged_by_reshape, "merged_without_permute", "merged the heads"),
    ("bare reshapes both ways", mha_reshape_both_ways, "reshape_without_permute", "both ways"),
    ("K reshaped instead of transposed", mha_keys_reshaped, "reshape_not_transpose", "reshape/view"),
]


def test_fold_and_unfold_are_inverse():
    fold, unfold = get_task("09.fold_heads").reference, get_task("09.unfold_heads").reference
    x = torch.randn(3, 4, 10, dtype=torch.float64)
    assert torch.equal(unfold(fold(x, 2), 2), x)
    # row b·h + j is head j of sentence b
    assert torch.equal(fold(x, 2)[1 * 2 + 1], x[1, :, 5:])


def test_multi_head_attention_reference_equals_the_book_module():
    """The task's convention (x @ W.T, weights (out, in)) is nn.Linear's, without biases."""
    task = get_task("09.multi_head_attention")
    for case in task.cases():
        x, W_q, W_k, W_v, W_o, h = case.args
        torch.testing.assert_close(mha_book_module(x, W_q, W_k, W_v, W_o, h), task.reference(*case.args))


def test_cases_never_have_square_heads():
    """A width computed as √d_model agrees with d_model / h only when h == d_k: no case allows it."""
    for task_id in ("09.fold_heads", "09.unfold_heads", "09.multi_head_attention"):
        for case in get_task(task_id).cases():
            x, h = case.args[0], case.args[-1]
            width = x.shape[-1] if task_id != "09.unfold_heads" else x.shape[-1] * h
            assert width // h != h, (task_id, case.name)


def test_infinite_loop_is_stopped():
    task = dataclasses.replace(get_task("09.multi_head_attention"), timeout_s=0.5)
    assert run_task(task, mha_loops_forever).diagnosis == "timeout"


# ------------------------------------------------------------------ red team, round 5


def mha_inputs_untransposed(x, W_q, W_k, W_v, W_o, h):
    """x @ W_q (and W_k, W_v) as stored, but W_o transposed."""
    Q, K, V = _heads(x @ W_q, h), _heads(x @ W_k, h), _heads(x @ W_v, h)
    weights = torch.softmax(Q @ K.mT / math.sqrt(Q.shape[-1]), -1)
    return _lin(_concat(weights @ V), W_o)


def mha_W_o_untransposed(x, W_q, W_k, W_v, W_o, h):
    Q, K, V = _heads(_lin(x, W_q), h), _heads(_lin(x, W_k), h), _heads(_lin(x, W_v), h)
    weights = torch.softmax(Q @ K.mT / math.sqrt(Q.shape[-1]), -1)
    return _concat(weights @ V) @ W_o


def mha_W_q_untransposed(x, W_q, W_k, W_v, W_o, h):
    Q, K, V = _heads(x @ W_q, h), _heads(_lin(x, W_k), h), _heads(_lin(x, W_v), h)
    weights = torch.softmax(Q @ K.mT / math.sqrt(Q.shape[-1]), -1)
    return _lin(_concat(weights @ V), W_o)


def mha_single_head_scaled_by_d_k(x, W_q, W_k, W_v, W_o, h):
    Q, K, V = _lin(x, W_q), _lin(x, W_k), _lin(x, W_v)
    d_k = x.shape[-1] // h
    return _lin(torch.softmax(Q @ K.mT / math.sqrt(d_k), -1) @ V, W_o)


def mha_under_no_grad(x, W_q, W_k, W_v, W_o, h):
    with torch.no_grad():
        return mha_folded_bmm(x, W_q, W_k, W_v, W_o, h)


WRONG["09.multi_head_attention"] += [
    ("computed under torch.no_grad()", mha_under_no_grad, "breaks_autograd", "torch.no_grad()"),
    (
        "x @ W_q, W_k, W_v; W_o transposed",
        mha_inputs_untransposed,
        "weights_not_transposed",
        "W_q, W_k, W_v as",
    ),
    ("W_o not transposed", mha_W_o_untransposed, "weights_not_transposed", "W_o as it is stored"),
    ("only W_q not transposed", mha_W_q_untransposed, "weights_not_transposed", "W_q as it is stored"),
    ("one big head scaled by √d_k", mha_single_head_scaled_by_d_k, "heads_not_split", "split Q, K and V"),
]


@pytest.mark.parametrize(
    "fn",
    [
        mha_inputs_untransposed,
        mha_W_o_untransposed,
        mha_single_head_scaled_by_d_k,
        mha_x_at_W,
        mha_under_no_grad,
    ],
    ids=lambda fn: fn.__name__,
)
def test_round_5_answers_get_the_same_message_through_the_proxy(fn):
    from test_trusted_proxy import grade_through_proxy

    local = run_task(get_task("09.multi_head_attention"), fn)
    remote = grade_through_proxy("09.multi_head_attention", fn)
    assert (remote.diagnosis, remote.message) == (local.diagnosis, local.message)
