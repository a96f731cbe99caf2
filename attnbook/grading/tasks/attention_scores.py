"""Set 04, attention scores: ``e^t_i = s_t^T h_i`` and its variants (scaled, general, additive).

Cases put a different size on every axis, and widths that are odd and not perfect squares, so that a
wrong scale (``d``, ``√T_k``, ``d ** 1/2``, an integer square root) never happens to agree with ``√d``.
Tolerances are 1e-9: a float64 answer computed in another order agrees to about 1e-15, while a step
done in float32 is off by about 1e-7 and is named. Weight matrices follow the book's layout, ``(out, in)`` like ``torch.nn.Linear``, applied as ``x @ W.T``.
"""

from __future__ import annotations

import functools
import math

import torch

from ... import attention as _book
from ..cases import generator, randn
from ..engine import Case, Misconception, Task
from ..registry import register

#: the book's own implementations of a score: calling one earns 0 in every score task
BOOK_SCORES = (
    "attnbook.attention:dot_scores",
    "attnbook.attention:scaled_dot_scores",
    "attnbook.attention:general_scores",
    "attnbook.attention:additive_scores",
    "attnbook.attention:scaled_dot_product_attention",
)

# ---------------------------------------------------------------- 04.dot_scores: one query s_t, H (N, d)


def _dot_scores_ref(s_t, H):
    return H @ s_t


def _single_cases():
    g = generator(4)
    return [
        Case(
            "N=4, d=4",
            (randn(g, 4), randn(g, 4, 4)),
            dims={"N": 4, "d": 4},
            note="as many source positions as components",
        ),
        Case("N=5, d=3", (randn(g, 3), randn(g, 5, 3)), dims={"N": 5, "d": 3}),
        Case(
            "N=2, d=7, negative and large",
            (randn(g, 7, scale=30.0), randn(g, 2, 7, scale=10.0)),
            dims={"N": 2, "d": 7},
        ),
        Case("N=6, d=1", (randn(g, 1), randn(g, 6, 1)), dims={"N": 6, "d": 1}),
        Case("N=1, d=4", (randn(g, 4), randn(g, 1, 4)), dims={"N": 1, "d": 4}),
    ]


register(
    Task(
        id="04.dot_scores",
        title="dot-product scores for one decoder step",
        points=2,
        reference=_dot_scores_ref,
        cases=_single_cases,
        misconceptions=[
            Misconception(
                "returned_weights",
                "you returned attention weights (softmax of the scores); this task stops at the scores e^t, "
                "before the softmax",
                lambda s_t, H: torch.softmax(H @ s_t, dim=-1),
            ),
            Misconception(
                "scaled",
                "you divided by √d: that is the scaled score of a later task; here e^t_i = s_t·h_i exactly",
                lambda s_t, H: H @ s_t / math.sqrt(H.shape[-1]),
            ),
            Misconception(
                "elementwise_not_summed",
                "you multiplied s_t and h_i element by element but did not add the products up: a dot "
                "product is the sum of the element-wise products (one scalar per source position)",
                lambda s_t, H: H * s_t,
            ),
            Misconception(
                "summed_over_positions",
                "you summed over the source positions instead of over the d components of each vector: "
                "e^t has one score per source position, shape (N,)",
                lambda s_t, H: (H * s_t).sum(dim=0),
            ),
            Misconception(
                "combined_columns",
                "you multiplied s_t with the columns of H (components), not with its rows (the encoder "
                "states h_i): the score of position i is the dot product of s_t with row i of H",
                lambda s_t, H: s_t @ H,
                hint="H @ s_t, or (H * s_t).sum(-1).",
            ),
            Misconception(
                "ignores_query",
                "your scores do not depend on the decoder state s_t: each score must compare s_t with h_i",
                lambda s_t, H: H.sum(dim=-1),
            ),
        ],
        hint="Each score is one dot product: e^t_i = Σ_k s_t[k] · H[i, k], i.e. H @ s_t.",
        forbidden=BOOK_SCORES,
        atol=1e-9,
        rtol=1e-9,
        shortcut_example=_book.dot_scores,
    )
)

