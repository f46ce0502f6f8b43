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
