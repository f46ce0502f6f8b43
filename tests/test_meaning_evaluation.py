"""Grounding figures with objects listed in another order than the caption names them, and
boxes that are each other's mirror image (x <-> y): a pointing game that scored the i-th object,
or read the peak as (y, x), would count the wrong hits. Steering trials pick the named object
and the first object of another colour."""

import numpy as np
import pytest

from captioner.decoding import Caption, box_map
from captioner.evaluation import (
    held_out_named,
    objects_of,
    pointing_words,
    scene_metrics,
    steering_summary,
    steering_trials,
)
from captioner.scenes.objects import MIN_VISIBLE

SIZE, GRID = 32, 4
CENTRES = (np.array([4, 12, 20, 28]) + 0.5) / SIZE  # cell c peaks at pixel centre 4.5 + 8c
RED_CIRCLE = {"shape": "circle", "color": "red", "size": "big", "box": [0, 16, 8, 24]}
BLUE_SQUARE = {"shape": "square", "color": "blue", "size": "small", "box": [16, 0, 24, 8]}
TEXT = "a small blue square to the right of a big red circle"


def one_hot(row, col):
    heat = np.zeros((GRID, GRID))
    heat[row, col] = 1
    return heat


def caption(text, maps):
    tokens = text.split()
    far = one_hot(3, 3)  # outside both boxes
    return Caption(tokens, -1.0, np.stack([maps.get(i, far) for i in range(len(tokens))]))


def test_each_word_is_judged_against_the_object_it_names():
    # "blue"/"square" (words 2, 3) look at the blue square (row 0, column 2); "red" (10) at
    # the red circle (row 2, column 0); "circle" (11) at the blue square: a miss
    cap = caption(TEXT, {2: one_hot(0, 2), 3: one_hot(0, 2), 10: one_hot(2, 0),
                         11: one_hot(0, 2)})
    words = pointing_words(cap, [RED_CIRCLE, BLUE_SQUARE], SIZE, SIZE, CENTRES, tolerance=0)
    assert [(w["word_index"], w["object"], w["hit"]) for w in words] == [
        (2, 1, True), (3, 1, True), (10, 0, True), (11, 0, False)]
    assert [w["chance"] for w in words] == [64 / 1024] * 4


def test_a_transposed_peak_misses():
    # the blue square's mirror cell (row 2, column 0) is the red circle's, not the square's
    cap = caption(TEXT, {2: one_hot(2, 0), 10: one_hot(0, 2)})
    words = pointing_words(cap, [RED_CIRCLE, BLUE_SQUARE], SIZE, SIZE, CENTRES, tolerance=0)
    assert [(w["word_index"], w["hit"]) for w in words] == [(2, False), (3, False), (10, False),
                                                           (11, False)]


def test_tolerance_widens_each_side_and_clips_at_the_image():
    box = {**BLUE_SQUARE, "box": [17, 1, 23, 7]}  # the peak (20.5, 4.5) inside; (28.5, 4.5) out
    cap = caption("a small blue square", {2: one_hot(0, 2), 3: one_hot(0, 3)})
    words = pointing_words(cap, [box], SIZE, SIZE, CENTRES, tolerance=6)
    assert [w["hit"] for w in words] == [True, True]  # x1 23 + 6 = 29 >= 28.5
    # widened to [11, 0, 29, 13]: y0 clipped at 0
    assert words[0]["chance"] == (29 - 11) * (13 - 0) / 1024
    words = pointing_words(cap, [box], SIZE, SIZE, CENTRES, tolerance=5)
    assert [w["hit"] for w in words] == [True, False]  # 28 < 28.5


def test_scene_metrics_count_relations_and_pointing_per_scene():
    right = caption(TEXT, {2: one_hot(0, 2), 3: one_hot(0, 2), 10: one_hot(2, 0),
                           11: one_hot(2, 0)})
    wrong_relation = caption("a small blue square to the left of a big red circle", {})
    single = caption("a big red circle", {2: one_hot(2, 0)})
    metrics = scene_metrics([right, wrong_relation, single],
                            [[RED_CIRCLE, BLUE_SQUARE], [BLUE_SQUARE, RED_CIRCLE], [RED_CIRCLE]],
                            SIZE, CENTRES, GRID)
    assert metrics["objects_correct"] == 1.0
    assert metrics["relations_correct"] == 0.5 and metrics["relations_stated"] == 1.0
    assert metrics["pointing_trials"] == 10
    assert metrics["pointing_strict"] == 0.5  # 4 + 0 + 1 of 10 (the single's "circle" misses)
    assert metrics["pointing"] >= metrics["pointing_strict"]


