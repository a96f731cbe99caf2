"""Tests of attnbook.data: the synchronous grammar, splits, vocabulary and batches."""

import random
import statistics

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from attnbook.data import (
    DICTIONARY,
    EOS,
    PAD,
    SEED_EXAMPLE,
    SOS,
    UNK,
    Pair,
    Vocab,
    generate_corpus,
    generate_pair,
    iterate_batches,
    make_batch,
    make_splits,
    plan_batches,
)


@pytest.fixture(scope="module")
def corpus():
    return generate_corpus(3000, seed=0)


def check_pair(p: Pair):
    assert len(p.src) >= 3 and len(p.tgt) >= 1
    assert len(p.align) == len(p.tgt)
    for w in (*p.src, *p.tgt):
        assert w == w.lower() and w.isalpha(), w
    for j, positions in enumerate(p.align):
        assert positions, f"target word {p.tgt[j]!r} has no alignment"
        assert list(positions) == sorted(set(positions))
        assert all(0 <= i < len(p.src) for i in positions)
        # every aligned word pair is a dictionary translation
        assert any(p.tgt[j] in DICTIONARY[p.src[i]] for i in positions), (p.src, p.tgt[j])


@settings(max_examples=200, deadline=None)
@given(seed=st.integers(0, 2**32 - 1), n_clauses=st.integers(1, 6))
def test_pairs_are_well_formed(seed, n_clauses):
    p = generate_pair(random.Random(seed), n_clauses)
    check_pair(p)
    assert p.src.count("and") == n_clauses - 1
    assert p.tgt.count("et") == n_clauses - 1


def test_generate_pair_rejects_zero_clauses():
    with pytest.raises(ValueError):
        generate_pair(random.Random(0), 0)


def test_corpus_is_deterministic_by_seed():
    assert generate_corpus(200, seed=3) == generate_corpus(200, seed=3)
    assert generate_corpus(200, seed=3) != generate_corpus(200, seed=4)


def test_the_reference_corpus_never_changes():
    """Every stored output of the book was computed from these sentences: a change to the generator
    that changes them (a draw of the random generator more or less, another order of a word list)
    changes every trained model. The generator may get faster, never different."""
    import hashlib
    import pickle

    expected = {
        (8000, 0, 4): "f09ff9fac34e642da4e58028db6cb78e2774c6e1570094ac30bd22b15a353c80",
        (20000, 0, 4): "e03906ed2d56c55d4bd510455e6c54002a820450dabc6c8c076ad2bbc18283e6",
        (2000, 7, 2): "baefe3d0365216a9598e9aed70f3e1c7079a772ee8b55da318e0a2ccd4176696",
    }
    for (n, seed, max_clauses), digest in expected.items():
        corpus = generate_corpus(n, seed=seed, max_clauses=max_clauses)
        data = pickle.dumps([(p.src, p.tgt, p.align) for p in corpus])
        assert hashlib.sha256(data).hexdigest() == digest, (n, seed, max_clauses)


def test_corpus_sources_are_unique(corpus):
    assert len({p.src for p in corpus}) == len(corpus)


def test_translation_is_a_function_of_the_source():
    """The grammar is unambiguous: a source sentence always gets the same translation."""
    rng = random.Random(1)
    seen = {}
    for _ in range(5000):
        p = generate_pair(rng, rng.randint(1, 2))
        assert seen.setdefault(p.src, (p.tgt, p.align)) == (p.tgt, p.align)


def test_seed_example_is_generated(corpus):
    assert SEED_EXAMPLE in corpus
    check_pair(SEED_EXAMPLE)


def find_phrase(pairs, phrase):
    """(pair, French words aligned to each word of ``phrase``, in French order) for its first occurrence."""
    n = len(phrase)
    for p in pairs:
        for i in range(len(p.src) - n + 1):
            if p.src[i : i + n] == phrase:
                fr = [(j, p.tgt[j]) for j, a in enumerate(p.align) if set(a) & set(range(i, i + n))]
                return p, [w for _, w in sorted(fr)]
    raise AssertionError(f"{phrase} never generated")


def test_adjective_inversion_is_present(corpus):
    """'the black cat' -> 'le chat noir': some alignments go backwards."""
    inverted = [p for p in corpus if any(a[0] > b[0] for a, b in zip(p.align, p.align[1:]))]
    assert len(inverted) > len(corpus) // 4
    p, fr = find_phrase(corpus, ("the", "black", "cat"))
    assert fr == ["le", "chat", "noir"]
    i = next(k for k in range(len(p.src)) if p.src[k : k + 3] == ("the", "black", "cat"))
    j = next(k for k, a in enumerate(p.align) if a == (i + 2,))
    assert p.tgt[j] == "chat" and p.tgt[j + 1] == "noir" and p.align[j + 1] == (i + 1,)


