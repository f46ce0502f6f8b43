"""Hard (stochastic) attention, Xu et al. 2015 section 4.1: the sampled read, REINFORCE, its
baseline, the test-time readouts, and that every decoding path and the saved files keep the
kind."""

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from captioner.decoding import Guide, caption_images
from captioner.hub import load_model
from captioner.model import (
    BASELINE_DECAY,
    Attention,
    Captioner,
    CaptionerConfig,
    WeightsError,
    reinforce_loss,
)
from captioner.preprocess import to_model_input
from captioner.vocab import Vocabulary

ROOT = Path(__file__).resolve().parent.parent


def attention_params(model):
    return {n: p for n, p in model.named_parameters() if n.startswith("attention.")}


def batch_for(model, seed=0, batch=3, length=6):
    gen = torch.Generator().manual_seed(seed)
    cells = model.config.grid_size ** 2
    features = torch.randn(batch, cells, model.encoder.out_dim, generator=gen)
    words = torch.randint(4, len(model.vocab), (batch, length), generator=gen)
    words[:, 0] = model.vocab.start_id
    words[0, 4:] = model.vocab.pad_id  # one shorter caption: padding must not count
    return features, words


def test_sampled_read_trains_attention_only_through_reinforce(make_model):
    """Reading a sampled cell is not differentiable in alpha: the cross-entropy alone gives the
    attention layers no gradient, the REINFORCE term does (and soft reading does too)."""
    model = make_model(attention="hard").train()
    features, words = batch_for(model)
    model.reward_baseline.fill_(-3.0)
    total, ce = model.loss(features, words, attention_penalty=0.0, semi_sampling_p=1.0,
                           entropy_bonus=0.0)
    params = attention_params(model)
    from_ce = torch.autograd.grad(ce, list(params.values()), retain_graph=True,
                                  allow_unused=True)
    from_total = torch.autograd.grad(total, list(params.values()), allow_unused=True)
    for name, g in zip(params, from_ce):
        assert g is None or not g.abs().any(), name
    assert all(g is not None and g.abs().sum() > 0 for g in from_total if g is not None)
    assert from_total[-1] is not None and from_total[-1].abs().sum() > 0  # the score layer
    # the expectation half of semi-sampling: the cross-entropy reaches attention directly
    _, ce_soft = model.loss(features, words, attention_penalty=0.0, semi_sampling_p=0.0)
    soft = torch.autograd.grad(ce_soft, params["attention.score.weight"])[0]
    assert soft.abs().sum() > 0


def test_padding_changes_nothing_in_the_sampled_loss(make_model):
    """Extra padding columns add draws after the captions end; they must not count in the
    REINFORCE term, the entropy or the reward (same seed: same draws for the real words)."""
    model = make_model(attention="hard").train()
    features, words = batch_for(model, seed=7)
    padded = torch.cat([words, torch.full((3, 2), model.vocab.pad_id)], dim=1)
    results = []
    for captions in (words, padded):
        model.zero_grad()
        model.reward_baseline.fill_(-2.0)
        torch.manual_seed(11)
        total, _ = model.loss(features, captions, semi_sampling_p=1.0)
        total.backward()
        results.append((total.item(), model.attention.score.weight.grad.clone(),
                        model.reward_baseline.item()))
    (short, g_short, b_short), (long, g_long, b_long) = results
    assert long == pytest.approx(short, rel=1e-5)
    assert torch.allclose(g_long, g_short, atol=1e-6)
    assert b_long == pytest.approx(b_short, rel=1e-6)


@pytest.mark.parametrize("advantage_sign", [1.0, -1.0])
def test_reinforce_makes_rewarded_cells_more_likely(advantage_sign):
    """A draw that beat the baseline becomes more likely after a gradient step; one that fell
    short, less likely."""
    logits = torch.tensor([0.3, -0.2, 0.1, 0.0], requires_grad=True)
    drawn = 2
    log_prob = logits.log_softmax(0)[drawn].unsqueeze(0)
    reinforce_loss(log_prob, torch.tensor([1.0 + advantage_sign]), torch.tensor(1.0),
                   tokens=1).backward()
    before = logits.softmax(0)[drawn]
    after = (logits - 0.1 * logits.grad).softmax(0)[drawn]
    assert (after - before) * advantage_sign > 1e-4


