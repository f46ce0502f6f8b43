"""--push-to-hub by content: what reaches the Hub is this folder's model (it loads back to the
same tensors), its card and figures, and nothing that must stay local."""

from pathlib import Path
from unittest import mock

import pytest
import torch
from huggingface_hub.utils import filter_repo_objects
from safetensors.torch import load

from captioner.hub import hub_client, push_folder

SECRET = "hf_SECRETtoken1234567890"


@pytest.fixture
def model_folder(tiny_model, tmp_path):
    out = tiny_model.save(tmp_path / "run")
    (out / "README.md").write_text("---\nlicense: mit\n---\n# card\n")
    (out / "metrics.json").write_text('{"bleu4": 12.5}')
    (out / "training_curve.png").write_bytes(b"\x89PNG curve")
    (out / "checkpoint.safetensors").write_bytes(b"optimizer state")
    (out / "log.jsonl").write_text('{"epoch": 1}\n')
    (tmp_path / "model.safetensors").write_bytes(b"a different model beside the folder")
    return out


def test_push_uploads_this_folders_model_and_nothing_local(model_folder, tiny_model,
                                                           monkeypatch):
    monkeypatch.setenv("HF_TOKEN", SECRET)
    sent = {}

    def upload_folder(self, *, folder_path, repo_id, allow_patterns=None,
                      ignore_patterns=None, commit_message=None, **kwargs):
        folder = Path(folder_path)
        present = sorted(str(p.relative_to(folder)) for p in folder.rglob("*") if p.is_file())
        names = filter_repo_objects(present, allow_patterns=allow_patterns,
                                    ignore_patterns=ignore_patterns)
        sent.update(repo_id=repo_id, message=commit_message,
                    files={n: (folder / n).read_bytes() for n in names})
        return mock.Mock(repo_url=f"https://huggingface.co/{repo_id}")

    with mock.patch("huggingface_hub.HfApi.create_repo") as create, \
            mock.patch("huggingface_hub.HfApi.upload_folder", upload_folder):
        url = push_folder(model_folder, "me/tiny")
    create.assert_called_once_with("me/tiny", exist_ok=True)
    assert url == "https://huggingface.co/me/tiny"
    assert sent["repo_id"] == "me/tiny" and sent["message"] == "Upload captioner model"
    assert sorted(sent["files"]) == ["README.md", "config.json", "metrics.json",
                                     "model.safetensors", "training_curve.png"]
    for name, data in sent["files"].items():
        assert data == (model_folder / name).read_bytes(), name
    uploaded = load(sent["files"]["model.safetensors"])
    for key, tensor in tiny_model.state_dict().items():
        assert torch.equal(uploaded[key], tensor), key


def test_push_url_falls_back_to_the_repo_page(model_folder, monkeypatch):
    monkeypatch.setenv("HF_TOKEN", SECRET)
    with mock.patch("huggingface_hub.HfApi.create_repo"), \
            mock.patch("huggingface_hub.HfApi.upload_folder", return_value=object()):
        assert push_folder(model_folder, "me/tiny") == "https://huggingface.co/me/tiny"


def test_client_carries_the_token_and_a_missing_one_says_how_to_log_in(monkeypatch, tmp_path):
    monkeypatch.setenv("HF_TOKEN", SECRET)
    assert hub_client("x").token == SECRET
    monkeypatch.delenv("HF_TOKEN")
    monkeypatch.setenv("HF_HOME", str(tmp_path))
    with pytest.raises(SystemExit) as stop:
        hub_client("--push-to-hub")
    assert str(stop.value) == ("--push-to-hub needs a Hugging Face token: set HF_TOKEN or run "
                               "`hf auth login` (the token is read, never printed or saved).")


def test_metrics_table_puts_each_figure_in_its_row_and_column():
    from captioner.hub import metrics_table

    table = metrics_table({"beam3": {"bleu4": 21.456, "objects_correct": 0.9125},
                           "beam1": {"bleu4": 19.0, "cider": 50.5, "pointing": 0.5}})
    assert table.splitlines() == [
        "| decoding | BLEU-4 | CIDEr | all objects right (%) | pointing ±1 cell (%) |",
        "|---|---|---|---|---|",
        "| beam 1 | 19 | 50.5 | – | 50 |",
        "| beam 3 | 21.46 | – | 91.25 | – |"]


