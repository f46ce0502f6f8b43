"""Grounding and steering training (captioner.grounding): which words name which objects,
the cells each object covers, the losses' meaning, and that training with them really moves
attention onto the named objects and makes a colour word follow the look."""

import numpy as np
import pytest
import torch
from datasets import Dataset

from captioner.decoding import Guide, box_map, decode
from captioner.grounding import (
    attribute_ids,
    cell_words_loss,
    draw_steering,
    grounding_loss,
    named_objects,
    scene_truth,
    steered_logits,
    steering_loss,
    word_objects,
)
from captioner.objective import Objective
from captioner.vocab import SPECIALS, Vocabulary

# Listed in an order unlike the caption's, so that a word pointing at "the first object" fails.
SQUARE = {"shape": "square", "color": "blue", "size": "big", "box": [12, 0, 32, 6]}
CIRCLE_1 = {"shape": "circle", "color": "red", "size": "small", "box": [0, 20, 8, 32]}
CIRCLE_2 = {"shape": "circle", "color": "red", "size": "small", "box": [10, 20, 18, 32]}
HIDDEN_GREEN = {"shape": "hexagon", "color": "green", "size": "small", "box": [0, 0, 8, 8],
                "visible": 0.1}
WORDS = ["a", "two", "small", "big", "red", "blue", "green", "circles", "circle", "square",
         "to", "the", "left", "of", "above"]


def test_word_objects_name_each_word_s_objects_and_a_count_its_whole_group():
    caption = "Two small red circles to the left of a big blue square."
    bits = word_objects(caption, [SQUARE, CIRCLE_1, CIRCLE_2], max_len=40)
    # <start> two small red circles to the left of a big blue square <end>
    assert bits == [0, 0b110, 0b110, 0b110, 0b110, 0, 0, 0, 0, 0, 0b001, 0b001, 0b001, 0]
    # cut as `encode` cuts it; a mention cut before its shape word names nothing yet
    cut = word_objects(caption, [SQUARE, CIRCLE_1, CIRCLE_2], max_len=4)
    assert cut == [0, 0b110, 0b110, 0b110, 0b110, 0]
    assert word_objects(caption, [SQUARE, CIRCLE_1, CIRCLE_2], max_len=3) == [0] * 5
    # a word that names nothing in the scene (a made-up object) grounds nowhere
    assert word_objects("a big green square", [SQUARE], max_len=40) == [0] * 6


@pytest.fixture
def truth_and_vocab(tiny_model):
    vocab = Vocabulary([*SPECIALS, *WORDS])
    split = Dataset.from_list([
        {"captions": ["two small red circles to the left of a big blue square"],
         "objects": [SQUARE, CIRCLE_1, CIRCLE_2, HIDDEN_GREEN]},
        {"captions": ["a big blue square"], "objects": [SQUARE, HIDDEN_GREEN]},
    ])
    centres = tiny_model.encoder.cell_centres()
    return scene_truth(split, vocab, 40, centres, 32), vocab, centres


def test_scene_truth_cells_follow_x_and_y_and_colours_and_visibility(truth_and_vocab):
    truth, vocab, centres = truth_and_vocab
    assert truth.cells.shape == (2, 4, 16) and truth.words.shape == (2, 1, 42)
    square = truth.cells[0, 0].reshape(4, 4)  # rows are y, columns x
    # the square is wide, flat and in the top right: the top row's right two cells
    assert square.tolist() == [[False, False, True, True]] + [[False] * 4] * 3
    np.testing.assert_array_equal(
        truth.cells[0, 1].reshape(4, 4), box_map(centres, [0, 20 / 32, 8 / 32, 1]) > 0)
    assert truth.colours[0].tolist() == [vocab.index[c] for c in ("blue", "red", "red",
                                                                   "green")]
    # size, colour and shape word of each object, in that order; "hexagon" is not a word here
    assert truth.attributes[0, 0].tolist() == [vocab.index[w] for w in ("big", "blue", "square")]
    assert truth.attributes[0, 1].tolist() == [vocab.index[w] for w in ("small", "red", "circle")]
    assert truth.attributes[0, 3].tolist() == [vocab.index["small"], vocab.index["green"], -1]
    assert truth.attributes[1, 2:].tolist() == [[-1] * 3] * 2
    assert truth.named[0].tolist() == [True, True, True, False]
    assert truth.colours[1, 2:].tolist() == [-1, -1] and not truth.named[1, 2:].any()
    assert truth.words[1, 0, :6].tolist() == [0, 0, 1, 1, 1, 0]


