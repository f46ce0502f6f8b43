"""What the training objective computes, by value: the per-token scale of the cross-entropy
and of REINFORCE, the sign and size of the entropy bonus, and each word's attention entropy.
Ranges would not tell these apart: -(a * l) / n and -(a * l) * n are both finite."""

import math

import pytest
import torch
import torch.nn.functional as F

from captioner.model import CellSampler, reinforce_loss


def test_reinforce_is_the_advantage_weighted_log_probability_per_token():
    log_probs = torch.tensor([-1.0, -2.0])
    rewards = torch.tensor([-3.0, -1.0])  # advantages -1 and +1 against the baseline -2
    loss = reinforce_loss(log_probs, rewards, torch.tensor(-2.0), tokens=4)
    assert loss.item() == pytest.approx(-((-1) * (-1.0) + 1 * (-2.0)) / 4)  # 0.25


def test_a_one_word_caption_costs_exactly_that_words_cross_entropy(make_model):
    """Mean cross-entropy over the caption's real tokens: with one token, that token's own."""
    model = make_model()
    features = model.encoder(torch.rand(1, 3, 32, 32))
    end, pad = model.vocab.end_id, model.vocab.pad_id
    captions = torch.tensor([[model.vocab.start_id, end, pad]])
    _, ce = model.loss(features, captions, attention_penalty=0.0)
    logits, _ = model(features, captions)
    assert ce.item() == pytest.approx(F.cross_entropy(logits[0, :1], captions[0, 1:2]).item(),
                                      rel=1e-5)


def test_each_words_attention_entropy_is_recorded_in_nats():
    sampler = CellSampler()
    features = torch.rand(2, 4, 3)
    sampler(torch.tensor([[0.25, 0.25, 0.25, 0.25], [0.5, 0.5, 0.0, 0.0]]), features)
    assert sampler.entropies[0].tolist() == pytest.approx([math.log(4), math.log(2)], rel=1e-5)


@pytest.mark.parametrize("bonus", [0.5, 2.0])
def test_the_entropy_bonus_lowers_the_loss_by_bonus_times_the_mean_entropy(make_model, bonus):
    """Same seed, same cells drawn: the only difference is -bonus * H, H the mean per-word
    entropy of alpha, computed here from the attention maps themselves."""
    model = make_model(attention="hard").train()
    torch.manual_seed(1)
    features = model.encoder(torch.rand(2, 3, 32, 32)).detach()
    v = model.vocab
    word = len(v.words) - 1
    captions = torch.tensor([[v.start_id, word, word, v.end_id], [v.start_id, word, v.end_id,
                                                                  v.pad_id]])
    baseline = model.reward_baseline.clone()

    def loss_with(entropy_bonus):
        model.reward_baseline.copy_(baseline)
        torch.manual_seed(7)
        total, _ = model.loss(features, captions, semi_sampling_p=1.0,
                              entropy_bonus=entropy_bonus)
        return total.item()

    torch.manual_seed(7)
    torch.rand(())  # the loss's semi-sampling draw comes first
    _, alphas = model(features, captions, read=CellSampler())
    words = captions[:, 1:] != v.pad_id
    entropy = -(alphas * alphas.clamp_min(1e-12).log()).sum(2)
    mean_entropy = (entropy * words).sum().item() / words.sum().item()
    assert 0.5 < mean_entropy <= math.log(alphas.shape[2])  # a spread-out map: a real effect
    assert loss_with(bonus) - loss_with(0.0) == pytest.approx(-bonus * mean_entropy, rel=1e-4)
