"""A corpus of awkward and broken image files, shared by the CLI and app hardening tests."""

import io
import struct
import zlib
from pathlib import Path

import numpy as np
from PIL import Image

# name -> True if it must be captioned, False if it must be refused with a clear message
EXPECTED = {
    "truncated.jpg": False,
    "text.jpg": False,
    "empty.png": False,
    "declares-30000x30000.png": False,
    "16bit.png": True,
    "cmyk.jpg": True,
    "rgba.png": True,
    "palette.png": True,
    "animated.gif": True,
    "exif-rotated.jpg": True,
    "one-pixel.png": True,
    "wide-10000x10.png": True,
}


def png_declaring(width: int, height: int) -> bytes:
    """A real 1x1 PNG whose IHDR claims width x height (with a valid CRC)."""
    buffer = io.BytesIO()
    Image.new("RGB", (1, 1)).save(buffer, "PNG")
    data = bytearray(buffer.getvalue())
    assert data[12:16] == b"IHDR"
    data[16:24] = struct.pack(">II", width, height)
    data[29:33] = struct.pack(">I", zlib.crc32(bytes(data[12:29])) & 0xFFFFFFFF)
    return bytes(data)


def write_corpus(folder: Path) -> dict[str, Path]:
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(0)
    rgb = Image.fromarray(rng.integers(0, 256, (48, 64, 3), dtype=np.uint8))
    paths = {name: folder / name for name in EXPECTED}
    buffer = io.BytesIO()
    rgb.save(buffer, "JPEG")
    paths["truncated.jpg"].write_bytes(buffer.getvalue()[: len(buffer.getvalue()) // 2])
    paths["text.jpg"].write_text("this is not an image\n")
    paths["empty.png"].write_bytes(b"")
    paths["declares-30000x30000.png"].write_bytes(png_declaring(30000, 30000))
    Image.fromarray(rng.integers(0, 65535, (40, 40), dtype=np.uint16)).save(paths["16bit.png"])
    rgb.convert("CMYK").save(paths["cmyk.jpg"])
    rgb.convert("RGBA").save(paths["rgba.png"])
    rgb.convert("P").save(paths["palette.png"])
    frames = [rgb, rgb.transpose(Image.Transpose.FLIP_LEFT_RIGHT)]
    frames[0].save(paths["animated.gif"], save_all=True, append_images=frames[1:], duration=50)
    exif = Image.Exif()
    exif[0x0112] = 6  # orientation: rotate 90° clockwise to display
    rgb.save(paths["exif-rotated.jpg"], exif=exif)
    rgb.resize((1, 1)).save(paths["one-pixel.png"])
    rgb.resize((10000, 10)).save(paths["wide-10000x10.png"])
    return paths
