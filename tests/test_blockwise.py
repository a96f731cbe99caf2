"""attnbook.blockwise: the online softmax equals the full computation for every block size."""

from __future__ import annotations

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from attnbook.attention import causal_mask, padding_mask, scaled_dot_product_attention
from attnbook.blockwise import online_softmax_attention, peak_intermediate_elements, running_max_sum

F64 = torch.float64
SETTINGS = settings(max_examples=60, deadline=None)


def _randn(seed: int, *shape: int, scale: float = 1.0) -> torch.Tensor:
    return torch.randn(shape, generator=torch.Generator().manual_seed(seed), dtype=F64) * scale


shapes = st.fixed_dictionaries(
    {
        "B": st.integers(1, 3),
        "T_q": st.integers(1, 7),
        "T_k": st.integers(1, 13),
        "d_k": st.integers(1, 5),
        "d_v": st.integers(1, 6),
    }
)


@SETTINGS
@given(
    s=shapes,
    block=st.integers(1, 16),
    scale=st.sampled_from([0.1, 1.0, 5.0, 300.0]),
    seed=st.integers(0, 10**6),
)
def test_equals_full_attention_for_every_block_size(s, block, scale, seed):
    Q = _randn(seed, s["B"], s["T_q"], s["d_k"], scale=scale)
    K = _randn(seed + 1, s["B"], s["T_k"], s["d_k"])
    V = _randn(seed + 2, s["B"], s["T_k"], s["d_v"])
    expected, _ = scaled_dot_product_attention(Q, K, V)
    got = online_softmax_attention(Q, K, V, block)
    assert got.shape == (s["B"], s["T_q"], s["d_v"])
    torch.testing.assert_close(got, expected, atol=1e-10, rtol=1e-10)


@SETTINGS
@given(s=shapes, block=st.integers(1, 16), causal=st.booleans(), data=st.data(), seed=st.integers(0, 10**6))
def test_equals_full_attention_with_masks(s, block, causal, data, seed):
    """Padding masks with different valid lengths (0 included) and causal masks."""
    lengths = torch.tensor(data.draw(st.lists(st.integers(0, s["T_k"]), min_size=s["B"], max_size=s["B"])))
    mask = padding_mask(lengths, s["T_k"])  # (B, 1, T_k)
    if causal:
        mask = mask & causal_mask(s["T_q"], s["T_k"])  # (B, T_q, T_k)
    Q = _randn(seed, s["B"], s["T_q"], s["d_k"], scale=3.0)
    K = _randn(seed + 1, s["B"], s["T_k"], s["d_k"])
    V = _randn(seed + 2, s["B"], s["T_k"], s["d_v"])
    expected, _ = scaled_dot_product_attention(Q, K, V, mask)
    got = online_softmax_attention(Q, K, V, block, mask)
    assert torch.isfinite(got).all()
    torch.testing.assert_close(got, expected, atol=1e-10, rtol=1e-10)


def test_mask_with_key_axis_one_and_heads():
    Q, K, V = _randn(0, 2, 3, 4, 5), _randn(1, 2, 3, 9, 5), _randn(2, 2, 3, 9, 2)
    mask = torch.tensor([True, False])[:, None, None, None]  # (B, 1, 1, 1): broadcast on every axis
    for block in (1, 4, 9):
        torch.testing.assert_close(
            online_softmax_attention(Q, K, V, block, mask),
            scaled_dot_product_attention(Q, K, V, mask)[0],
            atol=1e-10,
            rtol=1e-10,
        )


def test_equals_torch_sdpa():
    Q, K, V = _randn(0, 2, 5, 3), _randn(1, 2, 11, 3), _randn(2, 2, 11, 4)
    mask = padding_mask(torch.tensor([4, 11]), 11)
    expected = torch.nn.functional.scaled_dot_product_attention(Q, K, V, attn_mask=mask)
    torch.testing.assert_close(online_softmax_attention(Q, K, V, 3, mask), expected, atol=1e-10, rtol=1e-10)


def test_large_scores_give_no_nan():
    Q, K, V = _randn(0, 1, 4, 3, scale=1e3), _randn(1, 1, 10, 3, scale=1e3), _randn(2, 1, 10, 2)
    got = online_softmax_attention(Q, K, V, 3)
    assert torch.isfinite(got).all()
    torch.testing.assert_close(got, scaled_dot_product_attention(Q, K, V)[0], atol=1e-10, rtol=1e-10)