def test_gender_and_number_agreement(corpus):
    assert find_phrase(corpus, ("the", "white", "house"))[1] == ["la", "maison", "blanche"]
    assert find_phrase(corpus, ("the", "white", "houses"))[1] == ["les", "maisons", "blanches"]
    assert find_phrase(corpus, ("a", "small", "cat"))[1] == ["un", "petit", "chat"]
    assert find_phrase(corpus, ("she", "is", "a", "student"))[1] == ["elle", "est", "étudiante"]
    assert find_phrase(corpus, ("the", "cats", "sleep"))[1] == ["les", "chats", "dorment"]
    assert find_phrase(corpus, ("an", "apple"))[1] == ["une", "pomme"]


def test_length_distribution_as_documented():
    lengths = [len(p.src) for p in generate_corpus(10000, seed=0)]
    assert min(lengths) == 3 and 44 <= max(lengths) <= 56
    assert 16 <= statistics.median(lengths) <= 18
    assert 16 <= statistics.mean(lengths) <= 19
    share = lambda cond: sum(map(cond, lengths)) / len(lengths)  # noqa: E731
    assert 0.16 <= share(lambda n: n <= 9) <= 0.26
    assert 0.17 <= share(lambda n: n >= 25) <= 0.27
    assert 0.06 <= share(lambda n: n >= 30) <= 0.12
    # more clauses, longer sentences
    by_clauses = [
        statistics.mean(
            len(p.src) for p in generate_corpus(300, seed=1, max_clauses=k) if p.src.count("and") == k - 1
        )
        for k in (1, 2, 3)
    ]
    assert by_clauses[0] < by_clauses[1] < by_clauses[2]


def test_splits_do_not_overlap():
    s = make_splits(500, 100, 200, seed=0)
    assert (len(s.train), len(s.val), len(s.test)) == (500, 100, 200)
    train, val, test = ({p.src for p in part} for part in s)
    assert not (train & val) and not (train & test) and not (val & test)
    assert make_splits(500, 100, 200, seed=0) == s


def test_vocab_specials_and_order(corpus):
    v = Vocab.build(p.src for p in corpus)
    assert v.itos[:4] == ["<pad>", "<sos>", "<eos>", "<unk>"]
    assert (PAD, SOS, EOS, UNK) == (0, 1, 2, 3)
    assert v.itos[4:] == sorted(v.itos[4:])
    assert len(v) == len(v.itos) == len(v.stoi)
    assert all(v.stoi[w] == i for i, w in enumerate(v.itos))
    assert Vocab.build(reversed([p.src for p in corpus])).itos == v.itos


@settings(max_examples=100, deadline=None)
@given(seed=st.integers(0, 10**6), add_sos=st.booleans())
def test_encode_decode_round_trip(seed, add_sos):
    p = generate_pair(random.Random(seed), 2)
    v = Vocab.build([p.tgt])
    ids = v.encode(p.tgt, add_sos=add_sos)
    assert ids[-1] == EOS and (ids[0] == SOS) == add_sos
    assert v.decode(ids) == list(p.tgt)
    assert v.decode(ids + [v.stoi[p.tgt[0]]]) == list(p.tgt)  # stops at <eos>


def test_unknown_words():
    v = Vocab.build([["je", "suis"]])
    assert v.encode(["je", "danse"], add_eos=False) == [v.stoi["je"], UNK]
    with pytest.raises(ValueError, match="'danse'"):
        v.encode(["je", "danse"], strict=True)


def test_batch_shapes_and_padding():
    pairs = generate_corpus(5, seed=2)
    sv, tv = Vocab.build(p.src for p in pairs), Vocab.build(p.tgt for p in pairs)
    b = make_batch(pairs, sv, tv)
    B, N, T = len(pairs), max(len(p.src) for p in pairs) + 1, max(len(p.tgt) for p in pairs) + 1
    assert b.src.shape == (B, N) and b.tgt_in.shape == b.tgt_out.shape == (B, T)
    assert b.align.shape == (B, T, N) and b.align.dtype == torch.float32
    assert b.src.dtype == b.tgt_in.dtype == torch.long
    for k, p in enumerate(pairs):
        n, t = len(p.src), len(p.tgt)
        assert b.src_len[k] == n + 1 and b.tgt_len[k] == t + 1
        assert b.src[k, n] == EOS and (b.src[k, n + 1 :] == PAD).all()
        assert sv.decode(b.src[k]) == list(p.src)
        assert b.tgt_in[k, 0] == SOS and (b.tgt_in[k, 1 : t + 1] == b.tgt_out[k, :t]).all()
        assert b.tgt_out[k, t] == EOS and (b.tgt_out[k, t + 1 :] == PAD).all()
        # each real target row has its alignment, the <eos> row points at the source <eos>
        assert (b.align[k, : t + 1].sum(-1) >= 1).all() and b.align[k, t + 1 :].sum() == 0
        assert b.align[k, t, n] == 1 and b.align[k, t].sum() == 1
        assert b.align[k, :, n + 1 :].sum() == 0


