"""Set 05, softmax and attention weights: learner-style answers."""

import math

import torch

from ._conventions import numbers_in_text, task_id, task_text

SET = "05"


def _t(fn_name):
    return task_id(SET, fn_name)


NEG_INF = float("-inf")


# ---------------------------------------------------------------- 05.log_weights(scores, dim)
def logsm_no_max(scores, dim):
    return scores - torch.log(torch.exp(scores).sum(dim=dim, keepdim=True))


def logsm_log_of_softmax(scores, dim):
    e = torch.exp(scores - scores.amax(dim=dim, keepdim=True))
    return torch.log(e / e.sum(dim=dim, keepdim=True))


def logsm_global_max(scores, dim):
    m = scores.max()
    return scores - m - torch.log(torch.exp(scores - m).sum(dim=dim, keepdim=True))


def logsm_missing_keepdim(scores, dim):
    m = scores.amax(dim=dim)
    return scores - m - torch.log(torch.exp(scores - m).sum(dim=dim))


def logsm_last_axis_always(scores, dim):
    m = scores.amax(dim=-1, keepdim=True)
    return scores - m - torch.log(torch.exp(scores - m).sum(dim=-1, keepdim=True))


def logsm_forgets_m(scores, dim):
    m = scores.amax(dim=dim, keepdim=True)
    return scores - torch.log(torch.exp(scores - m).sum(dim=dim, keepdim=True))


def logsm_returns_weights(scores, dim):
    e = torch.exp(scores - scores.amax(dim=dim, keepdim=True))
    return e / e.sum(dim=dim, keepdim=True)


def logsm_abs_max(scores, dim):
    m = scores.abs().amax(dim=dim, keepdim=True)
    return scores - m - torch.log(torch.exp(scores - m).sum(dim=dim, keepdim=True))


def logsm_float32(scores, dim):
    x = scores.float()
    m = x.amax(dim=dim, keepdim=True)
    return (x - m - torch.log(torch.exp(x - m).sum(dim=dim, keepdim=True))).to(scores.dtype)


def logsm_negative_dim_wrong_sign(scores, dim):
    if dim < 0:
        dim = scores.dim() - dim  # "count from the end"
    m = scores.amax(dim=dim, keepdim=True)
    return scores - m - torch.log(torch.exp(scores - m).sum(dim=dim, keepdim=True))


def logsm_one_query_by_items(scores, dim):
    if scores.dim() == 1:  # a single query: plain Python numbers are simpler
        xs = [x.item() for x in scores]
        m = max(xs)
        lse = m + math.log(sum(math.exp(x - m) for x in xs))
        return torch.tensor([x - lse for x in xs], dtype=scores.dtype)
    m = scores.amax(dim=dim, keepdim=True)
    return scores - m - torch.log(torch.exp(scores - m).sum(dim=dim, keepdim=True))


def logsm_sets_requires_grad(scores, dim):
    scores.requires_grad_(True)  # "so that autograd works"
    m = scores.amax(dim=dim, keepdim=True)
    return scores - m - torch.log(torch.exp(scores - m).sum(dim=dim, keepdim=True))


def logsm_book(scores, dim):
    from attnbook.attention import softmax

    return torch.log(softmax(scores, dim=dim))


def logsm_reference(scores, dim):
    from attnbook.grading import get_task

    return get_task(task_id("05", "log_weights")).reference(scores, dim)


def logsm_valid_by_hand(scores, dim):
    m = scores.amax(dim=dim, keepdim=True)
    return scores - m - torch.log(torch.exp(scores - m).sum(dim=dim, keepdim=True))


def logsm_valid_torch(scores, dim):
    return torch.log_softmax(scores, dim=dim)


def logsm_valid_logsumexp(scores, dim):
    return scores - torch.logsumexp(scores, dim=dim, keepdim=True)


def logsm_valid_movedim(scores, dim):
    x = scores.movedim(dim, -1)
    m = x.amax(dim=-1, keepdim=True).detach()  # a constant per slice: the gradient does not need it
    out = x - m - torch.log(torch.exp(x - m).sum(dim=-1, keepdim=True))
    return out.movedim(-1, dim)


# ---------------------------------------------------------------- 05.masked_softmax(scores, mask)
def _soft(x):
    return torch.softmax(x, dim=-1)


def masked_fill_zero(scores, mask):
    return _soft(scores.masked_fill(~mask, 0.0))


def masked_after_softmax(scores, mask):
    return _soft(scores) * mask


def masked_after_softmax_renorm(scores, mask):
    w = _soft(scores) * mask
    return w / w.sum(dim=-1, keepdim=True).clamp_min(1e-300)