def test_grounding_loss_rewards_attention_on_the_named_objects_only():
    cells = torch.zeros(1, 2, 4, dtype=torch.bool)
    cells[0, 0, 0] = cells[0, 1, 3] = True  # object 0 covers cell 0, object 1 cell 3
    bits = torch.tensor([[0b01, 0b10, 0]])  # word 0 names object 0, word 1 object 1, word 2 none
    right = torch.tensor([[[1.0, 0, 0, 0], [0, 0, 0, 1.0], [0, 1.0, 0, 0]]])
    assert grounding_loss(right, bits, cells).item() == pytest.approx(0, abs=1e-5)
    swapped = right[:, [1, 0, 2]]  # each word looks at the other word's object
    assert grounding_loss(swapped, bits, cells).item() > 10
    half = torch.tensor([[[0.5, 0.5, 0, 0], [0, 0, 0, 1.0], [0, 0, 1.0, 0]]])
    # mean over the two naming words; the third word's attention costs nothing
    assert grounding_loss(half, bits, cells).item() == pytest.approx(np.log(2) / 2, rel=1e-4)
    both = torch.tensor([[0b11]])  # a count word: any of its objects is right
    assert grounding_loss(torch.tensor([[[0, 0, 0, 1.0]]]), both, cells).item() \
        == pytest.approx(0, abs=1e-5)
    assert named_objects(torch.tensor([0b101]), 3).tolist() == [[True, False, True]]


def test_grounding_each_object_makes_a_counted_word_look_at_every_object_it_counts():
    """The union target is met by a look on one object of "two"; `each_object` is not: it
    costs the mean of -log(attention on each object), log 2 for an even split, and a single
    word's cost is the same either way."""
    cells = torch.zeros(1, 3, 4, dtype=torch.bool)
    cells[0, 0, 0] = cells[0, 1, 3] = cells[0, 2, 1] = True  # objects 0, 1, 2: cells 0, 3, 1
    group = torch.tensor([[0b011]])  # "two ...": objects 0 and 1
    on_first = torch.tensor([[[1.0, 0, 0, 0]]])
    even = torch.tensor([[[0.5, 0, 0, 0.5]]])
    skewed = torch.tensor([[[0.8, 0, 0, 0.2]]])
    assert grounding_loss(on_first, group, cells).item() == pytest.approx(0, abs=1e-5)
    assert grounding_loss(on_first, group, cells, each_object=True).item() > 5
    assert grounding_loss(even, group, cells, each_object=True).item() \
        == pytest.approx(np.log(2), rel=1e-4)
    assert grounding_loss(skewed, group, cells, each_object=True).item() \
        == pytest.approx(-(np.log(0.8) + np.log(0.2)) / 2, rel=1e-4)
    # the third object is not counted: a look that includes it pays for it
    leaking = torch.tensor([[[0.4, 0.2, 0, 0.4]]])
    assert grounding_loss(leaking, group, cells, each_object=True).item() \
        == pytest.approx(-np.log(0.4), rel=1e-4)
    single = torch.tensor([[0b100]])
    look = torch.tensor([[[0.3, 0.7, 0, 0]]])
    assert grounding_loss(look, single, cells, each_object=True).item() \
        == pytest.approx(grounding_loss(look, single, cells).item(), rel=1e-6)


