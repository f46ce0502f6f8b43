"""Property-based tests (hypothesis) on tiny random models and random inputs: decoding
invariants, save/load identity and the vocabulary round trip. Few examples, no deadlines,
derandomized so a failure reproduces."""

import tempfile

import numpy as np
import pytest
import torch
from conftest import tiny_config
from hypothesis import Phase, given, settings
from hypothesis import strategies as st

from captioner.decoding import beam_search, decode, greedy
from captioner.hub import load_model
from captioner.model import Captioner
from captioner.vocab import END, PAD, START, UNK, Vocabulary, tokenize

# No shrinking phase: a failure reports the example hypothesis found, at once.
FEW = settings(max_examples=12, deadline=None, derandomize=True,
               phases=[Phase.explicit, Phase.reuse, Phase.generate])

models = st.fixed_dictionaries({
    "seed": st.integers(0, 2**16),
    "grid": st.integers(2, 5),
    # shifts how likely <end> is: from captions that stop at once to ones that never stop
    "end_bias": st.sampled_from([-1e4, -2.0, 0.0, 0.5, 1.0, 1.5, 2.0, 1e4]),
    "images": st.integers(1, 3),
})


def random_model_and_features(spec) -> tuple[Captioner, torch.Tensor]:
    torch.manual_seed(spec["seed"])
    model = Captioner(tiny_config(grid_size=spec["grid"])).eval()
    with torch.no_grad():
        model.classifier.bias[model.vocab.end_id] += spec["end_bias"]
        features = model.encode(torch.randn(spec["images"], 3, 32, 32))
    return model, features


@settings(FEW, max_examples=20)
@given(spec=models, max_len=st.integers(1, 12))
def test_beam_search_of_width_one_is_greedy(spec, max_len):
    """beam_search(beam_size=1) is greedy decoding: same words, score and attention (a raised
    <end> bias often makes <end> the runner-up word, which must not end the search)."""
    model, features = random_model_and_features(spec)
    for g, b in zip(greedy(model, features, max_len=max_len),
                    beam_search(model, features, beam_size=1, max_len=max_len), strict=True):
        assert g.tokens == b.tokens
        assert g.score == pytest.approx(b.score, abs=1e-5)
        np.testing.assert_allclose(g.attention, b.attention, atol=1e-6)


@FEW
@given(spec=models, max_len=st.integers(1, 10), beam=st.integers(1, 4))
def test_decoding_ends_within_max_len_with_one_normalised_map_per_word(spec, max_len, beam):
    """Every caption stops by max_len words (exactly max_len when <end> is never likely), has
    one grid x grid attention map per word, and every map is a distribution (>= 0, sums to 1)."""
    model, features = random_model_and_features(spec)
    captions = decode(model, features, beam_size=beam, max_len=max_len)
    assert len(captions) == spec["images"]
    for caption in captions:
        assert len(caption.tokens) <= max_len
        if spec["end_bias"] <= -1e4:
            assert len(caption.tokens) == max_len
        if spec["end_bias"] >= 1e4:
            assert caption.tokens == []
        assert caption.attention.shape == (len(caption.tokens), spec["grid"], spec["grid"])
        assert (caption.attention >= 0).all()
        np.testing.assert_allclose(caption.attention.sum(axis=(1, 2)), 1.0, atol=1e-5)
        assert caption.score <= 1e-6 and set(caption.tokens).isdisjoint([PAD, START, END])


@settings(FEW, max_examples=6)
@given(spec=models, beam=st.integers(1, 3))
def test_saved_and_reloaded_model_decodes_identically(spec, beam):
    """save -> load_model gives bit-identical captions, scores and attention."""
    model, features = random_model_and_features(spec)
    with tempfile.TemporaryDirectory() as folder:
        loaded = load_model(model.save(folder))
    for a, b in zip(decode(model, features, beam_size=beam, max_len=6),
                    decode(loaded, features, beam_size=beam, max_len=6), strict=True):
        assert a.tokens == b.tokens and a.score == b.score
        np.testing.assert_array_equal(a.attention, b.attention)


words = st.text("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789'",
                min_size=1, max_size=6)
captions = st.lists(st.lists(words, min_size=0, max_size=8).map(" , ".join), min_size=1,
                    max_size=6)


@FEW
@given(corpus=captions, min_freq=st.integers(1, 3), max_len=st.integers(1, 10))
def test_vocabulary_round_trip(corpus, min_freq, max_len):
    """encode -> decode gives the tokenised caption (cut at max_len), words seen fewer than
    min_freq times as <unk>; the saved word list rebuilds the same vocabulary."""
    vocab = Vocabulary.build(corpus, min_freq=min_freq)
    counts = {}
    for caption in corpus:
        for word in tokenize(caption):
            counts[word] = counts.get(word, 0) + 1
    for caption in corpus:
        expected = [w if counts[w] >= min_freq else UNK for w in tokenize(caption)][:max_len]
        ids = vocab.encode(caption, max_len)
        assert ids[0] == vocab.start_id and ids[-1] == vocab.end_id
        assert vocab.decode(ids) == expected
        assert tokenize(" ".join(tokenize(caption))) == tokenize(caption)
    again = Vocabulary(vocab.words)
    assert again.index == vocab.index and len(again) == len(set(vocab.words))
