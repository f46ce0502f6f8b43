"""Loading awkward images: every input is an upright RGB image or a clear ImageError."""

import io

import numpy as np
import pytest
import torch
from PIL import Image

from captioner.preprocess import MAX_PIXELS, MAX_SIDE, ImageError, load_image, to_model_input
from tests.bad_inputs import png_declaring

RED, BLUE, WHITE = (255, 0, 0), (0, 0, 255), (255, 255, 255)


def close(pixel, colour, tol=40):
    return all(abs(int(p) - c) <= tol for p, c in zip(pixel, colour))


def opened(path, attribute="mode"):
    with Image.open(path) as image:
        return getattr(image, attribute)


def check_rgb(image, size=None):
    assert isinstance(image, Image.Image)
    assert image.mode == "RGB"
    assert max(image.size) <= MAX_SIDE and min(image.size) >= 1
    if size is not None:
        assert image.size == size
    return image


def test_grayscale(tmp_path):
    path = tmp_path / "grey.png"
    Image.new("L", (20, 10), 128).save(path)
    image = check_rgb(load_image(path), (20, 10))
    assert image.getpixel((3, 3)) == (128, 128, 128)


def test_16_bit_png_is_rescaled_not_clipped(tmp_path):
    ramp = np.tile(np.linspace(0, 65535, 64).astype(np.uint16), (8, 1))
    path = tmp_path / "deep.png"
    Image.fromarray(ramp).save(path)
    assert opened(path) in ("I;16", "I")
    pixels = np.asarray(check_rgb(load_image(path), (64, 8)))
    assert pixels[0, 0].tolist() == [0, 0, 0]
    assert pixels[0, -1].tolist() == [255, 255, 255]
    assert (np.diff(pixels[0, :, 0].astype(int)) >= 0).all()  # still a ramp, not all white
    assert 100 < pixels[0, 32, 0] < 155


def test_palette(tmp_path):
    path = tmp_path / "palette.png"
    Image.new("RGB", (12, 12), BLUE).convert("P", palette=Image.Palette.ADAPTIVE).save(path)
    assert opened(path) == "P"
    assert close(check_rgb(load_image(path), (12, 12)).getpixel((5, 5)), BLUE, tol=5)


def test_palette_with_transparency_goes_on_white(tmp_path):
    path = tmp_path / "palette_t.png"
    image = Image.new("P", (8, 8), 0)
    image.putpalette([255, 0, 0, 0, 0, 255] + [0] * 762)
    image.paste(1, (0, 0, 4, 8))
    image.info["transparency"] = 0
    image.save(path, transparency=0)
    loaded = check_rgb(load_image(path), (8, 8))
    assert loaded.getpixel((1, 1)) == BLUE and loaded.getpixel((6, 1)) == WHITE


@pytest.mark.parametrize("mode, opaque, clear", [
    ("RGBA", (255, 0, 0, 255), (255, 0, 0, 0)),
    ("LA", (0, 255), (0, 0)),
])
def test_transparency_is_composited_on_white(tmp_path, mode, opaque, clear):
    image = Image.new(mode, (10, 10), clear)
    image.paste(Image.new(mode, (5, 10), opaque), (0, 0))
    path = tmp_path / f"{mode}.png"
    image.save(path)
    loaded = check_rgb(load_image(path), (10, 10))
    expected = RED if mode == "RGBA" else (0, 0, 0)
    assert loaded.getpixel((2, 5)) == expected
    assert loaded.getpixel((8, 5)) == WHITE  # not black: transparent pixels are background


def test_cmyk_jpeg(tmp_path):
    path = tmp_path / "cmyk.jpg"
    Image.new("CMYK", (16, 16), (0, 255, 255, 0)).save(path, "JPEG")
    assert opened(path) == "CMYK"
    assert close(check_rgb(load_image(path), (16, 16)).getpixel((8, 8)), RED)


def test_exif_rotated_jpeg_is_turned_upright(tmp_path):
    stored = Image.new("RGB", (40, 20), BLUE)
    stored.paste(Image.new("RGB", (20, 20), RED), (0, 0))  # left half red as stored
    exif = Image.Exif()
    exif[0x0112] = 6  # orientation: rotate 90 degrees clockwise to display
    path = tmp_path / "rotated.jpg"
    stored.save(path, "JPEG", exif=exif, quality=95)
    image = check_rgb(load_image(path), (20, 40))  # width and height swapped
    assert close(image.getpixel((10, 5)), RED)  # the stored left is now the top
    assert close(image.getpixel((10, 35)), BLUE)


def test_animated_gif_uses_the_first_frame(tmp_path):
    path = tmp_path / "anim.gif"
    frames = [Image.new("RGB", (16, 16), c) for c in (RED, BLUE, (0, 255, 0))]
    frames[0].save(path, save_all=True, append_images=frames[1:], duration=50, loop=0)
    assert opened(path, "n_frames") == 3
    assert close(check_rgb(load_image(path), (16, 16)).getpixel((8, 8)), RED, tol=5)