def masked_not_negative_enough(scores, mask):
    w = _soft(scores.masked_fill(~mask, -1000.0))
    return w * mask.expand_as(w).any(dim=-1, keepdim=True)


def masked_polarity(scores, mask):
    w = _soft(scores.masked_fill(mask, NEG_INF))
    return torch.nan_to_num(w, nan=0.0)


def masked_nan_rows(scores, mask):
    return _soft(scores.masked_fill(~mask, NEG_INF))


def masked_empty_sentence_only(scores, mask):
    w = _soft(scores.masked_fill(~mask, NEG_INF))
    empty_sentence = ~mask.expand_as(scores).flatten(1).any(dim=1)  # (B,)
    return torch.where(empty_sentence[:, None, None], torch.zeros_like(w), w)


def masked_minus_1e9_uniform(scores, mask):
    return _soft(scores.masked_fill(~mask, -1e9))


def masked_inplace(scores, mask):
    scores.masked_fill_(~mask, NEG_INF)
    return torch.nan_to_num(_soft(scores), nan=0.0)


def masked_book(scores, mask):
    from attnbook.attention import softmax

    return softmax(scores, mask=mask)


def masked_valid_nan_to_num(scores, mask):
    return torch.nan_to_num(_soft(scores.masked_fill(~mask, NEG_INF)), nan=0.0)


def masked_valid_finfo(scores, mask):
    w = _soft(scores.masked_fill(~mask, torch.finfo(scores.dtype).min))
    return w * mask  # an all-masked row is uniform here, and the mask zeroes it


def masked_valid_by_hand(scores, mask):
    x = scores.masked_fill(~mask, NEG_INF)
    m = x.amax(dim=-1, keepdim=True)
    m = torch.where(torch.isinf(m), torch.zeros_like(m), m)
    e = torch.exp(x - m)
    total = e.sum(dim=-1, keepdim=True)
    return e / torch.where(total == 0, torch.ones_like(total), total)


# ---------------------------------------------------------------- 05.attention_weights_from_lengths
def _key_mask(scores, lengths):
    return torch.arange(scores.shape[-1])[None, None, :] < lengths[:, None, None]


def lengths_off_by_one(scores, lengths):
    mask = torch.arange(scores.shape[-1])[None, None, :] <= lengths[:, None, None]
    return masked_valid_nan_to_num(scores, mask)


def lengths_mask_queries(scores, lengths):
    mask = torch.arange(scores.shape[1])[None, :, None] < lengths[:, None, None]
    return masked_valid_nan_to_num(scores, mask.expand_as(scores))


def lengths_zero_gives_nan(scores, lengths):
    return _soft(scores.masked_fill(~_key_mask(scores, lengths), NEG_INF))


def lengths_zero_gives_uniform(scores, lengths):
    return _soft(scores.masked_fill(~_key_mask(scores, lengths), -1e9))


def lengths_first_sentence(scores, lengths):
    mask = torch.arange(scores.shape[-1]) < lengths[0]
    return masked_valid_nan_to_num(scores, mask.expand_as(scores))


def lengths_no_mask(scores, lengths):
    return _soft(scores)


def lengths_valid_loop(scores, lengths):
    out = torch.zeros_like(scores)
    for b in range(scores.shape[0]):
        n = int(lengths[b])
        if n > 0:
            out[b, :, :n] = torch.softmax(scores[b, :, :n], dim=-1)
    return out


def lengths_valid_finfo(scores, lengths):
    mask = _key_mask(scores, lengths)
    return masked_valid_finfo(scores, mask)


# ---------------------------------------------------------------- 05.softmax_with_temperature
def temp_multiplies(scores, tau):
    return _soft(scores * tau)


def temp_no_max(scores, tau):
    e = torch.exp(scores / tau)
    return e / e.sum(dim=-1, keepdim=True)


def temp_after_softmax(scores, tau):
    return _soft(scores) / tau


def temp_power_of_weights(scores, tau):
    p = _soft(scores) ** (1.0 / tau)
    return p / p.sum(dim=-1, keepdim=True)


def temp_hard_argmax_small_tau(scores, tau):
    if tau < 0.05:  # "practically an argmax"
        return torch.nn.functional.one_hot(scores.argmax(dim=-1), scores.shape[-1]).to(scores.dtype)
    return _soft(scores / tau)


def temp_uniform_large_tau(scores, tau):
    if tau > 20:  # "practically uniform"
        return torch.full_like(scores, 1.0 / scores.shape[-1])
    return _soft(scores / tau)


