"""Set 02 (Part I: the RNN encoder-decoder and where it breaks): every known-wrong implementation is
caught, with the right diagnosis.

These are written the way learners write them, independently of the grader's misconception models.
"""

from __future__ import annotations

import dataclasses
import math

import pytest
import torch

from attnbook.grading import get_task, run_task

# ------------------------------------------------------------------------------ 02.encoder_states


def load_gru(W_ih, W_hh, b_ih, b_hh, batch_first=True, dtype=torch.float64):
    gru = torch.nn.GRU(W_ih.shape[1], W_hh.shape[1], batch_first=batch_first, dtype=dtype)
    with torch.no_grad():
        gru.weight_ih_l0.copy_(W_ih)
        gru.weight_hh_l0.copy_(W_hh)
        gru.bias_ih_l0.copy_(b_ih)
        gru.bias_hh_l0.copy_(b_hh)
    return gru


def pad_mask(lengths, N):
    return (torch.arange(N).unsqueeze(0) < lengths.unsqueeze(1)).unsqueeze(-1).double()


def enc_nn_gru(embedded, lengths, W_ih, W_hh, b_ih, b_hh):
    """Right values: nn.GRU with batch_first, masked, context at the true last token; but the weights are
    copied into the module's own parameters, so no gradient reaches W_ih, W_hh, b_ih, b_hh."""
    out, _ = load_gru(W_ih, W_hh, b_ih, b_hh)(embedded)
    out = out * pad_mask(lengths, embedded.shape[1])
    return out, torch.stack([out[b, lengths[b] - 1] for b in range(len(lengths))])


def enc_gru_cell(embedded, lengths, W_ih, W_hh, b_ih, b_hh):
    """Correct: torch.gru_cell, one position at a time, states kept only while a sentence lasts."""
    B, N, _ = embedded.shape
    h = torch.zeros(B, W_hh.shape[1], dtype=embedded.dtype)
    H, context = [], torch.zeros_like(h)
    for i in range(N):
        h = torch.gru_cell(embedded[:, i, :], h, W_ih, W_hh, b_ih, b_hh)
        alive = (i < lengths).unsqueeze(1)
        H.append(torch.where(alive, h, torch.zeros_like(h)))
        context = torch.where(alive, h, context)
    return torch.stack(H, 1), context


def enc_final_hidden(embedded, lengths, W_ih, W_hh, b_ih, b_hh):
    out, h_n = load_gru(W_ih, W_hh, b_ih, b_hh)(embedded)
    return out * pad_mask(lengths, embedded.shape[1]), h_n[0]  # h_n has read the padding


def enc_last_column(embedded, lengths, W_ih, W_hh, b_ih, b_hh):
    H, _ = enc_nn_gru(embedded, lengths, W_ih, W_hh, b_ih, b_hh)
    return H, H[:, -1, :]


def enc_first_column(embedded, lengths, W_ih, W_hh, b_ih, b_hh):
    H, _ = enc_nn_gru(embedded, lengths, W_ih, W_hh, b_ih, b_hh)
    return H, H[:, 0]


def enc_no_mask(embedded, lengths, W_ih, W_hh, b_ih, b_hh):
    out, _ = load_gru(W_ih, W_hh, b_ih, b_hh)(embedded)
    return out, out[torch.arange(out.shape[0]), lengths - 1]


def enc_forgot_batch_first(embedded, lengths, W_ih, W_hh, b_ih, b_hh):
    out, _ = load_gru(W_ih, W_hh, b_ih, b_hh, batch_first=False)(embedded)
    out = out * pad_mask(lengths, embedded.shape[1])
    return out, out[torch.arange(out.shape[0]), lengths - 1]


def enc_reshape_time_first(embedded, lengths, W_ih, W_hh, b_ih, b_hh):
    B, N, e = embedded.shape
    out, _ = load_gru(W_ih, W_hh, b_ih, b_hh, batch_first=False)(embedded.reshape(N, B, e))  # (N, B, d)
    out = out.reshape(B, N, -1) * pad_mask(lengths, N)
    return out, out[torch.arange(B), lengths - 1]


def enc_view_per_step(embedded, lengths, W_ih, W_hh, b_ih, b_hh):
    B, N, e = embedded.shape
    x = embedded.view(N, B, e)  # meant as "time first"
    h = torch.zeros(B, W_hh.shape[1], dtype=torch.float64)
    states = []
    for t in range(N):
        h = torch.gru_cell(x[t], h, W_ih, W_hh, b_ih, b_hh)
        states.append(h)
    H = torch.stack(states, dim=1) * pad_mask(lengths, N)
    return H, H[torch.arange(B), lengths - 1]


def enc_returns_h_twice(embedded, lengths, W_ih, W_hh, b_ih, b_hh):
    _, context = enc_nn_gru(embedded, lengths, W_ih, W_hh, b_ih, b_hh)
    return context, context


def enc_repeats_context(embedded, lengths, W_ih, W_hh, b_ih, b_hh):
    _, context = enc_nn_gru(embedded, lengths, W_ih, W_hh, b_ih, b_hh)
    return context.unsqueeze(1).repeat(1, embedded.shape[1], 1), context


def enc_context_first(embedded, lengths, W_ih, W_hh, b_ih, b_hh):
    H, context = enc_nn_gru(embedded, lengths, W_ih, W_hh, b_ih, b_hh)
    return context, H


