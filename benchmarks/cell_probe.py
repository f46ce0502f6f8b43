"""What one grid cell's features hold: linear probes of a named object's shape and colour from
the encoder features at the cell nearest its centre, by how close its nearest neighbour is.

    HF_HUB_OFFLINE=1 python benchmarks/cell_probe.py      # weights/, 2,000 fresh scenes

The scenes model's mistakes are mostly an attribute borrowed from another object
(scene_errors.py), even when its attention is on the right object. If a cell held only its own
object, a probe would read it as well beside a neighbour as alone. If the cell also holds its
neighbours (a ResNet18 cut after stage 2 has a 99-px theoretical receptive field on a 128-px
image), the probe fails more often near a neighbour, and its wrong answers are the neighbour's
values ("borrowed"). The probes (multinomial logistic regression on standardised features)
train on the first 70 % of scenes and are scored on the rest. Writes results/cell_probe.json.
"""

from __future__ import annotations

import argparse
import sys

import numpy as np
import torch
from common import ROOT, machine, repo_path, write_results

sys.path.insert(0, str(ROOT))

from captioner.hub import load_model  # noqa: E402
from captioner.preprocess import to_model_input  # noqa: E402
from captioner.scenes.worlds import world_of  # noqa: E402

BINS = ((0, 16), (16, 32), (32, 64), (64, float("inf")))  # px to the nearest other object;
# the last bin also holds objects alone in their scene (distance inf)


def stage_features(encoder, images: torch.Tensor, stage: int) -> torch.Tensor:
    """The backbone's output after ResNet `stage` (its stem is 4 modules), pooled to the
    model's grid: (B, cells, channels). The model's own stage also gets its coordinates."""
    if stage == len(encoder.backbone) - 4:
        return encoder(images)
    x = torch.nn.functional.adaptive_avg_pool2d(encoder.backbone[:4 + stage](images),
                                                encoder.grid_size)
    return x.flatten(2).transpose(1, 2)


def objects_and_features(model, world, scenes: int, seed: int, stage: int):
    """Per named object: its scene, its features at the nearest cell, shape and colour, the
    distance to the nearest other named object, and the other objects' shapes and colours."""
    cfg = model.config
    centres = model.encoder.cell_centres(stride=2 ** (stage + 1)) * cfg.image_size
    rows, images = [], []
    for s in range(scenes):
        scene = world.render_scene(np.random.default_rng([seed, s]), cfg.image_size)
        images.append(scene.image)
        named = [o for o in scene.objects if o.named]
        for o in named:
            cx, cy = (o.box[0] + o.box[2]) / 2, (o.box[1] + o.box[3]) / 2
            others = [p for p in named if p is not o]
            dist = min((np.hypot(cx - (p.box[0] + p.box[2]) / 2, cy - (p.box[1] + p.box[3]) / 2)
                        for p in others), default=float("inf"))
            cell = int(np.abs(centres - cy).argmin()) * cfg.grid_size + \
                int(np.abs(centres - cx).argmin())
            rows.append({"scene": s, "cell": cell, "shape": o.shape, "color": o.color,
                         "dist": dist, "other_shapes": {p.shape for p in others},
                         "other_colors": {p.color for p in others}})
    feats = []
    with torch.inference_mode():
        for start in range(0, len(images), 64):
            batch = torch.stack([to_model_input(im, cfg.image_size, cfg.image_mean, cfg.image_std)
                                 for im in images[start:start + 64]])
            feats.append(stage_features(model.encoder, batch, stage).float())
    grid = torch.cat(feats)  # (scenes, cells, dim)
    x = torch.stack([grid[r["scene"], r["cell"]] for r in rows])
    return rows, x