def test_one_pixel_image(tmp_path):
    path = tmp_path / "dot.png"
    Image.new("RGB", (1, 1), RED).save(path)
    assert check_rgb(load_image(path), (1, 1)).getpixel((0, 0)) == RED


def test_extreme_aspect_ratio_is_downscaled_within_max_side(tmp_path):
    path = tmp_path / "strip.png"
    Image.new("RGB", (10000, 10), RED).save(path)
    image = check_rgb(load_image(path))
    assert image.width == MAX_SIDE and image.height >= 1


def test_large_image_is_downscaled_keeping_aspect(tmp_path):
    path = tmp_path / "big.jpg"
    Image.new("RGB", (2048, 1000), RED).save(path)
    assert check_rgb(load_image(path)).size == (1024, 500)
    assert check_rgb(load_image(path, max_side=100)).size == (100, 49)


def test_decompression_bomb_is_refused_without_decoding(tmp_path):
    path = tmp_path / "bomb.png"
    path.write_bytes(png_declaring(30000, 30000))
    assert path.stat().st_size < 200
    with pytest.raises(ImageError, match="too large"):
        load_image(path)


def test_image_over_our_pixel_limit_is_refused(tmp_path):
    # 81 Mpx: above MAX_PIXELS but below Pillow's own bomb warning, so our check is what fires
    assert 9000 * 9000 > MAX_PIXELS
    path = tmp_path / "huge.png"
    path.write_bytes(png_declaring(9000, 9000))
    with pytest.raises(ImageError, match=r"too large \(9000x9000 pixels"):
        load_image(path)


def test_truncated_jpeg(tmp_path):
    noise = np.random.default_rng(0).integers(0, 256, (64, 64, 3), dtype=np.uint8)
    buffer = io.BytesIO()
    Image.fromarray(noise).save(buffer, "JPEG")
    path = tmp_path / "cut.jpg"
    path.write_bytes(buffer.getvalue()[: len(buffer.getvalue()) // 2])
    with pytest.raises(ImageError, match="corrupt or truncated") as error:
        load_image(path)
    assert "cut.jpg" in str(error.value)


def test_text_file_named_jpg(tmp_path):
    path = tmp_path / "notes.jpg"
    path.write_text("this is not an image\n")
    with pytest.raises(ImageError, match="not an image file") as error:
        load_image(path)
    assert "notes.jpg" in str(error.value)


def test_empty_file(tmp_path):
    path = tmp_path / "empty.png"
    path.write_bytes(b"")
    with pytest.raises(ImageError, match=r"empty \(0 bytes\)"):
        load_image(path)


def test_missing_path(tmp_path):
    with pytest.raises(ImageError, match="no such file") as error:
        load_image(tmp_path / "nowhere.png")
    assert "nowhere.png" in str(error.value)


def test_directory_is_not_an_image(tmp_path):
    with pytest.raises(ImageError, match="no such file"):
        load_image(tmp_path)


def test_bytes_and_pil_sources(tmp_path):
    buffer = io.BytesIO()
    Image.new("L", (7, 5), 200).save(buffer, "PNG")
    assert check_rgb(load_image(buffer.getvalue()), (7, 5)).getpixel((0, 0)) == (200,) * 3
    with pytest.raises(ImageError, match="empty"):
        load_image(b"")
    with pytest.raises(ImageError, match="not an image"):
        load_image(b"GIF89a but not really")
    assert check_rgb(load_image(Image.new("RGBA", (3, 4), (0, 0, 0, 0))), (3, 4)).getpixel(
        (1, 1)) == WHITE


def test_image_errors_are_value_errors():
    assert issubclass(ImageError, ValueError)


def test_to_model_input_shape_and_normalisation():
    mean, std = [0.485, 0.456, 0.406], [0.229, 0.224, 0.225]
    white = to_model_input(Image.new("RGB", (37, 23), WHITE), 32, mean, std)
    assert white.shape == (3, 32, 32) and white.dtype == torch.float32
    for c in range(3):
        assert torch.allclose(white[c], torch.full((32, 32), (1 - mean[c]) / std[c]), atol=1e-5)
    red = to_model_input(Image.new("RGB", (50, 80), RED), 16, mean, std)
    assert red.shape == (3, 16, 16)
    assert torch.allclose(red[0], torch.tensor((1 - mean[0]) / std[0]), atol=1e-5)
    assert torch.allclose(red[2], torch.tensor(-mean[2] / std[2]), atol=1e-5)


def test_to_model_input_resizes_the_whole_image_without_cropping():
    image = Image.new("RGB", (100, 50), RED)
    image.paste(Image.new("RGB", (10, 50), BLUE), (90, 0))  # a blue strip at the right edge
    tensor = to_model_input(image, 20, [0, 0, 0], [1, 1, 1])
    assert tensor[2, :, -1].min() > 0.9  # still there after resizing: nothing was cropped
    assert tensor[0, :, 0].min() > 0.9
    grey = to_model_input(Image.new("L", (5, 5), 51), 8, [0.2] * 3, [0.5] * 3)
    assert torch.allclose(grey, torch.zeros(3, 8, 8), atol=1e-5)  # L is accepted too
