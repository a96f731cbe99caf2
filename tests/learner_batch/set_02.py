"""Set 02, seq2seq with RNNs: learner-style answers."""

import math

import torch

from ._conventions import task_id

SET = "02"


def _t(fn_name):
    return task_id(SET, fn_name)


# ---------------------------------------------------------------- 02.encoder_states
def _gru_step(
    x, h, W_ih, W_hh, b_ih, b_hh, *, order=(0, 1, 2), act=torch.tanh, swap_n_bias=False, swap_update=False
):
    gx = (x @ W_ih.T).chunk(3, dim=-1)
    gh = (h @ W_hh.T).chunk(3, dim=-1)
    bx, bh = b_ih.chunk(3), b_hh.chunk(3)
    ir, iz, in_ = order
    r = torch.sigmoid(gx[ir] + bx[ir] + gh[ir] + bh[ir])
    z = torch.sigmoid(gx[iz] + bx[iz] + gh[iz] + bh[iz])
    if swap_n_bias:
        n = act(gx[in_] + bh[in_] + r * (gh[in_] + bx[in_]))
    else:
        n = act(gx[in_] + bx[in_] + r * (gh[in_] + bh[in_]))
    return z * n + (1 - z) * h if swap_update else (1 - z) * n + z * h


def _encode(embedded, lengths, W_ih, W_hh, b_ih, b_hh, *, pad="zero", context="true_last", **step_kw):
    B, N, _ = embedded.shape
    d = W_hh.shape[1]
    h = embedded.new_zeros(B, d)
    states = []
    for i in range(N):
        h_new = _gru_step(embedded[:, i], h, W_ih, W_hh, b_ih, b_hh, **step_kw)
        real = (i < lengths).unsqueeze(-1)
        if pad == "keep_running":
            h = h_new
            states.append(h_new)
        elif pad == "freeze":
            h = torch.where(real, h_new, h)
            states.append(h)
        else:
            h = torch.where(real, h_new, h)
            states.append(torch.where(real, h_new, torch.zeros_like(h_new)))
    H = torch.stack(states, dim=1)
    if context == "last_position":
        c = H[:, -1]
    else:
        c = H[torch.arange(B), lengths - 1]
    return H, c


def enc_context_last_position(embedded, lengths, W_ih, W_hh, b_ih, b_hh):
    return _encode(embedded, lengths, W_ih, W_hh, b_ih, b_hh, context="last_position")


def enc_runs_over_padding(embedded, lengths, W_ih, W_hh, b_ih, b_hh):
    return _encode(embedded, lengths, W_ih, W_hh, b_ih, b_hh, pad="keep_running")


def enc_freezes_padding(embedded, lengths, W_ih, W_hh, b_ih, b_hh):
    return _encode(embedded, lengths, W_ih, W_hh, b_ih, b_hh, pad="freeze")


def enc_gate_order_zrn(embedded, lengths, W_ih, W_hh, b_ih, b_hh):
    return _encode(embedded, lengths, W_ih, W_hh, b_ih, b_hh, order=(1, 0, 2))


def enc_swapped_n_biases(embedded, lengths, W_ih, W_hh, b_ih, b_hh):
    return _encode(embedded, lengths, W_ih, W_hh, b_ih, b_hh, swap_n_bias=True)


def enc_swapped_update(embedded, lengths, W_ih, W_hh, b_ih, b_hh):
    return _encode(embedded, lengths, W_ih, W_hh, b_ih, b_hh, swap_update=True)


def enc_relu(embedded, lengths, W_ih, W_hh, b_ih, b_hh):
    return _encode(embedded, lengths, W_ih, W_hh, b_ih, b_hh, act=torch.relu)


def enc_gru_not_batch_first(embedded, lengths, W_ih, W_hh, b_ih, b_hh):
    e, d = W_ih.shape[1], W_hh.shape[1]
    gru = torch.nn.GRU(e, d, dtype=embedded.dtype)
    with torch.no_grad():
        gru.weight_ih_l0.copy_(W_ih)
        gru.weight_hh_l0.copy_(W_hh)
        gru.bias_ih_l0.copy_(b_ih)
        gru.bias_hh_l0.copy_(b_hh)
    out, _ = gru(embedded)  # (B, N, e) read as (time, batch, e)
    mask = (torch.arange(embedded.shape[1])[None, :] < lengths[:, None]).unsqueeze(-1)
    H = out * mask
    return H, H[torch.arange(H.shape[0]), lengths - 1]


