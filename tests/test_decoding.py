"""Greedy and beam search: shapes, scores, beam 1 == greedy, termination, batching."""

import numpy as np
import pytest
import torch
from PIL import Image

from captioner.decoding import (
    Caption,
    Guide,
    beam_search,
    box_map,
    caption_images,
    decode,
    greedy,
    point_map,
)


def features_for(model, n, seed=0):
    generator = torch.Generator().manual_seed(seed)
    size = model.config.image_size
    with torch.no_grad():
        return model.encode(torch.randn(n, 3, size, size, generator=generator))


def check_caption(model, caption, max_len):
    assert isinstance(caption, Caption)
    grid = model.config.grid_size
    assert all(isinstance(w, str) and w for w in caption.tokens)
    assert "<pad>" not in caption.tokens and "<start>" not in caption.tokens
    assert "<end>" not in caption.tokens
    assert len(caption.tokens) <= max_len
    assert caption.attention.shape == (len(caption.tokens), grid, grid)
    assert np.allclose(caption.attention.sum(axis=(1, 2)), 1.0, atol=1e-5)
    assert (caption.attention >= 0).all()
    assert np.isfinite(caption.score) and caption.score <= 0
    assert caption.text == " ".join(caption.tokens)


def teacher_forced(model, features, caption, max_len):
    """Recompute a caption's score and attention with teacher forcing."""
    vocab = model.vocab
    ids = [vocab.index[w] for w in caption.tokens]
    ended = len(ids) < max_len
    if ended:
        ids.append(vocab.end_id)
    captions = torch.tensor([[vocab.start_id, *ids]])
    with torch.no_grad():
        logits, alphas = model(features.unsqueeze(0), captions)
    logp = logits[0].log_softmax(dim=1).gather(1, captions[0, 1:, None]).squeeze(1)
    grid = model.config.grid_size
    attention = alphas[0, : len(caption.tokens)].reshape(-1, grid, grid).numpy()
    return logp.sum().item() / len(ids), attention


@pytest.mark.parametrize("beam_size", [1, 2, 3, 5])
def test_one_caption_per_image_with_attention(make_model, beam_size):
    model = make_model(seed=3)
    features = features_for(model, 4)
    captions = decode(model, features, beam_size=beam_size, max_len=7)
    assert len(captions) == 4
    for b, caption in enumerate(captions):
        check_caption(model, caption, 7)
        score, attention = teacher_forced(model, features[b], caption, 7)
        assert caption.score == pytest.approx(score, abs=1e-4)
        np.testing.assert_allclose(caption.attention, attention, atol=1e-5)


@pytest.mark.parametrize("seed", [0, 1, 2, 3, 4, 5])
def test_beam_size_one_is_greedy(make_model, seed):
    model = make_model(seed=seed, grid_size=3 + seed % 3)
    features = features_for(model, 5, seed=seed)
    # raising <end> a little makes it often the runner-up word: an <end> that the beam did not
    # keep must not end the search (a random model rarely puts <end> second by itself)
    for end_boost in (0.0, 0.25, 0.5, 0.75):
        with torch.no_grad():
            model.classifier.bias[model.vocab.end_id] += end_boost
        for max_len in (3, 12):
            for g, b in zip(greedy(model, features, max_len=max_len),
                            beam_search(model, features, beam_size=1, max_len=max_len)):
                assert g.tokens == b.tokens
                assert g.score == pytest.approx(b.score, abs=1e-5)
                np.testing.assert_allclose(g.attention, b.attention, atol=1e-6)


def bias_end(model, value):
    with torch.no_grad():
        model.classifier.bias[model.vocab.end_id] = value
    return model


@pytest.mark.parametrize("beam_size", [1, 3])
def test_decoding_terminates_on_a_model_that_never_ends(make_model, beam_size):
    model = bias_end(make_model(seed=1), -1e4)
    features = features_for(model, 2)
    for caption in decode(model, features, beam_size=beam_size, max_len=9):
        assert len(caption.tokens) == 9
        check_caption(model, caption, 9)
        assert caption.score > -100  # no <end> (log p ~ -1e4) was counted in the score


