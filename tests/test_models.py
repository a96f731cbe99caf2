"""Tests of attnbook.models: shapes, padding invariance, decoding, attention weights, training."""

import dataclasses

import pytest
import torch

from attnbook.analysis import gru_cell, teacher_forced_predictions
from attnbook.data import EOS, PAD, SOS, Vocab, generate_corpus, make_batch, plan_batches
from attnbook.models import (
    BACKGROUND_NICENESS,
    OFFSET_SCALE,
    STANDARD,
    AttnSeq2Seq,
    BahdanauSeq2Seq,
    BucketScore,
    Encoder,
    Seq2Seq,
    _lr_factor,
    alignment_agreement,
    count_parameters,
    evaluate_by_length,
    exact_matches,
    position_bias,
    reverse_padded,
    source_mask,
    standard_data,
    train,
    train_in_background,
    train_side_by_side,
    train_standard,
    translate,
    validation_loss,
)

torch.set_num_threads(1)


@pytest.fixture(scope="module")
def data():
    pairs = generate_corpus(40, seed=0, max_clauses=2)
    sv = Vocab.build(p.src for p in pairs)
    tv = Vocab.build(p.tgt for p in pairs)
    return pairs, sv, tv


def models(sv, tv):
    torch.manual_seed(0)
    return [
        Seq2Seq(sv, tv, emb=8, hidden=12),
        Seq2Seq(sv, tv, emb=8, hidden=12, feed_context=False, cell="rnn"),
        AttnSeq2Seq(sv, tv, emb=8, hidden=12),
        AttnSeq2Seq(sv, tv, emb=8, hidden=12, bidirectional=False, input_feeding=True),
        BahdanauSeq2Seq(sv, tv, emb=8, hidden=12, attn_hidden=10),
        AttnSeq2Seq(sv, tv, emb=8, hidden=12, position_prior=1.5),
        AttnSeq2Seq(sv, tv, emb=8, hidden=12, bidirectional=False, input_feeding=True, position_prior=2.0),
        _with_offsets(AttnSeq2Seq(sv, tv, emb=8, hidden=12, offsets=2)),
    ]


def _with_offsets(model):
    """A model with learned offset numbers that are not all 0 (as after training)."""
    with torch.no_grad():
        model.offset_bias.copy_(torch.tensor([-0.3, 0.1, 0.4, 0.2, -0.5]))
    return model


def test_reverse_padded():
    X = torch.arange(12.0).view(2, 6)
    out = reverse_padded(X, torch.tensor([4, 6]))
    assert out.tolist() == [[3, 2, 1, 0, 4, 5], [11, 10, 9, 8, 7, 6]]
    assert torch.equal(reverse_padded(out, torch.tensor([4, 6])), X)


@pytest.mark.parametrize("bidirectional", [False, True])
def test_encoder_shapes_and_padding(data, bidirectional):
    pairs, sv, _ = data
    torch.manual_seed(0)
    enc = Encoder(sv, emb=8, hidden=12, bidirectional=bidirectional)
    b = make_batch(pairs[:5], sv, sv)
    H, c = enc(b.src, b.src_len)
    B, N = b.src.shape
    assert H.shape == (B, N, 12) and c.shape == (B, 12)
    mask = source_mask(b.src_len, N)
    assert (H[~mask] == 0).all()
    if not bidirectional:  # the context is h at the true last token (<eos>), not at the padding
        last = b.src_len - 1
        assert torch.allclose(c, H[torch.arange(B), last])


@pytest.mark.parametrize("bidirectional", [False, True])
def test_context_is_padding_invariant(data, bidirectional):
    """The same sentence alone and in a batch with a longer one gets the same H and context."""
    pairs, sv, _ = data
    short = min(pairs, key=lambda p: len(p.src))
    long = max(pairs, key=lambda p: len(p.src))
    torch.manual_seed(0)
    enc = Encoder(sv, emb=8, hidden=12, bidirectional=bidirectional)
    alone = make_batch([short], sv, sv)
    padded = make_batch([short, long], sv, sv)
    assert padded.src.shape[1] > alone.src.shape[1]
    H1, c1 = enc(alone.src, alone.src_len)
    H2, c2 = enc(padded.src, padded.src_len)
    n = alone.src.shape[1]
    assert torch.allclose(c1[0], c2[0], atol=1e-6)
    assert torch.allclose(H1[0], H2[0, :n], atol=1e-6)