# ---------------------------------------------------------------- 04.dot_scores_batch: Q (B,T_q,d), K (B,T_k,d)


def _batch_ref(Q, K):
    return Q @ K.transpose(-1, -2)


def _batch_cases():
    g = generator(40)
    return [
        Case(
            "B=2, T_q=3, T_k=5, d=4",
            (randn(g, 2, 3, 4), randn(g, 2, 5, 4)),
            dims={"B": 2, "T_q": 3, "T_k": 5, "d": 4},
        ),
        Case(
            "B=3, T_q=1, T_k=6, d=2",
            (randn(g, 3, 1, 2), randn(g, 3, 6, 2)),
            dims={"B": 3, "T_q": 1, "T_k": 6, "d": 2},
        ),
        Case(
            "B=1, T_q=4, T_k=2, d=7, large",
            (randn(g, 1, 4, 7, scale=20.0), randn(g, 1, 2, 7, scale=20.0)),
            dims={"B": 1, "T_q": 4, "T_k": 2, "d": 7},
        ),
        Case(
            "B=2, T_q=4, T_k=4, d=5",
            (randn(g, 2, 4, 5), randn(g, 2, 4, 5)),
            dims={"B": 2, "T": 4, "d": 5},
            note="T_q = T_k, as in self-attention",
        ),
    ]


def _mixes_batch(ref):
    """Property: batch item b of the result was computed with the keys of another item c."""

    def prop(case, outputs):
        Q, K, rest = case.args[0], case.args[1], case.args[2:]
        got = outputs[0]
        if not isinstance(got, torch.Tensor) or got.shape != (Q.shape[0], Q.shape[1], K.shape[1]):
            return None
        if Q.shape[0] < 2:
            return None
        if torch.allclose(got, ref(Q, K.sum(dim=0, keepdim=True).expand_as(K), *rest)):
            return (
                "your result adds up the keys of all sentences in the batch: each sentence's queries "
                "must only meet its own keys (check the batch letter of your einsum or the axes you sum)"
            )
        for b in range(Q.shape[0]):
            for c in range(Q.shape[0]):
                if b != c and torch.allclose(got[b], ref(Q[b : b + 1], K[c : c + 1], *rest)[0]):
                    return (
                        f"batch item {b} of your result compares its queries with the keys of batch "
                        f"item {c}: each sentence's queries must only meet its own keys"
                    )
        return None

    prop.key = "mixes_batch_items"
    return prop


register(
    Task(
        id="04.dot_scores_batch",
        title="dot-product scores for a batch of queries",
        points=2,
        reference=_batch_ref,
        cases=_batch_cases,
        misconceptions=[
            Misconception(
                "transposed",
                "your scores are transposed: rows must be queries and columns keys, shape (B, T_q, T_k), "
                "each query multiplied with every key",
                lambda Q, K: K @ Q.transpose(-1, -2),
                hint="Q @ K.transpose(-1, -2): (B, T_q, d) @ (B, d, T_k) -> (B, T_q, T_k).",
            ),
            Misconception(
                "returned_weights",
                "you returned attention weights (softmax of the scores); this task stops before the softmax",
                lambda Q, K: torch.softmax(Q @ K.transpose(-1, -2), dim=-1),
            ),
            Misconception(
                "reshape_not_transpose",
                "you swapped the last two axes of K with reshape/view, which keeps the memory order and "
                "scrambles the entries: the axes must be swapped (transposed), not regrouped",
                lambda Q, K: Q @ K.reshape(K.shape[0], K.shape[2], K.shape[1]),
                hint="K.transpose(-1, -2) (or K.mT) swaps the last two axes.",
            ),
            Misconception(
                "scaled",
                "you divided by √d: this task asks for the plain dot product Q Kᵀ",
                lambda Q, K: Q @ K.transpose(-1, -2) / math.sqrt(Q.shape[-1]),
            ),
            Misconception(
                "first_sentence_keys",
                "every sentence's queries met the keys of the first sentence of the batch: each sentence's "
                "queries must only meet its own keys",
                lambda Q, K: Q @ K[0].transpose(-1, -2),
            ),
        ],
        properties=[_mixes_batch(_batch_ref)],
        hint="With a batch axis in front, Q @ K.transpose(-1, -2) compares every query with every key of the same item.",
        forbidden=BOOK_SCORES,
        atol=1e-9,
        rtol=1e-9,
        shortcut_example=_book.dot_scores,
    )
)

