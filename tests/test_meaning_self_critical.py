"""Self-critical training: what a caption is rewarded for, what is drawn, and that it learns."""

import numpy as np
import pytest
import torch

from captioner.objective import Objective, Pairs
from captioner.scenes.captions import match_groups, parse_caption
from captioner.self_critical import (
    leave_one_out,
    sample_captions,
    scene_reward,
    self_critical_loss,
)
from captioner.vocab import SPECIALS

# a big red circle on the left, a small blue square on the right
SCENE = [{"shape": "circle", "color": "red", "size": "big", "box": [0, 20, 30, 50]},
         {"shape": "square", "color": "blue", "size": "small", "box": [80, 30, 100, 50]}]


@pytest.mark.parametrize("caption, reward", [
    ("a big red circle to the left of a small blue square", 2.0),
    ("a small blue square to the right of a big red circle", 2.0),
    ("a big red circle to the right of a small blue square", 1.5),  # a false relation
    ("a big blue circle and a small blue square", 0.5),  # one object of two right
    ("a big red circle", 0.5),  # one left out
    ("two big red circles and a small blue square", 2 / 3),  # one made up: 2 of 3 said
    ("a small blue circle and a big red square", 0.0),  # every attribute said, none bound
    ("there is a big red circle and a small blue square", 2.0),  # no relation stated
])
def test_the_reward_counts_objects_said_right_and_adds_one_for_exactly_right(caption, reward):
    assert scene_reward(caption.split(), SCENE) == pytest.approx(reward)


def test_identical_objects_named_one_by_one_are_not_exactly_right():
    """The world counts identical objects; a caption that names them one by one says the
    right objects but not as the world would, and earns no more than partial credit."""
    pair = [{"shape": "star", "color": "green", "size": "tiny", "box": [0, 0, 10, 10]},
            {"shape": "star", "color": "green", "size": "tiny", "box": [40, 50, 50, 60]}]
    assert scene_reward("two tiny green stars".split(), pair) == 2.0
    assert scene_reward("a tiny green star and a tiny green star".split(), pair) == 1.0
    assert scene_reward("a tiny green star".split(), pair) == 0.5


def test_each_caption_is_judged_against_the_mean_of_the_other_captions_of_its_image():
    rewards = torch.tensor([2.0, 0.0, 1.0, 5.0, 1.0, 3.0])
    assert leave_one_out(rewards, 3).tolist() == [1.5, -1.5, 0.0, 3.0, -3.0, 0.0]


def test_drawn_captions_carry_their_own_log_probability_and_stop_at_end(make_model):
    """Each drawn caption's log-probability is what teacher forcing gives those words of its
    own image (rows grouped by image); <pad> and <start> are never drawn, even when the
    model favours them; after <end> only padding follows."""
    model = make_model(seed=4)
    with torch.no_grad():
        model.classifier.bias[[model.vocab.pad_id, model.vocab.start_id]] += 5.0
        model.classifier.bias[model.vocab.end_id] += 1.5  # captions of a few words
    torch.manual_seed(1)
    features = model.encode(torch.rand(3, 3, 32, 32)).detach()
    features[1] *= 3  # images far apart, so their words differ in probability
    torch.manual_seed(2)
    ids, log_probs, alphas = sample_captions(model, features, samples=4, max_len=12)
    vocab = model.vocab
    assert ids.shape[0] == 12
    captions = torch.cat([torch.full((12, 1), vocab.start_id), ids], dim=1)
    with torch.no_grad():
        logits, forced = model(features.repeat_interleave(4, dim=0), captions)
    logits[..., [vocab.pad_id, vocab.start_id]] = float("-inf")
    token = logits.log_softmax(dim=2).gather(2, ids.unsqueeze(2)).squeeze(2)
    ended = 0
    for row in range(12):
        words = ids[row].tolist()
        length = words.index(vocab.end_id) + 1 if vocab.end_id in words else len(words)
        ended += vocab.end_id in words
        assert vocab.pad_id not in words[:length] and vocab.start_id not in words[:length]
        assert all(w == vocab.pad_id for w in words[length:])
        assert log_probs[row].item() == pytest.approx(token[row, :length].sum().item(),
                                                      abs=1e-4)
        assert torch.allclose(alphas[row, :length], forced[row, :length], atol=1e-5)
    assert ended >= 10


def _colour_model(make_model):
    """Two one-object images, a small red square (red channel) and a small blue square (blue
    channel), and a tiny model taught by teacher forcing to say either colour for either:
    half of each image's captions name the wrong one."""
    model = make_model(seed=0, vocab=[*SPECIALS, "a", "small", "red", "blue", "square"])
    images = torch.zeros(2, 3, 32, 32)
    images[0, 0, 8:20, 8:20] = images[1, 2, 8:20, 8:20] = 1.0
    features = model.encode(images).detach()
    scenes = [[{"shape": "square", "color": c, "size": "small", "box": [8, 8, 20, 20]}]
              for c in ("red", "blue")]
    captions = torch.tensor([model.vocab.encode(f"a small {c} square")
                             for c in ("red", "blue", "red", "blue")])
    optimiser = torch.optim.Adam(model.parameters(), lr=1e-2)
    model.train()
    for _ in range(60):
        loss, _ = model.loss(features[[0, 0, 1, 1]], captions, attention_penalty=0.0)
        optimiser.zero_grad()
        loss.backward()
        optimiser.step()
    return model, features, scenes


def _says_its_colour(model, features) -> list[float]:
    """Per image, the probability that the colour word names its own colour."""
    vocab = model.vocab
    captions = torch.tensor([vocab.encode(f"a small {c} square") for c in ("red", "blue")])
    with torch.no_grad():
        logits, _ = model(features, captions)
    probs = logits[:, 2].softmax(dim=1)  # the word after "a small"
    return [probs[0, vocab.index["red"]].item(), probs[1, vocab.index["blue"]].item()]


