"""attnbook.bottleneck: a context vector of k numbers, encoder and decoder fixed."""

import pytest
import torch

from attnbook.bottleneck import BottleneckSeq2Seq, relative_drop
from attnbook.data import Vocab, make_batch, make_splits
from attnbook.models import Seq2Seq


@pytest.fixture(scope="module")
def data():
    splits = make_splits(40, 5, 5, seed=3)
    src_vocab = Vocab.build(p.src for p in splits.train)
    tgt_vocab = Vocab.build(p.tgt for p in splits.train)
    return splits, src_vocab, tgt_vocab, make_batch(splits.train[:6], src_vocab, tgt_vocab)


def test_full_size_is_the_plain_model(data):
    """k = d: the same parameters (same seed) and the same logits as Seq2Seq."""
    _, src_vocab, tgt_vocab, batch = data
    torch.manual_seed(0)
    squeezed = BottleneckSeq2Seq(src_vocab, tgt_vocab, context_size=16, emb=8, hidden=16)
    torch.manual_seed(0)
    plain = Seq2Seq(src_vocab, tgt_vocab, emb=8, hidden=16)
    assert sum(p.numel() for p in squeezed.parameters()) == sum(p.numel() for p in plain.parameters())
    torch.testing.assert_close(squeezed(batch), plain(batch))


def test_only_k_numbers_reach_the_decoder(data):
    _, src_vocab, tgt_vocab, batch = data
    torch.manual_seed(0)
    model = BottleneckSeq2Seq(src_vocab, tgt_vocab, context_size=3, emb=8, hidden=16)
    H, c = model.encoder(batch.src, batch.src_len)
    H_inner, last = model.encoder.inner(batch.src, batch.src_len)
    torch.testing.assert_close(H, H_inner)  # the states themselves are untouched
    torch.testing.assert_close(c[:, :3], last[:, :3])
    assert (c[:, 3:] == 0).all() and (last[:, 3:] != 0).any()


def test_the_other_numbers_change_nothing(data):
    """Replacing the numbers of h_N after the first k leaves the logits unchanged."""
    _, src_vocab, tgt_vocab, batch = data
    torch.manual_seed(0)
    model = BottleneckSeq2Seq(src_vocab, tgt_vocab, context_size=4, emb=8, hidden=16)
    inner = model.encoder.inner
    logits = model(batch)
    original = inner.forward

    def noisy(src, src_len, embedded=None):
        H, last = original(src, src_len, embedded)
        return H, torch.cat([last[:, :4], torch.randn_like(last[:, 4:])], dim=-1)

    inner.forward = noisy
    torch.testing.assert_close(model(batch), logits)


def test_gradients_and_decoding_work(data):
    _, src_vocab, tgt_vocab, batch = data
    model = BottleneckSeq2Seq(src_vocab, tgt_vocab, context_size=2, emb=8, hidden=16)
    x = model.encoder.embedding(batch.src).detach().requires_grad_(True)
    model(batch, embedded=x).sum().backward()
    assert x.grad is not None and x.grad.abs().sum() > 0
    out = model.greedy_decode(batch.src, batch.src_len, max_len=5)
    assert len(out) == len(batch) and all(len(o) <= 5 for o in out)


@pytest.mark.parametrize("k", [0, 17])
def test_context_size_must_fit(data, k):
    _, src_vocab, tgt_vocab, _ = data
    with pytest.raises(ValueError, match="context_size"):
        BottleneckSeq2Seq(src_vocab, tgt_vocab, context_size=k, emb=8, hidden=16)


def test_relative_drop():
    assert relative_drop([4.0, 2.0, 1.0], last=1) == pytest.approx(0.5)
    assert relative_drop([4.0, 2.0, 1.0], last=2) == pytest.approx(0.75)
    with pytest.raises(ValueError):
        relative_drop([1.0], last=1)