def hand_gru(gate_order="rzn", cho=False, swap_update=False):
    def encoder(embedded, lengths, W_ih, W_hh, b_ih, b_hh):
        B, N, _ = embedded.shape
        d = W_hh.shape[1]
        W = dict(zip(gate_order, W_ih.split(d)))
        U = dict(zip(gate_order, W_hh.split(d)))
        b = dict(zip(gate_order, b_ih.split(d)))
        c = dict(zip(gate_order, b_hh.split(d)))
        h = torch.zeros(B, d, dtype=torch.float64)
        H = torch.zeros(B, N, d, dtype=torch.float64)
        for t in range(N):
            x = embedded[:, t]
            r = torch.sigmoid(x @ W["r"].T + b["r"] + h @ U["r"].T + c["r"])
            z = torch.sigmoid(x @ W["z"].T + b["z"] + h @ U["z"].T + c["z"])
            if cho:
                n = torch.tanh(x @ W["n"].T + b["n"] + (r * h) @ U["n"].T + c["n"])
            else:
                n = torch.tanh(x @ W["n"].T + b["n"] + r * (h @ U["n"].T + c["n"]))
            h = z * n + (1 - z) * h if swap_update else (1 - z) * n + z * h
            H[:, t] = h * (t < lengths).double().unsqueeze(1)
        return H, H[torch.arange(B), lengths - 1]

    return encoder


def enc_float32_cell(embedded, lengths, W_ih, W_hh, b_ih, b_hh):
    out, _ = load_gru(W_ih, W_hh, b_ih, b_hh, dtype=torch.float32)(embedded.float())
    out = out * pad_mask(lengths, embedded.shape[1]).float()
    return out, out[torch.arange(out.shape[0]), lengths - 1]


def enc_zeroes_padding_in_place(embedded, lengths, W_ih, W_hh, b_ih, b_hh):
    embedded *= pad_mask(lengths, embedded.shape[1])  # "clean" the padding first
    return enc_nn_gru(embedded, lengths, W_ih, W_hh, b_ih, b_hh)


def enc_mean_as_context(embedded, lengths, W_ih, W_hh, b_ih, b_hh):
    H, _ = enc_nn_gru(embedded, lengths, W_ih, W_hh, b_ih, b_hh)
    return H, H.sum(dim=1) / lengths.unsqueeze(1)  # "a summary of the whole sentence"


def enc_one_past_the_end(embedded, lengths, W_ih, W_hh, b_ih, b_hh):
    H, _ = enc_nn_gru(embedded, lengths, W_ih, W_hh, b_ih, b_hh)
    return H, H[torch.arange(H.shape[0]), lengths]


def enc_lists(embedded, lengths, W_ih, W_hh, b_ih, b_hh):
    H, context = enc_nn_gru(embedded, lengths, W_ih, W_hh, b_ih, b_hh)
    return H.tolist(), context.tolist()


def enc_context_only(embedded, lengths, W_ih, W_hh, b_ih, b_hh):
    return enc_nn_gru(embedded, lengths, W_ih, W_hh, b_ih, b_hh)[1]


# ------------------------------------------------------------------------------ 02.bottleneck_sizes

# ------------------------------------------------------------------------------ 02.greedy_decode


def greedy_ok_while(step_fn, s_0, sos_id, eos_id, max_len):
    """Correct: a while loop on the number of words."""
    out, prev, state = [], sos_id, s_0
    while len(out) < max_len:
        logits, state = step_fn(prev, state)
        prev = logits.argmax().item()
        if prev == eos_id:
            return out
        out.append(prev)
    return out


def greedy_ok_tensors(step_fn, s_0, sos_id, eos_id, max_len):
    """Correct too: the ids are kept as 0-d tensors."""
    tokens, y, s = [], torch.tensor(sos_id), s_0
    for _ in range(max_len):
        logits, s = step_fn(y, s)
        y = torch.argmax(logits)
        if y == eos_id:
            break
        tokens.append(y)
    return tokens


def greedy_no_eos_check(step_fn, s_0, sos_id, eos_id, max_len):
    out, y, s = [], sos_id, s_0
    for _ in range(max_len):
        logits, s = step_fn(y, s)
        y = logits.argmax().item()
        out.append(y)
    return out


def greedy_while_not_eos(step_fn, s_0, sos_id, eos_id, max_len):
    out, y, s = [], sos_id, s_0
    while True:  # no max_len: a decoder that never says <eos> never stops
        logits, s = step_fn(y, s)
        y = logits.argmax().item()
        if y == eos_id:
            return out
        out.append(y)


def greedy_append_then_check(step_fn, s_0, sos_id, eos_id, max_len):
    out, y, s = [], sos_id, s_0
    for _ in range(max_len):
        logits, s = step_fn(y, s)
        y = int(torch.argmax(logits))
        out.append(y)
        if y == eos_id:
            break
    return out


def greedy_starts_with_sos(step_fn, s_0, sos_id, eos_id, max_len):
    seq, s = [sos_id], s_0
    for _ in range(max_len):
        logits, s = step_fn(seq[-1], s)
        nxt = int(logits.argmax())
        if nxt == eos_id:
            break
        seq.append(nxt)
    return seq


def greedy_always_sos(step_fn, s_0, sos_id, eos_id, max_len):
    out, s = [], s_0
    for _ in range(max_len):
        logits, s = step_fn(sos_id, s)
        y = int(logits.argmax())
        if y == eos_id:
            break
        out.append(y)
    return out


def greedy_forgets_state(step_fn, s_0, sos_id, eos_id, max_len):
    out, y = [], sos_id
    for _ in range(max_len):
        logits, _ = step_fn(y, s_0)
        y = int(logits.argmax())
        if y == eos_id:
            break
        out.append(y)
    return out