@pytest.mark.parametrize("beam_size", [1, 3, 4])
def test_model_that_ends_immediately_gives_empty_captions(make_model, beam_size):
    model = bias_end(make_model(seed=2), 1e4)
    for caption in decode(model, features_for(model, 3), beam_size=beam_size, max_len=10):
        assert caption.tokens == []
        assert caption.attention.shape == (0, 4, 4)
        assert caption.score == pytest.approx(0.0, abs=1e-3)


def test_wider_beams_give_valid_captions(make_model):
    model = make_model(seed=4)
    features = features_for(model, 3, seed=4)
    for k in (2, 5, 8):
        captions = beam_search(model, features, beam_size=k, max_len=6)
        assert len(captions) == 3
        for b, caption in enumerate(captions):
            check_caption(model, caption, 6)
            score, _ = teacher_forced(model, features[b], caption, 6)
            assert caption.score == pytest.approx(score, abs=1e-4)


@pytest.mark.parametrize("beam_size", [1, 3])
def test_batched_decoding_equals_one_by_one(make_model, beam_size):
    model = make_model(seed=5)
    features = features_for(model, 5, seed=1)
    batched = decode(model, features, beam_size=beam_size, max_len=8)
    for b in range(5):
        (single,) = decode(model, features[b:b + 1], beam_size=beam_size, max_len=8)
        assert single.tokens == batched[b].tokens
        assert single.score == pytest.approx(batched[b].score, abs=1e-4)
        np.testing.assert_allclose(single.attention, batched[b].attention, atol=1e-5)


def test_length_penalty(make_model):
    model = bias_end(make_model(seed=6), -1e4)  # every caption is max_len long
    features = features_for(model, 2)
    plain = greedy(model, features, max_len=5, length_penalty=1.0)
    total = greedy(model, features, max_len=5, length_penalty=0.0)
    for p, t in zip(plain, total):
        assert p.tokens == t.tokens
        assert t.score == pytest.approx(5 * p.score, rel=1e-5)


def test_caption_images_on_pil_images_of_odd_sizes(make_model):
    model = make_model(seed=7)
    rng = np.random.default_rng(0)
    images = [Image.fromarray(rng.integers(0, 256, (h, w, 3), dtype=np.uint8))
              for w, h in [(37, 23), (1, 1), (200, 3), (64, 64), (31, 97)]]
    images.append(Image.new("L", (13, 17), 90))
    captions = caption_images(model, images, beam_size=3, max_len=6)
    assert len(captions) == len(images)
    for caption in captions:
        check_caption(model, caption, 6)
    # batching inside caption_images does not change anything
    in_pairs = caption_images(model, images, beam_size=3, max_len=6, batch_size=2)
    assert [c.tokens for c in in_pairs] == [c.tokens for c in captions]
    greedy_captions = caption_images(model, images, beam_size=1, max_len=6)
    assert len(greedy_captions) == len(images)
    assert caption_images(model, [], beam_size=3) == []


def test_caption_images_rejects_bad_arguments(tiny_model):
    image = Image.new("RGB", (8, 8))
    with pytest.raises(ValueError, match="at least 1"):
        caption_images(tiny_model, [image], beam_size=0)
    with pytest.raises(ValueError, match="at least 1"):
        caption_images(tiny_model, [image], max_len=0)


class BigramModel:
    """A scripted stand-in for Captioner: the next word depends only on the previous one."""

    def __init__(self, words, table, grid=2):
        from captioner.model import CaptionerConfig
        from captioner.vocab import SPECIALS, Vocabulary

        self.vocab = Vocabulary([*SPECIALS, *words])
        self.config = CaptionerConfig(vocab=self.vocab.words, encoder="resnet18", grid_size=grid)
        probs = torch.full((len(self.vocab), len(self.vocab)), 1e-3)
        for previous, row in table.items():
            for word, p in row.items():
                probs[self.vocab.index[previous], self.vocab.index[word]] = p
        self.logits = probs.log()

    def init_state(self, features):
        from captioner.model import DecoderState

        zeros = torch.zeros(features.shape[0], 1)
        return DecoderState(zeros, zeros, zeros), features

    def step(self, words, state, features, projected, override=None):
        alpha = torch.full(features.shape[:2], 1 / features.shape[1])
        return self.logits[words], state, alpha, torch.ones(len(words), 1)


