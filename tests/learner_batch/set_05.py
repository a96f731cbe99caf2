"""Set 05, softmax and attention weights: learner-style answers."""

import math

import torch

from ._conventions import numbers_in_text

T = "05."
NEG_INF = float("-inf")


# ---------------------------------------------------------------- 05.stable_softmax(scores)
def soft_no_max(scores):
    e = torch.exp(scores)
    return e / e.sum(dim=-1, keepdim=True)


def soft_global_max(scores):
    e = torch.exp(scores - scores.max())
    return e / e.sum(dim=-1, keepdim=True)


def soft_missing_keepdim(scores):
    e = torch.exp(scores - scores.amax(dim=-1))
    return e / e.sum(dim=-1, keepdim=True)


def soft_sum_missing_keepdim(scores):
    e = torch.exp(scores - scores.amax(dim=-1, keepdim=True))
    return e / e.sum(dim=-1)


def soft_first_axis(scores):
    e = torch.exp(scores - scores.amax(dim=0, keepdim=True))
    return e / e.sum(dim=0, keepdim=True)


def soft_log_softmax(scores):
    return torch.log_softmax(scores, dim=-1)


def soft_sigmoid(scores):
    return torch.sigmoid(scores)


def soft_clamp(scores):
    e = torch.exp(scores.clamp(-700.0, 700.0))
    return e / e.sum(dim=-1, keepdim=True)


def soft_abs_max(scores):
    e = torch.exp(scores - scores.abs().amax(dim=-1, keepdim=True))
    return e / e.sum(dim=-1, keepdim=True)


def soft_float32(scores):
    s = scores.float()
    e = torch.exp(s - s.amax(dim=-1, keepdim=True))
    return (e / e.sum(dim=-1, keepdim=True)).to(scores.dtype)


def soft_one_query_by_items(scores):
    if scores.dim() == 1:  # a single query: plain Python numbers are simpler
        m = max(x.item() for x in scores)
        ex = [torch.exp(torch.tensor(x.item() - m, dtype=scores.dtype)) for x in scores]
        total = sum(ex)
        return torch.stack([x / total for x in ex])
    e = torch.exp(scores - scores.amax(dim=-1, keepdim=True))
    return e / e.sum(dim=-1, keepdim=True)


def soft_sets_requires_grad(scores):
    scores.requires_grad_(True)  # "so that autograd works"
    e = torch.exp(scores - scores.amax(dim=-1, keepdim=True))
    return e / e.sum(dim=-1, keepdim=True)


def soft_book(scores):
    from attnbook.attention import softmax

    return softmax(scores)


def soft_valid_logsumexp(scores):
    return torch.exp(scores - torch.logsumexp(scores, dim=-1, keepdim=True))


def soft_valid_detached_max(scores):
    m = scores.amax(dim=-1, keepdim=True).detach()  # a constant per row: the gradient does not need it
    e = torch.exp(scores - m)
    return e / e.sum(dim=-1, keepdim=True)


def soft_reference(scores):
    from attnbook.grading import get_task

    return get_task("05.stable_softmax").reference(scores)


def soft_valid_rows_loop(scores):
    flat = scores.reshape(-1, scores.shape[-1])
    rows = []
    for r in range(flat.shape[0]):
        e = torch.exp(flat[r] - flat[r].max())
        rows.append(e / e.sum())
    out = torch.stack(rows) if rows else flat
    return out.reshape(scores.shape)


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
# The learner reads the scores from the task text (today e^3 = [1, 1.5, 0.5, 3]).
def _hand_scores():
    e = numbers_in_text("05", "hand_weights")
    return e if e is not None else [1.0, 1.5, 0.5, 3.0]


def _typed(xs):
    return [round(float(x), 4) for x in xs]


def _softmax_list(e):
    ex = [math.exp(x - max(e)) for x in e]
    return [x / sum(ex) for x in ex]


def hand_exps_unnormalised():
    return _typed(math.exp(x) for x in _hand_scores())


def hand_divide_by_sum_of_scores():
    e = _hand_scores()
    return _typed(x / sum(e) for x in e)


def hand_reversed():
    return _typed(reversed(_softmax_list(_hand_scores())))


def hand_scaled_scores():
    return _typed(_softmax_list([x / 2 for x in _hand_scores()]))


def hand_book():
    from attnbook.attention import softmax

    return softmax(torch.tensor(_hand_scores(), dtype=torch.float64)).tolist()


def hand_valid():
    return _typed(_softmax_list(_hand_scores()))


