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

from captioner import lab
from captioner.decoding import Caption, Guide, caption_images, point_map
from captioner.demo.inputs import (
    ClientFiles,
    check_int,
    check_request,
    image_source,
    load_input,
    short_repr,
)
from captioner.demo.model_info import ModelInfo
from captioner.demo.packing import (
    lab_payload,
    pack_map,
    picture_data_url,
    truth_markdown,
)
from captioner.demo.why import why_payload
from captioner.faithfulness import explain_word
from captioner.familiarity import trained_on_scenes, unfamiliar_warning
from captioner.hub import BUNDLED_WEIGHTS, load_model, resolve_model_dir
from captioner.model import Captioner
from captioner.vocab import SPECIALS

BEAM_SIZES = (1, 5)  # smallest and largest beam the app offers
MAX_LEN_RANGE = (3, 40)  # shortest and longest caption limit the app offers
# 30 words: scenes-v1's longest true caption (three objects, two relations) has 27, and a
# limit must never cut the model's own caption mid-phrase (a scenes-v2 model gets 40:
# `Demo.default_max_len`)
DEFAULT_BEAM, DEFAULT_MAX_LEN = 3, 30
DISPLAY_MAX = 512  # heatmaps are drawn at most this large ...
DISPLAY_MIN = 320  # ... and small inputs (64 px scenes) are enlarged to at least this
TOP_K = 5  # alternatives shown for each word
EMPTY_CAPTION = "(the model ended the caption before writing any word)"
# words the explorer does not open on: it shows the first word that names something
FUNCTION_WORDS = frozenset("a an the is are there of and to on in at with above below left "
                           "right image background plain single".split())
WEB = Path(__file__).resolve().parent / "web"  # the browser code: explorer.{html,css,js}

ATTENTION_EXPLANATION = """\
The encoder cuts the image into a {grid}×{grid} grid of cells and describes each cell with a
feature vector. Before writing each word the decoder computes *soft attention*: one weight per
cell, all weights summing to 1, and it reads the image through that weighted average. The heatmap
shows those weights for the selected word, smoothly interpolated between the cell centres: the
picture stays bright where the word's attention is high and is dimmed where it is low (each map is
scaled to its own peak), so every object keeps its own colour. It is drawn in your browser: moving
through the words asks the server nothing.

Attention is where the model *looked* while choosing a word, not a proof of *why* it chose it.
On a model that learned to point, it lands on the object being named; words such as "a", "is"
or "and" often spread their attention or stay on the last object mentioned.
"""


@dataclass
class Look:
    """"Look here": at word number `word` (1-based) the model was made to look at (x, y)."""

    word: int
    x: float
    y: float


@dataclass
class Result:
    """One captioned image: the decoder's answer (words, score, attention, alternatives, gate,
    beams), the size its heatmaps are drawn at, and how the visitor steered it."""

    caption: Caption
    size: tuple[int, int]  # (width, height) the browser draws the heatmaps at
    beam_size: int = DEFAULT_BEAM
    max_len: int = DEFAULT_MAX_LEN
    seconds: float = 0.0  # time the model took
    forced: int = 0  # how many leading words the visitor chose (a forced prefix)
    look: Look | None = None
    warning: str | None = None  # a scenes model shown something unlike its training data
    lab: dict | None = None  # scene lab: objects' boxes and, per object word, pointing hit
    picture: str | None = None  # a data: URL of the picture, when the page does not show it
    source: dict | None = None  # what the page may record in a shareable link (never uploads)

    @property
    def tokens(self) -> list[str]:
        return self.caption.tokens

    @property
    def score(self) -> float:
        return self.caption.score

    @property
    def attention(self) -> np.ndarray:
        return self.caption.attention

    @property
    def text(self) -> str:
        return " ".join(self.tokens)

    def __len__(self) -> int:
        return len(self.tokens)


def display_size(width: int, height: int, largest: int = DISPLAY_MAX,
                 smallest: int = DISPLAY_MIN) -> tuple[int, int]:
    """The size heatmaps are drawn at: the longer side within [smallest, largest], aspect ratio
    kept (64 px scenes enlarged, big photos reduced)."""
    side = max(width, height)
    if smallest <= side <= largest:
        return width, height
    scale = (largest if side > largest else smallest) / side
    return max(1, round(width * scale)), max(1, round(height * scale))


def display_copy(image: Image.Image) -> Image.Image:
    """The image at `display_size` (what server-side overlays, e.g. benchmarks, draw on)."""
    size = display_size(*image.size)
    if size == image.size:
        return image.copy()
    larger = size[0] > image.width
    return image.resize(size, Image.Resampling.BICUBIC if larger else Image.Resampling.LANCZOS)


