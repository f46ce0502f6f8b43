"""Everything the web app does, as plain Python (no gradio needed to use or test it).

`Demo` holds a loaded model. `Demo.caption` runs the model *once* per image and precomputes the
attention overlay of every word, so moving through the words afterwards (`overlay_for`) only picks
a ready-made picture from a list. `app.py` only wires these functions to gradio components.
"""

from __future__ import annotations

import hashlib
import io
import re
import tempfile
import textwrap
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from PIL import Image

from captioner.decoding import caption_images
from captioner.hub import (
    BUNDLED_WEIGHTS,
    load_model,
    read_metrics,
    resolve_model_dir,
)
from captioner.model import Captioner
from captioner.preprocess import ImageError, load_image
from captioner.visualize import attention_overlay

BEAM_SIZES = (1, 5)  # smallest and largest beam the app offers
MAX_LEN_RANGE = (3, 40)  # shortest and longest caption limit the app offers
DEFAULT_BEAM, DEFAULT_MAX_LEN = 3, 20
DISPLAY_MAX = 512  # overlays are drawn on a copy of the image at most this large ...
DISPLAY_MIN = 320  # ... and small inputs (64 px scenes) are enlarged to at least this
GRID_SIDE = 224  # image side used for each panel of the downloadable attention grid
CURRENT = "current word"  # the HighlightedText label of the word being shown
EMPTY_CAPTION = "(the model ended the caption before writing any word)"

ATTENTION_EXPLANATION = """\
The encoder cuts the image into a {grid}×{grid} grid of cells and describes each cell with a
feature vector. Before writing each word the decoder computes *soft attention*: one weight per
cell, all weights summing to 1, and it reads the image through that weighted average. The heatmap
shows those weights for the selected word, smoothly interpolated between the cell centres (red =
most weight, blue = little; each map is scaled to its own peak).

Attention is where the model *looked* while choosing a word, not a proof of *why* it chose it.
On a model that learned to point, it lands on the object being named; words such as "a", "is"
or "and" often spread their attention or stay on the last object mentioned.
"""


@dataclass
class Result:
    """One captioned image: the words, their score, attention maps and ready-made overlays."""

    tokens: list[str]
    score: float  # mean log-probability per token (<= 0; closer to 0 = more confident)
    attention: np.ndarray  # (T, grid, grid), every map sums to 1
    image: Image.Image  # the display copy of the input the overlays are drawn on
    overlays: list[Image.Image] = field(repr=False)  # one per word
    beam_size: int = DEFAULT_BEAM
    max_len: int = DEFAULT_MAX_LEN
    seconds: float = 0.0  # time for the model and the overlays together

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


def highlighted(tokens: list[str], index: int) -> list[tuple[str, str | None]]:
    """Words for gr.HighlightedText, with word number `index` (1-based) labelled CURRENT."""
    out: list[tuple[str, str | None]] = []
    for i, word in enumerate(tokens, start=1):
        if i > 1:
            out.append((" ", None))
        out.append((word, CURRENT if i == index else None))
    return out


def clamp_index(index, count: int) -> int:
    """Slider value (1-based word number, maybe a float or None) -> a valid 1..count."""
    try:
        index = int(round(float(index)))
    except (TypeError, ValueError):
        index = 1
    return min(max(index, 1), max(count, 1))


def overlay_for(result: Result, index) -> Image.Image:
    """The precomputed overlay of word number `index` (1-based); never runs the model."""
    if not result.overlays:
        return result.image
    return result.overlays[clamp_index(index, len(result.overlays)) - 1]


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


def describe_score(result: Result) -> str:
    """One line under the caption: score, decoding settings and time taken."""
    if not result.tokens:
        return f"beam {result.beam_size} · {result.seconds * 1000:.0f} ms"
    return (f"{len(result.tokens)} words · score {result.score:.3f} (mean log-probability per "
            f"token; 0 = certain) · beam {result.beam_size} · {result.seconds * 1000:.0f} ms")


def _card_sections(readme: str) -> dict[str, str]:
    """'## Heading' -> text of a model card (front matter removed); '#' -> the title."""
    text = re.sub(r"\A---\n.*?\n---\n", "", readme, flags=re.S)
    sections: dict[str, str] = {}
    title = re.search(r"^# (.+)$", text, flags=re.M)
    if title:
        sections["#"] = title.group(1).strip()
    for match in re.finditer(r"^## (.+?)\n(.*?)(?=^## |\Z)", text, flags=re.M | re.S):
        sections[match.group(1).strip().lower()] = match.group(2).strip()
    return sections