def test_eval_results_scale_fractions_and_name_the_beam():
    from captioner.hub import eval_results

    results = eval_results({"beam1": {"bleu4": 19.123, "objects_correct": 0.8, "pointing": 0.5,
                                      "relations_correct": 0.7},
                            "beam3": {"cider": 40.0}}, "me/scenes", "Scenes")
    assert [(r.metric_name, r.metric_type, r.metric_value) for r in results] == [
        ("BLEU-4, beam 1", "bleu", 19.12), ("all objects right (%), beam 1", "accuracy", 80.0),
        ("CIDEr, beam 3", "cider", 40.0)]
    first = results[0]
    assert first.task_name == "Image captioning"
    assert (first.task_type, first.dataset_type, first.dataset_name, first.dataset_split) == (
        "image-to-text", "me/scenes", "Scenes", "test")


@pytest.mark.parametrize("name, device", [(None, "cpu"), ("auto", "cpu"), (" CPU ", "cpu"),
                                          ("Auto", "cpu")])
def test_device_names_on_a_cpu_only_machine(name, device, monkeypatch):
    from captioner.hub import resolve_device

    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    monkeypatch.setattr(torch.backends.mps, "is_available", lambda: False)
    assert resolve_device(name) == device


@pytest.mark.parametrize("name, message", [
    ("cuda", "device 'cuda': CUDA is not available on this machine (use --device cpu or auto)"),
    ("cuda:1", "device 'cuda:1': CUDA is not available on this machine (use --device cpu or "
               "auto)"),
    ("mps", "device 'mps': Apple's Metal backend is not available here"),
    ("tpu", "unknown device 'tpu': use auto, cpu, cuda, cuda:N or mps"),
    ("cuda:x", "unknown device 'cuda:x': use auto, cpu, cuda, cuda:N or mps")])
def test_unavailable_devices_are_named(name, message, monkeypatch):
    from captioner.hub import resolve_device

    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    monkeypatch.setattr(torch.backends.mps, "is_available", lambda: False)
    with pytest.raises(ValueError) as error:
        resolve_device(name)
    assert str(error.value) == message


def test_gpus_are_picked_and_counted(monkeypatch):
    from captioner.hub import resolve_device

    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 2)
    assert resolve_device("auto") == "cuda" and resolve_device("cuda:1") == "cuda:1"
    assert resolve_device("cuda") == "cuda"
    with pytest.raises(ValueError, match=r"^device 'cuda:2': only 2 CUDA device\(s\) here$"):
        resolve_device("cuda:2")
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    monkeypatch.setattr(torch.backends.mps, "is_available", lambda: True)
    assert resolve_device("auto") == "mps" and resolve_device("mps") == "mps"


def test_metrics_are_read_beside_the_weights(tmp_path):
    from captioner.hub import read_metrics

    assert read_metrics(tmp_path) == {}
    (tmp_path / "metrics.json").write_text('{"beam1": {"bleu4": 3.5}}')
    assert read_metrics(str(tmp_path)) == {"beam1": {"bleu4": 3.5}}


def test_pointing_note_explains_only_what_was_measured():
    from captioner.hub import (
        POINTING_DESIGN,
        POINTING_GAME,
        STEERING,
        STEERING_FOLLOWED,
        pointing_note,
    )

    assert pointing_note({"beam1": {"bleu4": 3.0}}) == ""
    beat = {"pointing": 0.6, "pointing_chance": 0.2}
    assert pointing_note({"beam1": beat}) == "\n\n" + POINTING_GAME + "\n\n" + POINTING_DESIGN
    steered = {**beat, "steering": 0.9, "steering_chance": 0.2}
    assert pointing_note({"beam1": steered, "beam3": beat}) == (
        "\n\n" + POINTING_GAME + "\n\n" + STEERING + STEERING_FOLLOWED + "\n\n"
        + POINTING_DESIGN)
    # steering at chance is reported, but "the words follow where it looks" is not claimed
    at_chance = {**beat, "steering": 0.2, "steering_chance": 0.2}
    assert pointing_note({"beam1": at_chance, "beam3": beat}) == (
        "\n\n" + POINTING_GAME + "\n\n" + STEERING + "\n\n" + POINTING_DESIGN)
    # the design is claimed only when every beam size beat chance; a tie is not beating it
    tie = {"pointing": 0.2, "pointing_chance": 0.2}
    assert pointing_note({"beam1": beat, "beam3": tie}) == "\n\n" + POINTING_GAME
    # a run taught to point (and to follow forced attention) says so instead of "learned alone"
    taught = pointing_note({"beam1": steered}, {"ground_attention": 1.0, "steer_words": 0.0})
    assert "taught* to look at each named object's box" in taught
    assert "captions only" not in taught and "--steer-words" not in taught
    both = pointing_note({"beam1": steered}, {"ground_attention": 0.0, "steer_words": 0.5})
    assert "captions only" in both and "trained to follow forced attention" in both
    assert "--cell-words" not in both
    cells = pointing_note({"beam1": steered}, {"ground_attention": 0.0, "cell_words": 1.0})
    assert "--cell-words" in cells and "--steer-words" not in cells
    assert cells.index("--cell-words") > cells.index(STEERING)  # said with steering's figure


