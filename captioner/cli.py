"""`python -m captioner caption|evaluate|push|average|ensemble|deploy-space ...`: captions
(JSON, CSV, attention grids), scores on a test split, uploads, weight mixes, ensembles, and a
Hugging Face Space in one command."""

from __future__ import annotations

import argparse
import csv
import json
import os
import re
import sys
from pathlib import Path

from captioner.cli_checks import Parser, at_least, output_problem
from captioner.decoding import BATCH_SIZE, Guide, caption_images, point_map, prefix_ids
from captioner.familiarity import unfamiliar_warning
from captioner.hub import BUNDLED_WEIGHTS, DEVICE_CHOICES, QUANTIZE_CHOICES, load_model
from captioner.model import HARD_READOUTS, WeightsError
from captioner.preprocess import ImageError, load_image
from captioner.visualize import save_attention_grid
from captioner.vocab import tokenize

IMAGE_SUFFIXES = {".jpg", ".jpeg", ".png", ".gif", ".bmp", ".webp", ".tif", ".tiff"}
GRID_SUFFIXES = (".png", ".jpg", ".jpeg", ".pdf", ".svg")  # what matplotlib writes here
CAPTION_SUFFIXES = (".jsonl", ".csv")
PERCENT_METRICS = {"objects_correct", "relations_correct", "relations_stated", "pointing",
                   "pointing_chance", "pointing_strict", "pointing_strict_chance",
                   "pointing_count", "pointing_colour", "pointing_shape"}


def add_model_options(parser: argparse.ArgumentParser) -> None:
    """--weights, --revision, --device and --quantize: how `caption` and `evaluate` find and
    place a model, and how they decode."""
    parser.add_argument("--weights", default=None, metavar="DIR_OR_REPO_ID",
                        help=f"model folder or Hub repo id (default: bundled "
                             f"{BUNDLED_WEIGHTS.name}/)")
    parser.add_argument("--revision", default=None,
                        help="branch, tag or commit of a Hub repo (default: main)")
    parser.add_argument("--device", default="auto",
                        help=f"{DEVICE_CHOICES} (default: auto, a GPU when there is one)")
    parser.add_argument("--max-len", type=at_least(1), default=None,
                        help="longest caption, in words (default: the longest caption of the "
                             "model's scene world, 40 for scenes-v2; else 20)")
    parser.add_argument("--batch-size", type=at_least(1), default=BATCH_SIZE,
                        help=f"images captioned together (default: {BATCH_SIZE})")
    parser.add_argument("--quantize", choices=QUANTIZE_CHOICES, default=None,
                        help="int8 decoder, CPU only; docs/questioning.md gives what it costs "
                             "in accuracy (default: none, fp32)")


