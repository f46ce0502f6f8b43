"""The gradio app served on loopback and driven with gradio_client, plus its start-up checks."""

import os

os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")  # no network calls from gradio

import contextlib  # noqa: E402
import subprocess  # noqa: E402
import sys  # noqa: E402
from pathlib import Path  # noqa: E402

import numpy as np  # noqa: E402
import pytest  # noqa: E402

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))  # app.py lives at the repository root

import gradio_client  # noqa: E402  (a dependency: never skip the app tests)
from conftest import free_port  # noqa: E402

import app as app_module  # noqa: E402
from captioner.demo import Demo  # noqa: E402
from captioner.scenes import render_scene  # noqa: E402

# gradio's own queue code trips pandas deprecation warnings; not ours to fix
pytestmark = pytest.mark.filterwarnings("ignore:.*(no_silent_downcasting|copy keyword)")


def tiny_model_dir(folder: Path) -> Path:
    """A small random captioner saved to `folder` (what conftest's fixtures build)."""
    import torch
    from conftest import tiny_config

    torch.manual_seed(0)
    from captioner.model import Captioner

    return Captioner(tiny_config(grid_size=8, image_size=64)).eval().save(folder)


@contextlib.contextmanager
def running_app(folder: Path, weights: str | Path | None = None):
    """Serve the app on 127.0.0.1 with its own example cache; yields (url, example paths)."""
    folder.mkdir(parents=True, exist_ok=True)
    weights = weights or tiny_model_dir(folder / "model")
    examples = []
    for i in range(2):
        path = folder / f"scene-{i + 1}.png"
        render_scene(np.random.default_rng(20261125 + i), 256).image.save(path)
        examples.append(str(path))
    old = os.environ.get("GRADIO_EXAMPLES_CACHE")
    os.environ["GRADIO_EXAMPLES_CACHE"] = str(folder / "example-cache")
    try:
        blocks = app_module.build_app(Demo.load(str(weights)), examples=examples)
        _, url, _ = app_module.launch(blocks, prevent_thread_lock=True, quiet=True,
                                      server_name="127.0.0.1", server_port=free_port())
        try:
            yield url, examples
        finally:
            blocks.close()
    finally:
        if old is None:
            os.environ.pop("GRADIO_EXAMPLES_CACHE", None)
        else:
            os.environ["GRADIO_EXAMPLES_CACHE"] = old


@pytest.fixture(scope="module")
def served(tmp_path_factory):
    with running_app(tmp_path_factory.mktemp("app")) as (url, examples):
        yield gradio_client.Client(url, verbose=False), examples


def test_caption_endpoint(served):
    client, examples = served
    out = client.predict(gradio_client.handle_file(examples[0]), 3, 8, api_name="/caption")
    tokens = out["tokens"]
    assert 1 <= len(tokens) <= 8 and all(isinstance(t, str) for t in tokens)
    assert out["caption"] == " ".join(tokens)
    assert isinstance(out["score"], float) and out["score"] <= 0
    attention = np.asarray(out["attention"])
    assert attention.shape == (len(tokens), 8, 8)
    assert np.allclose(attention.sum(axis=(1, 2)), 1, atol=1e-3)


def test_only_the_caption_endpoint_is_documented(served):
    client, _ = served
    named = client.view_api(print_info=False, return_format="dict")["named_endpoints"]
    assert list(named) == ["/caption"]


def test_ui_handler_returns_every_output(served):
    client, examples = served
    text, details, words, heatmap, gallery, grid = client.predict(
        gradio_client.handle_file(examples[1]), 2, 6, api_name="/caption_ui")
    count = len(text.split())
    assert len(gallery) == count and [g["caption"] for g in gallery] == text.split()
    assert "beam 2" in details
    assert [w["token"] for w in words if w["class_or_confidence"]] == [text.split()[0]]
    assert Path(heatmap).is_file() and Path(grid).suffix == ".png"


def test_bad_upload_gives_a_message_and_the_server_keeps_serving(served, tmp_path):
    client, examples = served
    bad = tmp_path / "notes.txt"
    bad.write_text("not a picture")
    with pytest.raises(gradio_client.exceptions.AppError, match="notes.txt: not an image"):
        client.predict(gradio_client.handle_file(str(bad)), 3, 8, api_name="/caption")
    with pytest.raises(gradio_client.exceptions.AppError, match="beam size"):
        client.predict(gradio_client.handle_file(examples[0]), 9, 8, api_name="/caption")
    out = client.predict(gradio_client.handle_file(examples[0]), 1, 8, api_name="/caption")
    assert out["tokens"]


