"""Grounding and caption metrics on hand-made attention maps, boxes and captions whose answers
are worked out by hand: pointing game, ±1-cell widening, chance rate, pixel-centre convention."""

import numpy as np
import pytest

from captioner.decoding import Caption
from captioner.evaluation import caption_metrics, pointing_words, scene_metrics

SIZE, GRID = 32, 4
# Cell centres placed on pixel centres (pixel k covers [k, k+1), centre k + 0.5), so a one-hot
# map has a single peak pixel: cell c peaks at pixel 4 + 8c, whose centre is 4.5 + 8c.
CENTRES = (np.array([4, 12, 20, 28]) + 0.5) / SIZE


def one_hot(row: int, col: int) -> np.ndarray:
    attention = np.zeros((GRID, GRID))
    attention[row, col] = 1
    return attention


FAR = one_hot(0, 1)  # peak at pixel centre (12.5, 4.5): outside every box below, even widened


def caption(text: str, maps: dict[int, np.ndarray]) -> Caption:
    """A caption whose token i attends with maps[i] (FAR for the others)."""
    tokens = text.split()
    attention = np.stack([maps.get(i, FAR) for i in range(len(tokens))])
    return Caption(tokens=tokens, score=-1.0, attention=attention)


def obj(shape, color, size, box):
    return {"shape": shape, "color": color, "size": size, "box": box}


def play(cap, objects, tolerance, centres=CENTRES):
    """The pointing game's hits and chance rates, word by word."""
    words = pointing_words(cap, objects, SIZE, SIZE, centres, tolerance)
    return [w["hit"] for w in words], [w["chance"] for w in words]


def test_pointing_game_hits_inside_the_box_at_colour_and_shape_words():
    """One trial at the colour word and one at the shape word; the peak of each word's map is
    tested against the named object's box, and chance is the box's share of the image."""
    circle = obj("circle", "red", "small", [16, 8, 24, 16])
    # "red" peaks at pixel (20, 12), inside; "circle" at (28, 12), right of the box
    cap = caption("a small red circle", {2: one_hot(1, 2), 3: one_hot(1, 3)})
    hits, chance = play(cap, [circle], tolerance=0)
    assert hits == [True, False]
    assert chance == [64 / 1024] * 2


def test_pointing_tolerance_widens_the_box_and_is_clipped_to_the_image():
    """±8 px (one cell) turns the near miss into a hit; the widened box [8, 0, 32, 24] is
    clipped at the image border, and chance grows with it."""
    circle = obj("circle", "red", "small", [16, 8, 24, 16])
    cap = caption("a small red circle", {2: one_hot(1, 2), 3: one_hot(1, 3)})
    hits, chance = play(cap, [circle], tolerance=8)
    assert hits == [True, True]
    assert chance == [24 * 24 / 1024] * 2
    corner = obj("square", "blue", "big", [0, 0, 8, 8])
    _, chance = play(caption("a big blue square", {}), [corner], tolerance=8)
    assert chance == [16 * 16 / 1024] * 2  # [0, 0, 16, 16], not [-8, -8, 16, 16]


@pytest.mark.parametrize("x1, hit", [(20, False), (21, True)])
def test_pointing_uses_pixel_centres(x1, hit):
    """The peak pixel 20 spans [20, 21) and is judged by its centre 20.5: a box ending at
    x = 20 (exclusive) misses it, one ending at 21 holds it."""
    box = obj("circle", "red", "small", [10, 8, x1, 16])
    hits, _ = play(caption("a small red circle", {2: one_hot(1, 2), 3: one_hot(1, 2)}), [box], 0)
    assert hits == [hit, hit]


def test_pointing_peak_follows_the_given_cell_centres():
    """The same one-hot map is scored where `centres` put the cell: with ResNet-style centres
    shifted half a cell up-left, the peak of cell (1, 2) moves from pixel 20 to 16."""
    box = obj("circle", "red", "small", [17, 8, 24, 16])  # holds 20.5, not 16.5
    cap = caption("a small red circle", {2: one_hot(1, 2), 3: one_hot(1, 2)})
    assert play(cap, [box], 0)[0] == [True, True]
    shifted = (np.array([0, 8, 16, 24]) + 0.5) / SIZE
    assert play(cap, [box], 0, shifted)[0] == [False, False]