def test_model_outputs_are_padding_invariant(data):
    pairs, sv, tv = data
    short = min(pairs, key=lambda p: len(p.src))
    long = max(pairs, key=lambda p: len(p.src))
    for model in models(sv, tv):
        model.eval()
        a = make_batch([short], sv, tv)
        b = make_batch([short, long], sv, tv)
        T = a.tgt_in.shape[1]
        assert torch.allclose(model(a)[0], model(b)[0, :T], atol=1e-5), type(model).__name__
        ids_a = _ids(model.greedy_decode(a.src, a.src_len, 8))
        ids_b = _ids(model.greedy_decode(b.src, b.src_len, 8))
        assert ids_a[0] == ids_b[0]


def _ids(out):
    return out[0] if isinstance(out, tuple) else out


def test_forward_shapes(data):
    pairs, sv, tv = data
    b = make_batch(pairs[:6], sv, tv)
    B, N = b.src.shape
    T = b.tgt_in.shape[1]
    for model in models(sv, tv):
        assert model(b).shape == (B, T, len(tv))
    logits, alpha = models(sv, tv)[2](b, return_attention=True)
    assert logits.shape == (B, T, len(tv)) and alpha.shape == (B, T, N)


def test_attention_rows_sum_to_one_and_ignore_padding(data):
    pairs, sv, tv = data
    b = make_batch(pairs[:8], sv, tv)
    mask = source_mask(b.src_len, b.src.shape[1])  # (B, N)
    for model in models(sv, tv)[2:]:
        _, alpha = model(b, return_attention=True)
        assert alpha.shape == (*b.tgt_in.shape, b.src.shape[1]), type(model).__name__
        assert torch.allclose(alpha.sum(-1), torch.ones(alpha.shape[:2]), atol=1e-5)
        assert (alpha >= 0).all()
        assert (alpha.masked_select(~mask[:, None, :].expand_as(alpha)) == 0).all()


def test_greedy_decoding_stops_at_eos(data):
    pairs, sv, tv = data
    b = make_batch(pairs[:5], sv, tv)
    for model in models(sv, tv):
        with torch.no_grad():  # make <eos> the only choice after two steps
            out = model.out if isinstance(model, Seq2Seq) else model.W_y
            out.weight.zero_()
            out.bias.fill_(0.0)
            out.bias[EOS] = 1.0
        ids = _ids(model.greedy_decode(b.src, b.src_len, max_len=7))
        assert ids == [[] for _ in range(5)]
        with torch.no_grad():  # never <eos>: decoding stops at max_len
            out.bias[EOS] = -1.0
            out.bias[4] = 1.0
        ids = _ids(model.greedy_decode(b.src, b.src_len, max_len=7))
        assert all(len(row) == 7 and EOS not in row and PAD not in row for row in ids)


@pytest.mark.parametrize("k", [2, 4, 5, 6])
def test_greedy_attention_shapes(data, k):
    pairs, sv, tv = data
    model = models(sv, tv)[k]
    b = make_batch(pairs[:4], sv, tv)
    ids, alphas = model.greedy_decode(b.src, b.src_len, max_len=6)
    assert len(ids) == 4 and alphas.shape[0] == 4 and alphas.shape[2] == b.src.shape[1]
    assert alphas.shape[1] <= 6
    for k, row in enumerate(ids):  # a row sums to 1 while the sentence is still being decoded
        steps = min(len(row) + 1, alphas.shape[1])
        assert torch.allclose(alphas[k, :steps].sum(-1), torch.ones(steps), atol=1e-5)
        assert (alphas[k, steps:] == 0).all()


