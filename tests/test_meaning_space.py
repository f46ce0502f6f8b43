"""deploy-space by content: every uploaded file holds the bytes of the file it is named after,
the README links the model, and a failure stops before the Space is touched."""

from pathlib import Path
from unittest import mock

import pytest
from huggingface_hub import ModelCard, ModelCardData, SpaceCard
from test_space import SECRET, deploy

from captioner import space

ROOT = Path(__file__).resolve().parent.parent


def content(op) -> bytes:
    data = op.path_or_fileobj
    return data if isinstance(data, bytes) else Path(data).read_bytes()


def test_every_upload_holds_its_own_files_bytes(monkeypatch, capsys, saved_model_dir):
    api, uploads, _ = deploy(monkeypatch, capsys, "--weights", str(saved_model_dir),
                             "--dataset", "someone/photos")
    for name, op in uploads.items():
        if name == "README.md":
            continue
        source = (saved_model_dir / name.removeprefix("weights/") if name.startswith("weights/")
                  else ROOT / name)
        assert content(op) == source.read_bytes(), name
    api.create_commit.assert_called_once_with(
        "me/demo", mock.ANY, repo_type="space",
        commit_message=f"Deploy captioner with {saved_model_dir}")


def test_readme_links_a_hub_model_and_names_the_given_dataset(monkeypatch, capsys):
    _, uploads, _ = deploy(monkeypatch, capsys, "--weights", "me/captioner-flickr8k",
                           "--dataset", "other/data")
    card = SpaceCard(uploads["README.md"].path_or_fileobj.decode())
    assert card.data.datasets == ["other/data"]  # given beats the model card's
    assert "running on [me/captioner-flickr8k](https://huggingface.co/me/captioner-flickr8k)" \
        in card.text
    title = SpaceCard.load(ROOT / "README.md").data.title or "captioner"
    assert card.text.lstrip().startswith(f"# {title}\n")


def test_a_local_model_is_linked_to_its_own_card(monkeypatch, capsys, saved_model_dir):
    ModelCard.from_template(ModelCardData(datasets="someone/scenes")).save(
        saved_model_dir / "README.md")
    _, uploads, _ = deploy(monkeypatch, capsys, "--weights", str(saved_model_dir))
    card = SpaceCard(uploads["README.md"].path_or_fileobj.decode())
    assert f"[{saved_model_dir}](weights/README.md)" in card.text
    assert card.data.datasets == ["someone/scenes"]  # a single name in the local card
    assert content(uploads["weights/README.md"]) == (saved_model_dir / "README.md").read_bytes()


def test_public_by_default_and_hardware_only_when_asked(monkeypatch, capsys):
    api, _, _ = deploy(monkeypatch, capsys, "--weights", "me/m")
    api.create_repo.assert_called_once_with("me/demo", repo_type="space", space_sdk="gradio",
                                            private=None, exist_ok=True)
    api.request_space_hardware.assert_not_called()
    api.add_space_variable.assert_called_once_with(
        "me/demo", "CAPTIONER_WEIGHTS", "me/m",
        description="model folder or Hub repo id the app loads")


def test_model_card_without_datasets_names_none(monkeypatch):
    api = mock.Mock()
    api.model_info.return_value = mock.Mock(card_data=ModelCardData())
    assert space.model_dataset(api, "me/m", None) is None
    api.model_info.return_value = mock.Mock(card_data=ModelCardData(datasets=["a/b", "c/d"]))
    assert space.model_dataset(api, "me/m", None) == "a/b"
    api.model_info.assert_called_with("me/m")


@pytest.mark.parametrize("error, message", [
    (OSError("404 no such repo"), "--weights me/missing: could not read the model on the Hugging "
                                  "Face Hub (OSError: 404 no such repo)"),
    (ConnectionError("no route to host"), "cannot reach the Hugging Face Hub: no route to host. "
                                          "Check the network"),  # not an unreadable model
])
def test_an_unreadable_or_unreachable_hub_model_stops_before_the_space_is_touched(
        monkeypatch, error, message):
    monkeypatch.setenv("HF_TOKEN", SECRET)
    with mock.patch("huggingface_hub.HfApi") as client_class:
        api = client_class.return_value
        api.model_info.side_effect = error
        with pytest.raises(SystemExit) as stop:
            space.deploy("me/demo", "me/missing")
    assert str(stop.value).startswith(message)
    api.create_repo.assert_not_called()
    api.create_commit.assert_not_called()


def test_a_missing_local_folder_is_not_taken_for_a_hub_id(tmp_path):
    with pytest.raises(SystemExit) as stop:
        space.deploy("me/demo", str(tmp_path / "no-model"))
    assert str(stop.value) == (f"--weights {tmp_path / 'no-model'}: no such model folder, and "
                               "not a Hub repo id")


@pytest.fixture
def fake_checkout(tmp_path, monkeypatch):
    """A tiny repository layout as space.ROOT: the files a Space needs, plus what it must not
    get (caches, files beside the package)."""
    root = tmp_path / "repo"
    for name, text in {"app.py": "app", "requirements.txt": "torch", "examples/a.png": "png",
                       "examples/nested/b.png": "no", "captioner/x.py": "x",
                       "captioner/web/z.js": "z", "captioner/web/notes.txt": "no",
                       "captioner/__pycache__/y.py": "no", "captioner.py": "no"}.items():
        (root / name).parent.mkdir(parents=True, exist_ok=True)
        (root / name).write_text(text)
    monkeypatch.setattr(space, "ROOT", root)
    return root


