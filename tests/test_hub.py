"""Saving and strict loading: bit-identical round trips, and errors that name the problem."""

import json
import os
import threading

import numpy as np
import pytest
import torch
from safetensors.torch import load_file, save_file

from captioner import hub
from captioner.decoding import decode
from captioner.hub import load_model, looks_like_path, read_config, resolve_model_dir
from captioner.model import CONFIG_FILE, WEIGHTS_FILE, Captioner, WeightsError


def features_for(model, n=3, seed=0):
    generator = torch.Generator().manual_seed(seed)
    size = model.config.image_size
    with torch.no_grad():
        return model.encode(torch.randn(n, 3, size, size, generator=generator))


def edit_config(model_dir, **changes):
    path = model_dir / CONFIG_FILE
    config = json.loads(path.read_text())
    for key, value in changes.items():
        if value is None:
            config.pop(key)
        else:
            config[key] = value
    path.write_text(json.dumps(config))


def test_save_writes_weights_and_config(saved_model_dir):
    assert sorted(p.name for p in saved_model_dir.iterdir()) == [CONFIG_FILE, WEIGHTS_FILE]


def test_round_trip_is_bit_identical(tiny_model, saved_model_dir):
    loaded = load_model(saved_model_dir)
    assert isinstance(loaded, Captioner)
    assert not loaded.training  # dropout off: loaded models are ready to caption
    assert loaded.config == tiny_model.config
    assert loaded.vocab.words == tiny_model.vocab.words
    ours, theirs = tiny_model.state_dict(), loaded.state_dict()
    assert ours.keys() == theirs.keys()
    for name in ours:
        assert ours[name].dtype == theirs[name].dtype, name
        assert torch.equal(ours[name], theirs[name]), name
    features = features_for(tiny_model)
    assert torch.equal(loaded.encode(torch.zeros(1, 3, 32, 32)),
                       tiny_model.encode(torch.zeros(1, 3, 32, 32)))
    for beam_size in (1, 3):
        before = decode(tiny_model, features, beam_size=beam_size, max_len=8)
        after = decode(loaded, features, beam_size=beam_size, max_len=8)
        for a, b in zip(before, after):
            assert a.tokens == b.tokens and a.score == b.score
            np.testing.assert_array_equal(a.attention, b.attention)


def test_round_trip_of_a_non_default_config(make_model, tmp_path):
    model = make_model(seed=9, encoder_stage=1, grid_size=5, image_size=40, coord_channels=False,
                       image_mean=[0.5, 0.5, 0.5], image_std=[0.25, 0.25, 0.25])
    loaded = load_model(model.save(tmp_path / "m"))
    assert loaded.config == model.config
    assert all(torch.equal(v, loaded.state_dict()[k]) for k, v in model.state_dict().items())


def test_config_json_contents(tiny_model, saved_model_dir):
    config = json.loads((saved_model_dir / CONFIG_FILE).read_text())
    assert config["vocab"] == tiny_model.vocab.words
    assert config["image_size"] == 32
    assert config["image_mean"] == pytest.approx([0.485, 0.456, 0.406])
    assert config["image_std"] == pytest.approx([0.229, 0.224, 0.225])
    assert config["encoder"] == "resnet18" and config["encoder_stage"] == 2
    assert config["grid_size"] == 4 and config["hidden_dim"] == 32
    # loading must never download a backbone: nothing in the config may ask for one
    for key, value in config.items():
        lowered = key.lower()
        assert not any(w in lowered for w in ("pretrain", "imagenet", "download", "weights")), key
        assert not (isinstance(value, str) and "imagenet" in value.lower()), key
    assert read_config(saved_model_dir) == tiny_model.config


def test_loading_never_asks_torchvision_for_pretrained_weights(saved_model_dir, monkeypatch):
    import captioner.model as model_module

    real_get_model = model_module.models.get_model

    def no_downloads(name, **kwargs):
        assert kwargs.get("weights") is None, "loading tried to fetch ImageNet weights"
        return real_get_model(name, **kwargs)

    monkeypatch.setattr(model_module.models, "get_model", no_downloads)
    load_model(saved_model_dir)


def test_missing_weights_file(saved_model_dir):
    (saved_model_dir / WEIGHTS_FILE).unlink()
    with pytest.raises(WeightsError, match=r"model\.safetensors: file not found"):
        load_model(saved_model_dir)


def test_truncated_weights_file(saved_model_dir):
    path = saved_model_dir / WEIGHTS_FILE
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])
    with pytest.raises(WeightsError, match="not a readable safetensors file") as error:
        load_model(saved_model_dir)
    assert WEIGHTS_FILE in str(error.value)


