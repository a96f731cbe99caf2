"""Set 08, attention in matrix form: learner-style answers."""

import math

import torch

from ._conventions import task_id

SET = "08"


def _t(fn_name):
    return task_id(SET, fn_name)


NEG_INF = float("-inf")


def _scores(Q, K, scale):
    return Q @ K.transpose(-1, -2) / scale


def _finish(scores, V, mask, fill=NEG_INF, dim=-1):
    if mask is not None:
        scores = scores.masked_fill(~mask, fill)
    w = torch.softmax(scores, dim=dim)
    return w @ V, w


# ---------------------------------------------------------------- 08.sdpa(Q, K, V, mask=None)
def sdpa_no_scale(Q, K, V, mask=None):
    return _finish(_scores(Q, K, 1.0), V, mask)


def sdpa_scale_dv(Q, K, V, mask=None):
    return _finish(_scores(Q, K, math.sqrt(V.shape[-1])), V, mask)


def sdpa_scale_Tk(Q, K, V, mask=None):
    return _finish(_scores(Q, K, math.sqrt(K.shape[-2])), V, mask)


def sdpa_scale_d(Q, K, V, mask=None):
    return _finish(_scores(Q, K, K.shape[-1]), V, mask)


def sdpa_fill_zero(Q, K, V, mask=None):
    return _finish(_scores(Q, K, math.sqrt(K.shape[-1])), V, mask, fill=0.0)


def sdpa_polarity(Q, K, V, mask=None):
    s = _scores(Q, K, math.sqrt(K.shape[-1]))
    if mask is not None:
        s = s.masked_fill(mask, NEG_INF)
    w = torch.nan_to_num(torch.softmax(s, dim=-1), nan=0.0)
    return w @ V, w


def sdpa_swapped(Q, K, V, mask=None):
    out, w = _finish(_scores(Q, K, math.sqrt(K.shape[-1])), V, mask)
    return w, out


def sdpa_softmax_queries(Q, K, V, mask=None):
    return _finish(_scores(Q, K, math.sqrt(K.shape[-1])), V, mask, dim=-2)


def sdpa_softmax_batch(Q, K, V, mask=None):
    return _finish(_scores(Q, K, math.sqrt(K.shape[-1])), V, mask, dim=0)


def sdpa_dot_T(Q, K, V, mask=None):
    return _finish(Q @ K.T / math.sqrt(K.shape[-1]), V, mask)


def sdpa_mask_after_renorm(Q, K, V, mask=None):
    w = torch.softmax(_scores(Q, K, math.sqrt(K.shape[-1])), dim=-1)
    if mask is not None:
        w = w * mask
        w = w / w.sum(dim=-1, keepdim=True)
    return w @ V, w


def sdpa_additive_bool(Q, K, V, mask=None):
    s = _scores(Q, K, math.sqrt(K.shape[-1]))
    if mask is not None:
        s = s + mask  # "an attention mask is added to the scores"
    w = torch.softmax(s, dim=-1)
    return w @ V, w


def sdpa_ignores_mask(Q, K, V, mask=None):
    return _finish(_scores(Q, K, math.sqrt(K.shape[-1])), V, None)


def sdpa_book(Q, K, V, mask=None):
    from attnbook.attention import scaled_dot_product_attention

    return scaled_dot_product_attention(Q, K, V, mask)


def sdpa_reference(Q, K, V, mask=None):
    from attnbook.grading import get_task

    return get_task("08.sdpa").reference(Q, K, V, mask)


def sdpa_nan_rows(Q, K, V, mask=None):
    # the chapter-8 version: right while every query keeps a key
    return _finish(_scores(Q, K, math.sqrt(K.shape[-1])), V, mask)


def sdpa_finfo_uniform(Q, K, V, mask=None):
    s = _scores(Q, K, math.sqrt(K.shape[-1]))
    if mask is not None:
        s = s.masked_fill(
            ~mask, torch.finfo(s.dtype).min
        )  # no NaN, but a query with no key gets uniform weights
    w = torch.softmax(s, dim=-1)
    return w @ V, w


def sdpa_valid_finfo(Q, K, V, mask=None):
    s = torch.einsum("bqd,bkd->bqk", Q, K) / math.sqrt(Q.shape[-1])
    if mask is not None:
        s = s.masked_fill(~mask, torch.finfo(s.dtype).min)
    w = torch.softmax(s, dim=-1)
    if mask is not None:
        w = w * mask  # a query with no key left was uniform: the mask zeroes it
    return torch.einsum("bqk,bkv->bqv", w, V), w


def sdpa_valid_torch(Q, K, V, mask=None):
    out = torch.nn.functional.scaled_dot_product_attention(Q, K, V, attn_mask=mask)
    s = Q @ K.transpose(-1, -2) / math.sqrt(Q.shape[-1])
    if mask is not None:
        s = s.masked_fill(~mask, NEG_INF)
    return out, torch.nan_to_num(torch.softmax(s, dim=-1), nan=0.0)


