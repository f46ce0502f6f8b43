"""Attention pictures: one word's map as a heatmap over the image, and a grid of all words.

`upsample_attention` is also what the pointing game scores, so what you see is what is measured.
Overlays are pure numpy (a caption needs ~20 of them); matplotlib is only used for the grid figure.
"""

from __future__ import annotations

from functools import lru_cache

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
from matplotlib.figure import Figure  # noqa: E402
from PIL import Image  # noqa: E402


@lru_cache(maxsize=64)
def _interpolation_matrix(size: int, centres: tuple[float, ...]) -> np.ndarray:
    """(size, n) weights that linearly interpolate n cell values, known at `centres` (fractions
    of the side), onto `size` pixel centres; constant beyond the outermost cells."""
    pixels = (np.arange(size) + 0.5) / size
    eye = np.eye(len(centres))
    return np.stack([np.interp(pixels, centres, eye[k]) for k in range(len(centres))], axis=1)


def upsample_attention(attention: np.ndarray, width: int, height: int,
                       centres: np.ndarray | None = None) -> np.ndarray:
    """(n, n) map -> (height, width) smooth map, each cell's value placed at its true centre."""
    n = attention.shape[0]
    if centres is None:
        centres = (np.arange(n) + 0.5) / n
    key = tuple(float(c) for c in centres)
    rows, cols = _interpolation_matrix(height, key), _interpolation_matrix(width, key)
    return rows @ attention.astype(np.float64) @ cols.T


@lru_cache(maxsize=4)
def _colormap(name: str) -> np.ndarray:
    return (plt.get_cmap(name)(np.linspace(0, 1, 256))[:, :3] * 255).astype(np.float32)


def attention_overlay(image: Image.Image, attention: np.ndarray, centres=None, *,
                      alpha: float = 0.55, cmap: str = "jet") -> Image.Image:
    """Blend one word's attention, as a heatmap scaled to its own peak, over the image."""
    rgb = np.asarray(image.convert("RGB"), dtype=np.float32)
    heat = upsample_attention(attention, image.width, image.height, centres)
    heat = heat / heat.max() if heat.max() > 0 else heat
    colours = _colormap(cmap)[(heat * 255).astype(np.uint8)]
    weight = alpha * heat[..., None] ** 0.5 + 0.15  # keep the image visible where attention is low
    blended = rgb * (1 - weight) + colours * weight
    return Image.fromarray(blended.clip(0, 255).astype(np.uint8))


def attention_grid(image: Image.Image, tokens: list[str], attention: np.ndarray, centres=None,
                   *, columns: int = 5, title: str | None = None) -> Figure:
    """The image plus one overlay per word, titled with the word."""
    panels = [("(image)", image)] + [
        (word, attention_overlay(image, attention[i], centres)) for i, word in enumerate(tokens)
    ]
    rows = -(-len(panels) // columns)
    fig = Figure(figsize=(2.6 * columns, 2.8 * rows + (0.4 if title else 0)))
    for i, (word, picture) in enumerate(panels):
        ax = fig.add_subplot(rows, columns, i + 1)
        ax.imshow(picture)
        ax.set_title(word, fontsize=13)
        ax.axis("off")
    if title:
        fig.suptitle(title, fontsize=14)
    fig.tight_layout()
    return fig


def save_attention_grid(path, image, tokens, attention, centres=None, title=None) -> None:
    fig = attention_grid(image, tokens, attention, centres, title=title)
    fig.savefig(path, dpi=80)
