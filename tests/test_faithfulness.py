"""Faithfulness measurements: ranks, cell removal, and each figure on a planted model whose
word depends only on known cells, so the right answer is known in advance."""

import json

import numpy as np
import pytest
import torch
from PIL import Image

from captioner import cli
from captioner.decoding import Guide, caption_images, decode
from captioner.faithfulness import (
    NamedWord,
    attended_cells,
    average_ranks,
    background_feature,
    caption_ids,
    causal_results,
    curve_aucs,
    elsewhere,
    explain_word,
    gradcam,
    occlusion,
    reinitialised_attention,
    removed,
    spearman,
    uniform_greedy,
)

GRID = 4
CELLS = GRID * GRID


def test_spearman_of_a_map_with_itself_its_reverse_and_ties():
    a = np.array([0.05, 0.5, 0.1, 0.3, 0.0, 0.05])
    assert spearman(a, a) == pytest.approx(1.0)
    assert spearman(a, -a) == pytest.approx(-1.0)
    assert spearman(a, a ** 3 + 2) == pytest.approx(1.0)  # ranks only
    # worked by hand: ranks (0..4) and (0, 1, 2.5, 4, 2.5) -> 8 / sqrt(10 * 9.5)
    assert spearman([1, 2, 3, 4, 5], [5, 6, 7, 8, 7]) == pytest.approx(8 / np.sqrt(95))
    assert spearman(a, np.ones(6)) is None
    assert list(average_ranks([3, 1, 3, 0])) == [2.5, 1.0, 2.5, 0.0]


def test_attended_cells_hold_the_asked_mass_with_the_fewest_cells():
    alpha = np.array([0.1, 0.5, 0.3, 0.1])
    assert list(attended_cells(alpha)) == [False, True, False, False]
    assert list(attended_cells(alpha, mass=0.6)) == [False, True, True, False]
    assert attended_cells(alpha, mass=1.0).all()


def test_elsewhere_draws_as_many_cells_outside():
    cells = np.zeros(CELLS, bool)
    cells[[0, 1, 5]] = True
    rng = np.random.default_rng(0)
    draws = [elsewhere(cells, rng) for _ in range(20)]
    assert all(d.sum() == 3 and not (d & cells).any() for d in draws)
    assert len({tuple(np.flatnonzero(d)) for d in draws}) > 1
    assert elsewhere(np.arange(CELLS) < 9, rng) is None  # 9 cells, only 7 outside


def planted(make_model, channel_cells):
    """A tiny model whose word "red" depends only on feature channel 0 through the (uniform)
    attended context: log p(red) grows with the mean of channel 0 over the grid. Features
    carry channel 0 only on `channel_cells`, so only those cells matter to the word."""
    model = make_model(seed=0, grid_size=GRID, coord_channels=True)
    with torch.no_grad():
        for p in model.parameters():
            if not p.dtype.is_floating_point:
                continue
            p.zero_()
        model.gate.bias.fill_(20.0)  # the whole context reaches the classifier
        red = model.vocab.index["red"]
        model.classifier.weight[red, model.config.hidden_dim] = 40.0
    features = torch.zeros(2, CELLS, model.encoder.out_dim)
    features[:, :, -2:] = torch.randn(CELLS, 2)  # coordinate channels: must be left alone
    for scene, cells in enumerate(channel_cells):
        features[scene, cells, 0] = 1.0
    ids = caption_ids(model, [["a", "red", "square"]] * 2, features.device)
    return model, features, ids


def mask(cells):
    out = np.zeros(CELLS, bool)
    out[cells] = True
    return out


def test_removed_replaces_only_the_image_channels_of_the_given_cells(make_model):
    model, features, _ = planted(make_model, [[0, 1], [2]])
    background = torch.full((model.encoder.backbone_dim,), 7.0)
    cells = torch.from_numpy(np.stack([mask([1]), mask([3, 4])]))
    out = removed(model, features, cells, background)
    d = model.encoder.backbone_dim
    assert torch.equal(out[0, 1, :d], background) and torch.equal(out[1, 3, :d], background)
    assert torch.equal(out[:, :, d:], features[:, :, d:])  # coordinates kept everywhere
    untouched = ~cells
    assert torch.equal(out[untouched], features[untouched])