def test_gradients_equal_full_attention():
    Q, K, V = (_randn(i, 2, 4, 3).requires_grad_() for i in range(3))
    mask = padding_mask(torch.tensor([2, 4]), 4)
    online_softmax_attention(Q, K, V, 3, mask).square().sum().backward()
    grads = [t.grad.clone() for t in (Q, K, V)]
    for t in (Q, K, V):
        t.grad = None
    scaled_dot_product_attention(Q, K, V, mask)[0].square().sum().backward()
    for g, t in zip(grads, (Q, K, V)):
        torch.testing.assert_close(g, t.grad, atol=1e-10, rtol=1e-10)


@SETTINGS
@given(
    rows=st.integers(1, 4),
    T_k=st.integers(1, 20),
    block=st.integers(1, 25),
    seed=st.integers(0, 10**6),
    scale=st.sampled_from([1.0, 1e3]),
)
def test_running_max_sum(rows, T_k, block, seed, scale):
    scores = _randn(seed, rows, T_k, scale=scale)
    m, l = running_max_sum(scores, block)
    assert m.shape == l.shape == (rows,)
    torch.testing.assert_close(m, scores.amax(-1), atol=0, rtol=0)
    torch.testing.assert_close(m + l.log(), scores.logsumexp(-1), atol=1e-10, rtol=1e-10)


def test_running_max_sum_with_masked_entries():
    scores = torch.tensor([[float("-inf")] * 3, [1.0, float("-inf"), 2.0]], dtype=F64)
    m, l = running_max_sum(scores, 2)
    assert m[0] == float("-inf") and l[0] == 0
    torch.testing.assert_close(m[1] + l[1].log(), scores[1].logsumexp(-1))


def test_block_size_must_be_positive():
    with pytest.raises(ValueError):
        online_softmax_attention(torch.zeros(1, 2), torch.zeros(3, 2), torch.zeros(3, 2), 0)
    with pytest.raises(ValueError):
        running_max_sum(torch.zeros(3), 0)


def test_peak_intermediates_grow_linearly_with_blocks_and_quadratically_without():
    sizes = [256, 512, 1024, 2048]
    full = [peak_intermediate_elements(T, T, 64) for T in sizes]
    blocked = [peak_intermediate_elements(T, T, 64, block_size=128) for T in sizes]
    for a, b in zip(full, full[1:]):
        assert 3.5 < b / a <= 4
    for a, b in zip(blocked, blocked[1:]):
        assert b == 2 * a


# ---------------------------------------------------------------------------------------------- ScoreWatch


def test_watch_records_the_widest_block_of_scores():
    from attnbook.blockwise import watch_scores

    T, block = 50, 16
    Q, K, V = watch_scores([_randn(s, 1, T, 8) for s in (1, 2, 3)], rows=T, exempt=(8,))
    online_softmax_attention(Q, K, V, block)
    assert max(type(Q).widths) == block
    Q, K, V = watch_scores([_randn(s, 1, T, 8) for s in (1, 2, 3)], rows=T, exempt=(8,))
    scaled_dot_product_attention(Q, K, V)
    assert max(type(Q).widths) == T


def test_watch_outside_only_records_callers_outside_the_package_and_reports_back():
    from attnbook.blockwise import watch_scores

    seen = []
    (scores,) = watch_scores(
        [_randn(4, 3, 10)], rows=3, outside_only=True, on_inside=lambda w: seen.append(list(w.widths))
    )
    scores[:, :4].exp()  # this test is outside the package: recorded
    assert set(type(scores).widths) == {4}  # the slice and its exponential
    before = list(type(scores).widths)
    running_max_sum(scores, 10)  # the package's code: not recorded, and it reports what came before
    assert seen == [before]
    assert type(scores).widths == before


def test_watched_tensors_copy_and_compare_like_tensors():
    import copy

    from attnbook.blockwise import watch_scores

    (x,) = watch_scores([_randn(5, 2, 7)], rows=2)
    y = copy.deepcopy(x)
    assert torch.equal(y, x) and y.dtype == F64
    assert torch.allclose((x * 2).sum(), 2 * x.as_subclass(torch.Tensor).sum())