# ---------------------------------------------------------------- 04.scaled_dot_scores


def _scaled_ref(Q, K):
    return Q @ K.transpose(-1, -2) / math.sqrt(Q.shape[-1])


def _scaled_cases():
    g = generator(41)
    return [
        Case(
            "B=2, T_q=3, T_k=5, d=7",
            (randn(g, 2, 3, 7), randn(g, 2, 5, 7)),
            dims={"B": 2, "T_q": 3, "T_k": 5, "d": 7},
            note="an odd width that is not a perfect square",
        ),
        Case(
            "B=1, T_q=2, T_k=3, d=16",
            (randn(g, 1, 2, 16), randn(g, 1, 3, 16)),
            dims={"B": 1, "T_q": 2, "T_k": 3, "d": 16},
        ),
        Case(
            "B=3, T_q=4, T_k=6, d=10, negative",
            (-randn(g, 3, 4, 10).abs(), randn(g, 3, 6, 10)),
            dims={"B": 3, "T_q": 4, "T_k": 6, "d": 10},
        ),
        Case(
            "B=2, T_q=5, T_k=4, d=4",
            (randn(g, 2, 5, 4), randn(g, 2, 4, 4)),
            dims={"B": 2, "T_q": 5, "T_k": 4, "d": 4},
            note="T_k = d here",
        ),
        Case(
            "B=2, T_q=6, T_k=3, d=5",
            (randn(g, 2, 6, 5), randn(g, 2, 3, 5)),
            dims={"B": 2, "T_q": 6, "T_k": 3, "d": 5},
        ),
    ]


def _scale_by(size_of):
    return lambda Q, K: Q @ K.transpose(-1, -2) / size_of(Q, K)


register(
    Task(
        id="04.scaled_dot_scores",
        title="scaled dot-product scores",
        points=2,
        reference=_scaled_ref,
        cases=_scaled_cases,
        misconceptions=[
            Misconception(
                "not_scaled",
                "you did not scale: the dot products must be divided by √d_k (the size of the last axis of Q "
                "and K)",
                lambda Q, K: Q @ K.transpose(-1, -2),
            ),
            Misconception(
                "divided_by_d",
                "you divided by d_k instead of √d_k: the variance of a dot product of d_k unit-variance "
                "terms is d_k, so its standard deviation is √d_k",
                _scale_by(lambda Q, K: Q.shape[-1]),
            ),
            Misconception(
                "power_precedence",
                "you divided by d_k/2, not by √d_k: in Python `d ** 1/2` means (d ** 1) / 2, because ** binds "
                "more tightly than /",
                _scale_by(lambda Q, K: Q.shape[-1] / 2),
                hint="Write d ** 0.5, or math.sqrt(d).",
            ),
            Misconception(
                "power_precedence",
                "you divided by 2·d_k, not by √d_k: `x / d ** 1/2` means (x / d) / 2, because ** binds more "
                "tightly than / and the divisions run from left to right",
                _scale_by(lambda Q, K: 2 * Q.shape[-1]),
                hint="Write x / d ** 0.5, or x / math.sqrt(d).",
            ),
            Misconception(
                "integer_sqrt",
                "you divided by a rounded square root: √d_k is not an integer unless d_k is a perfect square "
                "(√7 ≈ 2.6458, not 2)",
                _scale_by(lambda Q, K: math.isqrt(Q.shape[-1])),
            ),
            Misconception(
                "multiplied",
                "you multiplied by √d_k; the scores must be divided by it",
                lambda Q, K: Q @ K.transpose(-1, -2) * math.sqrt(Q.shape[-1]),
            ),
            Misconception(
                "wrong_dimension",
                "you scaled by the square root of the number of keys T_k; the scale is √d_k, the width of "
                "the query and key vectors",
                _scale_by(lambda Q, K: math.sqrt(K.shape[-2])),
            ),
            Misconception(
                "wrong_dimension",
                "you scaled by the square root of the number of queries T_q; the scale is √d_k, the width "
                "of the query and key vectors",
                _scale_by(lambda Q, K: math.sqrt(Q.shape[-2])),
            ),
            Misconception(
                "wrong_dimension",
                "you scaled by the square root of the batch size B; the scale is √d_k, the width of the "
                "query and key vectors",
                _scale_by(lambda Q, K: math.sqrt(Q.shape[0])),
            ),
            Misconception(
                "transposed",
                "your scores are transposed: rows must be queries and columns keys, shape (B, T_q, T_k)",
                lambda Q, K: K @ Q.transpose(-1, -2) / math.sqrt(Q.shape[-1]),
            ),
            Misconception(
                "returned_weights",
                "you returned attention weights (softmax of the scaled scores); this task stops before the "
                "softmax",
                lambda Q, K: torch.softmax(Q @ K.transpose(-1, -2) / math.sqrt(Q.shape[-1]), dim=-1),
            ),
        ],
        properties=[_mixes_batch(_scaled_ref)],
        hint="Divide Q @ K.transpose(-1, -2) by math.sqrt(Q.shape[-1]).",
        forbidden=BOOK_SCORES,
        atol=1e-9,
        rtol=1e-9,
        shortcut_example=_book.scaled_dot_scores,
    )
)