def greedy_le_max_len(step_fn, s_0, sos_id, eos_id, max_len):
    out, y, s = [], sos_id, s_0
    while len(out) <= max_len:
        logits, s = step_fn(y, s)
        y = int(logits.argmax())
        if y == eos_id:
            break
        out.append(y)
    return out


def greedy_range_minus_one(step_fn, s_0, sos_id, eos_id, max_len):
    out, y, s = [], sos_id, s_0
    for _ in range(1, max_len):
        logits, s = step_fn(y, s)
        y = int(logits.argmax())
        if y == eos_id:
            break
        out.append(y)
    return out


def greedy_argmin(step_fn, s_0, sos_id, eos_id, max_len):
    out, y, s = [], sos_id, s_0
    for _ in range(max_len):
        logits, s = step_fn(y, s)
        y = int(logits.argmin())
        if y == eos_id:
            break
        out.append(y)
    return out


def greedy_samples(step_fn, s_0, sos_id, eos_id, max_len):
    gen = torch.Generator().manual_seed(3)
    out, y, s = [], sos_id, s_0
    for _ in range(max_len):
        logits, s = step_fn(y, s)
        y = int(torch.multinomial(torch.softmax(logits / 3.0, -1), 1, generator=gen))
        if y == eos_id:
            break
        out.append(y)
    return out


def greedy_hardcoded_eos(step_fn, s_0, sos_id, eos_id, max_len):
    EOS = 2  # from attnbook.data
    out, y, s = [], sos_id, s_0
    for _ in range(max_len):
        logits, s = step_fn(y, s)
        y = int(logits.argmax())
        if y == EOS:
            break
        out.append(y)
    return out


def greedy_hardcoded_sos(step_fn, s_0, sos_id, eos_id, max_len):
    out, s = [], s_0
    y = 1  # <sos> in attnbook.data
    for _ in range(max_len):
        logits, s = step_fn(y, s)
        y = int(logits.argmax())
        if y == eos_id:
            break
        out.append(y)
    return out


def greedy_tensor(step_fn, s_0, sos_id, eos_id, max_len):
    return torch.tensor(greedy_ok_while(step_fn, s_0, sos_id, eos_id, max_len))


def greedy_overwrites_s0(step_fn, s_0, sos_id, eos_id, max_len):
    out, y, s = [], sos_id, s_0
    for _ in range(max_len):
        logits, new_s = step_fn(y, s)
        s[:] = new_s  # keeps "one state buffer", which is s_0 itself
        y = int(logits.argmax())
        if y == eos_id:
            break
        out.append(y)
    return out


# ------------------------------------------------------------------------------ 02.accuracy_by_length


def acc_ok_eos(predictions, targets, src_lengths, buckets):
    """Correct: append a stand-in <eos> and compare over the target's positions."""
    END = object()
    result = []
    for lo, hi in buckets:
        idx = [k for k, n in enumerate(src_lengths) if lo <= n <= hi]
        if not idx:
            result.append(None)
            continue
        hits = total = 0
        for k in idx:
            p, t = list(predictions[k]) + [END], list(targets[k]) + [END]
            hits += sum(1 for j in range(len(t)) if j < len(p) and p[j] == t[j])
            total += len(t)
        result.append((hits / total, sum(predictions[k] == targets[k] for k in idx) / len(idx)))
    return result


def acc_learner(
    per_sentence=False,
    upper_open=False,
    lower_open=False,
    by_target=False,
    zip_only=False,
    words_only=False,
    prefix_exact=False,
    empty="none",
    swap=False,
):
    """A learner's loop, with one slip switched on at a time."""

    def accuracy(predictions, targets, src_lengths, buckets):
        results = []
        for lo, hi in buckets:
            token_hits, token_total, exact, count, per_sent = 0, 0, 0, 0, []
            for pred, tgt, n in zip(predictions, targets, src_lengths):
                length = len(tgt) if by_target else n
                if not (
                    (lo < length if lower_open else lo <= length)
                    and (length < hi if upper_open else length <= hi)
                ):
                    continue
                count += 1
                if zip_only:
                    hits = sum(a == b for a, b in zip(pred, tgt))
                    total = min(len(pred), len(tgt)) or 1
                elif words_only:
                    hits = sum(a == b for a, b in zip(pred, tgt))
                    total = len(tgt)
                else:
                    hits = sum(a == b for a, b in zip(pred, tgt)) + (len(pred) == len(tgt))
                    total = len(tgt) + 1
                token_hits += hits
                token_total += total
                per_sent.append(hits / total)
                if prefix_exact:
                    exact += all(a == b for a, b in zip(pred, tgt))
                else:
                    exact += pred == tgt
            if count == 0:
                if empty == "zero":
                    results.append((0.0, 0.0))
                elif empty == "nan":
                    results.append((float("nan"), float("nan")))
                elif empty == "none":
                    results.append(None)
                elif empty == "skip":
                    pass
                else:
                    results.append((token_hits / token_total, exact / count))  # ZeroDivisionError
                continue
            token = sum(per_sent) / len(per_sent) if per_sentence else token_hits / token_total
            pair = (exact / count, token) if swap else (token, exact / count)
            results.append(pair)
        return results

    return accuracy


def acc_appends_eos_in_place(predictions, targets, src_lengths, buckets):
    for p in predictions:
        p.append(-1)
    for t in targets:
        t.append(-1)
    results = []
    for lo, hi in buckets:
        rows = [(p, t) for p, t, n in zip(predictions, targets, src_lengths) if lo <= n <= hi]
        if not rows:
            results.append(None)
            continue
        hits = sum(sum(j < len(p) and p[j] == t[j] for j in range(len(t))) for p, t in rows)
        results.append((hits / sum(len(t) for _, t in rows), sum(p == t for p, t in rows) / len(rows)))
    return results