def test_baseline_is_the_moving_average_of_the_reward(make_model):
    """b <- 0.9 b + 0.1 mean reward after every sampled batch, the reward being the captions'
    log-likelihood; soft batches and eval mode leave it alone."""
    model = make_model(attention="hard").train()
    features, words = batch_for(model, seed=1)
    tokens = int((words[:, 1:] != model.vocab.pad_id).sum())
    expected, rewards = 0.0, []
    with torch.no_grad():
        for _ in range(40):
            _, ce = model.loss(features, words, semi_sampling_p=1.0)
            reward = -ce.item() * tokens / len(words)  # mean over captions of sum log p
            rewards.append(reward)
            expected = BASELINE_DECAY * expected + (1 - BASELINE_DECAY) * reward
            assert model.reward_baseline.item() == pytest.approx(expected, rel=1e-4, abs=1e-5)
        assert min(rewards[-10:]) - 0.5 < model.reward_baseline.item() < max(rewards[-10:]) + 0.5
        assert len(set(np.round(rewards, 5))) > 1  # the draws really differ from batch to batch
        kept = model.reward_baseline.item()
        model.loss(features, words, semi_sampling_p=0.0)
        model.eval()
        model.loss(features, words, semi_sampling_p=1.0)
    assert model.reward_baseline.item() == kept


SIZE = 32
COLOURS = {"red": (220, 30, 30), "blue": (30, 30, 220), "green": (30, 200, 30),
           "yellow": (230, 220, 30)}


def square_at(colour, cell):
    pixels = np.full((SIZE, SIZE, 3), 128, np.uint8)
    row, col = divmod(cell, 4)
    pixels[row * 8:row * 8 + 8, col * 8:col * 8 + 8] = COLOURS[colour]
    return Image.fromarray(pixels)


def train_on_squares(monkeypatch, sign: float, steps: int = 150):
    """A tiny hard model, always sampling, on grey images with one coloured square filling one
    grid cell; returns its mean attention on the square at the colour word, and captions."""
    if sign != 1.0:
        import captioner.model as model_module

        original = model_module.reinforce_loss
        monkeypatch.setattr(model_module, "reinforce_loss",
                            lambda *args, **kw: sign * original(*args, **kw))
    examples = [(colour, cell) for i, colour in enumerate(COLOURS)
                for cell in (i * 5 % 16, (i * 5 + 7) % 16, (i * 3 + 2) % 16)]
    images = [square_at(colour, cell) for colour, cell in examples]
    texts = [f"a {colour} square" for colour, _ in examples]
    vocab = Vocabulary.build(texts)
    torch.manual_seed(0)
    model = Captioner(CaptionerConfig(
        vocab=vocab.words, encoder="resnet18", encoder_stage=1, grid_size=4, image_size=SIZE,
        coord_channels=False, embed_dim=32, attention_dim=32, hidden_dim=64, dropout=0.0,
        attention="hard"))
    cfg = model.config
    batch = torch.stack([to_model_input(im, SIZE, cfg.image_mean, cfg.image_std)
                         for im in images])
    captions = torch.tensor([vocab.encode(t) for t in texts])
    optimiser = torch.optim.Adam(model.parameters(), lr=3e-3)
    model.train()
    for _ in range(steps):
        loss, _ = model.loss(model.encode(batch), captions, attention_penalty=0.0,
                             semi_sampling_p=1.0)
        optimiser.zero_grad()
        loss.backward()
        optimiser.step()
    model.eval()
    with torch.no_grad():
        _, alphas = model(model.encode(batch), captions)
    cells = torch.tensor([cell for _, cell in examples])
    on_square = alphas[torch.arange(len(examples)), 1, cells].mean().item()  # word 1: colour
    said = [c.text for c in caption_images(model, images, beam_size=1, max_len=5)]
    return on_square, said == texts


def test_tiny_hard_model_learns_to_look_where_the_reward_is(monkeypatch):
    """Trained by sampling only, attention can learn where to look only from REINFORCE: it
    moves onto the square (chance: 1/16 of the mass), and the captions are right. With the
    update's sign flipped it learns to look away."""
    on_square, right = train_on_squares(monkeypatch, 1.0)
    print(f"attention on the square at the colour word: {on_square:.3f} (chance 0.0625)")
    assert on_square > 3 / 16
    assert right
    flipped, _ = train_on_squares(monkeypatch, -1.0)
    assert flipped < 1 / 32