def test_uploads_over_10_mb_are_refused(served, tmp_path):
    """The client's own size check (gradio_client reads the server's limit) refuses it."""
    client, _ = served
    big = tmp_path / "big.png"
    big.write_bytes(os.urandom(10 * 1024 * 1024 + 1))
    with pytest.raises(ValueError, match="exceeds the maximum file size"):
        client.predict(gradio_client.handle_file(str(big)), 3, 8, api_name="/caption")


def test_server_refuses_an_11_mb_upload_sent_by_raw_http(served):
    """No client-side check: a raw multipart POST to gradio's upload route. A small file is
    accepted (so the route is the right one) and an 11 MB one is refused with 413 by the
    server itself; it keeps serving afterwards."""
    import httpx

    client, examples = served
    route = client.src.rstrip("/") + "/gradio_api/upload"
    small = httpx.post(route, files={"files": ("ok.png", Path(examples[0]).read_bytes(),
                                               "image/png")}, timeout=60)
    assert small.status_code == 200 and len(small.json()) == 1
    big = httpx.post(route, files={"files": ("big.png", os.urandom(11 * 1024 * 1024),
                                             "image/png")}, timeout=60)
    assert big.status_code == 413, (big.status_code, big.text[:200])
    assert "maximum allowed size" in big.text
    assert client.predict(gradio_client.handle_file(examples[0]), 1, 8,
                          api_name="/caption")["tokens"]


def test_captioner_weights_names_the_model_the_app_loads(tmp_path, monkeypatch):
    """CAPTIONER_WEIGHTS set to a model folder other than weights/ (another grid, image size
    and vocabulary): weights_source() returns it, --weights still wins, and load_or_exit gives
    a Demo holding exactly that model (config and every tensor), whose captions use its words."""
    import torch
    from conftest import tiny_config

    from captioner.model import Captioner
    from captioner.vocab import SPECIALS

    torch.manual_seed(3)
    words = ["zebra", "kite", "under", "purple", "one"]
    model = Captioner(tiny_config(vocab=[*SPECIALS, *words], grid_size=5, image_size=40)).eval()
    folder = model.save(tmp_path / "elsewhere")
    monkeypatch.setenv("CAPTIONER_WEIGHTS", str(folder))
    assert app_module.weights_source() == str(folder)
    assert app_module.weights_source("other/repo") == "other/repo"
    demo = app_module.load_or_exit(app_module.weights_source())
    assert demo.model.config == model.config
    assert demo.model.config != Demo.load(str(app_module.BUNDLED_WEIGHTS)).model.config
    loaded = demo.model.state_dict()
    assert all(torch.equal(tensor, loaded[name]) for name, tensor in model.state_dict().items())
    image = tmp_path / "scene.png"
    render_scene(np.random.default_rng(1), 64).image.save(image)
    out = demo.api(str(image), 2, 6)
    assert out["tokens"] and set(out["tokens"]) <= set(words)
    assert np.asarray(out["attention"]).shape == (len(out["tokens"]), 5, 5)


def test_module_level_demo_is_built_from_the_environment(tmp_path, monkeypatch):
    """`app.demo` (what Spaces and `gradio app.py` serve) loads the model CAPTIONER_WEIGHTS
    names."""
    import gradio as gr

    folder = tiny_model_dir(tmp_path / "m")
    monkeypatch.setenv("CAPTIONER_WEIGHTS", str(folder))
    monkeypatch.setenv("GRADIO_EXAMPLES_CACHE", str(tmp_path / "cache"))
    loaded = []
    real_load = Demo.load.__func__
    monkeypatch.setattr(Demo, "load", classmethod(
        lambda cls, source=None, *a, **k: loaded.append(source) or real_load(cls, source, *a,
                                                                               **k)))
    try:
        assert isinstance(app_module.demo, gr.Blocks)
    finally:
        vars(app_module).pop("demo", None)
    assert loaded == [str(folder)]


@pytest.mark.slow
def test_refuses_to_start_without_usable_weights(tmp_path):
    broken = tiny_model_dir(tmp_path / "broken")
    (broken / "model.safetensors").write_bytes(b"garbage")
    cases = {"missing": (tmp_path / "nowhere", "no such model folder"),
             "broken": (broken, "not a readable safetensors file")}
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "GRADIO_ANALYTICS_ENABLED": "False"}
    runs = {name: subprocess.Popen(
        [sys.executable, str(ROOT / "app.py"), "--weights", str(folder), "--server-port",
         str(free_port())], cwd=tmp_path, env=env, stdout=subprocess.PIPE,
        stderr=subprocess.PIPE, text=True) for name, (folder, _) in cases.items()}
    for name, proc in runs.items():
        out, err = proc.communicate(timeout=120)
        assert proc.returncode == 2, (name, out, err)
        assert cases[name][1] in err and "--weights" in err
        assert "Traceback" not in err + out
        assert "Running on" not in out
