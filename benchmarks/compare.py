"""Before/after: the decoding and overlay functions of a git revision vs the working tree.

    HF_HUB_OFFLINE=1 .venv/bin/python benchmarks/compare.py            # baseline: 723d89e
    .venv/bin/python benchmarks/compare.py --rev HEAD~1

Both versions run side by side in one process (round-robin, medians), on the same models
and inputs as benchmarks/inference.py, and their outputs are compared: decoding must give
identical captions, scores and attention; overlays are reported as the largest pixel difference.
"""

from __future__ import annotations

import argparse
import importlib.util
import os
import subprocess
import sys
import tempfile
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import numpy as np  # noqa: E402
import torch  # noqa: E402

from benchmarks.common import (  # noqa: E402
    ROOT,
    interference_line,
    interleaved,
    machine,
    machine_line,
    median,
    ms,
    summary,
    table,
    write_results,
)
from benchmarks.inference import EXAMPLES, MAX_LEN, bundled_dir, resnet50_model  # noqa: E402
from captioner import decoding, visualize  # noqa: E402
from captioner.demo import display_copy  # noqa: E402
from captioner.hub import load_model  # noqa: E402
from captioner.preprocess import load_image  # noqa: E402

BASELINE = "723d89e"  # the commit before the benchmark work


def module_at(rev: str, path: str, name: str):
    """Import `path` as it was at git revision `rev`."""
    source = subprocess.run(["git", "show", f"{rev}:{path}"], cwd=ROOT, check=True,
                            capture_output=True, text=True).stdout
    folder = Path(tempfile.mkdtemp(prefix="bench-baseline-"))
    file = folder / f"{name}.py"
    file.write_text(source)
    spec = importlib.util.spec_from_file_location(name, file)
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    spec.loader.exec_module(module)
    return module


class ThreeValueStep:
    """The model as decoding code written before `Captioner.step` also returned the gate
    sees it: `step` gives (logits, state, alpha)."""

    def __init__(self, model):
        self.model = model

    def __getattr__(self, name):
        return getattr(self.model, name)

    def step(self, *args):
        return self.model.step(*args)[:3]


def same_captions(a, b) -> bool:
    return all(x.tokens == y.tokens and x.score == y.score
               and np.array_equal(x.attention, y.attention) for x, y in zip(a, b))


def decode_cases(old, name: str, model, repeats: int) -> tuple[dict, list]:
    files = sorted(p for p in EXAMPLES.iterdir() if p.suffix in (".png", ".jpg"))
    images = [load_image(files[i % len(files)]) for i in range(32)]
    with torch.inference_mode():
        features = model.encode(decoding.images_to_batch(model, images))
    cases, checks = {}, []
    before = ThreeValueStep(model)
    for beam in (1, 3):
        for batch in (1, 32):
            f = features[:batch]
            for label, module, m in (("before", old, before), ("after", decoding, model)):
                cases[f"{name} decode beam{beam} batch{batch} {label}"] = (
                    lambda d=module, m=m, f=f, b=beam: d.decode(m, f, beam_size=b,
                                                                max_len=MAX_LEN))
            checks.append((f"{name} beam{beam} batch{batch}", same_captions(
                old.decode(before, f, beam_size=beam, max_len=MAX_LEN),
                decoding.decode(model, f, beam_size=beam, max_len=MAX_LEN))))
    return interleaved(cases, repeats), checks


def overlay_cases(old, name: str, model, image_path: Path, repeats: int):
    picture = load_image(image_path)
    shown = display_copy(picture)
    caption = decoding.caption_images(model, [picture], beam_size=3, max_len=MAX_LEN)[0]
    maps = caption.attention
    if len(maps) < MAX_LEN:  # a full-length caption, to compare like with like
        maps = np.concatenate([maps] * (MAX_LEN // max(len(maps), 1) + 1))[:MAX_LEN]
    centres = model.encoder.cell_centres()
    cases = {
        f"{name} {len(maps)} overlays {shown.width}x{shown.height} before":
            lambda: [old.attention_overlay(shown, a, centres) for a in maps],
        f"{name} {len(maps)} overlays {shown.width}x{shown.height} after":
            lambda: [visualize.attention_overlay(shown, a, centres) for a in maps],
    }
    if hasattr(visualize, "attention_overlays"):
        cases[f"{name} {len(maps)} overlays {shown.width}x{shown.height} after, batched"] = (
            lambda: visualize.attention_overlays(shown, maps, centres))
    diffs = [np.abs(np.asarray(old.attention_overlay(shown, a, centres), dtype=int)
                    - np.asarray(visualize.attention_overlay(shown, a, centres), dtype=int))
             for a in maps]
    check = {"max_abs_diff": int(max(d.max() for d in diffs)),
             "fraction_of_values_differing": float(np.mean([(d > 0).mean() for d in diffs]))}
    return interleaved(cases, repeats), check


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rev", default=BASELINE)
    parser.add_argument("--repeats", type=int, default=7)
    parser.add_argument("--name", default="compare")
    args = parser.parse_args(argv)
    old_decoding = module_at(args.rev, "captioner/decoding.py", "baseline_decoding")
    old_visualize = module_at(args.rev, "captioner/visualize.py", "baseline_visualize")
    m = machine()
    print(machine_line(m))
    models = {"bundled": (load_model(bundled_dir()), EXAMPLES / "scene-1-counting.png"),
              "resnet50": (resnet50_model(), EXAMPLES / "photo-grace-hopper.jpg")}
    times, checks, overlay_checks = {}, [], {}
    for name, (model, image) in models.items():
        t, c = decode_cases(old_decoding, name, model, args.repeats)
        times.update(t)
        checks += c
        t, c = overlay_cases(old_visualize, name, model, image, args.repeats)
        times.update(t)
        overlay_checks[name] = c
    rows = []
    for key, t in times.items():
        if key.endswith(" before"):
            continue
        base = key.replace(" after, batched", " before").replace(" after", " before")
        rows.append([key.replace(" after", ""), ms(median(times[base])), ms(median(t)),
                     f"{median(times[base]) / median(t):.2f}x"])
    print("\n" + table(rows, ["case (median)", f"before ({args.rev})", "after", "speed-up"]))
    print("\ndecoding identical before/after: "
          + ", ".join(f"{k}: {'yes' if v else 'NO'}" for k, v in checks))
    print("overlay pixel differences: " + ", ".join(
        f"{k}: max {v['max_abs_diff']}, {v['fraction_of_values_differing']:.2%} of values"
        for k, v in overlay_checks.items()))
    path = write_results(args.name, {
        "machine": m, "command": " ".join(sys.argv), "baseline_rev": args.rev,
        "times": {k: summary(v) for k, v in times.items()},
        "decoding_identical": dict(checks), "overlay_differences": overlay_checks})
    print(f"\n{machine_line(m)}\n{interference_line()}\nwritten {path.relative_to(ROOT)}")


if __name__ == "__main__":
    main()
