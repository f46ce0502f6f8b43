"""The model: encoder grid and coordinates, teacher forcing, the loss, cell centres, config."""

import math

import numpy as np
import pytest
import torch
from torch import nn

from captioner.model import Captioner, CaptionerConfig, Encoder
from captioner.vocab import SPECIALS


def captions_for(model, texts):
    ids = [model.vocab.encode(t) for t in texts]
    out = torch.full((len(ids), max(map(len, ids))), model.vocab.pad_id, dtype=torch.long)
    for i, row in enumerate(ids):
        out[i, : len(row)] = torch.tensor(row)
    return out


@pytest.mark.parametrize("stage, backbone_dim", [(1, 64), (2, 128)])
@pytest.mark.parametrize("coords", [True, False])
def test_encoder_output_shape(make_model, stage, backbone_dim, coords):
    model = make_model(encoder_stage=stage, grid_size=5, image_size=48, coord_channels=coords)
    features = model.encode(torch.randn(3, 3, 48, 48))
    out_dim = backbone_dim + (2 if coords else 0)
    assert model.encoder.out_dim == out_dim
    assert features.shape == (3, 25, out_dim)
    assert torch.isfinite(features).all()


def test_coordinate_channels_are_cell_centres_row_major(make_model):
    model = make_model(grid_size=4, image_size=32)
    features = model.encode(torch.randn(2, 3, 32, 32))
    centres = torch.tensor(model.encoder.cell_centres() * 2 - 1, dtype=torch.float32)
    xy = features[:, :, -2:].reshape(2, 4, 4, 2)  # (batch, row y, column x, [x, y])
    for b in range(2):
        assert torch.allclose(xy[b, :, :, 0], centres.expand(4, 4))  # x varies along a row
        assert torch.allclose(xy[b, :, :, 1], centres[:, None].expand(4, 4))
    assert (features[:, :, -2:] > -1).all() and (features[:, :, -2:] < 1).all()


def test_teacher_forcing_shapes_and_attention_rows_sum_to_one(tiny_model):
    captions = captions_for(tiny_model, ["a red square", "a blue circle on the left", "green"])
    features = tiny_model.encode(torch.randn(3, 3, 32, 32))
    logits, alphas = tiny_model(features, captions)
    steps = captions.shape[1] - 1
    assert logits.shape == (3, steps, len(tiny_model.vocab))
    assert alphas.shape == (3, steps, 16)
    assert (alphas >= 0).all()
    assert torch.allclose(alphas.sum(dim=2), torch.ones(3, steps), atol=1e-5)


def test_loss_is_finite_and_includes_the_doubly_stochastic_penalty(tiny_model):
    captions = captions_for(tiny_model, ["a red square", "a blue circle on the left"])
    features = tiny_model.encode(torch.randn(2, 3, 32, 32))
    no_penalty, ce = tiny_model.loss(features, captions, attention_penalty=0.0)
    with_penalty, ce_again = tiny_model.loss(features, captions, attention_penalty=1.0)
    double, _ = tiny_model.loss(features, captions, attention_penalty=2.0)
    assert torch.isfinite(with_penalty) and torch.isfinite(ce)
    assert torch.allclose(no_penalty, ce) and torch.allclose(ce, ce_again)
    # 16 cells, at most 7 words: the coverage cannot be 1 everywhere, so the penalty is > 0
    assert with_penalty > ce
    assert torch.allclose(double - ce, 2 * (with_penalty - ce))
    # by hand: mean over captions of sum_p (1 - sum_t alpha_tp)^2 over real words, / P
    _, alphas = tiny_model(features, captions)
    mask = (captions[:, 1:] != tiny_model.vocab.pad_id).float().unsqueeze(2)
    expected = ((1 - (alphas * mask).sum(1)) ** 2).sum(1).mean() / alphas.shape[2]
    assert torch.allclose(with_penalty - ce, expected, atol=1e-6)
    # cross-entropy of an untrained model is about log(V)
    assert abs(ce.item() - math.log(len(tiny_model.vocab))) < 1.0


def test_padding_does_not_change_the_loss(tiny_model):
    features = tiny_model.encode(torch.randn(1, 3, 32, 32))
    short = captions_for(tiny_model, ["a red square"])
    padded = torch.cat([short, torch.full((1, 4), tiny_model.vocab.pad_id)], dim=1)
    total, ce = tiny_model.loss(features, short)
    total_padded, ce_padded = tiny_model.loss(features, padded)
    assert torch.allclose(ce, ce_padded, atol=1e-6)
    assert torch.allclose(total, total_padded, atol=1e-6)


