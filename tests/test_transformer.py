"""The book's Transformer: equal to PyTorch's layers with the same weights, masks honoured, step-by-step
decoding equal to teacher forcing, and the interface of the RNN models."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from attnbook.data import SEED_EXAMPLE, Vocab, make_batch, make_splits
from attnbook.models import evaluate_by_length, train
from attnbook.transformer import (
    DecoderLayer,
    EncoderLayer,
    FeedForward,
    Transformer,
    decoder_layer_from_torch,
    encoder_layer_from_torch,
)

D, H, FF = 12, 3, 20


def _lengths_mask(lengths, N):
    return torch.arange(N)[None, :] < torch.tensor(lengths)[:, None]  # (B, N), True = real


@pytest.mark.parametrize("norm_first", [False, True])
def test_encoder_layer_equals_pytorch(norm_first):
    torch.manual_seed(0)
    ref = nn.TransformerEncoderLayer(
        D, H, FF, dropout=0.0, batch_first=True, norm_first=norm_first, dtype=torch.float64
    ).eval()
    ours = encoder_layer_from_torch(ref)
    x = torch.randn(3, 7, D, dtype=torch.float64)
    mask = _lengths_mask([7, 4, 1], 7)
    expected = ref(x, src_key_padding_mask=~mask)
    got, weights = ours(x, mask)
    real = mask[:, :, None].expand_as(got)  # PyTorch's fast path may leave padded rows different
    assert torch.allclose(got[real], expected[real], atol=1e-10)
    assert weights.shape == (3, H, 7, 7)
    assert torch.all(weights.masked_select(~mask[:, None, None, :]) == 0)


@pytest.mark.parametrize("norm_first", [False, True])
def test_decoder_layer_equals_pytorch(norm_first):
    torch.manual_seed(1)
    ref = nn.TransformerDecoderLayer(
        D, H, FF, dropout=0.0, batch_first=True, norm_first=norm_first, dtype=torch.float64
    ).eval()
    ours = decoder_layer_from_torch(ref)
    y = torch.randn(2, 5, D, dtype=torch.float64)
    memory = torch.randn(2, 6, D, dtype=torch.float64)
    src_mask = _lengths_mask([6, 3], 6)
    causal = torch.ones(5, 5, dtype=torch.bool).tril()
    expected = ref(y, memory, tgt_mask=~causal, memory_key_padding_mask=~src_mask)
    got, self_w, cross_w = ours(y, memory, src_mask)
    assert torch.allclose(got, expected, atol=1e-10)
    assert torch.all(self_w.masked_select(~causal) == 0)  # no step looks ahead
    assert torch.all(cross_w.masked_select(~src_mask[:, None, None, :]) == 0)  # nor at padding
    assert torch.allclose(cross_w.sum(-1), torch.ones(2, H, 5, dtype=torch.float64))


def test_pytorch_layers_with_another_activation_are_refused():
    gelu = nn.TransformerEncoderLayer(D, H, FF, dropout=0.0, batch_first=True, activation="gelu")
    with pytest.raises(ValueError, match="ReLU"):
        encoder_layer_from_torch(gelu)
    with pytest.raises(ValueError, match="batch_first"):
        encoder_layer_from_torch(nn.TransformerEncoderLayer(D, H, FF, dropout=0.0))


def test_feed_forward_is_position_wise():
    torch.manual_seed(2)
    ff = FeedForward(D, FF)
    x = torch.randn(2, 4, D)
    out = ff(x)
    assert torch.allclose(out[:, 2], ff(x[:, 2:3])[:, 0], atol=1e-6)  # each position on its own
    assert torch.allclose(out, ff.W_2(torch.relu(ff.W_1(x))))


@pytest.fixture(scope="module")
def data():
    splits = make_splits(300, 10, 40, seed=3, max_clauses=2)
    src_vocab = Vocab.build(p.src for p in [*splits.train, *splits.test, SEED_EXAMPLE])
    tgt_vocab = Vocab.build(p.tgt for p in [*splits.train, *splits.test, SEED_EXAMPLE])
    return splits, src_vocab, tgt_vocab


@pytest.mark.parametrize("norm_first", [False, True])
def test_step_by_step_decoding_equals_teacher_forcing(data, norm_first):
    splits, sv, tv = data
    torch.manual_seed(0)
    model = Transformer(sv, tv, d_model=16, h=2, d_ff=24, n_layers=2, norm_first=norm_first).eval()
    batch = make_batch(splits.test[:6], sv, tv)
    with torch.no_grad():
        logits, crosses = model(batch, return_attention=True)  # (B, T, n_vocab), n_layers x (B, h, T, N)
        memory, src_mask = model.encode(batch.src, batch.src_len)
        cache = model.new_cache()
        steps = [
            model.decode_step(batch.tgt_in[:, t], t, memory, src_mask, cache)
            for t in range(batch.tgt_in.shape[1])
        ]
    step_logits = torch.stack([s[0] for s in steps], 1)
    assert torch.allclose(step_logits, logits, atol=1e-5)
    for k in range(2):
        assert torch.allclose(torch.stack([s[1][k] for s in steps], 2), crosses[k], atol=1e-6)
    assert len(crosses) == 2 and crosses[0].shape == (6, 2, *batch.align.shape[1:])


def test_given_cross_weights_replace_the_model_s_own(data):
    splits, sv, tv = data
    torch.manual_seed(0)
    model = Transformer(sv, tv, d_model=16, h=2, d_ff=24, n_layers=2).eval()
    batch = make_batch(splits.test[:4], sv, tv)
    with torch.no_grad():
        logits, crosses = model(batch, return_attention=True)
        memory, src_mask = model.encode(batch.src, batch.src_len)
        same, _ = model.decode(batch.tgt_in, memory, src_mask, cross_weights={1: crosses[1]})
        uniform = src_mask[:, None, None, :].float().expand_as(crosses[1])
        uniform = uniform / uniform.sum(-1, keepdim=True)
        other, used = model.decode(batch.tgt_in, memory, src_mask, cross_weights={1: uniform})
    assert torch.allclose(same, logits, atol=1e-5)
    assert not torch.allclose(other, logits, atol=1e-3)
    assert torch.equal(used[1], uniform) and torch.allclose(used[0], crosses[0])


def test_trains_with_the_rnn_loop_and_is_scored_by_the_same_function(data):
    splits, sv, tv = data
    torch.manual_seed(0)
    model = Transformer(sv, tv, d_model=32, h=4, d_ff=64, n_layers=1)
    before = evaluate_by_length(model, splits.test, [(1, 60)])[0]
    history = train(model, splits.train, epochs=6, batch_size=32, lr=5e-3, progress=False)
    assert history["loss"][-1] < history["loss"][0] / 2
    after = evaluate_by_length(model, splits.test, [(1, 60)])[0]
    assert after.n == len(splits.test) and after.token_acc > before.token_acc + 0.05
    ids, steps = model.greedy_decode(
        torch.tensor([sv.encode(SEED_EXAMPLE.src)]), torch.tensor([5]), max_len=7
    )
    assert len(ids) == 1 and steps <= 7 and len(ids[0]) <= 7


def test_sizes_are_checked():
    with pytest.raises(ValueError):
        Transformer(10, 10, d_model=10, h=3)
    model = Transformer(10, 10, d_model=8, h=2, max_len=4)
    with pytest.raises(ValueError, match="position table"):
        model.embed(torch.zeros(1, 5, dtype=torch.long), model.src_embedding)
    assert isinstance(model.encoder_layers[0], EncoderLayer) and isinstance(
        model.decoder_layers[0], DecoderLayer
    )