def temp_float32(scores, tau):
    return torch.softmax(scores.float() / tau, dim=-1).to(scores.dtype)


def temp_subtracts(scores, tau):
    return _soft(scores - tau)


def temp_valid(scores, tau):
    return torch.softmax(scores / tau, dim=-1)


def temp_valid_logsumexp(scores, tau):
    x = scores * (1.0 / tau)
    return torch.exp(x - torch.logsumexp(x, dim=-1, keepdim=True))


# ---------------------------------------------------------------- 05.hand_weights
# The learner reads the scores from the task text, and whether the last key is padding (today it is:
# e = [1, 3, -1, 2] with the last key padded; before, e^3 = [1, 1.5, 0.5, 3] with no padding).
def _hand_scores():
    e = numbers_in_text("05", "hand_weights")
    return e if e is not None else [1.0, 1.5, 0.5, 3.0]


def _keep():
    padded = "padd" in task_text("05", "hand_weights")
    return [True, True, True, False] if padded else [True] * 4


def _typed(xs):
    return [round(float(x), 4) for x in xs]


def _softmax_list(e, keep=None):
    keep = keep or [True] * len(e)
    m = max(x for x, k in zip(e, keep) if k)
    ex = [math.exp(x - m) if k else 0.0 for x, k in zip(e, keep)]
    return [x / sum(ex) for x in ex]


def hand_ignores_padding():
    return _typed(_softmax_list(_hand_scores()))


def hand_mask_after_softmax():
    w = _softmax_list(_hand_scores())
    return _typed(x if k else 0.0 for x, k in zip(w, _keep()))


def hand_padding_scored_zero():
    e = [x if k else 0.0 for x, k in zip(_hand_scores(), _keep())]
    return _typed(_softmax_list(e))


def hand_exps_unnormalised():
    return _typed(math.exp(x) if k else 0.0 for x, k in zip(_hand_scores(), _keep()))


def hand_divide_by_sum_of_scores():
    e = [x if k else 0.0 for x, k in zip(_hand_scores(), _keep())]
    return _typed(x / sum(e) for x in e)


def hand_reversed():
    return _typed(reversed(_softmax_list(_hand_scores(), _keep())))


def hand_three_numbers():
    w = _softmax_list(_hand_scores(), _keep())
    return _typed(x for x, k in zip(w, _keep()) if k) if not all(_keep()) else _typed(w[:3])


def hand_book():
    from attnbook.attention import softmax

    e = torch.tensor(_hand_scores(), dtype=torch.float64)
    return softmax(e, mask=torch.tensor(_keep())).tolist()


def hand_valid():
    return _typed(_softmax_list(_hand_scores(), _keep()))


