"""What the explorer page relies on, without a browser: no special tokens offered, defaults
that never cut the model's own captions, the composer's starting objects, the shareable link's
fields, which pictures a link may name, and page handlers that fail with a message."""

import numpy as np
import pytest

import app as app_module
from captioner import lab
from captioner.decoding import caption_images
from captioner.demo import DEFAULT_MAX_LEN, Demo, Look
from captioner.demo.core import first_content_word
from captioner.demo.link import open_link, parse_link
from captioner.hub import BUNDLED_WEIGHTS
from captioner.lab import COMPOSE_DEFAULTS, POSITION_RANGE
from captioner.scenes import SIZE_RANGES, get_world, objects_from_specs, render_scene
from captioner.vocab import SPECIALS


@pytest.fixture(scope="module")
def bundled() -> Demo:
    return Demo.load(str(BUNDLED_WEIGHTS), device="cpu")


def test_special_tokens_are_never_offered_as_alternatives(bundled):
    """The decoder's own top words do include <end> (at the caption's last words); the page's
    alternatives leave it out and keep the other words in their order."""
    image = render_scene(np.random.default_rng(20261125), 256).image
    raw = caption_images(bundled.model, [image], beam_size=1, top_k=5)[0]
    assert any(w in SPECIALS for ranked in raw.alternatives for w, _ in ranked)  # the case exists
    shown = bundled._view(bundled.caption(image, 1, DEFAULT_MAX_LEN)).explorer["alternatives"]
    for ranked, offered in zip(raw.alternatives, shown, strict=True):
        assert [o["word"] for o in offered] == [w for w, _ in ranked if w not in SPECIALS]


def test_the_default_length_never_cuts_the_models_own_lab_captions(bundled):
    """The model's three-object captions have 20 words: the old 20-word limit left no room for
    their end (a cut caption); at the default they are whole. A cut caption is never right."""
    long = []
    for seed in range(60):
        scene = lab.new_scene(bundled.model, seed, beam_size=1)
        assert not scene.caption.truncated, (seed, scene.caption.text)
        if len(scene.caption.tokens) >= 20:
            long.append(seed)
    assert long, "no caption of 20 words or more: the check proves nothing"
    cut = lab.new_scene(bundled.model, long[0], beam_size=1, max_len=20)
    assert cut.caption.truncated and not cut.objects_correct
    _, view, truth = bundled.new_scene(long[0], 1, 20)
    assert "cut at the maximum length" in truth and "content: right" not in truth


def test_the_composers_starting_objects_make_a_scene(bundled):
    world = bundled.lab_options()["world"]
    specs = [{"shape": s, "color": c, "size": z, "position": (x, y)}
             for s, c, z, x, y in COMPOSE_DEFAULTS[world] if s != "none"]
    picture, view, truth = bundled.compose(specs, 1)
    assert len(view.explorer["lab"]["objects"]) == len(specs) >= 2
    if world == "scenes-v2":  # they show counting: "two ..." names two objects
        assert any(len(w["objects"]) == 2 for w in view.explorer["lab"]["words"]), view.caption


@pytest.mark.parametrize("world", ["scenes-v1", "scenes-v2"])
def test_the_composer_has_a_row_per_object_of_its_world_and_all_rows_fit(world):
    """One row per object the world allows, offering only its attributes; switched on, the
    row left at "none" fits with the others too."""
    spec = get_world(world)
    rows = COMPOSE_DEFAULTS[world]
    assert len(rows) == spec.max_objects
    low, high = POSITION_RANGE
    for shape, colour, size, x, y in rows:
        assert shape in ("none", *spec.shapes) and colour in spec.colors and size in spec.sizes
        assert low <= x <= high and low <= y <= high
    everything = [{"shape": spec.shapes[0] if s == "none" else s, "color": c, "size": z,
                   "position": (x, y)} for s, c, z, x, y in rows]
    assert len(spec.objects_from_specs(everything, spec.image_size)) == spec.max_objects


@pytest.mark.parametrize("x, y", [(0.25, 0.25), (0.75, 0.25), (0.25, 0.75), (0.75, 0.75)])
def test_every_position_the_sliders_offer_fits_a_big_object(x, y):
    low, high = POSITION_RANGE
    assert (low, high) == (min(low, x), max(high, x))  # the corners of the range
    assert objects_from_specs([{"shape": "square", "color": "red", "size": "big",
                                "position": (x, y)}], 64)
    assert max(SIZE_RANGES["big"]) / 2 <= low  # the widest big object too


def test_the_explorer_opens_on_the_first_content_word():
    assert first_content_word("a big green circle".split()) == 2
    assert first_content_word("there is a small red square".split()) == 4
    assert first_content_word("a the of".split()) == 1  # none: the first word


