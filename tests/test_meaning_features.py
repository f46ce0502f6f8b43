"""The feature cache's keys and edge cases, as an upgrade and a tiny dataset meet them: the same
settings keep naming the same cache file (a new version must find the caches an old one wrote),
settings that are not plain JSON (paths) still make a key, and a split of one image caches."""

import gc
import hashlib
import json
import os
import sys
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import tiny_config
from datasets import Dataset
from datasets import Image as ImageFeature
from PIL import Image

from captioner.features import CachedRows, cache_key, cached_array, state_fingerprint


def test_features_are_keyed_on_the_encoder_settings_alone():
    """A decoder setting (a wider LSTM, hard attention, the word query) reuses the features a
    run cached; every setting the encoder's output depends on asks for new ones."""
    base = tiny_config()
    decoder_only = replace(base, hidden_dim=64, attention_dim=8, embed_dim=4, dropout=0.3,
                           attention="hard", hard_readout="argmax", word_query=True)
    assert decoder_only.encoder_settings() == base.encoder_settings()
    for change in (dict(encoder="resnet34"), dict(encoder_stage=3), dict(grid_size=2),
                   dict(coord_channels=False), dict(image_size=64),
                   dict(image_mean=[0.5, 0.5, 0.5]), dict(image_std=[0.5, 0.5, 0.5])):
        assert replace(base, **change).encoder_settings() != base.encoder_settings(), change


def test_cache_keys_are_stable_across_versions():
    """The key is the first 16 hex digits of sha256 over the sorted JSON of the settings: an
    upgrade that changed the length or the encoding would silently re-encode every dataset."""
    parts = {"split": "train", "image_size": 128, "encoder": "resnet18"}
    expected = hashlib.sha256(json.dumps(parts, sort_keys=True).encode()).hexdigest()[:16]
    assert cache_key(**parts) == expected
    assert cache_key(**dict(reversed(parts.items()))) == expected  # order of the settings


def test_a_path_in_the_settings_makes_a_key_of_its_text():
    here, there = Path("data") / "a", Path("data") / "b"
    assert cache_key(source=here, n=1) == cache_key(source=str(here), n=1)
    assert cache_key(source=here, n=1) != cache_key(source=there, n=1)


def test_the_weights_fingerprint_is_stable_and_follows_every_weight():
    torch.manual_seed(0)
    layer = torch.nn.Linear(3, 2)
    digest = hashlib.sha256()
    for name, tensor in layer.state_dict().items():
        digest.update(name.encode())
        digest.update(tensor.numpy().tobytes())
    assert state_fingerprint(layer) == digest.hexdigest()[:16]
    with torch.no_grad():
        layer.bias[1] += 1e-6
    assert state_fingerprint(layer) != digest.hexdigest()[:16]


def test_a_split_of_one_image_caches(tmp_path):
    split = Dataset.from_dict({"image": [Image.new("RGB", (4, 4), (90, 90, 90))]}).cast_column(
        "image", ImageFeature())
    rows = cached_array(tmp_path / "one.npy", split,
                        lambda images: np.stack([np.asarray(im, np.float32)[0, 0]
                                                 for im in images]))
    assert rows.shape == (1, 3) and rows[0].tolist() == [90, 90, 90]


def grey_split(*tones):
    return Dataset.from_dict({"image": [Image.new("RGB", (4, 4), (t, t, t)) for t in tones]}
                             ).cast_column("image", ImageFeature())


def first_pixel(images):
    return np.stack([np.asarray(im, np.float32)[0, 0] for im in images])


def test_a_second_process_fills_only_its_rows_and_draws_no_progress_bar(tmp_path, capsys):
    """Rank 1 of 2, batches of 1: rows 1 and 3 are its own; rank 0 (simulated here) made the
    file and renames it between the second and third barrier. One bar per run, not per process."""
    split = grey_split(10, 20, 30, 40)
    path, tmp = tmp_path / "rows.npy", tmp_path / "rows.partial.npy"
    np.lib.format.open_memmap(tmp, mode="w+", dtype=np.float32, shape=(4, 3)).flush()
    calls = []

    def barrier():
        calls.append(1)
        if len(calls) == 2:
            os.replace(tmp, path)

    rows = cached_array(path, split, first_pixel, batch_size=1, desc="rank-one", rank=1,
                        world=2, barrier=barrier)
    assert rows[:].tolist() == [[0] * 3, [20] * 3, [0] * 3, [40] * 3]
    assert "rank-one" not in capsys.readouterr().err


def test_cached_rows_close_their_file_when_dropped(tmp_path):
    rows = cached_array(tmp_path / "rows.npy", grey_split(10), first_pixel)
    fd = rows.fd
    os.fstat(fd)  # open
    del rows
    gc.collect()
    with pytest.raises(OSError):
        os.fstat(fd)


def test_row_reads_out_of_range_or_strided_are_refused_by_name(tmp_path):
    rows = CachedRows(cached_array(tmp_path / "rows.npy", grey_split(10, 20), first_pixel).path)
    with pytest.raises(IndexError, match="^2$"):
        rows[2]
    with pytest.raises(IndexError, match="^only contiguous row ranges are supported$"):
        rows[::2]
    assert rows[-1].tolist() == [20] * 3


def test_rows_that_failed_to_open_are_dropped_quietly(tmp_path, monkeypatch):
    """A cache file that is not an array raises on opening, and the half-made object leaves no
    "Exception ignored in __del__" behind when it is collected."""
    bad = tmp_path / "bad.npy"
    bad.write_bytes(b"not an array")
    unraisable = []
    monkeypatch.setattr(sys, "unraisablehook", unraisable.append)
    with pytest.raises(ValueError):
        CachedRows(bad)
    gc.collect()
    assert unraisable == []
