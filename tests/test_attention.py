"""Property-based tests of ``attnbook.attention`` (hypothesis).

Each property is one claim the chapters make about attention: weights are a probability distribution over
the keys, masked keys get exactly 0, the softmax ignores a constant shift and never overflows, reordering
key/value pairs changes nothing, batch items do not talk to each other, and the package agrees with
PyTorch's own ``scaled_dot_product_attention`` and with explicit loops.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from hypothesis import given, settings
from hypothesis import strategies as st

from attnbook.attention import (
    additive_scores,
    attention_value,
    attention_weights,
    causal_mask,
    dot_scores,
    general_scores,
    padding_mask,
    scaled_dot_product_attention,
    scaled_dot_scores,
    softmax,
)

FAST = settings(max_examples=50, deadline=None)
DTYPE = torch.float64

sizes = st.integers(min_value=1, max_value=6)
seeds = st.integers(min_value=0, max_value=2**31 - 1)
scales = st.sampled_from([1e-3, 1.0, 10.0, 1e3])


def randn(seed: int, *shape: int, scale: float = 1.0) -> torch.Tensor:
    return torch.randn(shape, generator=torch.Generator().manual_seed(seed), dtype=DTYPE) * scale


def random_mask(seed: int, *shape: int, keep_one: bool = False) -> torch.Tensor:
    """Boolean ``shape``; with ``keep_one`` every row (last axis) keeps at least one key."""
    gen = torch.Generator().manual_seed(seed + 1)
    mask = torch.rand(shape, generator=gen) < 0.6
    if keep_one:
        first = torch.randint(shape[-1], shape[:-1], generator=gen)
        mask = mask | F.one_hot(first, shape[-1]).bool()
    return mask


# ------------------------------------------------------------------------------------------- softmax


@FAST
@given(seed=seeds, B=sizes, T_q=sizes, T_k=sizes, scale=scales)
def test_softmax_is_a_distribution_over_keys(seed, B, T_q, T_k, scale):
    scores = randn(seed, B, T_q, T_k, scale=scale)  # (B, T_q, T_k)
    alpha = softmax(scores)
    assert alpha.shape == (B, T_q, T_k)
    assert torch.isfinite(alpha).all()
    assert (alpha >= 0).all()
    torch.testing.assert_close(alpha.sum(-1), torch.ones(B, T_q, dtype=DTYPE), atol=1e-12, rtol=0)


@FAST
@given(seed=seeds, shape=st.lists(sizes, min_size=1, max_size=4), data=st.data())
def test_softmax_normalises_the_axis_it_is_given(seed, shape, data):
    dim = data.draw(st.integers(min_value=-len(shape), max_value=len(shape) - 1))
    x = randn(seed, *shape, scale=5.0)
    torch.testing.assert_close(softmax(x, dim=dim), torch.softmax(x, dim=dim), atol=1e-12, rtol=0)


@FAST
@given(seed=seeds, B=sizes, T_q=sizes, T_k=sizes, scale=scales)
def test_masked_entries_are_exactly_zero_and_rows_still_sum_to_one(seed, B, T_q, T_k, scale):
    scores = randn(seed, B, T_q, T_k, scale=scale)
    mask = random_mask(seed, B, T_q, T_k)  # some rows may be fully masked
    alpha = softmax(scores, mask=mask)
    assert torch.isfinite(alpha).all()
    assert (alpha[~mask] == 0).all()
    sums = alpha.sum(-1)  # (B, T_q)
    has_key = mask.any(-1)
    torch.testing.assert_close(sums[has_key], torch.ones_like(sums[has_key]), atol=1e-12, rtol=0)
    assert (sums[~has_key] == 0).all(), "a fully masked row must be all zeros, not NaN"


@FAST
@given(seed=seeds, T_q=sizes, T_k=sizes)
def test_fully_masked_rows_are_zero_not_nan(seed, T_q, T_k):
    scores = randn(seed, T_q, T_k, scale=1e3)
    mask = torch.zeros(T_q, T_k, dtype=torch.bool)
    alpha = softmax(scores, mask=mask)
    assert torch.equal(alpha, torch.zeros(T_q, T_k, dtype=DTYPE))


@FAST
@given(seed=seeds, T_q=sizes, T_k=sizes, shift=st.floats(min_value=-1e4, max_value=1e4))
def test_softmax_is_invariant_to_adding_a_constant(seed, T_q, T_k, shift):
    scores = randn(seed, T_q, T_k, scale=3.0)
    torch.testing.assert_close(softmax(scores + shift), softmax(scores), atol=1e-9, rtol=0)


@FAST
@given(seed=seeds, T_q=sizes, T_k=sizes, sign=st.sampled_from([-1.0, 1.0]))
def test_no_nan_for_scores_of_plus_minus_1e3(seed, T_q, T_k, sign):
    scores = sign * 1e3 + randn(seed, T_q, T_k)  # every score near +1e3 or near -1e3
    scores[0, 0] = -sign * 1e3  # and one from the other end
    alpha = softmax(scores)
    assert torch.isfinite(alpha).all()
    torch.testing.assert_close(alpha, torch.softmax(scores, dim=-1), atol=1e-12, rtol=0)
    naive = torch.exp(scores) / torch.exp(scores).sum(-1, keepdim=True)
    assert torch.isnan(naive).any(), "the naive formula overflows (or underflows to 0/0) on these scores"


@FAST
@given(seed=seeds, B=sizes, T_q=sizes, T_k=sizes)
def test_attention_weights_is_softmax_over_the_key_axis(seed, B, T_q, T_k):
    scores = randn(seed, B, T_q, T_k)
    mask = random_mask(seed, B, 1, T_k)  # (B, 1, T_k) broadcasts over queries
    torch.testing.assert_close(attention_weights(scores, mask), softmax(scores, dim=-1, mask=mask))


# ------------------------------------------------------------------------------------------- scores


@FAST
@given(seed=seeds, B=sizes, T_q=sizes, T_k=sizes, d=sizes)
def test_dot_and_scaled_scores_shapes_and_values(seed, B, T_q, T_k, d):
    Q, K = randn(seed, B, T_q, d), randn(seed + 1, B, T_k, d)
    e = dot_scores(Q, K)
    assert e.shape == (B, T_q, T_k)
    loop = torch.empty(B, T_q, T_k, dtype=DTYPE)
    for b in range(B):
        for q in range(T_q):
            for k in range(T_k):
                loop[b, q, k] = sum(Q[b, q, j] * K[b, k, j] for j in range(d))
    torch.testing.assert_close(e, loop)
    torch.testing.assert_close(scaled_dot_scores(Q, K), loop / math.sqrt(d))


@FAST
@given(seed=seeds, N=sizes, d=sizes)
def test_single_query_scores_have_one_entry_per_source_position(seed, N, d):
    s_t, H = randn(seed, d), randn(seed + 1, N, d)  # s_t (d,), H (N, d)
    e_t = dot_scores(s_t, H)
    assert e_t.shape == (N,)
    torch.testing.assert_close(e_t, torch.stack([s_t @ H[i] for i in range(N)]))
    torch.testing.assert_close(scaled_dot_scores(s_t, H), e_t / math.sqrt(d))
    torch.testing.assert_close(dot_scores(s_t[None], H)[0], e_t)  # one query as a (1, d) stack


@FAST
@given(seed=seeds, B=sizes, T_q=sizes, T_k=sizes, d_q=sizes, d_k=sizes)
def test_general_scores_match_a_loop(seed, B, T_q, T_k, d_q, d_k):
    Q, K, W = randn(seed, B, T_q, d_q), randn(seed + 1, B, T_k, d_k), randn(seed + 2, d_q, d_k)
    e = general_scores(Q, K, W)
    assert e.shape == (B, T_q, T_k)
    loop = torch.empty(B, T_q, T_k, dtype=DTYPE)
    for b in range(B):
        for q in range(T_q):
            for k in range(T_k):
                loop[b, q, k] = Q[b, q] @ W @ K[b, k]
    torch.testing.assert_close(e, loop)
    torch.testing.assert_close(general_scores(Q[0, 0], K[0], W), loop[0, 0])  # single query (d_q,)


@FAST
@given(seed=seeds, B=sizes, T_q=sizes, T_k=sizes, d_q=sizes, d_k=sizes, d_a=sizes)
def test_additive_scores_match_a_loop(seed, B, T_q, T_k, d_q, d_k, d_a):
    Q, K = randn(seed, B, T_q, d_q), randn(seed + 1, B, T_k, d_k)
    W_q, W_k, w = randn(seed + 2, d_a, d_q), randn(seed + 3, d_a, d_k), randn(seed + 4, d_a)
    e = additive_scores(Q, K, W_q, W_k, w)
    assert e.shape == (B, T_q, T_k)
    loop = torch.empty(B, T_q, T_k, dtype=DTYPE)
    for b in range(B):
        for q in range(T_q):
            for k in range(T_k):
                loop[b, q, k] = w @ torch.tanh(W_q @ Q[b, q] + W_k @ K[b, k])
    torch.testing.assert_close(e, loop)
    torch.testing.assert_close(additive_scores(Q[0, 0], K[0], W_q, W_k, w), loop[0, 0])  # single query


# ------------------------------------------------------------------------------------------- value


@FAST
@given(seed=seeds, B=sizes, T_q=sizes, T_k=sizes, d_v=sizes)
def test_attention_value_is_the_weighted_sum_of_the_values(seed, B, T_q, T_k, d_v):
    alpha = softmax(randn(seed, B, T_q, T_k))  # (B, T_q, T_k)
    V = randn(seed + 1, B, T_k, d_v)  # (B, T_k, d_v)
    a = attention_value(alpha, V)
    assert a.shape == (B, T_q, d_v)
    loop = torch.zeros(B, T_q, d_v, dtype=DTYPE)
    for i in range(T_k):
        loop += alpha[..., i : i + 1] * V[:, i : i + 1, :]
    torch.testing.assert_close(a, loop)
    torch.testing.assert_close(attention_value(alpha[0, 0], V[0]), loop[0, 0])  # single query


@FAST
@given(seed=seeds, B=sizes, T_q=sizes, T_k=sizes, d_k=sizes, d_v=sizes)
def test_permuting_key_value_pairs_leaves_the_value_unchanged(seed, B, T_q, T_k, d_k, d_v):
    Q, K, V = randn(seed, B, T_q, d_k), randn(seed + 1, B, T_k, d_k), randn(seed + 2, B, T_k, d_v)
    mask = random_mask(seed, B, 1, T_k)
    perm = torch.randperm(T_k, generator=torch.Generator().manual_seed(seed))
    out, w = scaled_dot_product_attention(Q, K, V, mask)
    out_p, w_p = scaled_dot_product_attention(Q, K[:, perm], V[:, perm], mask[..., perm])
    torch.testing.assert_close(out_p, out)
    torch.testing.assert_close(w_p, w[..., perm])  # the weights move with their keys


@FAST
@given(seed=seeds, B=st.integers(min_value=2, max_value=5), T_q=sizes, T_k=sizes, d_k=sizes, d_v=sizes)
def test_batch_items_are_independent(seed, B, T_q, T_k, d_k, d_v):
    Q, K, V = randn(seed, B, T_q, d_k), randn(seed + 1, B, T_k, d_k), randn(seed + 2, B, T_k, d_v)
    mask = random_mask(seed, B, T_q, T_k)
    out, w = scaled_dot_product_attention(Q, K, V, mask)
    for b in range(B):
        out_b, w_b = scaled_dot_product_attention(Q[b], K[b], V[b], mask[b])
        torch.testing.assert_close(out[b], out_b)
        torch.testing.assert_close(w[b], w_b)
    # changing one item's keys changes no other item
    K2 = K.clone()
    K2[0] = randn(seed + 3, T_k, d_k)
    out2, _ = scaled_dot_product_attention(Q, K2, V, mask)
    torch.testing.assert_close(out2[1:], out[1:])


@FAST
@given(
    seed=seeds,
    lead=st.lists(sizes, min_size=0, max_size=2),
    T_q=sizes,
    T_k=sizes,
    d_k=sizes,
    d_v=sizes,
    mask_kind=st.sampled_from(["none", "full", "padding", "causal"]),
)
def test_scaled_dot_product_attention_equals_pytorch(seed, lead, T_q, T_k, d_k, d_v, mask_kind):
    Q = randn(seed, *lead, T_q, d_k)  # (..., T_q, d_k)
    K = randn(seed + 1, *lead, T_k, d_k)  # (..., T_k, d_k)
    V = randn(seed + 2, *lead, T_k, d_v)  # (..., T_k, d_v)
    if mask_kind == "none":
        mask = None
    elif mask_kind == "full":
        mask = random_mask(seed, *lead, T_q, T_k, keep_one=True)
    elif mask_kind == "padding":
        mask = random_mask(seed, *lead, 1, T_k, keep_one=True)  # broadcasts over the queries
    else:
        mask = causal_mask(T_q, T_k)  # row 0 keeps key 0: no fully masked row
    out, weights = scaled_dot_product_attention(Q, K, V, mask)
    expected = F.scaled_dot_product_attention(Q, K, V, attn_mask=mask)
    assert out.shape == (*lead, T_q, d_v)
    assert weights.shape == (*lead, T_q, T_k)
    torch.testing.assert_close(out, expected, atol=1e-6, rtol=1e-6)


# ------------------------------------------------------------------------------------------- masks


@FAST
@given(lengths=st.lists(st.integers(min_value=0, max_value=7), min_size=1, max_size=5))
def test_padding_mask_keeps_exactly_the_first_length_keys(lengths):
    T_k = max(lengths) + 1
    mask = padding_mask(torch.tensor(lengths), T_k)
    assert mask.shape == (len(lengths), 1, T_k) and mask.dtype == torch.bool
    for b, n in enumerate(lengths):
        assert mask[b, 0].tolist() == [True] * n + [False] * (T_k - n)


@FAST
@given(T_q=sizes, T_k=st.one_of(st.none(), sizes))
def test_causal_mask_is_lower_triangular(T_q, T_k):
    mask = causal_mask(T_q, T_k)
    T_k = T_q if T_k is None else T_k
    assert mask.shape == (T_q, T_k)
    for i in range(T_q):
        for j in range(T_k):
            assert bool(mask[i, j]) == (j <= i)
