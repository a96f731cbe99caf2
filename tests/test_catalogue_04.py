"""Set 04 (attention scores): every known-wrong implementation is caught, with the right diagnosis.

These are written the way learners write them, independently of the grader's misconception models.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F

from attnbook.grading import get_task, run_task

WRONG = {
    "04.dot_scores": [
        (
            "softmax applied",
            lambda s_t, H: torch.softmax(H @ s_t, dim=0),
            "returned_weights",
            "before the softmax",
        ),
        ("scaled", lambda s_t, H: (H @ s_t) / H.shape[1] ** 0.5, "scaled", "√d"),
        ("forgot the sum", lambda s_t, H: s_t * H, "elementwise_not_summed", "add the products"),
        ("summed over rows", lambda s_t, H: torch.sum(s_t * H, dim=0), "summed_over_positions", "(N,)"),
        ("ignores the query", lambda s_t, H: H.sum(1), "ignores_query", "s_t"),
        ("s_t @ H", lambda s_t, H: s_t @ H, "combined_columns", "columns of H"),
        ("Python list", lambda s_t, H: [float(h @ s_t) for h in H], "wrong_type", "torch.Tensor"),
        ("float32", lambda s_t, H: (H @ s_t).to(torch.float32), "wrong_dtype", "float32"),
    ],
    "04.dot_scores_batch": [
        ("K Qᵀ", lambda Q, K: K @ Q.transpose(1, 2), "transposed", "transposed"),
        (
            "bmm transposed",
            lambda Q, K: torch.bmm(K, Q.permute(0, 2, 1)),
            "transposed",
            "rows must be queries",
        ),
        ("softmax", lambda Q, K: torch.softmax(Q @ K.transpose(1, 2), -1), "returned_weights", "softmax"),
        ("scaled", lambda Q, K: Q @ K.transpose(1, 2) / math.sqrt(Q.size(-1)), "scaled", "√d"),
        ("Q @ K", lambda Q, K: Q @ K, "raised", "RuntimeError"),
        (
            "einsum sums the batch",
            lambda Q, K: torch.einsum("bqd,ckd->bqk", Q, K),
            "mixes_batch_items",
            "all sentences",
        ),
        (
            "other sentence's keys",
            lambda Q, K: Q @ K.roll(1, dims=0).transpose(1, 2),
            "mixes_batch_items",
            "own keys",
        ),
        (
            "reshape",
            lambda Q, K: Q @ K.view(K.size(0), K.size(2), K.size(1)),
            "reshape_not_transpose",
            "transpose",
        ),
        (
            "first sentence's keys for all",
            lambda Q, K: torch.matmul(Q, K[0].T),
            "first_sentence_keys",
            "first sentence",
        ),
    ],
    "04.scaled_dot_scores": [
        ("no scaling", lambda Q, K: Q @ K.transpose(-2, -1), "not_scaled", "√d_k"),
        (
            "/ d ** 1/2",
            lambda Q, K: Q @ K.transpose(-2, -1) / Q.shape[-1] ** 1 / 2,
            "power_precedence",
            "d ** 1/2",
        ),
        (
            "/ (d ** 1/2)",
            lambda Q, K: Q @ K.transpose(-2, -1) / (Q.shape[-1] ** 1 / 2),
            "power_precedence",
            "d ** 1/2",
        ),
        (
            "integer square root",
            lambda Q, K: Q @ K.transpose(-2, -1) / int(Q.shape[-1] ** 0.5),
            "integer_sqrt",
            "rounded square root",
        ),
        ("√T_q", lambda Q, K: Q @ K.transpose(-2, -1) / math.sqrt(Q.shape[1]), "wrong_dimension", "T_q"),
        ("√B", lambda Q, K: Q @ K.transpose(-2, -1) / math.sqrt(len(Q)), "wrong_dimension", "batch size"),
        (
            "√ of d from the wrong axis",
            lambda Q, K: Q @ K.transpose(-2, -1) / math.sqrt(Q.size(1)),
            "wrong_dimension",
            "number of queries",
        ),
        (
            "softmax",
            lambda Q, K: torch.softmax(Q @ K.mT / math.sqrt(K.shape[-1]), -1),
            "returned_weights",
            "softmax",
        ),
        (
            "the first sentence's keys",
            lambda Q, K: Q @ K[0].mT / math.sqrt(Q.shape[-1]),
            "mixes_batch_items",
            "own keys",
        ),
        (
            "the next sentence's keys",
            lambda Q, K: Q @ K.roll(1, 0).mT / math.sqrt(Q.shape[-1]),
            "mixes_batch_items",
            "own keys",
        ),
        (
            "divide by d",
            lambda Q, K: Q @ K.transpose(-2, -1) / K.shape[-1],
            "divided_by_d",
            "instead of √d_k",
        ),
        ("multiply", lambda Q, K: Q @ K.transpose(-2, -1) * Q.shape[-1] ** 0.5, "multiplied", "divided"),
        ("√T_k", lambda Q, K: Q @ K.transpose(-2, -1) / math.sqrt(K.shape[1]), "wrong_dimension", "T_k"),
        (
            "transposed",
            lambda Q, K: K @ Q.transpose(-2, -1) / math.sqrt(Q.shape[-1]),
            "transposed",
            "transposed",
        ),
    ],
    "04.general_scores": [
        ("Wᵀ", lambda Q, K, W: Q @ W.T @ K.transpose(1, 2), "transposed_W", "Wᵀ"),
        ("scaled", lambda Q, K, W: Q @ W @ K.transpose(1, 2) / math.sqrt(W.shape[1]), "scaled", "no scaling"),
        ("one sentence's keys", lambda Q, K, W: Q @ W @ K[-1].T, "mixes_batch_items", "own keys"),
        ("the other sentences' keys", lambda Q, K, W: Q @ W @ K.flip(0).mT, "mixes_batch_items", "own keys"),
        ("no W", lambda Q, K, W: torch.matmul(Q, K.transpose(1, 2)), "ignored_W", "ignore W"),
        ("transposed", lambda Q, K, W: K @ W.T @ Q.transpose(1, 2), "transposed", "transposed"),
    ],
    "04.additive_scores": [
        (
            "no tanh",
            lambda Q, K, W_q, W_k, w: ((Q @ W_q.T)[:, :, None] + (K @ W_k.T)[:, None]) @ w,
            "no_tanh",
            "tanh",
        ),
        (
            "tanh outside",
            lambda Q, K, W_q, W_k, w: torch.tanh(((Q @ W_q.T)[:, :, None] + (K @ W_k.T)[:, None]) @ w),
            "tanh_after_w",
            "inside",
        ),
        (
            "tanh per term",
            lambda Q, K, W_q, W_k, w: (
                (torch.tanh(Q @ W_q.T)[:, :, None] + torch.tanh(K @ W_k.T)[:, None]) @ w
            ),
            "tanh_separately",
            "add first",
        ),
        (
            "keys first",
            lambda Q, K, W_q, W_k, w: torch.tanh((Q @ W_q.T)[:, None] + (K @ W_k.T)[:, :, None]) @ w,
            "transposed",
            "transposed",
        ),
        (
            "hidden layer summed",
            lambda Q, K, W_q, W_k, w: torch.tanh((Q @ W_q.T)[:, :, None] + (K @ W_k.T)[:, None]).sum(-1),
            "summed_not_projected",
            "dot product with w",
        ),
        (
            "ReLU",
            lambda Q, K, W_q, W_k, w: torch.relu((Q @ W_q.T).unsqueeze(2) + (K @ W_k.T).unsqueeze(1)) @ w,
            "relu_not_tanh",
            "ReLU",
        ),
        (
            "sigmoid",
            lambda Q, K, W_q, W_k, w: torch.sigmoid((Q @ W_q.T).unsqueeze(2) + (K @ W_k.T).unsqueeze(1)) @ w,
            "sigmoid_not_tanh",
            "sigmoid",
        ),
        (
            "W_k on the queries",
            lambda Q, K, W_q, W_k, w: (
                torch.tanh(F.linear(Q, W_k)[:, :, None] + F.linear(K, W_q)[:, None]) @ w
            ),
            "swapped_matrices",
            "W_q belongs to the query",
        ),
        (
            "Q @ W_q (old layout)",
            lambda Q, K, W_q, W_k, w: torch.tanh((Q @ W_q)[:, :, None] + (K @ W_k)[:, None]) @ w,
            "weights_not_transposed",
            "(out, in)",
        ),
        (
            "one sentence's keys for all",
            lambda Q, K, W_q, W_k, w: torch.tanh((Q @ W_q.T)[:, :, None] + (K[:1] @ W_k.T)[:, None]) @ w,
            "mixes_batch_items",
            "own keys",
        ),
        (
            "the next sentence's keys",
            lambda Q, K, W_q, W_k, w: (
                torch.tanh((Q @ W_q.T)[:, :, None] + (K.roll(1, 0) @ W_k.T)[:, None]) @ w
            ),
            "mixes_batch_items",
            "own keys",
        ),
        (
            "float32 inside",
            lambda Q, K, W_q, W_k, w: (
                torch.tanh((Q.float() @ W_q.float().T)[:, :, None] + (K.float() @ W_k.float().T)[:, None])
                @ w.float()
            ).double(),
            "float32_computation",
            "float32",
        ),
    ],
    "04.hand_scores": [
        ("s @ H", lambda: [-0.5, 2.5, 0.0, 4.0], "combined_columns", "columns"),
        ("softmax of the scores", lambda: [0.0170, 0.5643, 0.0764, 0.3423], "returned_weights", "weights"),
        ("divided by 2", lambda: [-0.25, 1.5, 0.5, 1.25], "scaled", "√d"),
        ("lost the minus sign", lambda: [1.5, 3.0, 3.0, 2.5], "sign_slip", "sign"),
        ("the worked example's e^3", lambda: [1.0, 1.5, 0.5, 3.0], "worked_example_step", "its own query"),
        ("the worked example's e^1", lambda: [2.5, 0.0, 2.0, 0.5], "worked_example_step", "t = 1"),
        (
            "computed with the book's dot_scores",
            lambda: (
                __import__("attnbook.attention")
                .attention.dot_scores(
                    torch.tensor([-1.0, 2.0, 0.5, 1.0], dtype=torch.float64),
                    torch.tensor(
                        [[1.0, 0, 1, 0], [0, 1, 0, 1], [1, 1, 0, 0], [0, 0, 1, 2]], dtype=torch.float64
                    ),
                )
                .tolist()
            ),
            "forbidden_call",
            "0 points",
        ),
        ("arithmetic slip", lambda: [-0.5, 3.0, 1.0, 2.0], "wrong_values", "not what the check computes"),
        ("three numbers", lambda: [-0.5, 3.0, 1.0], "wrong_length", "asks for 4 (one score per source word)"),
        (
            "rounded to whole numbers",
            lambda: [-0.0, 3.0, 1.0, 2.0],
            "wrong_values",
            "not what the check computes",
        ),
    ],
}


CORRECT = {
    "04.dot_scores": [
        lambda s_t, H: torch.einsum("d,nd->n", s_t, H),
        lambda s_t, H: (H * s_t).sum(-1),
        lambda s_t, H: torch.stack([torch.dot(h, s_t) for h in H]),
    ],
    "04.dot_scores_batch": [
        lambda Q, K: torch.einsum("bqd,bkd->bqk", Q, K),
        lambda Q, K: torch.bmm(Q, K.permute(0, 2, 1)),
        lambda Q, K: Q @ K.mT,
    ],
    "04.scaled_dot_scores": [
        lambda Q, K: (Q / math.sqrt(Q.shape[-1])) @ K.transpose(1, 2),
        lambda Q, K: torch.einsum("bqd,bkd->bqk", Q, K) * Q.shape[-1] ** -0.5,
        lambda Q, K: torch.baddbmm(
            torch.zeros(Q.shape[0], Q.shape[1], K.shape[1], dtype=Q.dtype),
            Q,
            K.mT,
            beta=0.0,
            alpha=1 / math.sqrt(K.size(-1)),
        ),
    ],
    "04.general_scores": [
        lambda Q, K, W: torch.einsum("bqi,ij,bkj->bqk", Q, W, K),
        lambda Q, K, W: Q @ (K @ W.T).transpose(1, 2),
    ],
    "04.additive_scores": [
        lambda Q, K, W_q, W_k, w: (
            torch.tanh(F.linear(Q, W_q).unsqueeze(2) + F.linear(K, W_k).unsqueeze(1)) @ w
        ),
        lambda Q, K, W_q, W_k, w: torch.stack(
            [
                torch.stack(
                    [
                        torch.stack(
                            [w @ torch.tanh(W_q @ Q[b, i] + W_k @ K[b, j]) for j in range(K.shape[1])]
                        )
                        for i in range(Q.shape[1])
                    ]
                )
                for b in range(Q.shape[0])
            ]
        ),
    ],
    "04.hand_scores": [lambda: [-0.5, 3, 1, 2.5], lambda: (-0.5, 3.0, 1.0, 2.5)],
}


# ------------------------------------------------------------------ red team, round 2 (the grader's fixes)


def additive_then_softmax(Q, K, W_q, W_k, w):
    """Goes one step too far: the weights instead of the scores."""
    e = torch.tanh((Q @ W_q.T).unsqueeze(2) + (K @ W_k.T).unsqueeze(1)) @ w
    return torch.softmax(e, dim=-1)


def dot_scores_nan(s_t, H):
    """A NaN made by the learner's own arithmetic (0 · inf), in a task without exp()."""
    return H @ s_t + 0.0 * torch.full_like(H[:, 0], float("inf"))


WRONG["04.additive_scores"] += [
    ("softmax of the scores", additive_then_softmax, "returned_weights", "before the softmax"),
]
WRONG["04.dot_scores"] += [
    ("NaN from 0 · inf", dot_scores_nan, "not_finite", "undefined or overflows"),
]


def test_a_nan_in_a_task_without_exp_does_not_speak_of_exp():
    result = run_task(get_task("04.dot_scores"), dot_scores_nan)
    assert result.diagnosis == "not_finite" and "exp()" not in result.message, result.message