def test_space_files_are_the_app_package_requirements_and_examples(fake_checkout):
    files = space.space_files(None)
    assert files == {"app.py": fake_checkout / "app.py",
                     "captioner/web/z.js": fake_checkout / "captioner/web/z.js",
                     "captioner/x.py": fake_checkout / "captioner/x.py",
                     "examples/a.png": fake_checkout / "examples/a.png",
                     "requirements.txt": fake_checkout / "requirements.txt"}
    assert list(files) == sorted(files)


def test_outside_a_checkout_deploy_space_says_what_is_missing(fake_checkout):
    (fake_checkout / "app.py").unlink()
    with pytest.raises(SystemExit) as stop:
        space.space_files(None)
    assert str(stop.value) == ("deploy-space runs from a checkout of the repository: app.py, "
                               f"requirements.txt and examples/ are not all under "
                               f"{fake_checkout}")


@pytest.mark.parametrize("front, title", [("title: Demo X\n", "Demo X"), ("", "captioner")])
def test_space_readme_title_and_no_dataset(fake_checkout, front, title):
    (fake_checkout / "README.md").write_text(f"---\n{front}sdk: gradio\n---\n# repo\n")
    card = SpaceCard(space.space_readme("me/m", None, hub_model=True))
    assert card.text.lstrip().startswith(f"# {title}\n")
    assert card.data.datasets is None and card.data.models == ["me/m"]
    assert card.data.sdk == "gradio"


def test_deploy_defaults_to_public_and_reads_the_model_it_was_given(monkeypatch):
    monkeypatch.setenv("HF_TOKEN", SECRET)
    with mock.patch("huggingface_hub.HfApi") as client_class:
        api = client_class.return_value
        api.model_info.return_value = mock.Mock(card_data=None)  # a model without a card
        api.list_repo_files.return_value = []
        space.deploy("me/demo", "me/m")
    api.create_repo.assert_called_once_with("me/demo", repo_type="space", space_sdk="gradio",
                                            private=None, exist_ok=True)
    api.model_info.assert_called_once_with("me/m")
    api.list_repo_files.assert_called_once_with("me/demo", repo_type="space")
    (operations,) = [c.args[1] for c in api.create_commit.call_args_list]
    readme = next(op for op in operations if op.path_in_repo == "README.md")
    assert SpaceCard(readme.path_or_fileobj.decode()).data.datasets is None


def test_a_local_model_without_a_card_names_no_dataset(tmp_path):
    assert space.model_dataset(mock.Mock(), "w", tmp_path) is None


def test_deploy_needs_a_token_and_says_so_for_deploy_space(monkeypatch, tmp_path):
    monkeypatch.delenv("HF_TOKEN", raising=False)
    monkeypatch.setenv("HF_HOME", str(tmp_path))
    with pytest.raises(SystemExit) as stop:
        space.deploy("me/demo", "me/model")
    assert str(stop.value).startswith("deploy-space needs a Hugging Face token")


def test_deploy_space_help_says_what_it_uploads_and_where_the_token_comes_from(capsys):
    from captioner.cli import build_parser

    parser = build_parser()
    commands = next(a for a in parser._actions if a.dest == "command")
    command = commands.choices["deploy-space"]
    assert command.description == (
        "Upload the app, the captioner package, requirements.txt, examples/ and a README to a "
        "Gradio Space, and point it at the model with the CAPTIONER_WEIGHTS variable. The "
        "token comes from HF_TOKEN or `hf auth login` and is never printed or saved.")
    parser.print_help()
    assert "deploy-space        create or update a Hugging Face Space running the app" in \
        " ".join(capsys.readouterr().out.split("\n"))


@pytest.mark.parametrize("repo, url", [
    (mock.Mock(url="https://huggingface.co/spaces/me/demo-renamed"),
     "https://huggingface.co/spaces/me/demo-renamed"),
    (object(), "https://huggingface.co/spaces/me/demo")])
def test_deploy_returns_the_spaces_url_or_its_usual_address(monkeypatch, repo, url):
    monkeypatch.setenv("HF_TOKEN", SECRET)
    with mock.patch("huggingface_hub.HfApi") as client_class:
        api = client_class.return_value
        api.model_info.return_value = mock.Mock(card_data=None)
        api.list_repo_files.return_value = []
        api.create_repo.return_value = repo
        assert space.deploy("me/demo", "me/m") == url


def test_unknown_hardware_is_refused_before_anything_is_uploaded(capsys):
    from captioner.cli import build_parser

    with pytest.raises(SystemExit) as stop:
        build_parser().parse_args(["deploy-space", "me/demo", "--weights", "me/m",
                                   "--hardware", "quantum-xl"])
    assert stop.value.code == 2
    assert "--hardware: invalid choice: 'quantum-xl'" in capsys.readouterr().err
    args = build_parser().parse_args(["deploy-space", "me/demo", "--weights", "me/m",
                                      "--hardware", "t4-small"])
    assert args.hardware == "t4-small"