def build_parser() -> argparse.ArgumentParser:
    parser = Parser(prog="python -m captioner",
                                     description="Caption images and show where the model looks.")
    commands = parser.add_subparsers(dest="command", required=True)
    cap = commands.add_parser("caption", help="caption images, or every image in folders")
    cap.add_argument("images", nargs="+", type=Path, metavar="IMAGE_OR_DIR",
                     help="image files, or folders (searched recursively for images)")
    add_model_options(cap)
    cap.add_argument("--beam-size", type=at_least(1), default=3, help="beam width; 1: greedy "
                     "(default: 3)")
    cap.add_argument("--json", action="store_true",
                     help="print one JSON object per image (with a 'warning' when the model "
                          "was not trained on images like it)")
    cap.add_argument("--output", type=Path, metavar="FILE.jsonl|FILE.csv",
                     help="also write the captions to this JSON-lines or CSV file (its folder "
                          "is created)")
    cap.add_argument("--attention-grid", type=Path, metavar="OUT.png",
                     help="save the image and every word's attention (.png, .jpg, .pdf or "
                          ".svg); with several images, OUT-<image name>.png for each; where "
                          "names repeat, the path below the images' common folder with / and . "
                          "as - (a/cat.jpg, b/cat.jpg: OUT-a-cat-jpg.png, OUT-b-cat-jpg.png)")
    cap.add_argument("--top-k", type=at_least(0), default=0, metavar="K",
                     help="for every word, the K most likely words at that step and its gate "
                          "(0-1: how much of the attended image it used); --json: "
                          "'alternatives' [{word, prob}] and 'gate' (default: 0, none)")
    cap.add_argument("--prefix", default="", metavar='"WORDS"',
                     help='force the caption to start with these words, e.g. "a small blue" '
                          "(default: none)")
    cap.add_argument("--look-here", action="append", default=[], type=look_here,
                     metavar="WORD:X,Y",
                     help="at word number WORD (1-based) look at the point X,Y (fractions of "
                          "the image width and height, 0-1; 0,0 is the top left) instead of "
                          "where the model would look, then go on decoding; repeatable "
                          "(default: none)")

    ev = commands.add_parser(
        "evaluate", help="score a model without teacher forcing on a dataset's test split",
        description="Decode a test split (no teacher forcing) and print BLEU-1..4, METEOR, "
                    "ROUGE-L, CIDEr (pycocoevalcap x 100); on scenes also exact content, "
                    "relations and pointing (percentages).")
    add_model_options(ev)
    ev.add_argument("--dataset", default=None,
                    help="a scene world, 'scenes' (= 'scenes-v1') or 'scenes-v2', freshly "
                         "generated with --seed; or a dataset id, folder or file, as for "
                         "train_space.py (default: the world the model was trained on, "
                         "else scenes)")
    for column in ("image", "caption", "split"):
        ev.add_argument(f"--{column}-column", default=None,
                        help=f"the dataset's {column} column, as for train_space.py")
    ev.add_argument("--num-scenes", type=at_least(1), default=1000,
                    help="test scenes generated (default: 1000)")
    ev.add_argument("--seed", type=at_least(0), default=2026,
                    help="scenes seed; the bundled weights were trained on seed 0 "
                         "(default: 2026)")
    ev.add_argument("--data-dir", type=Path, default=Path("data"),
                    help="where scenes are generated, relative to the working directory "
                         "(default: data)")
    ev.add_argument("--beam-size", type=at_least(1), nargs="+", default=[1, 3],
                    help="one or more beam widths (default: 1 3)")
    ev.add_argument("--output", type=Path, metavar="METRICS.json",
                    help="also write every figure to this JSON file (its folder is created)")
    ev.add_argument("--faithfulness", action=argparse.BooleanOptionalAction, default=True,
                    help="on scenes, also measure whether the words depend on where the model "
                         "looks (docs/faithfulness.md) (default: on)")
    ev.add_argument("--faithfulness-scenes", type=at_least(0), default=250, metavar="N",
                    help="measure faithfulness on the first N test scenes (about a hundred "
                         "decodes each); the JSON records how many (default: 250; 0: all)")
    ev.add_argument("--curve-words", type=at_least(0), default=200, metavar="N",
                    help="deletion/insertion curves for the first N named words only "
                         "(default: 200)")
    ev.add_argument("--hard-readout", choices=HARD_READOUTS, default=None,
                    help="hard-attention models: read the expectation or the argmax cell at "
                         "test time (default: the model's config)")

    push = commands.add_parser(
        "push", help="upload a trained model folder to the Hugging Face Hub",
        description="Upload a model folder written by train_space.py (weights, config, card, "
                    "figures; not the checkpoint) to a Hub model repo, created if needed. The "
                    "token comes from HF_TOKEN or `hf auth login` and is never printed or saved.")
    push.add_argument("model_dir", type=Path, metavar="MODEL_DIR",
                      help="the run's --output-dir (holds model.safetensors and config.json)")
    push.add_argument("repo_id", metavar="OWNER/NAME", help="the Hub model repo to upload to")

    avg = commands.add_parser(
        "average", help="mix the weights of fine-tunes of one model (a model soup)",
        description="Write the weighted mean of the weights of models fine-tuned from one "
                    "model (same vocabulary and architecture): e.g. a plain fine-tune and a "
                    "run taught where to look (docs/worlds.md).")
    avg.add_argument("models", nargs="+", metavar="FOLDER[:SHARE]",
                     help="model folders or Hub repo ids, each with its share of the mix "
                          "(default 1; shares are normalised to sum 1)")
    avg.add_argument("--output", type=Path, required=True, metavar="DIR",
                     help="a new folder for the mixed model.safetensors and config.json")

    joined = commands.add_parser(
        "ensemble", help="join models of one architecture into one that decodes with all",
        description="Write one model whose members decode together: at each word the mean of "
                    "their next-word probabilities, and the mean of their attention maps "
                    "(captioner/ensemble.py). The members need one vocabulary, architecture "
                    "and world; they may be trained apart (docs/worlds.md).")
    joined.add_argument("models", nargs="+", metavar="FOLDER",
                        help="model folders or Hub repo ids, two or more")
    joined.add_argument("--output", type=Path, required=True, metavar="DIR",
                        help="a new folder for the ensemble's model.safetensors and config.json")
    joined.add_argument("--half", action="store_true",
                        help="store the weights as float16: half the file; the model still "
                             "computes in float32, on the rounded weights")

    from captioner.space import add_deploy_parser

    add_deploy_parser(commands)
    return parser


