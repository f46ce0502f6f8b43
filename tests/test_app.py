"""The gradio app served on loopback and driven with gradio_client, plus its start-up checks."""

import os
import re

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
from captioner.demo import Demo, unpack_map  # noqa: E402
from captioner.scenes import render_scene, v2  # noqa: E402

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
def running_app(folder: Path, weights: str | Path | None = None,
                hard: str | Path | None = None):
    """Serve the app on 127.0.0.1 (with `hard`: that hard-attention model beside it, for the
    switch); yields (url, example paths)."""
    folder.mkdir(parents=True, exist_ok=True)
    weights = weights or tiny_model_dir(folder / "model")
    model = Demo.load(str(weights))
    # two old-world scenes; for a scenes-v2 model (the bundled one) the second is a crowded
    # scenes-v2 scene instead, which the bundled soft and hard models caption differently and
    # some of whose words are uncertain (test_browser needs both; another world's scene would
    # be hidden from the examples as unfamiliar)
    examples = [folder / "scene-1.png", folder / "scene-2.png"]
    render_scene(np.random.default_rng(20261125), 256).image.save(examples[0])
    if model.model.config.world == "scenes-v2":
        v2.render_scene(np.random.default_rng(20261130), 128).image.save(examples[1])
    else:
        render_scene(np.random.default_rng(20261126), 256).image.save(examples[1])
    examples = [str(e) for e in examples]
    if hard is not None:
        model.pair(Demo.load(str(hard)))
    blocks = app_module.build_app(model, examples=examples)
    _, url, _ = app_module.launch(blocks, prevent_thread_lock=True, quiet=True,
                                  server_name="127.0.0.1", server_port=free_port())
    try:
        yield url, examples
    finally:
        blocks.close()


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


def test_only_the_four_api_endpoints_are_documented(served):
    client, _ = served
    named = client.view_api(print_info=False, return_format="dict")["named_endpoints"]
    assert list(named) == ["/caption", "/caption_from", "/look_here", "/why"]
    look = [p["label"] for p in named["/look_here"]["parameters"]]
    assert look == ["Image", "word", "x", "y", "Beam size", "Maximum length", "Attention"]
    why = [p["label"] for p in named["/why"]["parameters"]]
    assert why == ["Image", "word", "prefix", "Beam size", "Maximum length", "Attention"]
    assert [r["label"] for r in named["/caption"]["returns"]] == ["result"]


def test_caption_from_and_look_here_endpoints(served):
    client, examples = served
    upload = gradio_client.handle_file(examples[0])
    forced = client.predict(upload, "a red", 2, 6, api_name="/caption_from")
    assert forced["tokens"][:2] == ["a", "red"] and forced["forced"] == 2
    assert len(forced["alternatives"]) == len(forced["gate"]) == len(forced["tokens"])
    looked = client.predict(upload, 2, 0.25, 0.75, 1, 6, api_name="/look_here")
    assert looked["look"] == {"word": 2, "x": 0.25, "y": 0.75} and looked["steered"]
    with pytest.raises(gradio_client.exceptions.AppError, match="'zebra'"):
        client.predict(upload, "a zebra", 2, 6, api_name="/caption_from")


def test_why_endpoint(served):
    """Word 2 of the caption starting "a red": its three maps over the 8x8 grid, the
    caption's own attention among them; a word past the caption's end is one clear error."""
    client, examples = served
    upload = gradio_client.handle_file(examples[0])
    own = client.predict(upload, "a red", 2, 6, api_name="/caption_from")
    why = client.predict(upload, 2, "a red", 2, 6, api_name="/why")
    assert why["token"] == "red" and why["word"] == 2 and why["model"] == "soft"
    assert why["caption"] == own["caption"]
    np.testing.assert_allclose(why["attention"], np.ravel(own["attention"][1]), atol=1e-4)
    assert len(why["gradcam"]) == len(why["occlusion"]) == 64
    with pytest.raises(gradio_client.exceptions.AppError, match="word must be a whole number "
                       f"from 1 to {len(own['tokens'])}, got 40"):
        client.predict(upload, 40, "a red", 2, 6, api_name="/why")