def questions(result: Result) -> dict:
    """What a visitor can question, as plain JSON: each word's alternatives and gate, every
    beam hypothesis, whether the caption was cut at the maximum length, and how it was steered."""
    caption = result.caption
    return {  # <end> and the like are not words a visitor can pick
        "alternatives": [[{"word": w, "prob": round(float(p), 4)} for w, p in ranked
                          if w not in SPECIALS] for ranked in caption.alternatives],
        "gate": [round(float(g), 4) for g in caption.gate],
        "beams": [{"caption": " ".join(tokens), "score": round(float(score), 4)}
                  for tokens, score in caption.beams],
        "truncated": bool(caption.truncated),
        "forced": result.forced,
        "look": vars(result.look) if result.look else None,
        "steered": bool(result.forced or result.look),
        "warning": result.warning,
    }


def api_payload(result: Result, cell_centres: np.ndarray | None = None) -> dict:
    """Plain JSON: the caption, its words, its score, one attention map per word, and what a
    visitor can question (`questions`)."""
    payload = {
        "caption": result.text,
        "tokens": list(result.tokens),
        "score": round(float(result.score), 6),
        "attention": np.round(result.attention.astype(np.float64), 6).tolist(),
        "beam_size": result.beam_size,
        "max_len": result.max_len,
        **questions(result),
    }
    if cell_centres is not None:
        payload["cell_centres"] = [round(float(c), 6) for c in cell_centres]
    return payload


def explorer_payload(result: Result, cell_centres: np.ndarray) -> dict:
    """What the browser's attention explorer (web/explorer.js) draws every word from: one
    flattened grid x grid map per word (`pack_map`), the true cell centres, and the display
    size at which it draws them over the image it already shows."""
    grid = result.attention.shape[-1] if result.attention.ndim == 3 else len(cell_centres)
    return {
        "caption": result.text,
        "tokens": list(result.tokens),
        "grid": int(grid),
        "centres": [round(float(c), 6) for c in cell_centres],
        "attention": [pack_map(a) for a in result.attention],
        "width": result.size[0],
        "height": result.size[1],
        **questions(result),
        "beam_size": result.beam_size,
        "max_len": result.max_len,
        "open": first_content_word(result.tokens),
        "source": result.source,
        "lab": result.lab,
        **({"image": result.picture} if result.picture else {}),
    }


def first_content_word(tokens: list[str]) -> int:
    """The word (1-based) the explorer opens on: the first one that names something."""
    return next((i + 1 for i, t in enumerate(tokens) if t not in FUNCTION_WORDS), 1)


def example_thumbnails(examples: list[str | Path], folder: Path, side: int = 96) -> list[str]:
    """Small WebP copies (a few KB each) of the example images for the page's example gallery:
    the first page load stays light, and the full files stay on the server."""
    folder.mkdir(parents=True, exist_ok=True)
    paths = []
    for n, path in enumerate(examples):
        with Image.open(path) as image:
            small = image.convert("RGB")
        small.thumbnail((side, side))
        paths.append(str(folder / f"example-{n}.webp"))
        small.save(paths[-1], quality=80)
    return paths


def web_asset(name: str) -> str:
    """The text of one of the browser files in `web/` (the app hands them to gr.HTML)."""
    return (WEB / name).read_text(encoding="utf-8")


