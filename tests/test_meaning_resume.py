"""Resume means "carry on exactly": a checkpoint restores weights, optimiser moments, the
schedule and every random generator, shown on a model with dropout 0.5 (with dropout 0 a lost
torch random state would go unseen). Epoch order is a function of (seed, epoch) only. Cache keys
and fingerprints change with what the cache depends on, and only with that."""

import random

import numpy as np
import pytest
import torch
from conftest import tiny_config

from captioner.features import cache_key, cached_array, state_fingerprint
from captioner.model import Captioner
from captioner.training import epoch_pairs, load_checkpoint, lr_lambda, save_checkpoint

CAPTIONS = torch.tensor([[1, 4, 5, 7, 2, 0], [1, 6, 8, 2, 0, 0]])  # <start> ... <end> <pad>


def setup(seed):
    torch.manual_seed(seed)
    model = Captioner(tiny_config(dropout=0.5)).train()
    decoder = [p for n, p in model.named_parameters() if not n.startswith("encoder.")]
    encoder = [p for p in model.encoder.parameters() if p.requires_grad][:3]
    optimizer = torch.optim.Adam([{"params": decoder, "lr": 3e-3},
                                  {"params": encoder, "lr": 1e-4}])
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lr_lambda(2, 10))
    return model, optimizer, scheduler


def train_step(model, optimizer, scheduler, features):
    loss, _ = model.loss(features, CAPTIONS)
    optimizer.zero_grad()
    loss.backward()
    optimizer.step()
    scheduler.step()
    return loss.item()


def draws():
    return (torch.rand(3).tolist(), np.random.rand(3).tolist(), np.random.randn(3).tolist(),
            random.random())


def test_resume_continues_exactly_like_an_uninterrupted_run(tmp_path):
    features = torch.randn(2, 16, Captioner(tiny_config()).encoder.out_dim,
                           generator=torch.Generator().manual_seed(3))
    model, optimizer, scheduler = setup(0)
    for _ in range(3):
        train_step(model, optimizer, scheduler, features)
    torch.manual_seed(11)
    np.random.seed(12)
    random.seed(13)
    state = {"epoch": 3, "best": 0.25, "history": [{"epoch": 1}, {"epoch": 2}]}
    save_checkpoint(tmp_path / "checkpoint.safetensors", model, optimizer, scheduler, state)
    expected_draws = draws()
    expected_losses = [train_step(model, optimizer, scheduler, features) for _ in range(2)]
    expected_lr = [group["lr"] for group in optimizer.param_groups]
    expected_weights = {k: v.clone() for k, v in model.state_dict().items()}

    # a new process: other initial weights, other random states
    fresh, fresh_optimizer, fresh_scheduler = setup(99)
    torch.manual_seed(0)
    np.random.seed(0)
    random.seed(0)
    restored = load_checkpoint(tmp_path / "checkpoint.safetensors", fresh, fresh_optimizer,
                               fresh_scheduler)
    assert restored == state
    assert draws() == expected_draws
    # the draws above moved the generators on: restore again, then train
    fresh, fresh_optimizer, fresh_scheduler = setup(98)
    load_checkpoint(tmp_path / "checkpoint.safetensors", fresh, fresh_optimizer,
                    fresh_scheduler)
    draws()
    losses = [train_step(fresh, fresh_optimizer, fresh_scheduler, features) for _ in range(2)]
    assert losses == expected_losses  # same dropout masks, same Adam moments, same lr
    assert [group["lr"] for group in fresh_optimizer.param_groups] == expected_lr
    for name, tensor in fresh.state_dict().items():
        assert torch.equal(tensor, expected_weights[name]), name


def test_checkpoint_file_is_replaced_whole(tmp_path):
    model, optimizer, scheduler = setup(0)
    path = tmp_path / "checkpoint.safetensors"
    save_checkpoint(path, model, optimizer, scheduler, {"epoch": 1})
    save_checkpoint(path, model, optimizer, scheduler, {"epoch": 2})
    assert sorted(p.name for p in tmp_path.iterdir()) == ["checkpoint.safetensors"]
    assert load_checkpoint(path, *setup(1)) == {"epoch": 2}


def captions_table():
    """Image 0 has 3 real captions, image 1 has 1 and an empty slot, image 2 has 2."""
    table = np.zeros((3, 3, 4), np.int32)
    table[:, :, 0] = 1
    table[0, :, 1] = [4, 5, 6]
    table[1, 0, 1] = 7
    table[2, :2, 1] = [8, 9]
    return table


def test_epoch_pairs_cover_every_real_caption_once_in_a_shuffled_order():
    table = captions_table()
    pairs = epoch_pairs(table, 0, seed=1, epoch=1)
    assert sorted(map(tuple, pairs.tolist())) == [(0, 0), (0, 1), (0, 2), (1, 0), (2, 0),
                                                  (2, 1)]
    orders = {tuple(map(tuple, epoch_pairs(table, 0, seed=1, epoch=e).tolist()))
              for e in range(1, 9)}
    assert len(orders) > 1  # reshuffled each epoch
    assert np.array_equal(epoch_pairs(table, 0, 1, 3), epoch_pairs(table, 0, 1, 3))
    assert not all(np.array_equal(epoch_pairs(table, 0, 1, e), epoch_pairs(table, 0, 2, e))
                   for e in range(1, 6))  # the seed matters too