def acc_as_tensor(predictions, targets, src_lengths, buckets):
    out = acc_learner()(predictions, targets, src_lengths, buckets)
    return torch.tensor([o if o is not None else (float("nan"), float("nan")) for o in out])


# ------------------------------------------------------------------------------ 02.gradient_norms_by_position


def grad_backward(loss_fn, embedded):
    x = embedded.clone().requires_grad_()
    loss_fn(x).backward()
    return x.grad


def gn_ok_backward(loss_fn, embedded):
    """Correct: .backward() on a clone and the norm of each row."""
    return torch.linalg.vector_norm(grad_backward(loss_fn, embedded), dim=1)


def gn_ok_sqrt(loss_fn, embedded):
    """Right values, but it switches on the caller's own requires_grad flag (a change to its input)."""
    embedded.requires_grad_(True)
    (g,) = torch.autograd.grad(loss_fn(embedded), embedded)
    return (g * g).sum(-1).sqrt()


def gn_total(loss_fn, embedded):
    return grad_backward(loss_fn, embedded).norm()


def gn_dim0(loss_fn, embedded):
    return grad_backward(loss_fn, embedded).norm(dim=0)


def gn_sum(loss_fn, embedded):
    return grad_backward(loss_fn, embedded).sum(dim=1)


def gn_abs_sum(loss_fn, embedded):
    return grad_backward(loss_fn, embedded).abs().sum(dim=1)


def gn_squared(loss_fn, embedded):
    g = grad_backward(loss_fn, embedded)
    return (g * g).sum(-1)


def gn_from_the_end(loss_fn, embedded):
    g = grad_backward(loss_fn, embedded)
    return torch.stack([g[-1 - i].norm() for i in range(g.shape[0])])


def gn_input_norm(loss_fn, embedded):
    return torch.norm(embedded, dim=-1)


def gn_relative(loss_fn, embedded):
    n = grad_backward(loss_fn, embedded).norm(dim=1)
    return n / n.sum()


def gn_relative_max(loss_fn, embedded):
    n = grad_backward(loss_fn, embedded).norm(dim=1)
    return n / n.max()


def gn_no_requires_grad(loss_fn, embedded):
    loss = loss_fn(embedded)
    loss.backward()
    return embedded.grad.norm(dim=1)


def gn_python_floats(loss_fn, embedded):
    g = grad_backward(loss_fn, embedded)
    return torch.tensor([row.norm().item() for row in g])


def gn_keepdim(loss_fn, embedded):
    return grad_backward(loss_fn, embedded).norm(dim=1, keepdim=True)


def gn_finite_differences_in_place(loss_fn, embedded):
    eps = 1e-4
    grads = torch.zeros_like(embedded)
    with torch.no_grad():
        for i in range(embedded.shape[0]):
            for k in range(embedded.shape[1]):
                embedded[i, k] += eps
                up = loss_fn(embedded)
                embedded[i, k] -= 2 * eps
                down = loss_fn(embedded)
                embedded[i, k] += eps
                grads[i, k] = (up - down) / (2 * eps)
    return grads.norm(dim=1)


def gn_signed_sum_of_max(loss_fn, embedded):
    g = grad_backward(loss_fn, embedded)
    return g.max(dim=1).values + g.min(dim=1).values  # "biggest change", with signs


# ------------------------------------------------------------------------------ blind spots, by class
# Written before the grader was changed (issue 14): each class of input the old cases did not cover.


def enc_float32_inside(embedded, lengths, W_ih, W_hh, b_ih, b_hh):
    """nn.GRU left in float32, the result turned back into float64 at the end."""
    gru = load_gru(W_ih, W_hh, b_ih, b_hh, dtype=torch.float32)
    out, _ = gru(embedded.float())
    out = (out * pad_mask(lengths, embedded.shape[1]).float()).double()
    return out, out[torch.arange(out.shape[0]), lengths - 1]


def enc_padding_from_zero_embeddings(embedded, lengths, W_ih, W_hh, b_ih, b_hh):
    """Finds the padding by looking for embeddings that are all zero, instead of using lengths."""
    out, _ = load_gru(W_ih, W_hh, b_ih, b_hh)(embedded)
    real = (embedded.abs().sum(-1) > 0).unsqueeze(-1).double()
    out = out * real
    return out, out[torch.arange(out.shape[0]), lengths - 1]


def enc_functional_call(embedded, lengths, W_ih, W_hh, b_ih, b_hh):
    """Correct: nn.GRU run with the given tensors as its parameters (gradients reach them)."""
    gru = torch.nn.GRU(W_ih.shape[1], W_hh.shape[1], batch_first=True, dtype=embedded.dtype)
    params = {"weight_ih_l0": W_ih, "weight_hh_l0": W_hh, "bias_ih_l0": b_ih, "bias_hh_l0": b_hh}
    out, _ = torch.func.functional_call(gru, params, (embedded,))
    out = out * pad_mask(lengths, embedded.shape[1])
    return out, out[torch.arange(out.shape[0]), lengths - 1]