def _first_paragraph(text: str) -> str:
    return text.strip().split("\n\n")[0].replace("\n", " ").strip()


def attention_grid_image(result: Result, columns: int = 5, side: int = GRID_SIDE) -> Image.Image:
    """The image and each word's overlay, labelled, in one picture (from the ready overlays:
    what you download is exactly what the app showed, and no figure library is needed)."""
    from PIL import ImageDraw, ImageFont

    panels = [("(image)", result.image)] + list(zip(result.tokens, result.overlays))
    font = ImageFont.load_default(size=18)
    title_font = ImageFont.load_default(size=20)
    label_h, pad = 30, 8
    rows = -(-len(panels) // columns)
    title_lines = textwrap.wrap(result.text, width=max(20, columns * side // 11)) or [""]
    title_h = 14 + 26 * len(title_lines)
    width = columns * (side + pad) + pad
    height = title_h + rows * (side + label_h + pad) + pad
    canvas = Image.new("RGB", (width, height), "white")
    draw = ImageDraw.Draw(canvas)
    for i, line in enumerate(title_lines):
        draw.text((width / 2, 10 + 26 * i), line, fill="black", font=title_font, anchor="ma")
    for k, (word, picture) in enumerate(panels):
        r, c = divmod(k, columns)
        x, y = pad + c * (side + pad), title_h + r * (side + label_h + pad)
        thumb = picture.copy()
        thumb.thumbnail((side, side), Image.Resampling.LANCZOS)
        canvas.paste(thumb, (x + (side - thumb.width) // 2, y + (side - thumb.height) // 2))
        label = word if k == 0 else f"{k}. {word}"
        draw.text((x + side / 2, y + side + 5), label, fill="black", font=font, anchor="ma")
    return canvas


METRIC_NAMES = [("bleu4", "BLEU-4"), ("meteor", "METEOR"), ("rouge_l", "ROUGE-L"),
                ("cider", "CIDEr"), ("objects_correct", "all objects right"),
                ("relations_correct", "relations right"), ("pointing", "pointing accuracy"),
                ("pointing_chance", "pointing by chance")]
FRACTIONS = {"objects_correct", "relations_correct", "pointing", "pointing_chance"}


def metrics_markdown(metrics: dict, beams: list[str]) -> str:
    """A narrow table (one row per metric, one column per beam size) for the model panel."""
    header = "| metric | " + " | ".join("greedy" if b == "beam1" else f"beam {b[4:]}"
                                         for b in beams) + " |"
    lines = [header, "|---" * (len(beams) + 1) + "|"]
    for key, label in METRIC_NAMES:
        values = [metrics[b].get(key) for b in beams]
        if all(v is None for v in values):
            continue
        cells = ["–" if v is None else f"{v:.1%}" if key in FRACTIONS else f"{v:.1f}"
                 for v in values]
        lines.append(f"| {label} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


@dataclass
class ModelInfo:
    """What the model panel says: where the weights came from and how well they do."""

    source: str  # what the user asked for (folder or Hub id)
    model_dir: Path
    architecture: str
    dataset: str | None = None
    metrics: dict = field(default_factory=dict)
    card: dict[str, str] = field(default_factory=dict)

    @classmethod
    def read(cls, source: str, model_dir: Path, model: Captioner) -> ModelInfo:
        cfg = model.config
        stage = f" (stages 1–{cfg.encoder_stage})" if cfg.encoder_stage < 4 else ""
        architecture = (f"{cfg.encoder}{stage} encoder → {cfg.grid_size}×{cfg.grid_size} "
                        f"attention grid → LSTM decoder ({cfg.hidden_dim} units); "
                        f"{len(model.vocab)}-word vocabulary; images resized to "
                        f"{cfg.image_size}×{cfg.image_size}")
        try:
            metrics = read_metrics(model_dir)
        except (OSError, ValueError):
            metrics = {}
        readme = Path(model_dir) / "README.md"
        try:
            card = _card_sections(readme.read_text(encoding="utf-8")) if readme.is_file() else {}
        except (OSError, UnicodeDecodeError):
            card = {}
        dataset = metrics.get("dataset") if isinstance(metrics, dict) else None
        return cls(source, Path(model_dir), architecture, dataset,
                   metrics if isinstance(metrics, dict) else {}, card)

    @property
    def trained_on(self) -> str:
        if "training data" in self.card:
            return _first_paragraph(self.card["training data"])
        if self.dataset == "scenes":
            return ("procedurally generated scenes of coloured shapes (`captioner.scenes`), "
                    "not photos")
        if self.dataset:
            return f"`{self.dataset}`"
        return "unknown (no metrics.json or model card beside the weights)"

    def markdown(self) -> str:
        lines = []
        if self.card.get("#"):
            lines.append(f"### {self.card['#']}")
        lines += [f"**Weights:** `{self.source}`"
                  + (f" (folder `{self.model_dir}`)" if str(self.model_dir) != self.source else ""),
                  "", f"**Model:** {self.architecture}", "",
                  f"**Trained on:** {self.trained_on}", ""]
        beams = [k for k in ("beam1", "beam3") if isinstance(self.metrics.get(k), dict)]
        if beams:
            images = self.metrics.get("images")
            epoch = self.metrics.get("selected_epoch")
            lines.append(f"**Test metrics** ({self.metrics.get('split', 'test')} split"
                         + (f", {images} images" if images else "")
                         + (f", epoch {epoch}" if epoch else "")
                         + "; caption metrics on the 0–100 scale):")
            lines += ["", metrics_markdown(self.metrics, beams), ""]
            b = self.metrics[beams[-1]]
            if b.get("pointing") is not None:
                chance = b.get("pointing_chance")
                lines.append(f"**Pointing accuracy** (does the attention peak land on the object "
                             f"a word names?): {b['pointing']:.0%}"
                             + (f" vs {chance:.0%} by chance" if chance is not None else "")
                             + ".")
                lines.append("")
        else:
            lines += ["**Test metrics:** none found (no metrics.json beside the weights).", ""]
        if self.card.get("intended use and limits"):
            lines.append(f"**Limits:** {_first_paragraph(self.card['intended use and limits'])}")
        return "\n".join(lines).strip() + "\n"


@dataclass
class View:
    """Plain values for the app's outputs after captioning one image."""

    caption: str
    details: str  # the score line
    words: list[tuple[str, str | None]]  # for gr.HighlightedText, word 1 marked
    count: int  # T: the word slider's maximum
    heatmap: str | None  # overlay of word 1 (file path)
    gallery: list[tuple[str, str]]  # (overlay file, word) for every word
    grid: str | None  # PNG of all words, for download


def word_view(gallery, index) -> tuple[str | None, list[tuple[str, str | None]]]:
    """Slider moved: the overlay of word `index` (1-based) and the words with it marked.

    `gallery` is the gallery's value, [(overlay file, word), ...]: the overlays were drawn when
    the caption was made, so this only picks one (no model, no drawing)."""
    if not gallery:
        return None, []
    items = [item if isinstance(item, tuple | list) else (item, None) for item in gallery]
    i = clamp_index(index, len(items))
    words = [str(word) if word is not None else "?" for _, word in items]
    return str(items[i - 1][0]), highlighted(words, i)


class Demo:
    """A loaded model plus what the app needs to show about it."""

    def __init__(self, model: Captioner, info: ModelInfo, workdir: str | Path | None = None):
        self.model = model.eval()
        self.info = info
        self.cell_centres = model.encoder.cell_centres()
        self._workdir = Path(workdir) if workdir else None

    @classmethod
    def load(cls, weights: str | Path | None = None, device: str = "cpu") -> Demo:
        """Load from a model folder or Hub repo id (default: the bundled `weights/` folder).

        Raises WeightsError (with a message naming the file and the problem) when it can't."""
        source = str(weights or BUNDLED_WEIGHTS)
        model_dir = resolve_model_dir(source)
        model = load_model(model_dir, device=device)
        return cls(model, ModelInfo.read(source, model_dir, model))

    # --- captioning ---

    def caption(self, image, beam_size=DEFAULT_BEAM, max_len=DEFAULT_MAX_LEN) -> Result:
        """Caption one image (PIL, path, bytes or gradio file payload) and draw every word's
        attention. Raises ImageError for unusable input, ValueError for bad settings."""
        beam_size = check_int("beam size", beam_size, *BEAM_SIZES)
        max_len = check_int("maximum length", max_len, *MAX_LEN_RANGE)
        picture = load_input(image)
        start = time.perf_counter()
        caption = caption_images(self.model, [picture], beam_size=beam_size, max_len=max_len)[0]
        shown = display_copy(picture)
        overlays = [attention_overlay(shown, a, self.cell_centres) for a in caption.attention]
        return Result(list(caption.tokens), float(caption.score), caption.attention, shown,
                      overlays, beam_size, max_len, time.perf_counter() - start)

    def api(self, image, beam_size=DEFAULT_BEAM, max_len=DEFAULT_MAX_LEN) -> dict:
        """The named API endpoint: JSON with caption, tokens, score and attention maps."""
        beam_size = check_int("beam size", beam_size, *BEAM_SIZES)
        max_len = check_int("maximum length", max_len, *MAX_LEN_RANGE)
        picture = load_input(image)
        caption = caption_images(self.model, [picture], beam_size=beam_size, max_len=max_len)[0]
        result = Result(list(caption.tokens), float(caption.score), caption.attention, picture,
                        [], beam_size, max_len)
        return api_payload(result, self.cell_centres)

    def view(self, image, beam_size=DEFAULT_BEAM, max_len=DEFAULT_MAX_LEN) -> View:
        """Caption an image and prepare everything the page shows (files written once)."""
        result = self.caption(image, beam_size, max_len)
        paths = [str(p) for p in self.save_overlays(result)]
        grid = self.grid_png(result)
        return View(result.text or EMPTY_CAPTION, describe_score(result),
                    highlighted(result.tokens, 1), len(result.tokens),
                    paths[0] if paths else None, list(zip(paths, result.tokens)),
                    str(grid) if grid else None)

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

    overlay_for = staticmethod(overlay_for)
    highlighted = staticmethod(highlighted)

    # --- files ---

    @property
    def workdir(self) -> Path:
        if self._workdir is None:
            self._workdir = Path(tempfile.mkdtemp(prefix="captioner-app-"))
        self._workdir.mkdir(parents=True, exist_ok=True)
        return self._workdir

    def _prune(self, max_age_s: float) -> None:
        """Delete files this app wrote more than `max_age_s` ago (gradio keeps its own copy)."""
        now = time.time()
        for old in list(self.workdir.iterdir()):
            try:
                if now - old.stat().st_mtime > max_age_s:
                    if old.is_dir():
                        for f in old.iterdir():
                            f.unlink()
                        old.rmdir()
                    else:
                        old.unlink()
            except OSError:
                pass

    def save_overlays(self, result: Result, max_age_s: float = 3600) -> list[Path]:
        """Every word's overlay as a JPEG file (fast to write; shared by gallery and heatmap)."""
        self._prune(max_age_s)
        key = hashlib.sha1(result.attention.tobytes() + result.image.tobytes()).hexdigest()[:16]
        folder = self.workdir / f"overlays-{key}"
        folder.mkdir(exist_ok=True)
        folder.touch()  # reused: not old any more
        paths = []
        for i, (word, overlay) in enumerate(zip(result.tokens, result.overlays), start=1):
            path = folder / f"{i:02d}-{re.sub(r'[^a-z0-9]+', '_', word.lower())[:24]}.jpg"
            if not path.is_file():
                overlay.save(path, quality=90)
            paths.append(path)
        return paths

    def grid_png(self, result: Result, max_age_s: float = 3600) -> Path | None:
        """The image and every word's overlay in one PNG for download (None if no words)."""
        if not result.tokens:
            return None
        self._prune(max_age_s)
        grid = attention_grid_image(result)
        buffer = io.BytesIO()
        # 256 colours: a quarter of the size of a true-colour PNG, no visible loss on heatmaps
        grid.quantize(256, method=Image.Quantize.FASTOCTREE).save(buffer, format="PNG")
        data = buffer.getvalue()
        path = self.workdir / f"attention-grid-{hashlib.sha1(data).hexdigest()[:12]}.png"
        path.write_bytes(data)
        return path

    def model_markdown(self) -> str:
        return self.info.markdown()

    def explanation(self) -> str:
        """What the heatmap means, for this model's grid."""
        grid = self.model.config.grid_size
        return ATTENTION_EXPLANATION.format(grid=grid)