def test_training_reduces_the_loss_and_is_deterministic(data):
    pairs, sv, tv = data
    for cls in (Seq2Seq, AttnSeq2Seq, BahdanauSeq2Seq):
        results = []
        for _ in range(2):
            torch.manual_seed(0)
            model = cls(sv, tv, emb=16, hidden=32)
            results.append(train(model, pairs[:16], epochs=25, batch_size=8, lr=1e-2, seed=1, progress=False))
        h = results[0]
        assert h["loss"][-1] < 0.5 * h["loss"][0], h["loss"]
        assert results[0]["step_loss"] == results[1]["step_loss"]
        assert (
            set(h) == {"loss", "step_loss", "lr", "val_loss", "val_at", "seconds", "cpu_seconds"}
            and len(h["loss"]) == 25
        )
        assert h["lr"] == [1e-2] * len(h["step_loss"])  # no schedule: the same rate at every step
        assert h["val_loss"] == [] and h["cpu_seconds"] > 0


def test_evaluation_helpers(data):
    pairs, sv, tv = data
    torch.manual_seed(0)
    model = AttnSeq2Seq(sv, tv, emb=8, hidden=12)
    scores = evaluate_by_length(model, pairs, [(1, 9), (10, 100), (200, 300)])
    assert all(isinstance(s, BucketScore) for s in scores)
    assert sum(s.n for s in scores) == len(pairs) and scores[2].n == 0
    for s in scores[:2]:
        assert 0 <= s.sentence_acc <= 1 and 0 <= s.token_acc <= 1
    assert scores[0].label == "1–9"
    matches = exact_matches(model, pairs)  # the per-sentence test behind sentence_acc, in pair order
    assert len(matches) == len(pairs) and all(isinstance(m, bool) for m in matches)
    assert sum(matches) == round(sum(s.sentence_acc * s.n for s in scores[:2]))
    assert exact_matches(model, pairs[::-1]) == matches[::-1]
    agreement = alignment_agreement(model, pairs)
    assert 0 < agreement < 1
    out = translate(model, pairs[0].src)
    assert isinstance(out, list) and all(isinstance(w, str) for w in out)


def test_perfect_model_scores_one(data):
    """evaluate_by_length counts a reference-equal output as fully correct."""
    pairs, sv, tv = data

    class Oracle(Seq2Seq):
        def greedy_decode(self, src, src_len, max_len=None):
            by_src = {tuple(sv.encode(p.src)): tv.encode(p.tgt, add_eos=False) for p in pairs}
            return [by_src[tuple(row[:n].tolist())] for row, n in zip(src, src_len)]

    scores = evaluate_by_length(Oracle(sv, tv, 8, 12), pairs, [(1, 100)])
    assert scores[0].token_acc == 1.0 and scores[0].sentence_acc == 1.0
    assert exact_matches(Oracle(sv, tv, 8, 12), pairs) == [True] * len(pairs)

    class WrongOnLong(Oracle):  # drops the last word of sentences over 9 words
        def greedy_decode(self, src, src_len, max_len=None):
            out = super().greedy_decode(src, src_len, max_len)
            return [ids[:-1] if n > 10 else ids for ids, n in zip(out, src_len.tolist())]

    expected = [len(p.src) <= 9 for p in pairs]
    assert exact_matches(WrongOnLong(sv, tv, 8, 12), pairs) == expected and 0 < sum(expected) < len(pairs)


