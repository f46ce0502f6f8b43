"""The model's less visible promises: which encoder stages train and keep their BatchNorm
statistics, ImageNet weights landing in the right modules, coordinates in (x, y) order, files
as shared as any other, and load errors that name every problem."""

import os
import re
from dataclasses import replace

import numpy as np
import pytest
import torch
from conftest import tiny_config
from torchvision import models

import captioner.hub
import captioner.model
from captioner.model import Attention, Captioner, DecoderState, WeightsError, check_state_dict


def trainable(encoder):
    """Per backbone module: True if all its parameters train, False if none do."""
    flags = []
    for module in encoder.backbone:
        grads = {p.requires_grad for p in module.parameters()}
        flags.append(grads.pop() if len(grads) == 1 else None)
    return flags


@pytest.mark.parametrize("last, expected", [
    (None, [True, True, None, None, True, True]),  # relu and maxpool have no parameters
    (1, [False, False, None, None, False, True]),
    (2, [False, False, None, None, True, True]),
    (5, [False, False, None, None, True, True]),  # more stages than there are: all stages
    (0, [False, False, None, None, False, False]),
])
def test_fine_tune_trains_only_the_last_stages(make_model, last, expected):
    encoder = make_model(encoder_stage=2).encoder
    encoder.fine_tune(last)
    flags = [f if any(True for _ in m.parameters()) else None
             for f, m in zip(trainable(encoder), encoder.backbone)]
    assert flags == expected


@pytest.mark.parametrize("last, frozen", [(1, 5), (0, 6), (None, 0)])
def test_frozen_stages_keep_their_batchnorm_statistics_in_training(make_model, last, frozen):
    model = make_model(encoder_stage=2)
    model.encoder.fine_tune(last)
    model.train()
    modes = [m.training for m in model.encoder.backbone]
    assert modes == [False] * frozen + [True] * (6 - frozen)
    bn1 = model.encoder.backbone[1]
    before = bn1.running_mean.clone()
    model.encode(torch.randn(2, 3, 32, 32) * 3 + 1)
    assert torch.equal(bn1.running_mean, before) == (frozen > 0)
    assert model.train(False).encoder.backbone[5].training is False


def test_imagenet_weights_fill_the_backbone_stage_by_stage(make_model, monkeypatch):
    torch.manual_seed(7)
    pretrained = models.resnet18()
    asked = []

    def get_model(name, weights=None):
        asked.append((name, weights))
        return pretrained

    encoder = make_model(encoder_stage=2).encoder
    monkeypatch.setattr(models, "get_model", get_model)
    encoder.load_imagenet_weights("resnet18")
    assert asked == [("resnet18", models.ResNet18_Weights.DEFAULT)]
    own = encoder.backbone.state_dict()
    assert torch.equal(own["0.weight"], pretrained.conv1.weight)
    assert torch.equal(own["5.0.conv1.weight"], pretrained.layer2[0].conv1.weight)
    assert torch.equal(own["1.running_var"], pretrained.bn1.running_var)


def test_coordinate_channels_are_x_then_y(make_model):
    model = make_model(grid_size=4)
    features = model.encode(torch.zeros(1, 3, 32, 32))
    centres = model.encoder.cell_centres() * 2 - 1
    xy = features[0, :, -2:].detach().numpy()
    cell = 1 * 4 + 3  # row 1, column 3 (row-major)
    assert np.allclose(xy[cell], [centres[3], centres[1]], atol=1e-6)


def test_saved_files_are_readable_like_any_other(tiny_model, tmp_path):
    old = os.umask(0o022)
    try:
        folder = tiny_model.save(tmp_path / "m")
    finally:
        os.umask(old)
    for name in ("model.safetensors", "config.json"):
        assert (folder / name).stat().st_mode & 0o777 == 0o644
    assert sorted(p.name for p in folder.iterdir()) == ["config.json", "model.safetensors"]
    again = Captioner.from_pretrained(str(folder))
    for key, tensor in tiny_model.state_dict().items():
        assert torch.equal(again.state_dict()[key], tensor)
    assert again.config == tiny_model.config and not again.training


def test_load_errors_name_every_problem_and_cut_long_lists(tiny_model):
    state = dict(tiny_model.state_dict())
    names = sorted(state)
    for key in names[:10]:
        del state[key]
    state["extra.a"] = torch.zeros(1)
    state["gate.bias"] = torch.zeros(99)
    with pytest.raises(WeightsError) as error:
        check_state_dict(tiny_model, state, "w.safetensors")
    message = str(error.value)
    assert message.startswith("w.safetensors does not match its config.json: missing tensors ")
    assert f"missing tensors {names[:8]} ..." in message
    assert "; unexpected tensors ['extra.a']; " in message
    own = tuple(tiny_model.gate.bias.shape)
    assert message.endswith(f"shape mismatch gate.bias: file (99,) vs model {own}")
    few = dict(tiny_model.state_dict())
    del few[names[0]]
    with pytest.raises(WeightsError) as error:
        check_state_dict(tiny_model, few, "w")
    assert str(error.value) == f"w does not match its config.json: missing tensors {names[:1]}"