def enc_cell_copy_no_grad(embedded, lengths, W_ih, W_hh, b_ih, b_hh):
    e, d = W_ih.shape[1], W_hh.shape[1]
    cell = torch.nn.GRUCell(e, d, dtype=embedded.dtype)
    with torch.no_grad():  # "set its weights to these"
        cell.weight_ih.copy_(W_ih)
        cell.weight_hh.copy_(W_hh)
        cell.bias_ih.copy_(b_ih)
        cell.bias_hh.copy_(b_hh)
    B, N, _ = embedded.shape
    h = embedded.new_zeros(B, d)
    states = []
    for i in range(N):
        real = (i < lengths).unsqueeze(-1)
        h_new = cell(embedded[:, i], h)
        h = torch.where(real, h_new, h)
        states.append(torch.where(real, h_new, torch.zeros_like(h_new)))
    H = torch.stack(states, 1)
    return H, H[torch.arange(B), lengths - 1]


def enc_float32_start(embedded, lengths, W_ih, W_hh, b_ih, b_hh):
    B, N, _ = embedded.shape
    h = torch.zeros(B, W_hh.shape[1])  # h_0 = 0, made without a dtype
    states = []
    for i in range(N):
        h_new = _gru_step(embedded[:, i], h, W_ih, W_hh, b_ih, b_hh)
        real = (i < lengths).unsqueeze(-1)
        h = torch.where(real, h_new, h)
        states.append(torch.where(real, h_new, torch.zeros_like(h_new)))
    H = torch.stack(states, 1)
    return H, H[torch.arange(B), lengths - 1]


def enc_reference(embedded, lengths, W_ih, W_hh, b_ih, b_hh):
    from attnbook.grading import get_task

    return get_task("02.encoder_states").reference(embedded, lengths, W_ih, W_hh, b_ih, b_hh)


def enc_valid_by_hand(embedded, lengths, W_ih, W_hh, b_ih, b_hh):
    return _encode(embedded, lengths, W_ih, W_hh, b_ih, b_hh)


def enc_valid_gru_cell_functional(embedded, lengths, W_ih, W_hh, b_ih, b_hh):
    B, N, _ = embedded.shape
    h = embedded.new_zeros(B, W_hh.shape[1])
    H = embedded.new_zeros(B, N, W_hh.shape[1])
    context = embedded.new_zeros(B, W_hh.shape[1])
    for i in range(N):
        h_new = torch.gru_cell(embedded[:, i], h, W_ih, W_hh, b_ih, b_hh)
        real = (i < lengths).unsqueeze(-1)
        h = torch.where(real, h_new, h)
        H = H + torch.nn.functional.pad(
            torch.where(real, h_new, 0 * h_new).unsqueeze(1), (0, 0, i, N - i - 1)
        )
        context = torch.where((lengths - 1 == i).unsqueeze(-1), h_new, context)
    return H, context


# ---------------------------------------------------------------- 02.bottleneck_sizes(n_words, d)
def bn_forgets_eos(n_words, d):
    return d, n_words * d


def bn_positions_not_numbers(n_words, d):
    return 1, n_words + 1


def bn_swapped(n_words, d):
    return (n_words + 1) * d, d


def bn_context_is_everything(n_words, d):
    return (n_words + 1) * d, (n_words + 1) * d


def bn_adds(n_words, d):
    return d, n_words + 1 + d


def bn_eos_one_number(n_words, d):
    return d, n_words * d + 1


def bn_valid(n_words, d):
    return d, d * (n_words + 1)


def bn_valid_tensor_shapes(n_words, d):
    c = torch.zeros(d)
    H = torch.zeros(n_words + 1, d)
    return c.numel(), H.numel()


# ---------------------------------------------------------------- 02.greedy_decode
def greedy_keeps_eos(step_fn, s_0, sos_id, eos_id, max_len):
    out, y, s = [], sos_id, s_0
    for _ in range(max_len):
        logits, s = step_fn(y, s)
        y = int(logits.argmax())
        out.append(y)
        if y == eos_id:
            break
    return out