def push_command(args) -> int:
    from captioner.hub import check_push_target, push_folder, read_config

    try:
        read_config(args.model_dir)  # a model folder, not any folder
    except WeightsError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    check_push_target(args.repo_id, "push")
    print(f"pushed to {push_folder(args.model_dir, args.repo_id)}")
    return 0


def average_command(args) -> int:
    from captioner.averaging import average_models, parse_part, recipe

    try:
        parts = [parse_part(text) for text in args.models]
    except ValueError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    return write_new_model(args.output, lambda: average_models(parts), recipe(parts))


def ensemble_command(args) -> int:
    from captioner.ensemble import build_ensemble

    return write_new_model(args.output, lambda: build_ensemble(args.models),
                           "an ensemble of " + " + ".join(args.models)
                           + (", stored as float16" if args.half else ""), half=args.half)


def write_new_model(output: Path, build, described: str, half: bool = False) -> int:
    """Build a model and save it to the new folder `output`; every mistake (an occupied or
    unwritable output, models that cannot be joined) is one line and writes nothing."""
    from captioner.model import WEIGHTS_FILE

    try:
        if (output / WEIGHTS_FILE).exists() or output.is_file():
            raise ValueError(f"--output {output}: already holds a model or is a file; "
                             "give a new folder")
        model = build()
    except ValueError as e:  # WeightsError too: a folder that is not a model
        print(f"error: {e}", file=sys.stderr)
        return 2
    try:
        model.save(output, half=half)
    except OSError as e:
        print(f"error: --output {output}: cannot write there ({e.strerror or e})",
              file=sys.stderr)
        return 2
    print(f"wrote {output}: {described}")
    return 0


