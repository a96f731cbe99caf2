"""Tests of attnbook.analysis: the GRU step, agreement measures, shifted alignments, guided training."""

import dataclasses

import pytest
import torch

from attnbook.analysis import (
    aligned_mass,
    alignment_error_rate,
    attention_agreement,
    gru_cell,
    real_steps_mask,
    shift_alignment,
    teacher_forced_accuracy,
    teacher_forced_attention,
    teacher_forced_predictions,
    train_guided,
)
from attnbook.data import Vocab, generate_corpus, make_batch
from attnbook.models import AttnSeq2Seq, alignment_agreement, train

torch.set_num_threads(1)


@pytest.fixture(scope="module")
def data():
    pairs = generate_corpus(40, seed=0, max_clauses=2)
    return pairs, Vocab.build(p.src for p in pairs), Vocab.build(p.tgt for p in pairs)


def test_gru_cell_equals_torch():
    torch.manual_seed(0)
    cell = torch.nn.GRUCell(5, 7).double()
    x, h = torch.randn(3, 5, dtype=torch.float64), torch.randn(3, 7, dtype=torch.float64)
    ours = gru_cell(x, h, cell.weight_ih, cell.weight_hh, cell.bias_ih, cell.bias_hh)
    assert torch.allclose(ours, cell(x, h), atol=1e-12)


def test_real_steps_mask():
    assert real_steps_mask(torch.tensor([2, 0, 3]), 3).tolist() == [
        [True, True, False],
        [False] * 3,
        [True] * 3,
    ]


def _example():
    # B=2, T=3, N=4; sentence 1 has 2 real steps, its step 2 is padding with garbage weights
    alpha = torch.tensor(
        [
            [[0.7, 0.1, 0.2, 0.0], [0.0, 0.5, 0.5, 0.0], [0.1, 0.2, 0.3, 0.4]],
            [[0.2, 0.8, 0.0, 0.0], [0.6, 0.4, 0.0, 0.0], [0.25, 0.25, 0.25, 0.25]],
        ]
    )
    align = torch.zeros(2, 3, 4)
    align[0, 0, 0] = align[0, 1, 1] = align[0, 1, 2] = align[0, 2, 3] = 1  # step 1 aligns to two words
    align[1, 0, 1] = align[1, 1, 1] = 1
    return alpha, align, torch.tensor([3, 2])


def test_aligned_mass_by_hand():
    alpha, align, steps = _example()
    # real steps: 0.7, 1.0, 0.4 (sentence 0); 0.8, 0.4 (sentence 1) -> 3.3 / 5
    assert float(aligned_mass(alpha, align, steps)) == pytest.approx(3.3 / 5)


def test_alignment_error_rate_by_hand():
    alpha, align, steps = _example()
    # argmax links: (0,0) hit, (0,1) tie, either position hits, (0,2) hit, (1,0) hit, (1,1) -> position 0 miss
    # |A| = 5, |S| = 6 (step 1 of sentence 0 has two links), hits 4 -> 1 - 8/11
    assert float(alignment_error_rate(alpha, align, steps)) == pytest.approx(1 - 8 / 11)
    assert float(alignment_error_rate(align / align.sum(-1, keepdim=True).clamp(min=1), align, steps)) < 0.1


def test_shift_alignment():
    align = torch.zeros(1, 3, 5)
    align[0, 0, 0] = align[0, 1, 2] = align[0, 1, 3] = align[0, 2, 3] = 1
    out = shift_alignment(align, torch.tensor([4]), shift=1)  # real positions 0..3
    assert out[0, 0].tolist() == [0, 1, 0, 0, 0]
    assert out[0, 1].tolist() == [0, 0, 0, 1, 0]  # 2 -> 3 and 3 -> 4, clamped to 3: both links on 3
    assert out[0, 2].tolist() == [0, 0, 0, 1, 0]
    padded = torch.zeros(1, 2, 3)
    assert (shift_alignment(padded, torch.tensor([3])) == 0).all()


def test_agreement_matches_models_and_uniform_baseline(data):
    pairs, sv, tv = data
    torch.manual_seed(0)
    model = AttnSeq2Seq(sv, tv, emb=8, hidden=12)
    scores = attention_agreement(model, pairs[:20], batch_size=7)
    assert scores["mass"] == pytest.approx(alignment_agreement(model, pairs[:20]), abs=1e-5)
    assert 0 <= scores["aer"] <= 1 and 0 < scores["uniform_mass"] < 1
    batches = list(teacher_forced_attention(model, pairs[:20], batch_size=7))
    assert len(batches) == 3 and batches[0][1].shape[0] == 7


def test_guided_training_without_target_is_models_train(data):
    pairs, sv, tv = data
    torch.manual_seed(0)
    a = AttnSeq2Seq(sv, tv, emb=8, hidden=12)
    torch.manual_seed(0)
    b = AttnSeq2Seq(sv, tv, emb=8, hidden=12)
    train(a, pairs[:16], epochs=2, batch_size=8, seed=1, progress=False)
    train_guided(b, pairs[:16], None, epochs=2, batch_size=8, seed=1, progress=False)
    for (name, p), q in zip(a.named_parameters(), b.parameters()):
        assert torch.equal(p, q), name


