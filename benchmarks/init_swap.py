"""What the decoder's starting memory decides: captions decoded with the LSTM's initial state
built from *another* scene (the previous one in the batch), while attention reads the scene's
own grid.

    HF_HUB_OFFLINE=1 python benchmarks/init_swap.py     # weights/, 1,000 scenes, seed 2026

Show, Attend and Tell starts the LSTM from the mean of the feature grid. If the caption came
only from where the model looks, swapping that start would change little. Reported for the own
and the swapped start (greedy): all objects right for the scene attended to and for the scene
the start came from; how many objects the caption names, compared with both scenes' counts
(only scenes whose counts differ); each mistake by kind (captioner.scenes.caption_mistakes).
Writes results/init_swap.json.
"""

from __future__ import annotations

import argparse
import sys
from collections import Counter

import torch
from common import ROOT, machine, repo_path, scene_arguments, scenes_model_and_test, write_results

sys.path.insert(0, str(ROOT))

from captioner.decoding import decode  # noqa: E402
from captioner.evaluation import objects_of, split_features  # noqa: E402
from captioner.scenes import caption_mistakes  # noqa: E402
from captioner.scenes.captions import caption_correctness, parse_caption  # noqa: E402
from captioner.scenes.objects import as_object  # noqa: E402


def start_from_previous(model):
    """An `init_state` that reads the grid as usual but starts the LSTM from the previous
    scene's grid in the batch (the first scene takes the last one's)."""
    own = model.init_state

    def init_state(features):
        _, projected = own(features)
        state, _ = own(features.roll(1, dims=0))
        return state, projected
    return init_state


@torch.inference_mode()
def captions(model, test, batch_size: int, swap: bool) -> list:
    out = []
    for _, features in split_features(model, test, batch_size=batch_size,
                                      desc="swapped start" if swap else "own start"):
        if swap:
            model.init_state = start_from_previous(model)
        try:
            out += decode(model, features, beam_size=1, max_len=40)
        finally:
            model.__dict__.pop("init_state", None)  # back to the class's own method
    return out


def count_share(said, counts: list[int], scenes: list[int]) -> float:
    """Of `scenes`, the share whose caption names exactly `counts[i]` objects."""
    named = [sum(m.count for m in parse_caption(said[i].tokens).mentions) for i in scenes]
    return sum(n == counts[i] for n, i in zip(named, scenes)) / max(len(scenes), 1)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    scene_arguments(parser)
    parser.add_argument("--batch-size", type=int, default=50)
    args = parser.parse_args()
    model, world, test = scenes_model_and_test(args)
    scenes = [[as_object(o) for o in objects_of(r)] for r in test["objects"]]
    # the scene each caption's start came from: the previous one in its batch
    source = [start + (i - start - 1) % min(args.batch_size, len(scenes) - start)
              for start in range(0, len(scenes), args.batch_size)
              for i in range(start, min(start + args.batch_size, len(scenes)))]
    truth = [sum(o.named for o in objs) for objs in scenes]
    results = {"machine": machine(), "weights": repo_path(args.weights), "world": world.name,
               "seed": args.seed, "images": len(test), "beam_size": 1}
    for name, swap in (("own_start", False), ("swapped_start", True)):
        said = captions(model, test, args.batch_size, swap)
        other = [source[i] if swap else i for i in range(len(said))]
        differ = [i for i in range(len(said)) if truth[i] != truth[other[i]]]
        mistakes = Counter()
        for caption, objs in zip(said, scenes):
            mistakes.update(caption_mistakes(caption.tokens, objs))
        row = {
            "all_right_attended_scene": sum(caption_correctness(c.tokens, o)["objects_correct"]
                                            for c, o in zip(said, scenes)) / len(said),
            "mistakes": dict(mistakes.most_common()),
        }
        if swap:
            row["all_right_start_scene"] = sum(
                caption_correctness(said[i].tokens, scenes[source[i]])["objects_correct"]
                for i in range(len(said))) / len(said)
            row["scenes_with_other_count"] = len(differ)
            row["count_of_attended_scene"] = count_share(said, truth, differ)
            row["count_of_start_scene"] = count_share(said, [truth[j] for j in source], differ)
        results[name] = row
        print(name, {k: round(v, 3) if isinstance(v, float) else v for k, v in row.items()},
              flush=True)
    write_results("init_swap", results)


if __name__ == "__main__":
    main()
