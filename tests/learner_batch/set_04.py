"""Set 04, attention scores: learner-style answers."""

import math

import torch

from ._conventions import numbers_in_text, out_in_layout_04, task_id

SET = "04"


def _t(fn_name):
    return task_id(SET, fn_name)


# ---------------------------------------------------------------- 04.dot_scores(s_t, H) -> (N,)
def dot_scores_HT(s_t, H):
    return H.T @ s_t


def dot_scores_sum_wrong_axis(s_t, H):
    return (s_t * H).sum(dim=0)


def dot_scores_scaled(s_t, H):
    return H @ s_t / math.sqrt(s_t.shape[0])


def dot_scores_softmaxed(s_t, H):
    return torch.softmax(H @ s_t, dim=-1)


def dot_scores_numpy(s_t, H):
    import numpy as np

    return torch.from_numpy(np.dot(H.numpy(), s_t.numpy()))


def dot_scores_item_loop(s_t, H):
    return torch.tensor([(s_t * H[i]).sum().item() for i in range(H.shape[0])], dtype=H.dtype)


def dot_scores_float32(s_t, H):
    return (H.float() @ s_t.float()).to(H.dtype)


def dot_scores_book(s_t, H):
    from attnbook.attention import dot_scores

    return dot_scores(s_t, H)


def dot_scores_valid_loop(s_t, H):
    return torch.stack([torch.dot(s_t, H[i]) for i in range(H.shape[0])]) if H.shape[0] else H @ s_t


def dot_scores_valid_einsum(s_t, H):
    return torch.einsum("d,nd->n", s_t, H)


# ---------------------------------------------------------------- 04.dot_scores_batch(Q, K)
def batch_dotT(Q, K):
    return Q @ K.T


def batch_keys_query(Q, K):
    return K @ Q.transpose(-1, -2)


def batch_transpose_01(Q, K):
    return Q @ K.transpose(0, 1)


def batch_first_sentence_keys(Q, K):
    return torch.einsum("bqd,kd->bqk", Q, K[0])


def batch_scaled(Q, K):
    return Q @ K.transpose(-1, -2) / math.sqrt(Q.shape[-1])


def batch_float32(Q, K):
    return torch.bmm(Q.float(), K.float().transpose(1, 2)).double()


def batch_valid_einsum(Q, K):
    return torch.einsum("bqd,bkd->bqk", Q, K)


def batch_valid_loop(Q, K):
    out = Q.new_zeros(Q.shape[0], Q.shape[1], K.shape[1])
    for b in range(Q.shape[0]):
        out[b] = Q[b] @ K[b].T
    return out


# ---------------------------------------------------------------- 04.scaled_dot_scores(Q, K)
def scaled_by_d(Q, K):
    return Q @ K.transpose(-1, -2) / Q.shape[-1]


def scaled_by_sqrt_Tk(Q, K):
    return Q @ K.transpose(-1, -2) / math.sqrt(K.shape[1])


def scaled_by_sqrt_Tq(Q, K):
    return Q @ K.transpose(-1, -2) / math.sqrt(Q.shape[-2])


def scaled_times_sqrt_d(Q, K):
    return Q @ K.transpose(-1, -2) * math.sqrt(Q.shape[-1])


def scaled_by_sqrt_numel(Q, K):
    return Q @ K.transpose(-1, -2) / math.sqrt(Q.shape[0] * Q.shape[-1])


def scaled_book(Q, K):
    from attnbook.attention import scaled_dot_scores

    return scaled_dot_scores(Q, K)


def scaled_reference(Q, K):
    from attnbook.grading import get_task

    return get_task("04.scaled_dot_scores").reference(Q, K)


def scaled_valid_query_first(Q, K):
    return (Q * Q.shape[-1] ** -0.5) @ K.mT


def scaled_valid_einsum(Q, K):
    return torch.einsum("bqd,bkd->bqk", Q, K) / torch.tensor(float(Q.shape[-1]), dtype=Q.dtype).sqrt()


# ---------------------------------------------------------------- 04.general_scores(Q, K, W)
def general_W_transposed(Q, K, W):
    return Q @ W.T @ K.transpose(-1, -2)


def general_no_W(Q, K, W):
    return Q @ K.transpose(-1, -2)


def general_keys_first(Q, K, W):
    return K @ W.T @ Q.transpose(-1, -2)


def general_scaled(Q, K, W):
    return Q @ W @ K.transpose(-1, -2) / math.sqrt(K.shape[-1])


def general_W_on_keys_wrong_side(Q, K, W):
    return Q @ (K @ W).transpose(-1, -2)


def general_valid_key_side(Q, K, W):
    return Q @ (K @ W.transpose(0, 1)).transpose(-1, -2)


def general_valid_einsum(Q, K, W):
    return torch.einsum("bqi,ij,bkj->bqk", Q, W, K)


