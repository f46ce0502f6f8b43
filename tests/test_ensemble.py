"""An ensemble decodes as one model: at each word the mean of its members' next-word
probabilities and the mean of their attention maps, each member reading its own features of
the image; it saves and reloads bit-identically, and whatever cannot be joined is refused in
one line."""

import json
from dataclasses import replace

import numpy as np
import pytest
import torch
from conftest import tiny_config
from PIL import Image
from safetensors.torch import load_file

from captioner import cli
from captioner.decoding import Guide, caption_images, images_to_batch, point_map
from captioner.ensemble import Ensemble, build_ensemble
from captioner.faithfulness import removed
from captioner.hub import load_model
from captioner.model import Captioner
from captioner.training_config import TrainConfig, config_problem


@pytest.fixture
def members(make_model, tmp_path):
    """Two tiny models of one config with different weights, saved, and their ensemble."""
    folders = [make_model(seed=seed).save(tmp_path / f"m{seed}") for seed in (0, 1)]
    ensemble = build_ensemble([str(f) for f in folders])
    return [load_model(f) for f in folders], folders, ensemble


def picture(seed: int) -> Image.Image:
    rng = np.random.default_rng(seed)
    return Image.fromarray(rng.integers(0, 256, (32, 40, 3), dtype=np.uint8))


def test_each_word_is_the_mean_of_the_members_probabilities_and_maps(members):
    (a, b), _, ensemble = members
    images = images_to_batch(a, [picture(0), picture(1)])
    fa, fb = a.encode(images), b.encode(images)
    assert not torch.allclose(fa, fb)  # the members see the image differently
    features = ensemble.encode(images)
    torch.testing.assert_close(features, torch.cat([fa, fb], dim=2), rtol=0, atol=0)

    words = torch.tensor([a.vocab.start_id, a.vocab.index["red"]])
    state, projected = ensemble.init_state(features)
    sa, pa = a.init_state(fa)
    sb, pb = b.init_state(fb)
    for word in (words, torch.tensor([a.vocab.index["square"]] * 2)):
        logp, state, alpha, gate = ensemble.step(word, state, features, projected)
        la, sa, alpha_a, gate_a = a.step(word, sa, fa, pa)
        lb, sb, alpha_b, gate_b = b.step(word, sb, fb, pb)
        expected = ((la.softmax(1) + lb.softmax(1)) / 2).log()
        # the mean of probabilities, not of logits (whose softmax would differ)
        assert (((la + lb) / 2).log_softmax(1) - expected).abs().max() > 1e-4
        torch.testing.assert_close(logp, expected)
        torch.testing.assert_close(logp.exp().sum(1), torch.ones(2))
        assert (alpha_a - alpha_b).abs().max() > 1e-4  # so the mean below is not one member's
        torch.testing.assert_close(alpha, (alpha_a + alpha_b) / 2)
        torch.testing.assert_close(gate, (gate_a + gate_b) / 2)


def test_two_copies_of_one_model_caption_exactly_as_that_model(make_model):
    model = make_model(seed=3)
    twin = Ensemble(tiny_config(members=2)).eval()
    for slot in twin.members:
        slot.load_state_dict(model.state_dict())
    images = [picture(2), picture(3), picture(4)]
    for beam in (1, 3):
        alone = caption_images(model, images, beam_size=beam, max_len=6)
        joined = caption_images(twin, images, beam_size=beam, max_len=6)
        for x, y in zip(alone, joined):
            assert x.tokens == y.tokens
            assert x.score == pytest.approx(y.score, abs=1e-5)  # a sum would add log 2
            np.testing.assert_allclose(x.attention, y.attention, atol=1e-6)


