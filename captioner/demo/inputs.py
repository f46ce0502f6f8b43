"""What a web visitor sends, made safe: images the server may open, and settings in range.

A gradio handler with `preprocess=False` receives the client's raw payload, including a file
`path` the *client* chose; gradio only checks such paths while preprocessing. So every handler
that takes an image passes it through `ClientFiles.open`, which opens only files gradio itself
received as uploads (its upload folder) or that the app ships (its examples). Any other path gets
the same message as an unreadable upload, whether or not the file exists, so the API cannot be
used to read server files or to learn which ones exist.
"""

from __future__ import annotations

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


def check_int(name: str, value, low: int, high: int) -> int:
    """A whole number within [low, high], or a ValueError that says what is allowed."""
    try:
        number = float(value)
    except (TypeError, ValueError):
        raise ValueError(f"{name} must be a whole number from {low} to {high}, "
                         f"got {value!r}") from None
    if not number.is_integer() or not low <= number <= high:
        raise ValueError(f"{name} must be a whole number from {low} to {high}, got {value!r}")
    return int(number)
