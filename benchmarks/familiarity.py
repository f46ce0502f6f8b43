"""The scenes-model familiarity check (captioner.familiarity): false alarms and what it flags.

    nice python benchmarks/familiarity.py     # 1,000 scenes x 3 variants + natural images

False alarms: fresh scenes (seed 2026, never used in training) flagged as unlike a scene —
as rendered (64 px), upscaled to 320 px (bicubic, as an app user might upload) and that upscaled
copy saved as JPEG (quality 75). Natural images: every picture available offline here: the
example photo, matplotlib's sample images and its sample MRI slice (s1045.ima, 16-bit).
Writes results/familiarity.json.
"""

from __future__ import annotations

import gzip
import io
import json
import sys

import numpy as np
from common import RESULTS, ROOT

sys.path.insert(0, str(ROOT))

from matplotlib import cbook  # noqa: E402
from PIL import Image  # noqa: E402

from captioner.familiarity import looks_like_scene  # noqa: E402
from captioner.preprocess import load_image  # noqa: E402
from captioner.scenes import render_scene, scene_rng  # noqa: E402


def upscaled(image: Image.Image) -> Image.Image:
    return image.resize((320, 320), Image.Resampling.BICUBIC)


def jpeg(image: Image.Image) -> Image.Image:
    buffer = io.BytesIO()
    upscaled(image).save(buffer, format="JPEG", quality=75)
    return Image.open(io.BytesIO(buffer.getvalue())).convert("RGB")


def natural_images() -> dict[str, Image.Image]:
    sample = cbook._get_data_path("sample_data")
    images = {str(p.relative_to(ROOT)): load_image(p) for p in sorted(ROOT.glob("examples/*"))
              if p.suffix in (".jpg", ".png") and not p.stem.startswith("scene-")}
    images |= {f"matplotlib sample_data/{p.name}": load_image(p)
               for p in sorted(sample.iterdir()) if p.suffix in (".jpg", ".png")}
    mri = np.frombuffer(gzip.open(sample / "s1045.ima.gz").read(), np.uint16).reshape(256, 256)
    images["matplotlib sample_data/s1045.ima.gz (MRI)"] = Image.fromarray(
        (mri / mri.max() * 255).astype(np.uint8)).convert("RGB")
    return images


def main(num_scenes: int = 1000, seed: int = 2026) -> None:
    variants = {"64 px": lambda im: im, "320 px": upscaled, "320 px JPEG q75": jpeg}
    alarms = {name: [] for name in variants}
    for i in range(num_scenes):
        image = render_scene(scene_rng(seed, "test", i), 64).image
        for name, variant in variants.items():
            if not looks_like_scene(variant(image)).familiar:
                alarms[name].append(i)
    natural = {name: looks_like_scene(image) for name, image in natural_images().items()}
    results = {"seed": seed, "scenes": num_scenes,
               "false_alarm_rate": {k: len(v) / num_scenes for k, v in alarms.items()},
               "false_alarms": alarms,
               "natural": {k: {"flagged": not v.familiar, "reason": v.reason}
                           for k, v in natural.items()}}
    print(json.dumps({k: results[k] for k in ("false_alarm_rate", "natural")}, indent=2))
    (RESULTS / "familiarity.json").write_text(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()