def test_garbage_weights_file(saved_model_dir):
    (saved_model_dir / WEIGHTS_FILE).write_bytes(b"\x00" * 100)
    with pytest.raises(WeightsError, match="not a readable safetensors file"):
        load_model(saved_model_dir)


def test_config_and_weights_shape_mismatch(saved_model_dir):
    edit_config(saved_model_dir, hidden_dim=48)
    with pytest.raises(WeightsError, match="shape mismatch") as error:
        load_model(saved_model_dir)
    message = str(error.value)
    assert "does not match its config.json" in message
    assert "init_h.weight: file (32, 130) vs model (48, 130)" in message


def test_vocabulary_size_mismatch(saved_model_dir):
    config = json.loads((saved_model_dir / CONFIG_FILE).read_text())
    edit_config(saved_model_dir, vocab=[*config["vocab"], "extra"])
    with pytest.raises(WeightsError, match=r"embedding\.weight: file \(14, 16\) vs model"):
        load_model(saved_model_dir)


def test_unexpected_tensor(saved_model_dir):
    path = saved_model_dir / WEIGHTS_FILE
    state = load_file(path)
    state["extra.weight"] = torch.zeros(3)
    save_file(state, path, metadata={"format": "pt"})
    with pytest.raises(WeightsError, match=r"unexpected tensors \['extra\.weight'\]"):
        load_model(saved_model_dir)


def test_missing_tensor(saved_model_dir):
    path = saved_model_dir / WEIGHTS_FILE
    state = load_file(path)
    del state["classifier.bias"]
    save_file(state, path, metadata={"format": "pt"})
    with pytest.raises(WeightsError, match=r"missing tensors \['classifier\.bias'\]"):
        load_model(saved_model_dir)


def test_missing_config(saved_model_dir):
    (saved_model_dir / CONFIG_FILE).unlink()
    with pytest.raises(WeightsError, match=r"config\.json: file not found"):
        load_model(saved_model_dir)


def test_config_without_vocab(saved_model_dir):
    edit_config(saved_model_dir, vocab=None)
    with pytest.raises(WeightsError, match="has no 'vocab'"):
        load_model(saved_model_dir)


def test_config_that_is_not_an_object(saved_model_dir):
    (saved_model_dir / CONFIG_FILE).write_text("[1, 2, 3]")
    with pytest.raises(WeightsError, match="has no 'vocab'"):
        load_model(saved_model_dir)


def test_invalid_json_config(saved_model_dir):
    (saved_model_dir / CONFIG_FILE).write_text('{"vocab": ["<pad>",')
    with pytest.raises(WeightsError, match="not valid JSON") as error:
        load_model(saved_model_dir)
    assert CONFIG_FILE in str(error.value)


@pytest.mark.parametrize("changes, message", [
    ({"encoder": "resnet9"}, "encoder must be one of"),
    ({"encoder_stage": 7}, "encoder_stage must be 1..4"),
    ({"vocab": ["a", "b"]}, "special tokens"),
])
def test_invalid_config_values(saved_model_dir, changes, message):
    edit_config(saved_model_dir, **changes)
    with pytest.raises(WeightsError, match="invalid config") as error:
        load_model(saved_model_dir)
    assert message in str(error.value)


def test_unknown_config_keys_are_ignored(tiny_model, saved_model_dir):
    edit_config(saved_model_dir, written_by="a newer captioner", architectures=["Captioner"])
    loaded = load_model(saved_model_dir)
    assert loaded.config == tiny_model.config


def test_nonexistent_local_path(tmp_path):
    with pytest.raises(WeightsError, match="no such model folder") as error:
        load_model(tmp_path / "nowhere")
    assert "--weights" in str(error.value)  # says what to pass instead
    with pytest.raises(WeightsError, match="no such model folder"):
        load_model("./not/a/model")


def test_missing_bundled_weights_say_how_to_train_them(tmp_path, monkeypatch):
    monkeypatch.setattr(hub, "BUNDLED_WEIGHTS", tmp_path / "weights")
    with pytest.raises(WeightsError, match="train_space.py"):
        resolve_model_dir(None)


def test_hub_id_while_offline_fails_fast_and_names_the_hub():
    import huggingface_hub.constants

    assert os.environ.get("HF_HUB_OFFLINE") == "1" and huggingface_hub.constants.HF_HUB_OFFLINE
    outcome = []

    def attempt():
        try:
            load_model("no-such-owner/no-such-captioner")
        except Exception as e:  # checked below
            outcome.append(e)

    worker = threading.Thread(target=attempt, daemon=True)  # a hang fails the test, not CI
    worker.start()
    worker.join(timeout=30)
    assert not worker.is_alive(), "loading a Hub id offline hung"  # a hang guard, no timing
    (error,) = outcome
    assert isinstance(error, WeightsError)
    message = str(error)
    assert "Hugging Face Hub" in message and "no-such-owner/no-such-captioner" in message
    assert "local model folder" in message