def test_causal_grounding_is_one_when_the_word_depends_on_the_named_object(make_model):
    object_a, object_b = [5, 6, 9, 10], [0, 3]
    model, features, ids = planted(make_model, [object_a + object_b, object_a + object_b])
    background = torch.zeros(model.encoder.backbone_dim)
    rng = np.random.default_rng(1)
    # the word names object A; its log p depends on the channel-0 cells (A and B). Removing A
    # (4 cells) hurts more than 4 cells drawn outside A and B, which change nothing.
    words = [NamedWord(0, 1, mask(object_a)), NamedWord(1, 1, mask(object_a))]
    trials = [[mask(object_a), elsewhere(mask(object_a + object_b), rng),
               mask([12, 13]), elsewhere(mask(object_a + object_b + [12, 13]), rng)]] * 2
    results = causal_results(model, features, ids, words, trials, background)
    assert results == [(1.0, 0.0), (1.0, 0.0)]  # the control box holds no channel-0 cell
    # a word that depends on another object only: removing the named one changes nothing
    model, features, ids = planted(make_model, [object_b, object_b])
    words = [NamedWord(0, 1, mask(object_a))]
    trials = [[mask(object_a), mask([12, 13, 14, 15]), mask(object_b), mask([12, 13])]]
    assert causal_results(model, features, ids, words, trials, background) == [(0.0, 1.0)]


def test_gradcam_and_occlusion_find_the_cells_the_word_depends_on(make_model):
    cells = [[5, 6, 9], [0, 15]]
    model, features, ids = planted(make_model, cells)
    background = torch.zeros(model.encoder.backbone_dim)
    cams = gradcam(model, features, ids, torch.tensor([1, 1])).numpy()
    occ = occlusion(model, features, ids, background).numpy()  # (B, L, P)
    for scene, where in enumerate(cells):
        assert set(np.flatnonzero(cams[scene] > 1e-6)) == set(where)
        assert set(np.flatnonzero(occ[scene, 1] > 1e-6)) == set(where)
        # "a" competes with "red" only: without the red cells "a" becomes *more* likely
        assert set(np.flatnonzero(occ[scene, 0] < -1e-6)) == set(where)
        assert (occ[scene, 0] < 1e-6).all()


def test_deletion_and_insertion_reward_the_right_ranking(make_model):
    model, features, ids = planted(make_model, [[5, 6, 9, 10], [0]])
    background = torch.zeros(model.encoder.backbone_dim)
    right = np.array([5, 6, 9, 10, *[c for c in range(CELLS) if c not in (5, 6, 9, 10)]])
    aucs = curve_aucs(model, features[0], ids[:1], 1,
                      {"right": right, "wrong": right[::-1].copy()}, background)
    (del_right, ins_right), (del_wrong, ins_wrong) = aucs["right"], aucs["wrong"]
    assert del_right < del_wrong - 0.2
    assert ins_right > ins_wrong + 0.2


def test_randomisation_reinitialises_the_attention_layers_only(make_model):
    model = make_model(seed=3)
    twin = reinitialised_attention(model)
    for (name, p), (_, q) in zip(model.named_parameters(), twin.named_parameters()):
        assert torch.equal(p, q) != name.startswith("attention."), name
    assert all(torch.equal(p, q) for p, q in zip(model.parameters(), make_model(seed=3)
                                                 .parameters()))  # the original is untouched


def test_uniform_attention_reads_the_mean_whatever_the_attention_layers(make_model):
    """With uniform reading, the attention layers cannot matter: a model and its twin with
    re-initialised attention write the same words, the same as steering every word onto the
    uniform map; the maps returned are each model's own, unused ones."""
    model = make_model(seed=4)
    features = torch.randn(3, CELLS, model.encoder.out_dim)
    twin = reinitialised_attention(model)
    mine, theirs = uniform_greedy(model, features, 6), uniform_greedy(twin, features, 6)
    assert [c.tokens for c in mine] == [c.tokens for c in theirs]
    steered = decode(model, features, beam_size=1, max_len=6,
                     guide=Guide(attention={t: np.full(CELLS, 1 / CELLS) for t in range(6)}))
    assert [c.tokens for c in mine] == [c.tokens for c in steered]
    assert not np.allclose(mine[0].attention, theirs[0].attention)
    assert not np.allclose(mine[0].attention, 1 / CELLS)


def test_explain_word_matches_the_caption_it_explains(make_model):
    model = make_model(seed=5)
    image = Image.fromarray(np.random.default_rng(2).integers(0, 256, (32, 32, 3), np.uint8))
    caption = caption_images(model, [image], beam_size=1, max_len=5, top_k=1)[0]
    for position, (word, prob) in enumerate(w[0] for w in caption.alternatives):
        why = explain_word(model, image, caption.tokens, position)
        assert caption.tokens[position] == word
        assert why.probability == pytest.approx(prob, rel=1e-4)
        assert np.allclose(why.attention, caption.attention[position], atol=1e-6)
        assert why.attended.sum() >= 1
        assert why.attention[why.attended].sum() >= 0.5 - 1e-6
    with pytest.raises(ValueError, match="outside the caption"):
        explain_word(model, image, caption.tokens, len(caption.tokens))