def test_a_shared_links_fields_are_checked_one_by_one():
    link = parse_link({"example": "2", "beam": "4", "len": "25", "word": "3",
                                   "prefix": "a small", "look": "3,0.25,0.75", "junk": "x"})
    assert link == {"example": 2, "beam": 4, "len": 25, "word": 3, "prefix": "a small",
                    "look": Look(3, 0.25, 0.75)}
    composed = parse_link({"compose": "circle-red-big-0.25-0.3_square-green-small"
                                                  "-0.75-0.3"})
    assert composed["compose"][1] == {"shape": "square", "color": "green", "size": "small",
                                      "position": (0.75, 0.3)}
    with pytest.raises(ValueError, match="'beam' is not a number"):
        parse_link({"beam": "three"})
    with pytest.raises(ValueError, match="'look' must be word,x,y"):
        parse_link({"look": "3,0.5"})
    with pytest.raises(ValueError, match="'compose' must be"):
        parse_link({"compose": "circle-red-big"})


def test_a_link_opens_the_view_it_names(bundled, tmp_path):
    """What explorer.js records, opened again: the same caption with the same forced words and
    word, for an example and for a lab scene (whose verdict comes back too)."""
    example = tmp_path / "scene.png"
    render_scene(np.random.default_rng(20261125), 256).image.save(example)
    bundled.use_examples([example])
    own = bundled.view(str(example), 2, 30).explorer
    prefix = " ".join(own["tokens"][:1] + ["small" if own["tokens"][1] == "big" else "big"])
    opened = open_link(bundled, [str(example)], parse_link(
        {"example": "0", "beam": "2", "len": "30", "prefix": prefix, "word": "3"}))
    view = opened.view.explorer
    assert view["tokens"][:2] == prefix.split() and view["forced"] == 2 and view["word"] == 3
    assert view["source"] == {"example": 0} and (opened.beam_size, opened.max_len) == (2, 30)
    assert view["tokens"] == bundled.view(str(example), 2, 30, prefix=prefix).explorer["tokens"]

    _, lab_view, truth = bundled.new_scene(17, 1, 30)
    opened = open_link(bundled, [], parse_link({"scene": "17", "beam": "1", "word": "4"}))
    assert opened.view.explorer["tokens"] == lab_view.explorer["tokens"] and opened.truth == truth
    assert opened.view.explorer["source"] == {"scene": 17} and opened.view.explorer["word"] == 4
    with pytest.raises(ValueError, match="example must be a whole number from 0 to 0"):
        open_link(bundled, [str(example)], parse_link({"example": "3"}))
    assert open_link(bundled, [], {}).view is None  # nothing to show


def test_only_an_examples_own_bytes_make_a_picture_shareable(bundled, uploads, tmp_path):
    """A copy of example 1 in gradio's uploads is example 1; another picture is an upload; a
    file the client may not name is never read (the answer is the same as for an upload)."""
    examples = []
    for i in range(2):
        path = tmp_path / f"scene-{i}.png"
        render_scene(np.random.default_rng(70 + i), 128).image.save(path)
        examples.append(path)
    bundled.use_examples(examples)
    copy = uploads / "copy.png"
    copy.write_bytes(examples[1].read_bytes())
    other = uploads / "other.png"
    render_scene(np.random.default_rng(99), 128).image.save(other)
    private = tmp_path / "private" / "copy.png"
    private.parent.mkdir()
    private.write_bytes(examples[0].read_bytes())
    assert bundled.source_of({"path": str(copy)}) == {"example": 1}
    assert bundled.source_of(str(examples[0])) == {"example": 0}
    assert bundled.source_of({"path": str(other)}) == {"upload": True}
    assert bundled.source_of({"path": str(private)}) == {"upload": True}
    view = bundled.view(str(examples[1]), 1, 30, source={"example": 1})
    assert view.explorer["source"] == {"example": 1}
    assert view.explorer["beam_size"] == 1 and view.explorer["max_len"] == 30


@pytest.mark.filterwarnings("ignore::UserWarning")
def test_page_handlers_fail_with_a_message_and_clear_what_is_stale():
    """A bad picture clears the caption, the details and the lab's verdict and tells the
    explorer; a failed question keeps everything and only tells the explorer."""
    import gradio as gr

    with app_module.ui_errors(4, at=2) as failed:
        raise ValueError("no image given")
    text, details, explorer, truth = failed.outputs
    assert (text, details, truth) == ("", "", "")
    assert explorer["error"] == "no image given" and explorer["keep"] is False
    with app_module.ui_errors(6, at=3, keep=True) as failed:
        raise ValueError("objects overlap")
    outputs = failed.outputs
    assert outputs[3]["error"] == "objects overlap" and outputs[3]["keep"] is True
    assert all(isinstance(o, type(gr.skip())) for i, o in enumerate(outputs) if i != 3)
    with app_module.ui_errors(3, at=2) as failed:
        pass
    assert failed.outputs is None  # nothing failed: the handler's own return stands
