"""What a web visitor sends, made safe: images the server may open, and settings in range.

A gradio handler with `preprocess=False` receives the client's raw payload, including a file
`path` the *client* chose; gradio only checks such paths while preprocessing. So every handler
that takes an image passes it through `ClientFiles.open`, which opens only files gradio itself
received as uploads (its upload folder) or that the app ships (its examples). Any other path gets
the same message as an unreadable upload, whether or not the file exists, so the API cannot be
used to read server files or to learn which ones exist.
"""

from __future__ import annotations

import math
import os
from pathlib import Path

from PIL import Image

from captioner.preprocess import NOT_AN_IMAGE, ImageError, load_image

NO_IMAGE = ("no image given: upload a picture, paste one, take one with the webcam or pick an "
            "example")


def image_source(value) -> tuple[object, str]:
    """What the app or an API client hands over -> (something `load_image` accepts, the name
    to use in messages). Accepts a PIL image, a path, bytes, or a gradio file payload (a dict
    or object with `path` and maybe `orig_name`). Server paths never appear in messages."""
    name = None
    if isinstance(value, dict):
        name = value.get("orig_name")
        value = value.get("path")
    elif value is not None and not isinstance(value, str | Path | bytes | bytearray | memoryview
                                              | Image.Image):
        name = getattr(value, "orig_name", None)
        value = getattr(value, "path", value)
    if value is None or (isinstance(value, str) and not value.strip()):
        raise ImageError(NO_IMAGE)
    if isinstance(value, memoryview):
        value = bytes(value)
    if not isinstance(value, str | Path | bytes | bytearray | Image.Image):
        raise ImageError(f"cannot read an image from a {type(value).__name__}")
    if name is None:
        name = Path(value).name if isinstance(value, str | Path) else "the image"
    return value, str(name)


def load_input(value) -> Image.Image:
    """Any accepted input -> upright RGB PIL image (huge ones downscaled), or ImageError with
    a message fit for the user (naming the file by its original name, never a server path)."""
    source, name = image_source(value)
    try:
        return load_image(source)
    except ImageError as e:
        message = str(e)
        if isinstance(source, str | Path):
            message = message.replace(str(source), name)
        raise ImageError(message) from None


def gradio_upload_folder() -> Path:
    """Where gradio writes uploads and cached example files (read when asked: tests and
    deployments may set GRADIO_TEMP_DIR after import)."""
    from gradio.utils import get_upload_folder

    return Path(os.path.realpath(get_upload_folder()))


class ClientFiles:
    """The files a web handler may open for a client: gradio's uploads and the app's own
    examples. Paths are compared after resolving symlinks and `..`."""

    def __init__(self, shipped: list[str | Path] = ()):
        self.shipped = {os.path.realpath(p) for p in shipped}

    def allowed(self, path: str | Path) -> bool:
        real = os.path.realpath(path)
        if real in self.shipped:
            return True
        folder = gradio_upload_folder()
        return Path(real).is_relative_to(folder) and Path(real).is_file()

    def open(self, payload) -> Image.Image:
        """A client's image payload -> PIL image, opening a file only where `allowed`."""
        source, name = image_source(payload)
        if isinstance(source, str | Path) and not self.allowed(source):
            raise ImageError(f"{name}: {NOT_AN_IMAGE}")  # same words as an unreadable upload
        return load_input(payload)


ECHO = 40  # characters of a client's value repeated in a message


def short_repr(value) -> str:
    """A client's value as messages repeat it: at most a few dozen characters."""
    text = repr(value)
    return text if len(text) <= ECHO else text[:ECHO - 1] + "…"


def check_int(name: str, value, low: int, high: int) -> int:
    """A whole number within [low, high], or a ValueError that says what is allowed."""
    number = check_number(name, value, low, high, "a whole number")
    if not number.is_integer():
        raise ValueError(f"{name} must be a whole number from {low} to {high}, "
                         f"got {short_repr(value)}")
    return int(number)


def check_number(name: str, value, low: float, high: float, kind: str = "a number") -> float:
    """A number within [low, high] (a string of digits too: API clients send those), or a
    ValueError that says what is allowed; None, text, NaN and booleans are refused."""
    try:
        number = float(value) if not isinstance(value, bool) else math.nan
    except (TypeError, ValueError):
        number = math.nan
    if not low <= number <= high:  # NaN fails too
        raise ValueError(f"{name} must be {kind} from {low:g} to {high:g}, "
                         f"got {short_repr(value)}")
    return number


def check_request(beam_size, max_len, prefix, look, beams: tuple[int, int],
                  lengths: tuple[int, int]) -> tuple[int, int, str, tuple | None]:
    """Everything a client may send with an image, checked in one place: (beam size,
    maximum length, prefix as single-spaced words, look-here (word, x, y) or None). Raises
    ValueError with the message the client sees."""
    beam_size = check_int("beam size", beam_size, *beams)
    max_len = check_int("maximum length", max_len, *lengths)
    prefix = " ".join(str(prefix or "").split())
    words = len(prefix.split())
    if words > max_len:
        raise ValueError(f"the prefix has {words} words, more than the maximum length "
                         f"{max_len}: shorten it or raise the maximum length")
    if look is None:
        return beam_size, max_len, prefix, None
    word = check_int("look-here word", look.word, 1, max_len)
    x = check_number("look-here x", look.x, 0, 1, "inside the image: a fraction of its width")
    y = check_number("look-here y", look.y, 0, 1, "inside the image: a fraction of its height")
    return beam_size, max_len, prefix, (word, x, y)