def test_bahdanau_step_order(data):
    """Bahdanau: step t's weights come from s_{t-1}, before the word y_{t-1} is read; Luong's from s_t."""
    pairs, sv, tv = data
    b = make_batch(pairs[:5], sv, tv)
    changed = dataclasses.replace(b, tgt_in=b.tgt_in.clone())
    changed.tgt_in[:, 2] = (b.tgt_in[:, 2] + 1) % len(tv)  # another word read at step 3 (index 2)
    luong, bahdanau = models(sv, tv)[2], models(sv, tv)[4]
    with torch.no_grad():
        _, a1 = bahdanau(b, return_attention=True)
        _, a2 = bahdanau(changed, return_attention=True)
        assert torch.equal(a1[:, :3], a2[:, :3])  # steps 1..3 look before reading the changed word
        assert not torch.allclose(a1[:, 3], a2[:, 3])  # step 4's query s_3 has read it
        _, l1 = luong(b, return_attention=True)
        _, l2 = luong(changed, return_attention=True)
        assert torch.equal(l1[:, :2], l2[:, :2]) and not torch.allclose(l1[:, 2], l2[:, 2])


def test_bahdanau_equals_its_steps_written_out(data):
    """The package model is exactly: additive scores from s_{t-1}, softmax, a_t, GRU([y; a_t]), W_y s_t."""
    pairs, sv, tv = data
    model = models(sv, tv)[4]
    b = make_batch(pairs[:4], sv, tv)
    with torch.no_grad():
        logits, alpha = model(b, return_attention=True)
        H, c = model.encoder(b.src, b.src_len)
        mask = source_mask(b.src_len, b.src.shape[1])
        g, s = model.decoder, c
        for t in range(b.tgt_in.shape[1]):
            e = torch.tanh(s @ model.W_q.weight.T + (H @ model.W_k.weight.T).transpose(0, 1)).transpose(0, 1)
            e = (e @ model.w.weight[0]).masked_fill(~mask, float("-inf"))  # (B, N)
            alpha_t = torch.softmax(e, -1)
            a_t = (alpha_t[:, :, None] * H).sum(1)
            x = torch.cat([model.tgt_embedding(b.tgt_in[:, t]), a_t], -1)
            s = gru_cell(x, s, g.weight_ih_l0, g.weight_hh_l0, g.bias_ih_l0, g.bias_hh_l0)
            torch.testing.assert_close(alpha[:, t], alpha_t, atol=1e-6, rtol=1e-5)
            torch.testing.assert_close(
                logits[:, t], s @ model.W_y.weight.T + model.W_y.bias, atol=1e-5, rtol=1e-5
            )


def test_parameter_counts_at_the_reference_size():
    """The figures the chapter quotes: W_c alone is 2d·d + d = 32,896 numbers at d = 128."""
    V_src, V_tgt, e, d = 89, 131, STANDARD["emb"], STANDARD["hidden"]
    luong = AttnSeq2Seq(V_src, V_tgt, emb=e, hidden=d)
    assert count_parameters(luong.W_c) == 2 * d * d + d == 32_896
    plain = Seq2Seq(V_src, V_tgt, emb=e, hidden=d, bidirectional=True)
    bahdanau = BahdanauSeq2Seq(V_src, V_tgt, emb=e, hidden=d)
    gru = lambda n_in, n: 3 * n * (n_in + n) + 6 * n  # noqa: E731
    shared = count_parameters(luong.encoder) + count_parameters(luong.tgt_embedding)
    assert count_parameters(luong) == shared + gru(e, d) + 32_896 + (d * V_tgt + V_tgt)
    assert count_parameters(plain) == shared + gru(e + d, d) + (d * V_tgt + V_tgt)
    assert count_parameters(bahdanau) == shared + gru(e + d, d) + 2 * d * d + d + (d * V_tgt + V_tgt)
    assert count_parameters(plain) > count_parameters(luong)  # attention is not bought with parameters


def test_learning_rate_schedule():
    assert [_lr_factor(None, k, 10, 0) for k in (0, 9)] == [1.0, 1.0]
    f = [_lr_factor("cosine", k, 10, 2) for k in range(10)]
    assert f[:2] == [0.5, 1.0] and f[2] == 1.0 and all(a > b for a, b in zip(f[2:], f[3:]))
    assert 0 < f[-1] < 0.05
    with pytest.raises(ValueError, match="schedule"):
        _lr_factor("linear", 0, 10, 0)


