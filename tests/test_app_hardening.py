"""The running app under abuse: the bad-input corpus, and 20 concurrent users on loopback."""

import resource
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import pytest

from captioner.demo import Demo, unpack_map
from captioner.hub import BUNDLED_WEIGHTS
from captioner.scenes import render_scene
from tests.bad_inputs import EXPECTED, write_corpus
from tests.test_app import gradio_client, running_app

pytestmark = pytest.mark.filterwarnings("ignore:.*(no_silent_downcasting|copy keyword)")
USERS = 20


def weights() -> Path:
    """The bundled model gives every scene its own caption, so cross-talk would show."""
    if not (BUNDLED_WEIGHTS / "model.safetensors").is_file():
        pytest.skip("needs the bundled weights/ (trained scenes model)")
    return BUNDLED_WEIGHTS


def test_bad_input_corpus_through_the_running_app(tmp_path):
    paths = write_corpus(tmp_path / "corpus")
    with running_app(tmp_path / "app", weights=weights()) as (url, examples):
        client = gradio_client.Client(url, verbose=False)
        for name, must_caption in EXPECTED.items():
            upload = gradio_client.handle_file(str(paths[name]))
            if must_caption:
                assert client.predict(upload, 2, 12, api_name="/caption")["tokens"], name
            else:
                with pytest.raises(gradio_client.exceptions.AppError) as error:
                    client.predict(upload, 2, 12, api_name="/caption")
                message = str(error.value)
                assert name in message and "Traceback" not in message, (name, message)
        # still serving
        assert client.predict(gradio_client.handle_file(examples[0]), 1, 12,
                              api_name="/caption")["tokens"]


def rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def test_twenty_concurrent_users_get_their_own_answers(tmp_path):
    model_dir = weights()
    images = []
    for i in range(USERS):
        path = tmp_path / f"user-{i}.png"
        render_scene(np.random.default_rng(7000 + i), 64).image.resize((256, 256)).save(path)
        images.append(path)
    alone = Demo.load(str(model_dir))
    alone.allow_files(images)
    expected = [alone.view(str(p), 2, 16).explorer for p in images]  # each computed alone
    assert len({e["caption"] for e in expected}) > USERS // 2  # distinct enough to show cross-talk

    with running_app(tmp_path / "app", weights=model_dir) as (url, _):
        before = rss_mb()

        def user(i: int) -> tuple[dict, dict]:
            client = gradio_client.Client(url, verbose=False)
            upload = gradio_client.handle_file(str(images[i]))
            api = client.predict(upload, 2, 16, api_name="/caption")
            _, _, explorer, _ = client.predict(upload, 2, 16, "soft",
                                           api_name="/caption_ui")
            return api, explorer

        started = time.monotonic()
        with ThreadPoolExecutor(USERS) as pool:
            results = list(pool.map(user, range(USERS), timeout=300))
        elapsed = time.monotonic() - started
        growth = rss_mb() - before
    print(f"\n{USERS} users: {elapsed:.1f} s, peak RSS growth of the test process "
          f"(server inside) {growth:.0f} MB")
    for i, (api, explorer) in enumerate(results):
        mine = expected[i]
        assert api["caption"] == explorer["caption"] == mine["caption"], i
        # the heatmaps this user's browser draws are those of its own image, value for value
        assert explorer["attention"] == mine["attention"], f"user {i}: another image's maps"
        maps = np.asarray(api["attention"]).reshape(len(api["tokens"]), -1)
        drawn = np.stack([unpack_map(m) for m in mine["attention"]])
        peaks = maps.max(axis=1, keepdims=True)
        # both are rounded: the packed map to 1/255 in sqrt, the API's to 6 decimals, which
        # the sqrt magnifies near zero in a diffuse map (peak 0.008: up to 2/255)
        error = np.abs(np.sqrt(drawn) - np.sqrt(maps / peaks))
        assert (error <= 1.5 / 255 + np.sqrt(0.5e-6 / peaks)).all(), f"user {i}"
    assert growth < 1024