def test_guided_training_moves_the_attention(data):
    pairs, sv, tv = data
    shifted = lambda batch: shift_alignment(batch.align, batch.src_len, 1)  # noqa: E731
    torch.manual_seed(0)
    model = AttnSeq2Seq(sv, tv, emb=16, hidden=24)
    before = attention_agreement(model, pairs, shift=1)["mass"]
    history = train_guided(
        model, pairs, shifted, weight=1.0, epochs=30, batch_size=8, lr=1e-2, progress=False
    )
    after = attention_agreement(model, pairs, shift=1)["mass"]
    assert after > before + 0.3 and after > 0.6, (before, after)
    assert history["loss"][-1] < history["loss"][0]


def test_teacher_forced_accuracy(data):
    pairs, sv, tv = data
    torch.manual_seed(0)
    model = AttnSeq2Seq(sv, tv, emb=8, hidden=12)
    batch = make_batch(pairs[:10], sv, tv)
    with torch.no_grad():
        predicted = model(batch).argmax(-1)
    real = batch.tgt_out != 0
    expected = float((predicted == batch.tgt_out)[real].float().mean())
    assert teacher_forced_accuracy(model, pairs[:10]) == pytest.approx(expected)
    assert 0 <= teacher_forced_accuracy(model, pairs[:10], uniform_attention=True) <= 1
    with pytest.raises(ValueError):
        teacher_forced_accuracy(AttnSeq2Seq(sv, tv, 8, 12, input_feeding=True), pairs[:3])


def test_teacher_forced_predictions_and_an_intervention(data):
    pairs, sv, tv = data
    torch.manual_seed(0)
    model = AttnSeq2Seq(sv, tv, emb=8, hidden=12)
    batch = make_batch(pairs[:10], sv, tv)
    with torch.no_grad():
        logits, alpha = model(batch, return_attention=True)
    predicted, weights = teacher_forced_predictions(model, batch)
    assert torch.equal(predicted, logits.argmax(-1)) and torch.allclose(weights, alpha)
    # the model's own weights given back change nothing; other weights go through to the output
    assert torch.equal(teacher_forced_predictions(model, batch, alpha)[0], predicted)
    moved = torch.zeros_like(alpha)
    moved[..., 0] = 1.0  # every step on the first source word
    assert teacher_forced_predictions(model, batch, moved)[1] is moved
    with pytest.raises(ValueError):
        teacher_forced_predictions(AttnSeq2Seq(sv, tv, 8, 12, input_feeding=True), batch)


def test_aer_floor_with_one_to_many_links():
    """A word aligned to two source words keeps the AER above 0 even when every argmax link is right."""
    align = torch.zeros(1, 2, 3)
    align[0, 0, 0] = 1.0  # step 0 -> position 0
    align[0, 1, [1, 2]] = 1.0  # step 1 -> positions 1 and 2 (one-to-many)
    alpha = torch.tensor([[[0.9, 0.05, 0.05], [0.0, 0.6, 0.4]]])  # both argmax links are right
    aer = float(alignment_error_rate(alpha, align, torch.tensor([2])))
    assert aer == pytest.approx(1 - 2 * 2 / (2 + 3)) and aer > 0


def test_agreement_reports_the_best_reachable_aer_and_link_precision(data):
    pairs, sv, tv = data
    assert all(len(a) == 1 for p in pairs for a in p.align)  # the corpus links one source word per word
    one_to_many = [dataclasses.replace(p, align=((0, 1), *p.align[1:])) for p in pairs]  # made by hand
    torch.manual_seed(0)
    model = AttnSeq2Seq(sv, tv, emb=8, hidden=12)
    plain = attention_agreement(model, pairs)
    assert plain["aer_best"] == 0 and plain["aer"] == pytest.approx(1 - plain["link_precision"])
    scores = attention_agreement(model, one_to_many)
    steps = sum(len(p.tgt) for p in pairs)
    links = sum(len(a) for p in one_to_many for a in p.align)
    assert links == steps + len(pairs)
    assert scores["aer_best"] == pytest.approx(1 - 2 * steps / (steps + links)) and scores["aer_best"] > 0
    assert scores["aer"] >= scores["aer_best"] - 1e-9
    assert scores["aer"] == pytest.approx(1 - 2 * scores["link_precision"] * steps / (steps + links))


def test_agreement_and_guided_training_work_for_bahdanau(data):
    from attnbook.models import BahdanauSeq2Seq

    pairs, sv, tv = data
    torch.manual_seed(0)
    model = BahdanauSeq2Seq(sv, tv, emb=8, hidden=12)
    scores = attention_agreement(model, pairs[:10])
    assert scores["mass"] == pytest.approx(alignment_agreement(model, pairs[:10]), abs=1e-5)
    history = train_guided(model, pairs[:8], None, epochs=1, batch_size=4, progress=False)
    assert len(history["loss"]) == 1
    with pytest.raises(ValueError, match="Luong"):
        teacher_forced_accuracy(model, pairs[:3])