# ---------------------------------------------------------------- 04.general_scores: Q W Kᵀ


def _general_ref(Q, K, W):
    return Q @ W @ K.transpose(-1, -2)


def _general_cases():
    g = generator(42)
    return [
        Case(
            "B=2, T_q=3, T_k=5, d_q=d_k=4",
            (randn(g, 2, 3, 4), randn(g, 2, 5, 4), randn(g, 4, 4)),
            dims={"B": 2, "T_q": 3, "T_k": 5, "d": 4},
        ),
        Case(
            "B=1, T_q=2, T_k=6, d_q=3, d_k=7",
            (randn(g, 1, 2, 3), randn(g, 1, 6, 7), randn(g, 3, 7)),
            dims={"B": 1, "T_q": 2, "T_k": 6, "d_q": 3, "d_k": 7},
        ),
        Case(
            "B=3, T_q=4, T_k=2, d_q=d_k=5",
            (randn(g, 3, 4, 5), randn(g, 3, 2, 5), randn(g, 5, 5)),
            dims={"B": 3, "T_q": 4, "T_k": 2, "d": 5},
        ),
    ]


register(
    Task(
        id="04.general_scores",
        title="general (bilinear) scores",
        points=2,
        reference=_general_ref,
        cases=_general_cases,
        misconceptions=[
            Misconception(
                "transposed_W",
                "you used Wᵀ instead of W: the score is qᵀ W k with W of shape (d_q, d_k), so the query "
                "meets W's rows and the key its columns",
                lambda Q, K, W: Q @ W.transpose(0, 1) @ K.transpose(-1, -2),
                hint="Q @ W @ K.transpose(-1, -2).",
            ),
            Misconception(
                "ignored_W",
                "your scores ignore W: the general score puts the learned matrix between query and key",
                lambda Q, K, W: Q @ K.transpose(-1, -2),
            ),
            Misconception(
                "transposed",
                "your scores are transposed: rows must be queries and columns keys, shape (B, T_q, T_k)",
                lambda Q, K, W: (Q @ W @ K.transpose(-1, -2)).transpose(-1, -2),
            ),
            Misconception(
                "scaled",
                "you divided by √d: the general score has no scaling, e = qᵀ W k",
                lambda Q, K, W: Q @ W @ K.transpose(-1, -2) / math.sqrt(K.shape[-1]),
            ),
        ],
        properties=[_mixes_batch(_general_ref)],
        forbidden=BOOK_SCORES,
        atol=1e-9,
        rtol=1e-9,
        shortcut_example=_book.general_scores,
    )
)

# ---------------------------------------------------------------- 04.additive_scores: wᵀ tanh(W_q q + W_k k)


def _hidden(Q, K, W_q, W_k):
    """``(B, T_q, T_k, d_a)``: W_q q_i + W_k k_j for every pair (weights stored (out, in))."""
    return (Q @ W_q.T).unsqueeze(-2) + (K @ W_k.T).unsqueeze(-3)