def test_a_folder_without_weights_names_the_missing_file(tmp_path):
    (tmp_path / "config.json").write_text("{}")
    with pytest.raises(WeightsError) as error:
        Captioner._from_pretrained(model_id=str(tmp_path), revision=None, cache_dir=None,
                                   force_download=False, local_files_only=True, token=None,
                                   config=tiny_config())
    assert str(error.value) == (f"{tmp_path / 'model.safetensors'}: file not found (a model "
                                "folder needs model.safetensors and config.json)")


def test_int8_decoder_quantizes_only_the_decoder_and_stays_quiet(tiny_model, recwarn):
    import warnings

    from captioner.hub import quantize_decoder

    warnings.simplefilter("always")
    quantized = quantize_decoder(tiny_model)
    assert not [w for w in recwarn if issubclass(w.category, (DeprecationWarning, UserWarning))]
    dynamic = torch.ao.nn.quantized.dynamic
    assert isinstance(quantized.classifier, dynamic.Linear)
    assert isinstance(quantized.lstm, dynamic.LSTMCell)
    assert isinstance(quantized.attention.score, dynamic.Linear)
    assert isinstance(quantized.encoder.backbone[0], torch.nn.Conv2d)  # the encoder stays fp32
    assert quantized.classifier.weight().dtype == torch.qint8


def test_a_hub_repo_id_downloads_the_weights_with_the_callers_options(make_model, tmp_path,
                                                                      monkeypatch):
    """From a repo id (not a folder): model.safetensors of that repo, at that revision, with the
    caller's cache folder, download flags and token, and those weights loaded (tests never touch
    the network: the download is replaced by a recorder that hands over a saved model)."""
    from captioner import model as model_module

    saved = make_model(seed=3).save(tmp_path / "saved")
    calls = []

    def download(*args, **kwargs):
        calls.append((args, kwargs))
        return str(saved / "model.safetensors")

    monkeypatch.setattr(model_module, "hf_hub_download", download)
    cache = tmp_path / "hub-cache"
    loaded = Captioner._from_pretrained(
        model_id="someone/tiny-captioner", revision="v2", cache_dir=cache, force_download=True,
        local_files_only=True, token="not-a-real-token", map_location="cpu",
        config=make_model(seed=3).config)
    assert calls == [(("someone/tiny-captioner", "model.safetensors"),
                      {"revision": "v2", "cache_dir": cache, "force_download": True,
                       "local_files_only": True, "token": "not-a-real-token"})]
    expected = make_model(seed=3).state_dict()
    assert all(torch.equal(loaded.state_dict()[k], v) for k, v in expected.items())


@pytest.mark.parametrize("count, cut", [(8, False), (9, True)])
def test_long_lists_are_cut_after_eight_names_and_only_then(tiny_model, count, cut):
    """Eight names are listed whole; a ninth is left out and marked " ...", for missing and
    unexpected tensors alike; shape mismatches list their first eight."""
    own = dict(tiny_model.state_dict())
    names = sorted(own)
    missing = {k: v for k, v in own.items() if k not in names[:count]}
    extras = {**own, **{f"extra.{i}": torch.zeros(1) for i in range(count)}}
    mark = " ..." if cut else ""
    added = sorted(f"extra.{i}" for i in range(count))
    for state, listed in ((missing, f"missing tensors {names[:8]}{mark}"),
                          (extras, f"unexpected tensors {added[:8]}{mark}")):
        with pytest.raises(WeightsError) as error:
            check_state_dict(tiny_model, state, "w")
        assert str(error.value) == f"w does not match its config.json: {listed}"
    wrong = {k: torch.zeros(*v.shape, 2) if k in names[:count] else v for k, v in own.items()}
    with pytest.raises(WeightsError) as error:
        check_state_dict(tiny_model, wrong, "w")
    shown = sorted(f"{k}: file {tuple(own[k].shape) + (2,)} vs model {tuple(own[k].shape)}"
                   for k in names[:count])[:8]
    assert str(error.value) == ("w does not match its config.json: shape mismatch "
                                + "; ".join(shown))


def test_a_mismatched_weights_file_is_named_in_the_error(make_model, tmp_path):
    folder = make_model(seed=1).save(tmp_path / "m")
    with pytest.raises(WeightsError, match=f"^{re.escape(str(folder / 'model.safetensors'))} "
                                           "does not match its config.json"):
        Captioner._from_pretrained(model_id=str(folder), revision=None, cache_dir=None,
                                   force_download=False, local_files_only=True, token=None,
                                   config=tiny_config(hidden_dim=48))