def sdpa_valid_scale_query(Q, K, V, mask=None):
    s = (Q / math.sqrt(Q.shape[-1])) @ K.mT
    if mask is not None:
        s = torch.where(mask, s, torch.tensor(NEG_INF, dtype=s.dtype))
    m = s.amax(dim=-1, keepdim=True)
    m = torch.where(torch.isinf(m), torch.zeros_like(m), m)  # a query with no key left
    e = torch.exp(s - m)
    total = e.sum(dim=-1, keepdim=True)
    w = e / torch.where(total == 0, torch.ones_like(total), total)
    return w @ V, w


# ---------------------------------------------------------------- 08.causal_mask(T)
def causal_triu(T):
    return torch.ones(T, T).triu().bool()


def causal_strict(T):
    return torch.ones(T, T, dtype=torch.bool).tril(diagonal=-1)


def causal_float(T):
    return torch.ones(T, T).tril()


def causal_masked_positions(T):
    return torch.triu(torch.ones(T, T, dtype=torch.bool), diagonal=1)  # True = "masked", as in nn.Transformer


def causal_batched(T):
    return torch.ones(T, T, dtype=torch.bool).tril().unsqueeze(0)


def causal_additive(T):
    return torch.full((T, T), NEG_INF).triu(diagonal=1)


def causal_book(T):
    from attnbook.attention import causal_mask

    return causal_mask(T)


def causal_valid_arange(T):
    i = torch.arange(T)
    return i[:, None] >= i[None, :]


def causal_valid_compare(T):
    return torch.tril(torch.ones(T, T)) == 1


# ---------------------------------------------------------------- 08.padding_mask(lengths, T_k)
def pad_off_by_one(lengths, T_k):
    return (torch.arange(T_k)[None, :] <= lengths[:, None]).unsqueeze(1)


def pad_no_middle_axis(lengths, T_k):
    return torch.arange(T_k)[None, :] < lengths[:, None]


def pad_wrong_axis(lengths, T_k):
    return (torch.arange(T_k)[None, :] < lengths[:, None]).unsqueeze(2)


def pad_polarity(lengths, T_k):
    return (torch.arange(T_k)[None, :] >= lengths[:, None]).unsqueeze(1)


def pad_first_length(lengths, T_k):
    return (torch.arange(T_k) < lengths[0]).expand(lengths.shape[0], 1, T_k)


def pad_int_dtype(lengths, T_k):
    return (torch.arange(T_k)[None, :] < lengths[:, None]).long().unsqueeze(1)


def pad_book(lengths, T_k):
    from attnbook.attention import padding_mask

    return padding_mask(lengths, T_k)


def pad_cumsum_trick(lengths, T_k):
    last = torch.nn.functional.one_hot(lengths - 1, T_k)  # 1 at the last real token
    return last.flip(-1).cumsum(-1).flip(-1).bool().unsqueeze(1)


def pad_valid_loop(lengths, T_k):
    mask = torch.zeros(lengths.shape[0], 1, T_k, dtype=torch.bool)
    for b in range(lengths.shape[0]):
        mask[b, 0, : int(lengths[b])] = True
    return mask


def pad_valid_view(lengths, T_k):
    return torch.arange(T_k).view(1, 1, -1) < lengths.view(-1, 1, 1)


