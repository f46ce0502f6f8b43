"""Image loading and the one transform used by training and inference alike.

A preprocessing mismatch between training and inference is the classic way to get "the same
caption for every image"; so there is exactly one `to_model_input`, parameterised by the size,
mean and std saved in the model's config.
"""

from __future__ import annotations

import io
import warnings
from pathlib import Path

import numpy as np
import torch
from PIL import Image, ImageOps, UnidentifiedImageError
from torchvision.transforms.v2 import functional as TF

MAX_PIXELS = 64_000_000  # refuse decompression bombs (a 30000 x 30000 PNG is 900 Mpx)
MAX_SIDE = 1024  # larger images are downscaled on load: the model sees <= 224 px anyway


NOT_AN_IMAGE = "not an image file, or a format Pillow cannot read"


class ImageError(ValueError):
    """An input that is not a usable image; the message is safe to show to a user."""


def load_image(source, *, max_side: int = MAX_SIDE) -> Image.Image:
    """Open a path, bytes or PIL image as an upright RGB image no larger than `max_side`."""
    name = str(source) if isinstance(source, str | Path) else "image"
    if isinstance(source, Image.Image):
        image = source
    else:
        if isinstance(source, bytes | bytearray):
            if not source:
                raise ImageError("the image is empty (0 bytes)")
            source = io.BytesIO(source)
        elif isinstance(source, str | Path):
            path = Path(source)
            if not path.is_file():
                raise ImageError(f"{path}: no such file")
            if path.stat().st_size == 0:
                raise ImageError(f"{path}: the file is empty (0 bytes)")
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("error", Image.DecompressionBombWarning)
                image = Image.open(source)
                check_size(image, name)
                image.load()
        except ImageError:
            raise
        except (Image.DecompressionBombError, Image.DecompressionBombWarning):
            raise ImageError(f"{name}: image is too large to decode safely") from None
        except UnidentifiedImageError:
            raise ImageError(f"{name}: {NOT_AN_IMAGE}") from None
        except (OSError, SyntaxError, ValueError) as e:
            raise ImageError(f"{name}: the image is corrupt or truncated ({e})") from None
    check_size(image, name)
    image = to_rgb(image)
    if max(image.size) > max_side:
        image.thumbnail((max_side, max_side), Image.Resampling.BICUBIC)
    return image


def check_size(image: Image.Image, name: str = "image") -> None:
    width, height = image.size
    if width < 1 or height < 1:
        raise ImageError(f"{name}: image has no pixels ({width}x{height})")
    if width * height > MAX_PIXELS:
        raise ImageError(f"{name}: image is too large ({width}x{height} pixels; "
                         f"at most {MAX_PIXELS // 1_000_000} megapixels are accepted)")


def to_rgb(image: Image.Image) -> Image.Image:
    """Any PIL mode (EXIF-rotated, grey, 16-bit, palette, RGBA, CMYK, animated) -> RGB."""
    if getattr(image, "n_frames", 1) > 1:
        image.seek(0)  # animated: caption the first frame
    image = ImageOps.exif_transpose(image)
    if image.mode in ("I;16", "I;16B", "I;16L", "I", "F"):
        pixels = np.asarray(image, dtype=np.float64)
        span = pixels.max() - pixels.min()
        scaled = (pixels - pixels.min()) / span * 255 if span > 0 else np.zeros_like(pixels)
        image = Image.fromarray(scaled.astype(np.uint8), mode="L")
    if image.mode == "P":
        image = image.convert("RGBA")
    if image.mode in ("RGBA", "LA", "PA"):
        background = Image.new("RGB", image.size, (255, 255, 255))
        background.paste(image.convert("RGBA"), mask=image.convert("RGBA").getchannel("A"))
        return background
    return image.convert("RGB")


def resized_pixels(image: Image.Image, image_size: int) -> torch.Tensor:
    """RGB PIL image -> (3, S, S) uint8. The whole image is resized (not cropped) so that every
    part of it can be attended to and drawn on."""
    tensor = TF.pil_to_tensor(image.convert("RGB"))
    return TF.resize(tensor, [image_size, image_size], antialias=True)


def normalise(pixels: torch.Tensor, mean, std) -> torch.Tensor:
    """uint8 pixels (..., 3, S, S) -> the float input the encoder was trained on."""
    return TF.normalize(pixels.float() / 255.0, list(mean), list(std))


def to_model_input(image: Image.Image, image_size: int, mean, std) -> torch.Tensor:
    """RGB PIL image -> normalised (3, S, S) float tensor, as in training."""
    return normalise(resized_pixels(image, image_size), mean, std)
