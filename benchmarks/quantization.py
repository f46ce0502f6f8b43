"""int8 decoder vs fp32: does dynamic quantization keep the bundled model's content and pointing?

    HF_HUB_OFFLINE=1 nice python benchmarks/quantization.py      # 1,000 scenes, beam 3 (~3 min)

Decodes 1,000 fresh scenes (seed 2026, as README's evaluate) with beam 3, once with the fp32
model and once with its decoder's Linear and LSTMCell layers quantized to int8
(`load_model(..., quantize="int8")`), and writes results/quantization.json. The rule: int8
becomes the default only if exact content ("objects_correct") and pointing both stay within
0.5 points of fp32.
"""

from __future__ import annotations

import argparse
import json
import sys

from common import RESULTS, ROOT, machine, repo_path

sys.path.insert(0, str(ROOT))

import torch  # noqa: E402

from captioner.data import load_caption_dataset  # noqa: E402
from captioner.evaluation import evaluate_split  # noqa: E402
from captioner.hub import load_model  # noqa: E402
from captioner.scenes import generate_scenes  # noqa: E402

KEYS = ("bleu4", "objects_correct", "pointing", "pointing_strict", "relations_correct")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--weights", default=str(ROOT / "weights"))
    parser.add_argument("--num-scenes", type=int, default=1000)
    parser.add_argument("--seed", type=int, default=2026)
    parser.add_argument("--beam-size", type=int, default=3)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--output", default=str(RESULTS / "quantization.json"))
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    source = generate_scenes(ROOT / "data" / f"scenes-eval-64px-seed{args.seed}", num_train=1,
                             num_validation=1, num_test=args.num_scenes, seed=args.seed)
    test = load_caption_dataset(str(source))["test"]
    results = {"machine": machine(), "weights": repo_path(args.weights), "seed": args.seed,
               "images": len(test), "beam_size": args.beam_size}
    for name in ("fp32", "int8"):
        model = load_model(args.weights, quantize=None if name == "fp32" else name)
        metrics = evaluate_split(model, test, beam_size=args.beam_size, max_len=20, full=False)
        results[name] = {k: metrics.get(k) for k in KEYS}
        print(name, results[name], flush=True)
    gaps = {k: round(100 * (results["int8"][k] - results["fp32"][k]), 2)
            for k in ("objects_correct", "pointing", "pointing_strict")}
    results["gap_points"] = gaps  # int8 minus fp32
    results["adopt_int8"] = all(abs(gaps[k]) <= 0.5 for k in ("objects_correct", "pointing"))
    print("gap (points):", gaps, "adopt int8 by default:", results["adopt_int8"])
    with open(args.output, "w") as f:
        json.dump(results, f, indent=2)


if __name__ == "__main__":
    main()