def test_argmax_readout_reads_only_the_most_attended_cell(make_model):
    """With `hard_readout="argmax"` a word's context is its top cell's feature: changing any
    other cell's feature (attention kept) changes nothing; with the expectation it does."""
    model = make_model(attention="hard", hard_readout="argmax")
    features, words = batch_for(model, seed=2, batch=2)
    state, projected = model.init_state(features)
    _, _, alpha, _ = model.advance(words[:, 1], state, features, projected)
    top = alpha.argmax(dim=1)
    changed = features + 5.0
    changed[torch.arange(2), top] = features[torch.arange(2), top]
    outputs = {}
    for readout in ("argmax", "expectation"):
        model.config.hard_readout = readout
        same = model.advance(words[:, 1], state, features, projected)[0]
        moved = model.advance(words[:, 1], state, changed, projected)[0]
        outputs[readout] = (same - moved).abs().max().item()
    assert outputs["argmax"] == 0.0
    assert outputs["expectation"] > 1e-3
    assert torch.equal(Attention.read_argmax(alpha, features), features[torch.arange(2), top])


def test_argmax_readout_is_for_eval_only(make_model):
    """Training mode never reads the argmax: the soft half of semi-sampling is the expectation."""
    model = make_model(attention="hard", hard_readout="argmax")
    assert model.reads_argmax()
    assert not model.train().reads_argmax()
    assert not make_model(attention="soft", hard_readout="argmax").reads_argmax()


@pytest.mark.parametrize("readout", ["expectation", "argmax"])
def test_every_decoding_path_runs_for_hard_attention(make_model, readout):
    model = make_model(seed=3, attention="hard", hard_readout=readout)
    rng = np.random.default_rng(0)
    images = [Image.fromarray(rng.integers(0, 256, (32, 32, 3), dtype=np.uint8))
              for _ in range(2)]
    greedy = caption_images(model, images, beam_size=1, max_len=5, top_k=3)
    beams = caption_images(model, images, beam_size=3, max_len=5, top_k=3)
    for caption in greedy + beams:
        assert len(caption.alternatives) == len(caption.tokens)
        assert np.allclose(caption.attention.sum(axis=(1, 2)), 1, atol=1e-5)
    look = np.zeros((4, 4), np.float32)
    look[3, 0] = 1.0
    steered = caption_images(model, images, beam_size=1, max_len=5,
                             guide=Guide(prefix=["a", "red"], attention={2: look}))
    for caption in steered:
        assert caption.tokens[:2] == ["a", "red"]
        if len(caption.tokens) > 2:
            assert np.array_equal(caption.attention[2], look)


def test_save_and_load_keep_the_kind_bit_identically(make_model, tmp_path):
    model = make_model(seed=4, attention="hard", hard_readout="argmax")
    model.reward_baseline.fill_(-7.25)
    loaded = load_model(model.save(tmp_path / "hard"))
    assert loaded.config.attention == "hard" and loaded.config.hard_readout == "argmax"
    assert loaded.state_dict().keys() == model.state_dict().keys()
    for name, tensor in model.state_dict().items():
        assert torch.equal(loaded.state_dict()[name], tensor), name
    image = [Image.fromarray(np.random.default_rng(1).integers(0, 256, (32, 32, 3), np.uint8))]
    a, b = (caption_images(m, image, beam_size=2, max_len=5)[0] for m in (model, loaded))
    assert a.tokens == b.tokens and np.array_equal(a.attention, b.attention)


def test_old_config_without_a_kind_loads_as_soft(make_model, tmp_path):
    folder = make_model(seed=5).save(tmp_path / "old")
    config = json.loads((folder / "config.json").read_text())
    del config["attention"], config["hard_readout"]
    (folder / "config.json").write_text(json.dumps(config))
    loaded = load_model(folder)
    assert loaded.config.attention == "soft"
    assert not hasattr(loaded, "reward_baseline")


def test_kind_and_weights_must_agree(make_model, tmp_path):
    """A soft model's file lacks the hard model's baseline: a config edited to "hard" is
    refused by name, not half loaded; an unknown kind is refused too."""
    folder = make_model(seed=6).save(tmp_path / "soft")
    config = json.loads((folder / "config.json").read_text())
    (folder / "config.json").write_text(json.dumps({**config, "attention": "hard"}))
    with pytest.raises(WeightsError, match="reward_baseline"):
        load_model(folder)
    (folder / "config.json").write_text(json.dumps({**config, "attention": "sparse"}))
    with pytest.raises(WeightsError, match="attention must be one of"):
        load_model(folder)