def test_draw_steering_picks_a_colour_word_and_a_named_object_of_another_colour(
        truth_and_vocab):
    truth, vocab, _ = truth_and_vocab
    ids = [vocab.encode(c, 40) for c in
           ("two small red circles to the left of a big blue square", "a big blue square")]
    captions = torch.zeros(2, 14, dtype=torch.long)
    for i, row in enumerate(ids):
        captions[i, :len(row)] = torch.tensor(row)
    bits = torch.from_numpy(truth.words[:, 0, :14].astype(np.int64))
    cells, colours, named = (torch.from_numpy(a) for a in (truth.cells, truth.colours,
                                                            truth.named))
    seen = set()
    for seed in range(40):
        torch.manual_seed(seed)
        position, maps, target = draw_steering(captions, bits, colours, named, cells, 1.0)
        # scene 2's only other colour is the hidden green hexagon: no trial there
        assert position[1] == -1
        word = vocab.words[captions[0, position[0]]]
        assert word in ("red", "blue")
        # the other colour's object: red -> the blue square, blue -> either red circle
        chosen = [k for k in range(4) if torch.equal(maps[0], cells[0, k].float()
                                                     / cells[0, k].sum())]
        assert chosen and colours[0, chosen[0]] == target[0] != captions[0, position[0]]
        assert maps[0].sum().item() == pytest.approx(1.0)  # even over the object's cells
        assert vocab.words[target[0]] == {"red": "blue", "blue": "red"}[word]
        seen.add((word, chosen[0]))
    assert seen == {("red", 0), ("blue", 1), ("blue", 2)}  # every choice is drawn
    position, _, _ = draw_steering(captions, bits, colours, named, cells, 0.0)
    assert position.tolist() == [-1, -1]


def test_steered_logits_are_what_decoding_with_that_guide_says(make_model):
    """The training-time steered word is the word `decode` gives with the same prefix and the
    same attention put in at that word (a position one off would read another word)."""
    model = make_model(seed=4)
    torch.manual_seed(1)
    features = model.encode(torch.randn(3, 3, 32, 32))
    words = [["a", "red", "square", "on", "the"], ["a", "blue", "circle", "on", "the"],
             ["the", "green", "square", "left", "a"]]
    captions = torch.tensor([model.vocab.encode(" ".join(w)) for w in words])
    maps = torch.zeros(3, 16)
    maps[0, 15] = maps[1, 0] = 1.0
    maps[2, 5:7] = 0.5
    position = torch.tensor([2, 3, 4])  # caption ids: <start> is at 0
    probs = steered_logits(model, features, captions, position, maps).softmax(dim=1)
    for i in range(3):
        p = int(position[i]) - 1  # the same word, counted without <start>
        guide = Guide(prefix=words[i][:p], attention={p: maps[i].numpy()})
        caption = decode(model, features[i:i + 1], beam_size=1, max_len=p + 1, top_k=3,
                         guide=guide)[0]
        for word, prob in caption.alternatives[p]:
            assert probs[i, model.vocab.index[word]].item() == pytest.approx(prob, abs=1e-5)


def _scenes_batch(count=24, seed=0):
    """Two-object scenes (a red square on the left and a blue circle on the right, or the colours
    the other way round) with their captions and objects, as a dataset split."""
    rng = np.random.default_rng(seed)
    split = []
    for _ in range(count):
        red_left = bool(rng.integers(2))
        left = {"shape": "square", "color": "red" if red_left else "blue", "size": "small",
                "box": [0, int(rng.integers(0, 16)), 12, 0]}
        left["box"][3] = left["box"][1] + 12
        right = {"shape": "circle", "color": "blue" if red_left else "red", "size": "small",
                 "box": [20, int(rng.integers(0, 16)), 32, 0]}
        right["box"][3] = right["box"][1] + 12
        caption = (f"a small {left['color']} square to the left of a small {right['color']} "
                   "circle")
        split.append({"captions": [caption], "objects": [left, right]})
    return Dataset.from_list(split)


def _cells_say_colours(model, features, cells, colours):
    """How often an object's cells, read alone with an empty memory, name its colour first
    among the colour words (what `cell_words_loss` teaches)."""
    maps = cells.float() / cells.float().sum(dim=2, keepdim=True).clamp_min(1)
    looks = (maps @ features).flatten(0, 1)
    memory = looks.new_zeros(len(looks), model.config.hidden_dim)
    with torch.no_grad():
        logits = model.classifier(torch.cat([memory, looks], dim=1))
    ids = torch.tensor([model.vocab.index[c] for c in ("red", "blue", "green")])
    return (ids[logits[:, ids].argmax(dim=1)] == colours.flatten()).float().mean().item()


