"""attnbook.multihead: head splitting, equality with torch.nn.MultiheadAttention, permutation equivariance."""

from __future__ import annotations

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from attnbook.attention import causal_mask, scaled_dot_product_attention
from attnbook.multihead import (
    MultiHeadAttention,
    load_from_torch,
    merge_heads,
    sinusoidal_positions,
    split_heads,
)

F64 = torch.float64
SETTINGS = settings(max_examples=40, deadline=None)


def _randn(seed: int, *shape: int) -> torch.Tensor:
    return torch.randn(shape, generator=torch.Generator().manual_seed(seed), dtype=F64)


def _torch_mha(
    d_model: int, h: int, seed: int, kdim=None, vdim=None, bias=True
) -> torch.nn.MultiheadAttention:
    torch.manual_seed(seed)
    mha = torch.nn.MultiheadAttention(
        d_model, h, kdim=kdim, vdim=vdim, bias=bias, batch_first=True, dtype=F64
    )
    with torch.no_grad():  # non-zero biases, so that a bias copied to the wrong projection is noticed
        for name, p in mha.named_parameters():
            if "bias" in name:
                p.copy_(torch.randn_like(p))
    return mha.eval()


# ---------------------------------------------------------------------------------------------- heads


@SETTINGS
@given(
    B=st.integers(1, 3),
    T=st.integers(1, 5),
    h=st.integers(1, 4),
    d_k=st.integers(1, 4),
    seed=st.integers(0, 99),
)
def test_split_heads_puts_each_slice_of_features_in_its_head(B, T, h, d_k, seed):
    x = _randn(seed, B, T, h * d_k)
    heads = split_heads(x, h)
    assert heads.shape == (B, h, T, d_k)
    for j in range(h):
        assert torch.equal(heads[:, j], x[:, :, j * d_k : (j + 1) * d_k])
    assert heads.data_ptr() == x.data_ptr()  # a view, no copy
    assert torch.equal(merge_heads(heads), x)


def test_split_heads_is_not_a_bare_reshape():
    x = torch.arange(2 * 3 * 4, dtype=F64).reshape(2, 3, 4)  # B=2, T=3, h=2, d_k=2
    assert not torch.equal(split_heads(x, 2), x.reshape(2, 2, 3, 2))


def test_split_heads_rejects_indivisible_width():
    with pytest.raises(ValueError, match="divisible"):
        split_heads(torch.zeros(1, 2, 5), 2)


# ---------------------------------------------------------------------------------------------- vs torch


@SETTINGS
@given(
    B=st.integers(1, 3),
    T_q=st.integers(1, 6),
    T_k=st.integers(1, 6),
    h=st.integers(1, 3),
    d_k=st.integers(1, 4),
    bias=st.booleans(),
    seed=st.integers(0, 10_000),
)
def test_equals_torch_multihead_attention_without_masks(B, T_q, T_k, h, d_k, bias, seed):
    d_model = h * d_k
    mha = _torch_mha(d_model, h, seed, bias=bias)
    ours = load_from_torch(mha)
    q, k, v = (
        _randn(seed, B, T_q, d_model),
        _randn(seed + 1, B, T_k, d_model),
        _randn(seed + 2, B, T_k, d_model),
    )
    out, weights = ours(q, k, v)
    expected, expected_weights = mha(q, k, v, average_attn_weights=False)
    assert out.shape == (B, T_q, d_model) and weights.shape == (B, h, T_q, T_k)
    torch.testing.assert_close(out, expected, atol=1e-6, rtol=1e-6)
    torch.testing.assert_close(weights, expected_weights, atol=1e-6, rtol=1e-6)


@SETTINGS
@given(
    B=st.integers(1, 3),
    T=st.integers(1, 6),
    h=st.integers(1, 3),
    d_k=st.integers(1, 4),
    data=st.data(),
    causal=st.booleans(),
    seed=st.integers(0, 10_000),
)
def test_equals_torch_multihead_attention_with_masks(B, T, h, d_k, data, causal, seed):
    """Self-attention with a padding mask (every sequence keeps >= 1 key) and optionally a causal mask."""
    d_model = h * d_k
    lengths = torch.tensor(data.draw(st.lists(st.integers(1, T), min_size=B, max_size=B)))
    key_padding = torch.arange(T)[None, :] < lengths[:, None]  # (B, T), True = real token
    attn_mask = causal_mask(T) if causal else None
    mha = _torch_mha(d_model, h, seed)
    ours = load_from_torch(mha)
    x = _randn(seed, B, T, d_model)
    out, weights = ours(x, x, x, key_padding_mask=key_padding, attn_mask=attn_mask)
    # torch's boolean masks mean the opposite: True = NOT allowed.
    expected, expected_weights = mha(
        x,
        x,
        x,
        key_padding_mask=~key_padding,
        attn_mask=None if attn_mask is None else ~attn_mask,
        average_attn_weights=False,
    )
    # with a causal mask, query t sees only keys <= t: if they are all padding the row is empty (book: 0,
    # torch: NaN), so compare the rows that have at least one key
    valid = (key_padding[:, None, :] & (attn_mask if causal else torch.ones(T, T, dtype=torch.bool))).any(-1)
    torch.testing.assert_close(out[valid], expected[valid], atol=1e-6, rtol=1e-6)
    torch.testing.assert_close(
        weights.transpose(1, 2)[valid], expected_weights.transpose(1, 2)[valid], atol=1e-6, rtol=1e-6
    )
    assert (weights.masked_select(~key_padding[:, None, None, :].expand_as(weights)) == 0).all()