def test_training_options(data):
    """Bucketed batches, a cosine schedule and a validation curve; the default recipe is unchanged."""
    pairs, sv, tv = data
    torch.manual_seed(0)
    model = AttnSeq2Seq(sv, tv, emb=16, hidden=32)
    h = train(
        model,
        pairs[:16],
        epochs=25,
        batch_size=8,
        lr=2e-2,
        seed=1,
        progress=False,
        sort_window=None,
        schedule="cosine",
        warmup=3,
        val_pairs=pairs[16:],
    )
    assert len(h["val_loss"]) == 25 and min(h["val_loss"]) < h["val_loss"][0]
    assert h["val_loss"][-1] == pytest.approx(validation_loss(model, pairs[16:]))
    assert h["loss"][-1] < 0.5 * h["loss"][0], h["loss"]


def test_validation_points_and_token_budget(data):
    """val_points spreads the validation losses over each epoch; max_tokens cuts batches by tokens."""
    pairs, sv, tv = data
    torch.manual_seed(0)
    model = AttnSeq2Seq(sv, tv, emb=16, hidden=32)
    h = train(
        model,
        pairs[:30],
        epochs=2,
        lr=1e-2,
        progress=False,
        sort_window=None,
        max_tokens=60,
        schedule="cosine",
        val_pairs=pairs[30:],
        val_points=3,
    )
    assert len(h["val_loss"]) == 6 and h["val_at"][2] == 1.0 and h["val_at"][-1] == 2.0
    assert h["val_at"] == sorted(h["val_at"]) and 0 < h["val_at"][0] < 0.5
    assert h["val_loss"][-1] == pytest.approx(validation_loss(model, pairs[30:]))
    plans = [
        plan_batches(pairs[:30], 64, shuffle=True, seed=e, sort_window=None, max_tokens=60) for e in (0, 1)
    ]
    assert len(h["step_loss"]) == sum(len(p) for p in plans) > 2 * 30 * 6 // 60  # batches by tokens
    # the cosine schedule: from the peak down towards 0, half the peak on average
    assert (
        len(h["lr"]) == len(h["step_loss"])
        and h["lr"][0] == 1e-2
        and h["lr"] == sorted(h["lr"], reverse=True)
    )
    assert sum(h["lr"]) / len(h["lr"]) == pytest.approx(0.5e-2, rel=0.1) and h["lr"][-1] < 1e-3
    with pytest.raises(ValueError, match="no pairs"):
        validation_loss(model, [])
    with pytest.raises(ValueError, match="val_points"):
        train(model, pairs[:8], epochs=1, progress=False, val_pairs=pairs[8:], val_points=0)


def test_more_training_pairs_come_from_the_same_generator():
    """n_train adds new pairs after the reference corpus: none in validation or test, same vocabularies."""
    ref, sv, tv = standard_data()
    more, sv2, tv2 = standard_data(n_train=6100)
    assert more.train[:6000] == ref.train and len(more.train) == 6100
    assert more.val == ref.val and more.test == ref.test
    assert sv2.itos == sv.itos and tv2.itos == tv.itos
    sources = {p.src for p in ref.train + ref.val + ref.test}
    assert not sources & {p.src for p in more.train[6000:]}
    assert len({p.src for p in more.train}) == 6100
    with pytest.raises(ValueError, match="at least 6000"):
        standard_data(n_train=100)


def test_position_bias():
    bias = position_bias(3, 5, 1.0)  # rows t = 0..2, columns i = 0..4
    assert bias.shape == (3, 5)
    assert bias[1].tolist() == [-0.5, 0.0, -0.5, -2.0, -4.5]
    assert torch.equal(position_bias(2, 5, 1.0, start=1), bias[1:])  # later steps: rows further down
    assert torch.allclose(position_bias(1, 3, 2.0), torch.tensor([[0.0, -1 / 8, -4 / 8]]))
    weights = torch.softmax(torch.zeros(5) + position_bias(1, 5, 1.0, start=2)[0], -1)
    assert int(weights.argmax()) == 2 and torch.allclose(weights, weights.flip(0))  # a bell around t
    for width in (0, -1.0, float("nan")):
        with pytest.raises(ValueError, match="width"):
            position_bias(2, 2, width)
    with pytest.raises(ValueError, match="width"):
        AttnSeq2Seq(10, 10, emb=4, hidden=4, position_prior=0.0)