def _attention_on_named(model, features, captions, bits, cells):
    with torch.no_grad():
        _, alphas = model(features, captions)
    names = named_objects(bits[:, 1:], cells.shape[1])
    on = (names.float() @ cells.float() > 0)
    return (alphas * on).sum(dim=2)[names.any(dim=2)].mean().item()


def test_training_with_grounding_and_steering_moves_attention_and_words(make_model):
    """Trained on a fixed batch, grounding puts most attention on the named object (from about
    the objects' share of the image), and either grounding or steering makes a colour word say
    the colour of the object it is made to look at (plain training mostly says the other);
    cell words make an object's cells alone name its colour."""
    results = {}
    for ground, steer, cell in ((0.0, 0.0, 0.0), (1.0, 0.0, 0.0), (0.0, 1.0, 0.0),
                                (0.0, 0.0, 1.0)):
        model = make_model(seed=2, vocab=[*SPECIALS, *WORDS])
        vocab = model.vocab
        split = _scenes_batch()
        truth = scene_truth(split, vocab, 20, model.encoder.cell_centres(), 32)
        captions = torch.zeros(len(split), 14, dtype=torch.long)
        for i, caps in enumerate(split["captions"]):
            ids = vocab.encode(caps[0], 20)
            captions[i, :len(ids)] = torch.tensor(ids)
        bits = torch.from_numpy(truth.words[:, 0, :14].astype(np.int64))
        cells, attributes, named = (torch.from_numpy(a) for a in (truth.cells, truth.attributes,
                                                                   truth.named))
        colours = attributes[..., 1]
        torch.manual_seed(0)
        images = torch.zeros(len(split), 3, 32, 32)
        for i, objs in enumerate(split["objects"]):  # red paints channel 0, blue channel 2
            for o in objs:
                x0, y0, x1, y1 = o["box"]
                images[i, 0 if o["color"] == "red" else 2, y0:y1, x0:x1] = 1.0
        features = model.encode(images).detach()
        before = _attention_on_named(model, features, captions, bits, cells)
        model.train()
        objective = Objective(model, penalty=0.0, pixels=False, ground=ground, steer=steer,
                              cell_words=cell)
        optimiser = torch.optim.Adam(model.parameters(), lr=1e-2)
        for _ in range(150):
            loss, _ = objective(features, captions, cells, attributes, named, bits)
            optimiser.zero_grad()
            loss.backward()
            optimiser.step()
        model.eval()
        after = _attention_on_named(model, features, captions, bits, cells)
        # steer every caption's first colour word onto the other object
        position = torch.full((len(split),), 3)
        other = torch.ones(len(split), dtype=torch.long)  # the right-hand object
        maps = cells[torch.arange(len(split)), other].float()
        maps = maps / maps.sum(dim=1, keepdim=True)
        with torch.no_grad():
            said = steered_logits(model, features, captions, position, maps).argmax(dim=1)
        followed = (said == colours[torch.arange(len(split)), other]).float().mean().item()
        results[ground, steer, cell] = (before, after, followed,
                                        _cells_say_colours(model, features, cells, colours))
    plain, grounded, steered = results[0, 0, 0], results[1, 0, 0], results[0, 1, 0]
    named_cells = results[0, 0, 1]
    assert grounded[1] > 0.8 > plain[1] and grounded[1] > grounded[0] + 0.3, results
    # a word that reads the named object alone says what is there; so does a taught one
    assert grounded[2] >= 0.9 and steered[2] >= 0.9 and plain[2] <= 0.5, results
    # cell words make every object's cells, read alone, name its colour (plain: a coin toss);
    # they do not by themselves make the caption's word follow a forced look
    assert named_cells[3] >= 0.95 and plain[3] <= 0.6 and named_cells[2] <= 0.6, results