WRONG = [
    dict(
        task=_t("sdpa"),
        name="nan_rows",
        fn=sdpa_nan_rows,
        cls="query with no key left while others keep keys",
        mistake="a query with every key masked comes out as NaN",
    ),
    dict(
        task=_t("sdpa"),
        name="finfo_uniform",
        fn=sdpa_finfo_uniform,
        cls="query with no key left",
        mistake="fills with finfo.min: a query with every key masked gets uniform weights, not zeros",
    ),
    dict(
        task=_t("sdpa"), name="no_scale", fn=sdpa_no_scale, cls="wrong scale", mistake="forgets 1/sqrt(d_k)"
    ),
    dict(
        task=_t("sdpa"),
        name="scale_dv",
        fn=sdpa_scale_dv,
        cls="wrong scale (agrees when d_k == d_v)",
        mistake="scales by sqrt(d_v), the width of the values",
    ),
    dict(
        task=_t("sdpa"),
        name="scale_Tk",
        fn=sdpa_scale_Tk,
        cls="wrong scale",
        mistake="scales by sqrt(T_k), the number of keys",
    ),
    dict(
        task=_t("sdpa"),
        name="scale_d",
        fn=sdpa_scale_d,
        cls="wrong scale",
        mistake="divides by d_k, not sqrt",
    ),
    dict(
        task=_t("sdpa"),
        name="fill_zero",
        fn=sdpa_fill_zero,
        cls="masked large scores",
        mistake="fills masked scores with 0",
    ),
    dict(
        task=_t("sdpa"),
        name="polarity",
        fn=sdpa_polarity,
        cls="mask polarity",
        mistake="removes the keys where the mask is True",
    ),
    dict(
        task=_t("sdpa"),
        name="swapped_order",
        fn=sdpa_swapped,
        cls="swapped tuple order",
        mistake="returns (weights, output)",
    ),
    dict(
        task=_t("sdpa"),
        name="softmax_queries",
        fn=sdpa_softmax_queries,
        cls="wrong axis",
        mistake="softmax over the queries",
    ),
    dict(
        task=_t("sdpa"),
        name="softmax_batch",
        fn=sdpa_softmax_batch,
        cls="softmax over batch",
        mistake="softmax over the batch axis",
    ),
    dict(task=_t("sdpa"), name="dot_T_3d", fn=sdpa_dot_T, cls=".T on 3-D", mistake="K.T on a 3-D tensor"),
    dict(
        task=_t("sdpa"),
        name="mask_after_renorm",
        fn=sdpa_mask_after_renorm,
        cls="masked large scores",
        mistake="masks after the softmax and renormalises; underflows when masked keys hold the large scores",
    ),
    dict(
        task=_t("sdpa"),
        name="additive_bool",
        fn=sdpa_additive_bool,
        cls="mask semantics",
        mistake="adds the boolean mask to the scores as if it were an additive mask",
    ),
    dict(
        task=_t("sdpa"), name="ignores_mask", fn=sdpa_ignores_mask, cls="mask ignored", mistake="ignores mask"
    ),
    dict(
        task=_t("sdpa"),
        name="book_import",
        fn=sdpa_book,
        cls="book shortcut",
        mistake="calls attnbook.attention.scaled_dot_product_attention",
    ),
    dict(
        task=_t("sdpa"),
        name="grader_reference",
        fn=sdpa_reference,
        cls="book shortcut",
        mistake="returns get_task('08.sdpa').reference",
    ),
    dict(
        task=_t("causal_mask"), name="triu", fn=causal_triu, cls="direction", mistake="upper instead of lower"
    ),
    dict(
        task=_t("causal_mask"),
        name="strict",
        fn=causal_strict,
        cls="diagonal",
        mistake="excludes the diagonal: a position may not attend to itself",
    ),
    dict(
        task=_t("causal_mask"), name="float", fn=causal_float, cls="dtype", mistake="returns floats, not bool"
    ),
    dict(
        task=_t("causal_mask"),
        name="masked_positions",
        fn=causal_masked_positions,
        cls="mask polarity",
        mistake="True at the future positions (nn.Transformer's 'masked' convention)",
    ),
    dict(task=_t("causal_mask"), name="batched", fn=causal_batched, cls="shape", mistake="adds a batch axis"),
    dict(
        task=_t("causal_mask"),
        name="additive",
        fn=causal_additive,
        cls="mask semantics",
        mistake="returns an additive float mask of 0 and -inf",
    ),
    dict(
        task=_t("causal_mask"),
        name="book_import",
        fn=causal_book,
        cls="book shortcut",
        mistake="calls attnbook.attention.causal_mask",
    ),
    dict(
        task=_t("padding_mask"),
        name="off_by_one",
        fn=pad_off_by_one,
        cls="off by one",
        mistake="keeps position lengths[b] too",
    ),
    dict(
        task=_t("padding_mask"),
        name="no_middle_axis",
        fn=pad_no_middle_axis,
        cls="shape",
        mistake="returns (B, T_k) without the query axis",
    ),
    dict(
        task=_t("padding_mask"),
        name="wrong_axis",
        fn=pad_wrong_axis,
        cls="only-square shapes",
        mistake="puts the axis of size 1 last: (B, T_k, 1)",
    ),
    dict(
        task=_t("padding_mask"),
        name="polarity",
        fn=pad_polarity,
        cls="mask polarity",
        mistake="True at the padding",
    ),
    dict(
        task=_t("padding_mask"),
        name="first_length",
        fn=pad_first_length,
        cls="one sentence's keys for all",
        mistake="uses lengths[0] for every sentence",
    ),
    dict(
        task=_t("padding_mask"),
        name="int_dtype",
        fn=pad_int_dtype,
        cls="dtype",
        mistake="returns 0/1 integers",
    ),
    dict(
        task=_t("padding_mask"),
        name="book_import",
        fn=pad_book,
        cls="book shortcut",
        mistake="calls attnbook.attention.padding_mask",
    ),
    dict(
        task=_t("padding_mask"),
        name="cumsum_trick",
        fn=pad_cumsum_trick,
        cls="length 0",
        mistake="marks the last real token with one_hot(lengths - 1) and fills backwards: fails for length 0",
    ),
]

VALID = [
    dict(task=_t("sdpa"), name="finfo_min_einsum", fn=sdpa_valid_finfo),
    dict(task=_t("sdpa"), name="torch_sdpa", fn=sdpa_valid_torch),
    dict(task=_t("sdpa"), name="scale_query_by_hand", fn=sdpa_valid_scale_query),
    dict(task=_t("causal_mask"), name="arange", fn=causal_valid_arange),
    dict(task=_t("causal_mask"), name="compare", fn=causal_valid_compare),
    dict(task=_t("padding_mask"), name="loop", fn=pad_valid_loop),
    dict(task=_t("padding_mask"), name="view", fn=pad_valid_view),
]
