"""Everything the web app does, as plain Python (no gradio needed to use or test it).

`Demo` holds a loaded model. `Demo.view` runs the model *once* per image and returns, beside the
caption, everything the browser needs to draw every word's attention itself (`explorer_payload`):
the attention maps, the true cell centres and the size to draw them at, over the image the
browser already shows (the visitor's upload or the example). Moving through the words then costs
no request at all, and no picture is sent back. `app.py` only wires these functions to gradio
components.
"""

from __future__ import annotations

import hashlib
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image

from captioner.decoding import caption_images
from captioner.demo.inputs import ClientFiles, check_int
from captioner.demo.model_info import ModelInfo
from captioner.hub import BUNDLED_WEIGHTS, load_model, resolve_model_dir
from captioner.model import Captioner

BEAM_SIZES = (1, 5)  # smallest and largest beam the app offers
MAX_LEN_RANGE = (3, 40)  # shortest and longest caption limit the app offers
DEFAULT_BEAM, DEFAULT_MAX_LEN = 3, 20
DISPLAY_MAX = 512  # heatmaps are drawn on a copy of the image at most this large ...
DISPLAY_MIN = 320  # ... and small inputs (64 px scenes) are enlarged to at least this
ATTENTION_DECIMALS = 5  # attention sent to the browser: 1e-5 is far below one colour level
EMPTY_CAPTION = "(the model ended the caption before writing any word)"
WEB = Path(__file__).resolve().parent / "web"  # the browser code: explorer.{html,css,js}

ATTENTION_EXPLANATION = """\
The encoder cuts the image into a {grid}×{grid} grid of cells and describes each cell with a
feature vector. Before writing each word the decoder computes *soft attention*: one weight per
cell, all weights summing to 1, and it reads the image through that weighted average. The heatmap
shows those weights for the selected word, smoothly interpolated between the cell centres (red =
most weight, blue = little; each map is scaled to its own peak). It is drawn in your browser:
moving through the words asks the server nothing.

Attention is where the model *looked* while choosing a word, not a proof of *why* it chose it.
On a model that learned to point, it lands on the object being named; words such as "a", "is"
or "and" often spread their attention or stay on the last object mentioned.
"""


@dataclass
class Result:
    """One captioned image: the words, their score, attention maps and the display copy."""

    tokens: list[str]
    score: float  # mean log-probability per token (<= 0; closer to 0 = more confident)
    attention: np.ndarray  # (T, grid, grid), every map sums to 1
    image: Image.Image  # the display copy of the input that heatmaps are drawn on
    beam_size: int = DEFAULT_BEAM
    max_len: int = DEFAULT_MAX_LEN
    seconds: float = 0.0  # time for the model and the display copy together

    @property
    def text(self) -> str:
        return " ".join(self.tokens)

    def __len__(self) -> int:
        return len(self.tokens)


def display_copy(image: Image.Image, largest: int = DISPLAY_MAX,
                 smallest: int = DISPLAY_MIN) -> Image.Image:
    """A copy whose longer side is within [smallest, largest] (aspect ratio kept)."""
    side = max(image.size)
    if smallest <= side <= largest:
        return image.copy()
    scale = (largest if side > largest else smallest) / side
    size = (max(1, round(image.width * scale)), max(1, round(image.height * scale)))
    return image.resize(size, Image.Resampling.BICUBIC if scale > 1 else Image.Resampling.LANCZOS)


def api_payload(result: Result, cell_centres: np.ndarray | None = None) -> dict:
    """Plain JSON: the caption, its words, its score and one attention map per word."""
    payload = {
        "caption": result.text,
        "tokens": list(result.tokens),
        "score": round(float(result.score), 6),
        "attention": np.round(result.attention.astype(np.float64), 6).tolist(),
        "beam_size": result.beam_size,
        "max_len": result.max_len,
    }
    if cell_centres is not None:
        payload["cell_centres"] = [round(float(c), 6) for c in cell_centres]
    return payload


def explorer_payload(result: Result, cell_centres: np.ndarray) -> dict:
    """What the browser's attention explorer (web/explorer.js) draws every word from: one
    flattened grid x grid map per word, the true cell centres, and the display size at which
    it draws them over the image it already shows."""
    grid = result.attention.shape[-1] if result.attention.ndim == 3 else len(cell_centres)
    return {
        "caption": result.text,
        "tokens": list(result.tokens),
        "grid": int(grid),
        "centres": [round(float(c), 6) for c in cell_centres],
        "attention": [np.round(a.astype(np.float64).ravel(), ATTENTION_DECIMALS).tolist()
                      for a in result.attention],
        "width": result.image.width,
        "height": result.image.height,
    }