def test_steering_the_classifier_only_leaves_the_lstm_and_the_rest_untouched(make_model):
    """`classifier_only` computes the same steering loss, and gives the word classifier the
    same gradient, but nothing reaches the LSTM, the embedding or the gate: the memory of
    what the caption has said stays as the captions trained it."""
    model = make_model(seed=5, vocab=[*SPECIALS, *WORDS])
    split = _scenes_batch(count=6, seed=3)
    truth = scene_truth(split, model.vocab, 20, model.encoder.cell_centres(), 32)
    captions = torch.tensor([model.vocab.encode(c[0], 20)[:14] for c in split["captions"]])
    bits = torch.from_numpy(truth.words[:, 0, :14].astype(np.int64))
    cells, colours, named = (torch.from_numpy(a) for a in (truth.cells, truth.colours,
                                                           truth.named))
    torch.manual_seed(7)
    features = model.encode(torch.randn(6, 3, 32, 32)).detach()
    results = {}
    for classifier_only in (False, True):
        model.zero_grad()
        torch.manual_seed(0)  # the same draw of words and objects
        loss = steering_loss(model, features, captions, bits, colours, named, cells, 1.0,
                             classifier_only=classifier_only)
        loss.backward()
        results[classifier_only] = loss.item(), {
            n: None if p.grad is None else p.grad.clone() for n, p in model.named_parameters()}
    (whole, grads), (alone, classifier_grads) = results[False], results[True]
    assert alone == pytest.approx(whole, rel=1e-6) and whole > 0
    assert torch.allclose(classifier_grads["classifier.weight"], grads["classifier.weight"])
    for name in ("lstm.weight_ih", "lstm.weight_hh", "embedding.weight", "gate.weight",
                 "init_h.weight"):
        assert grads[name].abs().sum() > 0, name  # the whole decoder learns from steering
        assert classifier_grads[name] is None or not classifier_grads[name].any(), name


def test_objective_grounds_the_word_each_step_predicts(make_model):
    """Step t reads word t and predicts word t + 1: the grounding term the objective adds is
    the attention of the step that *says* each object word, on that word's object."""
    model = make_model(seed=3, vocab=[*SPECIALS, *WORDS])
    vocab = model.vocab
    objects = [{"shape": "circle", "color": "blue", "size": "small", "box": [0, 24, 8, 32]},
               {"shape": "square", "color": "red", "size": "small", "box": [24, 0, 32, 8]}]
    text = "a small red square to the left of a small blue circle"
    captions = torch.tensor([vocab.encode(text)])
    bits = torch.tensor([word_objects(text, objects, 20)])
    cells = torch.zeros(1, 2, 16, dtype=torch.bool)
    cells[0, 0, 12] = cells[0, 1, 3] = True  # bottom left, top right
    attributes = torch.tensor([[[vocab.index[w] for w in ("small", "blue", "circle")],
                                [vocab.index[w] for w in ("small", "red", "square")]]])
    named = torch.ones(1, 2, dtype=torch.bool)
    torch.manual_seed(0)
    features = model.encode(torch.randn(1, 3, 32, 32))
    plain = Objective(model, penalty=0.0, pixels=False)(features, captions)[0]
    grounded = Objective(model, penalty=0.0, pixels=False, ground=2.0)(
        features, captions, cells, attributes, named, bits)[0]
    _, alphas = model(features, captions)
    # ids 2-4 ("small red square") name object 1, ids 10-12 ("small blue circle") object 0
    said = [alphas[0, t, 3] for t in (1, 2, 3)] + [alphas[0, t, 12] for t in (9, 10, 11)]
    expected = -torch.stack(said).log().mean()
    assert (grounded - plain).item() == pytest.approx(2.0 * expected.item(), rel=1e-4)