@pytest.mark.parametrize("source, is_path", [
    ("owner/model", False), ("model-name", False), ("owner/model.v2", False),
    ("./model", True), ("../weights", True), ("/abs/model", True), ("~/model", True),
    ("a/b/c", True), ("weights dir", True),
])
def test_looks_like_path(source, is_path):
    assert looks_like_path(source) is is_path


def test_weights_files_are_as_readable_as_the_rest(saved_model_dir):
    plain = saved_model_dir / "plain.txt"
    plain.write_text("x")
    want = plain.stat().st_mode & 0o777
    assert (saved_model_dir / WEIGHTS_FILE).stat().st_mode & 0o777 == want
    assert (saved_model_dir / CONFIG_FILE).stat().st_mode & 0o777 == want


def test_missing_local_name_says_so_beside_the_hub_result():
    with pytest.raises(WeightsError) as error:
        resolve_model_dir("not-a-folder-here")
    message = str(error.value)
    assert "no local folder 'not-a-folder-here'" in message and "Hugging Face Hub" in message


CARD_CFG = {"dataset": "jxie/flickr8k", "encoder": "resnet50", "encoder_stage": 4, "grid": 7,
            "output_dir": "runs/x", "push_to_hub": ""}
CAPTION_SCORES = {"bleu1": 60.1, "bleu4": 20.5, "meteor": 19.0, "rouge_l": 45.0, "cider": 50.2}


def write_card(tmp_path, cfg=None, **metrics_extra):
    from huggingface_hub import ModelCard

    metrics = {"images": 10, "selected_epoch": 3,
               **{b: {**CAPTION_SCORES, **metrics_extra} for b in ("beam1", "beam3")}}
    hub.write_model_card(tmp_path, cfg={**CARD_CFG, **(cfg or {})}, metrics=metrics,
                         command="python train_space.py")
    text = (tmp_path / "README.md").read_text()
    return ModelCard.load(tmp_path / "README.md"), text


def test_card_metadata_parses_back_with_huggingface_hub(tmp_path):
    card, text = write_card(tmp_path)
    assert card.data.datasets == ["jxie/flickr8k"]
    results = {(r.metric_name, r.metric_value) for r in card.data.eval_results}
    assert ("BLEU-4, beam 3", 20.5) in results and ("CIDEr, beam 1", 50.2) in results
    assert {r.dataset_type for r in card.data.eval_results} == {"jxie/flickr8k"}
    assert {r.dataset_split for r in card.data.eval_results} == {"test"}
    assert "http" not in text  # no invented project URL
    assert "Pointing game" not in text and "What made attention point" not in text
    assert "photo.jpg" in text
    assert "\n\n\n" not in text  # one blank line between paragraphs


def test_card_scenes_percentages_and_pointing_claims(tmp_path):
    pointing = dict(objects_correct=0.925, pointing=0.2, pointing_chance=0.3)
    card, text = write_card(tmp_path, cfg={"dataset": "scenes"}, **pointing)
    assert card.data.datasets is None and "scene.png" in text and "photo.jpg" not in text
    assert "| 92.5 |" in text and "all objects right (%)" in text
    assert "Pointing game" in text and "What made attention point" not in text  # below chance
    _, text = write_card(tmp_path, cfg={"dataset": "scenes"}, **{**pointing, "pointing": 0.9})
    assert "What made attention point" in text


def test_card_links_the_project_only_when_given(tmp_path):
    hub.write_model_card(tmp_path, cfg=CARD_CFG, metrics={"images": 1, "beam1": CAPTION_SCORES},
                         command="c", project_url="https://example.org/captioner")
    assert "[captioner](https://example.org/captioner)" in (tmp_path / "README.md").read_text()


def test_card_says_how_long_training_took_on_what(tmp_path):
    """The epochs' own times add up (a resumed run's too), hours and minutes rounded."""
    history = [{"epoch": 1, "seconds": 60.4}, {"epoch": 2, "seconds": 3000.0},
               {"epoch": 3, "seconds": 2539.7}]
    said = hub.training_time(history, "2 CPU cores")
    assert said.startswith("Trained for 3 epochs in 1 h 33 min on 2 CPU cores")
    assert hub.training_time(history[:1], "one NVIDIA H100").startswith(
        "Trained for 1 epoch in 1 min on one NVIDIA H100")
    hub.write_model_card(tmp_path, cfg=CARD_CFG, metrics={"images": 1, "beam1": CAPTION_SCORES},
                         command="python train_space.py", trained_in=said)
    text = (tmp_path / "README.md").read_text()
    assert f"## How it was trained\n\n{said}\n\n```bash\npython train_space.py" in text
