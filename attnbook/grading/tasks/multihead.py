"""Set 09, self-attention and multi-head attention: splitting and merging heads, one multi-head layer."""

from __future__ import annotations

import math

import torch

from ..cases import generator, randn
from ..engine import Case, Misconception, Task
from ..registry import register


def _dims(B, T, h, d_h):
    return {"B": B, "T": T, "h": h, "d_h": d_h, "h·d_h": h * d_h}


# ------------------------------------------------------------------------------------------ 09.split_heads


def _split_ref(x, h):
    B, T, D = x.shape
    return x.reshape(B, T, h, D // h).permute(0, 2, 1, 3)  # (B, h, T, d_h)


def _split_cases():
    g = generator(9)
    return [
        Case("B=2, T=5, h=3, d_h=4", (randn(g, 2, 5, 12), 3), dims=_dims(2, 5, 3, 4)),
        Case("B=3, T=2, h=4, d_h=5", (randn(g, 3, 2, 20), 4), dims=_dims(3, 2, 4, 5)),
        Case("B=1, T=6, h=2, d_h=7", (randn(g, 1, 6, 14), 2), dims=_dims(1, 6, 2, 7)),
    ]


register(Task(
    id="09.split_heads",
    title="split the features into heads",
    points=2,
    reference=_split_ref,
    cases=_split_cases,
    misconceptions=[
        Misconception(
            "reshape_without_permute",
            "you reshaped straight to (B, h, T, d_h): the shape is right but the contents are not, because "
            "the numbers of different positions end up in one head. Reshape to (B, T, h, d_h) first, then "
            "permute the axes to (B, h, T, d_h)",
            lambda x, h: x.reshape(x.shape[0], h, x.shape[1], x.shape[2] // h),
        ),
        Misconception(
            "not_permuted",
            "you split the features into (B, T, h, d_h) but did not move the head axis: the result must be "
            "(B, h, T, d_h), so permute(0, 2, 1, 3)",
            lambda x, h: x.reshape(x.shape[0], x.shape[1], h, x.shape[2] // h),
        ),
        Misconception(
            "interleaved_heads",
            "your heads take every h-th feature (you split the last axis as (d_h, h)): head j must get the "
            "consecutive features j·d_h … (j+1)·d_h - 1, so split it as (h, d_h)",
            lambda x, h: x.reshape(x.shape[0], x.shape[1], x.shape[2] // h, h).permute(0, 3, 1, 2),
        ),
    ],
    hint="x.view(B, T, h, d_h) keeps each position's features together; then .permute(0, 2, 1, 3).",
))

# ------------------------------------------------------------------------------------------ 09.merge_heads


def _merge_ref(x):
    B, h, T, d_h = x.shape
    return x.permute(0, 2, 1, 3).reshape(B, T, h * d_h)  # (B, T, h·d_h)


def _merge_cases():
    g = generator(90)
    return [
        Case("B=2, h=3, T=5, d_h=4", (randn(g, 2, 3, 5, 4),), dims=_dims(2, 5, 3, 4)),
        Case("B=3, h=4, T=2, d_h=5", (randn(g, 3, 4, 2, 5),), dims=_dims(3, 2, 4, 5)),
        Case("B=1, h=2, T=6, d_h=7", (randn(g, 1, 2, 6, 7),), dims=_dims(1, 6, 2, 7)),
    ]


register(Task(
    id="09.merge_heads",
    title="concatenate the heads",
    points=2,
    reference=_merge_ref,
    cases=_merge_cases,
    misconceptions=[
        Misconception(
            "reshape_without_permute",
            "you reshaped (B, h, T, d_h) straight to (B, T, h·d_h): that mixes positions and heads. Move the "
            "head axis next to d_h first (permute(0, 2, 1, 3)), then reshape",
            lambda x: x.reshape(x.shape[0], x.shape[2], x.shape[1] * x.shape[3]),
        ),
        Misconception(
            "interleaved_heads",
            "your concatenation interleaves the heads feature by feature: each position must hold head 0's "
            "d_h features, then head 1's, and so on (permute to (B, T, h, d_h), not (B, T, d_h, h))",
            lambda x: x.permute(0, 2, 3, 1).reshape(x.shape[0], x.shape[2], x.shape[1] * x.shape[3]),
        ),
        Misconception(
            "averaged_heads",
            "you averaged the heads: multi-head attention concatenates them, shape (B, T, h·d_h)",
            lambda x: x.mean(dim=1),
        ),
        Misconception(
            "summed_heads",
            "you added the heads up: multi-head attention concatenates them, shape (B, T, h·d_h)",
            lambda x: x.sum(dim=1),
        ),
    ],
    hint="x.permute(0, 2, 1, 3) gives (B, T, h, d_h); then reshape to (B, T, h·d_h).",
))

# ------------------------------------------------------------------------------------------ 09.multi_head_attention


def _split(x, h):
    B, T, D = x.shape
    return x.reshape(B, T, h, D // h).permute(0, 2, 1, 3)


def _mha(x, W_q, W_k, W_v, W_o, h, *, scale=None, split=_split, project_out=True, softmax_dim=-1):
    B, T, D = x.shape
    Q, K, V = split(x @ W_q, h), split(x @ W_k, h), split(x @ W_v, h)  # (B, h, T, d_h)
    scale = math.sqrt(D // h) if scale is None else scale
    weights = torch.softmax(Q @ K.transpose(-1, -2) / scale, dim=softmax_dim)  # (B, h, T, T)
    heads = weights @ V  # (B, h, T, d_h)
    concat = heads.permute(0, 2, 1, 3).reshape(B, T, D)  # (B, T, d_model)
    return concat @ W_o if project_out else concat


def _mha_ref(x, W_q, W_k, W_v, W_o, h):
    return _mha(x, W_q, W_k, W_v, W_o, h)


def _mha_cases():
    g = generator(91)

    def case(B, T, h, d_h, scale=1.0, note=""):
        D = h * d_h
        w = [randn(g, D, D, scale=1.0 / math.sqrt(D)) for _ in range(4)]
        return Case(f"B={B}, T={T}, h={h}, d_h={d_h}", (randn(g, B, T, D, scale=scale), *w, h),
                    dims={"B": B, "T": T, "d_model": D}, note=note)

    return [
        case(2, 5, 3, 4),
        case(3, 7, 2, 5),
        case(1, 4, 6, 3, note="h=6 heads of 3 features"),
        case(2, 3, 2, 4, scale=60.0, note="large inputs: scores of several hundred"),
        case(2, 6, 1, 8, note="a single head"),
    ]


register(Task(
    id="09.multi_head_attention",
    title="multi-head self-attention",
    points=4,
    reference=_mha_ref,
    cases=_mha_cases,
    misconceptions=[
        Misconception(
            "heads_not_split",
            "you computed one attention over all d_model features: split Q, K and V into h heads of "
            "d_h = d_model / h features, attend in each head, then concatenate",
            lambda x, W_q, W_k, W_v, W_o, h: _mha(x, W_q, W_k, W_v, W_o, 1),
        ),
        Misconception(
            "scaled_by_d_model",
            "you scaled the scores by √d_model: inside a head the queries and keys have d_h = d_model / h "
            "features, so divide by √d_h",
            lambda x, W_q, W_k, W_v, W_o, h: _mha(x, W_q, W_k, W_v, W_o, h, scale=math.sqrt(x.shape[-1])),
        ),
        Misconception(
            "not_scaled",
            "you did not scale the scores: divide them by √d_h, the width of one head",
            lambda x, W_q, W_k, W_v, W_o, h: _mha(x, W_q, W_k, W_v, W_o, h, scale=1.0),
        ),
        Misconception(
            "no_output_projection",
            "you returned the concatenated heads: multi-head attention ends with the output projection W_o",
            lambda x, W_q, W_k, W_v, W_o, h: _mha(x, W_q, W_k, W_v, W_o, h, project_out=False),
        ),
        Misconception(
            "reshape_without_permute",
            "your heads were split with a bare reshape to (B, h, T, d_h), which mixes positions and heads: "
            "reshape to (B, T, h, d_h), then permute",
            lambda x, W_q, W_k, W_v, W_o, h: _mha(
                x, W_q, W_k, W_v, W_o, h,
                split=lambda t, h: t.reshape(t.shape[0], h, t.shape[1], t.shape[2] // h)),
        ),
        Misconception(
            "transposed_weights",
            "you multiplied by the transposed weight matrices (x @ W.T, the nn.Linear convention): this task "
            "writes the projections as x @ W_q, x @ W_k, x @ W_v and concat @ W_o",
            lambda x, W_q, W_k, W_v, W_o, h: _mha(x, W_q.T, W_k.T, W_v.T, W_o.T, h),
        ),
        Misconception(
            "softmax_over_queries",
            "your softmax runs over the queries: in every head, each query's weights sum to 1 over the keys "
            "(dim=-1)",
            lambda x, W_q, W_k, W_v, W_o, h: _mha(x, W_q, W_k, W_v, W_o, h, softmax_dim=-2),
        ),
    ],
    hint="Q = split(x @ W_q); weights = softmax(Q Kᵀ / √d_h) per head; heads = weights @ V; "
         "merge; @ W_o.",
))