def test_train_space_refuses_an_unknown_attention_kind():
    result = subprocess.run([sys.executable, "train_space.py", "--attention", "sparse"],
                            cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert result.returncode == 2
    assert "--attention must be one of soft, hard" in result.stderr
    assert "Traceback" not in result.stderr


@pytest.mark.parametrize("readout", ["expectation", "argmax"])
def test_model_card_says_which_attention_and_readout(tmp_path, readout):
    from captioner import hub

    cfg = {"dataset": "scenes", "encoder": "resnet18", "encoder_stage": 2, "grid": 8,
           "output_dir": "runs/hard", "push_to_hub": ""}
    metrics = {"images": 1, "beam1": {"bleu4": 50.0}}
    hub.write_model_card(tmp_path, cfg=cfg, metrics=metrics, command="c")
    soft = (tmp_path / "README.md").read_text()
    assert "gated\nsoft attention" in soft and "REINFORCE" not in soft
    hub.write_model_card(tmp_path, cfg={**cfg, "attention": "hard", "hard_readout": readout},
                         metrics=metrics, command="c")
    hard = (tmp_path / "README.md").read_text()
    assert "gated\nhard attention" in hard and "REINFORCE" in hard and "0.002" in hard
    assert ("argmax" in hard) == (readout == "argmax")


def test_bundled_hard_model_is_hard_and_captions_with_both_readouts():
    """weights/hard: trained with REINFORCE (its baseline tracked log-likelihoods, < 0), and
    it captions an example scene with either test-time readout."""
    from captioner.preprocess import load_image

    model = load_model(ROOT / "weights" / "hard")
    assert model.config.attention == "hard" and model.config.hard_readout == "expectation"
    assert model.reward_baseline.item() < 0
    image = load_image(ROOT / "examples" / "scene-6-old-world.png")
    for readout in ("expectation", "argmax"):
        model.config.hard_readout = readout
        caption = caption_images(model, [image], beam_size=3, max_len=20)[0]
        assert caption.tokens and not caption.truncated
    assert "REINFORCE" in (ROOT / "weights" / "hard" / "README.md").read_text()


@pytest.mark.parametrize("steering, claimed", [(0.99, True), (0.11, False)])
def test_follow_claim_only_when_steering_beats_chance(tmp_path, steering, claimed):
    """A model whose words do not follow a steered gaze (the short hard model: 11.6 % vs 20 %
    chance) must not be described as one whose words follow where it looks."""
    from captioner import hub

    cfg = {"dataset": "scenes", "encoder": "resnet18", "encoder_stage": 2, "grid": 8,
           "output_dir": "runs/x", "push_to_hub": ""}
    beam = {"bleu4": 50.0, "objects_correct": 0.5, "pointing": 0.5, "pointing_chance": 0.3,
            "steering": steering, "steering_chance": 0.2}
    hub.write_model_card(tmp_path, cfg=cfg, metrics={"images": 1, "beam1": beam},
                         command="c")
    card = (tmp_path / "README.md").read_text()
    assert "**Steering**" in card
    assert ("The words follow where the model looks" in card) == claimed


@pytest.mark.parametrize("steering, claimed", [(0.99, True), (0.11, False)])
def test_evaluate_line_claims_following_only_above_chance(monkeypatch, capsys, tmp_path,
                                                          make_model, steering, claimed):
    from captioner import cli, evaluation

    folder = make_model(seed=8).save(tmp_path / "m")
    monkeypatch.setattr(evaluation, "evaluate_split", lambda *a, **k: {
        "objects_correct": 0.5, "pointing": 0.5, "pointing_chance": 0.3, "steering": steering,
        "steering_chance": 0.2, "steering_trials": 10, "examples": []})
    assert cli.main(["evaluate", "--weights", str(folder), "--data-dir", str(tmp_path),
                     "--num-scenes", "2", "--beam-size", "1", "--no-faithfulness"]) == 0
    line = next(x for x in capsys.readouterr().out.splitlines() if x.startswith("steering"))
    assert ("the words follow where the model looks" in line) == claimed
    assert ("no better than chance" in line) != claimed