def test_teacher_forcing_matches_step_by_step_decoding(members):
    (a, _), _, ensemble = members
    features = ensemble.encode(images_to_batch(a, [picture(5)]))
    ids = torch.tensor([[a.vocab.start_id, a.vocab.index["blue"], a.vocab.index["circle"],
                         a.vocab.end_id]])
    logps, alphas = ensemble(features, ids)
    state, projected = ensemble.init_state(features)
    for t in range(3):
        logp, state, alpha, _ = ensemble.step(ids[:, t], state, features, projected)
        torch.testing.assert_close(logps[:, t], logp)
        torch.testing.assert_close(alphas[:, t], alpha)


def test_a_look_here_map_steers_every_member(members):
    (a, _), _, ensemble = members
    heat = point_map(a.encoder.cell_centres(), 0.9, 0.1)
    caption, = caption_images(ensemble, [picture(6)], beam_size=1, max_len=4,
                              guide=Guide(attention={0: heat, 1: heat}))
    # the shown map is the mean of the members' maps: the given one only if both used it
    np.testing.assert_allclose(caption.attention[0], heat, atol=1e-6)
    np.testing.assert_allclose(caption.attention[1], heat, atol=1e-6)
    assert np.abs(caption.attention[2] - heat).max() > 1e-3  # then its own again


def test_removing_cells_keeps_every_members_coordinates(members):
    (a, b), _, ensemble = members
    features = ensemble.encode(images_to_batch(a, [picture(7)]))
    per_member = a.encoder.out_dim
    image = a.encoder.image_dim
    cells = torch.zeros(1, features.shape[1], dtype=torch.bool)
    cells[0, [1, 5]] = True
    background = torch.arange(2 * image, dtype=torch.float32)
    out = removed(ensemble, features, cells, background)
    for k in range(2):  # member k's image channels, then its coordinates
        start = k * per_member
        torch.testing.assert_close(out[0, 5, start:start + image],
                                   background[k * image:(k + 1) * image])
        torch.testing.assert_close(out[0, :, start + image:start + per_member],
                                   features[0, :, start + image:start + per_member])
    torch.testing.assert_close(out[0, ~cells[0]], features[0, ~cells[0]])


def test_it_saves_and_reloads_bit_identically_as_an_ensemble(members, tmp_path, capsys):
    _, (fa, fb), ensemble = members
    out = tmp_path / "joined"
    assert cli.main(["ensemble", str(fa), str(fb), "--output", str(out)]) == 0
    assert f"wrote {out}: an ensemble of {fa} + {fb}" in capsys.readouterr().out
    assert json.loads((out / "config.json").read_text())["members"] == 2
    loaded = load_model(out)
    assert isinstance(loaded, Ensemble) and len(loaded.members) == 2
    saved, own = loaded.state_dict(), ensemble.state_dict()
    assert saved.keys() == own.keys()
    assert all(torch.equal(saved[k], own[k]) for k in own)
    # each member is the model it came from, in order
    first = load_model(fa).state_dict()
    assert all(torch.equal(loaded.members[0].state_dict()[k], first[k]) for k in first)
    assert any(not torch.equal(loaded.members[1].state_dict()[k], first[k]) for k in first)


def test_the_cli_captions_with_an_ensemble(members, tmp_path, capsys):
    _, (fa, fb), _ = members
    out = tmp_path / "joined"
    assert cli.main(["ensemble", str(fa), str(fb), "--output", str(out)]) == 0
    image = tmp_path / "pic.png"
    picture(8).save(image)
    capsys.readouterr()
    assert cli.main(["caption", str(image), "--weights", str(out), "--json"]) == 0
    said = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    expected, = caption_images(load_model(out), [picture(8)], beam_size=3, max_len=20)
    assert said["caption"] == expected.text