WRONG = [
    dict(
        task=T + "stable_softmax",
        name="no_max",
        fn=soft_no_max,
        cls="large scores",
        mistake="does not subtract the maximum: exp overflows for scores near 1000",
    ),
    dict(
        task=T + "stable_softmax",
        name="global_max",
        fn=soft_global_max,
        cls="rows below exp underflow",
        mistake="subtracts the maximum of the whole tensor, not of each row",
    ),
    dict(
        task=T + "stable_softmax",
        name="missing_keepdim_max",
        fn=soft_missing_keepdim,
        cls="missing keepdim",
        mistake="takes amax(dim=-1) without keepdim, so the maxima broadcast along the wrong axis",
    ),
    dict(
        task=T + "stable_softmax",
        name="missing_keepdim_sum",
        fn=soft_sum_missing_keepdim,
        cls="missing keepdim",
        mistake="divides by sum(dim=-1) without keepdim",
    ),
    dict(
        task=T + "stable_softmax",
        name="first_axis",
        fn=soft_first_axis,
        cls="wrong axis",
        mistake="normalises over the first axis instead of the last",
    ),
    dict(
        task=T + "stable_softmax",
        name="log_softmax",
        fn=soft_log_softmax,
        cls="symptom",
        mistake="returns log_softmax (log-probabilities)",
    ),
    dict(
        task=T + "stable_softmax",
        name="sigmoid",
        fn=soft_sigmoid,
        cls="symptom",
        mistake="uses sigmoid, which does not make rows sum to 1",
    ),
    dict(
        task=T + "stable_softmax",
        name="clamp",
        fn=soft_clamp,
        cls="large scores",
        mistake="clamps the scores to avoid overflow instead of subtracting the maximum",
    ),
    dict(
        task=T + "stable_softmax",
        name="abs_max",
        fn=soft_abs_max,
        cls="all-negative rows",
        mistake="subtracts the largest absolute value, which underflows rows of large negative scores",
    ),
    dict(
        task=T + "stable_softmax",
        name="float32",
        fn=soft_float32,
        cls="float32 in a float64 task",
        mistake="computes in float32 and casts back",
    ),
    dict(
        task=T + "stable_softmax",
        name="one_query_items",
        fn=soft_one_query_by_items,
        cls="gradient on some cases only",
        mistake="a single query goes through .item(), cutting autograd",
    ),
    dict(
        task=T + "stable_softmax",
        name="sets_requires_grad",
        fn=soft_sets_requires_grad,
        cls="input mutation (autograd state)",
        mistake="calls requires_grad_() on the input",
    ),
    dict(
        task=T + "stable_softmax",
        name="book_import",
        fn=soft_book,
        cls="book shortcut",
        mistake="calls the book's attnbook.attention.softmax",
    ),
    dict(
        task=T + "masked_softmax",
        name="fill_zero",
        fn=masked_fill_zero,
        cls="masked large scores",
        mistake="fills removed keys with 0 instead of -inf",
    ),
    dict(
        task=T + "masked_softmax",
        name="after_softmax",
        fn=masked_after_softmax,
        cls="mask after softmax",
        mistake="multiplies the weights by the mask after the softmax, without renormalising",
    ),
    dict(
        task=T + "masked_softmax",
        name="after_softmax_renorm",
        fn=masked_after_softmax_renorm,
        cls="masked large scores",
        mistake="masks after the softmax and renormalises: the kept weights "
        "underflow when removed keys hold large scores",
    ),
    dict(
        task=T + "masked_softmax",
        name="minus_1000",
        fn=masked_not_negative_enough,
        cls="masked large scores",
        mistake="fills removed keys with -1000, not negative enough for scores of ±1000",
    ),
    dict(
        task=T + "masked_softmax",
        name="polarity",
        fn=masked_polarity,
        cls="mask polarity",
        mistake="removes the keys where the mask is True",
    ),
    dict(
        task=T + "masked_softmax",
        name="nan_rows",
        fn=masked_nan_rows,
        cls="query with no key left",
        mistake="a query with every key removed comes out as NaN",
    ),
    dict(
        task=T + "masked_softmax",
        name="empty_sentence_only",
        fn=masked_empty_sentence_only,
        cls="query with no key left while others keep keys",
        mistake="zeroes only sentences with no key at all; a single empty query still gives NaN",
    ),
    dict(
        task=T + "masked_softmax",
        name="minus_1e9_uniform",
        fn=masked_minus_1e9_uniform,
        cls="query with no key left",
        mistake="fills with -1e9: an all-removed row becomes uniform, not zero",
    ),
    dict(
        task=T + "masked_softmax",
        name="inplace",
        fn=masked_inplace,
        cls="input mutation",
        mistake="masks the scores in place with masked_fill_",
    ),
    dict(
        task=T + "masked_softmax",
        name="book_import",
        fn=masked_book,
        cls="book shortcut",
        mistake="calls the book's attnbook.attention.softmax with its mask",
    ),
    dict(
        task=T + "attention_weights_from_lengths",
        name="off_by_one",
        fn=lengths_off_by_one,
        cls="off by one",
        mistake="keeps positions up to and including lengths[b]",
    ),
    dict(
        task=T + "attention_weights_from_lengths",
        name="mask_queries",
        fn=lengths_mask_queries,
        cls="only-square shapes",
        mistake="builds the mask over the queries instead of the keys",
    ),
    dict(
        task=T + "attention_weights_from_lengths",
        name="zero_length_nan",
        fn=lengths_zero_gives_nan,
        cls="length 0",
        mistake="a sentence of length 0 gets NaN weights",
    ),
    dict(
        task=T + "attention_weights_from_lengths",
        name="zero_length_uniform",
        fn=lengths_zero_gives_uniform,
        cls="length 0",
        mistake="fills with -1e9: a sentence of length 0 gets uniform weights",
    ),
    dict(
        task=T + "attention_weights_from_lengths",
        name="first_sentence_length",
        fn=lengths_first_sentence,
        cls="one sentence's keys for all",
        mistake="uses the length of sentence 0 for every sentence",
    ),
    dict(
        task=T + "attention_weights_from_lengths",
        name="no_mask",
        fn=lengths_no_mask,
        cls="padding ignored",
        mistake="ignores the lengths: padding gets weight",
    ),
    dict(
        task=T + "softmax_with_temperature",
        name="multiplies",
        fn=temp_multiplies,
        cls="formula",
        mistake="multiplies the scores by tau instead of dividing",
    ),
    dict(
        task=T + "softmax_with_temperature",
        name="no_max",
        fn=temp_no_max,
        cls="large scores / small tau",
        mistake="exp(e / tau) without the maximum overflows for small tau",
    ),
    dict(
        task=T + "softmax_with_temperature",
        name="after_softmax",
        fn=temp_after_softmax,
        cls="formula",
        mistake="divides the weights by tau after the softmax",
    ),
    dict(
        task=T + "softmax_with_temperature",
        name="power_of_weights",
        fn=temp_power_of_weights,
        cls="temperatures near thresholds",
        mistake="raises softmax(e) to the power 1/tau: underflows to 0/0",
    ),
    dict(
        task=T + "softmax_with_temperature",
        name="hard_argmax_small_tau",
        fn=temp_hard_argmax_small_tau,
        cls="temperatures near thresholds",
        mistake="replaces small temperatures by a hard argmax",
    ),
    dict(
        task=T + "softmax_with_temperature",
        name="uniform_large_tau",
        fn=temp_uniform_large_tau,
        cls="temperatures near thresholds",
        mistake="replaces large temperatures by uniform weights",
    ),
    dict(
        task=T + "softmax_with_temperature",
        name="float32",
        fn=temp_float32,
        cls="float32 in a float64 task",
        mistake="computes in float32 and casts back",
    ),
    dict(
        task=T + "softmax_with_temperature",
        name="subtracts",
        fn=temp_subtracts,
        cls="formula",
        mistake="subtracts tau from the scores (no effect on softmax)",
    ),
    dict(
        task=T + "hand_weights",
        name="exps_unnormalised",
        fn=hand_exps_unnormalised,
        cls="no normalisation",
        mistake="gives exp(e_i) without dividing by their sum",
    ),
    dict(
        task=T + "hand_weights",
        name="divide_by_sum_of_scores",
        fn=hand_divide_by_sum_of_scores,
        cls="plain normalisation",
        mistake="divides the scores by their sum, no exp",
    ),
    dict(
        task=T + "hand_weights",
        name="reversed",
        fn=hand_reversed,
        cls="order",
        mistake="lists the weights from the last source word to the first",
    ),
    dict(
        task=T + "hand_weights",
        name="scaled_scores",
        fn=hand_scaled_scores,
        cls="wrong scale",
        mistake="divides the scores by sqrt(d) = 2 before the softmax",
    ),
    dict(
        task=T + "hand_weights",
        name="book_import",
        fn=hand_book,
        cls="book shortcut",
        mistake="computes the hand task with the book's softmax",
    ),
    dict(
        task=T + "stable_softmax",
        name="grader_reference",
        fn=soft_reference,
        cls="book shortcut",
        mistake="returns get_task('05.stable_softmax').reference",
    ),
]

VALID = [
    dict(task=T + "stable_softmax", name="logsumexp", fn=soft_valid_logsumexp),
    dict(task=T + "stable_softmax", name="rows_loop", fn=soft_valid_rows_loop),
    dict(task=T + "masked_softmax", name="nan_to_num", fn=masked_valid_nan_to_num),
    dict(task=T + "masked_softmax", name="finfo_min", fn=masked_valid_finfo),
    dict(task=T + "masked_softmax", name="by_hand", fn=masked_valid_by_hand),
    dict(task=T + "attention_weights_from_lengths", name="loop", fn=lengths_valid_loop),
    dict(task=T + "attention_weights_from_lengths", name="finfo_min", fn=lengths_valid_finfo),
    dict(task=T + "softmax_with_temperature", name="softmax", fn=temp_valid),
    dict(task=T + "softmax_with_temperature", name="logsumexp", fn=temp_valid_logsumexp),
    dict(task=T + "hand_weights", name="typed", fn=hand_valid),
    dict(task=T + "stable_softmax", name="detached_max", fn=soft_valid_detached_max),
]
