"""The procedural scenes dataset: rendering, captions, parsing, checking, writing to disk."""

import hashlib
import json
import re
import sys
from itertools import combinations

import numpy as np
import pytest

import captioner.scenes.dataset as scenes_dataset
from captioner.scenes import (
    COLORS,
    RELATIONS,
    SHAPES,
    SIZES,
    Scene,
    SceneObject,
    caption_correctness,
    caption_mistakes,
    generate_scenes,
    match_mentions,
    parse_caption,
    relation_between,
    render_scene,
    scene_rng,
)


@pytest.fixture(scope="module")
def scenes() -> list[Scene]:
    return [render_scene(scene_rng(0, "train", i)) for i in range(300)]


def _true_relation(a: SceneObject, b: SceneObject) -> str:
    """Independent restatement of the rule: larger centre separation decides the axis."""
    ax, ay = (a.box[0] + a.box[2]) / 2, (a.box[1] + a.box[3]) / 2
    bx, by = (b.box[0] + b.box[2]) / 2, (b.box[1] + b.box[3]) / 2
    if abs(ax - bx) >= abs(ay - by):
        return "to the left of" if ax < bx else "to the right of"
    return "above" if ay < by else "below"


def test_constants():
    assert set(SHAPES) == {"circle", "square", "triangle"}
    assert set(SIZES) == {"small", "big"}
    assert set(RELATIONS) == {"to the left of", "to the right of", "above", "below"}
    assert 4 <= len(COLORS) <= 6
    rgb = list(COLORS.values())
    # Colours far apart from each other.
    assert min(np.abs(np.subtract(a, b)).sum() for a, b in combinations(rgb, 2)) > 100


def test_render_is_deterministic():
    a = render_scene(np.random.default_rng(7))
    b = render_scene(np.random.default_rng(7))
    c = render_scene(np.random.default_rng(8))
    assert a.image.tobytes() == b.image.tobytes()
    assert a.captions == b.captions and a.objects == b.objects
    assert a.image.tobytes() != c.image.tobytes()