def test_self_critical_training_makes_each_image_say_its_own_colour(make_model):
    """From a model that names either colour about half the time, the rewarded captions
    win: each image's own colour ends up most likely and the mean reward rises."""
    model, features, scenes = _colour_model(make_model)
    before = _says_its_colour(model, features)
    assert all(0.2 < p < 0.8 for p in before), before
    optimiser = torch.optim.Adam(model.parameters(), lr=5e-3)
    torch.manual_seed(0)
    rewards = []
    for _ in range(40):
        loss, reward = self_critical_loss(model, features, scenes, samples=6, max_len=8)
        optimiser.zero_grad()
        loss.backward()
        optimiser.step()
        rewards.append(reward)
    after = _says_its_colour(model, features)
    assert all(p > 0.9 for p in after), (before, after)
    assert np.mean(rewards[-10:]) > np.mean(rewards[:10]) + 0.3, rewards


def test_the_objective_adds_the_weighted_loss_of_each_pair_s_own_scene(make_model, monkeypatch):
    """The image indices a batch carries pick the scenes the drawn captions are judged
    against; the self-critical loss is added times its weight to the rest."""
    import captioner.objective as objective_module

    model = make_model(seed=0)
    scenes = [["scene 0"], ["scene 1"], ["scene 2"]]
    seen = {}

    def fake_loss(model_, features, batch_scenes, samples, max_len, cells, ground, each):
        seen.update(scenes=batch_scenes, samples=samples, max_len=max_len, cells=cells,
                    ground=ground, each=each)
        return torch.tensor(0.7), 1.25

    monkeypatch.setattr(objective_module, "self_critical_loss", fake_loss)
    torch.manual_seed(0)
    features = model.encode(torch.rand(2, 3, 32, 32)).detach()
    captions = torch.tensor([model.vocab.encode(c) for c in ("a red square", "a blue circle")])
    cells = torch.zeros(2, 1, 16, dtype=torch.bool)
    attributes = torch.full((2, 1, 3), -1)
    named = torch.zeros(2, 1, dtype=torch.bool)
    bits = torch.zeros(2, captions.shape[1], dtype=torch.long)
    truth = (cells, attributes, named, bits)
    critic = Objective(model, penalty=0.0, pixels=False, self_critical=0.5, scenes=scenes,
                       samples=3, max_len=9, ground=0.25, ground_each_object=True)
    total = critic(features, captions, *truth, torch.tensor([2, 0]))[0]
    assert seen.pop("cells") is cells
    assert seen == {"scenes": [["scene 2"], ["scene 0"]], "samples": 3, "max_len": 9,
                    "ground": 0.25, "each": True}
    grounded = Objective(model, penalty=0.0, pixels=False, ground=0.25,
                         ground_each_object=True)(features, captions, *truth)[0]
    assert total.item() == pytest.approx(grounded.item() + 0.5 * 0.7, abs=1e-6)
    assert critic.last_reward == 1.25


def test_the_drawn_captions_words_pay_for_looking_away_from_what_they_name(make_model):
    """With `ground`, the loss adds that weight times the mean -log(attention on the named
    object's cells) over the drawn words that name an object, read from each drawn caption
    (and its own image's cells)."""
    model, features, scenes = _colour_model(make_model)
    cells_of = [[5, 6, 9, 10], [0, 1, 4]]  # not where the squares are: any cells will do
    cells = torch.zeros(2, 1, 16, dtype=torch.bool)
    for image, where in enumerate(cells_of):
        cells[image, 0, where] = True
    torch.manual_seed(3)
    plain, _ = self_critical_loss(model, features, scenes, samples=6, max_len=8)
    torch.manual_seed(3)
    ids, _, alphas = sample_captions(model, features, samples=6, max_len=8)
    torch.manual_seed(3)
    grounded, _ = self_critical_loss(model, features, scenes, samples=6, max_len=8,
                                     cells=cells, ground=2.0)
    costs, said = [], set()
    for row in range(12):
        words = model.vocab.decode(ids[row].tolist())
        parsed = parse_caption(words)
        for mention, group in zip(parsed.mentions, match_groups(parsed, scenes[row // 6])):
            said.add((row // 6, mention.color))
            for t in (mention.size_index, mention.color_index, mention.shape_index):
                if group and t is not None:
                    look = alphas[row, t, cells_of[row // 6]].sum()
                    costs.append(-look.clamp_min(1e-6).log().item())
    assert {(0, "red"), (1, "blue")} <= said  # each image's own colour said at least once
    assert costs and grounded.item() == pytest.approx(plain.item() + 2.0 * np.mean(costs),
                                                      abs=1e-5)


def test_pairs_carry_their_image_index_when_asked():
    inputs = np.arange(4 * 2, dtype=np.float32).reshape(4, 2)
    captions = np.zeros((4, 2, 3), dtype=np.int32)
    pairs = np.array([(2, 0), (0, 1), (3, 1)])
    truth = type("Truth", (), dict(cells=np.zeros((4, 1, 4), bool), attributes=np.zeros((4, 1, 3)),
                                   named=np.zeros((4, 1), bool), words=np.zeros((4, 2, 3))))()
    with_index = Pairs(inputs, captions, pairs, truth, indices=True)
    assert [int(with_index[i][-1]) for i in range(3)] == [2, 0, 3]
    assert with_index[0][0].tolist() == [4.0, 5.0]
    assert len(Pairs(inputs, captions, pairs, truth)[0]) == 6