def test_steering_trial_takes_the_named_object_and_the_first_of_another_colour(tiny_model):
    blue_triangle = {"shape": "triangle", "color": "blue", "size": "big", "box": [8, 8, 16, 16]}
    objects = [blue_triangle, RED_CIRCLE, BLUE_SQUARE]  # the caption names the square first
    cap = caption("a small blue square", {})
    (trial,) = steering_trials(tiny_model, [cap], [objects], image_size=SIZE)
    assert (trial.image, trial.position, trial.expected) == (0, 2, "red")
    assert list(trial.guide.prefix) == ["a", "small"]
    centres = tiny_model.encoder.cell_centres()
    want = box_map(centres, [v / SIZE for v in RED_CIRCLE["box"]])
    assert np.array_equal(trial.guide.attention[2], want)


def test_no_trial_without_a_coloured_mention_or_a_second_colour(tiny_model):
    other_blue = {**RED_CIRCLE, "color": "blue"}
    captions = [caption("a small square", {}), caption("a small blue square", {}),
                caption("a small blue square", {})]
    trials = steering_trials(tiny_model, captions,
                             [[BLUE_SQUARE, RED_CIRCLE], [BLUE_SQUARE, other_blue],
                              [RED_CIRCLE, BLUE_SQUARE]], image_size=SIZE)
    assert [t.image for t in trials] == [2]


def test_steering_summary_is_the_share_said_beside_one_in_five():
    assert steering_summary([True, False, True, True]) == {
        "steering": 0.75, "steering_chance": 0.2, "steering_trials": 4}
    assert steering_summary([]) == {"steering": None, "steering_chance": 0.2,
                                    "steering_trials": 0}


@pytest.mark.parametrize("stored", ['[{"shape": "circle"}]', [{"shape": "circle"}]])
def test_objects_are_read_from_json_text_or_a_list(stored):
    assert objects_of(stored) == [{"shape": "circle"}]


# --- the evaluate command's own functions, against captions decoded one image at a time ---

@pytest.fixture(scope="module")
def scene_splits(tmp_path_factory):
    """Six scenes-v2 test scenes at the bundled model's 128 px, and six held-out ones."""
    from captioner.data import load_caption_dataset
    from captioner.scenes import generate_scenes

    root = tmp_path_factory.mktemp("eval-scenes")
    common = dict(num_train=2, num_validation=2, num_test=6, image_size=128, seed=3,
                  progress=False, world="scenes-v2")
    test = load_caption_dataset(generate_scenes(root / "plain", **common))["test"]
    held = load_caption_dataset(generate_scenes(root / "held", **common, held_out=True))["test"]
    return test, held


@pytest.fixture(scope="module")
def v2_model():
    """The bundled scenes-v2 model: real captions that differ from scene to scene, name
    objects (pointing trials) and colours (steering trials)."""
    from captioner.hub import BUNDLED_WEIGHTS, load_model

    return load_model(BUNDLED_WEIGHTS)


def images_to_batch_of(model, row):
    """One dataset row as the model's input batch of one."""
    from captioner.decoding import images_to_batch
    from captioner.preprocess import to_rgb

    return images_to_batch(model, [to_rgb(row["image"])])


def one_by_one(model, split, beam_size, max_len=20):
    """Each image captioned on its own: no batching, no cache."""
    from captioner.decoding import decode

    return [decode(model, model.encode(images_to_batch_of(model, row)), beam_size=beam_size,
                   max_len=max_len)[0] for row in split]


def test_evaluate_scores_the_captions_of_every_image_in_batches_or_from_a_cache(
        scene_splits, v2_model):
    from captioner.evaluation import caption_metrics, evaluate_split, steering_for_split

    split, _ = scene_splits
    captions = one_by_one(v2_model, split, 1)
    texts = [c.text for c in captions]
    objects = [objects_of(o) for o in split["objects"]]
    got = evaluate_split(v2_model, split, beam_size=1, max_len=20, batch_size=4, meteor=False)
    want = caption_metrics(split["captions"], texts, meteor=False)
    want.update(scene_metrics(captions, objects, 128, v2_model.encoder.cell_centres(), 16))
    want.update(steering_for_split(v2_model, split, captions, objects, batch_size=6))
    want["examples"] = [{"caption": t, "references": r[:2]}
                        for t, r in zip(texts[:5], split["captions"][:5])]
    assert got == want
    assert got["steering_chance"] == 1 / 8  # scenes-v2's eight colours
    assert len(set(texts)) == 6 and got["pointing_trials"] > 0 and got["steering_trials"] > 0

    features = np.stack([v2_model.encode(images_to_batch_of(v2_model, row)).detach().numpy()[0]
                         for row in split])
    cached = evaluate_split(v2_model, split, beam_size=1, max_len=20, batch_size=4,
                            features=features, meteor=False)
    assert cached == got


