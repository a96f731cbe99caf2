"""Set 04 (attention scores): every known-wrong implementation is caught, with the right diagnosis.

These are written the way learners write them, independently of the grader's misconception models.
"""

from __future__ import annotations

import math

import pytest
import torch

from attnbook.grading import get_task, run_task

WRONG = {
    "04.dot_scores": [
        ("softmax applied", lambda s_t, H: torch.softmax(H @ s_t, dim=0), "returned_weights", "before the softmax"),
        ("scaled", lambda s_t, H: (H @ s_t) / H.shape[1] ** 0.5, "scaled", "√d"),
        ("forgot the sum", lambda s_t, H: s_t * H, "elementwise_not_summed", "add the products"),
        ("summed over rows", lambda s_t, H: torch.sum(s_t * H, dim=0), "summed_over_positions", "(N,)"),
        ("ignores the query", lambda s_t, H: H.sum(1), "ignores_query", "s_t"),
        ("s_t @ H", lambda s_t, H: s_t @ H, "combined_columns", "H @ s_t"),
        ("Python list", lambda s_t, H: [float(h @ s_t) for h in H], "wrong_type", "torch.Tensor"),
        ("float32", lambda s_t, H: (H @ s_t).to(torch.float32), "wrong_dtype", "float32"),
    ],
    "04.dot_scores_batch": [
        ("K Qᵀ", lambda Q, K: K @ Q.transpose(1, 2), "transposed", "transposed"),
        ("bmm transposed", lambda Q, K: torch.bmm(K, Q.permute(0, 2, 1)), "transposed", "Q @ Kᵀ"),
        ("softmax", lambda Q, K: torch.softmax(Q @ K.transpose(1, 2), -1), "returned_weights", "softmax"),
        ("scaled", lambda Q, K: Q @ K.transpose(1, 2) / math.sqrt(Q.size(-1)), "scaled", "√d"),
        ("Q @ K", lambda Q, K: Q @ K, "raised", "RuntimeError"),
        ("einsum sums the batch", lambda Q, K: torch.einsum("bqd,ckd->bqk", Q, K), "mixes_batch_items", "all sentences"),
        ("other sentence's keys", lambda Q, K: Q @ K.roll(1, dims=0).transpose(1, 2), "mixes_batch_items", "own keys"),
        ("reshape", lambda Q, K: Q @ K.view(K.size(0), K.size(2), K.size(1)), "reshape_not_transpose", "transpose"),
    ],
    "04.scaled_dot_scores": [
        ("no scaling", lambda Q, K: Q @ K.transpose(-2, -1), "not_scaled", "√d_k"),
        ("divide by d", lambda Q, K: Q @ K.transpose(-2, -1) / K.shape[-1], "divided_by_d", "instead of √d_k"),
        ("multiply", lambda Q, K: Q @ K.transpose(-2, -1) * Q.shape[-1] ** 0.5, "multiplied", "divided"),
        ("√T_k", lambda Q, K: Q @ K.transpose(-2, -1) / math.sqrt(K.shape[1]), "wrong_dimension", "T_k"),
        ("transposed", lambda Q, K: K @ Q.transpose(-2, -1) / math.sqrt(Q.shape[-1]), "transposed", "transposed"),
    ],
    "04.general_scores": [
        ("Wᵀ", lambda Q, K, W: Q @ W.T @ K.transpose(1, 2), "transposed_W", "Wᵀ"),
        ("no W", lambda Q, K, W: torch.matmul(Q, K.transpose(1, 2)), "ignored_W", "ignore W"),
        ("transposed", lambda Q, K, W: K @ W.T @ Q.transpose(1, 2), "transposed", "transposed"),
    ],
    "04.additive_scores": [
        ("no tanh", lambda Q, K, W_q, W_k, v: ((Q @ W_q)[:, :, None] + (K @ W_k)[:, None]) @ v, "no_tanh", "tanh"),
        ("tanh outside", lambda Q, K, W_q, W_k, v: torch.tanh(((Q @ W_q)[:, :, None] + (K @ W_k)[:, None]) @ v),
         "tanh_after_v", "inside"),
        ("tanh per term", lambda Q, K, W_q, W_k, v: (torch.tanh(Q @ W_q)[:, :, None] + torch.tanh(K @ W_k)[:, None]) @ v,
         "tanh_separately", "add first"),
        ("keys first", lambda Q, K, W_q, W_k, v: torch.tanh((Q @ W_q)[:, None] + (K @ W_k)[:, :, None]) @ v,
         "transposed", "transposed"),
    ],
    "04.hand_scores": [
        ("step 1", lambda: [2.5, 0.0, 2.0, 0.5], "wrong_step_1", "t=1"),
        ("step 2", lambda: [0.0, 2.0, 1.5, 1.0], "wrong_step_2", "t=2"),
        ("weights", lambda: [0.0939, 0.1549, 0.0570, 0.6942], "returned_weights", "weights"),
        ("arithmetic slip", lambda: [1.0, 1.5, 0.5, 2.0], "wrong_values", "not what the check computes"),
        ("three numbers", lambda: [1.0, 1.5, 0.5], "wrong_values", "not what the check computes"),
    ],
}