def test_epoch_pairs_sample_distinct_real_captions_per_image():
    table = captions_table()
    seen = set()
    for epoch in range(12):
        pairs = epoch_pairs(table, 2, seed=5, epoch=epoch).tolist()
        per_image = {i: [c for j, c in pairs if j == i] for i in range(3)}
        assert sorted(map(len, per_image.values())) == [1, 2, 2]
        assert len(per_image[1]) == 1 and per_image[1] == [0]  # only its real caption
        assert len(set(per_image[0])) == 2
        seen.add(tuple(sorted(per_image[0])))
    assert len(seen) > 1  # which two captions changes from epoch to epoch


def test_warm_up_then_cosine_decay():
    factor = lr_lambda(4, 14)
    assert [factor(s) for s in range(4)] == [0.25, 0.5, 0.75, 1.0]
    assert factor(4) == 1.0 and factor(9) == pytest.approx(0.5) and factor(14) == 0.0
    assert factor(30) == 0.0 and lr_lambda(0, 0)(0) == 1.0


def test_cache_key_depends_on_every_part_and_not_on_their_order():
    base = cache_key(encoder="resnet50", size=224, images="abc")
    assert base == cache_key(images="abc", size=224, encoder="resnet50")
    assert len({base, cache_key(encoder="resnet50", size=256, images="abc"),
                cache_key(encoder="resnet18", size=224, images="abc"),
                cache_key(encoder="resnet50", size=224, images="abd"),
                cache_key(encoder="resnet50", size=224)}) == 5


def test_state_fingerprint_sees_a_changed_weight_and_a_renamed_tensor():
    torch.manual_seed(0)
    module = torch.nn.Sequential(torch.nn.Linear(3, 2), torch.nn.Linear(2, 2))
    before = state_fingerprint(module)
    assert state_fingerprint(module) == before
    with torch.no_grad():
        module[1].weight[1, 0] += 1e-3
    assert state_fingerprint(module) != before
    renamed = torch.nn.Sequential()
    renamed.add_module("first", module[0])
    renamed.add_module("second", module[1])
    assert state_fingerprint(renamed) != state_fingerprint(module)  # names count, not only values


class Split(list):
    """A datasets-like split of PIL images: split[i]["image"], split[a:b]["image"]."""

    def __getitem__(self, index):
        if isinstance(index, slice):
            return {"image": list.__getitem__(self, index)}
        return {"image": list.__getitem__(self, index)}


def test_cached_rows_are_their_own_images_in_order(tmp_path):
    from PIL import Image

    split = Split(Image.new("RGB", (2, 2), (i, 2 * i, 0)) for i in range(7))
    encode = lambda images: np.array([[im.getpixel((0, 0))[0], im.getpixel((0, 0))[1],  # noqa: E731
                                       im.getpixel((1, 1))[0]] for im in images], np.float32)
    single = cached_array(tmp_path / "s.npy", split, encode, batch_size=3)
    want = np.array([[i, 2 * i, i] for i in range(7)], np.float32)
    assert np.array_equal(single[0:7], want)
    assert np.array_equal(single[-1], want[6]) and np.array_equal(single[2], want[2])
    assert single[5:9].shape == (2, 3) and len(single) == 7
    assert single.nbytes == 7 * 3 * 4
    with pytest.raises(IndexError):
        single[7]
    with pytest.raises(IndexError):
        single[-8]
    with pytest.raises(IndexError):
        single[0:6:2]


def test_cache_key_is_stable_across_versions_and_takes_paths():
    import hashlib
    import json
    from pathlib import Path

    parts = {"size": 224, "encoder": "resnet50"}
    blob = json.dumps(parts, sort_keys=True).encode()
    assert cache_key(**parts) == hashlib.sha256(blob).hexdigest()[:16]  # old caches stay valid
    assert cache_key(root=Path("a/b")) == cache_key(root="a/b") != cache_key(root=Path("a/c"))


def test_state_fingerprint_is_a_sixteen_digit_digest_of_names_and_bytes():
    import hashlib

    module = torch.nn.Linear(2, 1)
    digest = hashlib.sha256()
    for name, tensor in module.state_dict().items():
        digest.update(name.encode())
        digest.update(tensor.numpy().tobytes())
    assert state_fingerprint(module) == digest.hexdigest()[:16]


def test_cache_is_written_in_batches_of_64_with_a_progress_bar(tmp_path, capsys):
    from PIL import Image

    split = Split(Image.new("RGB", (1, 1), (i, 0, 0)) for i in range(130))
    calls = []

    def encode(images):
        calls.append(len(images))
        return np.array([[im.getpixel((0, 0))[0]] for im in images], np.float32)

    rows = cached_array(tmp_path / "c.npy", split, encode)
    assert calls == [1, 64, 64, 2]  # the first image alone gives the row shape
    assert np.array_equal(rows[0:130][:, 0], np.arange(130))
    assert "\rcaching: " in capsys.readouterr().err


def test_every_process_follows_the_main_processs_state(monkeypatch):
    from types import SimpleNamespace

    import accelerate.utils

    from captioner.training import broadcast_state

    state = {"epoch": 2, "bad_epochs": 1}
    assert broadcast_state(SimpleNamespace(num_processes=1), state) is state
    monkeypatch.setattr(accelerate.utils, "broadcast_object_list",
                        lambda objects: [{**objects[0], "from": "rank 0"}])
    assert broadcast_state(SimpleNamespace(num_processes=2), state) == {
        "epoch": 2, "bad_epochs": 1, "from": "rank 0"}
