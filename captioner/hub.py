"""Finding, loading and publishing model folders (local directories or Hugging Face Hub repos)."""

from __future__ import annotations

import json
import re
from dataclasses import fields
from pathlib import Path

from huggingface_hub import snapshot_download

from captioner.model import CONFIG_FILE, WEIGHTS_FILE, Captioner, CaptionerConfig, WeightsError

BUNDLED_WEIGHTS = Path(__file__).resolve().parent.parent / "weights"
REPO_ID = re.compile(r"^[\w.-]+(/[\w.-]+)?$")
MODEL_FILES = [CONFIG_FILE, WEIGHTS_FILE, "README.md", "metrics.json", "*.png"]


def looks_like_path(source: str) -> bool:
    """Hub ids are `name` or `owner/name`; anything else (./x, /x, a/b/c) is a local path."""
    return source.startswith((".", "~")) or not REPO_ID.match(source)


def resolve_model_dir(source: str | Path | None = None) -> Path:
    """A local model folder as is, or a Hub repo id downloaded (and cached) with the hub API."""
    source = str(source or BUNDLED_WEIGHTS)
    path = Path(source).expanduser()
    if path.is_dir():
        return path
    if looks_like_path(source):
        hint = (" Train them with `python train_space.py --dataset scenes --output-dir weights`."
                if path.resolve() == BUNDLED_WEIGHTS else "")
        raise WeightsError(f"{path}: no such model folder.{hint} Or pass --weights with a "
                           "folder holding model.safetensors + config.json, or a Hub repo id.")
    try:
        return Path(snapshot_download(source, allow_patterns=MODEL_FILES))
    except Exception as e:  # offline, unknown repo, auth: all need the same advice
        raise WeightsError(f"could not fetch '{source}' from the Hugging Face Hub "
                           f"({type(e).__name__}: {e}). Pass a local model folder instead.") from e


def read_config(model_dir: Path) -> CaptionerConfig:
    """config.json -> CaptionerConfig, with errors that name the file and the problem."""
    path = model_dir / CONFIG_FILE
    if not path.is_file():
        raise WeightsError(f"{path}: file not found (a model folder needs {CONFIG_FILE} "
                           f"and {WEIGHTS_FILE})")
    try:
        raw = json.loads(path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise WeightsError(f"{path}: not valid JSON ({e})") from e
    if not isinstance(raw, dict) or not raw.get("vocab"):
        raise WeightsError(f"{path}: has no 'vocab' (the model's word list); "
                           "was it saved by captioner?")
    known = {f.name for f in fields(CaptionerConfig)}
    try:
        return CaptionerConfig(**{k: v for k, v in raw.items() if k in known})
    except (TypeError, ValueError) as e:
        raise WeightsError(f"{path}: invalid config ({e})") from e


def load_model(source: str | Path | None = None, device: str = "cpu") -> Captioner:
    """Load a trained captioner strictly from a folder or Hub repo id (default: bundled)."""
    model_dir = resolve_model_dir(source)
    read_config(model_dir)
    return Captioner.from_pretrained(model_dir, map_location=device).to(device)


def read_metrics(model_dir: Path) -> dict:
    """The metrics.json that training writes beside the weights ({} if absent)."""
    path = Path(model_dir) / "metrics.json"
    return json.loads(path.read_text()) if path.is_file() else {}