def test_position_prior_adds_to_the_scores_at_each_steps_own_position(data):
    pairs, sv, tv = data
    torch.manual_seed(0)
    plain = AttnSeq2Seq(sv, tv, emb=8, hidden=12)
    hinted = AttnSeq2Seq(sv, tv, emb=8, hidden=12, position_prior=1.5)
    hinted.load_state_dict(plain.state_dict())  # the same weights: only the scores differ
    b = make_batch(pairs[:6], sv, tv)
    H, c = plain.encoder(b.src, b.src_len)
    S, _ = plain.decoder(plain.tgt_embedding(b.tgt_in), c[None])
    T, N = S.shape[1], H.shape[1]
    assert torch.allclose(hinted.scores(S, H), plain.scores(S, H) + position_bias(T, N, 1.5), atol=1e-6)
    # the scores of steps 2.. given alone, with start=2, are those rows of the whole
    assert torch.allclose(hinted.scores(S[:, 2:], H, start=2), hinted.scores(S, H)[:, 2:], atol=1e-6)
    # teacher forcing (all steps in one call) and the analysis tools agree
    logits, alpha = hinted(b, return_attention=True)
    predicted, weights = teacher_forced_predictions(hinted, b)
    assert torch.equal(predicted, logits.argmax(-1)) and torch.allclose(weights, alpha, atol=1e-6)
    assert not torch.allclose(alpha, plain(b, return_attention=True)[1], atol=1e-3)


def test_learned_offsets_add_one_number_per_offset_to_the_scores(data):
    pairs, sv, tv = data
    torch.manual_seed(0)
    plain = AttnSeq2Seq(sv, tv, emb=8, hidden=12)
    torch.manual_seed(0)
    model = AttnSeq2Seq(sv, tv, emb=8, hidden=12, offsets=2)
    # made last and with zeros: every other weight starts as in the model without them
    extra = set(model.state_dict()) - set(plain.state_dict())
    assert extra == {"offset_bias"} and model.offset_bias.shape == (5,)
    assert all(torch.equal(v, model.state_dict()[k]) for k, v in plain.state_dict().items())
    assert model.offset_numbers == {-2: 0.0, -1: 0.0, 0: 0.0, 1: 0.0, 2: 0.0}
    _with_offsets(model)
    r = [-3.0, 1.0, 4.0, 2.0, -5.0]  # r_k for k = i - t = -2 .. 2, stored divided by OFFSET_SCALE
    assert model.offset_numbers == pytest.approx(dict(zip(range(-2, 3), r)))
    term = model.offset_term(3, 6)  # rows t = 0..2, columns i = 0..5; offsets beyond 2 take the end numbers
    expected = [[4, 2, -5, -5, -5, -5], [1, 4, 2, -5, -5, -5], [-3, 1, 4, 2, -5, -5]]
    assert torch.allclose(term, torch.tensor(expected, dtype=term.dtype), atol=1e-6)
    assert torch.allclose(model.offset_bias.detach() * OFFSET_SCALE, torch.tensor(r), atol=1e-6)
    assert torch.equal(model.offset_term(2, 6, start=1), term[1:])
    batch = make_batch(pairs[:6], sv, tv)
    H, c = model.encoder(batch.src, batch.src_len)
    S, _ = model.decoder(model.tgt_embedding(batch.tgt_in), c[None])
    T, N = S.shape[1], H.shape[1]
    assert torch.allclose(model.scores(S, H), plain.scores(S, H) + model.offset_term(T, N), atol=1e-5)
    # trained with the rest: the loss reaches the numbers
    model(batch).logsumexp(-1).sum().backward()
    assert model.offset_bias.grad is not None and model.offset_bias.grad.abs().sum() > 0
    for bad in (-1, 1.5, True, "2"):
        with pytest.raises(ValueError, match="offsets"):
            AttnSeq2Seq(sv, tv, emb=8, hidden=12, offsets=bad)
    for bad in (0, -1.0, "10"):
        with pytest.raises(ValueError, match="offset_scale"):
            AttnSeq2Seq(sv, tv, emb=8, hidden=12, offsets=2, offset_scale=bad)
    # another scale stores the same numbers differently: the term is the scale times what is stored
    unscaled = AttnSeq2Seq(sv, tv, emb=8, hidden=12, offsets=2, offset_scale=1)
    unscaled.load_state_dict(model.state_dict())
    assert torch.allclose(unscaled.offset_term(3, 6), term / OFFSET_SCALE, atol=1e-6)
    assert plain.offset_numbers is None
    with pytest.raises(ValueError, match="offsets=K"):
        plain.offset_term(2, 2)


