"""`python -m captioner deploy-space` with the Hub client patched: what would be uploaded and
set, and that the token reaches the client without being printed."""

from pathlib import Path
from unittest import mock

import pytest
from huggingface_hub import (
    CommitOperationAdd,
    CommitOperationDelete,
    ModelCardData,
    SpaceCard,
)

from captioner import cli, space

ROOT = Path(__file__).resolve().parent.parent
SECRET = "hf_SECRETtoken1234567890"


def expected_files(weights: list[str]) -> list[str]:
    package = [p.relative_to(ROOT).as_posix() for pattern in ("*.py", "*.js", "*.html", "*.css")
               for p in (ROOT / "captioner").rglob(pattern) if "__pycache__" not in p.parts]
    examples = [f"examples/{p.name}" for p in (ROOT / "examples").iterdir() if p.is_file()]
    return sorted(["README.md", "app.py", "requirements.txt", *package, *examples, *weights])


def deploy(monkeypatch, capsys, *args):
    monkeypatch.setenv("HF_TOKEN", SECRET)
    with mock.patch("huggingface_hub.HfApi") as client_class:
        api = client_class.return_value
        api.model_info.return_value = mock.Mock(card_data=ModelCardData(datasets=["jxie/flickr8k"]))
        api.create_repo.return_value = mock.Mock(url="https://huggingface.co/spaces/me/demo")
        api.list_repo_files.return_value = ["README.md", "notes.md", "captioner/old.py",
                                            "weights/model.safetensors", "app.py"]
        code = cli.main(["deploy-space", "me/demo", *args])
    captured = capsys.readouterr()
    assert code == 0 and SECRET not in captured.out + captured.err
    client_class.assert_called_once_with(token=SECRET)  # the client really gets the token
    (operations,) = [c.args[1] for c in api.create_commit.call_args_list]
    uploads = {op.path_in_repo: op for op in operations if isinstance(op, CommitOperationAdd)}
    deleted = {op.path_in_repo for op in operations if isinstance(op, CommitOperationDelete)}
    # what an earlier deploy left in the app's folders goes; files added by hand stay
    assert deleted == {"captioner/old.py", "weights/model.safetensors"} - set(uploads)
    return api, uploads, captured.out


def test_deploy_hub_model(monkeypatch, capsys):
    api, uploads, out = deploy(monkeypatch, capsys, "--weights", "me/captioner-flickr8k",
                               "--hardware", "t4-small", "--private")
    assert sorted(uploads) == expected_files([])  # no bundled weights
    api.create_repo.assert_called_once_with("me/demo", repo_type="space", space_sdk="gradio",
                                            private=True, exist_ok=True)
    api.add_space_variable.assert_called_once_with(
        "me/demo", "CAPTIONER_WEIGHTS", "me/captioner-flickr8k", description=mock.ANY)
    api.request_space_hardware.assert_called_once_with("me/demo", "t4-small")
    card = SpaceCard(uploads["README.md"].path_or_fileobj.decode())
    assert card.data.models == ["me/captioner-flickr8k"]
    assert card.data.datasets == ["jxie/flickr8k"]  # from the model card's metadata
    assert card.data.sdk == "gradio" and card.data.app_file == "app.py"
    assert "https://huggingface.co/spaces/me/demo" in out
    for op in uploads.values():  # nothing uploaded carries the token
        content = op.path_or_fileobj
        assert SECRET.encode() not in (content if isinstance(content, bytes)
                                       else Path(content).read_bytes()), op.path_in_repo


def test_deploy_local_weights_folder(monkeypatch, capsys, saved_model_dir):
    (saved_model_dir / "checkpoint.safetensors").write_bytes(b"not for the Space")
    api, uploads, _ = deploy(monkeypatch, capsys, "--weights", str(saved_model_dir),
                             "--dataset", "someone/photos")
    assert sorted(uploads) == expected_files(["weights/config.json",
                                              "weights/model.safetensors"])
    api.add_space_variable.assert_called_once_with("me/demo", "CAPTIONER_WEIGHTS", "weights",
                                                   description=mock.ANY)
    api.request_space_hardware.assert_not_called()
    card = SpaceCard(uploads["README.md"].path_or_fileobj.decode())
    assert card.data.models is None and card.data.datasets == ["someone/photos"]


def test_deploy_needs_a_token(monkeypatch, tmp_path):
    monkeypatch.delenv("HF_TOKEN", raising=False)
    monkeypatch.setenv("HF_HOME", str(tmp_path))
    with pytest.raises(SystemExit, match="HF_TOKEN"):
        space.deploy("me/demo", "me/model")


def test_deploy_local_weights_with_a_hard_companion(monkeypatch, capsys, saved_model_dir):
    """A hard-attention model in hard/ beside the weights goes up as weights/hard/ (the app's
    soft/hard switch); a hard/ folder that holds no model does not."""
    hard = saved_model_dir / "hard"
    hard.mkdir()
    (hard / "README.md").write_text("notes, not a model")
    _, uploads, _ = deploy(monkeypatch, capsys, "--weights", str(saved_model_dir),
                           "--dataset", "someone/photos")
    assert not any(path.startswith("weights/hard/") for path in uploads)
    for name in ("config.json", "model.safetensors"):
        (hard / name).write_bytes((saved_model_dir / name).read_bytes())
    _, uploads, _ = deploy(monkeypatch, capsys, "--weights", str(saved_model_dir),
                           "--dataset", "someone/photos")
    assert sorted(uploads) == expected_files(["weights/config.json", "weights/model.safetensors",
                                              "weights/hard/README.md",
                                              "weights/hard/config.json",
                                              "weights/hard/model.safetensors"])
    assert Path(uploads["weights/hard/model.safetensors"].path_or_fileobj) == \
        hard / "model.safetensors"
