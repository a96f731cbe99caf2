"""Set 09, multi-head attention: learner-style answers.

The weight layout follows the exercise text (``x @ W`` or ``x @ W.T``), read from the exercise notebook;
the "other layout" answer applies the one the text does not ask for.
"""

import math

import torch

from ._conventions import x_at_W_transposed_09

T = "09."


def _proj(x, W):
    return x @ W.T if x_at_W_transposed_09() else x @ W


def _proj_other(x, W):
    return x @ W if x_at_W_transposed_09() else x @ W.T


# ---------------------------------------------------------------- 09.split_heads(x, h)
def split_reshape(x, h):
    B, T_, D = x.shape
    return x.reshape(B, h, T_, D // h)


def split_interleaved(x, h):
    B, T_, D = x.shape
    return x.view(B, T_, D // h, h).permute(0, 3, 1, 2)


def split_no_transpose(x, h):
    B, T_, D = x.shape
    return x.view(B, T_, h, D // h)


def split_transpose_last(x, h):
    B, T_, D = x.shape
    return x.view(B, T_, h, D // h).transpose(1, 3)


def split_dot_T(x, h):
    B, T_, D = x.shape
    return x.T.reshape(D // h, h, T_, B).T.transpose(1, 2)


def split_book(x, h):
    from attnbook.multihead import split_heads

    return split_heads(x, h)


def split_valid_unflatten(x, h):
    return x.unflatten(-1, (h, -1)).transpose(1, 2)


def split_valid_chunks(x, h):
    return torch.stack(x.chunk(h, dim=-1), dim=1)


# ---------------------------------------------------------------- 09.merge_heads(x)
def merge_reshape(x):
    B, h, T_, d_h = x.shape
    return x.reshape(B, T_, h * d_h)


def merge_view_after_transpose(x):
    B, h, T_, d_h = x.shape
    return x.transpose(1, 2).view(B, T_, h * d_h)


def merge_interleaved(x):
    B, h, T_, d_h = x.shape
    return x.permute(0, 2, 3, 1).reshape(B, T_, h * d_h)


def merge_sum_heads(x):
    return x.sum(dim=1)


def merge_heads_along_time(x):
    B, h, T_, d_h = x.shape
    return torch.cat(list(x.unbind(1)), dim=1).reshape(B, T_, h * d_h)


def merge_book(x):
    from attnbook.multihead import merge_heads

    return merge_heads(x)


def merge_valid_cat(x):
    return torch.cat(list(x.unbind(1)), dim=-1)


def merge_valid_flatten(x):
    return x.transpose(1, 2).flatten(2)


# ---------------------------------------------------------------- 09.multi_head_attention
def _split(x, h):
    return x.unflatten(-1, (h, -1)).transpose(1, 2)


def _merge(x):
    return x.transpose(1, 2).flatten(2)


def _mha(x, W_q, W_k, W_v, W_o, h, *, proj=_proj, scale=None, dim=-1, split=_split, out=True):
    Q, K, V = (split(proj(x, W), h) for W in (W_q, W_k, W_v))
    d_h = Q.shape[-1]
    s = Q @ K.transpose(-1, -2) / (math.sqrt(d_h) if scale is None else scale)
    o = _merge(torch.softmax(s, dim=dim) @ V)
    return proj(o, W_o) if out else o


def mha_scale_dmodel(x, W_q, W_k, W_v, W_o, h):
    return _mha(x, W_q, W_k, W_v, W_o, h, scale=math.sqrt(x.shape[-1]))


def mha_scale_T(x, W_q, W_k, W_v, W_o, h):
    return _mha(x, W_q, W_k, W_v, W_o, h, scale=math.sqrt(x.shape[1]))


def mha_no_W_o(x, W_q, W_k, W_v, W_o, h):
    return _mha(x, W_q, W_k, W_v, W_o, h, out=False)


def mha_softmax_heads(x, W_q, W_k, W_v, W_o, h):
    return _mha(x, W_q, W_k, W_v, W_o, h, dim=1)


def mha_reshape_split(x, W_q, W_k, W_v, W_o, h):
    def bad_split(y, h):
        B, T_, D = y.shape
        return y.reshape(B, h, T_, D // h)

    return _mha(x, W_q, W_k, W_v, W_o, h, split=bad_split)


def mha_other_layout(x, W_q, W_k, W_v, W_o, h):
    return _mha(x, W_q, W_k, W_v, W_o, h, proj=_proj_other)


def mha_one_head(x, W_q, W_k, W_v, W_o, h):
    return _mha(x, W_q, W_k, W_v, W_o, 1)


def mha_book(x, W_q, W_k, W_v, W_o, h):
    from attnbook.multihead import merge_heads, split_heads

    Q, K, V = (split_heads(_proj(x, W), h) for W in (W_q, W_k, W_v))
    w = torch.softmax(Q @ K.transpose(-1, -2) / math.sqrt(Q.shape[-1]), dim=-1)
    return _proj(merge_heads(w @ V), W_o)


def mha_valid(x, W_q, W_k, W_v, W_o, h):
    return _mha(x, W_q, W_k, W_v, W_o, h)


def mha_valid_torch_sdpa(x, W_q, W_k, W_v, W_o, h):
    Q, K, V = (_split(_proj(x, W), h) for W in (W_q, W_k, W_v))
    o = torch.nn.functional.scaled_dot_product_attention(Q, K, V)
    return _proj(_merge(o), W_o)


def mha_valid_head_loop(x, W_q, W_k, W_v, W_o, h):
    Q, K, V = (_proj(x, W) for W in (W_q, W_k, W_v))
    d_h = x.shape[-1] // h
    heads = []
    for j in range(h):
        sl = slice(j * d_h, (j + 1) * d_h)
        w = torch.softmax(torch.einsum("btd,bsd->bts", Q[..., sl], K[..., sl]) / math.sqrt(d_h), dim=-1)
        heads.append(w @ V[..., sl])
    return _proj(torch.cat(heads, dim=-1), W_o)


WRONG = [
    dict(
        task=T + "split_heads",
        name="reshape",
        fn=split_reshape,
        cls="reshape for permute",
        mistake="reshapes straight to (B, h, T, d_h), mixing positions and heads",
    ),
    dict(
        task=T + "split_heads",
        name="interleaved",
        fn=split_interleaved,
        cls="only-square shapes (h == d_h)",
        mistake="views as (B, T, d_h, h): head j gets every h-th feature",
    ),
    dict(
        task=T + "split_heads",
        name="no_transpose",
        fn=split_no_transpose,
        cls="shape",
        mistake="forgets to move the head axis before time: (B, T, h, d_h)",
    ),
    dict(
        task=T + "split_heads",
        name="transpose_last",
        fn=split_transpose_last,
        cls="axis",
        mistake="swaps time with the feature axis instead of the head axis",
    ),
    dict(
        task=T + "split_heads",
        name="dot_T",
        fn=split_dot_T,
        cls=".T on 3-D",
        mistake="juggles .T on a 3-D tensor",
    ),
    dict(
        task=T + "split_heads",
        name="book_import",
        fn=split_book,
        cls="book shortcut",
        mistake="calls attnbook.multihead.split_heads",
    ),
    dict(
        task=T + "merge_heads",
        name="reshape",
        fn=merge_reshape,
        cls="reshape for permute",
        mistake="reshapes without moving the head axis back",
    ),
    dict(
        task=T + "merge_heads",
        name="view_after_transpose",
        fn=merge_view_after_transpose,
        cls="raw error",
        mistake="calls .view on a transposed (non-contiguous) tensor",
    ),
    dict(
        task=T + "merge_heads",
        name="interleaved",
        fn=merge_interleaved,
        cls="only-square shapes (h == d_h)",
        mistake="puts the head axis last, interleaving the heads' features",
    ),
    dict(
        task=T + "merge_heads",
        name="sum_heads",
        fn=merge_sum_heads,
        cls="concat",
        mistake="sums the heads instead of concatenating them",
    ),
    dict(
        task=T + "merge_heads",
        name="along_time",
        fn=merge_heads_along_time,
        cls="axis",
        mistake="concatenates the heads along time, then reshapes",
    ),
    dict(
        task=T + "merge_heads",
        name="book_import",
        fn=merge_book,
        cls="book shortcut",
        mistake="calls attnbook.multihead.merge_heads",
    ),
    dict(
        task=T + "multi_head_attention",
        name="scale_dmodel",
        fn=mha_scale_dmodel,
        cls="wrong scale",
        mistake="scales by sqrt(d_model) instead of sqrt(d_h)",
    ),
    dict(
        task=T + "multi_head_attention",
        name="scale_T",
        fn=mha_scale_T,
        cls="wrong scale",
        mistake="scales by sqrt(T)",
    ),
    dict(
        task=T + "multi_head_attention",
        name="no_W_o",
        fn=mha_no_W_o,
        cls="missing parameter",
        mistake="forgets the output projection W_o",
    ),
    dict(
        task=T + "multi_head_attention",
        name="softmax_heads",
        fn=mha_softmax_heads,
        cls="softmax over heads",
        mistake="softmax over the heads axis",
    ),
    dict(
        task=T + "multi_head_attention",
        name="reshape_split",
        fn=mha_reshape_split,
        cls="reshape for permute",
        mistake="splits heads with a plain reshape",
    ),
    dict(
        task=T + "multi_head_attention",
        name="other_layout",
        fn=mha_other_layout,
        cls="weight layout",
        mistake="applies the weights in the other layout than the task states",
    ),
    dict(
        task=T + "multi_head_attention",
        name="one_head",
        fn=mha_one_head,
        cls="ignores h",
        mistake="computes single-head attention, ignoring h",
    ),
    dict(
        task=T + "multi_head_attention",
        name="book_import",
        fn=mha_book,
        cls="book shortcut",
        mistake="uses attnbook.multihead's split_heads/merge_heads",
    ),
]

VALID = [
    dict(task=T + "split_heads", name="unflatten", fn=split_valid_unflatten),
    dict(task=T + "split_heads", name="chunks", fn=split_valid_chunks),
    dict(task=T + "merge_heads", name="cat", fn=merge_valid_cat),
    dict(task=T + "merge_heads", name="flatten", fn=merge_valid_flatten),
    dict(task=T + "multi_head_attention", name="batched", fn=mha_valid),
    dict(task=T + "multi_head_attention", name="torch_sdpa", fn=mha_valid_torch_sdpa),
    dict(task=T + "multi_head_attention", name="head_loop", fn=mha_valid_head_loop),
]