def test_push_returns_the_hubs_url_and_needs_a_token(model_folder, monkeypatch, tmp_path):
    monkeypatch.setenv("HF_TOKEN", SECRET)
    info = mock.Mock(repo_url="https://huggingface.co/me/tiny-moved")
    with mock.patch("huggingface_hub.HfApi.create_repo"), \
            mock.patch("huggingface_hub.HfApi.upload_folder", return_value=info):
        assert push_folder(model_folder, "me/tiny") == "https://huggingface.co/me/tiny-moved"
    monkeypatch.delenv("HF_TOKEN")
    monkeypatch.setenv("HF_HOME", str(tmp_path / "home"))
    with pytest.raises(SystemExit) as stop:
        push_folder(model_folder, "me/tiny")
    assert str(stop.value).startswith("--push-to-hub needs a Hugging Face token")


def card_for(tmp_path, cfg, metrics, **kwargs):
    import json

    from huggingface_hub import ModelCard

    from captioner.hub import write_model_card

    path = write_model_card(tmp_path, cfg=cfg, metrics=metrics, command="python train.py --x 1",
                            **kwargs)
    assert path == tmp_path / "README.md"
    card = ModelCard.load(path)
    config = json.loads(card.text.split("```json\n")[1].split("\n```")[0])
    return card, card.text, config


def test_photo_card_says_what_was_trained_on_what_and_how_to_use_it(tmp_path):
    from captioner.hub import PHOTO_LIMITS

    cfg = {"dataset": "someone/photos", "encoder": "resnet50", "encoder_stage": 4, "grid": 7,
           "output_dir": "runs/photos", "push_to_hub": "me/photo-captioner"}
    metrics = {"images": 321, "selected_epoch": 4,
               "beam3": {"bleu4": 20.0, "skipped": ["meteor: needs Java"]},
               "beam1": {"bleu4": 18.0, "skipped": ["meteor: needs Java", "b: other"]}}
    card, text, config = card_for(tmp_path, cfg, metrics)
    title = "captioner: resnet50 + attention LSTM on someone/photos"
    data = card.data
    assert (data.library_name, data.license, data.pipeline_tag) == ("captioner", "mit",
                                                                     "image-to-text")
    assert data.tags == ["image-captioning", "show-attend-and-tell", "attention", "pytorch"]
    assert data.datasets == ["someone/photos"] and data.model_name == title
    assert {(r.dataset_type, r.dataset_name) for r in data.eval_results} == {
        ("someone/photos", "someone/photos")}
    assert f"# {title}\n" in text
    assert "built with captioner: a torchvision\n**resnet50** turns the image into a 7×7 grid" \
        in text
    assert "on the **test split** (321 images)" in text
    assert "tokeniser). Skipped: b: other; meteor: needs Java.\n" in text  # no percentages
    assert "Selected epoch: 4 (best validation score).\n" in text
    assert ("`someone/photos` loaded with 🤗 datasets; train/validation/test splits as "
            "provided (or carved deterministically from train).") in text
    assert "```bash\npython train.py --x 1\n```" in text
    assert config == cfg
    assert "caption photo.jpg --weights me/photo-captioner --attention-grid" in text
    assert 'load_model("me/photo-captioner")' in text
    assert text.rstrip().endswith(PHOTO_LIMITS)