def test_save_makes_missing_folders_overwrites_and_leaves_only_readable_files(make_model,
                                                                             tmp_path):
    """Into a folder two levels deep that does not exist yet, then again into the same folder
    (a retrained model): the newest weights, and nothing but the two files, config.json indented
    for people to read and diff."""
    folder = tmp_path / "runs" / "new" / "model"
    make_model(seed=1).save(folder)
    make_model(seed=2).save(folder)
    assert sorted(p.name for p in folder.iterdir()) == ["config.json", "model.safetensors"]
    loaded = Captioner._from_pretrained(model_id=str(folder), revision=None, cache_dir=None,
                                        force_download=False, local_files_only=True, token=None,
                                        config=tiny_config())
    newest = make_model(seed=2).state_dict()
    assert all(torch.equal(loaded.state_dict()[k], v) for k, v in newest.items())
    text = (folder / "config.json").read_text()
    assert text.startswith('{\n  "vocab": [\n    "<pad>",')


def test_an_unknown_hard_readout_is_refused_naming_the_choices():
    with pytest.raises(ValueError, match=r"hard_readout must be one of .*argmax.*got 'max'"):
        tiny_config(hard_readout="max")


def test_a_fresh_encoder_trains_every_module_and_train_means_train(make_model):
    encoder = make_model().encoder
    encoder.eval()
    encoder.train()  # no argument: train mode, as for any nn.Module
    assert encoder.training and all(m.training for m in encoder.backbone)


def test_mixed_precision_keeps_the_features_and_coordinates_in_half_precision(make_model):
    """Under bf16 autocast the coordinate channels follow the features' dtype instead of
    promoting the whole grid back to float32 (twice the memory per image)."""
    encoder = make_model().encoder
    with torch.autocast("cpu", dtype=torch.bfloat16):
        features = encoder(torch.rand(2, 3, 32, 32))
    assert features.dtype == torch.bfloat16
    assert torch.equal(features[0, :, -2:].float(), encoder.coord_grid)


def test_step_reads_the_context_with_the_rule_it_is_given(make_model):
    model = make_model()
    features = model.encoder(torch.rand(1, 3, 32, 32))
    state, projected = model.init_state(features)
    words = torch.tensor([model.vocab.start_id])

    def first_cell(alpha, f):
        return Attention.read_cell(torch.zeros_like(alpha[:, 0]).long(), f)

    default, *_ = model.step(words, state, features, projected)
    ruled, *_ = model.step(words, state, features, projected, read=first_cell)
    output, *_ = model.advance(words, state, features, projected, read=first_cell)
    assert torch.allclose(ruled, model.classifier(output))
    assert not torch.allclose(ruled, default, atol=1e-4)


def test_look_here_maps_of_any_float_dtype_give_the_same_words(make_model):
    """A map built in float64 (numpy's default) steers exactly like the same map in float32."""
    model = make_model()
    features = model.encoder(torch.rand(1, 3, 32, 32))
    state, projected = model.init_state(features)
    words = torch.tensor([model.vocab.start_id])
    heat = torch.zeros(1, 16, dtype=torch.float64)
    heat[0, 3] = 1.0
    rows = torch.tensor([True])
    as64, _, alpha64, _ = model.step(words, state, features, projected, override=(rows, heat))
    as32, _, alpha32, _ = model.step(words, state, features, projected,
                                     override=(rows, heat.float()))
    assert alpha64.dtype == torch.float32 and torch.equal(alpha64, alpha32)
    assert torch.equal(as64, as32)


def test_load_model_puts_the_whole_model_on_the_device_and_reads_weights_straight_there(
        tiny_model, tmp_path, monkeypatch):
    """Checked with torch's "meta" device, since this machine has no GPU: the weights file is
    read for the chosen device, and the model, non-persistent coordinate grid included, ends on
    it (a grid left behind on the CPU fails on the first GPU caption)."""
    tiny_model.save(tmp_path)
    asked = []
    real_load = captioner.model.load_file

    def load_file(path, device="cpu"):
        asked.append(device)
        return real_load(path, device="cpu")  # safetensors cannot read onto "meta"

    monkeypatch.setattr(captioner.model, "load_file", load_file)
    monkeypatch.setattr(captioner.hub, "resolve_device", lambda name: "meta")
    model = captioner.hub.load_model(tmp_path)
    assert asked == ["meta"]
    assert {t.device.type for t in [*model.parameters(), *model.buffers()]} == {"meta"}
    assert model.encoder.coord_grid.device.type == "meta"