def test_per_epoch_validation_is_bleu_and_scenes_only_and_beams_are_not_steered(scene_splits,
                                                                                v2_model):
    from captioner.evaluation import bleu4, evaluate_split

    split, _ = scene_splits
    quick = evaluate_split(v2_model, split, beam_size=1, max_len=20, full=False)
    assert quick["bleu4"] == bleu4(split["captions"], [c.text for c in one_by_one(
        v2_model, split, 1)])
    assert "cider" not in quick and "steering" not in quick and "pointing" in quick
    beams = evaluate_split(v2_model, split, beam_size=2, max_len=20, meteor=False)
    assert "steering" not in beams
    assert [e["caption"] for e in beams["examples"]] == [
        c.text for c in one_by_one(v2_model, split, 2)[:5]]


def test_held_out_figures_are_those_of_the_held_out_scenes_own_captions(scene_splits, v2_model):
    from captioner.evaluation import bleu4, compositional_metrics, held_out_named
    from captioner.scenes.worlds import V2

    _, held = scene_splits
    captions = one_by_one(v2_model, held, 1)
    objects = [objects_of(o) for o in held["objects"]]
    got = compositional_metrics(v2_model, held, beam_size=1, max_len=20, batch_size=4)
    assert got["bleu4"] == bleu4(held["captions"], [c.text for c in captions])
    assert got["held_out_named"] == held_out_named(captions, objects, set(V2.held_out_pairs))
    assert 0 < got["held_out_named"]  # some held-out objects named: a real figure
    scenes = scene_metrics(captions, objects, 128, v2_model.encoder.cell_centres(), 16)
    keys = ("objects_correct", "pointing", "pointing_strict", "pointing_trials")
    assert [got[k] for k in keys] == [scenes[k] for k in keys]
    assert got["examples"][0] == {"caption": captions[0].text,
                                  "references": held["captions"][0][:2]}


def test_held_out_named_counts_only_mostly_visible_objects_of_the_pairs():
    star = {"shape": "star", "color": "red", "size": "small", "box": [0, 0, 8, 8],
            "visible": 1.0}
    hidden = {**star, "box": [20, 20, 28, 28], "visible": 0.2}
    circle = {"shape": "circle", "color": "blue", "size": "big", "box": [16, 0, 30, 14]}
    named = caption("a small red star and a big blue circle", {})
    missed = caption("a big blue circle", {})
    pairs = {("red", "star")}
    assert held_out_named([named], [[circle, star, hidden]], pairs) == 1.0
    assert held_out_named([missed], [[circle, star, hidden]], pairs) == 0.0
    assert held_out_named([named, missed], [[circle, star], [star, circle]], pairs) == 0.5
    assert held_out_named([named], [[circle]], pairs) is None


def test_bleu4_is_the_fourth_bleu_of_the_full_metrics():
    from captioner.evaluation import bleu4, caption_metrics

    refs = [["a big red circle above a small blue square", "a big red circle"],
            ["two small green stars", "there are two small green stars"]]
    hyps = ["a big red circle below a small blue square", "two small green stars"]
    full = caption_metrics(refs, hyps, meteor=False)
    assert bleu4(refs, hyps) == full["bleu4"] != full["bleu3"]
    assert bleu4([["a red circle on the left"]], ["a red circle on the left"]) == 100.0


@pytest.mark.parametrize("found, code, expected", [(None, 0, False), ("/opt/java", 1, False),
                                                   ("/opt/java", 0, True)])