def test_scenes_card_names_stages_percentages_and_the_given_weights(tmp_path):
    from captioner.hub import SCENES_DESCRIPTION, SCENES_LIMITS

    cfg = {"dataset": "scenes", "encoder": "resnet18", "encoder_stage": 2, "grid": 8,
           "output_dir": "runs/scenes", "push_to_hub": ""}
    metrics = {"images": 50, "selected_epoch": 2,
               "beam1": {"bleu4": 30.0, "objects_correct": 0.5}}
    card, text, _ = card_for(tmp_path, cfg, metrics, weights_ref="weights")
    assert card.data.datasets is None
    assert {(r.dataset_type, r.dataset_name) for r in card.data.eval_results} == {
        ("scenes", "generated scenes (captioner.scenes)")}
    assert "**resnet18 (stages 1–2)** turns the image into a 8×8 grid" in text
    assert "tokeniser); exact content and pointing are percentages (%).\n" in text
    assert SCENES_DESCRIPTION in " ".join(text.split("\n"))
    assert "caption scene.png --weights weights --attention-grid" in text
    assert text.rstrip().endswith(SCENES_LIMITS)
    # without a Hub repo or a name given, the output folder names the weights
    _, text, _ = card_for(tmp_path, cfg, metrics)
    assert "--weights runs/scenes " in text


def test_a_local_dataset_folder_is_not_a_hub_dataset(tmp_path):
    folder = tmp_path / "my-data"
    folder.mkdir()
    cfg = {"dataset": str(folder), "encoder": "resnet50", "encoder_stage": 4, "grid": 7,
           "output_dir": "o", "push_to_hub": ""}
    card, _, _ = card_for(tmp_path, cfg, {"images": 1, "beam1": {"bleu4": 1.0}})
    assert card.data.datasets is None
    assert {(r.dataset_type, r.dataset_name) for r in card.data.eval_results} == {
        ("local", str(folder))}


def test_load_model_passes_revision_and_device_and_checks_int8(saved_model_dir, monkeypatch):
    from captioner import hub

    asked = []
    monkeypatch.setattr(hub, "resolve_model_dir",
                        lambda source, revision: asked.append((source, revision))
                        or saved_model_dir)
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)  # "cpu" must still mean CPU
    model = hub.load_model("me/model", revision="v2")
    assert asked == [("me/model", "v2")]
    assert {p.device.type for p in model.parameters()} == {"cpu"}
    quantized = hub.load_model("me/model", device="cpu", quantize="int8")
    assert isinstance(quantized.classifier, torch.ao.nn.quantized.dynamic.Linear)
    with pytest.raises(ValueError) as error:
        hub.load_model("me/model", quantize="int4")
    assert str(error.value) == "quantize must be one of ('int8',) or None, got 'int4'"
    monkeypatch.setattr(hub, "resolve_device", lambda name: "cuda")
    with pytest.raises(ValueError) as error:
        hub.load_model("me/model", device="cuda", quantize="int8")
    assert str(error.value) == "int8 decoding runs on the CPU only, not on 'cuda'"
    assert len(asked) == 2  # refused before anything was loaded


def test_config_without_vocabulary_asks_where_it_came_from(tmp_path):
    from captioner.hub import read_config
    from captioner.model import WeightsError

    (tmp_path / "config.json").write_text('{"vocab": []}')
    with pytest.raises(WeightsError) as error:
        read_config(tmp_path)
    assert str(error.value) == (f"{tmp_path / 'config.json'}: has no 'vocab' (the model's word "
                                "list); was it saved by captioner?")


def test_hub_ids_are_downloaded_with_their_revision_and_only_model_files(monkeypatch, tmp_path):
    from captioner import hub

    calls = []

    def snapshot_download(repo_id, revision=None, allow_patterns=None):
        calls.append((repo_id, revision, allow_patterns))
        return str(tmp_path)

    monkeypatch.setattr(hub, "snapshot_download", snapshot_download)
    assert hub.resolve_model_dir("me/model", revision="v3") == tmp_path
    assert calls == [("me/model", "v3", hub.MODEL_FILES)]

    def offline(*args, **kwargs):
        raise ConnectionError("no network")

    monkeypatch.setattr(hub, "snapshot_download", offline)
    with pytest.raises(hub.WeightsError) as error:
        hub.resolve_model_dir("me/model")
    assert str(error.value) == (
        f"no local folder 'me/model' exists (in {Path.cwd()}), and it could not be fetched "
        "from the Hugging Face Hub either (ConnectionError: no network). Pass a local model "
        "folder or a Hub repo id you can reach.")