def greedy_one_step_short(step_fn, s_0, sos_id, eos_id, max_len):
    out, y, s = [], sos_id, s_0
    for _ in range(max_len - 1):
        logits, s = step_fn(y, s)
        y = int(logits.argmax())
        if y == eos_id:
            break
        out.append(y)
    return out


def greedy_one_step_long(step_fn, s_0, sos_id, eos_id, max_len):
    out, y, s = [], sos_id, s_0
    while len(out) <= max_len:  # counts words, and lets one more through
        logits, s = step_fn(y, s)
        y = int(logits.argmax())
        if y == eos_id:
            break
        out.append(y)
    return out[: max_len + 1] if len(out) > max_len else out


def greedy_feeds_sos(step_fn, s_0, sos_id, eos_id, max_len):
    out, s = [], s_0
    for _ in range(max_len):
        logits, s = step_fn(sos_id, s)
        y = int(logits.argmax())
        if y == eos_id:
            break
        out.append(y)
    return out


def greedy_static_state(step_fn, s_0, sos_id, eos_id, max_len):
    out, y = [], sos_id
    for _ in range(max_len):
        logits, _ = step_fn(y, s_0)
        y = int(logits.argmax())
        if y == eos_id:
            break
        out.append(y)
    return out


def greedy_max_value(step_fn, s_0, sos_id, eos_id, max_len):
    out, y, s = [], sos_id, s_0
    for _ in range(max_len):
        logits, s = step_fn(y, s)
        y = int(logits.max())
        if y == eos_id:
            break
        out.append(y)
    return out


def greedy_skips_eos(step_fn, s_0, sos_id, eos_id, max_len):
    out, y, s = [], sos_id, s_0
    for _ in range(max_len):
        logits, s = step_fn(y, s)
        y = int(logits.argmax())
        if y == eos_id:
            continue  # leave <eos> out of the answer
        out.append(y)
    return out


def greedy_valid(step_fn, s_0, sos_id, eos_id, max_len):
    out, y, s = [], sos_id, s_0
    steps = 0
    while steps < max_len:
        logits, s = step_fn(y, s)
        steps += 1
        y = int(torch.argmax(logits))
        if y == eos_id:
            return out
        out.append(y)
    return out


# ---------------------------------------------------------------- 02.accuracy_by_length
def _members(src_lengths, lo, hi, inclusive=True):
    return [k for k, n in enumerate(src_lengths) if (lo <= n <= hi if inclusive else lo <= n < hi)]


def _right_positions(p, t):
    right = sum(1 for j in range(len(t)) if j < len(p) and p[j] == t[j])
    return right + (len(p) == len(t)), len(t) + 1


def _acc(
    predictions,
    targets,
    src_lengths,
    buckets,
    *,
    pooled=True,
    inclusive=True,
    end=True,
    empty=None,
    by_target=False,
    sentence_prefix=False,
    swap=False,
    denom_longest=False,
):
    lengths = [len(t) for t in targets] if by_target else src_lengths
    result = []
    for lo, hi in buckets:
        ks = _members(lengths, lo, hi, inclusive)
        if not ks:
            result.append(empty)
            continue
        right = total = 0
        per_sentence = []
        for k in ks:
            p, t = predictions[k], targets[k]
            r, n = _right_positions(p, t)
            if not end:
                r, n = r - (len(p) == len(t)), n - 1
            if denom_longest:
                n = max(len(p), len(t)) + 1
            right, total = right + r, total + n
            per_sentence.append(r / n if n else 1.0)
        tok = right / total if pooled else sum(per_sentence) / len(per_sentence)
        same = [
            (predictions[k][: len(targets[k])] if sentence_prefix else predictions[k]) == targets[k]
            for k in ks
        ]
        sen = sum(same) / len(ks)
        result.append((sen, tok) if swap else (tok, sen))
    return result


def acc_mean_of_sentences(predictions, targets, src_lengths, buckets):
    return _acc(predictions, targets, src_lengths, buckets, pooled=False)


def acc_hi_exclusive(predictions, targets, src_lengths, buckets):
    return _acc(predictions, targets, src_lengths, buckets, inclusive=False)