def probe(x_train, y_train, x_test, classes: int, steps: int) -> torch.Tensor:
    """Multinomial logistic regression (L-BFGS, light L2) -> predicted class per test row."""
    mean, std = x_train.mean(0), x_train.std(0) + 1e-6
    a, b = (x_train - mean) / std, (x_test - mean) / std
    layer = torch.nn.Linear(a.shape[1], classes)
    optimiser = torch.optim.LBFGS(layer.parameters(), max_iter=steps, line_search_fn="strong_wolfe")

    def closure():
        optimiser.zero_grad()
        loss = torch.nn.functional.cross_entropy(layer(a), y_train) + \
            1e-3 * layer.weight.pow(2).sum()
        loss.backward()
        return loss

    optimiser.step(closure)
    with torch.no_grad():
        return layer(b).argmax(1)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--weights", default=str(ROOT / "weights"))
    parser.add_argument("--scenes", type=int, default=2000)
    parser.add_argument("--seed", type=int, default=4242, help="never a training seed")
    parser.add_argument("--steps", type=int, default=300, help="L-BFGS iterations per probe")
    parser.add_argument("--stage", type=int, default=None,
                        help="probe the features after this ResNet stage, pooled to the same "
                             "grid (default: the model's own, the features its attention reads)")
    args = parser.parse_args()
    torch.manual_seed(0)
    model = load_model(args.weights).eval()
    world = world_of(model)
    if world is None:
        raise SystemExit(f"{args.weights} is not a scenes model")
    own = len(model.encoder.backbone) - 4
    stage = own if args.stage is None else args.stage
    if not 1 <= stage <= own:
        raise SystemExit(f"--stage {stage}: this encoder has stages 1 to {own}")
    rows, x = objects_and_features(model, world, args.scenes, args.seed, stage)
    train = np.array([r["scene"] < 0.7 * args.scenes for r in rows])
    test_rows = [r for r, t in zip(rows, train) if not t]
    results = {"weights": repo_path(args.weights), "stage": stage, "scenes": args.scenes,
               "seed": args.seed,
               "objects": len(rows), "machine": machine(), "bins": {}}
    predicted, kinds = {}, {"shape": len(world.shapes), "color": len(world.colors)}
    for attr, values in (("shape", list(world.shapes)), ("color", list(world.colors))):
        y = torch.tensor([values.index(r[attr]) for r in rows])
        mask = torch.from_numpy(train)
        predicted[attr] = [values[i] for i in probe(x[mask], y[mask], x[~mask], len(values),
                                                   args.steps)]
    print(f"{len(test_rows)} named objects of {args.scenes - int(0.7 * args.scenes)} held-back "
          f"scenes; probes trained on {int(train.sum())} objects")
    print("nearest other object | objects | shape right | wrong shapes borrowed (by chance) | "
          "colour right | wrong colours borrowed (by chance)")
    for lo, hi in BINS:
        idx = [i for i, r in enumerate(test_rows)
               if lo <= r["dist"] and (r["dist"] < hi or hi == float("inf"))]
        label = f"{lo}-{hi} px" if hi < float("inf") else f">= {lo} px or alone"
        row = {"objects": len(idx)}
        for attr, others in (("shape", "other_shapes"), ("color", "other_colors")):
            wrong = [i for i in idx if predicted[attr][i] != test_rows[i][attr]]
            row[f"{attr}_right"] = 1 - len(wrong) / max(1, len(idx))
            row[f"{attr}_wrong_borrowed"] = (sum(predicted[attr][i] in test_rows[i][others]
                                                 for i in wrong) / len(wrong)) if wrong else None
            # what a wrong value drawn at random from the other values would have borrowed
            row[f"{attr}_wrong_borrowed_chance"] = (sum(
                len(test_rows[i][others] - {test_rows[i][attr]}) / (kinds[attr] - 1)
                for i in wrong) / len(wrong)) if wrong else None
        results["bins"][label] = row

        def pct(v):
            return "–" if v is None else f"{100 * v:.1f} %"

        print(f"{label:>20} | {row['objects']:>7} | {pct(row['shape_right']):>11} | "
              f"{pct(row['shape_wrong_borrowed']):>9} ({pct(row['shape_wrong_borrowed_chance'])})"
              f" | {pct(row['color_right']):>12} | {pct(row['color_wrong_borrowed']):>9} "
              f"({pct(row['color_wrong_borrowed_chance'])})")
    write_results("cell_probe" if args.stage is None else f"cell_probe-stage{stage}", results)


if __name__ == "__main__":
    main()
