"""Set 09, multi-head attention: heads folded into the batch axis and back, one multi-head layer.

Chapter 9 writes ``split_heads`` ``(B, T, h·d_k) -> (B, h, T, d_k)`` and ``merge_heads``; this set asks for
the layout that ``torch.bmm`` (3-D only) and ``torch.nn.MultiheadAttention`` use inside, with the heads
*folded into the batch axis*: ``(B·h, T, d_k)``, row ``b·h + j`` holding head ``j`` of sentence ``b``.

Cases put a different size on every axis (``B ≠ h ≠ T ≠ d_k``, odd widths, never ``h == d_k``), so that a
reshape that mixes axes, a head-major fold or a width computed as ``√d_model`` cannot agree by accident.
Weights follow the book's layout, ``(out, in)`` like ``torch.nn.Linear``, applied as ``x @ W.T``.
Tolerances are 1e-9: float64 in another order agrees to ~1e-15, a step done in float32 is named.
"""

from __future__ import annotations

import itertools
import math

import torch

from ... import multihead as _book
from ..cases import generator, randn
from ..engine import TORCH_ATTENTION, Case, Misconception, Task, close
from ..registry import register

#: the book's own implementations of these steps: calling one earns 0
BOOK_MULTIHEAD = (
    "attnbook.multihead:*",
    "attnbook.attention:scaled_dot_product_attention",
    "attnbook.attention:softmax",
    "attnbook.attention:attention_weights",
    *TORCH_ATTENTION,  # PyTorch's multi-head layer and attention kernel: ready-made answers
)

TOL = 1e-9


def _dims(B, T, h, d_k):
    return {"B": B, "T": T, "h": h, "d_k": d_k, "h·d_k": h * d_k, "B·h": B * h}


# ------------------------------------------------------------------------------------------ 09.fold_heads


