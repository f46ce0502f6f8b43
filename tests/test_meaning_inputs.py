"""The web handlers' file guard and input checks against near misses: a folder whose name
starts like the upload folder, a folder inside it, a shipped example; images compared by
content, not by name."""

import numpy as np
import pytest
from PIL import Image

from captioner.demo import Look
from captioner.demo.inputs import (
    NO_IMAGE,
    ClientFiles,
    check_int,
    check_number,
    check_request,
    image_source,
    load_input,
)
from captioner.preprocess import NOT_AN_IMAGE, ImageError


def striped(path, colours=((200, 30, 30), (30, 30, 200))):
    """An asymmetric image (left half, right half): a swapped or blank image shows."""
    pixels = np.zeros((20, 30, 3), np.uint8)
    pixels[:, :15], pixels[:, 15:] = colours
    Image.fromarray(pixels).save(path)
    return pixels


@pytest.fixture
def uploads(tmp_path, monkeypatch):
    """Named plain "gradio" (not conftest's "gradio-uploads") so a sibling can start like it."""
    folder = tmp_path / "gradio"
    folder.mkdir()
    monkeypatch.setenv("GRADIO_TEMP_DIR", str(folder))
    return folder


def test_a_sibling_folder_that_starts_like_the_uploads_is_outside(uploads, tmp_path):
    sibling = tmp_path / "gradio-private"  # ".../gradio-private" starts with ".../gradio"
    sibling.mkdir()
    striped(sibling / "secret.png")
    files = ClientFiles()
    assert not files.allowed(sibling / "secret.png")
    with pytest.raises(ImageError) as error:
        files.open({"path": str(sibling / "secret.png"), "orig_name": "holiday.png"})
    assert str(error.value) == f"holiday.png: {NOT_AN_IMAGE}"


def test_uploads_in_subfolders_are_opened_with_their_content(uploads):
    (uploads / "abc123").mkdir()
    pixels = striped(uploads / "abc123" / "upload.png")
    image = ClientFiles().open({"path": str(uploads / "abc123" / "upload.png")})
    assert np.array_equal(np.asarray(image), pixels)


def test_a_folder_inside_the_uploads_is_not_a_file_to_open(uploads):
    (uploads / "folder.png").mkdir()
    assert not ClientFiles().allowed(uploads / "folder.png")


def test_shipped_examples_are_opened_from_anywhere(uploads, tmp_path):
    shipped = tmp_path / "examples" / "scene.png"
    shipped.parent.mkdir()
    pixels = striped(shipped, ((10, 200, 10), (240, 240, 20)))
    other = tmp_path / "examples" / "other.png"
    striped(other)
    files = ClientFiles([shipped])
    assert np.array_equal(np.asarray(files.open(str(shipped))), pixels)
    assert not files.allowed(other)  # only the files named, not their folder


def test_image_source_reads_every_payload_kind(tmp_path):
    class Upload:  # gradio's FileData-like object
        path = str(tmp_path / "x1.png")
        orig_name = "cat.png"

    class Bare:
        path = str(tmp_path / "x2.png")

    assert image_source({"path": "/srv/a.png", "orig_name": "dog.png"}) == ("/srv/a.png",
                                                                            "dog.png")
    assert image_source({"path": "/srv/a.png"}) == ("/srv/a.png", "a.png")
    assert image_source(Upload()) == (Upload.path, "cat.png")
    assert image_source(Bare()) == (Bare.path, "x2.png")
    assert image_source(memoryview(b"\x89PNG")) == (b"\x89PNG", "the image")
    assert image_source(tmp_path / "y.png") == (tmp_path / "y.png", "y.png")
    image = Image.new("RGB", (2, 2))
    assert image_source(image) == (image, "the image")
    for empty in (None, "", "   ", {"path": None}, {"orig_name": "x.png"}):
        with pytest.raises(ImageError) as error:
            image_source(empty)
        assert str(error.value) == NO_IMAGE
    with pytest.raises(ImageError, match="^cannot read an image from a int$"):
        image_source(42)


def test_load_input_names_the_upload_never_the_server_path(tmp_path):
    broken = tmp_path / "srv" / "0f3a" / "upload.png"
    broken.parent.mkdir(parents=True)
    broken.write_bytes(b"not an image at all")
    with pytest.raises(ImageError) as error:
        load_input({"path": str(broken), "orig_name": "holiday.png"})
    assert str(tmp_path) not in str(error.value)
    assert str(error.value).startswith("holiday.png")
    pixels = striped(tmp_path / "good.png")
    assert np.array_equal(np.asarray(load_input(memoryview((tmp_path / "good.png")
                                                           .read_bytes()))), pixels)


@pytest.mark.parametrize("value, expected", [(3, 3), ("7", 7), (5.0, 5), (1, 1), (10, 10)])
def test_check_int_accepts_whole_numbers_in_range(value, expected):
    assert check_int("beams", value, 1, 10) == expected


@pytest.mark.parametrize("value", [0, 11, 2.5, "two", None, float("nan")])
def test_check_int_refuses_anything_else_and_says_what_is_allowed(value):
    with pytest.raises(ValueError) as error:
        check_int("beams", value, 1, 10)
    assert str(error.value) == f"beams must be a whole number from 1 to 10, got {value!r}"


def refusal(call, *args) -> str:
    with pytest.raises(ValueError) as error:
        call(*args)
    return str(error.value)


def test_a_number_check_says_what_is_allowed_and_refuses_booleans():
    assert refusal(check_number, "seed", "x", 0, 5) == "seed must be a number from 0 to 5, got 'x'"
    assert refusal(check_number, "seed", True, 0, 5) == ("seed must be a number from 0 to 5, "
                                                         "got True")  # not 1.0


@pytest.mark.parametrize("length, shown", [(40, "'" + "v" * 38 + "'"),  # 40: echoed whole
                                           (41, "'" + "v" * 38 + "…")])  # 41: cut at 39
def test_a_clients_value_is_echoed_whole_up_to_forty_characters(length, shown):
    assert refusal(check_number, "x", "v" * (length - 2), 0, 1).endswith(f"got {shown}")


def request(prefix="", look=None, max_len=3):
    return check_request(2, max_len, prefix, look, beams=(1, 5), lengths=(3, 40))


def test_a_request_may_use_every_word_of_its_maximum_length():
    assert request("a  red\tcircle", Look(1, 0.0, 1.0)) == (2, 3, "a red circle", (1, 0.0, 1.0))
    assert refusal(request, "a red big circle") == (
        "the prefix has 4 words, more than the maximum length 3: shorten it or raise the "
        "maximum length")


@pytest.mark.parametrize("look, message", [
    (Look(0, 0.5, 0.5), "look-here word must be a whole number from 1 to 3, got 0"),
    (Look(4, 0.5, 0.5), "look-here word must be a whole number from 1 to 3, got 4"),
    (Look(1, 1.5, 0.5), "look-here x must be inside the image: a fraction of its width from 0 "
                        "to 1, got 1.5"),
    (Look(1, 0.5, 1.5), "look-here y must be inside the image: a fraction of its height from "
                        "0 to 1, got 1.5"),
])
def test_each_look_here_field_is_checked_and_named(look, message):
    assert refusal(request, "", look) == message


def test_the_maximum_length_is_named_when_it_is_out_of_range():
    assert refusal(request, "", None, 99) == ("maximum length must be a whole number from 3 to "
                                              "40, got 99")
