"""Where a scenes model's captions go wrong: the wrong captions by number of objects, and each
mistake by kind (captioner.scenes.caption_mistakes), on fresh scenes of the model's world.

    HF_HUB_OFFLINE=1 python benchmarks/scene_errors.py     # weights/, 1,000 scenes, seed 2026

"Borrowed": the wrong size, colour or shape belongs to another object in the same scene, the
mistake of a model that mixes two objects up. Beside it, the share a wrong value picked at
random from the attribute's other values would have borrowed. "Named one by one": right
captions that name identical objects one by one where the world counts them. Writes
results/scene_errors.json.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections import Counter

from common import RESULTS, ROOT, machine, repo_path, scene_arguments, scenes_model_and_test

sys.path.insert(0, str(ROOT))

from captioner.evaluation import generate_for_split, objects_of  # noqa: E402
from captioner.scenes import caption_mistakes  # noqa: E402
from captioner.scenes.captions import names_each_kind_once, parse_caption  # noqa: E402
from captioner.scenes.objects import as_object  # noqa: E402

ATTRIBUTES = ("size", "colour", "shape")


def random_borrow_rate(objects, world) -> dict[str, float]:
    """Per attribute: of a named object's other values, the share another named object has
    (what a wrong value drawn at random would borrow), averaged over the named objects."""
    named = [o for o in objects if o.named]
    values = (world.sizes, world.colors, world.shapes)
    rates = {}
    for i, attribute in enumerate(ATTRIBUTES):
        shares = [len({o.kind[i] for o in named} - {obj.kind[i]}) / (len(values[i]) - 1)
                  for obj in named]
        rates[attribute] = sum(shares) / len(shares) if shares else 0.0
    return rates


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    scene_arguments(parser)
    parser.add_argument("--beam-size", type=int, default=3)
    parser.add_argument("--output", default=str(RESULTS / "scene_errors.json"))
    args = parser.parse_args()
    model, world, test = scenes_model_and_test(args)
    captions = generate_for_split(model, test, beam_size=args.beam_size, max_len=40)
    scenes, wrong, mistakes = Counter(), Counter(), Counter()
    one_by_one = 0
    chance = {a: [] for a in ATTRIBUTES}
    for caption, record in zip(captions, test["objects"]):
        objects = [as_object(o) for o in objects_of(record)]
        count = sum(o.named for o in objects)
        scenes[count] += 1
        found = caption_mistakes(caption.tokens, objects)
        wrong[count] += bool(found)
        one_by_one += not found and not names_each_kind_once(parse_caption(caption.tokens))
        mistakes.update(found)
        rates = random_borrow_rate(objects, world)
        for attribute in ATTRIBUTES:  # weighted by this scene's mistakes of that attribute
            n = found[attribute] + found[f"{attribute} borrowed"]
            chance[attribute] += [rates[attribute]] * n
    results = {
        "machine": machine(), "weights": repo_path(args.weights), "world": world.name,
        "seed": args.seed, "images": len(test), "beam_size": args.beam_size,
        "wrong_by_objects": {n: {"wrong": wrong[n], "scenes": scenes[n]} for n in sorted(scenes)},
        "mistakes": dict(mistakes.most_common()),
        "right_but_named_one_by_one": one_by_one,
        "borrowed_if_random": {a: round(sum(v) / len(v), 3) if v else None
                               for a, v in chance.items()},
    }
    print(f"{sum(wrong.values())} of {len(test)} captions wrong (beam {args.beam_size}); "
          "by number of named objects:")
    for n in sorted(scenes):
        print(f"  {n}: {wrong[n]} of {scenes[n]} ({100 * wrong[n] / scenes[n]:.0f} %)")
    print("mistakes:", ", ".join(f"{k} {v}" for k, v in mistakes.most_common()))
    print(f"right, but identical objects named one by one: {one_by_one}")
    for a in ATTRIBUTES:
        total = mistakes[a] + mistakes[f"{a} borrowed"]
        if total:
            print(f"  {a}: {mistakes[f'{a} borrowed']} of {total} borrowed "
                  f"(random wrong values: {100 * results['borrowed_if_random'][a]:.0f} %)")
    with open(args.output, "w") as f:
        json.dump(results, f, indent=2)


if __name__ == "__main__":
    main()