def test_evaluate_prints_and_writes_the_faithfulness_block(saved_model_dir, tmp_path, capsys,
                                                           monkeypatch):
    from captioner import evaluation

    monkeypatch.setattr(evaluation, "java_available", lambda: False)
    out = tmp_path / "m.json"
    args = ["evaluate", "--weights", str(saved_model_dir), "--data-dir", str(tmp_path),
            "--num-scenes", "3", "--beam-size", "1", "--max-len", "6", "--curve-words", "2"]
    assert cli.main([*args, "--output", str(out)]) == 0
    block = json.loads(out.read_text())["faithfulness"]
    assert "causal grounding" in capsys.readouterr().out
    assert block["attention"] == "soft" and block["curve_words"] <= 2 and block["scenes"] == 3
    assert cli.main([*args, "--output", str(out), "--faithfulness-scenes", "1"]) == 0
    block = json.loads(out.read_text())["faithfulness"]
    assert block["scenes"] == 1 and json.loads(out.read_text())["images"] == 3
    assert cli.main([*args, "--output", str(out), "--faithfulness-scenes", "0"]) == 0  # all
    assert json.loads(out.read_text())["faithfulness"]["scenes"] == 3
    assert cli.main([*args, "--output", str(out), "--no-faithfulness"]) == 0
    assert "faithfulness" not in json.loads(out.read_text())
    assert cli.main([*args, "--hard-readout", "argmax"]) == 2
    assert "this one is soft" in capsys.readouterr().err


def scene_object(box, color="red", shape="square", size="small"):
    return {"box": box, "color": color, "shape": shape, "size": size}


def test_named_words_are_the_size_colour_and_shape_of_matched_objects():
    from captioner.decoding import Caption
    from captioner.faithfulness import named_words

    centres = (np.arange(GRID) + 0.5) / GRID
    objects = [[scene_object([0, 0, 16, 16]), scene_object([16, 16, 32, 32], "blue", "circle",
                                                            "big")]]
    caption = Caption("a big blue circle and a small green square".split(), 0.0,
                      np.zeros((9, GRID, GRID)))
    words = named_words([caption], objects, centres, image_size=32)
    assert [w.position for w in words] == [1, 2, 3]  # the green square is not in the scene
    assert all(set(np.flatnonzero(w.cells)) == {10, 11, 14, 15} for w in words)


def test_causal_control_boxes_come_from_other_scenes():
    from captioner.faithfulness import causal_trials

    centres = (np.arange(GRID) + 0.5) / GRID
    objects = [[scene_object([0, 0, 8, 8])], [scene_object([24, 24, 32, 32])]]
    words = [NamedWord(0, 1, mask([0])), NamedWord(1, 1, mask([15]))]
    rng = np.random.default_rng(0)
    for _ in range(5):
        first, second = causal_trials(words, objects, centres, 32, rng)
        assert list(np.flatnonzero(first[2])) == [15] and list(np.flatnonzero(second[2])) == [0]
        assert first[0] is words[0].cells and not (first[1] & first[0]).any()
        assert not (second[3] & second[2]).any() and second[3].sum() == 1
    assert causal_trials(words[:1], objects[:1], centres, 32, rng) == [None]


def test_an_ensemble_of_two_copies_is_measured_as_the_model(make_model, tmp_path, capsys):
    """Interventions reach each member's own channels of the grid and keep each member's
    coordinates: for two copies of one model, occlusion and Grad-CAM give the model's maps (the
    ensemble's gradient is half the model's in each copy, over twice the channels)."""
    from dataclasses import replace

    from captioner.ensemble import Ensemble

    model, features, ids = planted(make_model, [[0, 1, 5], [2, 6]])
    twin = Ensemble(replace(model.config, members=2)).eval()
    for slot in twin.members:
        slot.load_state_dict(model.state_dict())
    joined = torch.cat([features, features], dim=2)
    masks = torch.from_numpy(np.stack([mask([0, 1, 5]), mask([2, 6])]))
    background = background_feature(model, features, masks)
    both = background_feature(twin, joined, masks)
    torch.testing.assert_close(both, torch.cat([background, background]))
    occ = occlusion(model, features, ids, background)
    assert occ.abs().max() > 1e-3  # removing a cell matters, so equality below means something
    torch.testing.assert_close(occlusion(twin, joined, ids, both), occ, atol=1e-5, rtol=1e-4)
    positions = torch.tensor([1, 2])
    cam = gradcam(model, features, ids, positions)
    assert cam.max() > 0
    torch.testing.assert_close(gradcam(twin, joined, ids, positions), cam, atol=1e-5, rtol=1e-4)
    # and `evaluate` runs the whole faithfulness block on an ensemble
    folder = twin.save(tmp_path / "twin")
    assert cli.main(["evaluate", "--weights", str(folder), "--data-dir", str(tmp_path),
                     "--num-scenes", "2", "--beam-size", "1", "--max-len", "5",
                     "--curve-words", "1"]) == 0
    assert "causal grounding" in capsys.readouterr().out