def acc_no_end_position(predictions, targets, src_lengths, buckets):
    return _acc(predictions, targets, src_lengths, buckets, end=False)


def acc_empty_zero(predictions, targets, src_lengths, buckets):
    return _acc(predictions, targets, src_lengths, buckets, empty=(0.0, 0.0))


def acc_empty_nan(predictions, targets, src_lengths, buckets):
    return _acc(predictions, targets, src_lengths, buckets, empty=(math.nan, math.nan))


def acc_by_target_length(predictions, targets, src_lengths, buckets):
    return _acc(predictions, targets, src_lengths, buckets, by_target=True)


def acc_sentence_prefix(predictions, targets, src_lengths, buckets):
    return _acc(predictions, targets, src_lengths, buckets, sentence_prefix=True)


def acc_swapped(predictions, targets, src_lengths, buckets):
    return _acc(predictions, targets, src_lengths, buckets, swap=True)


def acc_denominator_longest(predictions, targets, src_lengths, buckets):
    return _acc(predictions, targets, src_lengths, buckets, denom_longest=True)


def acc_valid(predictions, targets, src_lengths, buckets):
    return _acc(predictions, targets, src_lengths, buckets)


def acc_valid_eos_append(predictions, targets, src_lengths, buckets):
    out = []
    for lo, hi in buckets:
        ks = [k for k in range(len(targets)) if lo <= src_lengths[k] <= hi]
        if not ks:
            out.append(None)
            continue
        right = total = exact = 0
        for k in ks:
            p, t = list(predictions[k]) + [None], list(targets[k]) + [None]  # None stands for <eos>
            right += sum(1 for j in range(len(t)) if j < len(p) and p[j] == t[j])
            total += len(t)
            exact += list(predictions[k]) == list(targets[k])
        out.append((right / total, exact / len(ks)))
    return out


# ---------------------------------------------------------------- 02.gradient_norms_by_position
def _grad(loss_fn, embedded):
    x = embedded.detach().clone().requires_grad_(True)
    (g,) = torch.autograd.grad(loss_fn(x), x)
    return g


def grad_sum_not_norm(loss_fn, embedded):
    return _grad(loss_fn, embedded).sum(dim=-1)


def grad_max_abs(loss_fn, embedded):
    return _grad(loss_fn, embedded).abs().amax(dim=-1)


def grad_norm_over_positions(loss_fn, embedded):
    return _grad(loss_fn, embedded).norm(dim=0)


def grad_squared_norm(loss_fn, embedded):
    return (_grad(loss_fn, embedded) ** 2).sum(dim=-1)


def grad_on_input(loss_fn, embedded):
    embedded.requires_grad_(True)
    loss_fn(embedded).backward()
    return embedded.grad.norm(dim=-1)


def grad_float32(loss_fn, embedded):
    return _grad(loss_fn, embedded).float().norm(dim=-1)


def grad_of_loss_value(loss_fn, embedded):
    x = embedded.detach().clone().requires_grad_(True)
    loss = loss_fn(x)
    (g,) = torch.autograd.grad(loss, x)
    return g.norm(dim=-1) * loss.detach().abs()  # "scaled by how big the loss is"


def grad_valid(loss_fn, embedded):
    return _grad(loss_fn, embedded).norm(dim=-1)


def grad_valid_func(loss_fn, embedded):
    g = torch.func.grad(loss_fn)(embedded.detach().clone())
    return torch.sqrt((g * g).sum(dim=1))


