"""The running app under abuse: the bad-input corpus, and 20 concurrent users on loopback."""

import resource
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from captioner.demo import Demo
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
    expected = [Demo.load(str(model_dir)).api(str(p), 2, 16)["caption"] for p in images]
    assert len(set(expected)) > USERS // 2  # distinct enough to reveal cross-talk

    with running_app(tmp_path / "app", weights=model_dir) as (url, _):
        before = rss_mb()

        def user(i: int) -> tuple[str, str, bool]:
            client = gradio_client.Client(url, verbose=False)
            upload = gradio_client.handle_file(str(images[i]))
            api = client.predict(upload, 2, 16, api_name="/caption")["caption"]
            text, _, _, _, gallery, _ = client.predict(upload, 2, 16, api_name="/caption_ui")
            step = min(2, len(gallery))
            sent = [{"image": gradio_client.handle_file(g["image"]), "caption": g["caption"]}
                    for g in gallery]  # the browser sends the gallery back as it got it
            heatmap, _ = client.predict(sent, step, api_name="/show_word")
            same = np.array_equal(np.asarray(Image.open(heatmap)),
                                  np.asarray(Image.open(gallery[step - 1]["image"])))
            return api, text, same

        started = time.monotonic()
        with ThreadPoolExecutor(USERS) as pool:
            results = list(pool.map(user, range(USERS), timeout=300))
        elapsed = time.monotonic() - started
        growth = rss_mb() - before
    print(f"\n{USERS} users: {elapsed:.1f} s, peak RSS growth of the test process "
          f"(server inside) {growth:.0f} MB")
    for i, (api, text, same) in enumerate(results):
        assert api == expected[i] and text == expected[i], (i, api, text, expected[i])
        assert same, f"user {i}: the slider showed another overlay"
    assert growth < 1024