def _additive_ref(Q, K, W_q, W_k, w):
    return torch.tanh(_hidden(Q, K, W_q, W_k)) @ w


def _additive_cases():
    g = generator(43)
    return [
        Case(
            "B=3, T_q=2, T_k=4, d_q=d_k=d_a=5",
            (randn(g, 3, 2, 5), randn(g, 3, 4, 5), randn(g, 5, 5), randn(g, 5, 5), randn(g, 5)),
            dims={"B": 3, "T_q": 2, "T_k": 4, "d": 5},
            note="square weight matrices",
        ),
        Case(
            "B=2, T_q=3, T_k=5, d_q=4, d_k=6, d_a=7",
            (randn(g, 2, 3, 4), randn(g, 2, 5, 6), randn(g, 7, 4), randn(g, 7, 6), randn(g, 7)),
            dims={"B": 2, "T_q": 3, "T_k": 5, "d_q": 4, "d_k": 6, "d_a": 7},
        ),
        Case(
            "B=1, T_q=2, T_k=6, d_q=d_k=3, d_a=8, large",
            (
                randn(g, 1, 2, 3, scale=5.0),
                randn(g, 1, 6, 3, scale=5.0),
                randn(g, 8, 3),
                randn(g, 8, 3),
                randn(g, 8),
            ),
            dims={"B": 1, "T_q": 2, "T_k": 6, "d": 3, "d_a": 8},
            note="tanh saturates at ±1",
        ),
    ]


def _additive_with(act=torch.tanh, swap=False, layout_T=True):
    def fn(Q, K, W_q, W_k, w):
        A, Bm = (W_k, W_q) if swap else (W_q, W_k)
        hidden = (
            (Q @ A.T).unsqueeze(-2) + (K @ Bm.T).unsqueeze(-3)
            if layout_T
            else (Q @ A).unsqueeze(-2) + (K @ Bm).unsqueeze(-3)
        )
        return act(hidden) @ w

    return fn


register(
    Task(
        id="04.additive_scores",
        title="additive (concat) scores",
        points=3,
        reference=_additive_ref,
        cases=_additive_cases,
        misconceptions=[
            Misconception(
                "no_tanh",
                "you left out the tanh: additive attention passes W_q q + W_k k through tanh before the dot "
                "product with w (without it the score is just a sum of a query term and a key term)",
                _additive_with(act=lambda x: x),
            ),
            Misconception(
                "relu_not_tanh",
                "you used ReLU where the additive score has tanh: e = wᵀ tanh(W_q q + W_k k)",
                _additive_with(act=torch.relu),
            ),
            Misconception(
                "sigmoid_not_tanh",
                "you used a sigmoid where the additive score has tanh: e = wᵀ tanh(W_q q + W_k k)",
                _additive_with(act=torch.sigmoid),
            ),
            Misconception(
                "tanh_after_w",
                "you applied tanh after the product with w; the tanh belongs inside: wᵀ tanh(W_q q + W_k k)",
                lambda Q, K, W_q, W_k, w: torch.tanh(_hidden(Q, K, W_q, W_k) @ w),
            ),
            Misconception(
                "summed_not_projected",
                "you added up the entries of the hidden layer instead of taking its dot product with w: the "
                "score is wᵀ tanh(W_q q + W_k k), each hidden unit weighted by its entry of w",
                lambda Q, K, W_q, W_k, w: torch.tanh(_hidden(Q, K, W_q, W_k)).sum(-1),
            ),
            Misconception(
                "tanh_separately",
                "you applied tanh to the query and key terms separately and then added them; add first, then tanh",
                lambda Q, K, W_q, W_k, w: (
                    (torch.tanh(Q @ W_q.T).unsqueeze(-2) + torch.tanh(K @ W_k.T).unsqueeze(-3)) @ w
                ),
            ),
            Misconception(
                "swapped_matrices",
                "you applied W_k to the queries and W_q to the keys: W_q belongs to the query, W_k to the key",
                _additive_with(swap=True),
            ),
            Misconception(
                "weights_not_transposed",
                "you multiplied by W_q and W_k as if they were stored (in, out); the book stores weights like "
                "nn.Linear, (out, in) = (d_a, d_q), so W_q q is the query times the transpose of W_q",
                _additive_with(layout_T=False),
            ),
            Misconception(
                "transposed",
                "your scores are transposed: rows must be queries and columns keys, shape (B, T_q, T_k)",
                lambda Q, K, W_q, W_k, w: _additive_ref(Q, K, W_q, W_k, w).transpose(-1, -2),
            ),
            Misconception(
                "returned_weights",
                "you returned attention weights (a softmax of the scores); this task stops at the additive "
                "scores e = wᵀ tanh(W_q q + W_k k), before the softmax",
                lambda Q, K, W_q, W_k, w: torch.softmax(_additive_ref(Q, K, W_q, W_k, w), dim=-1),
            ),
        ],
        properties=[_mixes_batch(_additive_ref)],
        hint="Broadcast: (B, T_q, 1, d_a) + (B, 1, T_k, d_a) gives every query-key pair; Q @ W_q.T is (B, T_q, d_a).",
        forbidden=BOOK_SCORES,
        atol=1e-9,
        rtol=1e-9,
        shortcut_example=_book.additive_scores,
    )
)