def enc_einsum_chunks(embedded, lengths, W_ih, W_hh, b_ih, b_hh):
    """Correct: the equations with einsum, all input projections at once, where() for padding."""
    B, N, _ = embedded.shape
    gates_x = torch.einsum("bne,ge->bng", embedded, W_ih) + b_ih  # (B, N, 3d)
    h = embedded.new_zeros(B, W_hh.shape[1])
    states = []
    for i in range(N):
        xr, xz, xn = gates_x[:, i].chunk(3, dim=1)
        hr, hz, hn = torch.einsum("bd,gd->bg", h, W_hh).add(b_hh).chunk(3, dim=1)
        r, z = torch.sigmoid(xr + hr), torch.sigmoid(xz + hz)
        h = (1 - z) * torch.tanh(xn + r * hn) + z * h
        states.append(torch.where((i < lengths)[:, None], h, torch.zeros_like(h)))
    H = torch.stack(states, 1)
    return H, H[torch.arange(B), lengths - 1]


def sizes_empty_has_nothing(n_words, d):
    if n_words == 0:  # "an empty sentence has nothing to encode"
        return 0, 0
    return d, (n_words + 1) * d


def greedy_skips_eos(step_fn, s_0, sos_id, eos_id, max_len):
    """`continue` where `break` was meant: <eos> is left out, decoding goes on."""
    out, y, s = [], sos_id, s_0
    for _ in range(max_len):
        logits, s = step_fn(y, s)
        y = int(logits.argmax())
        if y == eos_id:
            continue
        out.append(y)
    return out


def greedy_filters_eos_at_the_end(step_fn, s_0, sos_id, eos_id, max_len):
    """Decodes max_len steps, then removes every <eos>."""
    ys, y, s = [], sos_id, s_0
    for _ in range(max_len):
        logits, s = step_fn(y, s)
        y = int(logits.argmax())
        ys.append(y)
    return [t for t in ys if t != eos_id]


def greedy_checks_limit_after_step(step_fn, s_0, sos_id, eos_id, max_len):
    """Right for every max_len >= 1: the limit is checked after a word was added."""
    out, y, s = [], sos_id, s_0
    while True:
        logits, s = step_fn(y, s)
        y = int(logits.argmax())
        if y == eos_id:
            return out
        out.append(y)
        if len(out) >= max_len:
            return out


def acc_skips_empty_targets(predictions, targets, src_lengths, buckets):
    """Leaves out sentences whose target has no word ("nothing to score")."""
    keep = [k for k, t in enumerate(targets) if len(t) > 0]
    return acc_learner()(
        [predictions[k] for k in keep], [targets[k] for k in keep], [src_lengths[k] for k in keep], buckets
    )


def acc_strips_padding_id(predictions, targets, src_lengths, buckets):
    """Removes id 0 (<pad> in the book's vocabularies) from the predictions first."""
    cleaned = [[w for w in p if w != 0] for p in predictions]
    return acc_learner()(cleaned, targets, src_lengths, buckets)


def acc_cuts_at_eos_id(predictions, targets, src_lengths, buckets):
    """Cuts each prediction at id 2 (<eos> in the book's vocabularies)."""
    cut = [list(p)[: list(p).index(2)] if 2 in p else list(p) for p in predictions]
    return acc_learner()(cut, targets, src_lengths, buckets)


def acc_mean_of_sentences_words_only(predictions, targets, src_lengths, buckets):
    """Per-sentence share of right words, averaged: divides by len(target)."""
    out = []
    for lo, hi in buckets:
        rows = [(p, t) for p, t, n in zip(predictions, targets, src_lengths) if lo <= n <= hi]
        if not rows:
            out.append(None)
            continue
        token = sum(sum(a == b for a, b in zip(p, t)) / len(t) for p, t in rows) / len(rows)
        out.append((token, sum(p == t for p, t in rows) / len(rows)))
    return out


def gn_backward_into_input(loss_fn, embedded):
    """Switches on the input's own requires_grad and lets backward() fill embedded.grad."""
    embedded.requires_grad_(True)
    loss_fn(embedded).backward()
    return embedded.grad.norm(dim=-1)


def enc_candidate_biases_swapped(embedded, lengths, W_ih, W_hh, b_ih, b_hh):
    """Puts b_hn next to W_in x and b_in inside the reset gate's product."""
    B, N, _ = embedded.shape
    d = W_hh.shape[1]
    W_ir, W_iz, W_in = W_ih.split(d)
    W_hr, W_hz, W_hn = W_hh.split(d)
    b_ir, b_iz, b_in = b_ih.split(d)
    b_hr, b_hz, b_hn = b_hh.split(d)
    h = torch.zeros(B, d, dtype=embedded.dtype)
    H = []
    for i in range(N):
        x = embedded[:, i]
        r = torch.sigmoid(x @ W_ir.T + b_ir + h @ W_hr.T + b_hr)
        z = torch.sigmoid(x @ W_iz.T + b_iz + h @ W_hz.T + b_hz)
        n = torch.tanh(x @ W_in.T + b_hn + r * (h @ W_hn.T + b_in))
        h = (1 - z) * n + z * h
        H.append(h * (i < lengths).unsqueeze(1))
    H = torch.stack(H, 1)
    return H, H[torch.arange(B), lengths - 1]


def enc_relu_candidate(embedded, lengths, W_ih, W_hh, b_ih, b_hh):
    """ReLU for the candidate's tanh."""
    B, N, _ = embedded.shape
    h = torch.zeros(B, W_hh.shape[1], dtype=embedded.dtype)
    H = []
    for i in range(N):
        ir, iz, in_ = (embedded[:, i] @ W_ih.T + b_ih).chunk(3, -1)
        hr, hz, hn = (h @ W_hh.T + b_hh).chunk(3, -1)
        r, z = torch.sigmoid(ir + hr), torch.sigmoid(iz + hz)
        h = (1 - z) * torch.relu(in_ + r * hn) + z * h
        H.append(h * (i < lengths).unsqueeze(1))
    H = torch.stack(H, 1)
    return H, H[torch.arange(B), lengths - 1]


