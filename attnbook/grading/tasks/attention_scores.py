"""Set 04, attention scores: ``e^t_i = s_t^T h_i`` and its variants (scaled, general, additive)."""

from __future__ import annotations

import math

import torch

from ... import worked_example as wx
from ..cases import generator, randn
from ..engine import Case, Misconception, Task
from ..registry import register

# ---------------------------------------------------------------- 04.dot_scores: one query s_t, H (N, d)


def _dot_scores_ref(s_t, H):
    return H @ s_t


def _single_cases():
    g = generator(4)
    cases = [
        Case("worked example, t=3", (wx.decoder_states()[2], wx.encoder_states()), dims={"N": 4, "d": 4},
             note="the step that emits 'étudiant'"),
        Case("N=5, d=3", (randn(g, 3), randn(g, 5, 3)), dims={"N": 5, "d": 3}),
        Case("N=2, d=7, negative and large", (randn(g, 7, scale=30.0), randn(g, 2, 7, scale=10.0)),
             dims={"N": 2, "d": 7}),
        Case("N=6, d=1", (randn(g, 1), randn(g, 6, 1)), dims={"N": 6, "d": 1}),
        Case("N=1, d=4", (randn(g, 4), randn(g, 1, 4)), dims={"N": 1, "d": 4}),
    ]
    return cases


register(Task(
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
            "you computed s_t @ H, which mixes the rows of H using the entries of s_t: the score of "
            "position i is the dot product of s_t with the row h_i, i.e. H @ s_t",
            lambda s_t, H: s_t @ H,
        ),
        Misconception(
            "ignores_query",
            "your scores do not depend on the decoder state s_t: each score must compare s_t with h_i",
            lambda s_t, H: H.sum(dim=-1),
        ),
    ],
    hint="Each score is one dot product: e^t_i = Σ_k s_t[k] · H[i, k].",
))

# ---------------------------------------------------------------- 04.dot_scores_batch: Q (B,T_q,d), K (B,T_k,d)


def _batch_ref(Q, K):
    return Q @ K.transpose(-1, -2)


def _batch_cases():
    g = generator(40)
    return [
        Case("B=2, T_q=3, T_k=5, d=4", (randn(g, 2, 3, 4), randn(g, 2, 5, 4)),
             dims={"B": 2, "T_q": 3, "T_k": 5, "d": 4}),
        Case("B=3, T_q=1, T_k=6, d=2", (randn(g, 3, 1, 2), randn(g, 3, 6, 2)),
             dims={"B": 3, "T_q": 1, "T_k": 6, "d": 2}),
        Case("B=1, T_q=4, T_k=2, d=7, large", (randn(g, 1, 4, 7, scale=20.0), randn(g, 1, 2, 7, scale=20.0)),
             dims={"B": 1, "T_q": 4, "T_k": 2, "d": 7}),
    ]


def _batch_property_batch_items_independent(case, outputs):
    Q, K = case.args
    got = outputs[0]
    if got.shape != (Q.shape[0], Q.shape[1], K.shape[1]) or Q.shape[0] < 2:
        return None
    if torch.allclose(got, Q @ K.sum(dim=0).transpose(-1, -2)):
        return ("your result adds up the keys of all sentences in the batch: each sentence's queries must "
                "only meet its own keys (check the batch letter of your einsum or the axes you sum)")
    mixed = torch.einsum("bqd,ckd->bcqk", Q, K)
    for b in range(Q.shape[0]):
        for c in range(Q.shape[0]):
            if b != c and torch.allclose(got[b], mixed[b, c]):
                return (f"batch item {b} of your result compares its queries with the keys of batch item "
                        f"{c}: each sentence's queries must only meet its own keys")
    return None


_batch_property_batch_items_independent.key = "mixes_batch_items"