def test_beam_search_does_not_stop_on_a_pool_of_early_junk():
    """Two unlikely captions end early and fill a beam-2 pool while the likely caption
    "a red square" is still being written: the search must go on and return it."""
    model = BigramModel(["a", "red", "square", "junk"], {
        "<start>": {"a": 0.9, "junk": 0.09},
        "a": {"red": 0.98, "square": 0.015},
        "red": {"square": 0.99},
        "square": {"<end>": 0.99},
        "junk": {"<end>": 0.99},
    })
    features = torch.zeros(1, 4, 3)
    (expected,) = greedy(model, features, max_len=10)
    assert expected.tokens == ["a", "red", "square"]
    for k in (2, 3, 4):
        (caption,) = beam_search(model, features, beam_size=k, max_len=10)
        assert caption.tokens == ["a", "red", "square"], k
        assert caption.score == pytest.approx(expected.score)
        assert caption.attention.shape == (3, 2, 2)


# --- questioning the model: alternatives, gate, beams, forced prefix, "look here" ---


@pytest.mark.parametrize("beam_size", [1, 3])
def test_alternatives_and_gate_per_word(make_model, beam_size):
    model = make_model(seed=4)
    captions = decode(model, features_for(model, 3), beam_size=beam_size, max_len=6, top_k=4)
    for caption in captions:
        assert len(caption.alternatives) == len(caption.gate) == len(caption.tokens)
        assert ((caption.gate >= 0) & (caption.gate <= 1)).all()
        for word, ranked in zip(caption.tokens, caption.alternatives):
            probs = [p for _, p in ranked]
            assert len(ranked) == 4 and all(0 <= p <= 1 for p in probs)
            assert probs == sorted(probs, reverse=True)
            if beam_size == 1:  # greedy picks the most likely word
                assert ranked[0][0] == word


def test_alternatives_are_the_distribution_that_chose_the_word(make_model):
    """Teacher-forced probabilities of each word agree with the alternatives' figure."""
    model = make_model(seed=4)
    features = features_for(model, 1)
    (caption,) = decode(model, features, beam_size=1, max_len=6, top_k=len(model.vocab))
    ids = [model.vocab.start_id] + [model.vocab.index[w] for w in caption.tokens]
    with torch.no_grad():
        logits, _ = model(features, torch.tensor([ids]))
    probs = logits[0].softmax(dim=1)
    for t, word in enumerate(caption.tokens):
        assert dict(caption.alternatives[t])[word] == pytest.approx(
            probs[t, model.vocab.index[word]].item(), abs=1e-5)


def test_beams_list_every_finished_hypothesis_best_first(make_model):
    model = make_model(seed=5)
    for caption in decode(model, features_for(model, 3), beam_size=3, max_len=6):
        assert caption.beams and caption.beams[0] == (caption.tokens, caption.score)
        scores = [s for _, s in caption.beams]
        assert scores == sorted(scores, reverse=True)
    greedy_caption = decode(model, features_for(model, 1), beam_size=1, max_len=6)[0]
    assert greedy_caption.beams == []


def test_truncated_flag(make_model):
    model = make_model(seed=2)
    with torch.no_grad():
        model.classifier.bias[model.vocab.end_id] = -1e4  # never ends
    for beam_size in (1, 2):
        (caption,) = decode(model, features_for(model, 1), beam_size=beam_size, max_len=4)
        assert caption.truncated and len(caption.tokens) == 4
    with torch.no_grad():
        model.classifier.bias[model.vocab.end_id] = 1e4  # ends at once
    for beam_size in (1, 2):
        (caption,) = decode(model, features_for(model, 1), beam_size=beam_size, max_len=4)
        assert not caption.truncated and caption.tokens == []


@pytest.mark.parametrize("beam_size", [1, 3])
def test_own_caption_as_prefix_reproduces_it(make_model, beam_size):
    model = make_model(seed=6)
    features = features_for(model, 3)
    captions = decode(model, features, beam_size=beam_size, max_len=8, top_k=3)
    guides = [Guide(prefix=c.tokens) for c in captions]
    forced = decode(model, features, beam_size=beam_size, max_len=8, top_k=3, guide=guides)
    for c, f in zip(captions, forced):
        assert f.tokens == c.tokens and f.score == pytest.approx(c.score, abs=1e-6)
        np.testing.assert_allclose(f.attention, c.attention, atol=1e-6)
        np.testing.assert_allclose(f.gate, c.gate, atol=1e-6)
        for ranked_f, ranked_c in zip(f.alternatives, c.alternatives, strict=True):
            assert [w for w, _ in ranked_f] == [w for w, _ in ranked_c]
            assert [p for _, p in ranked_f] == pytest.approx([p for _, p in ranked_c])