WRONG = [
    dict(
        task=_t("hand_weights"),
        name="ignores_padding",
        fn=hand_ignores_padding,
        cls="padding ignored",
        mistake="takes the softmax over all four keys, padding included",
    ),
    dict(
        task=_t("hand_weights"),
        name="mask_after_softmax",
        fn=hand_mask_after_softmax,
        cls="mask after softmax",
        mistake="zeroes the padded weight after the softmax without renormalising",
    ),
    dict(
        task=_t("hand_weights"),
        name="padding_scored_zero",
        fn=hand_padding_scored_zero,
        cls="masked scores",
        mistake="gives the padded key a score of 0 instead of removing it",
    ),
    dict(
        task=_t("hand_weights"),
        name="exps_unnormalised",
        fn=hand_exps_unnormalised,
        cls="no normalisation",
        mistake="gives exp(e_i) without dividing by their sum",
    ),
    dict(
        task=_t("hand_weights"),
        name="divide_by_sum_of_scores",
        fn=hand_divide_by_sum_of_scores,
        cls="plain normalisation",
        mistake="divides the scores by their sum, no exp",
    ),
    dict(
        task=_t("hand_weights"),
        name="reversed",
        fn=hand_reversed,
        cls="order",
        mistake="lists the weights from the last key to the first",
    ),
    dict(
        task=_t("hand_weights"),
        name="three_numbers",
        fn=hand_three_numbers,
        cls="shape",
        mistake="leaves the padded key out: three numbers instead of four",
    ),
    dict(
        task=_t("hand_weights"),
        name="book_import",
        fn=hand_book,
        cls="book shortcut",
        mistake="computes the hand task with the book's masked softmax",
    ),
    dict(
        task=_t("log_weights"),
        name="no_max",
        fn=logsm_no_max,
        cls="large scores",
        mistake="does not subtract the maximum: exp overflows for scores near 1000",
    ),
    dict(
        task=_t("log_weights"),
        name="log_of_softmax",
        fn=logsm_log_of_softmax,
        cls="rows below exp underflow",
        mistake="takes log of the softmax: weights that underflow to 0 give -inf instead of e.g. -800",
    ),
    dict(
        task=_t("log_weights"),
        name="global_max",
        fn=logsm_global_max,
        cls="rows below exp underflow",
        mistake="subtracts the maximum of the whole tensor, not of each slice",
    ),
    dict(
        task=_t("log_weights"),
        name="missing_keepdim",
        fn=logsm_missing_keepdim,
        cls="missing keepdim",
        mistake="takes amax and sum without keepdim",
    ),
    dict(
        task=_t("log_weights"),
        name="last_axis_always",
        fn=logsm_last_axis_always,
        cls="wrong axis",
        mistake="works over the last axis whatever dim says",
    ),
    dict(
        task=_t("log_weights"),
        name="forgets_m",
        fn=logsm_forgets_m,
        cls="formula",
        mistake="forgets to subtract m outside the log",
    ),
    dict(
        task=_t("log_weights"),
        name="returns_weights",
        fn=logsm_returns_weights,
        cls="symptom",
        mistake="returns the weights, not their log",
    ),
    dict(
        task=_t("log_weights"),
        name="abs_max",
        fn=logsm_abs_max,
        cls="all-negative rows",
        mistake="subtracts the largest absolute value: slices of large negative scores underflow",
    ),
    dict(
        task=_t("log_weights"),
        name="float32",
        fn=logsm_float32,
        cls="float32 in a float64 task",
        mistake="computes in float32 and casts back",
    ),
    dict(
        task=_t("log_weights"),
        name="negative_dim_wrong_sign",
        fn=logsm_negative_dim_wrong_sign,
        cls="negative dim",
        mistake="converts a negative dim with the wrong sign",
    ),
    dict(
        task=_t("log_weights"),
        name="one_query_items",
        fn=logsm_one_query_by_items,
        cls="gradient on some cases only",
        mistake="a single query goes through .item(), cutting autograd",
    ),
    dict(
        task=_t("log_weights"),
        name="sets_requires_grad",
        fn=logsm_sets_requires_grad,
        cls="input mutation (autograd state)",
        mistake="calls requires_grad_() on the input",
    ),
    dict(
        task=_t("log_weights"),
        name="book_import",
        fn=logsm_book,
        cls="book shortcut",
        mistake="takes the log of the book's attnbook.attention.softmax",
    ),
    dict(
        task=_t("log_weights"),
        name="grader_reference",
        fn=logsm_reference,
        cls="book shortcut",
        mistake="returns get_task('05.log_softmax').reference",
    ),
    dict(
        task=_t("masked_softmax"),
        name="fill_zero",
        fn=masked_fill_zero,
        cls="masked large scores",
        mistake="fills removed keys with 0 instead of -inf",
    ),
    dict(
        task=_t("masked_softmax"),
        name="after_softmax",
        fn=masked_after_softmax,
        cls="mask after softmax",
        mistake="multiplies the weights by the mask after the softmax, without renormalising",
    ),
    dict(
        task=_t("masked_softmax"),
        name="after_softmax_renorm",
        fn=masked_after_softmax_renorm,
        cls="masked large scores",
        mistake="masks after the softmax and renormalises: the kept weights "
        "underflow when removed keys hold large scores",
    ),
    dict(
        task=_t("masked_softmax"),
        name="minus_1000",
        fn=masked_not_negative_enough,
        cls="masked large scores",
        mistake="fills removed keys with -1000, not negative enough for scores of ±1000",
    ),
    dict(
        task=_t("masked_softmax"),
        name="polarity",
        fn=masked_polarity,
        cls="mask polarity",
        mistake="removes the keys where the mask is True",
    ),
    dict(
        task=_t("masked_softmax"),
        name="nan_rows",
        fn=masked_nan_rows,
        cls="query with no key left",
        mistake="a query with every key removed comes out as NaN",
    ),
    dict(
        task=_t("masked_softmax"),
        name="empty_sentence_only",
        fn=masked_empty_sentence_only,
        cls="query with no key left while others keep keys",
        mistake="zeroes only sentences with no key at all; a single empty query still gives NaN",
    ),
    dict(
        task=_t("masked_softmax"),
        name="minus_1e9_uniform",
        fn=masked_minus_1e9_uniform,
        cls="query with no key left",
        mistake="fills with -1e9: an all-removed row becomes uniform, not zero",
    ),
    dict(
        task=_t("masked_softmax"),
        name="inplace",
        fn=masked_inplace,
        cls="input mutation",
        mistake="masks the scores in place with masked_fill_",
    ),
    dict(
        task=_t("masked_softmax"),
        name="book_import",
        fn=masked_book,
        cls="book shortcut",
        mistake="calls the book's attnbook.attention.softmax with its mask",
    ),
    dict(
        task=_t("attention_weights_from_lengths"),
        name="off_by_one",
        fn=lengths_off_by_one,
        cls="off by one",
        mistake="keeps positions up to and including lengths[b]",
    ),
    dict(
        task=_t("attention_weights_from_lengths"),
        name="mask_queries",
        fn=lengths_mask_queries,
        cls="only-square shapes",
        mistake="builds the mask over the queries instead of the keys",
    ),
    dict(
        task=_t("attention_weights_from_lengths"),
        name="zero_length_nan",
        fn=lengths_zero_gives_nan,
        cls="length 0",
        mistake="a sentence of length 0 gets NaN weights",
    ),
    dict(
        task=_t("attention_weights_from_lengths"),
        name="zero_length_uniform",
        fn=lengths_zero_gives_uniform,
        cls="length 0",
        mistake="fills with -1e9: a sentence of length 0 gets uniform weights",
    ),
    dict(
        task=_t("attention_weights_from_lengths"),
        name="first_sentence_length",
        fn=lengths_first_sentence,
        cls="one sentence's keys for all",
        mistake="uses the length of sentence 0 for every sentence",
    ),
    dict(
        task=_t("attention_weights_from_lengths"),
        name="no_mask",
        fn=lengths_no_mask,
        cls="padding ignored",
        mistake="ignores the lengths: padding gets weight",
    ),
    dict(
        task=_t("softmax_with_temperature"),
        name="multiplies",
        fn=temp_multiplies,
        cls="formula",
        mistake="multiplies the scores by tau instead of dividing",
    ),
    dict(
        task=_t("softmax_with_temperature"),
        name="no_max",
        fn=temp_no_max,
        cls="large scores / small tau",
        mistake="exp(e / tau) without the maximum overflows for small tau",
    ),
    dict(
        task=_t("softmax_with_temperature"),
        name="after_softmax",
        fn=temp_after_softmax,
        cls="formula",
        mistake="divides the weights by tau after the softmax",
    ),
    dict(
        task=_t("softmax_with_temperature"),
        name="power_of_weights",
        fn=temp_power_of_weights,
        cls="temperatures near thresholds",
        mistake="raises softmax(e) to the power 1/tau: underflows to 0/0",
    ),
    dict(
        task=_t("softmax_with_temperature"),
        name="hard_argmax_small_tau",
        fn=temp_hard_argmax_small_tau,
        cls="temperatures near thresholds",
        mistake="replaces small temperatures by a hard argmax",
    ),
    dict(
        task=_t("softmax_with_temperature"),
        name="uniform_large_tau",
        fn=temp_uniform_large_tau,
        cls="temperatures near thresholds",
        mistake="replaces large temperatures by uniform weights",
    ),
    dict(
        task=_t("softmax_with_temperature"),
        name="float32",
        fn=temp_float32,
        cls="float32 in a float64 task",
        mistake="computes in float32 and casts back",
    ),
    dict(
        task=_t("softmax_with_temperature"),
        name="subtracts",
        fn=temp_subtracts,
        cls="formula",
        mistake="subtracts tau from the scores (no effect on softmax)",
    ),
]

VALID = [
    dict(task=_t("hand_weights"), name="typed", fn=hand_valid),
    dict(task=_t("log_weights"), name="by_hand", fn=logsm_valid_by_hand),
    dict(task=_t("log_weights"), name="torch_log_softmax", fn=logsm_valid_torch),
    dict(task=_t("log_weights"), name="logsumexp", fn=logsm_valid_logsumexp),
    dict(task=_t("log_weights"), name="movedim_detached_max", fn=logsm_valid_movedim),
    dict(task=_t("masked_softmax"), name="nan_to_num", fn=masked_valid_nan_to_num),
    dict(task=_t("masked_softmax"), name="finfo_min", fn=masked_valid_finfo),
    dict(task=_t("masked_softmax"), name="by_hand", fn=masked_valid_by_hand),
    dict(task=_t("attention_weights_from_lengths"), name="loop", fn=lengths_valid_loop),
    dict(task=_t("attention_weights_from_lengths"), name="finfo_min", fn=lengths_valid_finfo),
    dict(task=_t("softmax_with_temperature"), name="softmax", fn=temp_valid),
    dict(task=_t("softmax_with_temperature"), name="logsumexp", fn=temp_valid_logsumexp),
]