def sizes_eos_as_a_number(n_words, d):
    return d, n_words * d + 1  # "plus one for <eos>"


def sizes_added(n_words, d):
    return d, (n_words + 1) + d


def greedy_value_as_id(step_fn, s_0, sos_id, eos_id, max_len):
    out, y, s = [], sos_id, s_0
    for _ in range(max_len):
        logits, s = step_fn(y, s)
        y = int(torch.max(logits))  # "the best word"
        if y == eos_id:
            break
        out.append(y)
    return out


def acc_exact_ignores_extra_words(predictions, targets, src_lengths, buckets):
    """Exact when the prediction starts with the target (what comes after the target's end is ignored)."""
    out = []
    for lo, hi in buckets:
        rows = [(list(p), list(t)) for p, t, n in zip(predictions, targets, src_lengths) if lo <= n <= hi]
        if not rows:
            out.append(None)
            continue
        right = sum(
            sum(j < len(p) and p[j] == t[j] for j in range(len(t))) + (len(p) == len(t)) for p, t in rows
        )
        positions = sum(len(t) + 1 for _, t in rows)
        out.append((right / positions, sum(p[: len(t)] == t for p, t in rows) / len(rows)))
    return out


def acc_positions_of_the_longer(predictions, targets, src_lengths, buckets):
    out = []
    for lo, hi in buckets:
        rows = [(list(p), list(t)) for p, t, n in zip(predictions, targets, src_lengths) if lo <= n <= hi]
        if not rows:
            out.append(None)
            continue
        right = sum(sum(a == b for a, b in zip(p, t)) + (len(p) == len(t)) for p, t in rows)
        positions = sum(max(len(p), len(t)) + 1 for p, t in rows)
        out.append((right / positions, sum(p == t for p, t in rows) / len(rows)))
    return out


def gn_largest_component(loss_fn, embedded):
    return grad_backward(loss_fn, embedded).abs().max(dim=1).values


def gn_times_loss(loss_fn, embedded):
    x = embedded.detach().clone().requires_grad_(True)
    loss = loss_fn(x)
    (g,) = torch.autograd.grad(loss, x)
    return g.norm(dim=1) * abs(loss.item())


def gn_norm_in_float32(loss_fn, embedded):
    """The gradient in float64, its norm taken in float32."""
    return grad_backward(loss_fn, embedded).float().norm(dim=1).double()


# ------------------------------------------------------------------------------ the catalogue