def test_missing_folders_say_what_to_pass_and_only_the_bundled_one_how_to_train(tmp_path,
                                                                              monkeypatch):
    from captioner import hub

    with pytest.raises(hub.WeightsError) as error:
        hub.resolve_model_dir(tmp_path / "nothing")
    assert str(error.value) == (f"{tmp_path / 'nothing'}: no such model folder. Pass --weights "
                                "with a folder holding model.safetensors + config.json, or a "
                                "Hub repo id.")
    monkeypatch.setattr(hub, "BUNDLED_WEIGHTS", tmp_path / "weights")
    with pytest.raises(hub.WeightsError) as error:
        hub.resolve_model_dir()
    assert str(error.value) == (
        f"{tmp_path / 'weights'}: no such model folder. Train them with `python train_space.py "
        "--dataset scenes --output-dir weights`. Pass --weights with a folder holding "
        "model.safetensors + config.json, or a Hub repo id.")


def test_default_device_and_the_first_gpu(monkeypatch):
    from captioner.hub import resolve_device

    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    monkeypatch.setattr(torch.backends.mps, "is_available", lambda: False)
    assert resolve_device() == "cpu"
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 1)
    assert resolve_device() == "cuda" and resolve_device("cuda") == "cuda"


def test_scenes_card_title_and_readable_configuration(tmp_path):
    cfg = {"dataset": "scenes", "encoder": "resnet18", "encoder_stage": 2, "grid": 8,
           "output_dir": "runs/scenes", "push_to_hub": ""}
    card, text, _ = card_for(tmp_path, cfg, {"images": 5, "beam1": {"bleu4": 1.0}})
    assert card.data.model_name == "captioner: resnet18 + attention LSTM on generated scenes"
    assert '{\n  "dataset": "scenes",\n  "encoder": "resnet18",' in text


# --- the push target checked before training, and the card's words, by value ---

class FakeApi:
    def __init__(self, status=None):
        self.status = status

    def whoami(self):
        if self.status:
            import httpx
            from huggingface_hub.errors import HfHubHTTPError

            request = httpx.Request("GET", "https://huggingface.co/api/whoami-v2")
            raise HfHubHTTPError("refused", response=httpx.Response(self.status,
                                                                    request=request))
        return {"name": "someone"}


def test_a_malformed_repo_id_is_refused_before_any_hub_call(monkeypatch):
    from captioner import hub

    monkeypatch.setattr(hub, "hub_client", lambda purpose: pytest.fail("no Hub call"))
    with pytest.raises(SystemExit) as error:
        hub.check_push_target("not a repo id!")
    assert str(error.value) == ("--push-to-hub: 'not a repo id!' is not a Hub repo id; give "
                                "OWNER/NAME (letters, digits, '-', '_', '.')")


@pytest.mark.parametrize("status", [401, 403])
def test_a_refused_token_is_one_line_naming_the_status(monkeypatch, status):
    from captioner import hub

    purposes = []
    monkeypatch.setattr(hub, "hub_client", lambda purpose: purposes.append(purpose) or
                        FakeApi(status))
    with pytest.raises(SystemExit) as error:
        hub.check_push_target("someone/captioner", "deploy-space")
    assert str(error.value) == (f"deploy-space: the Hugging Face Hub refused the token "
                                f"({status}); set a valid HF_TOKEN or run `hf auth login` "
                                "again.")
    assert purposes == ["deploy-space"]


def test_other_hub_errors_are_not_called_a_bad_token_and_a_good_token_passes(monkeypatch):
    from huggingface_hub.errors import HfHubHTTPError

    from captioner import hub

    monkeypatch.setattr(hub, "hub_client", lambda purpose: FakeApi(404))
    with pytest.raises(HfHubHTTPError):
        hub.check_push_target("someone/captioner")
    good = FakeApi()
    monkeypatch.setattr(hub, "hub_client", lambda purpose: good)
    assert hub.check_push_target("someone/captioner") is good


@pytest.mark.parametrize("cfg, text", [
    ({}, "expectation (the attention-weighted mean, as soft attention does)"),
    ({"hard_readout": "expectation"},
     "expectation (the attention-weighted mean, as soft attention does)"),
    ({"hard_readout": "argmax"}, "single most attended cell (argmax)")])
def test_the_hard_readout_is_described_in_words(cfg, text):
    from captioner.hub import readout_text

    assert readout_text(cfg) == text


@pytest.mark.parametrize("attention", ["soft", "hard"])
def test_the_card_names_the_attention_kind_and_only_hard_gets_its_note(tmp_path, attention):
    from test_hub import write_card

    from captioner.hub import HARD_ATTENTION, readout_text

    _, text = write_card(tmp_path, cfg={"attention": attention, "hard_readout": "argmax"})
    assert f"{attention} attention picks where to look for each word" in text
    note = HARD_ATTENTION.format(readout=readout_text({"hard_readout": "argmax"}))
    assert (note in text) == (attention == "hard")
    if attention == "soft":  # nothing after the sentence
        assert "Every word comes with its attention map.\n" in text
    assert "## How it was trained\n\n```bash\npython train_space.py\n```" in text  # no time