@pytest.mark.parametrize("case, message", [
    ("one", "error: an ensemble needs at least two models"),
    ("other", "its config differs from that of {a} in hidden_dim; an ensemble's members share "
              "one vocabulary, architecture and world"),
    ("nested", "error: an ensemble's members must be single models, not ensembles"),
])
def test_what_cannot_be_joined_is_refused_in_one_line(members, make_model, tmp_path, capsys,
                                                      case, message):
    _, (fa, fb), _ = members
    other = make_model(seed=2, hidden_dim=48).save(tmp_path / "other")
    nested = tmp_path / "nested"
    assert cli.main(["ensemble", str(fa), str(fb), "--output", str(nested)]) == 0
    models = {"one": [fa], "other": [fa, other], "nested": [nested, nested]}[case]
    out = tmp_path / "out"
    capsys.readouterr()
    assert cli.main(["ensemble", *map(str, models), "--output", str(out)]) == 2
    err = capsys.readouterr().err.strip()
    assert message.format(a=fa) in err and "\n" not in err
    assert not out.exists()


def test_a_single_model_class_refuses_an_ensemble_config():
    with pytest.raises(ValueError, match="holds 2 models: build it as a captioner.ensemble"):
        Captioner(tiny_config(members=2))
    with pytest.raises(ValueError, match="members must be a whole number >= 1"):
        tiny_config(members=0)


def test_training_refuses_to_start_from_an_ensemble(members, tmp_path):
    _, (fa, fb), _ = members
    out = tmp_path / "joined"
    assert cli.main(["ensemble", str(fa), str(fb), "--output", str(out)]) == 0
    cfg = TrainConfig(dataset="scenes", init_from=str(out), output_dir=str(tmp_path / "run"))
    assert config_problem(cfg) == (f"--init-from {out}: an ensemble of 2 models, which only "
                                   "captions; training starts from one model: give one of its "
                                   "members")
    assert config_problem(replace(cfg, init_from=str(fa))) is None


def test_half_stores_float16_and_loads_the_rounded_weights_as_float32(members, tmp_path):
    _, (fa, fb), ensemble = members
    full, half = tmp_path / "full", tmp_path / "half"
    assert cli.main(["ensemble", str(fa), str(fb), "--output", str(full)]) == 0
    assert cli.main(["ensemble", str(fa), str(fb), "--output", str(half), "--half"]) == 0
    stored = load_file(half / "model.safetensors")
    own = ensemble.state_dict()
    floats = [k for k in own if own[k].is_floating_point()]
    assert floats and all(stored[k].dtype == torch.float16 for k in floats)
    assert all(stored[k].dtype == own[k].dtype for k in own if k not in floats)  # counters
    size = (half / "model.safetensors").stat().st_size
    assert size < 0.6 * (full / "model.safetensors").stat().st_size
    loaded = load_model(half).state_dict()
    for k in floats:
        assert loaded[k].dtype == torch.float32
        assert torch.equal(loaded[k], own[k].half().float())  # rounded once, nothing else
    assert any(not torch.equal(loaded[k], own[k]) for k in floats)  # it did round
    # saved again as float16, the file is the same bytes: nothing drifts on a second round
    load_model(half).save(tmp_path / "again", half=True)
    assert (tmp_path / "again" / "model.safetensors").read_bytes() == \
        (half / "model.safetensors").read_bytes()


def test_the_app_says_it_shows_an_ensemble(members, tmp_path):
    from captioner.demo.model_info import ModelInfo

    (a, _), (fa, fb), ensemble = members
    joined = ensemble.save(tmp_path / "joined")
    text = ModelInfo.read("joined", joined, load_model(joined)).architecture
    alone = ModelInfo.read("a", fa, a).architecture
    assert text == ("an ensemble of 2 models that decode together (mean word probabilities "
                    f"and attention maps), each: {alone}")
    assert "ensemble" not in alone


def test_a_caption_of_start_alone_has_nothing_to_predict(members):
    """Faithfulness scores a greedy caption that ended at once: <start> alone, no steps."""
    (a, _), _, ensemble = members
    for model in (a, ensemble):
        features = model.encode(images_to_batch(a, [picture(9), picture(10)]))
        logps, alphas = model(features, torch.full((2, 1), a.vocab.start_id))
        assert logps.shape == (2, 0, len(a.vocab)) and alphas.shape == (2, 0, features.shape[1])