register(Task(
    id="04.dot_scores_batch",
    title="dot-product scores for a batch of queries",
    points=2,
    reference=_batch_ref,
    cases=_batch_cases,
    misconceptions=[
        Misconception(
            "transposed",
            "your scores are transposed: rows must be queries and columns keys, shape (B, T_q, T_k); "
            "compute Q @ Kᵀ, not K @ Qᵀ",
            lambda Q, K: K @ Q.transpose(-1, -2),
        ),
        Misconception(
            "returned_weights",
            "you returned attention weights (softmax of the scores); this task stops before the softmax",
            lambda Q, K: torch.softmax(Q @ K.transpose(-1, -2), dim=-1),
        ),
        Misconception(
            "reshape_not_transpose",
            "you swapped the last two axes of K with reshape/view, which keeps the memory order and "
            "scrambles the entries: use K.transpose(-1, -2)",
            lambda Q, K: Q @ K.reshape(K.shape[0], K.shape[2], K.shape[1]),
        ),
        Misconception(
            "scaled",
            "you divided by √d: this task asks for the plain dot product Q Kᵀ",
            lambda Q, K: Q @ K.transpose(-1, -2) / math.sqrt(Q.shape[-1]),
        ),
    ],
    properties=[_batch_property_batch_items_independent],
    hint="With a batch axis in front, Q @ K.transpose(-1, -2) compares every query with every key of the same item.",
))

# ---------------------------------------------------------------- 04.scaled_dot_scores


def _scaled_ref(Q, K):
    return Q @ K.transpose(-1, -2) / math.sqrt(Q.shape[-1])


def _scaled_cases():
    g = generator(41)
    return [
        Case("B=2, T_q=3, T_k=5, d=4", (randn(g, 2, 3, 4), randn(g, 2, 5, 4)),
             dims={"B": 2, "T_q": 3, "T_k": 5, "d": 4}),
        Case("B=1, T_q=2, T_k=3, d=16", (randn(g, 1, 2, 16), randn(g, 1, 3, 16)),
             dims={"B": 1, "T_q": 2, "T_k": 3, "d": 16}),
        Case("B=2, T_q=4, T_k=6, d=9, negative", (-randn(g, 2, 4, 9).abs(), randn(g, 2, 6, 9)),
             dims={"B": 2, "T_q": 4, "T_k": 6, "d": 9}),
    ]


register(Task(
    id="04.scaled_dot_scores",
    title="scaled dot-product scores",
    points=2,
    reference=_scaled_ref,
    cases=_scaled_cases,
    misconceptions=[
        Misconception(
            "not_scaled",
            "you did not scale: divide the dot products by √d_k (the size of the last axis of Q and K)",
            lambda Q, K: Q @ K.transpose(-1, -2),
        ),
        Misconception(
            "divided_by_d",
            "you divided by d_k instead of √d_k: the variance of a dot product of d_k unit-variance "
            "terms is d_k, so its standard deviation is √d_k",
            lambda Q, K: Q @ K.transpose(-1, -2) / Q.shape[-1],
        ),
        Misconception(
            "multiplied",
            "you multiplied by √d_k; the scores must be divided by it",
            lambda Q, K: Q @ K.transpose(-1, -2) * math.sqrt(Q.shape[-1]),
        ),
        Misconception(
            "wrong_dimension",
            "you scaled by the square root of the number of keys T_k; the scale is √d_k, the vector dimension",
            lambda Q, K: Q @ K.transpose(-1, -2) / math.sqrt(K.shape[-2]),
        ),
        Misconception(
            "transposed",
            "your scores are transposed: rows must be queries and columns keys, shape (B, T_q, T_k)",
            lambda Q, K: K @ Q.transpose(-1, -2) / math.sqrt(Q.shape[-1]),
        ),
    ],
))

# ---------------------------------------------------------------- 04.general_scores: Q W Kᵀ


def _general_ref(Q, K, W):
    return Q @ W @ K.transpose(-1, -2)


def _general_cases():
    g = generator(42)
    return [
        Case("B=2, T_q=3, T_k=5, d_q=d_k=4", (randn(g, 2, 3, 4), randn(g, 2, 5, 4), randn(g, 4, 4)),
             dims={"B": 2, "T_q": 3, "T_k": 5, "d": 4}),
        Case("B=1, T_q=2, T_k=6, d_q=3, d_k=7", (randn(g, 1, 2, 3), randn(g, 1, 6, 7), randn(g, 3, 7)),
             dims={"B": 1, "T_q": 2, "T_k": 6, "d_q": 3, "d_k": 7}),
    ]


