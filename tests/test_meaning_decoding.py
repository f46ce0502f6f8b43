"""What decoding *means*, checked against the model's equations written out by hand: greedy
takes the most likely word, beams are distinct and scored by their true log-probability, a
forced word conditions the rest, a look-here map is the attention used. Inputs are random,
asymmetric features, so a swapped axis or a wrong row shows."""

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from captioner.decoding import Guide, box_map, decode, greedy, images_to_batch, point_map
from captioner.hub import BUNDLED_WEIGHTS, load_model
from captioner.scenes import render_scene, scene_rng


def reference_step(model, word: int, h, c, features, override=None, previous=None):
    """One decoder step from the paper's equations and the model's raw weights (one image):
    returns log-probabilities of the next word (pad and start excluded), attention, gate, h, c.
    With `word_query` the query also holds the projected embedding of `word`, the word just
    said (docs/worlds.md); with `location_query`, each cell's key also holds the projected
    filters of `previous`, the last word's attention on the grid (uniform before the first)."""
    att = model.attention
    query = F.linear(h, att.hidden_proj.weight, att.hidden_proj.bias)
    if model.config.word_query:
        query = query + F.linear(model.embedding.weight[word], att.word_proj.weight,
                                 att.word_proj.bias)
    if model.config.location_query:
        g, conv = model.config.grid_size, att.location_conv
        filtered = F.conv2d(previous.reshape(1, 1, g, g), conv.weight, conv.bias,
                            padding=conv.weight.shape[-1] // 2)  # (1, filters, rows, columns)
        cells = filtered[0].reshape(filtered.shape[1], g * g).T  # row-major: cell = row*g + col
        query = query + F.linear(cells, att.location_proj.weight, att.location_proj.bias)
    energy = F.linear(torch.tanh(F.linear(features, att.feature_proj.weight, att.feature_proj.bias)
                                 + query), att.score.weight, att.score.bias)[:, 0]
    alpha = torch.exp(energy - energy.max())
    alpha = alpha / alpha.sum()
    if override is not None:
        alpha = torch.as_tensor(override, dtype=torch.float32).reshape(-1)
        alpha = alpha / alpha.sum()
    context = (alpha[:, None] * features).sum(0)
    gate = torch.sigmoid(F.linear(h, model.gate.weight, model.gate.bias))
    context = gate * context
    x = torch.cat([model.embedding.weight[word], context])
    lstm = model.lstm
    z = F.linear(x, lstm.weight_ih, lstm.bias_ih) + F.linear(h, lstm.weight_hh, lstm.bias_hh)
    i, f, g, o = z.chunk(4)
    c = torch.sigmoid(f) * c + torch.sigmoid(i) * torch.tanh(g)
    h = torch.sigmoid(o) * torch.tanh(c)
    logits = F.linear(torch.cat([h, context]), model.classifier.weight, model.classifier.bias)
    logp = logits - torch.logsumexp(logits, 0)
    logp[[model.vocab.pad_id, model.vocab.start_id]] = -np.inf
    return logp, alpha, gate, h, c


@torch.no_grad()
def replay(model, features, words, overrides=None):
    """Feed `words` (then <end> if absent) one by one through `reference_step`; returns per
    step (log-probabilities, attention, gate) and the total log-probability of the sequence."""
    vocab = model.vocab
    mean = features.mean(0)
    h, c = torch.tanh(model.init_h(mean)), torch.tanh(model.init_c(mean))
    ids = [vocab.index[w] for w in words]
    previous, steps, total = vocab.start_id, [], 0.0
    look = torch.full((features.shape[0],), 1.0 / features.shape[0])
    for t, word in enumerate(ids):
        logp, alpha, gate, h, c = reference_step(model, previous, h, c, features,
                                                 (overrides or {}).get(t), look)
        steps.append((logp, alpha, gate))
        look = alpha
        total += logp[word].item()
        previous = word
    return steps, total


@torch.no_grad()
def random_features(model, n=3, seed=1):
    """Asymmetric features straight from the encoder of random images."""
    g = torch.Generator().manual_seed(seed)
    size = model.config.image_size
    return model.encode(torch.randn(n, 3, size, size, generator=g) * 2)


@pytest.fixture(params=[False, True], ids=["query", "location-query"])
def peaky(make_model, request):
    """A tiny model with a sharp classifier, so decisions are clear of float noise; once as
    the paper's, once whose query also sees the last look (with weights that move it)."""
    model = make_model(seed=5, location_query=request.param)
    with torch.no_grad():
        model.classifier.weight.mul_(6)
        model.classifier.bias.normal_(0, 2, generator=torch.Generator().manual_seed(0))
        if request.param:
            model.attention.location_proj.weight.normal_(
                0, 2, generator=torch.Generator().manual_seed(1))
    return model


@torch.no_grad()
def test_model_step_is_the_attend_gate_lstm_equations(peaky):
    model, features = peaky, random_features(peaky)
    state, projected = model.init_state(features)
    words = torch.tensor([4, 7, 9])
    logits, new, alpha, gate = model.step(words, state, features, projected)
    for b in range(3):
        uniform = torch.full((features.shape[1],), 1.0 / features.shape[1])
        logp, ref_alpha, ref_gate, h, c = reference_step(model, words[b].item(), state.h[b],
                                                         state.c[b], features[b],
                                                         previous=uniform)
        want = logits[b].log_softmax(0)
        keep = torch.isfinite(logp)
        assert torch.allclose(want[keep], logp[keep], atol=1e-5)
        assert torch.allclose(alpha[b], ref_alpha, atol=1e-6)
        assert torch.allclose(gate[b], ref_gate, atol=1e-6)
        assert torch.allclose(new.h[b], h, atol=1e-5) and torch.allclose(new.c[b], c, atol=1e-5)


@torch.no_grad()
def test_teacher_forcing_and_loss_follow_the_same_equations(peaky):
    model, features = peaky, random_features(peaky, n=2)
    vocab = model.vocab
    sentences = [["red", "circle", "on", "the", "left"], ["a", "blue", "square"]]
    rows = [[vocab.start_id, *[vocab.index[w] for w in s], vocab.end_id] for s in sentences]
    width = max(map(len, rows))
    captions = torch.tensor([r + [vocab.pad_id] * (width - len(r)) for r in rows])
    logits, alphas = model(features, captions)
    loss, ce = model.loss(features, captions, attention_penalty=0.7)
    nll, tokens, penalty = 0.0, 0, 0.0
    for b, sentence in enumerate(sentences):
        steps, total = replay(model, features[b], [*sentence, "<end>"])
        nll -= total
        tokens += len(steps)
        coverage = torch.zeros(alphas.shape[2])
        for t, (logp, alpha, _) in enumerate(steps):
            assert torch.allclose(alphas[b, t], alpha, atol=1e-6)
            keep = torch.isfinite(logp)
            assert torch.allclose(logits[b, t].log_softmax(0)[keep], logp[keep], atol=1e-4)
            coverage += alpha
        penalty += ((1 - coverage) ** 2).sum().item()
    assert ce.item() == pytest.approx(nll / tokens, rel=1e-4)
    cells = alphas.shape[2]
    assert loss.item() == pytest.approx(nll / tokens + 0.7 * penalty / 2 / cells, rel=1e-4)
    default, _ = model.loss(features, captions)  # the penalty weighs 1 unless told otherwise
    assert default.item() == pytest.approx(nll / tokens + penalty / 2 / cells, rel=1e-4)


def check_against_reference(model, features, caption, overrides=None, top_k=0):
    """The caption's words, score, attention, gate and alternatives are what the equations
    give for those words (length penalty 1: the score is the mean log-probability)."""
    words = caption.tokens + ([] if caption.truncated else ["<end>"])
    steps, total = replay(model, features, words, overrides)
    assert caption.score == pytest.approx(total / len(words), abs=1e-4)
    for t in range(len(caption.tokens)):
        logp, alpha, gate = steps[t]
        assert np.allclose(caption.attention[t].reshape(-1), alpha.numpy(), atol=1e-5)
        assert caption.gate[t] == pytest.approx(gate.mean().item(), abs=1e-5)
        if top_k:
            best = logp.topk(top_k)
            assert [w for w, _ in caption.alternatives[t]] == \
                [model.vocab.words[i] for i in best.indices]
            assert np.allclose([p for _, p in caption.alternatives[t]], best.values.exp(),
                               atol=1e-5)
    return steps


@pytest.mark.parametrize("seed", [1, 2])
def test_greedy_takes_the_most_likely_word_each_step(peaky, seed):
    features = random_features(peaky, seed=seed)
    for b, caption in enumerate(greedy(peaky, features, max_len=8, top_k=3)):
        steps = check_against_reference(peaky, features[b], caption, top_k=3)
        words = caption.tokens + ([] if caption.truncated else ["<end>"])
        for (logp, _, _), word in zip(steps, words):
            assert peaky.vocab.words[logp.argmax().item()] == word


@pytest.mark.parametrize("seed", [1, 2, 3])
def test_beams_are_distinct_truly_scored_and_at_least_as_good_as_greedy(peaky, seed):
    features = random_features(peaky, seed=seed)
    plain = greedy(peaky, features, max_len=8)
    for b, caption in enumerate(decode(peaky, features, beam_size=3, max_len=8, top_k=2)):
        check_against_reference(peaky, features[b], caption, top_k=2)
        texts = [tuple(tokens) for tokens, _ in caption.beams]
        assert len(texts) >= 3 and len(set(texts)) == len(texts)
        assert list(texts[0]) == caption.tokens
        scores = [score for _, score in caption.beams]
        assert scores == sorted(scores, reverse=True)
        for tokens, score in caption.beams:
            words = tokens if len(tokens) == 8 and tokens[-1:] != ["<end>"] else \
                [*tokens, "<end>"]
            _, total = replay(peaky, features[b], words)
            assert score == pytest.approx(total / len(words), abs=1e-4)
        assert caption.score >= plain[b].score - 1e-6


@pytest.fixture(scope="module")
def scenes_model():
    """A trained scenes model: the bundled ensemble's first member, since the reference
    equations above are one model's (the ensemble's mean of them: tests/test_ensemble.py)."""
    return load_model(BUNDLED_WEIGHTS).members[0]


@pytest.mark.parametrize("beam_size", [1, 3])
def test_a_forced_word_conditions_the_rest_of_the_caption(scenes_model, beam_size):
    model = scenes_model
    images = [render_scene(scene_rng(7, "test", i), 64).image for i in range(2)]
    with torch.no_grad():
        features = model.encode(images_to_batch(model, images))
    prefix = ["there", "is"]
    forced = decode(model, features, beam_size=beam_size, max_len=12, guide=Guide(prefix=prefix))
    for b, caption in enumerate(forced):
        assert caption.tokens[:2] == prefix
        steps = check_against_reference(model, features[b], caption)
        if beam_size == 1:  # every later word is the most likely one *after the forced words*
            words = caption.tokens + ([] if caption.truncated else ["<end>"])
            for (logp, _, _), word in list(zip(steps, words))[2:]:
                assert model.vocab.words[logp.argmax().item()] == word
        else:
            assert all(tokens[:2] == prefix for tokens, _ in caption.beams)
        # "there is" is followed by an article, as in every training caption
        assert caption.tokens[2] in ("a", "an")


@pytest.mark.parametrize("beam_size", [1, 3])
def test_look_here_map_is_the_attention_used_at_that_word_only(peaky, beam_size):
    features = random_features(peaky, n=2, seed=6)
    heat = np.zeros((4, 4))
    heat[3, 0], heat[3, 1] = 3.0, 1.0  # bottom-left, unnormalised, not symmetric
    guide = Guide(attention={1: heat})
    for b, caption in enumerate(decode(peaky, features, beam_size=beam_size, max_len=8,
                                       guide=guide)):
        assert len(caption.tokens) >= 2
        assert np.allclose(caption.attention[1], heat / heat.sum(), atol=1e-6)
        check_against_reference(peaky, features[b], caption, overrides={1: heat})


def test_point_map_peaks_at_x_column_and_y_row():
    centres = np.array([0.125, 0.375, 0.625, 0.875])
    heat = point_map(centres, x=0.125, y=0.875)  # bottom-left corner cell
    assert np.unravel_index(heat.argmax(), heat.shape) == (3, 0)
    assert heat.sum() == pytest.approx(1.0)
    sigma = 0.125
    gauss = np.exp(-0.5 * ((centres - 0.125) / sigma) ** 2)
    gauss_y = np.exp(-0.5 * ((centres - 0.875) / sigma) ** 2)
    want = np.outer(gauss_y, gauss) / np.outer(gauss_y, gauss).sum()
    assert np.allclose(heat, want, atol=1e-6)
    # an explicit sigma is used as given
    wide = point_map(centres, x=0.375, y=0.125, sigma=0.5)
    gx = np.exp(-0.5 * ((centres - 0.375) / 0.5) ** 2)
    gy = np.exp(-0.5 * ((centres - 0.125) / 0.5) ** 2)
    assert np.allclose(wide, np.outer(gy, gx) / np.outer(gy, gx).sum(), atol=1e-6)


def test_box_map_covers_the_cells_inside_the_box():
    centres = np.array([0.125, 0.375, 0.625, 0.875])
    heat = box_map(centres, (0.0, 0.5, 0.4, 1.0))  # left half of the bottom half
    want = np.zeros((4, 4))
    want[2:, :2] = 0.25
    assert np.allclose(heat, want)
    # a thin box between centres gets the nearest column, rows as given
    thin = box_map(centres, (0.4, 0.1, 0.45, 0.4))
    want = np.zeros((4, 4))
    want[:2, 1] = 0.5
    assert np.allclose(thin, want)


def test_point_map_default_width_on_a_two_cell_grid():
    centres = np.array([0.25, 0.75])
    heat = point_map(centres, x=0.9, y=0.1)
    sigma = 0.25  # half the spacing of the cell centres
    gx = np.exp(-0.5 * ((centres - 0.9) / sigma) ** 2)
    gy = np.exp(-0.5 * ((centres - 0.1) / sigma) ** 2)
    assert np.allclose(heat, np.outer(gy, gx) / np.outer(gy, gx).sum(), atol=1e-6)
    assert heat[0, 1] == heat.max()  # top-right


@pytest.mark.parametrize("x, y, cell", [(0.0, 1.0, (3, 0)), (1.0, 0.0, (0, 3)),
                                        (0.4, 1.0, (3, 1))])
def test_point_far_from_every_centre_puts_all_weight_on_the_nearest_cell(x, y, cell):
    centres = np.array([0.125, 0.375, 0.625, 0.875])
    heat = point_map(centres, x=x, y=y, sigma=1e-3)  # every Gaussian weight underflows
    want = np.zeros((4, 4))
    want[cell] = 1.0
    assert np.array_equal(heat, want)


@pytest.mark.parametrize("x, y", [(0, 0), (1, 1), (0, 1), (1, 0)])
def test_point_map_accepts_the_image_edges(x, y):
    heat = point_map(np.array([0.125, 0.375, 0.625, 0.875]), x, y)
    assert heat[3 * y, 3 * x] == heat.max()


@pytest.mark.parametrize("x, y", [(1.01, 0.5), (0.5, 1.01), (-0.01, 0.5), (0.5, -0.01),
                                  (0.5, 1.5)])
def test_point_outside_the_image_is_refused(x, y):
    with pytest.raises(ValueError, match=r"must be inside the image: x, y in \[0, 1\]"):
        point_map(np.array([0.25, 0.75]), x, y)


def test_box_edges_on_cell_centres_include_those_cells():
    centres = np.array([0.125, 0.375, 0.625, 0.875])
    heat = box_map(centres, (0.125, 0.375, 0.375, 0.625))
    want = np.zeros((4, 4))
    want[1:3, 0:2] = 0.25
    assert np.allclose(heat, want)
    assert np.allclose(box_map(centres, (0, 0, 1, 1)), np.full((4, 4), 1 / 16))


@pytest.mark.parametrize("box", [(0.5, 0, 0.5, 1), (0, 0.5, 1, 0.5), (0.2, 0, 1.5, 1),
                                 (0, 0.2, 1, 1.5), (-0.1, 0, 1, 1), (0, -0.1, 1, 1),
                                 (0.6, 0, 0.4, 1)])
def test_empty_or_outside_boxes_are_refused(box):
    with pytest.raises(ValueError, match=r"must be x0 < x1, y0 < y1, all in \[0, 1\]"):
        box_map(np.array([0.25, 0.75]), box)


def test_unknown_prefix_words_are_all_named(tiny_model):
    with pytest.raises(ValueError) as error:
        decode(tiny_model, random_features(tiny_model, n=1), guide=Guide(prefix="zebra a lamp"))
    assert str(error.value) == ("prefix word(s) not in the model's vocabulary: 'zebra', 'lamp'")


def test_one_guide_per_image_or_a_clear_error(tiny_model):
    features = random_features(tiny_model, n=2)
    with pytest.raises(ValueError, match="^got 1 guides for 2 images$"):
        decode(tiny_model, features, beam_size=1, guide=[Guide(prefix="red")])


def test_decode_defaults_are_beam_3_up_to_20_words_without_alternatives(peaky):
    features = random_features(peaky, n=2, seed=1)
    default = decode(peaky, features)
    explicit = decode(peaky, features, beam_size=3, max_len=20, top_k=0)
    assert [c.tokens for c in default] == [c.tokens for c in explicit]
    assert [c.beams for c in default] == [c.beams for c in explicit]
    assert all(c.alternatives == [] for c in default)
    assert all(len(c.tokens) == 20 and c.truncated for c in default)  # this model never ends


def test_beam_size_and_length_penalty_reach_the_search(peaky):
    features = random_features(peaky, n=1, seed=2)
    wide = decode(peaky, features, beam_size=5, max_len=6, length_penalty=0.5)[0]
    assert len({tuple(t) for t, _ in wide.beams}) >= 5
    words = wide.tokens + ([] if wide.truncated else ["<end>"])
    _, total = replay(peaky, features[0], words)
    assert wide.score == pytest.approx(total / len(words) ** 0.5, abs=1e-4)


def test_images_go_to_the_models_device(tiny_model):
    from PIL import Image

    batch = images_to_batch(tiny_model.to("meta"), [Image.new("RGB", (40, 30), (200, 10, 10))])
    assert batch.device.type == "meta"


@pytest.mark.parametrize("beam_size", [1, 3])
def test_per_image_guides_of_different_lengths_steer_only_their_image(peaky, beam_size):
    features = random_features(peaky, n=2, seed=7)
    free = decode(peaky, features, beam_size=beam_size, max_len=6)
    guided = decode(peaky, features, beam_size=beam_size, max_len=6,
                    guide=[Guide(prefix="green square on"), Guide()])
    assert guided[0].tokens[:3] == ["green", "square", "on"]
    assert guided[1].tokens == free[1].tokens and guided[1].score == free[1].score


def bad_map(kind):
    heat = np.full(16, 0.1)
    if kind == "size":
        return heat[:15]
    if kind == "nan":
        heat[5] = np.nan
    if kind == "negative":
        heat[3] = -0.05  # the sum stays positive
    if kind == "zero":
        heat[:] = 0.0
    if kind == "infinite":
        heat[7] = np.inf
    return heat


@pytest.mark.parametrize("kind", ["size", "nan", "negative", "zero", "infinite"])
def test_each_kind_of_bad_look_here_map_is_refused_on_its_own(tiny_model, kind):
    features = random_features(tiny_model, n=1)
    with pytest.raises(ValueError) as error:
        decode(tiny_model, features, beam_size=1, max_len=3,
               guide=Guide(attention={1: bad_map(kind)}))
    assert str(error.value) == ("attention map for word 1 must hold 16 non-negative values "
                                "with a positive sum")


def test_a_faint_map_is_used_scaled_to_one(tiny_model):
    heat = np.zeros((4, 4))
    heat[2, 1], heat[0, 3] = 0.03, 0.01  # sums to 0.04: unnormalised, asymmetric, valid
    features = random_features(tiny_model, n=1)
    (caption,) = decode(tiny_model, features, beam_size=2, max_len=3,
                        guide=Guide(attention={0: heat.tolist()}))
    assert np.allclose(caption.attention[0], heat / heat.sum(), atol=1e-6)


def test_steering_tensors_are_built_on_the_features_device(tiny_model):
    """Forced words and look-here maps go to the decoding device, one copy per beam (checked on
    torch's "meta" device: this machine has no GPU)."""
    from captioner.decoding import _steering

    word = tiny_model.vocab.words[-1]
    heat = np.zeros((4, 4))
    heat[0, 3] = 1.0
    steering = _steering(tiny_model, Guide(prefix=word, attention={1: heat}), batch=1,
                         copies=3, device="meta")
    rows, maps = steering.overrides[1]
    assert {steering.forced.device.type, rows.device.type, maps.device.type} == {"meta"}
    assert steering.forced.shape[0] == rows.shape[0] == maps.shape[0] == 3


def test_a_special_token_in_a_prefix_is_named_as_such(tiny_model):
    from captioner.decoding import prefix_ids

    with pytest.raises(ValueError) as error:
        prefix_ids(tiny_model.vocab, "a <end> b")
    assert str(error.value) == ("<end> is one of the model's special tokens, not a word: "
                                "give only words")


@pytest.mark.parametrize("length, shown", [(58, "'" + "q" * 58 + "'"),  # 60 characters: whole
                                           (59, "'" + "q" * 58 + "…")])  # 61: cut at 59
def test_unknown_prefix_words_are_listed_whole_up_to_60_characters(tiny_model, length, shown):
    from captioner.decoding import prefix_ids

    with pytest.raises(ValueError) as error:
        prefix_ids(tiny_model.vocab, "q" * length)
    assert str(error.value) == f"prefix word(s) not in the model's vocabulary: {shown}"