WRONG = {
    "02.encoder_states": [
        ("nn.GRU's h_n as context", enc_final_hidden, "context_from_padding", "true last token"),
        ("H[:, -1] as context", enc_last_column, "context_from_padding", "lengths[b] - 1"),
        ("H[:, 0] as context", enc_first_column, "first_state", "first state h_1"),
        ("padding not masked", enc_no_mask, "padding_not_zeroed", "not zero at padded positions"),
        ("nn.GRU without batch_first", enc_forgot_batch_first, "batch_as_time", "batch_first=True"),
        ("reshape to (N, B, e) and back", enc_reshape_time_first, "reshape_not_transpose", "reshape/view"),
        ("view as time-first, stack properly", enc_view_per_step, "reshape_not_transpose", "reshape/view"),
        ("returns (h, h)", enc_returns_h_twice, "last_state_only", "every state h_1 … h_N"),
        ("H is the context repeated", enc_repeats_context, "last_state_only", "every row of your H"),
        ("outputs swapped", enc_context_first, "swapped_outputs", "H (B, N, d) first"),
        ("gates read as z, r, n", hand_gru(gate_order="zrn"), "gate_order", "reset r, update z, new n"),
        ("reset gate before W_hn", hand_gru(cho=True), "reset_gate_placement", "W_hn h + b_hn"),
        ("update gate the wrong way", hand_gru(swap_update=True), "update_gate_swapped", "weight 1 − z"),
        ("mean of the states as context", enc_mean_as_context, "context_not_last_state", "true last token"),
        ("float32 GRU", enc_float32_cell, "wrong_dtype", "float32"),
        ("zeroes the padding in place", enc_zeroes_padding_in_place, "mutates_input", "`embedded`"),
        ("lengths[b] instead of lengths[b] - 1", enc_one_past_the_end, "raised", "IndexError"),
        ("returns lists", enc_lists, "wrong_type", "torch.Tensor"),
        ("returns only the context", enc_context_only, "wrong_type", "2 values (H, context)"),
        ("float32 inside, float64 returned", enc_float32_inside, "float32_computation", "float32"),
        ("biases of n swapped", enc_candidate_biases_swapped, "swapped_n_biases", "biases swapped"),
        ("ReLU candidate", enc_relu_candidate, "wrong_activation", "tanh"),
        (
            "padding found by zero embeddings",
            enc_padding_from_zero_embeddings,
            "padding_not_zeroed",
            "lengths",
        ),
        ("weights copied into nn.GRU", enc_nn_gru, "breaks_autograd", "gradient"),
    ],
    "02.bottleneck_sizes": [
        (
            "context grows with the words",
            lambda n_words, d: ((n_words + 1) * d, (n_words + 1) * d),
            "context_grows",
            "does not grow",
        ),
        ("context = words × d", lambda n_words, d: (n_words * d, n_words * d), "context_grows", "bottleneck"),
        ("no <eos>", lambda n_words, d: (d, n_words * d), "forgot_eos", "<eos>"),
        ("vectors, not numbers", lambda n_words, d: (1, n_words + 1), "counted_vectors", "not numbers"),
        ("swapped", lambda n_words, d: (d * (n_words + 1), d), "swapped_outputs", "comes first"),
        ("one number", lambda n_words, d: d, "wrong_type", "2 values"),
        ("off by a lot", lambda n_words, d: (d, d * d), "wrong_values", "not what the check computes"),
        ("an empty sentence has nothing", sizes_empty_has_nothing, "empty_sentence", "<eos>"),
        ("<eos> as one number", sizes_eos_as_a_number, "eos_one_number", "one more position"),
        ("added, not multiplied", sizes_added, "added_not_multiplied", "multiply"),
    ],
    "02.greedy_decode": [
        ("never checks <eos>", greedy_no_eos_check, "ignores_eos", "does not stop at <eos>"),
        ("appends <eos> then stops", greedy_append_then_check, "includes_eos", "ends with <eos>"),
        ("keeps <sos> in front", greedy_starts_with_sos, "includes_sos", "starts with <sos>"),
        ("always feeds <sos>", greedy_always_sos, "no_feedback", "predicted at step t - 1"),
        ("always passes s_0", greedy_forgets_state, "state_not_carried", "s_{t-1}"),
        ("while len(out) <= max_len", greedy_le_max_len, "max_len_off_by_one", "max_len + 1"),
        ("range(1, max_len)", greedy_range_minus_one, "max_len_off_by_one", "max_len - 1"),
        ("argmin", greedy_argmin, "argmin", "argmax"),
        ("samples", greedy_samples, "not_argmax", "does not sample"),
        ("hard-coded <eos> = 2", greedy_hardcoded_eos, "hardcoded_ids", "eos_id"),
        ("hard-coded <sos> = 1", greedy_hardcoded_sos, "hardcoded_ids", "sos_id"),
        ("returns a tensor", greedy_tensor, "wrong_type", "expects a list"),
        (
            "ids outside the vocabulary",
            lambda step_fn, s_0, sos_id, eos_id, max_len: [99] * 3,
            "not_argmax",
            "not the most likely word",
        ),
        ("writes the state into s_0", greedy_overwrites_s0, "mutates_input", "`s_0`"),
        ("continue instead of break at <eos>", greedy_skips_eos, "continues_after_eos", "after <eos>"),
        ("removes <eos> at the end", greedy_filters_eos_at_the_end, "continues_after_eos", "after <eos>"),
        ("limit checked after the step", greedy_checks_limit_after_step, "max_len_zero", "max_len = 0"),
        ("the largest logit as the id", greedy_value_as_id, "argmax_value", "position"),
    ],
    "02.accuracy_by_length": [
        ("mean of sentence accuracies", acc_learner(per_sentence=True), "per_sentence_mean", "pools"),
        ("lo <= n < hi", acc_learner(upper_open=True), "bucket_bounds", "upper bound"),
        ("lo < n <= hi", acc_learner(lower_open=True), "bucket_bounds", "lower bound"),
        ("buckets by target length", acc_learner(by_target=True), "bucketed_by_target", "src_lengths"),
        ("zip up to the shorter", acc_learner(zip_only=True), "shorter_length", "shorter of the two"),
        ("prefix counts as exact", acc_learner(prefix_exact=True), "shorter_length", "whole lists"),
        ("words only, no end", acc_learner(words_only=True), "no_end_position", "T + 1"),
        ("empty bucket = 0", acc_learner(empty="zero"), "empty_bucket", "None"),
        ("empty bucket = nan", acc_learner(empty="nan"), "empty_bucket", "None"),
        ("empty bucket left out", acc_learner(empty="skip"), "empty_bucket", "one entry per bucket"),
        (
            "(sentence, token)",
            acc_learner(swap=True),
            "swapped_outputs",
            "(token_accuracy, sentence_accuracy)",
        ),
        ("0 / 0 on an empty bucket", acc_learner(empty="divide"), "raised", "ZeroDivisionError"),
        ("appends <eos> to the inputs", acc_appends_eos_in_place, "mutates_input", "`predictions`"),
        ("a tensor", acc_as_tensor, "wrong_type", "expects a list"),
        ("empty targets left out", acc_skips_empty_targets, "empty_target", "its end"),
        ("id 0 removed as padding", acc_strips_padding_id, "hardcoded_ids", "id 0"),
        ("cut at id 2 as <eos>", acc_cuts_at_eos_id, "hardcoded_ids", "id 2"),
        ("mean over words only", acc_mean_of_sentences_words_only, "per_sentence_mean", "end"),
        (
            "exact when it starts with the target",
            acc_exact_ignores_extra_words,
            "words_after_end",
            "not exact",
        ),
        ("positions of the longer list", acc_positions_of_the_longer, "longest_denominator", "longer"),
    ],
    "02.gradient_norms_by_position": [
        ("norm of the whole gradient", gn_total, "whole_norm", "shape (N,)"),
        ("norm over positions", gn_dim0, "wrong_axis", "its own components"),
        ("sum of the gradient", gn_sum, "signed_sum", "cancel"),
        ("sum of |gradient|", gn_abs_sum, "l1_norm", "L1"),
        ("squared norm", gn_squared, "squared_norm", "square root"),
        ("counted from the end", gn_from_the_end, "reversed", "reverse order"),
        ("norms of the embeddings", gn_input_norm, "norm_of_input", "gradient ∂L/∂x_i"),
        ("divided by the sum", gn_relative, "normalised", "sum of the norms"),
        ("divided by the max", gn_relative_max, "normalised", "largest norm"),
        ("max + min with signs", gn_signed_sum_of_max, "negative_norm", "never negative"),
        ("no requires_grad", gn_no_requires_grad, "raised", "RuntimeError"),
        ("floats through .item()", gn_python_floats, "wrong_dtype", "float32"),
        ("keepdim", gn_keepdim, "wrong_shape", "(N="),
        ("finite differences in place", gn_finite_differences_in_place, "mutates_input", "`embedded`"),
        ("requires_grad switched on the input", gn_ok_sqrt, "mutates_input", "requires_grad"),
        ("backward() into the input's .grad", gn_backward_into_input, "mutates_input", "requires_grad"),
        ("float32 norm", gn_norm_in_float32, "float32_computation", "float32"),
        ("largest component", gn_largest_component, "max_component", "Euclidean"),
        ("times the loss", gn_times_loss, "scaled_by_loss", "value of the loss"),
    ],
}

