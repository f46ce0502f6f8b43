"""Weight interpolation between two fine-tunes of one model (a "model soup", Wortsman et al.
2022): what the caption gets right, where it looks and whether its words follow a forced look,
at each mix.

    HF_HUB_OFFLINE=1 python benchmarks/soup.py --other RUN   # weights/ and RUN, 1,000 scenes

The model at mix `a` holds (1 - a) x the weights of `--weights` plus a x those of `--other`, as
`python -m captioner average WEIGHTS:1-a OTHER:a` writes it (batch-norm statistics mixed
alike; integer counters kept from `--weights`). Both must be fine-tuned from the same model,
or the mix is noise, and share the architecture (the bundled word-query model mixes only
with runs that have it). docs/worlds.md mixes d, bundled at the time, with a run taught
where to look (`--ground-attention 0.5 --steer-words 0.25`): do the two goals
trade off smoothly, or does a middle point keep both? Reported per mix, on the fresh scenes of
`--seed`: all objects right greedy and beam 3, pointing ±1 cell (beam 3) and steering (greedy).
Writes results/soup.json.
"""

from __future__ import annotations

import argparse
import sys

from common import ROOT, machine, repo_path, scene_arguments, scenes_model_and_test, write_results

sys.path.insert(0, str(ROOT))

from captioner.averaging import average_models  # noqa: E402
from captioner.evaluation import evaluate_split  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    scene_arguments(parser)
    parser.add_argument("--other", required=True, help="the second model folder")
    parser.add_argument("--mix", type=float, nargs="+", default=[0, 0.25, 0.5, 0.75, 1],
                        help="shares of --other (default: 0 0.25 0.5 0.75 1)")
    args = parser.parse_args()
    _, world, test = scenes_model_and_test(args)
    results = {"machine": machine(), "weights": repo_path(args.weights),
               "other": repo_path(args.other), "world": world.name, "seed": args.seed,
               "images": len(test), "mixes": []}
    print("share of other | all right greedy | all right beam 3 | pointing beam 3 | steering")
    for a in args.mix:
        try:  # the mix `python -m captioner average` writes, configs checked alike
            model = average_models([(args.weights, 1 - a), (args.other, a)])
        except ValueError as e:
            raise SystemExit(f"error: {e}") from None
        greedy = evaluate_split(model, test, beam_size=1, max_len=world.max_words, meteor=False)
        beam = evaluate_split(model, test, beam_size=3, max_len=world.max_words, meteor=False)
        row = {"mix": a, "all_right_greedy": greedy["objects_correct"],
               "all_right_beam3": beam["objects_correct"], "pointing_beam3": beam["pointing"],
               "steering": greedy["steering"], "steering_trials": greedy["steering_trials"]}
        results["mixes"].append(row)
        print(f"{a:.2f} | {100 * row['all_right_greedy']:.1f} % | "
              f"{100 * row['all_right_beam3']:.1f} % | {100 * row['pointing_beam3']:.1f} % | "
              f"{100 * row['steering']:.1f} %", flush=True)
    write_results("soup", results)


if __name__ == "__main__":
    main()