register(Task(
    id="04.general_scores",
    title="general (bilinear) scores",
    points=2,
    reference=_general_ref,
    cases=_general_cases,
    misconceptions=[
        Misconception(
            "transposed_W",
            "you used Wᵀ instead of W: the score is qᵀ W k with W of shape (d_q, d_k), so compute Q @ W @ Kᵀ",
            lambda Q, K, W: Q @ W.transpose(0, 1) @ K.transpose(-1, -2),
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
    ],
))

# ---------------------------------------------------------------- 04.additive_scores: vᵀ tanh(q W_q + k W_k)


def _additive_ref(Q, K, W_q, W_k, v):
    return torch.tanh((Q @ W_q).unsqueeze(-2) + (K @ W_k).unsqueeze(-3)) @ v


def _additive_cases():
    g = generator(43)
    return [
        Case("B=2, T_q=3, T_k=5, d_q=4, d_k=6, d_a=7",
             (randn(g, 2, 3, 4), randn(g, 2, 5, 6), randn(g, 4, 7), randn(g, 6, 7), randn(g, 7)),
             dims={"B": 2, "T_q": 3, "T_k": 5, "d_q": 4, "d_k": 6, "d_a": 7}),
        Case("B=1, T_q=2, T_k=4, d_q=3, d_k=3, d_a=8, large",
             (randn(g, 1, 2, 3, scale=5.0), randn(g, 1, 4, 3, scale=5.0), randn(g, 3, 8), randn(g, 3, 8), randn(g, 8)),
             dims={"B": 1, "T_q": 2, "T_k": 4, "d_a": 8}),
    ]


register(Task(
    id="04.additive_scores",
    title="additive (concat) scores",
    points=3,
    reference=_additive_ref,
    cases=_additive_cases,
    misconceptions=[
        Misconception(
            "no_tanh",
            "you left out the tanh: additive attention passes q W_q + k W_k through tanh before the dot "
            "product with v (without it the score is just a sum of a query term and a key term)",
            lambda Q, K, W_q, W_k, v: ((Q @ W_q).unsqueeze(-2) + (K @ W_k).unsqueeze(-3)) @ v,
        ),
        Misconception(
            "tanh_after_v",
            "you applied tanh after the product with v; the tanh belongs inside: vᵀ tanh(W_q q + W_k k)",
            lambda Q, K, W_q, W_k, v: torch.tanh(((Q @ W_q).unsqueeze(-2) + (K @ W_k).unsqueeze(-3)) @ v),
        ),
        Misconception(
            "tanh_separately",
            "you applied tanh to the query and key terms separately and then added them; add first, then tanh",
            lambda Q, K, W_q, W_k, v: (torch.tanh(Q @ W_q).unsqueeze(-2) + torch.tanh(K @ W_k).unsqueeze(-3)) @ v,
        ),
        Misconception(
            "transposed",
            "your scores are transposed: rows must be queries and columns keys, shape (B, T_q, T_k)",
            lambda Q, K, W_q, W_k, v: (torch.tanh((Q @ W_q).unsqueeze(-2) + (K @ W_k).unsqueeze(-3)) @ v).transpose(-1, -2),
        ),
    ],
    hint="Broadcast: (B, T_q, 1, d_a) + (B, 1, T_k, d_a) gives every query-key pair.",
))

# ---------------------------------------------------------------- 04.hand_scores: the worked example by hand


def _hand_ref():
    return [float(x) for x in wx.encoder_states() @ wx.decoder_states()[wx.STEP_ETUDIANT - 1]]


def _hand_wrong_step(step):
    return lambda: [float(x) for x in wx.encoder_states() @ wx.decoder_states()[step - 1]]


register(Task(
    id="04.hand_scores",
    title="the worked example's scores, by hand",
    points=1,
    reference=_hand_ref,
    cases=lambda: [Case("worked example", (), note="step t=3, which emits 'étudiant'")],
    misconceptions=[
        Misconception("wrong_step_1", "those are the scores of step t=1 ('je'); the task asks for t=3 ('étudiant')",
                      _hand_wrong_step(1)),
        Misconception("wrong_step_2", "those are the scores of step t=2 ('suis'); the task asks for t=3 ('étudiant')",
                      _hand_wrong_step(2)),
        Misconception("returned_weights", "those are the weights (after the softmax); the task asks for the scores",
                      lambda: [float(x) for x in torch.softmax(torch.tensor(_hand_ref()), -1)]),
    ],
    atol=1e-3,
    rtol=0.0,
    check_grad=False,
    hint="e^3_i = s_3 · h_i: multiply component by component and add, once for each of the 4 source words.",
))
