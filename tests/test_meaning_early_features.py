"""Early features: each cell also carries stage 1's features (CaptionerConfig.early_features).

What must hold: the extra channels are stage 1's output pooled to the grid, placed between the
last stage's features and the coordinates; a saved model grown into one that has them computes
what it did; the switch survives --init-from both ways; the faithfulness tests treat them as
image channels; and the feature cache of a model without them keeps its key.
"""

from __future__ import annotations

from dataclasses import replace

import pytest
import torch
from conftest import tiny_config

from captioner.faithfulness import background_feature, removed
from captioner.hub import load_model
from captioner.model import ENCODER_SETTINGS, Captioner, grow_into
from captioner.training import start_from

HIDDEN, EARLY, COARSE = 32, 64, 128  # tiny_config's LSTM; ResNet18 stage 1 and 2 channels


def images(seed: int = 1, n: int = 2) -> torch.Tensor:
    return torch.rand(n, 3, 32, 32, generator=torch.Generator().manual_seed(seed))


def test_the_early_channels_are_stage_one_pooled_between_the_features_and_coordinates(
        make_model):
    model = make_model(seed=3, early_features=True)
    encoder = model.encoder
    x = images()
    with torch.no_grad():
        features = model.encode(x)
        first = encoder.backbone[:5](x)  # stem and stage 1: (2, 64, 8, 8) for 32 px
        last = encoder.backbone[5:](first)  # stage 2: (2, 128, 4, 4)
    assert first.shape[-1] == 2 * last.shape[-1]  # stage 1 really is twice as fine
    pool = torch.nn.functional.adaptive_avg_pool2d
    assert features.shape[-1] == COARSE + EARLY + 2
    assert torch.equal(features[..., :COARSE], pool(last, 4).flatten(2).transpose(1, 2))
    assert torch.equal(features[..., COARSE:COARSE + EARLY],
                       pool(first, 4).flatten(2).transpose(1, 2))
    assert torch.equal(features[..., -2:], encoder.coord_grid.expand(2, -1, -1))
    assert encoder.image_dim == COARSE + EARLY and encoder.out_dim == COARSE + EARLY + 2


def test_a_grown_model_computes_what_the_saved_one_did(make_model):
    saved = make_model(seed=5)
    grown = Captioner(replace(saved.config, early_features=True)).eval()
    grow_into(grown, saved.state_dict())
    x = images(seed=2)
    captions = torch.tensor([[1, 4, 5, 6, 2], [1, 6, 4, 5, 2]])
    with torch.no_grad():
        logits, alphas = saved(saved.encode(x), captions)
        logits_grown, alphas_grown = grown(grown.encode(x), captions)
    torch.testing.assert_close(logits_grown, logits, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(alphas_grown, alphas, atol=1e-6, rtol=1e-5)
    # where the zeros went: the classifier reads (h, context); its coordinate columns are the
    # saved ones, the early columns between them are zero
    old, new = saved.classifier.weight, grown.classifier.weight
    assert torch.equal(new[:, :HIDDEN + COARSE], old[:, :HIDDEN + COARSE])
    assert not new[:, HIDDEN + COARSE:HIDDEN + COARSE + EARLY].any()
    assert torch.equal(new[:, -2:], old[:, -2:])
    assert not grown.gate.weight[COARSE:COARSE + EARLY].any()
    assert torch.equal(grown.gate.bias[-2:], saved.gate.bias[-2:])
    # and the early channels do reach the words once they have weights
    with torch.no_grad():
        grown.classifier.weight[:, HIDDEN + COARSE:HIDDEN + COARSE + EARLY].normal_()
        changed, _ = grown(grown.encode(x), captions)
    assert (changed - logits).abs().max() > 1e-2


def test_grow_into_refuses_a_model_of_another_shape(make_model):
    wider = make_model(seed=5, hidden_dim=48)
    grown = Captioner(replace(tiny_config(), early_features=True))
    message = r"attention.hidden_proj.weight: \(16, 48\) cannot grow into \(16, 32\)"
    with pytest.raises(ValueError, match=message):
        grow_into(grown, wider.state_dict())


def test_init_from_switches_early_features_on_and_keeps_them(make_model, tmp_path):
    plain = make_model(seed=7)
    plain.save(tmp_path / "plain")
    switched = start_from(str(tmp_path / "plain"), replace(plain.config, early_features=True))
    assert switched.config.early_features and switched.encoder.out_dim == COARSE + EARLY + 2
    assert torch.equal(switched.encoder.backbone[0].weight, plain.encoder.backbone[0].weight)
    with torch.no_grad():
        switched.classifier.weight.fill_(0.5)
    switched.save(tmp_path / "switched")
    kept = start_from(str(tmp_path / "switched"), plain.config)  # a run without the flag
    assert kept.config.early_features
    assert torch.equal(kept.classifier.weight, torch.full_like(kept.classifier.weight, 0.5))


def test_a_saved_model_with_early_features_reloads_bit_identically(make_model, tmp_path):
    model = make_model(seed=9, early_features=True)
    loaded = load_model(model.save(tmp_path / "m")).eval()
    assert loaded.config.early_features
    with torch.no_grad():
        assert torch.equal(loaded.encode(images()), model.encode(images()))


def test_stage_one_models_have_no_earlier_features():
    with pytest.raises(ValueError, match="early_features needs encoder_stage 2 or more"):
        tiny_config(encoder_stage=1, early_features=True)


def test_the_cache_key_changes_with_early_features_and_not_without():
    plain = tiny_config()
    assert set(plain.encoder_settings()) == set(ENCODER_SETTINGS)  # earlier caches stay valid
    assert replace(plain, early_features=True).encoder_settings() != plain.encoder_settings()


def test_removing_a_cell_replaces_its_early_channels_and_keeps_its_coordinates(make_model):
    model = make_model(seed=3, early_features=True)
    with torch.no_grad():
        features = model.encode(images(n=1))
    cells = torch.zeros(1, 16, dtype=torch.bool)
    cells[0, 5] = True
    background = background_feature(model, features, cells)
    assert background.shape == (COARSE + EARLY,)
    out = removed(model, features, cells, background)
    assert torch.equal(out[0, 5, :COARSE + EARLY], background)
    assert torch.equal(out[0, 5, -2:], features[0, 5, -2:])
    assert torch.equal(out[0, 4], features[0, 4])