def web_asset(name: str) -> str:
    """The text of one of the browser files in `web/` (the app hands them to gr.HTML)."""
    return (WEB / name).read_text(encoding="utf-8")


def describe_score(result: Result) -> str:
    """One line under the caption: score, decoding settings and time taken."""
    if not result.tokens:
        return f"beam {result.beam_size} · {result.seconds * 1000:.0f} ms"
    return (f"{len(result.tokens)} words · score {result.score:.3f} (mean log-probability per "
            f"token; 0 = certain) · beam {result.beam_size} · {result.seconds * 1000:.0f} ms")


@dataclass
class View:
    """Plain values for the app's outputs after captioning one image."""

    caption: str
    details: str  # the score line
    explorer: dict  # `explorer_payload`: the browser draws every word's heatmap from it


class Demo:
    """A loaded model plus what the app needs to show about it."""

    def __init__(self, model: Captioner, info: ModelInfo, files: ClientFiles | None = None):
        self.model = model.eval()
        self.info = info
        self.cell_centres = model.encoder.cell_centres()
        self.files = files or ClientFiles()

    @classmethod
    def load(cls, weights: str | Path | None = None, device: str | None = "auto") -> Demo:
        """Load from a model folder or Hub repo id (default: the bundled `weights/` folder)
        onto `device` ("auto": a GPU when there is one).

        Raises WeightsError (with a message naming the file and the problem) when it can't."""
        source = str(weights or BUNDLED_WEIGHTS)
        model_dir = resolve_model_dir(source)
        model = load_model(model_dir, device=device)
        return cls(model, ModelInfo.read(source, model_dir, model))

    def allow_files(self, paths: list[str | Path]) -> None:
        """Files the app ships (its examples) that clients may name, beside gradio's uploads."""
        self.files = ClientFiles([*self.files.shipped, *paths])

    # --- captioning ---

    def caption(self, image: Image.Image, beam_size=DEFAULT_BEAM,
                max_len=DEFAULT_MAX_LEN) -> Result:
        """Caption one PIL image. Raises ValueError for bad settings."""
        beam_size = check_int("beam size", beam_size, *BEAM_SIZES)
        max_len = check_int("maximum length", max_len, *MAX_LEN_RANGE)
        start = time.perf_counter()
        caption = caption_images(self.model, [image], beam_size=beam_size, max_len=max_len)[0]
        return Result(list(caption.tokens), float(caption.score), caption.attention,
                      display_copy(image), beam_size, max_len, time.perf_counter() - start)

    def api(self, payload, beam_size=DEFAULT_BEAM, max_len=DEFAULT_MAX_LEN) -> dict:
        """The named API endpoint: JSON with caption, tokens, score and attention maps.
        `payload` comes from a client: only uploaded or shipped files are opened."""
        result = self.caption(self.files.open(payload), beam_size, max_len)
        return api_payload(result, self.cell_centres)

    def view(self, payload, beam_size=DEFAULT_BEAM, max_len=DEFAULT_MAX_LEN) -> View:
        """Caption a client's image and prepare everything the page shows (no files written)."""
        result = self.caption(self.files.open(payload), beam_size, max_len)
        return View(result.text or EMPTY_CAPTION, describe_score(result),
                    explorer_payload(result, self.cell_centres))

    @property
    def fingerprint(self) -> str:
        """Changes when the weights change (keeps cached example outputs per model)."""
        digest = hashlib.sha1(str(self.info.model_dir.resolve()).encode())
        for name in ("config.json", "model.safetensors"):
            path = self.info.model_dir / name
            if path.is_file():
                stat = path.stat()
                digest.update(f"{name}:{stat.st_size}:{stat.st_mtime_ns}".encode())
        return digest.hexdigest()[:12]

    def model_markdown(self) -> str:
        return self.info.markdown()

    def explanation(self) -> str:
        """What the heatmap means, for this model's grid."""
        return ATTENTION_EXPLANATION.format(grid=self.model.config.grid_size)