WRONG = [
    dict(
        task=_t("encoder_states"),
        name="context_last_position",
        fn=enc_context_last_position,
        cls="padding / true last token",
        mistake="takes the context at the last padded position",
    ),
    dict(
        task=_t("encoder_states"),
        name="runs_over_padding",
        fn=enc_runs_over_padding,
        cls="padding",
        mistake="keeps running the GRU over padding, no zeros there",
    ),
    dict(
        task=_t("encoder_states"),
        name="freezes_padding",
        fn=enc_freezes_padding,
        cls="padding",
        mistake="copies the last real state into the padded positions instead of zeros",
    ),
    dict(
        task=_t("encoder_states"),
        name="gate_order_zrn",
        fn=enc_gate_order_zrn,
        cls="gate order",
        mistake="reads the chunks as z, r, n",
    ),
    dict(
        task=_t("encoder_states"),
        name="swapped_n_biases",
        fn=enc_swapped_n_biases,
        cls="swapped biases",
        mistake="puts b_hn outside and b_in inside the reset gate's product",
    ),
    dict(
        task=_t("encoder_states"),
        name="swapped_update",
        fn=enc_swapped_update,
        cls="formula",
        mistake="h = z n + (1 - z) h, the update gate the other way round",
    ),
    dict(task=_t("encoder_states"), name="relu", fn=enc_relu, cls="ReLU for tanh", mistake="ReLU for tanh"),
    dict(
        task=_t("encoder_states"),
        name="gru_not_batch_first",
        fn=enc_gru_not_batch_first,
        cls="axis order",
        mistake="feeds (B, N, e) to nn.GRU without batch_first=True",
    ),
    dict(
        task=_t("encoder_states"),
        name="cell_copy_no_grad",
        fn=enc_cell_copy_no_grad,
        cls="gradients detached",
        mistake="copies the weights into an nn.GRUCell under no_grad, so no gradient "
        "reaches the given weights",
    ),
    dict(
        task=_t("bottleneck_sizes"),
        name="forgets_eos",
        fn=bn_forgets_eos,
        cls="off by one",
        mistake="forgets the <eos> position",
    ),
    dict(
        task=_t("bottleneck_sizes"),
        name="positions_not_numbers",
        fn=bn_positions_not_numbers,
        cls="units",
        mistake="counts vectors instead of numbers",
    ),
    dict(
        task=_t("bottleneck_sizes"),
        name="swapped",
        fn=bn_swapped,
        cls="swapped tuple order",
        mistake="returns (H_size, c_size)",
    ),
    dict(
        task=_t("bottleneck_sizes"),
        name="context_is_everything",
        fn=bn_context_is_everything,
        cls="concept",
        mistake="thinks the context vector holds all the states",
    ),
    dict(
        task=_t("bottleneck_sizes"),
        name="adds",
        fn=bn_adds,
        cls="formula",
        mistake="adds instead of multiplies",
    ),
    dict(
        task=_t("bottleneck_sizes"),
        name="eos_one_number",
        fn=bn_eos_one_number,
        cls="units",
        mistake="counts <eos> as one number, not one state",
    ),
    dict(
        task=_t("greedy_decode"),
        name="keeps_eos",
        fn=greedy_keeps_eos,
        cls="<eos> in output",
        mistake="appends <eos> to the answer",
    ),
    dict(
        task=_t("greedy_decode"),
        name="one_step_short",
        fn=greedy_one_step_short,
        cls="max_len",
        mistake="makes at most max_len - 1 steps",
    ),
    dict(
        task=_t("greedy_decode"),
        name="one_step_long",
        fn=greedy_one_step_long,
        cls="max_len",
        mistake="counts words instead of steps and lets one more through",
    ),
    dict(
        task=_t("greedy_decode"),
        name="feeds_sos",
        fn=greedy_feeds_sos,
        cls="feedback",
        mistake="feeds <sos> at every step instead of the previous prediction",
    ),
    dict(
        task=_t("greedy_decode"),
        name="static_state",
        fn=greedy_static_state,
        cls="state",
        mistake="passes s_0 at every step instead of the new state",
    ),
    dict(
        task=_t("greedy_decode"),
        name="max_value",
        fn=greedy_max_value,
        cls="argmax",
        mistake="takes the largest logit's value instead of its index",
    ),
    dict(
        task=_t("greedy_decode"),
        name="skips_eos",
        fn=greedy_skips_eos,
        cls="words after <eos>",
        mistake="skips <eos> and keeps decoding, emitting words after it",
    ),
    dict(
        task=_t("accuracy_by_length"),
        name="mean_of_sentences",
        fn=acc_mean_of_sentences,
        cls="pooling",
        mistake="averages the sentences' own token accuracies",
    ),
    dict(
        task=_t("accuracy_by_length"),
        name="hi_exclusive",
        fn=acc_hi_exclusive,
        cls="bounds",
        mistake="treats hi as exclusive",
    ),
    dict(
        task=_t("accuracy_by_length"),
        name="no_end_position",
        fn=acc_no_end_position,
        cls="end position",
        mistake="scores only the word positions, not the end",
    ),
    dict(
        task=_t("accuracy_by_length"),
        name="empty_zero",
        fn=acc_empty_zero,
        cls="empty bucket",
        mistake="gives an empty bucket (0, 0)",
    ),
    dict(
        task=_t("accuracy_by_length"),
        name="empty_nan",
        fn=acc_empty_nan,
        cls="empty bucket",
        mistake="gives an empty bucket (nan, nan) instead of None",
    ),
    dict(
        task=_t("accuracy_by_length"),
        name="by_target_length",
        fn=acc_by_target_length,
        cls="bucketing",
        mistake="buckets by target length instead of source length",
    ),
    dict(
        task=_t("accuracy_by_length"),
        name="sentence_prefix",
        fn=acc_sentence_prefix,
        cls="words after <eos>",
        mistake="sentence accuracy ignores extra words after the target's end",
    ),
    dict(
        task=_t("accuracy_by_length"),
        name="swapped",
        fn=acc_swapped,
        cls="swapped tuple order",
        mistake="returns (sentence, token)",
    ),
    dict(
        task=_t("accuracy_by_length"),
        name="denominator_longest",
        fn=acc_denominator_longest,
        cls="formula",
        mistake="counts positions over the longer of prediction and target",
    ),
    dict(
        task=_t("gradient_norms_by_position"),
        name="sum_not_norm",
        fn=grad_sum_not_norm,
        cls="formula",
        mistake="sums the gradient's components instead of taking the norm",
    ),
    dict(
        task=_t("gradient_norms_by_position"),
        name="max_abs",
        fn=grad_max_abs,
        cls="formula",
        mistake="takes the largest absolute component",
    ),
    dict(
        task=_t("gradient_norms_by_position"),
        name="norm_over_positions",
        fn=grad_norm_over_positions,
        cls="axis",
        mistake="takes the norm over the positions, one number per feature",
    ),
    dict(
        task=_t("gradient_norms_by_position"),
        name="squared_norm",
        fn=grad_squared_norm,
        cls="formula",
        mistake="returns the squared norm",
    ),
    dict(
        task=_t("gradient_norms_by_position"),
        name="on_input",
        fn=grad_on_input,
        cls="input mutation (autograd state)",
        mistake="sets requires_grad on the input and calls backward",
    ),
    dict(
        task=_t("gradient_norms_by_position"),
        name="float32",
        fn=grad_float32,
        cls="float32 in a float64 task",
        mistake="returns float32",
    ),
    dict(
        task=_t("gradient_norms_by_position"),
        name="scaled_by_loss",
        fn=grad_of_loss_value,
        cls="formula",
        mistake="multiplies the norms by the loss",
    ),
    dict(
        task=_t("encoder_states"),
        name="float32_start",
        fn=enc_float32_start,
        cls="dtype clash",
        mistake="creates h_0 with torch.zeros(B, d), float32, and multiplies it with float64 weights",
    ),
    dict(
        task=_t("encoder_states"),
        name="grader_reference",
        fn=enc_reference,
        cls="book shortcut",
        mistake="returns get_task('02.encoder_states').reference",
    ),
]

VALID = [
    dict(task=_t("encoder_states"), name="by_hand", fn=enc_valid_by_hand),
    dict(task=_t("encoder_states"), name="torch_gru_cell", fn=enc_valid_gru_cell_functional),
    dict(task=_t("bottleneck_sizes"), name="formula", fn=bn_valid),
    dict(task=_t("bottleneck_sizes"), name="numel", fn=bn_valid_tensor_shapes),
    dict(task=_t("greedy_decode"), name="while_loop", fn=greedy_valid),
    dict(task=_t("accuracy_by_length"), name="pooled", fn=acc_valid),
    dict(task=_t("accuracy_by_length"), name="eos_append", fn=acc_valid_eos_append),
    dict(task=_t("gradient_norms_by_position"), name="autograd", fn=grad_valid),
    dict(task=_t("gradient_norms_by_position"), name="torch_func", fn=grad_valid_func),
]
