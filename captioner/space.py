"""`python -m captioner deploy-space OWNER/NAME --weights MODEL`: the Gradio app as a Hugging
Face Space, created or updated in one command.

The Space gets the app, the package, the pinned requirements, the examples and a README whose
front matter names its model and dataset; the model itself is read from the Hub at start-up
through the `CAPTIONER_WEIGHTS` variable (a local `--weights` folder is uploaded as weights/).
"""

from __future__ import annotations

import argparse
from pathlib import Path

from captioner.hub import (
    CONFIG_FILE,
    MODEL_FILES,
    hub_calls,
    hub_client,
    looks_like_path,
    unreachable,
)

ROOT = Path(__file__).resolve().parent.parent
OWNED_FOLDERS = ("captioner/", "examples/", "weights/")  # what an update may delete
PACKAGE_PATTERNS = ["*.py", "*.js", "*.html", "*.css"]  # code and any UI assets it needs
SPACE_BODY = """
# {title}

Image captioning that shows where it looks, word by word: a "Show, Attend and Tell" captioner
running on [{model}]({model_url}). Step through the caption and see the attention map of every
word.
"""


def add_deploy_parser(commands) -> None:
    from huggingface_hub import SpaceHardware

    space = commands.add_parser(
        "deploy-space", help="create or update a Hugging Face Space running the app",
        description="Upload the app, the captioner package, requirements.txt, examples/ and a "
                    "README to a Gradio Space, and point it at the model with the "
                    "CAPTIONER_WEIGHTS variable. The token comes from HF_TOKEN or "
                    "`hf auth login` and is never printed or saved.")
    space.add_argument("space_id", metavar="OWNER/NAME", help="the Space to create or update")
    space.add_argument("--weights", required=True, metavar="REPO_ID_OR_DIR",
                       help="the model: a Hub repo id (read by the Space at start-up), or a "
                            "local model folder (uploaded as weights/)")
    space.add_argument("--dataset", default=None,
                       help="Hub dataset named in the Space's README (default: the one in the "
                            "model card's metadata, if any)")
    space.add_argument("--hardware", default=None, choices=[h.value for h in SpaceHardware],
                       metavar="HARDWARE", help="Space hardware, e.g. cpu-basic, t4-small "
                       "(default: the Space's current, cpu-basic for a new one)")
    space.add_argument("--private", action="store_true",
                       help="create the Space as private (an existing Space keeps its setting)")


def space_files(weights_dir: Path | None) -> dict[str, Path]:
    """path in the Space -> local file: app, package (code and UI assets), requirements,
    examples and, for a local model, its files under weights/ (and a hard-attention companion
    in its hard/ folder under weights/hard/)."""
    needed = [ROOT / "app.py", ROOT / "requirements.txt", ROOT / "examples"]
    if not all(path.exists() for path in needed):
        raise SystemExit(f"deploy-space runs from a checkout of the repository: app.py, "
                         f"requirements.txt and examples/ are not all under {ROOT}")
    files = {"app.py": needed[0], "requirements.txt": needed[1]}
    for pattern in PACKAGE_PATTERNS:
        for path in (ROOT / "captioner").rglob(pattern):
            if "__pycache__" not in path.parts:
                files[path.relative_to(ROOT).as_posix()] = path
    for path in (ROOT / "examples").iterdir():
        if path.is_file():
            files[f"examples/{path.name}"] = path
    if weights_dir is not None:
        # a hard-attention model in hard/ beside it is the app's soft/hard switch (demo.why)
        hard = weights_dir / "hard"
        folders = {"weights": weights_dir} | ({"weights/hard": hard}
                                              if (hard / CONFIG_FILE).is_file() else {})
        for name, folder in folders.items():
            for pattern in MODEL_FILES:
                for path in folder.glob(pattern):
                    files[f"{name}/{path.name}"] = path
    return dict(sorted(files.items()))