def test_ui_handler_returns_caption_details_and_the_explorer_payload(served):
    client, examples = served
    text, details, explorer, truth = client.predict(
        gradio_client.handle_file(examples[1]), 2, 6, "soft", api_name="/caption_ui")
    assert truth == ""  # a new picture: no scene-lab verdict left from the last one
    assert explorer["tokens"] == text.split() and "beam 2" in details
    maps = [unpack_map(m) for m in explorer["attention"]]
    assert np.asarray(maps).shape == (len(explorer["tokens"]), 8 * 8)
    assert explorer["width"] >= 320 and "image" not in explorer


def test_an_example_click_uses_the_settings_and_checks_the_number(served):
    """The page's example handler: the example's picture and its caption at the visitor's
    beam and length; a number that names no example is a message, not a picture."""
    client, examples = served
    picture, text, details, explorer, truth = client.predict(1, 2, 5, "soft",
                                                             api_name="/example_ui")
    assert explorer["beam_size"] == 2 and explorer["max_len"] == 5 and "beam 2" in details
    assert explorer["source"] == {"example": 1} and text.split() == explorer["tokens"]
    for bad in (2, -1):
        _, text, _, explorer, _ = client.predict(bad, 2, 5, "soft", api_name="/example_ui")
        assert text == "" and "example must be a whole number from 0 to 1" in explorer["error"]


def call_raw(url: str, api_name: str, data: list) -> str:
    """One call through gradio's plain HTTP API (no gradio_client): the SSE reply's text."""
    import httpx

    event = httpx.post(f"{url}gradio_api/call/{api_name}", json={"data": data}, timeout=30)
    event.raise_for_status()
    reply = httpx.get(f"{url}gradio_api/call/{api_name}/{event.json()['event_id']}", timeout=60)
    return reply.text.strip()


def private_files(folder: Path) -> list[Path]:
    """Three server files no client uploaded, all named secret.png: a real image, a text file,
    and a path where nothing exists."""
    paths = [folder / kind / "secret.png" for kind in ("image", "text", "missing")]
    for path in paths:
        path.parent.mkdir(parents=True)
    render_scene(np.random.default_rng(5), 64).image.save(paths[0])
    paths[1].write_text("password=hunter2")
    return paths


@pytest.mark.parametrize("api_name, settings", [("caption", [2, 8, "soft"]),
                                               ("caption_ui", [2, 8, "soft"]),
                                               ("caption_from", ["a", 2, 8, "soft"]),
                                               ("look_here", [1, 0.5, 0.5, 2, 8, "soft"]),
                                               ("why", [1, "", 2, 8, "soft"])])
def test_no_endpoint_opens_a_file_the_client_names(served, tmp_path, api_name, settings):
    """Raw HTTP and gradio_client, with and without gradio's FileData marker: a path outside
    the uploads is never opened, and the reply cannot tell which of the files exist."""
    client, _ = served
    forms = {
        "plain dict": lambda p: {"path": str(p)},
        "named": lambda p: {"path": str(p), "orig_name": "secret.png"},
        "FileData": lambda p: {"path": str(p), "meta": {"_type": "gradio.FileData"}},
        "string": lambda p: str(p),
    }
    replies: dict[str, set[str]] = {form: set() for form in [*forms, "gradio_client"]}
    page = api_name.endswith("_ui")  # the page's handler answers with a message, not an error
    for path in private_files(tmp_path / "private"):
        for form, payload in forms.items():
            reply = call_raw(client.src, api_name, [payload(path), *settings])
            if page and not reply.startswith("event: error"):  # (gradio's own refusal)
                # no caption: the explorer is told why; its stamp differs every time
                assert reply.startswith("event: complete") and '"error"' in reply, reply
                assert '"tokens"' not in reply, reply
                reply = re.sub(r'"at": [0-9.e+-]+', '"at": 0', reply)
            else:
                assert reply.startswith("event: error"), (form, reply)  # never a caption
            replies[form].add(reply)
        if page:
            text, _, explorer, _ = client.predict({"path": str(path)}, *settings,
                                                  api_name=f"/{api_name}")
            assert text == "" and "tokens" not in explorer
            replies["gradio_client"].add(explorer["error"])
            continue
        with pytest.raises(gradio_client.exceptions.AppError) as err:
            client.predict({"path": str(path)}, *settings, api_name=f"/{api_name}")
        replies["gradio_client"].add(str(err.value))
    for form, answers in replies.items():  # the image, the text and the missing file alike
        assert len(answers) == 1, (form, answers)
    everything = " ".join(a for answers in replies.values() for a in answers)
    assert "password" not in everything and str(tmp_path) not in everything


