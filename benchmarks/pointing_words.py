"""Where each kind of word looks: pointing split by count, colour and shape words, and for
the misses, what the attention peak falls on instead.

    HF_HUB_OFFLINE=1 python benchmarks/pointing_words.py                 # weights/, 1,000 scenes
    HF_HUB_OFFLINE=1 python benchmarks/pointing_words.py --weights RUN --name pointing_words-RUN

A caption "a small red circle to the left of a big blue square" names two mentions. At "red"
the model may already look at the blue square (the *next* mention), still at the object
before (the *previous* one), at another named object, at an object the caption does not name,
or at the background. A model that looks ahead at its colour words and still names the colour
right says it from memory, which is what steering measures (docs/worlds.md). Beam 3, a hit is
a peak inside the box widened by one cell, as `evaluate`'s pointing. Writes
results/pointing_words.json (or `--name`).
"""

from __future__ import annotations

import argparse
import sys
from collections import Counter

from common import ROOT, machine, repo_path, scene_arguments, scenes_model_and_test, write_results

sys.path.insert(0, str(ROOT))

from captioner.evaluation import (  # noqa: E402
    caption_correctness,
    generate_for_split,
    objects_of,
    pointing_words,
)

PLACES = ("own", "next", "previous", "other named", "unnamed object", "background")


def place_of(peak, mention: int, groups, objects, tolerance) -> str:
    """Which of `PLACES` a missed peak (x, y) falls on, for a word of mention `mention`."""
    def hits(group):
        x, y = peak
        return any(x0 - tolerance <= x <= x1 + tolerance and y0 - tolerance <= y <= y1 + tolerance
                   for x0, y0, x1, y1 in (objects[k]["box"] for k in group))

    for other, place in ((mention + 1, "next"), (mention - 1, "previous")):
        if 0 <= other < len(groups) and hits(groups[other]):
            return place
    if any(hits(g) for g in groups):
        return "other named"
    if hits(range(len(objects))):
        return "unnamed object"
    return "background"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    scene_arguments(parser)
    parser.add_argument("--name", default="pointing_words", help="results file name")
    args = parser.parse_args()
    model, world, test = scenes_model_and_test(args)
    cfg = model.config
    size, centres, tolerance = cfg.image_size, model.encoder.cell_centres(), \
        cfg.image_size / cfg.grid_size
    captions = generate_for_split(model, test, beam_size=3, max_len=world.max_words,
                                  desc="decoding (beam 3)")
    places = {kind: Counter() for kind in ("count", "colour", "shape")}
    for caption, objects in zip(captions, test["objects"]):
        objects = objects_of(objects)
        result = caption_correctness(caption.tokens, objects)
        mention_of = {index: number for number, mention in enumerate(result["parsed"].mentions)
                      for _, index in mention.named_words}
        for word in pointing_words(caption, objects, size, size, centres, tolerance):
            place = "own" if word["hit"] else place_of(
                word["peak"], mention_of[word["word_index"]], result["groups"], objects,
                tolerance)
            places[word["kind"]][place] += 1
    results = {"machine": machine(), "weights": repo_path(args.weights), "world": world.name,
               "seed": args.seed, "images": len(test), "beam_size": 3, "words": {}}
    print("word kind | words | " + " | ".join(PLACES))
    for kind, counts in places.items():
        total = sum(counts.values())
        results["words"][kind] = {"words": total, **{p: counts[p] for p in PLACES}}
        print(f"{kind} | {total} | " + " | ".join(
            f"{100 * counts[p] / max(total, 1):.1f} %" for p in PLACES), flush=True)
    write_results(args.name, results)


if __name__ == "__main__":
    main()