@pytest.mark.parametrize("k", [5, 6, 7])
def test_greedy_decoding_counts_the_steps_for_the_prior(data, k):
    """Greedy decoding is teacher forcing on its own output: each step's prior centres on its own t."""
    pairs, sv, tv = data
    model = models(sv, tv)[k].eval()
    b = make_batch(pairs[:5], sv, tv)
    ids, alphas = model.greedy_decode(b.src, b.src_len, max_len=9)
    steps = alphas.shape[1]
    forced = torch.tensor([([SOS] + row + [EOS] + [PAD] * steps)[:steps] for row in ids])
    own = dataclasses.replace(b, tgt_in=forced)
    with torch.no_grad():
        logits, alpha = model(own, return_attention=True)
    for r, row in enumerate(ids):
        n = min(len(row) + 1, steps)  # the steps that decoded this sentence
        assert torch.allclose(alpha[r, :n], alphas[r, :n], atol=1e-5)
        assert logits[r, : len(row)].argmax(-1).tolist() == row


def _same_weights(a, b):
    return all(torch.equal(x, y) for x, y in zip(a.state_dict().values(), b.state_dict().values()))


def test_train_side_by_side_gives_train_standards_models():
    jobs = [
        dict(kind="attention", hidden=16, epochs=1, position_prior=2.0),
        dict(kind="plain", hidden=16, epochs=1, bidirectional=True, seed=3),
        dict(kind="transformer", epochs=1, d_model=16, h=2, d_ff=16),
    ]
    results = train_side_by_side(*jobs, progress=False)
    assert len(results) == 3
    for job, (model, history, splits) in zip(jobs, results):
        job = dict(job)
        kind = job.pop("kind")
        if kind == "transformer":
            from attnbook.transformer import train_transformer

            alone, alone_history, alone_splits = train_transformer(progress=False, **job)
        else:
            alone, alone_history, alone_splits = train_standard(kind, progress=False, **job)
        assert type(model) is type(alone) and not model.training
        assert _same_weights(model, alone), kind  # the same weights, trained in another process
        assert history["step_loss"] == alone_history["step_loss"] and history["cpu_seconds"] > 0
        assert splits == alone_splits
    assert results[0][0].position_prior == 2.0
    # one process: the same models, trained here one after the other
    here = train_side_by_side(jobs[1], progress=False, processes=1)
    assert _same_weights(here[0][0], results[1][0])


def test_train_side_by_side_rejects_bad_jobs_and_reports_a_failing_one():
    with pytest.raises(ValueError, match="at least one job"):
        train_side_by_side()
    with pytest.raises(ValueError, match="'kind'"):
        train_side_by_side(dict(hidden=16))
    with pytest.raises(ValueError, match="kind must be one of"):
        train_side_by_side(dict(kind="lstm"))
    with pytest.raises(ValueError, match="progress and callback"):
        train_side_by_side(dict(kind="plain", progress=False))
    with pytest.raises(ValueError, match="processes"):
        train_side_by_side(dict(kind="plain"), processes=0)
    # an odd size cannot be split between two directions: the worker fails, and says why
    with pytest.raises(RuntimeError, match="job 1 \\(attention\\) failed(.|\\n)*even hidden size"):
        train_side_by_side(
            dict(kind="plain", hidden=8, epochs=1, n_train=6000),
            dict(kind="attention", hidden=15, epochs=1),
            progress=False,
        )


