"""Compact forms of what the browser draws: one word's attention map packed into a few hundred
characters, a lab scene's picture as a small WebP, and the scene lab's truth (boxes, per-word
hits, the verdict in words). Plain functions, no gradio."""

from __future__ import annotations

import base64
import io

import numpy as np
from PIL import Image

from captioner import lab
from captioner.scenes.objects import MIN_VISIBLE


def pack_map(attention: np.ndarray) -> str:
    """One word's map for the browser, which draws it scaled to its own peak with brightness
    sqrt(heat): so the square root of the map scaled to its peak, one byte per cell, base64.
    A 16 x 16 map takes 344 characters (about 2,000 as decimals) and is drawn within one
    brightness level of the exact map (docs/speed.md; tests/test_demo.py checks the levels)."""
    values = np.clip(np.asarray(attention, dtype=np.float64).ravel(), 0, None)
    peak = values.max(initial=0.0)
    levels = np.round(255 * np.sqrt(values / peak)) if peak > 0 else np.zeros_like(values)
    return base64.b64encode(levels.astype(np.uint8).tobytes()).decode("ascii")


def unpack_map(text: str) -> np.ndarray:
    """`pack_map`'s map (flattened, scaled to its peak), as explorer.js reads it."""
    return (np.frombuffer(base64.b64decode(text), dtype=np.uint8) / 255.0) ** 2


def picture_data_url(image: Image.Image) -> str:
    """A lab scene's picture at its own size as a `data:` URL, to travel inside the caption's
    JSON for the explorer to draw (enlarged without smoothing): WebP at quality 90, about
    3 KB for a 128-px scene, where a lossless PNG of its noisy backgrounds takes over 20 KB.
    Only the drawing uses it; the model captions the lossless picture."""
    buffer = io.BytesIO()
    image.convert("RGB").save(buffer, format="WEBP", quality=90, method=6)
    return "data:image/webp;base64," + base64.b64encode(buffer.getvalue()).decode("ascii")


def object_label(obj: dict) -> str:
    """"small red circle", and for a mostly covered object (never to be named) a note."""
    label = f"{obj['size']} {obj['color']} {obj['shape']}"
    if obj.get("visible", 1.0) < MIN_VISIBLE:
        label += f" (mostly hidden: {obj['visible']:.0%} shows)"
    return label


def lab_payload(scene: lab.LabScene) -> dict:
    """The scene lab's truth for the explorer: each object's box (fractions of the side) and,
    per word naming objects, which ones (a count word names them all) and whether the
    attention peak fell inside one of their boxes."""
    return {"objects": [{"box": o["box_fraction"], "label": object_label(o)}
                        for o in scene.objects],
            "words": [{"index": w["index"], "object": w["object"], "objects": w["objects"],
                       "hit": w["hit"]} for w in scene.words]}


def truth_markdown(scene: lab.LabScene) -> str:
    """The scene lab's verdict beside the model's caption, in words (no emoji: not every
    visitor's system draws them), short enough to leave the picture on the first screen."""
    objects = "; ".join(object_label(o) for o in scene.objects)
    verdict = "right" if scene.objects_correct else "wrong"
    if scene.caption.truncated:
        verdict = "wrong: the caption was cut at the maximum length"
    lines = [f"**Ground truth:** {objects}. **Caption content: {verdict}** (every object's size, "
             "colour and shape)."]
    if scene.relations_correct is not None:
        lines[0] += f" Relation: **{'right' if scene.relations_correct else 'wrong'}**."
    if scene.words:
        hits = ", ".join(f"“{w['word']}” {'hit' if w['hit'] else 'miss'}" for w in scene.words)
        lines.append(f"**Attention peak inside the named object's box** (a count word: one "
                     f"of its objects' boxes): {hits}.")
    captions = " · ".join(f"“{r}”" for r in scene.references)
    lines.append(f"<details><summary>The five true captions</summary>{captions}</details>")
    return "\n\n".join(lines)