def test_scene_structure(scenes):
    counts = set()
    for scene in scenes:
        assert scene.image.mode == "RGB" and scene.image.size == (64, 64)
        counts.add(len(scene.objects))
        kinds = [(o.size, o.color, o.shape) for o in scene.objects]
        assert len(set(kinds)) == len(kinds)
        for o in scene.objects:
            assert o.shape in SHAPES and o.color in COLORS and o.size in SIZES
            x0, y0, x1, y1 = o.box
            assert all(isinstance(v, int) for v in o.box)
            assert 0 <= x0 < x1 <= 64 and 0 <= y0 < y1 <= 64
            width = x1 - x0
            assert width >= 16, "objects must span at least 2 cells of an 8x8 grid"
            assert (14 <= width <= 18) if o.size == "small" else (24 <= width <= 30)
            # The object is really drawn: its centre pixel has its colour.
            centre = scene.image.getpixel(((x0 + x1) // 2, (y0 + y1) // 2))
            assert np.abs(np.subtract(centre, COLORS[o.color])).max() <= 40
        for a, b in combinations(scene.objects, 2):
            separated = (
                a.box[2] <= b.box[0] or b.box[2] <= a.box[0]
                or a.box[3] <= b.box[1] or b.box[3] <= a.box[1]
            )
            assert separated, (a.box, b.box)
    assert counts == {1, 2, 3}


def test_sizes_scale_with_image_size():
    scene = render_scene(np.random.default_rng(3), image_size=128)
    assert scene.image.size == (128, 128)
    for o in scene.objects:
        assert o.box[2] - o.box[0] >= 32


def test_captions_are_true_and_parse_back(scenes):
    relations_checked = multi_object_scenes = 0
    for scene in scenes:
        assert len(scene.captions) == 5 and len(set(scene.captions)) == 5
        for caption in scene.captions:
            assert re.fullmatch(r"[a-z]+( [a-z]+)*", caption), caption
            result = caption_correctness(caption, scene.objects)
            assert result["objects_correct"], (caption, scene.objects)
            assert result["relations_correct"] in (True, None), (caption, scene.objects)
            # Independent check of every stated relation.
            parsed = result["parsed"]
            for i, rel, j in parsed.relations:
                a, b = scene.objects[result["matches"][i]], scene.objects[result["matches"][j]]
                assert _true_relation(a, b) == rel
                relations_checked += 1
        canonical = caption_correctness(scene.captions[0], scene.objects)
        if len(scene.objects) > 1:
            multi_object_scenes += 1
            assert canonical["relations_correct"] is True
            assert len(canonical["parsed"].relations) == len(scene.objects) - 1
            # Canonical order is left to right.
            xs = [scene.objects[k].center[0] for k in canonical["matches"]]
            assert xs == sorted(xs)
        # Metadata-style dicts work too.
        as_dicts = [o.to_dict() for o in scene.objects]
        assert caption_correctness(scene.captions[0], as_dicts)["objects_correct"]
    # the checks inside the loops above ran, many times
    assert multi_object_scenes > 50 and relations_checked > 100


def test_parse_caption_indices_and_back_references():
    text = (
        "a big red circle to the left of a small blue square "
        "and a green triangle above the small blue square"
    )
    parsed = parse_caption(text)
    assert [(m.size, m.color, m.shape) for m in parsed.mentions] == [
        ("big", "red", "circle"),
        ("small", "blue", "square"),
        (None, "green", "triangle"),
    ]
    tokens = text.split()
    for m in parsed.mentions:
        assert tokens[m.shape_index] == m.shape
        assert tokens[m.color_index] == m.color
    assert parsed.relations == [(0, "to the left of", 1), (2, "above", 1)]
    # Token lists (e.g. model output with special tokens) keep their indices.
    parsed = parse_caption(["<start>", "a", "big", "red", "circle", "<end>"])
    assert parsed.mentions[0].color_index == 3 and parsed.mentions[0].shape_index == 4


def test_caption_correctness_detects_errors():
    left = SceneObject("circle", "red", "big", [2, 20, 30, 48])
    right = SceneObject("square", "blue", "small", [40, 24, 56, 40])
    objs = [left, right]
    ok = caption_correctness("a big red circle to the left of a small blue square", objs)
    assert ok["objects_correct"] and ok["relations_correct"] is True
    assert ok["matches"] == [0, 1]
    wrong_rel = caption_correctness("a big red circle above a small blue square", objs)
    assert wrong_rel["objects_correct"] and wrong_rel["relations_correct"] is False
    missing = caption_correctness("a big red circle", objs)
    assert not missing["objects_correct"] and missing["relations_correct"] is None
    extra = caption_correctness("a big red circle and a big red circle a small blue square", objs)
    assert not extra["objects_correct"]
    wrong_size = caption_correctness("a small red circle and a small blue square", objs)
    assert not wrong_size["objects_correct"]
    assert match_mentions("a small blue square and a purple circle", objs) == [1, None]
    unmatched = caption_correctness("a purple triangle below a small blue square", objs)
    assert unmatched["relations_correct"] is False
    assert relation_between(left, right) == "to the left of"
    assert relation_between(right, left) == "to the right of"


def test_caption_mistakes_names_each_kind_of_error():
    box = [0, 0, 8, 8]
    scene = [SceneObject("circle", "red", "big", box), SceneObject("square", "blue", "small", box),
             SceneObject("star", "green", "tiny", box),
             SceneObject("triangle", "yellow", "tiny", box),
             SceneObject("triangle", "yellow", "tiny", box),
             SceneObject("hexagon", "pink", "small", box, visible=0.2)]  # hidden: never named
    right = ("a big red circle and a small blue square and a tiny green star and "
             "two tiny yellow triangles")

    def mistakes(old, new, objs=scene):
        assert old in right
        return dict(caption_mistakes(right.replace(old, new), objs))

    assert caption_mistakes(right, scene) == {}
    assert mistakes("big red circle", "big red square") == {"shape borrowed": 1}
    assert mistakes("big red circle", "big red diamond") == {"shape": 1}
    assert mistakes("big red circle", "big red hexagon") == {"shape": 1}  # only the hidden one's
    assert mistakes("big red circle", "big green circle") == {"colour borrowed": 1}
    assert mistakes("big red circle", "big orange circle") == {"colour": 1}
    assert mistakes("big red circle", "small red circle") == {"size borrowed": 1}
    assert mistakes("small blue square", "big blue square") == {"size borrowed": 1}
    two = scene[:2]
    assert dict(caption_mistakes("a tiny red circle and a small blue square", two)) == {"size": 1}
    assert mistakes("two tiny yellow", "three tiny yellow") == {"count too high": 1}
    assert mistakes("two tiny yellow triangles", "a tiny yellow triangle") == {"count too low": 1}
    assert mistakes(" and a tiny green star", "") == {"left out": 1}
    assert mistakes("big red circle", "big red circle and a big cyan diamond") == {"made up": 1}
    assert mistakes("big red circle", "big red circle and a small pink hexagon") == {"made up": 1}
    assert mistakes("big red circle", "big cyan diamond") == {"left out": 1, "made up": 1}
    # a caption that leaves a size out (None beside sizes): the size is wrong, no object lacks one
    assert mistakes("a big red circle and a small blue square",
                    "a red circle and a small blue diamond") == {"size": 1, "shape": 1}


@pytest.mark.parametrize(
    "garbage",
    [
        "",
        "   ",
        "the the the",
        "above below to the left of",
        "big red",
        "circle circle circle",
        "a red circle above",
        "above a red circle",
        "the big red circle",
        "a big red circle above the big red circle",
        "<unk> <pad> 123 ??? ...",
        "A BIG RED CIRCLE, TO THE LEFT OF A small Blue Square.",
        "ünïcödé 🤖 circle",
        ["a", "big", None, "circle"],
        [],
        None,
        42,
    ],
)
def test_parse_caption_survives_garbage(garbage):
    parsed = parse_caption(garbage)
    result = caption_correctness(garbage, [SceneObject("circle", "red", "big", [0, 0, 20, 20])])
    assert isinstance(result["objects_correct"], bool)
    assert result["relations_correct"] in (True, False, None)
    for i, _, j in parsed.relations:
        assert 0 <= i < len(parsed.mentions) and 0 <= j < len(parsed.mentions)


def test_parse_caption_tolerates_case_and_punctuation():
    result = caption_correctness(
        "A BIG RED CIRCLE, TO THE LEFT OF A small Blue Square.",
        [
            SceneObject("circle", "red", "big", [2, 20, 30, 48]),
            SceneObject("square", "blue", "small", [40, 24, 56, 40]),
        ],
    )
    assert result["objects_correct"] and result["relations_correct"] is True


def _digest(folder):
    h = hashlib.sha256()
    for path in sorted(p for p in folder.rglob("*") if p.is_file()):
        h.update(str(path.relative_to(folder)).encode())
        h.update(path.read_bytes())
    return h.hexdigest()


def test_generate_scenes_layout_determinism_and_reuse(tmp_path):
    kwargs = dict(num_train=12, num_validation=3, num_test=4, seed=1, progress=False)
    out = generate_scenes(tmp_path / "a", **kwargs)
    assert out == tmp_path / "a"
    for split, n in [("train", 12), ("validation", 3), ("test", 4)]:
        lines = (out / split / "metadata.jsonl").read_text().splitlines()
        assert len(lines) == n
        records = [json.loads(line) for line in lines]
        assert all((out / split / r["file_name"]).is_file() for r in records)
        assert all(len(r["captions"]) == 5 and r["objects"] for r in records)
    assert json.loads((out / "scenes.json").read_text())["seed"] == 1
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")]  # temp dirs gone

    # Reused when complete: nothing is rewritten.
    mtime = (out / "train" / "metadata.jsonl").stat().st_mtime_ns
    generate_scenes(out, **kwargs)
    assert (out / "train" / "metadata.jsonl").stat().st_mtime_ns == mtime

    # Byte-identical elsewhere; a different seed differs; splits don't share images.
    same = generate_scenes(tmp_path / "b", **kwargs)
    assert _digest(same) == _digest(out)
    other = generate_scenes(tmp_path / "c", **{**kwargs, "seed": 2})
    assert _digest(other) != _digest(out)
    train = {(out / "train" / f).read_bytes() for f in ("00000.png", "00001.png", "00002.png")}
    test = {(out / "test" / f).read_bytes() for f in ("00000.png", "00001.png", "00002.png")}
    assert not train & test

    # Different parameters regenerate in place; an incomplete dataset is regenerated.
    generate_scenes(out, **{**kwargs, "num_train": 5})
    assert len((out / "train" / "metadata.jsonl").read_text().splitlines()) == 5
    (out / "test" / "metadata.jsonl").write_text("")
    generate_scenes(out, **{**kwargs, "num_train": 5})
    assert len((out / "test" / "metadata.jsonl").read_text().splitlines()) == 4


def test_a_process_pool_draws_the_same_files_in_the_same_order(tmp_path, monkeypatch):
    """Chunks drawn by several processes are written back in index order: metadata.jsonl
    and every PNG are byte-identical to a single process's, for both worlds."""
    monkeypatch.setattr(scenes_dataset, "CHUNK", 3)  # 10 images -> 4 chunks, the last short
    for world in ("scenes-v1", "scenes-v2"):
        kwargs = dict(num_train=10, num_validation=2, num_test=2, seed=3, progress=False,
                      world=world)
        one = generate_scenes(tmp_path / f"{world}-one", **kwargs, workers=1)
        pool = generate_scenes(tmp_path / f"{world}-pool", **kwargs, workers=2)
        assert _digest(pool) == _digest(one)
        names = [json.loads(line)["file_name"] for line in
                 (pool / "train" / "metadata.jsonl").read_text().splitlines()]
        assert names == [f"{i:05d}.png" for i in range(10)]
    assert scenes_dataset.default_workers(1500) == 1  # no pool for a small dataset
    # a script read from stdin cannot be re-imported by spawned workers: drawn in-process
    main = sys.modules["__main__"]
    monkeypatch.setattr(main, "__spec__", None, raising=False)  # as `python -` leaves them
    monkeypatch.setattr(main, "__file__", str(tmp_path / "<stdin>"), raising=False)
    kwargs = dict(num_train=10, num_validation=2, num_test=2, seed=3, progress=False)
    stdin = generate_scenes(tmp_path / "stdin", **kwargs, workers=2)
    assert _digest(stdin) == _digest(tmp_path / "scenes-v1-one")


def test_generate_scenes_refuses_foreign_folder(tmp_path):
    (tmp_path / "mine.txt").write_text("precious")
    with pytest.raises(FileExistsError):
        generate_scenes(tmp_path, num_train=2, num_validation=1, num_test=1, progress=False)
    assert (tmp_path / "mine.txt").read_text() == "precious"


def test_generated_scenes_load_with_load_caption_dataset(tmp_path, monkeypatch):
    import datasets

    from captioner.data import load_caption_dataset

    monkeypatch.setattr(datasets.config, "HF_DATASETS_CACHE", tmp_path / "hf-cache")

    out = generate_scenes(
        tmp_path / "scenes", num_train=10, num_validation=3, num_test=4, progress=False
    )
    ds = load_caption_dataset(out)
    assert {k: len(v) for k, v in ds.items()} == {"train": 10, "validation": 3, "test": 4}
    assert ds["train"].column_names == ["image", "captions", "objects"]
    row = ds["test"][2]
    assert row["image"].size == (64, 64)
    record = json.loads((out / "test" / "metadata.jsonl").read_text().splitlines()[2])
    assert row["captions"] == record["captions"] and row["objects"] == record["objects"]
    assert caption_correctness(row["captions"][0], row["objects"])["objects_correct"]