def describe_score(result: Result) -> str:
    """Under the caption: a warning when the image is unlike a scenes model's training data,
    then score, decoding settings, time taken, and whether the caption was cut short."""
    # the warning itself is the explorer's alert, above the picture
    warning = "**⚠ caption not meaningful: see the warning** · " if result.warning else ""
    if not result.tokens:
        return warning + f"beam {result.beam_size} · {result.seconds * 1000:.0f} ms"
    cut = (f" · **cut at the maximum length ({result.max_len} words)**"
           if result.caption.truncated else "")
    return (warning + f"{len(result.tokens)} words · score {result.score:.3f} (mean "
            f"log-probability per token; 0 = certain) · beam {result.beam_size} · "
            f"{result.seconds * 1000:.0f} ms" + cut)


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
        self.example_digests: dict[str, int] = {}  # sha256 of an example's bytes -> its number
        self.companions: dict[str, Demo] = {self.kind: self}  # attention kind -> model
        # the lab's scene world and drawing size (None: the model's own)
        self.lab_world: str | None = None
        self.lab_size: int | None = None

    @property
    def kind(self) -> str:
        """The model's attention: "soft" or "hard"."""
        return self.model.config.attention

    @property
    def kinds(self) -> list[str]:
        """The attention kinds the visitor can switch between (one, or soft and hard)."""
        return list(self.companions)

    def pair(self, other: Demo) -> None:
        """Offer `other` (a model with the other attention kind) beside this one."""
        if other.kind == self.kind:
            raise ValueError(f"both models have {self.kind} attention: the switch needs one "
                             "soft and one hard model")
        self.companions[other.kind] = other
        other.companions = self.companions  # each offers the same switch
        # one page, one lab: the companion is tested on this model's world, even if it was
        # trained on another (its card says which; its familiarity check may then warn)
        # and drawn at the same size, so that lab scene n is the same scene for both
        world = lab.lab_world(self.model, self.lab_world)
        other.lab_world = self.lab_world = world.name
        other.lab_size = self.lab_size = world.size_for(self.model.config.image_size)

    def using(self, kind: str | None) -> Demo:
        """The model with attention `kind` (None or "": this one), sharing what clients may
        open. A kind not offered is a ValueError (a client could send anything)."""
        if kind in (None, ""):
            return self
        if kind not in self.companions:
            raise ValueError(f"attention must be one of {', '.join(self.kinds)}, "
                             f"got {short_repr(kind)}")
        other = self.companions[kind]
        other.files, other.example_digests = self.files, self.example_digests
        return other

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

    def use_examples(self, paths: list[str | Path]) -> None:
        """The app's examples: clients may name them, and a picture with the same bytes as
        example n can be shared by link as that example (`source_of`)."""
        self.allow_files(paths)
        self.example_digests = {hashlib.sha256(Path(p).read_bytes()).hexdigest(): n
                                for n, p in enumerate(paths)}

    def source_of(self, payload) -> dict:
        """What a client's picture is, for the page's shareable link: {"example": n} when it
        has the bytes of example n, else {"upload": True} (uploads are never shared). Only
        files the client may name are read."""
        source, _ = image_source(payload)
        if isinstance(source, str | Path) and self.files.allowed(source):
            digest = hashlib.sha256(Path(source).read_bytes()).hexdigest()
            if digest in self.example_digests:
                return {"example": self.example_digests[digest]}
        return {"upload": True}

    # --- captioning ---

    def caption(self, image: Image.Image, beam_size=DEFAULT_BEAM, max_len=None,
                prefix: str = "", look: Look | None = None) -> Result:
        """Caption one PIL image, optionally starting with the words `prefix` and, with `look`,
        looking at a point at one word. Raises ValueError for bad settings or words."""
        max_len = self.default_max_len if max_len is None else max_len
        beam_size, max_len, prefix, point = check_request(beam_size, max_len, prefix, look,
                                                          BEAM_SIZES, MAX_LEN_RANGE)
        start = time.perf_counter()
        if point is not None:
            word, x, y = point
            look = Look(word, x, y)
            if not prefix and word > 1:  # the words before it: the model's own
                own = caption_images(self.model, [image], beam_size=beam_size, max_len=max_len)
                prefix = " ".join(own[0].tokens[:word - 1])
            if len(prefix.split()) != word - 1:
                raise ValueError(f"look here at word {word} needs the {word - 1} words before "
                                 f"it, got {len(prefix.split())}")
            attention = {word - 1: point_map(self.cell_centres, x, y)}
        else:
            attention = {}
        caption = caption_images(self.model, [image], beam_size=beam_size, max_len=max_len,
                                 top_k=TOP_K, guide=Guide(prefix, attention))[0]
        return Result(caption, display_size(*image.size), beam_size, max_len,
                      time.perf_counter() - start, forced=len(prefix.split()), look=look,
                      warning=unfamiliar_warning(image, self.model))

    def api(self, payload, beam_size=DEFAULT_BEAM, max_len=None, prefix: str = "",
            look: Look | None = None) -> dict:
        """The API endpoints: JSON with caption, tokens, score, attention maps and what can be
        questioned. `payload` comes from a client: only uploaded or shipped files are opened."""
        result = self.caption(self.files.open(payload), beam_size, max_len, prefix, look)
        return {**api_payload(result, self.cell_centres), "attention_kind": self.kind}

    def view(self, payload, beam_size=DEFAULT_BEAM, max_len=None, prefix: str = "",
             look: Look | None = None, source: dict | None = None) -> View:
        """Caption a client's image and prepare everything the page shows (no files written).
        `source` says what the picture is, for the page's shareable link."""
        result = self.caption(self.files.open(payload), beam_size, max_len, prefix, look)
        result.source = source
        return self._view(result)

    def _view(self, result: Result) -> View:
        explorer = {**explorer_payload(result, self.cell_centres), "attention_kind": self.kind,
                    "kinds": self.kinds}
        return View(result.text or EMPTY_CAPTION, describe_score(result), explorer)

    # --- "why this word?" (see why.py) ---

    def why(self, payload, word, beam_size=DEFAULT_BEAM, max_len=None,
            prefix: str = "", look: Look | None = None) -> dict:
        """The API's "why": for word number `word` (1-based) of the caption these settings
        give, its attention, Grad-CAM and occlusion maps and p(word) without the attended
        cells. The caption is made again here from the client's (checked) image, never taken
        from the client."""
        return self._why(self.files.open(payload), word, beam_size, max_len, prefix, look)[1]

    def why_view(self, payload, word, beam_size=DEFAULT_BEAM, max_len=None,
                 prefix: str = "", look: Look | None = None) -> View:
        """The page's "why": the same caption's view, opened at `word`, with its
        explanation (`explorer["why"]`) for the explorer to draw."""
        result, why = self._why(self.files.open(payload), word, beam_size, max_len, prefix,
                                look)
        view = self._view(result)
        view.explorer.update(why=why, word=why["word"])
        return view

    def _why(self, image: Image.Image, word, beam_size, max_len, prefix,
             look) -> tuple[Result, dict]:
        result = self.caption(image, beam_size, max_len, prefix, look)
        if not result.tokens:
            raise ValueError("the caption has no words to explain")
        word = check_int("word", word, 1, len(result.tokens))
        explanation = explain_word(self.model, image, result.tokens, word - 1)
        steered = bool(result.look and result.look.word == word)
        return result, why_payload(explanation, result.tokens, word, self.kind, steered)

    # --- the scene lab (models trained on generated scenes) ---

    def suitable_examples(self, paths: list[str]) -> list[str]:
        """The example images worth showing this model: for a scenes model only those that
        look like its training data (a photo would only show it failing)."""
        if not self.knows_scenes:
            return list(paths)
        return [p for p in paths if unfamiliar_warning(load_input(p), self.model) is None]

    @property
    def knows_scenes(self) -> bool:
        """Trained on generated scenes: the app then offers the scene lab."""
        return trained_on_scenes(self.model)

    @property
    def default_max_len(self) -> int:
        """The caption limit the page starts with: room for the longest true caption of the
        lab's world (40 steps for scenes-v2's 39 words; 30 otherwise)."""
        world = lab.lab_world(self.model, self.lab_world) if self.knows_scenes else None
        return min(MAX_LEN_RANGE[1], max(DEFAULT_MAX_LEN, world.max_words if world else 0))

    def lab_options(self) -> dict:
        """What the composer offers: the lab world's shapes, colours, sizes, most objects."""
        return lab.lab_options(self.model, self.lab_world)

    def lab_view(self, scene: lab.LabScene, beam_size: int, max_len: int, seconds: float,
                 source: dict | None = None) -> tuple[Image.Image, View, str]:
        """A lab scene as the page shows it: the picture (enlarged by whole pixels, so that
        the model sees the same scene when asked about it again), the explorer view with the
        objects' boxes, and the ground truth."""
        factor = -(-DISPLAY_MIN // max(scene.image.size))
        picture = scene.image.resize((scene.image.width * factor, scene.image.height * factor),
                                     Image.Resampling.NEAREST)
        result = Result(scene.caption, display_size(*picture.size), beam_size, max_len,
                        seconds, lab=lab_payload(scene), picture=picture_data_url(scene.image),
                        source=source)
        return picture, self._view(result), truth_markdown(scene)

    def new_scene(self, seed, beam_size=1,
                  max_len=None) -> tuple[Image.Image, View, str]:
        """Lab scene number `seed`, from a seed range never used for training or evaluation."""
        seed = check_int("scene number", seed, 0, 10**9)
        beam_size = check_int("beam size", beam_size, *BEAM_SIZES)
        max_len = check_int("maximum length", self.default_max_len if max_len is None
                            else max_len, *MAX_LEN_RANGE)
        start = time.perf_counter()
        scene = lab.new_scene(self.model, seed, beam_size=beam_size, top_k=TOP_K,
                              world=self.lab_world, max_len=max_len, size=self.lab_size)
        return self.lab_view(scene, beam_size, max_len, time.perf_counter() - start,
                             source={"scene": seed})

    def compose(self, specs: list[dict], beam_size=1,
                max_len=None) -> tuple[Image.Image, View, str]:
        """A scene of the visitor's objects (shape, color, size, position); bad specs raise
        ValueError naming the problem."""
        beam_size = check_int("beam size", beam_size, *BEAM_SIZES)
        max_len = check_int("maximum length", self.default_max_len if max_len is None
                            else max_len, *MAX_LEN_RANGE)
        start = time.perf_counter()
        scene = lab.compose(self.model, specs, beam_size=beam_size, top_k=TOP_K,
                            world=self.lab_world, max_len=max_len, size=self.lab_size)
        return self.lab_view(scene, beam_size, max_len, time.perf_counter() - start,
                             source={"compose": [dict(spec) for spec in specs]})

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