def _fold_ref(x, h):
    B, T, D = x.shape
    return x.reshape(B, T, h, D // h).permute(0, 2, 1, 3).reshape(B * h, T, D // h)  # (B·h, T, d_k)


def _fold_cases():
    g = generator(9)
    return [
        Case(
            "B=2, T=5, h=3, d_k=4",
            (randn(g, 2, 5, 12), 3),
            dims=_dims(2, 5, 3, 4),
            note="two sentences, three heads",
        ),
        Case("B=3, T=2, h=2, d_k=5", (randn(g, 3, 2, 10), 2), dims=_dims(3, 2, 2, 5), note="odd head width"),
        Case(
            "B=2, T=3, h=4, d_k=1",
            (randn(g, 2, 3, 4), 4),
            dims=_dims(2, 3, 4, 1),
            note="heads of a single feature",
        ),
        Case("B=1, T=6, h=2, d_k=7", (randn(g, 1, 6, 14), 2), dims=_dims(1, 6, 2, 7), note="one sentence"),
    ]


def _fold_head_major(x, h):
    B, T, D = x.shape
    return x.reshape(B, T, h, D // h).permute(2, 0, 1, 3).reshape(B * h, T, D // h)


register(
    Task(
        id="09.fold_heads",
        title="fold the heads into the batch axis",
        points=2,
        reference=_fold_ref,
        cases=_fold_cases,
        misconceptions=[
            Misconception(
                "reshape_without_permute",
                "you reshaped straight to (B·h, T, d_k): the shape is right but the contents are not, because "
                "the features of different positions end up in one row of a head. Each head's d_k features must "
                "stay with their position; the head axis has to move in front of time before the fold",
                lambda x, h: x.reshape(x.shape[0] * h, x.shape[1], x.shape[2] // h),
                hint="x.view(B, T, h, d_k).permute(0, 2, 1, 3) gives (B, h, T, d_k); then reshape to (B·h, T, d_k).",
            ),
            Misconception(
                "head_major",
                "your rows are ordered head by head (row j·B + b): the task asks for sentence by sentence, row "
                "b·h + j, so that the h heads of sentence b are rows b·h to b·h + h - 1",
                _fold_head_major,
                hint="Fold (B, h, T, d_k) into (B·h, T, d_k): B must be the outer axis of the two.",
            ),
            Misconception(
                "interleaved_heads",
                "your heads take every h-th feature (you split the last axis as (d_k, h)): head j must get the "
                "consecutive features j·d_k … (j+1)·d_k - 1",
                lambda x, h: (
                    x.reshape(x.shape[0], x.shape[1], x.shape[2] // h, h)
                    .permute(0, 3, 1, 2)
                    .reshape(x.shape[0] * h, x.shape[1], x.shape[2] // h)
                ),
                hint="Split the last axis as (h, d_k), not (d_k, h).",
            ),
            Misconception(
                "not_folded",
                "you split the heads into (B, h, T, d_k) but did not fold them into the batch axis: the result "
                "must be 3-D, (B·h, T, d_k), the layout a batched matrix product (bmm) works on",
                lambda x, h: _book.split_heads(x, h),
                hint="After the permute, reshape to (B·h, T, d_k).",
            ),
        ],
        hint="Two steps, then a fold: view the features as (h, d_k), move the head axis in front of time, "
        "merge B and h into one axis.",
        forbidden=BOOK_MULTIHEAD,
        atol=TOL,
        rtol=TOL,
        shortcut_example=lambda x, h: _book.split_heads(x, h).reshape(-1, x.shape[1], x.shape[2] // h),
    )
)

# ------------------------------------------------------------------------------------------ 09.unfold_heads


def _unfold_ref(x, h):
    Bh, T, d_k = x.shape
    return x.reshape(Bh // h, h, T, d_k).permute(0, 2, 1, 3).reshape(Bh // h, T, h * d_k)  # (B, T, h·d_k)


def _unfold_cases():
    g = generator(90)
    return [
        Case("B=2, h=3, T=5, d_k=4", (randn(g, 6, 5, 4), 3), dims=_dims(2, 5, 3, 4), note="two sentences"),
        Case(
            "B=3, h=2, T=2, d_k=5",
            (randn(g, 6, 2, 5), 2),
            dims=_dims(3, 2, 2, 5),
            note="B·h = 6 in both this case and the one before",
        ),
        Case(
            "B=2, h=4, T=3, d_k=1",
            (randn(g, 8, 3, 1), 4),
            dims=_dims(2, 3, 4, 1),
            note="heads of a single feature",
        ),
        Case("B=1, h=2, T=6, d_k=7", (randn(g, 2, 6, 7), 2), dims=_dims(1, 6, 2, 7), note="one sentence"),
    ]


register(
    Task(
        id="09.unfold_heads",
        title="unfold the heads and concatenate them",
        points=2,
        reference=_unfold_ref,
        cases=_unfold_cases,
        misconceptions=[
            Misconception(
                "reshape_without_permute",
                "you reshaped (B·h, T, d_k) straight to (B, T, h·d_k): that mixes positions and heads. The head "
                "axis must move next to d_k before the heads are concatenated",
                lambda x, h: x.reshape(x.shape[0] // h, x.shape[1], h * x.shape[2]),
                hint="x.view(B, h, T, d_k).permute(0, 2, 1, 3), then reshape to (B, T, h·d_k).",
            ),
            Misconception(
                "head_major",
                "you read the rows head by head (row j·B + b): row b·h + j holds head j of sentence b, so the "
                "sentence is the outer of the two",
                lambda x, h: (
                    x.reshape(h, x.shape[0] // h, x.shape[1], x.shape[2])
                    .permute(1, 2, 0, 3)
                    .reshape(x.shape[0] // h, x.shape[1], h * x.shape[2])
                ),
                hint="Unfold B·h as (B, h), not (h, B).",
            ),
            Misconception(
                "interleaved_heads",
                "your concatenation interleaves the heads feature by feature: each position must hold head 0's "
                "d_k features, then head 1's, and so on",
                lambda x, h: (
                    x.reshape(x.shape[0] // h, h, x.shape[1], x.shape[2])
                    .permute(0, 2, 3, 1)
                    .reshape(x.shape[0] // h, x.shape[1], h * x.shape[2])
                ),
                hint="Put the head axis before d_k: (B, T, h, d_k), then flatten the last two axes.",
            ),
            Misconception(
                "averaged_heads",
                "you averaged the heads: multi-head attention concatenates them, h·d_k features per position",
                lambda x, h: x.reshape(x.shape[0] // h, h, x.shape[1], x.shape[2]).mean(dim=1),
            ),
            Misconception(
                "summed_heads",
                "you added the heads up: multi-head attention concatenates them, h·d_k features per position",
                lambda x, h: x.reshape(x.shape[0] // h, h, x.shape[1], x.shape[2]).sum(dim=1),
            ),
            Misconception(
                "not_concatenated",
                "you unfolded B·h into (B, h, T, d_k) but did not concatenate the heads: the result is "
                "(B, T, h·d_k)",
                lambda x, h: x.reshape(x.shape[0] // h, h, x.shape[1], x.shape[2]),
            ),
        ],
        hint="Unfold B·h into (B, h), move the head axis next to d_k, then flatten (h, d_k) into h·d_k.",
        forbidden=BOOK_MULTIHEAD,
        atol=TOL,
        rtol=TOL,
        shortcut_example=lambda x, h: _book.merge_heads(
            x.reshape(x.shape[0] // h, h, x.shape[1], x.shape[2])
        ),
    )
)

# ------------------------------------------------------------------------------------------ 09.multi_head_attention


def _split(x, h):
    B, T, D = x.shape
    return x.reshape(B, T, h, D // h).permute(0, 2, 1, 3)


def _bare_split(t, h):
    return t.reshape(t.shape[0], h, t.shape[1], t.shape[2] // h)


def _mha(
    x,
    W_q,
    W_k,
    W_v,
    W_o,
    h,
    *,
    scale=None,
    split=_split,
    project_out=True,
    softmax_dim=-1,
    transpose=True,
    merge=None,
    keys_reshaped=False,
    as_stored=(),
):
    """Multi-head attention with one of the slips switched on; ``as_stored``: the names of the weight
    matrices (``"W_q"``...) multiplied as they are stored, untransposed (``transpose=False``: all four)."""
    B, T, D = x.shape

    def proj(t, W, name):
        return t @ W if (not transpose or name in as_stored) else t @ W.T

    Q, K, V = (
        split(proj(x, W, n), h) for W, n in ((W_q, "W_q"), (W_k, "W_k"), (W_v, "W_v"))
    )  # (B, h, T, d_k)
    scale = math.sqrt(D // h) if scale is None else scale
    K_T = K.reshape(B, h, D // h, T) if keys_reshaped else K.transpose(-1, -2)
    scores = Q @ K_T / scale  # (B, h, T, T)
    if softmax_dim == "folded":  # softmax over dim 0 of the (B·h, T, T) scores that bmm works on
        weights = torch.softmax(scores.reshape(B * h, T, T), dim=0).reshape(B, h, T, T)
    else:
        weights = torch.softmax(scores, dim=softmax_dim)
    heads = weights @ V  # (B, h, T, d_k)
    concat = heads.permute(0, 2, 1, 3).reshape(B, T, D) if merge is None else merge(heads)  # (B, T, d_model)
    return proj(concat, W_o, "W_o") if project_out else concat


#: every choice of some (not all) of the weight matrices: the ones a learner may multiply as stored
_SOME_WEIGHTS = [
    names for k in (1, 2, 3) for names in itertools.combinations(("W_q", "W_k", "W_v", "W_o"), k)
]


def _weights_as_stored(case, outputs):
    """Some of the weight matrices multiplied as they are stored (``x @ W_q``), the others transposed:
    name which ones (all four at once is a misconception of its own). The weights are square, so every
    choice fits, and the values tell the choices apart."""
    got = outputs[0]
    for names in _SOME_WEIGHTS:
        try:
            wrong = _mha(*case.args, as_stored=names)
        except Exception:
            continue
        if close(got, wrong, TOL, TOL, equal_nan=True):
            listed = ", ".join(names)
            if len(names) == 1:
                return (
                    f"you multiplied by {listed} as it is stored, and by the other weight matrices transposed: "
                    "the book stores every weight matrix like nn.Linear, (out_features, in_features), so each "
                    "one is applied transposed, this one too"
                )
            return (
                f"you multiplied by {listed} as they are stored, and by the other weight matrices transposed: "
                "the book stores every weight matrix like nn.Linear, (out_features, in_features), so each one "
                "is applied transposed, these too"
            )
    return None


_weights_as_stored.key = "weights_not_transposed"
_weights_as_stored.hint = "Q = x @ W_q.T, and the same for K, V and the output with W_o."


def _mha_ref(x, W_q, W_k, W_v, W_o, h):
    return _mha(x, W_q, W_k, W_v, W_o, h)


def _mha_cases():
    g = generator(91)

    def case(B, T, h, d_k, scale=1.0, note=""):
        D = h * d_k
        w = [randn(g, D, D, scale=1.0 / math.sqrt(D)) for _ in range(4)]
        return Case(
            f"B={B}, T={T}, h={h}, d_k={d_k}",
            (randn(g, B, T, D, scale=scale), *w, h),
            dims={"B": B, "T": T, "d_model": D},
            note=note,
        )

    return [
        case(2, 5, 3, 4),
        case(3, 7, 2, 5, note="odd head width"),
        case(1, 4, 6, 3, note="h=6 heads of 3 features"),
        case(2, 3, 2, 4, scale=60.0, note="large inputs: scores of several hundred"),
        case(2, 6, 1, 8, note="a single head"),
    ]


register(
    Task(
        id="09.multi_head_attention",
        title="multi-head self-attention",
        points=4,
        reference=_mha_ref,
        cases=_mha_cases,
        misconceptions=[
            Misconception(
                "heads_not_split",
                "you computed one attention over all d_model features: split Q, K and V into h heads of "
                "d_k = d_model / h features, attend in each head, then concatenate",
                lambda x, W_q, W_k, W_v, W_o, h: _mha(x, W_q, W_k, W_v, W_o, 1),
            ),
            Misconception(
                "heads_not_split",
                "you computed one attention over all d_model features (and scaled it by √d_k, the width a "
                "head would have): split Q, K and V into h heads of d_k = d_model / h features, attend in "
                "each head, then concatenate",
                lambda x, W_q, W_k, W_v, W_o, h: _mha(
                    x, W_q, W_k, W_v, W_o, 1, scale=math.sqrt(x.shape[-1] // h)
                ),
            ),
            Misconception(
                "scaled_by_d_model",
                "you scaled the scores by √d_model: inside a head the queries and keys have d_k = d_model / h "
                "features, so the scale is √d_k",
                lambda x, W_q, W_k, W_v, W_o, h: _mha(x, W_q, W_k, W_v, W_o, h, scale=math.sqrt(x.shape[-1])),
            ),
            Misconception(
                "scaled_by_d_k",
                "you divided the scores by d_k itself; the scale is its square root, √d_k",
                lambda x, W_q, W_k, W_v, W_o, h: _mha(x, W_q, W_k, W_v, W_o, h, scale=x.shape[-1] / h),
            ),
            Misconception(
                "scaled_by_T",
                "you scaled the scores by √T, the number of positions: the scale is √d_k, the width of one "
                "head's queries and keys",
                lambda x, W_q, W_k, W_v, W_o, h: _mha(x, W_q, W_k, W_v, W_o, h, scale=math.sqrt(x.shape[1])),
            ),
            Misconception(
                "scaled_by_sqrt_h",
                "you scaled the scores by √h, the number of heads: the scale is √d_k, the width of one head's "
                "queries and keys",
                lambda x, W_q, W_k, W_v, W_o, h: _mha(x, W_q, W_k, W_v, W_o, h, scale=math.sqrt(h)),
            ),
            Misconception(
                "not_scaled",
                "you did not scale the scores: divide them by √d_k, the width of one head",
                lambda x, W_q, W_k, W_v, W_o, h: _mha(x, W_q, W_k, W_v, W_o, h, scale=1.0),
            ),
            Misconception(
                "no_output_projection",
                "you returned the concatenated heads: multi-head attention ends with the output projection W_o",
                lambda x, W_q, W_k, W_v, W_o, h: _mha(x, W_q, W_k, W_v, W_o, h, project_out=False),
            ),
            Misconception(
                "reshape_without_permute",
                "your heads were split with a bare reshape to (B, h, T, d_k), which mixes positions and heads: "
                "each head's features must stay with their position",
                lambda x, W_q, W_k, W_v, W_o, h: _mha(
                    x,
                    W_q,
                    W_k,
                    W_v,
                    W_o,
                    h,
                    split=_bare_split,
                ),
            ),
            Misconception(
                "reshape_without_permute",
                "your heads were split with a bare reshape to (B, h, T, d_k) and merged back with a bare reshape "
                "to (B, T, d_model): the shapes are right, but each head's rows mix features of different "
                "positions. Each head's d_k features must stay with their position, both ways",
                lambda x, W_q, W_k, W_v, W_o, h: _mha(
                    x, W_q, W_k, W_v, W_o, h, split=_bare_split, merge=lambda t: t.reshape(x.shape)
                ),
            ),
            Misconception(
                "merged_without_permute",
                "you merged the heads (B, h, T, d_k) back into (B, T, d_model) with a bare reshape: the shape is "
                "right but the contents are not, because the head axis is still in front of time, so a row mixes "
                "positions. The head axis must move next to d_k before the heads are concatenated",
                lambda x, W_q, W_k, W_v, W_o, h: _mha(
                    x, W_q, W_k, W_v, W_o, h, merge=lambda t: t.reshape(x.shape)
                ),
            ),
            Misconception(
                "reshape_not_transpose",
                "you turned each head's keys (T, d_k) into (d_k, T) with reshape/view: that only regroups the "
                "numbers in memory order and mixes positions with features; the last two axes must be swapped "
                "(transposed)",
                lambda x, W_q, W_k, W_v, W_o, h: _mha(x, W_q, W_k, W_v, W_o, h, keys_reshaped=True),
                hint="K.transpose(-1, -2) (or K.mT) swaps the last two axes.",
            ),
            Misconception(
                "weights_not_transposed",
                "you multiplied by the weight matrices as they are stored: the book stores them like "
                "nn.Linear, (out_features, in_features), so they are applied transposed",
                lambda x, W_q, W_k, W_v, W_o, h: _mha(x, W_q, W_k, W_v, W_o, h, transpose=False),
                hint="Q = x @ W_q.T (and the same for K, V and the output with W_o).",
            ),
            Misconception(
                "softmax_over_queries",
                "your softmax runs over the queries: in every head, each query's weights sum to 1 over the keys, "
                "the last axis",
                lambda x, W_q, W_k, W_v, W_o, h: _mha(x, W_q, W_k, W_v, W_o, h, softmax_dim=-2),
            ),
            Misconception(
                "softmax_over_heads",
                "your softmax runs over the heads: each head has its own weights, and each query's weights sum "
                "to 1 over the keys, the last axis",
                lambda x, W_q, W_k, W_v, W_o, h: _mha(x, W_q, W_k, W_v, W_o, h, softmax_dim=1),
            ),
            *(
                Misconception(
                    "softmax_over_batch",
                    "your softmax runs over the batch axis, mixing sentences (and, folded for bmm, heads): each "
                    "query's weights sum to 1 over the keys of its own sentence and head, the last axis",
                    fn,
                )
                for fn in (
                    lambda x, W_q, W_k, W_v, W_o, h: _mha(x, W_q, W_k, W_v, W_o, h, softmax_dim=0),
                    lambda x, W_q, W_k, W_v, W_o, h: _mha(x, W_q, W_k, W_v, W_o, h, softmax_dim="folded"),
                )
            ),
        ],
        properties=[_weights_as_stored],
        hint="Q = split(x @ W_q.T); weights = softmax(Q Kᵀ / √d_k) per head; heads = weights @ V; "
        "merge; @ W_o.T.",
        forbidden=BOOK_MULTIHEAD,
        atol=TOL,
        rtol=TOL,
        shortcut_example=lambda x, W_q, W_k, W_v, W_o, h: _mha_shortcut(x, W_q, W_k, W_v, W_o, h),
    )
)


def _mha_shortcut(x, W_q, W_k, W_v, W_o, h):
    """The book's MultiHeadAttention holding the case's weights (for tests/test_free_points.py)."""
    layer = _book.MultiHeadAttention(x.shape[-1], h, bias=False, dtype=x.dtype)
    with torch.no_grad():
        for linear, W in ((layer.W_q, W_q), (layer.W_k, W_k), (layer.W_v, W_v), (layer.W_o, W_o)):
            linear.weight.copy_(W)
    return layer(x, x, x)[0]