def test_cell_words_loss_reads_each_object_s_own_cells_with_an_empty_memory(make_model):
    """The loss reads the mean feature of each named object's cells through the word classifier
    with a zero LSTM state, and scores its size, colour and shape word among their own kinds."""
    model = make_model(seed=5, vocab=[*SPECIALS, *WORDS])
    vocab, hidden = model.vocab, model.config.hidden_dim
    marks = ["small", "big", "red", "blue", "green", "circle", "square"]  # one feature each
    features = torch.zeros(1, 16, model.classifier.in_features - hidden)
    for cell, words in ((3, ("big", "blue", "square")), (12, ("small", "red", "circle")),
                        (7, ("big", "green", "square"))):
        for w in words:
            features[0, cell, marks.index(w)] = 1.0
    with torch.no_grad():
        model.classifier.weight.zero_()
        model.classifier.bias.zero_()
        for d, w in enumerate(marks):
            model.classifier.weight[vocab.index[w], hidden + d] = 20.0
        model.classifier.weight[vocab.index["red"], :hidden] = 100.0  # what a memory would say
        model.classifier.weight[vocab.index["left"], hidden:] = 50.0  # a word of no kind
    cells = torch.zeros(1, 3, 16, dtype=torch.bool)
    cells[0, 0, 3] = cells[0, 1, 12] = True  # object 0: the big blue square, 1: small red circle
    cells[0, 2, 12] = True  # object 2 covers object 1's cell but is not named: never counts
    ids = lambda *ws: [vocab.index[w] for w in ws]  # noqa: E731
    attributes = torch.tensor([[ids("big", "blue", "square"), ids("small", "red", "circle"),
                                ids("small", "blue", "circle")]])
    named = torch.tensor([[True, True, False]])
    kinds = attribute_ids(vocab)
    assert [len(k) for k in kinds] == [2, 3, 2]  # no "tiny", "hexagon", ... in this vocabulary
    loss = lambda c: cell_words_loss(model, features, c, attributes, named, kinds).item()  # noqa: E731
    assert loss(cells) == pytest.approx(0, abs=1e-3)
    assert loss(cells[:, [1, 0, 2]]) > 10  # each object read at the other's cells
    # a box over cells 3 and 7 reads their mean: blue and green tie, size and shape agree
    wide = cells.clone()
    wide[0, 0, 7] = True
    assert loss(wide) == pytest.approx(np.log(2) / 6, abs=1e-3)  # 1 of 6 terms is log 2


def test_objective_grounds_each_object_of_a_counted_group_when_asked(make_model):
    """With `ground_each_object` the objective's grounding term is, for the words of "two
    small red circles", the mean of -log(attention on each circle), not -log of their sum."""
    model = make_model(seed=4, vocab=[*SPECIALS, *WORDS])
    vocab = model.vocab
    text = "two small red circles above a big blue square"
    captions = torch.tensor([vocab.encode(text)])
    bits = torch.tensor([word_objects(text, [SQUARE, CIRCLE_1, CIRCLE_2], 20)])
    cells = torch.zeros(1, 3, 16, dtype=torch.bool)
    cells[0, 0, 3] = cells[0, 1, 12] = cells[0, 2, 13] = True  # square, circle 1, circle 2
    attributes = torch.full((1, 3, 3), -1)
    named = torch.ones(1, 3, dtype=torch.bool)
    torch.manual_seed(0)
    features = model.encode(torch.randn(1, 3, 32, 32))
    _, alphas = model(features, captions)
    plain = Objective(model, penalty=0.0, pixels=False)(features, captions)[0]

    def grounded(each):
        return Objective(model, penalty=0.0, pixels=False, ground=1.0, ground_each_object=each)(
            features, captions, cells, attributes, named, bits)[0] - plain

    group = [-(alphas[0, t, 12].log() + alphas[0, t, 13].log()) / 2 for t in range(4)]
    square = [-alphas[0, t, 3].log() for t in (6, 7, 8)]  # steps saying "big blue square"
    assert grounded(True).item() == pytest.approx(torch.stack(group + square).mean().item(),
                                                  rel=1e-4)
    union = [-(alphas[0, t, 12] + alphas[0, t, 13]).log() for t in range(4)]
    assert grounded(False).item() == pytest.approx(torch.stack(union + square).mean().item(),
                                                   rel=1e-4)
