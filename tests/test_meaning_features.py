"""The feature cache's keys and edge cases, as an upgrade and a tiny dataset meet them: the same
settings keep naming the same cache file (a new version must find the caches an old one wrote),
settings that are not plain JSON (paths) still make a key, and a split of one image caches."""

import hashlib
import json
from pathlib import Path

import numpy as np
import torch
from datasets import Dataset
from datasets import Image as ImageFeature
from PIL import Image

from captioner.features import cache_key, cached_array, state_fingerprint


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