CORRECT = {
    "02.encoder_states": [enc_gru_cell, enc_functional_call, enc_einsum_chunks, hand_gru()],
    "02.bottleneck_sizes": [
        lambda n_words, d: (int(d), int(d * (n_words + 1))),
        lambda n_words, d: [float(d), float(d * n_words + d)],
    ],
    "02.greedy_decode": [greedy_ok_while, greedy_ok_tensors],
    "02.accuracy_by_length": [acc_ok_eos, acc_learner()],
    "02.gradient_norms_by_position": [gn_ok_backward],
}


def test_numpy_pair_for_an_empty_bucket_gets_a_message():
    import numpy as np

    def numpy_empty(predictions, targets, src_lengths, buckets):
        out = acc_learner()(predictions, targets, src_lengths, buckets)
        return [np.array([np.nan, np.nan]) if o is None else o for o in out]

    result = run_task(get_task("02.accuracy_by_length"), numpy_empty)
    assert not result.passed and "None" in result.message


def test_a_decoding_loop_without_max_len_is_stopped():
    task = dataclasses.replace(get_task("02.greedy_decode"), timeout_s=0.5)
    result = run_task(task, greedy_while_not_eos)
    assert result.diagnosis == "timeout"  # stopped once, or twice when the first case is the one that hangs
    assert "stopped after 0.5 s" in result.message or "after 0.5 s each time" in result.message
    assert "<eos> never comes" in result.message  # the case that needs max_len is named


def test_encoder_reference_equals_torch_gru():
    """The grader's encoder is torch.nn.GRU (batch_first) on every real position, for every case."""
    task = get_task("02.encoder_states")
    for case in task.cases():
        embedded, lengths, *weights = case.args
        H, context = task.reference(*case.args)
        with torch.no_grad():
            out, _ = load_gru(*weights)(embedded)
        valid = torch.arange(embedded.shape[1])[None, :] < lengths[:, None]
        torch.testing.assert_close(H[valid], out[valid])
        assert (H[~valid] == 0).all()
        torch.testing.assert_close(context, out[torch.arange(len(lengths)), lengths - 1])


def test_greedy_cases_stop_where_their_names_say():
    task = get_task("02.greedy_decode")
    lengths = {case.name: len(task.reference(*case.args)) for case in task.cases()}
    assert lengths == {
        "<eos> at step 4 of at most 10": 3,
        "<eos> late, at step 9 of at most 12": 8,
        "<eos> at step 3, words again after it": 2,
        "<eos> never comes, max_len = 6": 6,
        "<eos> at the first step": 0,
        "<eos> would come at step 6, max_len = 5": 5,
        "<eos> exactly at step max_len = 5": 4,
        "max_len = 0": 0,
    }


def test_accuracy_rule_is_the_one_of_evaluate_by_length():
    """Token accuracy pools the target's words and its <eos>, buckets include both bounds, empty ones
    have no score: the rule of attnbook.models.evaluate_by_length (which marks them nan, not None)."""
    models = pytest.importorskip("attnbook.models")
    if not hasattr(models, "evaluate_by_length"):
        pytest.skip("attnbook.models has no evaluate_by_length")
    from attnbook.data import Pair, Vocab

    task = get_task("02.accuracy_by_length")
    for case in task.cases():
        predictions, targets, src_lengths, buckets = case.args
        words = sorted({w for seq in predictions + targets for w in seq})
        vocab = Vocab([f"w{w}" for w in words])
        ids = {w: vocab.stoi[f"w{w}"] for w in words}
        pairs = [
            Pair(tuple("x" for _ in range(n)), tuple(f"w{w}" for w in t), tuple((0,) for _ in t))
            for n, t in zip(src_lengths, targets)
        ]

        class Replay(torch.nn.Module):  # "decodes" by handing out the predictions, in evaluation order
            src_vocab, tgt_vocab = Vocab(["x"]), vocab

            def greedy_decode(self, src, src_len, max_len=None):
                return [self.out.pop(0) for _ in range(src.shape[0])]

        model = Replay()
        order = sorted(range(len(pairs)), key=lambda k: len(pairs[k].src))  # evaluate_by_length's order
        model.out = [[ids[w] for w in predictions[k]] for k in order]
        scores = models.evaluate_by_length(model, pairs, buckets, batch_size=len(pairs))
        expected = task.reference(*case.args)
        for score, exp in zip(scores, expected):
            if exp is None:
                assert score.n == 0 and math.isnan(score.token_acc) and math.isnan(score.sentence_acc)
            else:
                assert math.isclose(score.token_acc, exp[0]) and math.isclose(score.sentence_acc, exp[1])