# ---------------------------------------------------------------- 04.hand_scores: a new query, by hand

#: the query of the by-hand task; it is not one of the worked example's decoder states
HAND_QUERY = (-1.0, 2.0, 0.5, 1.0)


def _hand_H():
    return torch.tensor([[1, 0, 1, 0], [0, 1, 0, 1], [1, 1, 0, 0], [0, 0, 1, 2]], dtype=torch.float64)


def _hand_q():
    return torch.tensor(HAND_QUERY, dtype=torch.float64)


def _listed(x):
    return lambda: [float(v) for v in x()]


register(
    Task(
        id="04.hand_scores",
        title="scores of a new query, by hand",
        points=1,
        reference=_listed(lambda: _hand_H() @ _hand_q()),
        cases=lambda: [Case("the query s = [-1, 2, 0.5, 1]", (), note="against the worked example's H")],
        misconceptions=[
            Misconception(
                "combined_columns",
                "those are the products of s with the columns of H; the score of "
                "word i is the dot product of s with row i, h_i",
                _listed(lambda: _hand_q() @ _hand_H()),
            ),
            Misconception(
                "scaled",
                "you divided by √d = 2: this task asks for the plain dot products s·h_i",
                _listed(lambda: _hand_H() @ _hand_q() / 2),
            ),
            Misconception(
                "returned_weights",
                "those are the weights (after a softmax); the task asks for the scores",
                _listed(lambda: torch.softmax(_hand_H() @ _hand_q(), -1)),
            ),
            Misconception(
                "sign_slip",
                "one product with the negative entry s[1] = -1 lost its sign: (-1)·1 = -1",
                _listed(lambda: _hand_H() @ _hand_q().abs()),
            ),
            Misconception(
                "worked_example_step",
                "those are the scores of the worked example's step t = 3; "
                "this task has its own query s = [-1, 2, 0.5, 1]",
                lambda: [1.0, 1.5, 0.5, 3.0],
            ),
            Misconception(
                "worked_example_step",
                "those are the scores of the worked example's step t = 1; "
                "this task has its own query s = [-1, 2, 0.5, 1]",
                _listed(lambda: _hand_H() @ torch.tensor([2, 0, 0.5, 0], dtype=torch.float64)),
            ),
            Misconception(
                "worked_example_step",
                "those are the scores of the worked example's step t = 2; "
                "this task has its own query s = [-1, 2, 0.5, 1]",
                _listed(lambda: _hand_H() @ torch.tensor([0, 1.5, 0, 0.5], dtype=torch.float64)),
            ),
        ],
        atol=1e-3,
        rtol=0.0,
        check_grad=False,
        hint="e_i = s · h_i: multiply component by component and add, once for each of the 4 rows of H.",
        answer_words="one score per source word",
        forbidden=BOOK_SCORES,
        shortcut_example=functools.partial(_book.dot_scores, _hand_q(), _hand_H()),
    )
)
