"""Attention pictures: upsampling at true cell centres, overlays and the word grid."""

import numpy as np
import pytest
from matplotlib.figure import Figure
from PIL import Image

from captioner.model import Encoder
from captioner.visualize import (
    OVERLAY_FLOOR,
    attention_grid,
    attention_overlay,
    save_attention_grid,
    upsample_attention,
)


def one_hot(n, row, col):
    attention = np.zeros((n, n), dtype=np.float32)
    attention[row, col] = 1.0
    return attention


def test_upsample_shape():
    heat = upsample_attention(np.full((4, 4), 1 / 16), width=50, height=30)
    assert heat.shape == (30, 50)
    np.testing.assert_allclose(heat, 1 / 16)  # a flat map stays flat


@pytest.mark.parametrize("row, col", [(0, 0), (2, 5), (7, 7), (4, 1)])
def test_one_hot_peak_lands_at_the_cell_centre(row, col):
    centres = Encoder("resnet18", 2, 8, 64, True).cell_centres()  # (8k + 0.5) / 64
    heat = upsample_attention(one_hot(8, row, col), 64, 64, centres)
    peak = np.unravel_index(np.argmax(heat), heat.shape)
    assert peak == (8 * row, 8 * col)  # pixel 8k has its centre at exactly (8k + 0.5) / 64
    assert heat[peak] == pytest.approx(1.0)


def test_peak_follows_the_centres_not_the_naive_grid():
    centres = np.array([0.1, 0.323, 0.512, 0.7])
    heat = upsample_attention(one_hot(4, 1, 2), width=100, height=100, centres=centres)
    assert np.unravel_index(np.argmax(heat), heat.shape) == (32, 51)  # nearest pixel centres
    naive = upsample_attention(one_hot(4, 1, 2), width=100, height=100)  # (k + 0.5) / 4
    assert np.unravel_index(np.argmax(naive), naive.shape) == (37, 62)


def test_upsample_of_non_square_output_keeps_rows_and_columns_apart():
    heat = upsample_attention(one_hot(4, 0, 3), width=80, height=40)
    y, x = np.unravel_index(np.argmax(heat), heat.shape)
    assert y < 10 and x > 60  # top right


def test_attention_overlay_size_and_dependence_on_the_map():
    rng = np.random.default_rng(0)
    image = Image.fromarray(rng.integers(0, 256, (45, 70, 3), dtype=np.uint8))
    left = attention_overlay(image, one_hot(4, 2, 0))
    right = attention_overlay(image, one_hot(4, 2, 3))
    assert left.size == image.size == right.size and left.mode == "RGB"
    a, b = np.asarray(left, dtype=int), np.asarray(right, dtype=int)
    assert np.abs(a - b).mean() > 5
    assert not np.array_equal(a, np.asarray(image, dtype=int))  # something was drawn
    # the picture stays bright where the map is: the left overlay is dimmed on the right only
    diff = np.abs(a - np.asarray(image, dtype=int)).sum(axis=2)
    assert diff[:, :15].mean() < 0.75 * diff[:, -15:].mean()


def test_overlay_keeps_every_colour_only_dims_it():
    """Each pixel is the original times one brightness, the same for its three channels (so its
    hue is kept), from OVERLAY_FLOOR where the attention is zero up to 1 at the peak."""
    colours = np.array([[220, 40, 40], [40, 200, 60], [240, 220, 30], [50, 80, 230]], np.uint8)
    image = Image.fromarray(np.repeat(np.repeat(colours[None], 40, axis=0), 20, axis=1))
    overlay = np.asarray(attention_overlay(image, one_hot(4, 1, 3)), dtype=float)
    original = np.asarray(image, dtype=float)
    ratio = overlay / original
    assert np.abs(ratio - ratio.mean(axis=2, keepdims=True)).max() < 0.04  # same for r, g, b
    assert ratio.min() == pytest.approx(OVERLAY_FLOOR, abs=0.02)  # far from the peak
    peak = np.unravel_index(np.argmax(ratio.mean(axis=2)), ratio.shape[:2])
    assert ratio[peak].mean() == pytest.approx(1, abs=0.01) and peak[1] >= 60


def test_attention_overlay_accepts_other_modes_and_zero_maps():
    grey = Image.new("L", (16, 12), 100)
    overlay = attention_overlay(grey, np.zeros((3, 3)))
    assert overlay.size == (16, 12) and overlay.mode == "RGB"


def test_attention_grid_has_one_titled_panel_per_word():
    image = Image.new("RGB", (40, 30), (200, 30, 30))
    tokens = ["a", "red", "square", "on", "the", "left", "side"]
    attention = np.random.default_rng(1).dirichlet(np.ones(16), size=len(tokens)).reshape(
        -1, 4, 4)
    fig = attention_grid(image, tokens, attention, title="a red square")
    assert isinstance(fig, Figure)
    image_axes = [ax for ax in fig.axes if ax.images]
    assert len(image_axes) == len(fig.axes) == len(tokens) + 1
    assert [ax.get_title() for ax in image_axes] == ["(image)", *tokens]
    assert fig._suptitle is not None and fig._suptitle.get_text() == "a red square"


def test_attention_grid_for_an_empty_caption():
    fig = attention_grid(Image.new("RGB", (8, 8)), [], np.zeros((0, 4, 4)))
    assert len(fig.axes) == 1


def test_save_attention_grid_writes_a_png(tmp_path):
    path = tmp_path / "grid.png"
    save_attention_grid(path, Image.new("RGB", (32, 32)), ["a", "b"], np.full((2, 2, 2), 0.25))
    with Image.open(path) as saved:
        assert saved.format == "PNG" and saved.width > 100 and saved.height > 100


@pytest.mark.parametrize("words", [3, 20])
def test_grid_title_clears_the_panel_labels(words):
    """Rendered at the size saved: the title fits the width and sits above every panel label
    (with five rows it once overlapped the first row's labels)."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg

    tokens = ["word"] * words
    title = " ".join(["a long caption that needs wrapping"] * 5)
    fig = attention_grid(Image.new("RGB", (64, 64)), tokens, np.ones((words, 4, 4)) / 16,
                         title=title)
    fig.set_dpi(80)
    canvas = FigureCanvasAgg(fig)
    canvas.draw()
    renderer = canvas.get_renderer()
    title_box = fig._suptitle.get_window_extent(renderer)
    assert 0 <= title_box.x0 and title_box.x1 <= fig.bbox.width  # wrapped to fit
    for ax in fig.axes:
        assert ax.title.get_window_extent(renderer).y1 < title_box.y0, ax.title.get_text()