def switched_on(plain: Captioner, query: str) -> Captioner:
    """`plain`'s weights in a model whose query also sees the word just said (`word_query`)
    or where the last word looked (`location_query`)."""
    model = Captioner(replace(plain.config, **{query: True})).eval()
    model.load_state_dict({**model.state_dict(), **plain.state_dict()})
    return model


def assert_same_outputs(model, plain, features):
    """Every logit and attention weight of a teacher-forced caption is bit-identical."""
    captions = torch.tensor([[1, 4, 5, 6, 2]])
    for mine, theirs in zip(model(features, captions), plain(features, captions)):
        assert torch.equal(mine, theirs)


def first_looks(model, features, first_words):
    """The attention of one step from the same start, for each word just said."""
    state, projected = model.init_state(features)
    return [model.step(torch.tensor([w]), state, features, projected)[2] for w in first_words]


def test_the_word_query_starts_as_the_paper_and_then_lets_the_word_move_the_look(make_model):
    """Switched on, the word's projection starts at zero: every logit and attention weight is
    bit-identical to the paper's query. Once it has weights, the same state looks elsewhere
    after another word; the paper's query (the state alone) looks at the same place whatever
    the word was."""
    plain = make_model(seed=3)
    model = switched_on(plain, "word_query")
    features = torch.randn(1, 16, model.encoder.out_dim)
    assert_same_outputs(model, plain, features)
    with torch.no_grad():
        model.attention.word_proj.weight.normal_()
    small, big = first_looks(model, features, [4, 5])
    assert (small - big).abs().max() > 1e-3
    small, big = first_looks(plain, features, [4, 5])
    assert torch.equal(small, big)


def test_a_word_query_model_reloads_bit_identically(make_model, tmp_path):
    model = switched_on(make_model(seed=4), "word_query")
    with torch.no_grad():
        model.attention.word_proj.bias.normal_()
    again = Captioner.from_pretrained(str(model.save(tmp_path / "m")))
    assert again.config.word_query
    for name, tensor in model.state_dict().items():
        assert torch.equal(again.state_dict()[name], tensor), name


def test_the_location_query_starts_as_without_it_and_keeps_the_last_look(make_model):
    """Switched on, the projection of the last look starts at zero: logits and attention are
    bit-identical to the model without it. The state carries each word's look, the forced one
    where "Look here" forced it, and the next word's look depends on it."""
    plain = make_model(seed=6)
    model = switched_on(plain, "location_query")
    features = torch.randn(1, 16, model.encoder.out_dim)
    assert_same_outputs(model, plain, features)
    with torch.no_grad():
        model.attention.location_proj.weight.normal_()
    state, projected = model.init_state(features)
    forced = torch.zeros(1, 16)
    forced[0, 9] = 1.0
    _, after_forced, _, _ = model.step(torch.tensor([4]), state, features, projected,
                                       override=(torch.tensor([True]), forced))
    assert torch.equal(after_forced.alpha, forced)
    _, after_own, own_look, _ = model.step(torch.tensor([4]), state, features, projected)
    assert torch.equal(after_own.alpha, own_look)
    moved = DecoderState(after_own.h, after_own.c, forced)
    next_look = model.step(torch.tensor([5]), after_own, features, projected)[2]
    next_after_forced = model.step(torch.tensor([5]), moved, features, projected)[2]
    assert (next_look - next_after_forced).abs().max() > 1e-3


@torch.no_grad()
def test_the_last_look_raises_the_score_of_the_cell_it_looked_at(make_model):
    """With a filter that copies the last map (a one at its centre) and a projection that
    turns it into a step along the score's direction, only the cell the last word looked at
    (row 1, column 4 of a 6x6 grid: not its transpose) gains score; every other cell keeps
    its score up to the softmax's shared shift."""
    model = switched_on(make_model(seed=7, grid_size=6, image_size=48), "location_query")
    att = model.attention
    att.location_conv.weight.zero_()
    att.location_conv.bias.zero_()
    centre = att.location_conv.weight.shape[-1] // 2
    att.location_conv.weight[0, 0, centre, centre] = 1.0
    att.location_proj.weight.zero_()
    att.location_proj.weight[:, 0] = 3.0 * att.score.weight[0].sign()
    features = torch.randn(1, 36, model.encoder.out_dim)
    hidden = torch.randn(1, model.config.hidden_dim)
    projected = att.feature_proj(features)
    cell = 1 * 6 + 4  # row 1, column 4, row-major
    looked = torch.zeros(1, 36)
    looked[0, cell] = 1.0
    _, before = att(features, projected, hidden, previous=torch.zeros(1, 36))
    _, after = att(features, projected, hidden, previous=looked)
    gain = (after.log() - before.log())[0]
    others = torch.cat([gain[:cell], gain[cell + 1:]])
    assert gain[cell] - others.mean() > 0.1
    assert torch.allclose(others, others.mean().expand_as(others), atol=1e-5)