def test_equals_torch_with_different_key_and_value_widths():
    mha = _torch_mha(6, 2, seed=3, kdim=5, vdim=7)
    ours = load_from_torch(mha)
    q, k, v = _randn(1, 2, 3, 6), _randn(2, 2, 4, 5), _randn(3, 2, 4, 7)
    torch.testing.assert_close(ours(q, k, v)[0], mha(q, k, v)[0], atol=1e-6, rtol=1e-6)


def test_gradients_equal_torch():
    mha = _torch_mha(8, 2, seed=5)
    ours = load_from_torch(mha)
    x = _randn(0, 2, 5, 8)
    ours(x, x, x)[0].square().sum().backward()
    mha(x, x, x)[0].square().sum().backward()
    torch.testing.assert_close(ours.W_o.weight.grad, mha.out_proj.weight.grad, atol=1e-6, rtol=1e-6)
    torch.testing.assert_close(
        torch.cat([ours.W_q.weight.grad, ours.W_k.weight.grad, ours.W_v.weight.grad]),
        mha.in_proj_weight.grad,
        atol=1e-6,
        rtol=1e-6,
    )


def test_heads_are_independent_attentions():
    """Each head's output is scaled dot-product attention on its slice of the projections (scale √d_k)."""
    torch.manual_seed(0)
    mha = MultiHeadAttention(12, 3, dtype=F64)
    x = _randn(4, 2, 5, 12)
    _, weights = mha(x, x, x)
    with torch.no_grad():
        q, k = mha.W_q(x), mha.W_k(x)
        for j in range(3):
            sl = slice(4 * j, 4 * (j + 1))
            _, w = scaled_dot_product_attention(q[..., sl], k[..., sl], k[..., sl])
            torch.testing.assert_close(weights[:, j], w)


def test_need_weights_false_and_mask_types():
    mha = MultiHeadAttention(4, 2)
    x = torch.randn(1, 3, 4)
    assert mha(x, x, x, need_weights=False)[1] is None
    with pytest.raises(TypeError, match="boolean"):
        mha(x, x, x, attn_mask=torch.zeros(3, 3))
    with pytest.raises(TypeError, match="boolean"):
        mha(x, x, x, key_padding_mask=torch.ones(1, 3))


def test_fully_masked_query_gets_zero_weights_not_nan():
    mha = MultiHeadAttention(4, 2, dtype=F64)
    x = _randn(0, 1, 3, 4)
    out, weights = mha(x, x, x, key_padding_mask=torch.tensor([[False, False, False]]))
    assert torch.isfinite(out).all() and (weights == 0).all()


# ---------------------------------------------------------------------------------------------- order


@SETTINGS
@given(B=st.integers(1, 3), T=st.integers(2, 7), h=st.integers(1, 3), seed=st.integers(0, 10_000))
def test_self_attention_is_permutation_equivariant(B, T, h, seed):
    """Without positions, permuting the input positions permutes the outputs the same way."""
    torch.manual_seed(seed)
    mha = MultiHeadAttention(2 * h, h, dtype=F64)
    x = _randn(seed, B, T, 2 * h)
    perm = torch.randperm(T, generator=torch.Generator().manual_seed(seed))
    out, weights = mha(x, x, x)
    out_p, weights_p = mha(x[:, perm], x[:, perm], x[:, perm])
    torch.testing.assert_close(out_p, out[:, perm], atol=1e-10, rtol=1e-10)
    torch.testing.assert_close(weights_p, weights[:, :, perm][:, :, :, perm], atol=1e-10, rtol=1e-10)


def test_positions_break_permutation_equivariance():
    torch.manual_seed(0)
    mha = MultiHeadAttention(8, 2, dtype=F64)
    x = _randn(1, 1, 6, 8)
    P = sinusoidal_positions(6, 8, dtype=F64)
    perm = torch.tensor([5, 4, 3, 2, 1, 0])
    out = mha(x + P, x + P, x + P)[0]
    xp = x[:, perm] + P
    assert not torch.allclose(mha(xp, xp, xp)[0], out[:, perm], atol=1e-3)


def test_sinusoidal_positions():
    P = sinusoidal_positions(50, 7, dtype=F64)
    assert P.shape == (50, 7)
    assert torch.equal(P[0, 0::2], torch.zeros(4, dtype=F64)) and torch.equal(
        P[0, 1::2], torch.ones(3, dtype=F64)
    )
    torch.testing.assert_close(P[:, 0], torch.sin(torch.arange(50, dtype=F64)))
    torch.testing.assert_close(P[:, 3], torch.cos(torch.arange(50, dtype=F64) / 10000 ** (2 / 7)))
    assert torch.cdist(P, P).add(torch.eye(50, dtype=F64)).min() > 0.1  # every position distinct
    assert sinusoidal_positions(3, 4).dtype == torch.float32