def test_java_counts_only_when_it_is_found_and_runs(monkeypatch, found, code, expected):
    import subprocess

    from captioner import evaluation

    ran = []
    monkeypatch.setattr(evaluation.shutil, "which", lambda name: found if name == "java" else None)
    monkeypatch.setattr(evaluation.subprocess, "run", lambda args, **kw: ran.append(args) or
                        subprocess.CompletedProcess(args, code))
    assert evaluation.java_available() is expected
    assert ran == ([] if found is None else [["java", "-version"]])


def test_box_union_share_counts_overlaps_once_on_a_wide_image():
    from captioner.evaluation import box_union_share

    assert box_union_share([(0, 0, 5, 2)], 10, 4) == 5 * 2 / 40
    assert box_union_share([(0, 0, 5, 4), (3, 0, 8, 4)], 10, 4) == 0.8  # columns 0-7
    assert box_union_share([(0, 0, 10, 1), (0, 0, 1, 4)], 10, 4) == pytest.approx(13 / 40)


# --- metrics by value: METEOR's branch, the skip messages, quiet scorers, visibility edges ---

REFS = [["a big red circle above a small blue square", "a big red circle"],
        ["two small green stars", "there are two small green stars"]]
HYPS = ["a big red circle below a small blue square", "two small green stars"]


class FakeMeteor:
    """Stands in for pycocoevalcap's Java METEOR: records what it was given."""

    seen = []

    def compute_score(self, refs, hyps):
        FakeMeteor.seen.append((refs, hyps))
        return 0.375, [0.5, 0.25]


def test_meteor_runs_with_java_on_the_same_tokenised_captions(monkeypatch):
    from pycocoevalcap.meteor import meteor as meteor_module

    from captioner import evaluation

    monkeypatch.setattr(evaluation, "java_available", lambda: True)
    monkeypatch.setattr(meteor_module, "Meteor", FakeMeteor)
    FakeMeteor.seen.clear()
    scores = evaluation.caption_metrics(REFS, HYPS)
    assert scores["meteor"] == 37.5 and "skipped" not in scores
    assert FakeMeteor.seen == [evaluation.coco_format(REFS, HYPS)]


def test_without_java_meteor_is_skipped_by_default_and_says_why(monkeypatch, scene_splits,
                                                               v2_model):
    from captioner import evaluation

    monkeypatch.setattr(evaluation, "java_available", lambda: False)
    assert evaluation.caption_metrics(REFS, HYPS)["skipped"] == [
        "meteor: needs Java, which is not installed"]
    assert evaluation.caption_metrics(REFS, HYPS, meteor=False)["skipped"] == [
        "meteor: not requested"]
    split, _ = scene_splits
    assert evaluation.evaluate_split(v2_model, split.select(range(2)), beam_size=2,
                                     max_len=20)["skipped"] == [
        "meteor: needs Java, which is not installed"]


def test_scorers_print_nothing_and_cider_is_on_the_0_to_100_scale(capsys):
    from pycocoevalcap.cider.cider import Cider

    from captioner.evaluation import bleu4, caption_metrics, coco_format

    scores = caption_metrics(REFS, HYPS, meteor=False)
    bleu4(REFS, HYPS)
    assert capsys.readouterr().out == ""
    assert scores["cider"] == round(100 * Cider().compute_score(*coco_format(REFS, HYPS))[0], 2)


def test_java_is_asked_its_version_quietly(monkeypatch):
    import subprocess

    from captioner import evaluation

    calls = []
    monkeypatch.setattr(evaluation.shutil, "which", lambda name: "/opt/java")
    monkeypatch.setattr(evaluation.subprocess, "run", lambda args, **kw: calls.append(kw) or
                        subprocess.CompletedProcess(args, 0))
    assert evaluation.java_available() and calls == [{"capture_output": True}]


def test_visibility_edges_for_held_out_objects_and_steering_targets(tiny_model):
    star = {"shape": "star", "color": "red", "size": "small", "box": [0, 0, 8, 8]}  # no
    # "visible": an old-world object, whole
    half = {**star, "box": [20, 20, 28, 28], "visible": MIN_VISIBLE}  # exactly mostly visible
    circle = {"shape": "circle", "color": "blue", "size": "big", "box": [16, 0, 30, 14]}
    named = caption("a small red star and a big blue circle", {})
    assert held_out_named([named], [[circle, star]], {("red", "star")}) == 1.0
    assert held_out_named([named, named], [[circle, star], [circle, star, half]],
                          {("red", "star")}) == round(2 / 3, 4)
    hidden_green = {**RED_CIRCLE, "color": "green", "visible": 0.2}
    edge_yellow = {**RED_CIRCLE, "color": "yellow", "visible": MIN_VISIBLE}
    (trial,) = steering_trials(tiny_model, [caption("a small blue square", {})],
                               [[BLUE_SQUARE, hidden_green, edge_yellow]], image_size=SIZE)
    assert trial.expected == "yellow"


