"""Shared fixtures: tiny, seeded, randomly initialised captioners (no downloads, CPU only)."""

import os
import re
import socket
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")  # before huggingface_hub is imported anywhere

import pytest  # noqa: E402
import torch  # noqa: E402

from captioner.model import Captioner, CaptionerConfig  # noqa: E402
from captioner.vocab import SPECIALS  # noqa: E402

# Tiny models gain nothing from threads, and on a busy 2-core machine OpenMP spinning makes
# them up to 100x slower: one thread keeps the suite fast and its timings steady.
torch.set_num_threads(1)

TINY_WORDS = ["a", "red", "blue", "green", "square", "circle", "on", "the", "left", "right"]


def tiny_config(**overrides) -> CaptionerConfig:
    settings = dict(vocab=[*SPECIALS, *TINY_WORDS], encoder="resnet18", encoder_stage=2,
                    grid_size=4, image_size=32, embed_dim=16, attention_dim=16, hidden_dim=32,
                    dropout=0.0)
    return CaptionerConfig(**{**settings, **overrides})


@pytest.fixture
def make_model():
    """make_model(seed=0, **config_overrides) -> a tiny Captioner in eval mode."""

    def make(seed: int = 0, **overrides) -> Captioner:
        torch.manual_seed(seed)
        return Captioner(tiny_config(**overrides)).eval()

    return make


@pytest.fixture
def tiny_model(make_model) -> Captioner:
    return make_model(seed=0)


@pytest.fixture
def saved_model_dir(tiny_model, tmp_path):
    return tiny_model.save(tmp_path / "model")


@pytest.fixture
def uploads(tmp_path, monkeypatch):
    """gradio's upload folder for this test: the only place client paths may point into."""
    folder = tmp_path / "gradio-uploads"
    folder.mkdir()
    monkeypatch.setenv("GRADIO_TEMP_DIR", str(folder))
    return folder


def wait_for_line(path, text: str, proc, timeout: float = 300) -> str:
    """Poll the output file `path` of the running `proc` until a line containing `text` shows
    up and return that line; fail if the process exits first or the timeout (a hang guard)
    passes. Used to act at a known point of a run, never after a guessed delay."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        lines = Path(path).read_text(errors="replace").splitlines() if Path(path).exists() else []
        found = [line for line in lines if text in line]
        if found:
            return found[0]
        if proc.poll() is not None:
            raise AssertionError(f"process exited ({proc.returncode}) before printing {text!r}:"
                                 f"\n{chr(10).join(lines[-30:])}")
        time.sleep(0.02)
    raise AssertionError(f"no {text!r} after {timeout} s")



def found_in(path, pattern: str) -> list:
    """re.findall over a whole output file (stdout and stderr interleave, so not by line)."""
    return re.findall(pattern, Path(path).read_text(errors="replace"))


def free_port() -> int:
    """A loopback port nobody listens on right now."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]