# ---------------------------------------------------------------- 04.additive_scores(Q, K, W_q, W_k, v)
# The task text decides the layout: W_q (d_a, d_q) applied as q @ W_q.T (nn.Linear), or (d_q, d_a) as q @ W_q.
def _lin(x, W):
    return x @ W.T if out_in_layout_04() else x @ W


def _lin_other(x, W):
    return x @ W if out_in_layout_04() else x @ W.T


def _pairs(q, k):
    return q.unsqueeze(2) + k.unsqueeze(1)  # (B, T_q, T_k, d_a)


def additive_relu(Q, K, W_q, W_k, v):
    return torch.relu(_pairs(_lin(Q, W_q), _lin(K, W_k))) @ v


def additive_sigmoid(Q, K, W_q, W_k, v):
    return torch.sigmoid(_pairs(_lin(Q, W_q), _lin(K, W_k))) @ v


def additive_swapped_W(Q, K, W_q, W_k, v):
    return torch.tanh(_pairs(_lin(Q, W_k), _lin(K, W_q))) @ v


def additive_sum_not_v(Q, K, W_q, W_k, v):
    return torch.tanh(_pairs(_lin(Q, W_q), _lin(K, W_k))).sum(-1)


def additive_tanh_outside(Q, K, W_q, W_k, v):
    return torch.tanh((_lin(Q, W_q) @ v).unsqueeze(2) + (_lin(K, W_k) @ v).unsqueeze(1))


def additive_transposed(Q, K, W_q, W_k, v):
    return torch.tanh(_lin(Q, W_q).unsqueeze(1) + _lin(K, W_k).unsqueeze(2)) @ v


def additive_other_layout(Q, K, W_q, W_k, v):
    return torch.tanh(_pairs(_lin_other(Q, W_q), _lin_other(K, W_k))) @ v


def additive_book(Q, K, W_q, W_k, v):
    from attnbook.attention import additive_scores

    return additive_scores(Q, K, W_q, W_k, v)


def additive_valid_loops(Q, K, W_q, W_k, v):
    B, T_q, T_k = Q.shape[0], Q.shape[1], K.shape[1]
    rows = []
    for b in range(B):
        rows.append(
            torch.stack(
                [
                    torch.stack([torch.tanh(_lin(Q[b, i], W_q) + _lin(K[b, j], W_k)) @ v for j in range(T_k)])
                    if T_k
                    else Q.new_zeros(0)
                    for i in range(T_q)
                ]
            )
            if T_q
            else Q.new_zeros(0, T_k)
        )
    return torch.stack(rows)


def additive_valid_einsum(Q, K, W_q, W_k, v):
    spec = "ad" if out_in_layout_04() else "da"
    q = torch.einsum(f"bqd,{spec}->bqa", Q, W_q)
    k = torch.einsum(f"bkd,{spec}->bka", K, W_k)
    return torch.einsum("bqka,a->bqk", torch.tanh(q[:, :, None] + k[:, None]), v)


# ---------------------------------------------------------------- 04.hand_scores()
# The learner reads the query from the task text (today a new query s; before, the worked example's s_3).
def _hand_query():
    from attnbook import worked_example as wx

    s = numbers_in_text("04", "hand_scores")
    return s if s is not None else wx.decoder_states()[2].tolist()


def _H():
    from attnbook import worked_example as wx

    return wx.encoder_states().tolist()


def _typed(xs):
    return [round(float(x), 4) for x in xs]


def _hand_right():
    s = _hand_query()
    return [sum(a * b for a, b in zip(s, h)) for h in _H()]


def hand_step2():
    return [0.0, 2.0, 1.5, 1.0]


def hand_step1():
    return [2.5, 0.0, 2.0, 0.5]


def hand_columns_of_H():
    s, H = _hand_query(), _H()
    return _typed(sum(s[i] * H[i][j] for i in range(4)) for j in range(4))


def hand_weights_not_scores():
    e = _hand_right()
    ex = [math.exp(x) for x in e]
    return _typed(x / sum(ex) for x in ex)


def hand_scaled():
    return _typed(x / 2 for x in _hand_right())


def hand_sign_dropped():
    s = [abs(x) for x in _hand_query()]
    return _typed(sum(a * b for a, b in zip(s, h)) for h in _H())


def hand_by_code_with_book():
    from attnbook import worked_example as wx
    from attnbook.attention import dot_scores

    s = torch.tensor(_hand_query(), dtype=torch.float64)
    return dot_scores(s, wx.encoder_states()).tolist()


def hand_valid():
    return _typed(_hand_right())