def test_summaries_keep_four_decimals():
    assert steering_summary([True, False, False], colours=7) == {
        "steering": 0.3333, "steering_chance": 0.1429, "steering_trials": 3}


def test_box_union_share_counts_pixel_centres_on_the_edges():
    from captioner.evaluation import box_union_share

    # centres 0.5..2.5 x 0.5..1.5 (edges included: 6 pixels) and column 5.5 (4 pixels)
    assert box_union_share([(0.5, 0.5, 2.5, 1.5), (5.5, 0, 5.5, 4)], 10, 4) == 10 / 40


def test_pointing_is_split_by_the_kind_of_word():
    """A count word on one circle and the shape word on the other both hit; every colour word
    looks far away: count 1 of 1, colour 0 of 2, shape 1 of 2, whole 2 of 5."""
    left = {"shape": "circle", "color": "red", "size": "big", "box": [8, 8, 16, 16]}
    right = {**left, "box": [16, 8, 24, 16]}
    counted = caption("two big red circles", {0: one_hot(1, 1), 3: one_hot(1, 2)})
    square = {**BLUE_SQUARE, "box": [0, 0, 8, 8]}
    single = caption("a small blue square", {})
    metrics = scene_metrics([counted, single], [[left, right], [square]], SIZE, CENTRES, GRID)
    words = pointing_words(counted, [left, right], SIZE, SIZE, CENTRES, 8)
    assert [w["kind"] for w in words] == ["count", "colour", "shape"]
    assert (words[0]["peak"], words[2]["peak"]) == ((12.5, 12.5), (20.5, 12.5))  # (x, y)
    assert (metrics["pointing_count"], metrics["pointing_colour"],
            metrics["pointing_shape"], metrics["pointing"]) == (1.0, 0.0, 0.5, 0.4)


def test_a_word_naming_nothing_in_the_scene_does_not_end_the_pointing_game():
    missing = caption("a big green star and a small blue square", {7: one_hot(0, 2)})
    words = pointing_words(missing, [RED_CIRCLE, BLUE_SQUARE], SIZE, SIZE, CENTRES, 0)
    assert [w["word_index"] for w in words] == [7, 8] and words[0]["hit"]


def test_a_peak_on_the_last_pixel_row_of_a_box_hits():
    """The peak's pixel centre y + 0.5 against the box, not the next row's."""
    low_square = {**BLUE_SQUARE, "box": [16, 0, 24, 13]}  # rows 0-12; the peak is at row 12
    cap = caption("a small blue square", {2: one_hot(1, 2), 3: one_hot(1, 2)})
    assert [w["hit"] for w in pointing_words(cap, [low_square], SIZE, SIZE, CENTRES, 0)] == [
        True, True]


def test_scene_pointing_reads_peaks_at_the_given_cell_centres():
    """Cells centred left of the middle of each quarter (as a strided encoder puts them):
    the peak of cell (1, 1) lands at pixel 9.6, inside a box that ends where the middle of
    the quarter (pixel 12) would begin."""
    small = {**RED_CIRCLE, "box": [8, 8, 11, 11]}
    centres = np.array([0.05, 0.3, 0.55, 0.8])
    cap = caption("a big red circle", {2: one_hot(1, 1), 3: one_hot(1, 1)})
    assert scene_metrics([cap], [[small]], SIZE, centres, GRID)["pointing_strict"] == 1.0


def test_cached_features_are_served_in_batches_on_the_models_device(tiny_model):
    """Checked on torch's "meta" device (no GPU here): a cache read from disk must follow the
    model, or the first batch fails on a GPU."""
    from captioner.evaluation import split_features

    model = tiny_model.to("meta")
    cache = np.arange(5 * 2 * 3, dtype=np.float32).reshape(5, 2, 3)
    batches = list(split_features(model, [None] * 5, batch_size=2, features=cache))
    assert [start for start, _ in batches] == [0, 2, 4]
    assert [tuple(b.shape) for _, b in batches] == [(2, 2, 3), (2, 2, 3), (1, 2, 3)]
    assert {b.device.type for _, b in batches} == {"meta"}