@pytest.mark.parametrize("device, message", [("tpu", "unknown device 'tpu'"),
                                             ("cuda:7", "device 'cuda:7'")])
def test_an_unusable_device_stops_the_app_with_a_message(device, message, capsys):
    with pytest.raises(SystemExit) as stop:
        app_module.load_or_exit("weights", device)
    assert stop.value.code == 2 and message in capsys.readouterr().err


def test_app_runs_the_model_where_device_says(tmp_path):
    demo = app_module.load_or_exit(str(tiny_model_dir(tmp_path / "m")), "cpu")
    assert next(demo.model.parameters()).device.type == "cpu"


def test_mcp_flag_serves_the_api_endpoints_as_tools(tmp_path):
    import httpx

    blocks = app_module.build_app(Demo.load(str(tiny_model_dir(tmp_path / "m"))), examples=[])
    _, url, _ = app_module.launch(blocks, prevent_thread_lock=True, quiet=True,
                                  server_name="127.0.0.1", server_port=free_port(),
                                  mcp_server=app_module.parse_args(["--mcp"]).mcp)
    try:
        tools = httpx.get(f"{url}gradio_api/mcp/schema", timeout=30).json()
    finally:
        blocks.close()
    assert [t["meta"]["endpoint_name"] for t in tools] == ["caption", "caption_from", "look_here",
                                                                  "why"]


def test_what_the_explorer_sends_is_checked():
    from types import SimpleNamespace

    sent = SimpleNamespace(_data={"word": "3", "x": 0.25, "prefix": "a big", "y": "left"})
    assert app_module.event_field(sent, "word", int) == 3
    assert app_module.event_field(sent, "prefix", str) == "a big"
    for name, kind in (("y", float), ("missing", str), ("x", dict)):
        with pytest.raises(ValueError, match=f"bad '{name}'"):
            app_module.event_field(sent, name, kind)
    with pytest.raises(ValueError, match="bad 'word'"):
        app_module.event_field(SimpleNamespace(_data=None), "word", int)


def test_the_page_shows_no_server_path(served, tmp_path_factory):
    import httpx

    client, _ = served
    page = httpx.get(f"{client.src}config", timeout=30).text
    assert str(ROOT) not in page
    assert str(tmp_path_factory.getbasetemp()) not in page  # where the served model lives
    assert "Weights:" in page


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
    out = demo.caption(render_scene(np.random.default_rng(1), 64).image, 2, 6)
    assert out.tokens and set(out.tokens) <= set(words)
    assert out.attention.shape == (len(out.tokens), 5, 5)


def test_module_level_demo_is_built_from_the_environment(tmp_path, monkeypatch):
    """`app.demo` (what Spaces and `gradio app.py` serve) loads the model CAPTIONER_WEIGHTS
    names."""
    import gradio as gr

    folder = tiny_model_dir(tmp_path / "m")
    monkeypatch.setenv("CAPTIONER_WEIGHTS", str(folder))
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