def test_train_side_by_side_trains_here_when_no_process_can_start(monkeypatch, capsys):
    import subprocess

    def refuse(*args, **kwargs):
        raise PermissionError("not allowed here")

    monkeypatch.setattr(subprocess, "Popen", refuse)
    job = dict(kind="plain", hidden=8, epochs=1)
    (model, history, _), (again, _, _) = train_side_by_side(job, job, progress=False)
    assert "could not start a worker process (not allowed here)" in capsys.readouterr().err
    alone, alone_history, _ = train_standard("plain", progress=False, hidden=8, epochs=1)
    assert _same_weights(model, alone) and _same_weights(again, alone)
    assert history["step_loss"] == alone_history["step_loss"]


def test_train_in_background_returns_at_once_with_train_standards_models():
    jobs = [
        dict(kind="attention", hidden=16, epochs=1, offsets=2),
        dict(kind="plain", hidden=16, epochs=1, seed=3),
    ]
    training = train_in_background(*jobs, processes=1)  # one worker at a time, never in this process
    assert not training.done()  # it returned before the models were trained
    results = training.result()
    assert training.done() and len(results) == 2
    for job, (model, history, splits) in zip(jobs, results):
        job = dict(job)
        alone, alone_history, alone_splits = train_standard(job.pop("kind"), progress=False, **job)
        assert type(model) is type(alone) and not model.training
        assert _same_weights(model, alone)
        assert history["step_loss"] == alone_history["step_loss"] and splits == alone_splits
    assert training.result()[0][0] is results[0][0]  # asked again: the same models, not trained again


def test_train_in_background_checks_jobs_at_once_and_reports_a_failing_one():
    with pytest.raises(ValueError, match="train_in_background needs at least one job"):
        train_in_background()
    with pytest.raises(ValueError, match="kind must be one of"):
        train_in_background(dict(kind="lstm"))
    with pytest.raises(ValueError, match="progress and callback are train_in_background's"):
        train_in_background(dict(kind="plain", progress=False))
    for bad in (0, 1.5, True):
        with pytest.raises(ValueError, match="processes must be a whole number"):
            train_in_background(dict(kind="plain"), processes=bad)
    training = train_in_background(dict(kind="attention", hidden=15, epochs=1))
    with pytest.raises(RuntimeError, match="job 0 \\(attention\\) failed(.|\\n)*even hidden size"):
        training.result()


def test_train_in_background_trains_in_the_callers_thread_when_no_process_can_start(monkeypatch, capsys):
    import subprocess
    import threading

    commands = []

    def refuse(command, *args, **kwargs):
        commands.append(command)
        raise PermissionError("not allowed here")

    monkeypatch.setattr(subprocess, "Popen", refuse)
    trained_in = []
    original = train_standard

    def spy(*args, **kwargs):
        trained_in.append(threading.current_thread())
        return original(*args, **kwargs)

    import attnbook.models as models

    monkeypatch.setattr(models, "train_standard", spy)
    training = train_in_background(dict(kind="plain", hidden=8, epochs=1))
    ((model, history, _),) = training.result()
    assert trained_in == [threading.main_thread()]  # not in the background thread: torch's RNG is shared
    # the worker it tried to start would have lowered its own priority first, before importing torch
    assert commands[0][-1].startswith(f"import os; hasattr(os, 'nice') and os.nice({BACKGROUND_NICENESS});")
    assert "could not start a worker process (not allowed here); training the model here, now" in (
        capsys.readouterr().err
    )
    alone, alone_history, _ = original("plain", progress=False, hidden=8, epochs=1)
    assert _same_weights(model, alone) and history["step_loss"] == alone_history["step_loss"]
