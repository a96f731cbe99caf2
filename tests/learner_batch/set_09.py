"""Set 09, multi-head attention: learner-style answers.

The weight layout follows the exercise text (``x @ W`` or ``x @ W.T``), read from the exercise notebook;
the "other layout" answer applies the one the text does not ask for.
"""

import math

import torch

from ._conventions import task_id, x_at_W_transposed_09

SET = "09"


def _t(fn_name):
    return task_id(SET, fn_name)


def _proj(x, W):
    return x @ W.T if x_at_W_transposed_09() else x @ W


def _proj_other(x, W):
    return x @ W if x_at_W_transposed_09() else x @ W.T


# ---------------------------------------------------------------- 09.fold_heads(x, h) -> (B·h, T, d_k)
def fold_reshape(x, h):
    B, T_, D = x.shape
    return x.reshape(B * h, T_, D // h)


def fold_head_major(x, h):
    B, T_, D = x.shape
    return x.view(B, T_, h, D // h).permute(2, 0, 1, 3).reshape(B * h, T_, D // h)


def fold_interleaved(x, h):
    B, T_, D = x.shape
    return x.view(B, T_, D // h, h).permute(0, 3, 1, 2).reshape(B * h, T_, D // h)


def fold_no_permute(x, h):
    B, T_, D = x.shape
    return x.view(B, T_, h, D // h).reshape(B * h, T_, D // h)


def fold_not_folded(x, h):
    B, T_, D = x.shape
    return x.view(B, T_, h, D // h).transpose(1, 2)


def fold_view_after_transpose(x, h):
    B, T_, D = x.shape
    return x.view(B, T_, h, D // h).transpose(1, 2).view(B * h, T_, D // h)


def fold_book(x, h):
    from attnbook.multihead import split_heads

    y = split_heads(x, h)
    return y.reshape(-1, y.shape[2], y.shape[3])


def fold_valid(x, h):
    B, T_, D = x.shape
    return x.view(B, T_, h, D // h).transpose(1, 2).reshape(B * h, T_, D // h)


def fold_valid_chunks(x, h):
    return torch.stack(x.chunk(h, dim=-1), dim=1).flatten(0, 1)


# ---------------------------------------------------------------- 09.unfold_heads(x, h) -> (B, T, h·d_k)
def unfold_reshape(x, h):
    Bh, T_, d = x.shape
    return x.reshape(Bh // h, T_, h * d)


def unfold_head_major(x, h):
    Bh, T_, d = x.shape
    return x.view(h, Bh // h, T_, d).permute(1, 2, 0, 3).reshape(Bh // h, T_, h * d)


def unfold_interleaved(x, h):
    Bh, T_, d = x.shape
    return x.view(Bh // h, h, T_, d).permute(0, 2, 3, 1).reshape(Bh // h, T_, h * d)


def unfold_sum_heads(x, h):
    Bh, T_, d = x.shape
    return x.view(Bh // h, h, T_, d).sum(dim=1)


def unfold_view_after_transpose(x, h):
    Bh, T_, d = x.shape
    return x.view(Bh // h, h, T_, d).transpose(1, 2).view(Bh // h, T_, h * d)


def unfold_book(x, h):
    from attnbook.multihead import merge_heads

    Bh, T_, d = x.shape
    return merge_heads(x.view(Bh // h, h, T_, d))


def unfold_valid(x, h):
    Bh, T_, d = x.shape
    return x.view(Bh // h, h, T_, d).transpose(1, 2).reshape(Bh // h, T_, h * d)


def unfold_valid_cat(x, h):
    Bh, T_, d = x.shape
    return torch.cat(x.view(Bh // h, h, T_, d).unbind(1), dim=-1)


# ---------------------------------------------------------------- 09.multi_head_attention
def _split(x, h):  # (B, h, T, d_k), the chapter's layout
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
    # valid when this batch was written; since the grader's round-1 fixes, PyTorch's attention kernel and
    # multi-head layer do the step this task asks for, and earn 0 (forbidden_call, a named rejection)
    dict(
        task=_t("multi_head_attention"),
        name="torch_sdpa",
        fn=mha_valid_torch_sdpa,
        cls="ready-made layer",
        mistake="PyTorch's scaled_dot_product_attention computes the heads' attention",
    ),
    dict(
        task=_t("fold_heads"),
        name="reshape",
        fn=fold_reshape,
        cls="reshape for permute",
        mistake="reshapes straight to (B·h, T, d_k), mixing positions and heads",
    ),
    dict(
        task=_t("fold_heads"),
        name="head_major",
        fn=fold_head_major,
        cls="only-square shapes (B == 1)",
        mistake="folds head-major: row j·B + b instead of b·h + j",
    ),
    dict(
        task=_t("fold_heads"),
        name="interleaved",
        fn=fold_interleaved,
        cls="only-square shapes (h == d_k)",
        mistake="splits the features as (d_k, h): head j gets every h-th feature",
    ),
    dict(
        task=_t("fold_heads"),
        name="no_permute",
        fn=fold_no_permute,
        cls="reshape for permute",
        mistake="views as (B, T, h, d_k) and reshapes to (B·h, T, d_k) without moving the head axis",
    ),
    dict(
        task=_t("fold_heads"),
        name="not_folded",
        fn=fold_not_folded,
        cls="shape",
        mistake="returns (B, h, T, d_k), the chapter's split, without folding",
    ),
    dict(
        task=_t("fold_heads"),
        name="view_after_transpose",
        fn=fold_view_after_transpose,
        cls="raw error",
        mistake="calls .view on a transposed (non-contiguous) tensor",
    ),
    dict(
        task=_t("fold_heads"),
        name="book_import",
        fn=fold_book,
        cls="book shortcut",
        mistake="uses attnbook.multihead.split_heads and reshapes",
    ),
    dict(
        task=_t("unfold_heads"),
        name="reshape",
        fn=unfold_reshape,
        cls="reshape for permute",
        mistake="reshapes straight to (B, T, h·d_k)",
    ),
    dict(
        task=_t("unfold_heads"),
        name="head_major",
        fn=unfold_head_major,
        cls="only-square shapes (B == 1)",
        mistake="reads row j·B + b as head j of sentence b",
    ),
    dict(
        task=_t("unfold_heads"),
        name="interleaved",
        fn=unfold_interleaved,
        cls="only-square shapes (h == d_k)",
        mistake="puts the head axis last, interleaving the heads' features",
    ),
    dict(
        task=_t("unfold_heads"),
        name="sum_heads",
        fn=unfold_sum_heads,
        cls="concat",
        mistake="sums the heads instead of concatenating them",
    ),
    dict(
        task=_t("unfold_heads"),
        name="view_after_transpose",
        fn=unfold_view_after_transpose,
        cls="raw error",
        mistake="calls .view on a transposed (non-contiguous) tensor",
    ),
    dict(
        task=_t("unfold_heads"),
        name="book_import",
        fn=unfold_book,
        cls="book shortcut",
        mistake="uses attnbook.multihead.merge_heads",
    ),
    dict(
        task=_t("multi_head_attention"),
        name="scale_dmodel",
        fn=mha_scale_dmodel,
        cls="wrong scale",
        mistake="scales by sqrt(d_model) instead of sqrt(d_h)",
    ),
    dict(
        task=_t("multi_head_attention"),
        name="scale_T",
        fn=mha_scale_T,
        cls="wrong scale",
        mistake="scales by sqrt(T)",
    ),
    dict(
        task=_t("multi_head_attention"),
        name="no_W_o",
        fn=mha_no_W_o,
        cls="missing parameter",
        mistake="forgets the output projection W_o",
    ),
    dict(
        task=_t("multi_head_attention"),
        name="softmax_heads",
        fn=mha_softmax_heads,
        cls="softmax over heads",
        mistake="softmax over the heads axis",
    ),
    dict(
        task=_t("multi_head_attention"),
        name="reshape_split",
        fn=mha_reshape_split,
        cls="reshape for permute",
        mistake="splits heads with a plain reshape",
    ),
    dict(
        task=_t("multi_head_attention"),
        name="other_layout",
        fn=mha_other_layout,
        cls="weight layout",
        mistake="applies the weights in the other layout than the task states",
    ),
    dict(
        task=_t("multi_head_attention"),
        name="one_head",
        fn=mha_one_head,
        cls="ignores h",
        mistake="computes single-head attention, ignoring h",
    ),
]

VALID = [
    dict(task=_t("fold_heads"), name="transpose_reshape", fn=fold_valid),
    dict(task=_t("fold_heads"), name="chunks", fn=fold_valid_chunks),
    dict(task=_t("unfold_heads"), name="transpose_reshape", fn=unfold_valid),
    dict(task=_t("unfold_heads"), name="cat", fn=unfold_valid_cat),
    dict(task=_t("multi_head_attention"), name="batched", fn=mha_valid),
    dict(task=_t("multi_head_attention"), name="head_loop", fn=mha_valid_head_loop),
]