def open_model(args, problem: str | None = None):
    """(model, None), or (None, the message): a `problem` already found with the arguments,
    a bad device, missing or broken weights."""
    if problem:
        return None, problem
    try:
        model = load_model(args.weights, device=args.device, revision=args.revision,
                           quantize=args.quantize)
    except ValueError as e:  # WeightsError is a ValueError too
        prefix = "cannot load weights: " if isinstance(e, WeightsError) else ""
        return None, f"{prefix}{e}"
    if args.max_len is None:
        from captioner.scenes import world_of

        world = world_of(model)
        args.max_len = world.max_words if world else 20
    return model, None


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
    from captioner.data import DatasetFormatError, DatasetLoadError, load_caption_dataset
    from captioner.evaluation import compositional_metrics, evaluate_split
    from captioner.scenes import get_world, is_world, world_of

    model, error = open_model(args, output_problem(args.output, "--output", (".json",)))
    if not error and args.hard_readout and model.config.attention != "hard":
        error = "--hard-readout is for hard-attention models; this one is soft"
    if error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    if args.hard_readout:
        model.config.hard_readout = args.hard_readout
    trained_on = world_of(model)
    dataset = args.dataset or ("scenes" if trained_on in (None, get_world("scenes"))
                               else trained_on.name)
    world = get_world(dataset) if is_world(dataset) else None
    held_out = None
    try:
        if world is not None:
            source = scene_set(args, world, model.config.image_size)
            if world.held_out_pairs:
                held_out = load_caption_dataset(
                    scene_set(args, world, model.config.image_size, held_out=True))["test"]
        else:
            source = dataset
        test = load_caption_dataset(source, image_column=args.image_column,
                                    caption_column=args.caption_column,
                                    split_column=args.split_column)["test"]
    except (FileNotFoundError, DatasetFormatError, DatasetLoadError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    results = {"weights": str(args.weights or BUNDLED_WEIGHTS), "dataset": dataset,
               "world": world.name if world else None,
               "seed": args.seed if world else None, "images": len(test),
               "quantize": args.quantize, "attention": model.config.attention,
               "hard_readout": model.config.hard_readout
               if model.config.attention == "hard" else None}
    for beam in args.beam_size:
        metrics = evaluate_split(model, test, beam_size=beam, max_len=args.max_len,
                                 batch_size=args.batch_size)
        results[f"beam{beam}"] = metrics
        shown = {k: v for k, v in metrics.items() if k not in ("examples", "skipped")}
        print(f"beam {beam}: " + ", ".join(
            f"{k} {v * 100:.1f} %" if k in PERCENT_METRICS and v is not None else f"{k} {v}"
            for k, v in shown.items()))
        if metrics.get("steering") is not None:
            print(f"steering (greedy): {metrics['steering'] * 100:.1f} % (chance "
                  f"{metrics['steering_chance'] * 100:.1f} %, {metrics['steering_trials']} "
                  f"trials) beside pointing {metrics['pointing'] * 100:.1f} % (chance "
                  f"{metrics['pointing_chance'] * 100:.1f} %)" + (
                      ": the words follow where the model looks, not only co-occur with it"
                      if metrics["steering"] > metrics["steering_chance"] else
                      ": no better than chance, the words do not follow where it looks"))
    if held_out is not None:
        block = {"pairs": [" ".join(p) for p in world.held_out_pairs], "images": len(held_out)}
        for beam in args.beam_size:
            metrics = compositional_metrics(model, held_out, beam_size=beam,
                                            max_len=args.max_len, batch_size=args.batch_size)
            block[f"beam{beam}"] = metrics
            print(f"held-out pairs, beam {beam}: " + ", ".join(
                f"{k} {metrics[k] * 100:.1f} %" if metrics[k] is not None else f"{k} None"
                for k in ("objects_correct", "held_out_named", "pointing")))
        results["compositional"] = block
    if args.faithfulness and "objects" in test.column_names:
        from captioner.faithfulness import faithfulness_for_split, summary_lines

        if args.quantize:  # int8 layers have no gradients for Grad-CAM
            print("faithfulness: skipped with --quantize (needs gradients)")
        else:
            scenes = min(args.faithfulness_scenes or len(test), len(test))
            results["faithfulness"] = {"scenes": scenes, **faithfulness_for_split(
                model, test.select(range(scenes)), max_len=args.max_len,
                batch_size=args.batch_size, curve_words=args.curve_words, seed=args.seed)}
            print("\n".join(summary_lines(results["faithfulness"])))
    if args.output:
        args.output.write_text(json.dumps(results, indent=2))
    return 0


def scene_set(args, world, model_size: int, *, held_out: bool = False) -> Path:
    """Freshly generated test scenes of `world` (--num-scenes, --seed, under --data-dir), at
    the model's image size when the world allows it; `held_out`: the compositional set."""
    from captioner.scenes import generate_scenes

    size = world.size_for(model_size)
    kind = "-heldout" if held_out else ""
    return generate_scenes(args.data_dir / f"{world.folder_prefix}{kind}-eval-{size}px-seed"
                           f"{args.seed}",
                           num_train=1, num_validation=1, num_test=args.num_scenes,
                           image_size=size, seed=args.seed, world=world.name, held_out=held_out)


def expand_inputs(paths: list[Path]) -> tuple[list[Path], list[str]]:
    """Files as given (duplicates once), folders as the images below them, sorted; and a
    message for each folder that holds no image."""
    found, errors = [], []
    for path in paths:
        if path.is_dir():
            images = sorted(p for p in path.rglob("*")
                            if p.suffix.lower() in IMAGE_SUFFIXES and p.is_file())
            if not images:
                kinds = ", ".join(sorted(IMAGE_SUFFIXES))
                errors.append(f"{path}: a folder with no images ({kinds})")
            found += images
        else:
            found.append(path)
    unique = list(dict.fromkeys(found))
    return unique, errors


def grid_names(out: Path, inputs: list[Path]) -> dict[Path, Path]:
    """Attention-grid file of each input: OUT itself for one input, else OUT-<image name>;
    where names repeat, the path below the inputs' common folder tells them apart. Computed
    from all inputs, so a name never depends on which other images failed."""
    suffix = out.suffix or ".png"
    if len(inputs) == 1:
        return {inputs[0]: out}
    stems = [p.stem for p in inputs]
    if len(set(stems)) < len(stems):
        common = Path(os.path.commonpath([p.resolve().parent for p in inputs]))
        stems = [re.sub(r"[\\/.]", "-", str(p.resolve().relative_to(common))) for p in inputs]
    return {p: out.with_name(f"{out.stem}-{stem}{suffix}") for p, stem in zip(inputs, stems)}


def caption_record(path: Path, caption, top_k: int = 0, warning: str | None = None) -> dict:
    """One --json line: the caption, whether it was cut at --max-len, the honesty warning
    (None when the image is like the model's training data), and with --top-k the
    alternatives and gate of each word."""
    record = {"image": str(path), "caption": caption.text, "tokens": caption.tokens,
              "score": round(caption.score, 4), "attention_shape": list(caption.attention.shape),
              "truncated": caption.truncated, "warning": warning}
    if top_k:
        record["alternatives"] = [[{"word": w, "prob": round(p, 4)} for w, p in ranked]
                                  for ranked in caption.alternatives]
        record["gate"] = [round(float(g), 4) for g in caption.gate]
    if caption.beams:
        record["beams"] = [{"tokens": tokens, "score": round(score, 4)}
                           for tokens, score in caption.beams]
    return record


def write_records(path: Path, records: list[dict]) -> None:
    """JSON lines, or CSV (image, caption, score, truncated, warning) for a .csv name."""
    with open(path, "w", newline="", encoding="utf-8") as f:
        if path.suffix.lower() == ".csv":
            writer = csv.DictWriter(f, ["image", "caption", "score", "truncated", "warning"],
                                    extrasaction="ignore")
            writer.writeheader()
            writer.writerows(records)
        else:
            f.writelines(json.dumps(r) + "\n" for r in records)


def caption_problem(args) -> str | None:
    """What is wrong with `caption`'s --look-here and --prefix, found before any image is
    captioned (the app's API refuses the same requests)."""
    for position, _, _ in args.look_here:
        if position >= args.max_len:
            return (f"--look-here word {position + 1} is past --max-len {args.max_len}: "
                    "no caption reaches it; pick an earlier word or raise --max-len")
    words = len(tokenize(args.prefix))
    if words > args.max_len:
        return (f"--prefix has {words} words, more than --max-len {args.max_len}: shorten it "
                "or raise --max-len")
    return None


def unused_looks(args, caption) -> list[int]:
    """--look-here words (1-based) the caption never reached: it ended before them."""
    return [position + 1 for position, _, _ in args.look_here if position > len(caption.tokens)]


def text_lines(path: Path, caption, top_k: int, max_len: int) -> list[str]:
    """The plain-text output of one image; with --top-k, a line per word."""
    cut = f" [cut at --max-len {max_len}]" if caption.truncated else ""
    lines = [f"{path}: {caption.text}{cut}"]
    if top_k:
        for i, (word, ranked) in enumerate(zip(caption.tokens, caption.alternatives), 1):
            options = ", ".join(f"{w} {p:.2f}" for w, p in ranked)
            lines.append(f"  {i}. {word} (gate {float(caption.gate[i - 1]):.2f}): {options}")
    return lines


def caption_command(args) -> int:
    # the outputs are checked before the model loads; the rest needs --max-len, whose default
    # is the model's
    model, error = open_model(args, output_problem(args.output, "--output", CAPTION_SUFFIXES)
                              or output_problem(args.attention_grid, "--attention-grid",
                                                GRID_SUFFIXES))
    error = error or caption_problem(args)
    if error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    centres = model.encoder.cell_centres()
    guide = Guide(prefix=args.prefix, attention={
        position: point_map(centres, x, y) for position, x, y in args.look_here})
    try:
        prefix_ids(model.vocab, guide.prefix)
    except ValueError as e:
        print(f"error: --prefix: {e}", file=sys.stderr)
        return 2
    inputs, errors = expand_inputs(args.images)
    for message in errors:
        print(f"error: {message}", file=sys.stderr)
    grids = grid_names(args.attention_grid, inputs) if args.attention_grid else {}
    images, paths = [], []
    for path in inputs:
        try:
            images.append(load_image(path))
            paths.append(path)
        except ImageError as e:
            print(f"error: {e}", file=sys.stderr)
            errors.append(str(e))
    captions = caption_images(model, images, beam_size=args.beam_size, max_len=args.max_len,
                              batch_size=args.batch_size, top_k=args.top_k,
                              guide=guide) if images else []
    records = []
    for path, image, caption in zip(paths, images, captions):
        unused = unused_looks(args, caption)
        if unused:
            errors.append(f"{path}: --look-here word {unused[0]}: the caption ended after "
                          f"{len(caption.tokens)} words, before it; the point was not used")
            print(f"error: {errors[-1]}", file=sys.stderr)
            continue
        warning = unfamiliar_warning(image, model)
        records.append(caption_record(path, caption, args.top_k, warning))
        if args.json:
            print(json.dumps(records[-1]))
        else:
            print("\n".join(text_lines(path, caption, args.top_k, args.max_len)))
            if warning:
                print(f"warning: {path}: {warning}", file=sys.stderr)
        if args.attention_grid:
            save_attention_grid(grids[path], image, caption.tokens, caption.attention, centres,
                                title=caption.text)
    if args.output:
        write_records(args.output, records)
    return 1 if errors else 0


def main(argv=None) -> int:
    args = build_parser().parse_args(argv)
    if args.command == "deploy-space":
        from captioner.space import deploy_command

        return deploy_command(args)
    return {"caption": caption_command, "evaluate": evaluate_command, "push": push_command,
            "average": average_command, "ensemble": ensemble_command}[args.command](args)