def test_loss_trains_the_encoder_too(tiny_model):
    tiny_model.train()
    captions = captions_for(tiny_model, ["a red square", "a blue circle"])
    total, _ = tiny_model.loss(tiny_model.encode(torch.randn(2, 3, 32, 32)), captions)
    total.backward()
    for name in ["encoder.backbone.0.weight", "embedding.weight", "classifier.weight",
                 "attention.score.weight", "gate.weight", "init_h.weight"]:
        grad = dict(tiny_model.named_parameters())[name].grad
        assert grad is not None and grad.abs().sum() > 0, name


def test_cell_centres_stage2_64px_grid8():
    encoder = Encoder("resnet18", stage=2, grid_size=8, image_size=64, coords=True)
    assert encoder.stride == 8
    np.testing.assert_allclose(encoder.cell_centres(), (8 * np.arange(8) + 0.5) / 64)
    pooled = Encoder("resnet18", stage=2, grid_size=4, image_size=64, coords=True)
    # each cell averages two features: (8 * 2k + 0.5 + 8 * (2k + 1) + 0.5) / 2 / 64
    np.testing.assert_allclose(pooled.cell_centres(), (16 * np.arange(4) + 4.5) / 64)


def test_cell_centres_of_an_earlier_stage_pooled_to_the_grid():
    """Stage-1 features (stride 4) pooled to the stage-2 grid: each cell averages features at
    4 * 2k + 0.5 and 4 * (2k + 1) + 0.5, half a stride-4 step right of the model's own centres."""
    encoder = Encoder("resnet18", stage=2, grid_size=8, image_size=64, coords=True)
    np.testing.assert_allclose(encoder.cell_centres(stride=4), (8 * np.arange(8) + 2.5) / 64)
    np.testing.assert_allclose(encoder.cell_centres(stride=8), encoder.cell_centres())


@pytest.mark.parametrize("stage", [1, 2, 3])
@pytest.mark.parametrize("size", [32, 60, 64])
def test_feature_map_size_matches_stride(stage, size):
    encoder = Encoder("resnet18", stage=stage, grid_size=2, image_size=size, coords=False).eval()
    with torch.no_grad():
        fmap = encoder.backbone(torch.zeros(1, 3, size, size))
    assert fmap.shape[1] == encoder.backbone_dim
    assert fmap.shape[-1] == fmap.shape[-2] == -(-size // encoder.stride)


def test_feature_centre_is_where_its_receptive_field_is_centred():
    """Linearise the stage-2 backbone (ReLU -> identity, max -> average pooling, same geometry):
    the input pixels that influence feature (m, m) are then symmetric about its true centre."""
    size = 128
    encoder = Encoder("resnet18", stage=2, grid_size=16, image_size=size, coords=False).eval()
    backbone = encoder.backbone
    for name, module in list(backbone.named_modules()):
        parent = backbone.get_submodule(name.rpartition(".")[0]) if "." in name else backbone
        attr = name.rpartition(".")[2]
        if isinstance(module, nn.ReLU):
            setattr(parent, attr, nn.Identity())
        elif isinstance(module, nn.MaxPool2d):
            setattr(parent, attr, nn.AvgPool2d(3, stride=2, padding=1))
    image = torch.zeros(1, 3, size, size, requires_grad=True)
    m = 7
    backbone(image)[0, :, m, m].sum().backward()
    influence = image.grad[0].abs().sum(0)
    rows = torch.nonzero(influence.sum(1)).flatten()
    centre_pixel = (rows.min() + rows.max()).item() / 2
    assert centre_pixel == m * encoder.stride
    expected = encoder.cell_centres()[m]  # grid 16 == feature map: one feature per cell
    assert expected == pytest.approx((centre_pixel + 0.5) / size)


def test_config_validation():
    vocab = [*SPECIALS, "a"]
    with pytest.raises(ValueError, match="encoder must be one of"):
        CaptionerConfig(vocab=vocab, encoder="vgg16")
    for stage in (0, 5):
        with pytest.raises(ValueError, match="encoder_stage must be 1..4"):
            CaptionerConfig(vocab=vocab, encoder="resnet18", encoder_stage=stage)
    with pytest.raises(ValueError, match="special tokens"):
        CaptionerConfig(vocab=["a", "b"], encoder="resnet18")
    with pytest.raises(ValueError, match="special tokens"):
        CaptionerConfig(vocab=[SPECIALS[1], SPECIALS[0], *SPECIALS[2:], "a"], encoder="resnet18")
    with pytest.raises(ValueError, match="repeat"):
        CaptionerConfig(vocab=[*SPECIALS, "a", "a"], encoder="resnet18")


def test_captioner_accepts_a_config_dict(tiny_model):
    from dataclasses import asdict

    rebuilt = Captioner(asdict(tiny_model.config))
    assert rebuilt.config == tiny_model.config
    assert rebuilt.state_dict().keys() == tiny_model.state_dict().keys()
