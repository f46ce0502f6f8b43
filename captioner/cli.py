"""`python -m captioner caption IMAGE ...`: captions, JSON output and attention grids."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from captioner.decoding import Guide, caption_images, point_map, prefix_ids
from captioner.hub import BUNDLED_WEIGHTS, QUANTIZE_CHOICES, load_model
from captioner.model import WeightsError
from captioner.preprocess import ImageError, load_image
from captioner.visualize import save_attention_grid


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m captioner",
                                     description="Caption images and show where the model looks.")
    commands = parser.add_subparsers(dest="command", required=True)
    cap = commands.add_parser("caption", help="caption one or more images")
    cap.add_argument("images", nargs="+", type=Path, metavar="IMAGE")
    cap.add_argument("--weights", default=None, metavar="DIR_OR_REPO_ID",
                     help=f"model folder or Hub repo id (default: bundled {BUNDLED_WEIGHTS.name}/)")
    cap.add_argument("--beam-size", type=int, default=3)
    cap.add_argument("--max-len", type=int, default=20)
    cap.add_argument("--batch-size", type=int, default=16)
    cap.add_argument("--json", action="store_true", help="one JSON object per image")
    cap.add_argument("--attention-grid", type=Path, metavar="OUT.png",
                     help="save the image and every word's attention; with several images, "
                          "OUT-<image name>.png for each")
    cap.add_argument("--top-k", type=int, default=0, metavar="K",
                     help="with --json: for every word, the K most likely words at that step "
                          "('alternatives', [{word, prob}]) and its gate (0-1: how much of "
                          "the attended image it used)")
    cap.add_argument("--prefix", default="", metavar='"WORDS"',
                     help='force the caption to start with these words, e.g. "a small blue"')
    cap.add_argument("--look-here", action="append", default=[], type=look_here,
                     metavar="WORD:X,Y",
                     help="at word number WORD (1-based) look at the point X,Y (fractions of "
                          "the image width and height, 0-1; 0,0 is the top left) instead of "
                          "where the model would look, then go on decoding; repeatable")
    cap.add_argument("--quantize", choices=QUANTIZE_CHOICES, default=None,
                     help="int8 decoder (CPU); see README for what it costs in accuracy")
    ev = commands.add_parser(
        "evaluate", help="score a model without teacher forcing on a dataset's test split",
        description="Decode a test split (no teacher forcing) and print BLEU-1..4, METEOR, "
                    "ROUGE-L, CIDEr; on scenes also exact content, relations and pointing.")
    ev.add_argument("--weights", default=None, metavar="DIR_OR_REPO_ID")
    ev.add_argument("--dataset", default="scenes",
                    help="'scenes' (freshly generated with --seed) or a dataset id/folder")
    ev.add_argument("--num-scenes", type=int, default=1000)
    ev.add_argument("--seed", type=int, default=2026,
                    help="scenes seed; the bundled weights were trained on seed 0")
    ev.add_argument("--data-dir", type=Path, default=Path("data"))
    ev.add_argument("--beam-size", type=int, nargs="+", default=[1, 3])
    ev.add_argument("--max-len", type=int, default=20)
    ev.add_argument("--output", type=Path, metavar="METRICS.json")
    ev.add_argument("--quantize", choices=QUANTIZE_CHOICES, default=None,
                    help="evaluate with an int8 decoder (CPU)")
    return parser


def look_here(value: str) -> tuple[int, float, float]:
    """WORD:X,Y -> (0-based word position, x, y); argparse reports the ValueError text."""
    try:
        word, point = value.split(":")
        x, y = (float(v) for v in point.split(","))
        position = int(word) - 1
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"'{value}' is not WORD:X,Y (e.g. 3:0.25,0.7)") from None
    if position < 0 or not (0 <= x <= 1 and 0 <= y <= 1):
        raise argparse.ArgumentTypeError(
            f"'{value}': WORD counts from 1 and X,Y are fractions in [0, 1]")
    return position, x, y


def evaluate_command(args) -> int:
    from captioner.data import load_caption_dataset
    from captioner.evaluation import evaluate_split
    from captioner.scenes import generate_scenes

    try:
        model = load_model(args.weights, quantize=args.quantize)
    except WeightsError as e:
        print(f"error: cannot load weights: {e}", file=sys.stderr)
        return 2
    source = args.dataset
    if source == "scenes":
        size = model.config.image_size
        source = generate_scenes(args.data_dir / f"scenes-eval-{size}px-seed{args.seed}",
                                 num_train=1, num_validation=1, num_test=args.num_scenes,
                                 image_size=size, seed=args.seed)
    test = load_caption_dataset(source)["test"]
    results = {"weights": str(args.weights or BUNDLED_WEIGHTS), "dataset": args.dataset,
               "seed": args.seed if args.dataset == "scenes" else None, "images": len(test),
               "quantize": args.quantize}
    for beam in args.beam_size:
        metrics = evaluate_split(model, test, beam_size=beam, max_len=args.max_len)
        results[f"beam{beam}"] = metrics
        shown = {k: v for k, v in metrics.items() if k not in ("examples", "skipped")}
        print(f"beam {beam}: " + ", ".join(f"{k} {v}" for k, v in shown.items()))
        if metrics.get("steering") is not None:
            print(f"steering (greedy): {metrics['steering']} (chance "
                  f"{metrics['steering_chance']}, {metrics['steering_trials']} trials) beside "
                  f"pointing {metrics['pointing']} (chance {metrics['pointing_chance']}): "
                  "the words follow where the model looks, not only co-occur with it")
    if args.output:
        args.output.write_text(json.dumps(results, indent=2))
    return 0


def grid_path(out: Path, image: Path, several: bool) -> Path:
    return out.with_name(f"{out.stem}-{image.stem}{out.suffix or '.png'}") if several else out


def caption_record(path: Path, caption, top_k: int) -> dict:
    """One --json line: the caption, and with --top-k the alternatives and gate of each word."""
    record = {"image": str(path), "caption": caption.text, "tokens": caption.tokens,
              "score": round(caption.score, 4), "attention_shape": list(caption.attention.shape),
              "truncated": caption.truncated}
    if top_k:
        record["alternatives"] = [[{"word": w, "prob": round(p, 4)} for w, p in ranked]
                                  for ranked in caption.alternatives]
        record["gate"] = [round(float(g), 4) for g in caption.gate]
    if caption.beams:
        record["beams"] = [{"tokens": tokens, "score": round(score, 4)}
                           for tokens, score in caption.beams]
    return record


def caption_command(args) -> int:
    if args.beam_size < 1 or args.max_len < 1:
        print("error: --beam-size and --max-len must be at least 1", file=sys.stderr)
        return 2
    if args.top_k < 0:
        print("error: --top-k must be 0 or more", file=sys.stderr)
        return 2
    try:
        model = load_model(args.weights, quantize=args.quantize)
    except WeightsError as e:
        print(f"error: cannot load weights: {e}", file=sys.stderr)
        return 2
    centres = model.encoder.cell_centres()
    guide = Guide(prefix=args.prefix, attention={
        position: point_map(centres, x, y) for position, x, y in args.look_here})
    try:
        prefix_ids(model.vocab, guide.prefix)
    except ValueError as e:
        print(f"error: --prefix: {e}", file=sys.stderr)
        return 2
    images, paths, failed = [], [], 0
    for path in args.images:
        try:
            images.append(load_image(path))
            paths.append(path)
        except ImageError as e:
            print(f"error: {e}", file=sys.stderr)
            failed += 1
    captions = caption_images(model, images, beam_size=args.beam_size, max_len=args.max_len,
                              batch_size=args.batch_size, top_k=args.top_k,
                              guide=guide) if images else []
    for path, image, caption in zip(paths, images, captions):
        if args.json:
            print(json.dumps(caption_record(path, caption, args.top_k)))
        else:
            print(f"{path}: {caption.text}")
        if args.attention_grid:
            out = grid_path(args.attention_grid, path, len(paths) > 1)
            save_attention_grid(out, image, caption.tokens, caption.attention, centres,
                                title=caption.text)
    return 1 if failed else 0


def main(argv=None) -> int:
    args = build_parser().parse_args(argv)
    return {"caption": caption_command, "evaluate": evaluate_command}[args.command](args)