@pytest.mark.parametrize("beam_size", [1, 2])
def test_forced_prefix_words_come_first_and_are_traced(make_model, beam_size):
    model = make_model(seed=7)
    (caption,) = decode(model, features_for(model, 1), beam_size=beam_size, max_len=6, top_k=2,
                        guide=Guide(prefix="the blue circle"))
    assert caption.tokens[:3] == ["the", "blue", "circle"]
    assert len(caption.attention) == len(caption.gate) == len(caption.alternatives) \
        == len(caption.tokens)
    assert np.allclose(caption.attention.sum(axis=(1, 2)), 1.0, atol=1e-5)


def test_prefix_word_outside_the_vocabulary_is_named(tiny_model):
    with pytest.raises(ValueError, match="'zebra'"):
        decode(tiny_model, features_for(tiny_model, 1), beam_size=1,
               guide=Guide(prefix="a zebra"))
    with pytest.raises(ValueError, match="<end>"):
        decode(tiny_model, features_for(tiny_model, 1), beam_size=2,
               guide=Guide(prefix=["a", "<end>"]))


@pytest.mark.parametrize("beam_size", [1, 3])
def test_overriding_with_own_attention_reproduces_the_caption(make_model, beam_size):
    model = make_model(seed=8)
    features = features_for(model, 2)
    captions = decode(model, features, beam_size=beam_size, max_len=7)
    guides = [Guide(attention=dict(enumerate(c.attention))) for c in captions]
    again = decode(model, features, beam_size=beam_size, max_len=7, guide=guides)
    for c, a in zip(captions, again):
        assert a.tokens == c.tokens
        np.testing.assert_allclose(a.attention, c.attention, atol=1e-6)


def test_look_here_map_is_used_and_changes_the_context(make_model):
    model = make_model(seed=9)
    features = features_for(model, 1)
    centres = model.encoder.cell_centres()
    corner = point_map(centres, 0.0, 0.0)
    (caption,) = decode(model, features, beam_size=1, max_len=5, top_k=3,
                        guide=Guide(attention={0: corner}))
    np.testing.assert_allclose(caption.attention[0], corner, atol=1e-6)
    (plain,) = decode(model, features, beam_size=1, max_len=5, top_k=3)
    assert caption.alternatives[0] != plain.alternatives[0]


def test_look_here_maps_land_on_the_true_cell_centres():
    centres = np.array([0.1, 0.3, 0.5, 0.7, 0.9])
    heat = point_map(centres, 0.7, 0.3)
    assert heat.shape == (5, 5) and heat.sum() == pytest.approx(1)
    assert np.unravel_index(heat.argmax(), heat.shape) == (1, 3)  # (row = y, column = x)
    box = box_map(centres, (0.25, 0.45, 0.75, 0.95))  # centres 0.3..0.7 in x, 0.5..0.9 in y
    assert set(zip(*np.nonzero(box))) == {(r, c) for r in (2, 3, 4) for c in (1, 2, 3)}
    assert np.allclose(box[box > 0], 1 / 9)
    tiny = box_map(centres, (0.62, 0.0, 0.68, 0.05))  # between centres: the nearest cell
    assert list(zip(*np.nonzero(tiny))) == [(0, 3)]
    with pytest.raises(ValueError, match="inside the image"):
        point_map(centres, 1.2, 0.5)
    with pytest.raises(ValueError, match="x0 < x1"):
        box_map(centres, (0.5, 0.5, 0.4, 0.6))


def test_bad_look_here_map_is_refused(tiny_model):
    with pytest.raises(ValueError, match="non-negative"):
        decode(tiny_model, features_for(tiny_model, 1), beam_size=1,
               guide=Guide(attention={0: np.zeros(3)}))
