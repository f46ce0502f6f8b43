"""The feature cache: rows line up with the dataset, a complete cache is reused, and training
recomputes it when the data, the image size or the encoder weights change."""

import threading

import numpy as np
import pytest
from datasets import Dataset
from datasets import Image as ImageFeature
from PIL import Image

from captioner import training
from captioner.features import CachedRows, cached_array

SHADES = 10


@pytest.fixture
def split():
    """A 10-image split; image i is a flat grey of value 20 * i."""
    images = [Image.new("RGB", (8, 6), (20 * i,) * 3) for i in range(SHADES)]
    return Dataset.from_dict({"image": images}).cast_column("image", ImageFeature())


def encode_counting(calls: list):
    """encode(images) -> one (2, 3) row per image holding its grey value; records batch sizes."""
    def encode(images):
        calls.append(len(images))
        return np.stack([np.full((2, 3), np.asarray(im)[0, 0, 0], np.float32) for im in images])
    return encode


def test_rows_line_up_with_the_images(split, tmp_path):
    """Batches of 3 over 10 images: every row, slice and negative index holds its own image."""
    calls = []
    rows = cached_array(tmp_path / "c.npy", split, encode_counting(calls), batch_size=3)
    assert isinstance(rows, CachedRows) and len(rows) == SHADES and rows.shape == (10, 2, 3)
    for i in range(SHADES):
        np.testing.assert_array_equal(rows[i], np.full((2, 3), 20 * i))
    np.testing.assert_array_equal(rows[3:7][:, 0, 0], [60, 80, 100, 120])
    assert rows[-1][0, 0] == 180 and rows[8:20].shape == (2, 2, 3) and rows[5:5].shape[0] == 0
    with pytest.raises(IndexError):
        rows[SHADES]
    assert sum(calls) == 1 + SHADES  # one probe image for the dtype and shape, then each once


def test_complete_cache_is_reused_and_a_partial_one_is_not(split, tmp_path):
    """A finished file is read back without encoding anything; a leftover .partial.npy from an
    interrupted run is never taken for a finished cache."""
    path = tmp_path / "c.npy"
    cached_array(path, split, encode_counting([]))
    calls = []
    rows = cached_array(path, split, encode_counting(calls))
    assert calls == [] and rows[4][0, 0] == 80

    other = tmp_path / "d.npy"
    np.save(tmp_path / "d.partial.npy", np.zeros((SHADES, 2, 3), np.float32))
    rows = cached_array(other, split, encode_counting(calls))
    assert sum(calls) == 1 + SHADES and rows[9][0, 0] == 180
    assert not (tmp_path / "d.partial.npy").exists()


def test_two_ranks_fill_one_file(split, tmp_path):
    """Two processes (threads here, with a real barrier) each encode their own batches of one
    shared file; every row ends up right."""
    barrier = threading.Barrier(2)
    calls = {0: [], 1: []}
    results = {}

    def rank(r):
        results[r] = cached_array(tmp_path / "c.npy", split, encode_counting(calls[r]),
                                  batch_size=2, rank=r, world=2, barrier=barrier.wait)

    threads = [threading.Thread(target=rank, args=(r,)) for r in (0, 1)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    assert sorted(results) == [0, 1]
    assert calls[1] == [2, 2] and calls[0] == [1, 2, 2, 2]  # rows 2-3, 6-7 vs probe + the rest
    for r in (0, 1):
        np.testing.assert_array_equal(results[r][:][:, 0, 0], 20 * np.arange(SHADES))


# --- the cache as training keys it ---

TINY_FROZEN = ["--encoder", "resnet18", "--encoder-stage", "1", "--grid", "4", "--embed-dim",
               "16", "--attention-dim", "16", "--hidden-dim", "32", "--no-pretrained-encoder",
               "--max-eval-images", "8", "--epochs", "0"]


@pytest.fixture
def prepare(tmp_path, monkeypatch):
    """prepare(*args) -> {split: encode calls} for train_space.py's caching step only (no
    epochs, no final evaluation), every run sharing one cache folder; also checks that rows
    of the cache are the encoding of the same rows of the dataset."""
    from captioner.scenes import generate_scenes

    data = generate_scenes(tmp_path / "scenes", num_train=24, num_validation=8, num_test=2,
                           image_size=32, seed=4, progress=False)
    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(training, "finish", lambda *args, **kwargs: None)
    real = training.cached_array

    def run(*args):
        counts = {}

        def spy(path, split, encode, **kwargs):
            name = path.stem
            counts[name] = 0

            def counting(images):
                counts[name] += len(images)
                return encode(images)

            rows = real(path, split, counting, **kwargs)
            for i in (0, len(split) // 2, len(split) - 1):
                np.testing.assert_allclose(rows[i], encode([split[i]["image"].convert("RGB")])[0],
                                           atol=2e-2)
            return rows

        monkeypatch.setattr(training, "cached_array", spy)
        training.main(["--dataset", str(data), "--output-dir", str(tmp_path / "out"),
                       "--cache-dir", str(tmp_path / "cache"), *TINY_FROZEN, *args])
        return counts

    return run


def test_training_reuses_and_invalidates_the_cache(prepare):
    """Encoded once; the same run again encodes nothing; changing the training images, the
    image size or the encoder weights (another seed's random init) encodes again, and only the
    splits that changed."""
    assert prepare("--image-size", "32") == {"train": 1 + 24, "validation": 1 + 8}
    assert prepare("--image-size", "32") == {"train": 0, "validation": 0}
    assert prepare("--image-size", "40") == {"train": 25, "validation": 9}
    assert prepare("--image-size", "32", "--max-train-images", "20") == {"train": 21,
                                                                         "validation": 0}
    assert prepare("--image-size", "32", "--seed", "1") == {"train": 25, "validation": 9}


def test_pixel_cache_ignores_encoder_weights(prepare):
    """When the encoder is trained the cache holds resized pixels: the seed (and so the
    encoder's initial weights) does not matter, the image size does. (Also shows that the seed
    alone leaves the data fingerprint alone, so the weights case above is the weights.)"""
    assert prepare("--fine-tune-encoder") == {"train": 25, "validation": 9}
    assert prepare("--fine-tune-encoder", "--seed", "1") == {"train": 0, "validation": 0}
    assert prepare("--fine-tune-encoder", "--image-size", "40") == {"train": 25,
                                                                     "validation": 9}
