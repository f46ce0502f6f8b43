"""Grounding figures with objects listed in another order than the caption names them, and
boxes that are each other's mirror image (x <-> y): a pointing game that scored the i-th object,
or read the peak as (y, x), would count the wrong hits. Steering trials pick the named object
and the first object of another colour."""

import numpy as np
import pytest

from captioner.decoding import Caption, box_map
from captioner.evaluation import (
    objects_of,
    pointing_words,
    scene_metrics,
    steering_summary,
    steering_trials,
)

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