def test_iterate_batches_covers_everything_once():
    pairs = generate_corpus(250, seed=0)
    sv, tv = Vocab.build(p.src for p in pairs), Vocab.build(p.tgt for p in pairs)
    for shuffle in (False, True):
        batches = list(iterate_batches(pairs, 32, shuffle=shuffle, seed=1, src_vocab=sv, tgt_vocab=tv))
        seen = [p for b in batches for p in b.pairs]
        assert sorted(p.src for p in seen) == sorted(p.src for p in pairs)
        assert all(len(b) <= 32 for b in batches)
    plain = list(iterate_batches(pairs, 32, src_vocab=sv, tgt_vocab=tv))
    assert [p for b in plain for p in b.pairs] == pairs
    again = [b.pairs for b in iterate_batches(pairs, 32, shuffle=True, seed=1, src_vocab=sv, tgt_vocab=tv)]
    assert again == [b.pairs for b in batches]


def test_bucketed_batches_cover_everything_once_with_least_padding():
    """sort_window=None sorts the whole set by length: every pair once, and less padding than windows."""
    pairs = generate_corpus(600, seed=3)
    sv, tv = Vocab.build(p.src for p in pairs), Vocab.build(p.tgt for p in pairs)

    def padding(batches):
        return sum(int(b.src.numel() - b.src_len.sum()) for b in batches)

    windowed = list(
        iterate_batches(pairs, 32, shuffle=True, seed=1, src_vocab=sv, tgt_vocab=tv, sort_window=2)
    )
    bucketed = list(
        iterate_batches(pairs, 32, shuffle=True, seed=1, src_vocab=sv, tgt_vocab=tv, sort_window=None)
    )
    assert sorted(p.src for b in bucketed for p in b.pairs) == sorted(p.src for p in pairs)
    assert padding(bucketed) < padding(windowed) / 2
    spans = sorted(max(len(p.src) for p in b.pairs) - min(len(p.src) for p in b.pairs) for b in bucketed)
    assert spans[len(spans) // 2] <= 2  # most buckets hold up to three lengths (the rare long ones spread)
    other = list(
        iterate_batches(pairs, 32, shuffle=True, seed=2, src_vocab=sv, tgt_vocab=tv, sort_window=None)
    )
    assert [b.pairs for b in other] != [b.pairs for b in bucketed]  # another seed, other batches


def test_token_budget_batches():
    """max_tokens: every pair once, no batch over the budget unless one sentence alone is, and many short
    sentences or a few long ones per batch."""
    pairs = generate_corpus(600, seed=3)
    chunks = plan_batches(pairs, 32, shuffle=True, seed=1, sort_window=None, max_tokens=200)
    assert sorted(p.src for c in chunks for p in c) == sorted(p.src for p in pairs)
    cost = [len(c) * (max(len(p.src) for p in c) + 1) for c in chunks]
    assert all(t <= 200 or len(c) == 1 for t, c in zip(cost, chunks))
    sizes = {max(len(p.src) for p in c): len(c) for c in chunks}
    assert sizes[min(sizes)] > 3 * sizes[max(sizes)]  # short sentences come many to a batch
    assert chunks == plan_batches(pairs, 32, shuffle=True, seed=1, sort_window=None, max_tokens=200)
    sv, tv = Vocab.build(p.src for p in pairs), Vocab.build(p.tgt for p in pairs)
    batches = list(
        iterate_batches(
            pairs, 32, shuffle=True, seed=1, src_vocab=sv, tgt_vocab=tv, sort_window=None, max_tokens=200
        )
    )
    assert [b.pairs for b in batches] == chunks
    for bad in (dict(sort_window=20), dict(shuffle=False)):
        args = dict(shuffle=True, seed=1, sort_window=None, max_tokens=200) | bad
        with pytest.raises(ValueError, match="max_tokens"):
            plan_batches(pairs, 32, **args)


def test_make_batch_alignment_links_are_exact():
    """Every link of every pair, and nothing else, is 1 in the batch's alignment tensor."""
    pairs = generate_corpus(50, seed=4)
    sv, tv = Vocab.build(p.src for p in pairs), Vocab.build(p.tgt for p in pairs)
    b = make_batch(pairs, sv, tv)
    expected = torch.zeros_like(b.align)
    for k, p in enumerate(pairs):
        for j, positions in enumerate(p.align):
            for i in positions:
                expected[k, j, i] = 1.0
        expected[k, len(p.tgt), len(p.src)] = 1.0
    assert torch.equal(b.align, expected)