@pytest.mark.parametrize("word_query", [False, True])
def test_only_a_word_query_card_says_the_query_hears_the_word(tmp_path, word_query):
    from test_hub import write_card

    from captioner.hub import WORD_QUERY

    _, text = write_card(tmp_path, cfg={"attention": "hard", "word_query": word_query})
    assert (WORD_QUERY in text) == word_query
    if word_query:  # after the hard-attention note, not in place of it
        assert text.index("**Hard attention**") < text.index("**Word query**")


@pytest.mark.parametrize("location_query", [False, True])
def test_only_a_location_query_card_says_the_query_sees_the_last_look(tmp_path, location_query):
    from test_hub import write_card

    from captioner.hub import LOCATION_QUERY, WORD_QUERY

    _, text = write_card(tmp_path, cfg={"word_query": True, "location_query": location_query})
    assert (LOCATION_QUERY in text) == location_query
    assert WORD_QUERY in text  # beside the word query's note, not in place of it


@pytest.mark.parametrize("early", [False, True])
def test_only_an_early_features_card_says_its_cells_carry_stage_one(tmp_path, early):
    from test_hub import write_card

    from captioner.hub import EARLY_FEATURES, WORD_QUERY

    _, text = write_card(tmp_path, cfg={"word_query": True, "early_features": early})
    assert (EARLY_FEATURES in text) == early
    assert WORD_QUERY in text  # beside the word query's note, not in place of it


@pytest.mark.parametrize("weight", [0.0, 0.5])
def test_only_a_self_critical_card_says_how_its_captions_were_rewarded(tmp_path, weight):
    from test_hub import write_card

    _, text = write_card(tmp_path, cfg={"self_critical": weight, "self_critical_samples": 6})
    assert ("**Self-critical training**" in text) == bool(weight)
    if weight:
        assert "drew 6 captions per image" in text and "`--self-critical 0.5`" in text


def test_a_scenes_v2_card_describes_that_world(tmp_path):
    from test_hub import write_card

    from captioner.hub import SCENES_DESCRIPTION, SCENES_V2_DESCRIPTION

    _, v2 = write_card(tmp_path / "v2", cfg={"dataset": "scenes-v2"})
    _, v1 = write_card(tmp_path / "v1", cfg={"dataset": "scenes"})
    assert SCENES_V2_DESCRIPTION.split(".")[0] in v2 and SCENES_V2_DESCRIPTION != SCENES_DESCRIPTION
    assert SCENES_V2_DESCRIPTION.split(".")[0] not in v1


def test_epochs_without_a_time_count_as_none():
    from captioner.hub import training_time

    assert training_time([{"seconds": 2969.5}, {"epoch": 2}], "2 CPU cores").startswith(
        "Trained for 2 epochs in 49 min on 2 CPU cores")  # 49.49 min: one second more is 50


def test_a_file_given_as_weights_means_its_folder_only_for_the_models_own_files(tmp_path):
    from captioner.hub import resolve_model_dir
    from captioner.model import WeightsError

    (tmp_path / "config.json").write_text("{}")
    (tmp_path / "notes.txt").write_text("")
    assert resolve_model_dir(tmp_path / "config.json") == tmp_path
    with pytest.raises(WeightsError) as error:
        resolve_model_dir(tmp_path / "notes.txt")
    assert str(error.value) == (f"{tmp_path / 'notes.txt'} is a file: pass the folder that holds "
                                "model.safetensors and config.json, or a Hub repo id.")


def test_missing_default_weights_say_where_they_come_from(monkeypatch, tmp_path):
    from captioner import hub

    assert hub.missing_bundle_hint(tmp_path) == ""  # not the default folder
    assert hub.missing_bundle_hint(hub.BUNDLED_WEIGHTS) == (
        " Train them with `python train_space.py --dataset scenes --output-dir weights`.")
    monkeypatch.setattr(hub, "__file__", str(tmp_path / "site-packages" / "captioner" / "hub.py"))
    assert hub.missing_bundle_hint(hub.BUNDLED_WEIGHTS) == (
        " The installed package ships no weights: the bundled demonstration model is the "
        "weights/ folder of the project's repository.")