def space_readme(weights: str, dataset: str | None, hub_model: bool) -> str:
    """The repository README's front matter (sdk, app file, ...) with `models:`/`datasets:`."""
    from huggingface_hub import SpaceCard

    base = SpaceCard.load(ROOT / "README.md")
    data = base.data
    data.models = [weights] if hub_model else None
    data.datasets = [dataset] if dataset else None
    model_url = f"https://huggingface.co/{weights}" if hub_model else "weights/README.md"
    body = SPACE_BODY.format(title=data.title or "captioner", model=weights, model_url=model_url)
    return f"---\n{data.to_yaml()}\n---\n{body}"


def model_dataset(api, weights: str, weights_dir: Path | None) -> str | None:
    """The first dataset in the model card's metadata (local card, or the Hub's)."""
    if weights_dir is not None:
        from huggingface_hub import ModelCard

        card = weights_dir / "README.md"
        datasets = ModelCard.load(card).data.datasets if card.is_file() else None
    else:
        datasets = getattr(api.model_info(weights).card_data, "datasets", None)
    if isinstance(datasets, str):
        return datasets
    return datasets[0] if datasets else None


def deploy(space_id: str, weights: str, *, dataset: str | None = None,
           hardware: str | None = None, private: bool = False) -> str:
    """Create or update the Space; returns its URL."""
    local = Path(weights).expanduser()
    weights_dir = local if local.is_dir() else None
    if weights_dir is None and looks_like_path(weights):
        raise SystemExit(f"--weights {weights}: no such model folder, and not a Hub repo id")
    files = space_files(weights_dir)
    api = hub_client("deploy-space")
    with hub_calls():  # no network, at any step: one line, not an HTTP traceback
        return _deploy(api, space_id, weights, weights_dir, files, dataset, hardware, private)


def _deploy(api, space_id, weights, weights_dir, files, dataset, hardware, private) -> str:
    """`deploy`'s Hub calls: read the model's dataset, create the Space, set its variable,
    commit the files, ask for hardware."""
    from huggingface_hub import CommitOperationAdd, CommitOperationDelete

    try:
        dataset = dataset or model_dataset(api, weights, weights_dir)
    except Exception as e:  # unknown repo, no access: stop before touching the Space
        if unreachable(e):
            raise
        raise SystemExit(f"--weights {weights}: could not read the model on the Hugging Face "
                         f"Hub ({type(e).__name__}: {e})") from e
    readme = space_readme(weights, dataset, hub_model=weights_dir is None).encode()
    repo = api.create_repo(space_id, repo_type="space", space_sdk="gradio",
                           private=True if private else None, exist_ok=True)
    api.add_space_variable(space_id, "CAPTIONER_WEIGHTS",
                           "weights" if weights_dir is not None else weights,
                           description="model folder or Hub repo id the app loads")
    operations = [CommitOperationAdd(path_in_repo="README.md", path_or_fileobj=readme)] + [
        CommitOperationAdd(path_in_repo=name, path_or_fileobj=str(path))
        for name, path in files.items()]
    # An update drops what an earlier deploy left in our folders (old modules, bundled
    # weights after switching to a Hub model); files added to the Space by hand stay.
    operations += [CommitOperationDelete(path_in_repo=name)
                   for name in api.list_repo_files(space_id, repo_type="space")
                   if name.startswith(OWNED_FOLDERS) and name not in files]
    api.create_commit(space_id, operations, repo_type="space",
                      commit_message=f"Deploy captioner with {weights}")
    if hardware:
        api.request_space_hardware(space_id, hardware)
    return str(getattr(repo, "url", None) or f"https://huggingface.co/spaces/{space_id}")


def deploy_command(args: argparse.Namespace) -> int:
    url = deploy(args.space_id, args.weights, dataset=args.dataset, hardware=args.hardware,
                 private=args.private)
    print(f"Space: {url}")
    return 0