def test_unmatched_mentions_and_short_attention_give_no_trials():
    """A wrong object (no match) is not a pointing trial; nor is a word past the last map."""
    square = obj("square", "blue", "big", [8, 8, 24, 24])
    assert play(caption("a big red square", {}), [square], 8) == ([], [])
    cut = caption("a big blue square", {})
    cut.attention = cut.attention[:3]  # no map for "square"
    hits, _ = play(cut, [square], 8)
    assert len(hits) == 1


def test_scene_metrics_by_hand():
    """Five captions with known content, relation and pointing outcomes (worked out in the
    comments); `pointing` uses a one-cell tolerance (image_size / grid_size), `_strict` none."""
    circle = [obj("circle", "red", "small", [16, 8, 24, 16])]
    pair = [obj("square", "blue", "big", [0, 16, 8, 24]),
            obj("triangle", "green", "small", [24, 16, 32, 24])]
    captions = [
        # right; red: hit / hit, circle: strict miss / widened hit
        caption("a small red circle", {2: one_hot(1, 2), 3: one_hot(1, 3)}),
        # right, true relation; blue hit, square miss, green hit, triangle miss (both ways)
        caption("a big blue square to the left of a small green triangle",
                {2: one_hot(2, 0), 10: one_hot(2, 3), 11: one_hot(0, 3)}),
        # wrong colour: content wrong, no trials
        caption("a big red square", {}),
        # right objects, false relation; four misses
        caption("a big blue square to the right of a small green triangle", {}),
        # right objects, no relation stated; four misses
        caption("a big blue square and a small green triangle", {}),
    ]
    objects = [circle, pair, [obj("square", "blue", "big", [8, 8, 24, 24])], pair, pair]
    metrics = scene_metrics(captions, objects, SIZE, CENTRES, GRID)
    assert metrics == {
        "objects_correct": 0.8,  # 4 of 5
        "relations_correct": 0.5,  # of the 2 stated relations, 1 true
        "relations_stated": round(2 / 3, 4),  # 3 multi-object captions, 2 state one
        "pointing": round(4 / 14, 4),  # 2 + 2 + 0 + 0 hits of 14 trials
        "pointing_chance": round((2 * 576 + 12 * 384) / 1024 / 14, 4),
        "pointing_strict": round(3 / 14, 4),  # 1 + 2 + 0 + 0
        "pointing_strict_chance": 0.0625,  # every box is 8 x 8
        "pointing_trials": 14,
        "pointing_count": None,  # no caption counts
        "pointing_colour": round(3 / 7, 4),  # red, blue, green of 7 colour words
        "pointing_shape": round(1 / 7, 4),  # circle (widened) of 7 shape words
    }


def test_scene_metrics_without_trials_are_none_not_zero():
    metrics = scene_metrics([caption("a big red square", {})],
                            [[obj("square", "blue", "big", [8, 8, 24, 24])]], SIZE, CENTRES, GRID)
    assert metrics["pointing"] is None and metrics["pointing_trials"] == 0
    assert metrics["objects_correct"] == 0.0 and metrics["relations_stated"] is None


def test_caption_metrics_known_values():
    """Identical captions score 100 (after our tokeniser: case and punctuation ignored),
    disjoint ones 0, and a one-word substitution gives BLEU-1 = 2/3."""
    refs = [["a red circle on the left"], ["a blue square above a green triangle"]]
    same = caption_metrics(refs, ["A red circle, on the left.", "a blue square above a green "
                                  "triangle"], meteor=False)
    assert same["bleu1"] == same["bleu4"] == same["rouge_l"] == 100
    assert same["skipped"] == ["meteor: not requested"]
    disjoint = caption_metrics(refs, ["big yellow", "small purple"], meteor=False)
    assert disjoint["bleu1"] == disjoint["rouge_l"] == disjoint["cider"] == 0
    swapped = caption_metrics([["a red circle"]], ["a red square"], meteor=False)
    assert swapped["bleu1"] == pytest.approx(100 * 2 / 3, abs=0.01)
    assert 0 < same["cider"] and set(same) >= {"bleu2", "bleu3", "cider"}