WRONG = [
    dict(
        task=_t("dot_scores"),
        name="HT_at_s",
        fn=dot_scores_HT,
        cls="only-square shapes",
        mistake="multiplies H transposed by s_t, which only works when N equals d",
    ),
    dict(
        task=_t("dot_scores"),
        name="sum_over_positions",
        fn=dot_scores_sum_wrong_axis,
        cls="axis",
        mistake="sums the products over the positions instead of over the features",
    ),
    dict(
        task=_t("dot_scores"),
        name="scaled",
        fn=dot_scores_scaled,
        cls="wrong scale",
        mistake="divides by sqrt(d) although the plain dot score is asked",
    ),
    dict(
        task=_t("dot_scores"),
        name="softmaxed",
        fn=dot_scores_softmaxed,
        cls="symptom",
        mistake="returns the weights (softmax) instead of the scores",
    ),
    dict(
        task=_t("dot_scores"),
        name="numpy",
        fn=dot_scores_numpy,
        cls=".numpy()",
        mistake="computes with NumPy, which breaks autograd",
    ),
    dict(
        task=_t("dot_scores"),
        name="item_loop",
        fn=dot_scores_item_loop,
        cls=".item()",
        mistake="builds the scores from .item() numbers, so no gradient flows",
    ),
    dict(
        task=_t("dot_scores"),
        name="float32",
        fn=dot_scores_float32,
        cls="float32 in a float64 task",
        mistake="computes in float32 and casts back",
    ),
    dict(
        task=_t("dot_scores"),
        name="book_import",
        fn=dot_scores_book,
        cls="book shortcut",
        mistake="calls the book's attnbook.attention.dot_scores instead of writing the step",
    ),
    dict(
        task=_t("dot_scores_batch"),
        name="dot_T_3d",
        fn=batch_dotT,
        cls=".T on 3-D",
        mistake="uses .T on a 3-D tensor, which reverses every axis",
    ),
    dict(
        task=_t("dot_scores_batch"),
        name="keys_times_queries",
        fn=batch_keys_query,
        cls="only-square shapes",
        mistake="computes K Q^T: rows are keys and columns queries (transposed scores)",
    ),
    dict(
        task=_t("dot_scores_batch"),
        name="transpose_batch_axis",
        fn=batch_transpose_01,
        cls="axis",
        mistake="transposes the batch and time axes of K instead of time and features",
    ),
    dict(
        task=_t("dot_scores_batch"),
        name="first_sentence_keys",
        fn=batch_first_sentence_keys,
        cls="one sentence's keys for all",
        mistake="uses the keys of sentence 0 for every sentence",
    ),
    dict(
        task=_t("dot_scores_batch"),
        name="scaled",
        fn=batch_scaled,
        cls="wrong scale",
        mistake="scales by sqrt(d) although plain dot scores are asked",
    ),
    dict(
        task=_t("dot_scores_batch"),
        name="float32",
        fn=batch_float32,
        cls="float32 in a float64 task",
        mistake="computes in float32 and casts back",
    ),
    dict(
        task=_t("scaled_dot_scores"),
        name="by_d",
        fn=scaled_by_d,
        cls="wrong scale",
        mistake="divides by d_k instead of sqrt(d_k)",
    ),
    dict(
        task=_t("scaled_dot_scores"),
        name="by_sqrt_Tk",
        fn=scaled_by_sqrt_Tk,
        cls="wrong scale",
        mistake="divides by sqrt of the number of keys instead of sqrt(d_k)",
    ),
    dict(
        task=_t("scaled_dot_scores"),
        name="by_sqrt_Tq",
        fn=scaled_by_sqrt_Tq,
        cls="wrong scale",
        mistake="divides by sqrt of the number of queries (shape[-2]) instead of sqrt(d_k)",
    ),
    dict(
        task=_t("scaled_dot_scores"),
        name="times_sqrt_d",
        fn=scaled_times_sqrt_d,
        cls="wrong scale",
        mistake="multiplies by sqrt(d_k) instead of dividing",
    ),
    dict(
        task=_t("scaled_dot_scores"),
        name="by_sqrt_B_d",
        fn=scaled_by_sqrt_numel,
        cls="wrong scale",
        mistake="divides by sqrt(B * d_k), counting the batch in the width",
    ),
    dict(
        task=_t("scaled_dot_scores"),
        name="book_import",
        fn=scaled_book,
        cls="book shortcut",
        mistake="calls the book's attnbook.attention.scaled_dot_scores",
    ),
    dict(
        task=_t("scaled_dot_scores"),
        name="grader_reference",
        fn=scaled_reference,
        cls="book shortcut",
        mistake="returns the grader's reference via get_task(...).reference",
    ),
    dict(
        task=_t("general_scores"),
        name="W_transposed",
        fn=general_W_transposed,
        cls="only-square shapes",
        mistake="uses W transposed (q W^T k), which agrees in shape only when d_q == d_k",
    ),
    dict(
        task=_t("general_scores"),
        name="ignores_W",
        fn=general_no_W,
        cls="only-square shapes",
        mistake="forgets W and returns plain dot scores",
    ),
    dict(
        task=_t("general_scores"),
        name="keys_first",
        fn=general_keys_first,
        cls="transposed",
        mistake="computes k W^T q: rows are keys and columns queries",
    ),
    dict(
        task=_t("general_scores"),
        name="scaled",
        fn=general_scaled,
        cls="wrong scale",
        mistake="adds a 1/sqrt(d_k) scale that the general score does not have",
    ),
    dict(
        task=_t("general_scores"),
        name="W_wrong_side_of_keys",
        fn=general_W_on_keys_wrong_side,
        cls="only-square shapes",
        mistake="applies W to the keys as K W instead of K W^T",
    ),
    dict(
        task=_t("additive_scores"),
        name="relu",
        fn=additive_relu,
        cls="ReLU for tanh",
        mistake="uses ReLU instead of tanh",
    ),
    dict(
        task=_t("additive_scores"),
        name="sigmoid",
        fn=additive_sigmoid,
        cls="sigmoid for tanh",
        mistake="uses sigmoid instead of tanh",
    ),
    dict(
        task=_t("additive_scores"),
        name="swapped_W",
        fn=additive_swapped_W,
        cls="only-square shapes",
        mistake="applies W_k to the queries and W_q to the keys",
    ),
    dict(
        task=_t("additive_scores"),
        name="sum_not_v",
        fn=additive_sum_not_v,
        cls="missing parameter",
        mistake="sums the hidden layer instead of projecting it on v",
    ),
    dict(
        task=_t("additive_scores"),
        name="tanh_outside",
        fn=additive_tanh_outside,
        cls="order of ops",
        mistake="projects on v before the tanh, so the tanh acts on a sum of two scores",
    ),
    dict(
        task=_t("additive_scores"),
        name="transposed_pairs",
        fn=additive_transposed,
        cls="transposed",
        mistake="puts the key axis before the query axis when broadcasting (scores transposed)",
    ),
    dict(
        task=_t("additive_scores"),
        name="other_layout",
        fn=additive_other_layout,
        cls="weight layout",
        mistake="applies W_q and W_k in the other layout than the task states",
    ),
    dict(
        task=_t("additive_scores"),
        name="book_import",
        fn=additive_book,
        cls="book shortcut",
        mistake="calls the book's attnbook.attention.additive_scores",
    ),
    dict(
        task=_t("hand_scores"),
        name="step2",
        fn=hand_step2,
        cls="wrong query",
        mistake="uses the worked example's s_2 instead of the task's query",
    ),
    dict(
        task=_t("hand_scores"),
        name="step1",
        fn=hand_step1,
        cls="wrong query",
        mistake="uses the worked example's s_1 instead of the task's query",
    ),
    dict(
        task=_t("hand_scores"),
        name="sign_dropped",
        fn=hand_sign_dropped,
        cls="signs",
        mistake="drops the minus sign of the query's negative entry",
    ),
    dict(
        task=_t("hand_scores"),
        name="columns_of_H",
        fn=hand_columns_of_H,
        cls="transposed",
        mistake="takes the columns of H as the encoder states",
    ),
    dict(
        task=_t("hand_scores"),
        name="weights_not_scores",
        fn=hand_weights_not_scores,
        cls="symptom",
        mistake="gives the softmax weights instead of the scores",
    ),
    dict(
        task=_t("hand_scores"),
        name="scaled",
        fn=hand_scaled,
        cls="wrong scale",
        mistake="divides the scores by sqrt(d) = 2",
    ),
    dict(
        task=_t("hand_scores"),
        name="by_code_with_book",
        fn=hand_by_code_with_book,
        cls="book shortcut",
        mistake="computes the hand task with the book's dot_scores instead of by hand",
    ),
]

VALID = [
    dict(task=_t("dot_scores"), name="loop", fn=dot_scores_valid_loop),
    dict(task=_t("dot_scores"), name="einsum", fn=dot_scores_valid_einsum),
    dict(task=_t("dot_scores_batch"), name="einsum", fn=batch_valid_einsum),
    dict(task=_t("dot_scores_batch"), name="loop", fn=batch_valid_loop),
    dict(task=_t("scaled_dot_scores"), name="query_first", fn=scaled_valid_query_first),
    dict(task=_t("scaled_dot_scores"), name="einsum", fn=scaled_valid_einsum),
    dict(task=_t("general_scores"), name="key_side", fn=general_valid_key_side),
    dict(task=_t("general_scores"), name="einsum", fn=general_valid_einsum),
    dict(task=_t("additive_scores"), name="loops", fn=additive_valid_loops),
    dict(task=_t("additive_scores"), name="einsum", fn=additive_valid_einsum),
    dict(task=_t("hand_scores"), name="typed", fn=hand_valid),
]
