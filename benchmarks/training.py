"""Training speed and memory: what caching the frozen encoder's features buys.

    HF_HUB_OFFLINE=1 .venv/bin/python benchmarks/training.py                 # both (~11 min)
    .venv/bin/python benchmarks/training.py --parts epoch --encoder resnet18  # quicker

* epoch: one training epoch over cached encoder features, divided by the same epoch re-encoding
  every image for every caption (same data, same model, same batches; the encoder is frozen,
  so re-encoding is a forward pass only, from cached uint8 pixels, i.e. the cheapest possible
  re-encoding). Built from captioner.training's own Objective, Pairs, epoch_pairs and
  encode_captions, and captioner.features.cached_array. A third case trims each batch's
  captions to its longest one (training's Objective now does this itself, so the first and
  third cases measure the same thing).
* memory: peak memory of one epoch vs dataset size (1k, 4k, 16k images). Each size gets a fresh
  process that builds a memory-mapped cache of synthetic features (7x7 grid x 2050 channels,
  fp16, about 200 KB per image) with cached_array, and a second fresh process that trains the
  decoder one epoch over it. Reported: peak RSS (getrusage), peak anonymous RSS (the process's
  own memory, sampled every batch) and the mapped cache pages (RssFile). Caches are deleted.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import numpy as np  # noqa: E402
import torch  # noqa: E402
from PIL import Image  # noqa: E402

from benchmarks.common import (  # noqa: E402
    ROOT,
    interference_line,
    interleaved,
    machine,
    machine_line,
    median,
    summary,
    table,
    verdict,
    write_results,
)
from captioner.features import CachedRows, cached_array  # noqa: E402
from captioner.model import Captioner, CaptionerConfig  # noqa: E402
from captioner.objective import Objective, Pairs  # noqa: E402
from captioner.preprocess import resized_pixels, to_model_input  # noqa: E402
from captioner.training import encode_captions, epoch_pairs  # noqa: E402
from captioner.vocab import SPECIALS, Vocabulary  # noqa: E402

TARGETS = {"epoch_ratio": 0.1}
MAX_CAPTION_LEN = 30  # TrainConfig.max_caption_len


class Split:
    """The slice of a 🤗 datasets split that cached_array and encode_captions use."""

    def __init__(self, images: list, captions: list[list[str]]):
        self.images, self.caption_lists = images, captions

    def __len__(self):
        return len(self.images)

    def __getitem__(self, key):
        if key == "captions":
            return self.caption_lists
        if isinstance(key, int):
            return {"image": self.images[key], "captions": self.caption_lists[key]}
        return {"image": self.images[key], "captions": self.caption_lists[key]}


def fake_words(size: int) -> list[str]:
    syllables = ["ka", "lo", "mi", "ne", "ru", "sa", "ti", "vo", "pe", "du", "ga", "zi"]
    return [syllables[i % 12] + syllables[(i // 12) % 12] + str(i // 144)
            for i in range(size - len(SPECIALS))]


def fake_captions(n_images: int, per_image: int, words: list[str], seed: int = 0):
    """Flickr8k-like: lengths around 11 words (3..30), Zipf-ish word frequencies."""
    rng = np.random.default_rng(seed)
    p = 1.0 / np.arange(1, len(words) + 1)
    p /= p.sum()
    out = []
    for _ in range(n_images):
        lengths = np.clip(rng.normal(11, 4, per_image).round(), 3, 30).astype(int)
        out.append([" ".join(rng.choice(words, size=n, p=p)) for n in lengths])
    return out


def fake_images(n: int, seed: int = 0) -> list[Image.Image]:
    """Photo-sized (500x375) smooth random images."""
    rng = np.random.default_rng(seed)
    images = []
    for _ in range(n):
        small = rng.integers(0, 256, (12, 16, 3), dtype=np.uint8)
        images.append(Image.fromarray(small).resize((500, 375), Image.Resampling.BICUBIC))
    return images


def make_model(encoder: str, vocab: list[str], dims=(256, 512, 512)) -> Captioner:
    torch.manual_seed(0)
    stage, size = 4, 224
    config = CaptionerConfig(vocab=vocab, encoder=encoder, encoder_stage=stage, grid_size=7,
                             image_size=size, embed_dim=dims[0], attention_dim=dims[1],
                             hidden_dim=dims[2])
    model = Captioner(config)
    if hasattr(model.encoder, "fine_tune"):
        model.encoder.fine_tune(0)  # what train() does for a frozen encoder
    else:
        model.encoder.requires_grad_(False)
    return model


def freeze_bn(model: Captioner) -> None:
    """Frozen encoder: keep BatchNorm in eval mode while the decoder trains."""
    model.train()
    model.encoder.eval()


class Trimmed:
    """Proposed change: cut each batch's captions after its longest caption (<end> included),
    instead of always running MAX_CAPTION_LEN + 1 decoder steps."""

    def __init__(self, loader, pad_id: int):
        self.loader, self.pad_id = loader, pad_id

    def __iter__(self):
        for inputs, captions in self.loader:
            length = int((captions != self.pad_id).sum(dim=1).max())
            yield inputs, captions[:, :length]


def train_epoch(objective: Objective, optimizer, inputs: np.ndarray, captions: np.ndarray,
                epoch: int, batch_size: int, per_image: int = 0, trim: bool = False,
                on_batch=None) -> float:
    """The inner loop of captioner.training.train (without accelerate: one CPU process)."""
    pairs = epoch_pairs(captions, per_image, 0, epoch)
    loader = torch.utils.data.DataLoader(Pairs(inputs, captions, pairs), batch_size=batch_size)
    if trim:
        loader = Trimmed(loader, objective.model.vocab.pad_id)
    freeze_bn(objective.model)
    total = 0.0
    for batch_inputs, batch_captions in loader:
        loss, ce = objective(batch_inputs, batch_captions)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(objective.parameters(), 5.0)
        optimizer.step()
        optimizer.zero_grad()
        total += ce.item()
        if on_batch:
            on_batch()
    return total


def epoch_benchmark(args) -> dict:
    words = fake_words(args.vocab)
    vocab = Vocabulary([*SPECIALS, *words])
    model = make_model(args.encoder, vocab.words)
    cfg = model.config
    split = Split(fake_images(args.images), fake_captions(args.images, args.captions, words))
    captions = encode_captions(split, vocab, MAX_CAPTION_LEN)

    @torch.inference_mode()
    def encode_features(images):  # as in captioner.training.train (frozen encoder)
        batch = torch.stack([to_model_input(im, cfg.image_size, cfg.image_mean,
                                            cfg.image_std) for im in images])
        model.encoder.eval()
        return model.encode(batch).half().cpu().numpy()

    def encode_pixels(images):  # as in train() with --fine-tune-encoder
        return np.stack([resized_pixels(im, cfg.image_size).numpy() for im in images])

    tmp = Path(tempfile.mkdtemp(prefix="bench-train-"))
    try:
        start = time.perf_counter()
        features = cached_array(tmp / "features.npy", split, encode_features, desc="features")
        build_features = time.perf_counter() - start
        start = time.perf_counter()
        pixels = cached_array(tmp / "pixels.npy", split, encode_pixels, desc="pixels")
        build_pixels = time.perf_counter() - start

        decoder = [p for n, p in model.named_parameters() if not n.startswith("encoder.")]
        cached = Objective(model, 1.0, pixels=False)
        reencode = Objective(model, 1.0, pixels=True)
        optimizer = torch.optim.Adam(decoder, lr=4e-4)
        epoch = iter(range(1, 10**6))
        bs = args.batch_size
        cases = {
            "cached features": lambda: train_epoch(cached, optimizer, features, captions,
                                                   next(epoch), bs),
            "re-encode every image": lambda: train_epoch(reencode, optimizer, pixels, captions,
                                                         next(epoch), bs),
            "cached, batch trimmed to longest caption": lambda: train_epoch(
                cached, optimizer, features, captions, next(epoch), bs, trim=True),
        }
        times = interleaved(cases, args.repeats, warmup=0)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    lengths = (captions != vocab.pad_id).sum(axis=2)
    result = {name: summary(t) for name, t in times.items()}
    cached_s = median(times["cached features"])
    reencode_s = median(times["re-encode every image"])
    result.update({
        "setup": {"encoder": f"{args.encoder} stage 4, 224 px, frozen", "images": args.images,
                  "captions_per_image": args.captions, "pairs": int((lengths > 0).sum()),
                  "batch_size": bs, "vocab": len(vocab), "dims": "256/512/512",
                  "caption_columns": captions.shape[2],
                  "mean_caption_tokens": float(lengths[lengths > 0].mean()),
                  "feature_cache_bytes": int(features.nbytes),
                  "pixel_cache_bytes": int(pixels.nbytes)},
        "build_feature_cache_s": build_features,
        "build_pixel_cache_s": build_pixels,
        "ratio": cached_s / reencode_s,
        "ratio_including_cache_build": (cached_s + build_features) / reencode_s,
        "ratio_trimmed": median(times["cached, batch trimmed to longest caption"]) / reencode_s,
    })
    return result


# --- memory vs dataset size (each size in fresh processes) ---

GRID_CELLS, FEATURE_DIM = 49, 2050  # ResNet50 stage 4, 7x7 grid, + 2 coordinate channels


def proc_status() -> dict:
    out = {}
    for line in Path("/proc/self/status").read_text().splitlines():
        key, _, value = line.partition(":")
        if key in ("VmHWM", "VmRSS", "RssAnon", "RssFile", "RssShmem"):
            out[key] = int(value.split()[0]) * 1024
    return out


def memory_worker(mode: str, n: int, folder: Path, args) -> dict:
    words = fake_words(args.memory_vocab)
    if mode == "build":
        block = np.random.default_rng(0).standard_normal(
            (256, GRID_CELLS, FEATURE_DIM), dtype=np.float32).astype(np.float16)
        images = [Image.new("RGB", (8, 8))] * n  # cached_array calls to_rgb on each

        def encode(batch):  # synthetic features of the real size and dtype
            return block[: len(batch)]

        start = time.perf_counter()
        cache = cached_array(folder / "train.npy", Split(images, [[]] * n), encode,
                             batch_size=256, desc=f"writing {n}")
        return {"build_s": time.perf_counter() - start, "cache_bytes": int(cache.nbytes),
                "file_bytes": (folder / "train.npy").stat().st_size}
    # train: fresh process, maps the cache built by the other one
    vocab = Vocabulary([*SPECIALS, *words])
    split = Split([None] * n, fake_captions(n, 5, words, seed=1))
    captions = encode_captions(split, vocab, MAX_CAPTION_LEN)
    model = make_model("resnet50", vocab.words, dims=(64, 64, 128))
    if mode == "train-pread":
        features = CachedRows(folder / "train.npy")  # what cached_array returns (training)
    else:
        features = np.load(folder / "train.npy", mmap_mode="r")  # a plain memory map
    assert features.shape == (n, GRID_CELLS, FEATURE_DIM), features.shape
    objective = Objective(model, 1.0, pixels=False)
    optimizer = torch.optim.Adam([p for p in model.parameters() if p.requires_grad], lr=4e-4)
    before = proc_status()
    peak = dict(before)

    def sample():
        now = proc_status()
        for key, value in now.items():
            peak[key] = max(peak.get(key, 0), value)

    start = time.perf_counter()
    train_epoch(objective, optimizer, features, captions, 1, args.batch_size,
                per_image=1, trim=True, on_batch=sample)
    seconds = time.perf_counter() - start
    sample()
    return {"epoch_s": seconds, "pairs": n, "before": before, "peak": peak,
            "ru_maxrss_bytes": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024,
            "captions_array_bytes": int(captions.nbytes)}


def memory_benchmark(args) -> dict:
    sizes = [int(s) for s in args.sizes.split(",")]
    per_image = GRID_CELLS * FEATURE_DIM * 2
    if sum(sizes) * per_image > 5e9 and not args.allow_big:
        raise SystemExit("the caches would exceed 5 GB in total; pass --allow-big")
    base = Path(args.memory_dir or tempfile.mkdtemp(prefix="bench-memory-"))
    results = {}
    try:
        for n in sizes:
            folder = base / f"n{n}"
            folder.mkdir(parents=True, exist_ok=True)
            row = {}
            for mode in ("build", "train", *(("train-pread",) if args.pread else ())):
                out = subprocess.run(
                    [sys.executable, __file__, "--memory-worker", mode, "--n", str(n),
                     "--memory-dir", str(folder), "--batch-size", str(args.batch_size),
                     "--memory-vocab", str(args.memory_vocab)],
                    capture_output=True, text=True, cwd=ROOT, check=False)
                if out.returncode != 0:
                    raise SystemExit(f"memory worker {mode} {n} failed:\n{out.stderr[-3000:]}")
                row[mode] = json.loads(out.stdout.strip().splitlines()[-1])
            results[n] = row
            shutil.rmtree(folder, ignore_errors=True)  # free the disk before the next size
            print(f"  {n} images: peak RSS {row['train']['ru_maxrss_bytes'] / 2**20:.0f} MiB, "
                  f"peak anon {row['train']['peak']['RssAnon'] / 2**20:.0f} MiB", flush=True)
    finally:
        shutil.rmtree(base, ignore_errors=True)
    return {"setup": {"feature_shape": [GRID_CELLS, FEATURE_DIM], "dtype": "float16",
                      "bytes_per_image": per_image, "captions_per_image_visited": 1,
                      "decoder_dims": "64/64/128", "vocab": args.memory_vocab,
                      "batch_size": args.batch_size}, "sizes": results}


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--parts", default="epoch,memory")
    parser.add_argument("--encoder", default="resnet50", choices=["resnet18", "resnet50"])
    parser.add_argument("--images", type=int, default=64)
    parser.add_argument("--captions", type=int, default=5, help="captions per image")
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--vocab", type=int, default=3000)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--sizes", default="1000,4000,16000")
    parser.add_argument("--memory-vocab", type=int, default=500)
    parser.add_argument("--memory-dir", default=None)
    parser.add_argument("--allow-big", action="store_true")
    parser.add_argument("--name", default="training", help="results/<name>.json")
    parser.add_argument("--pread", action=argparse.BooleanOptionalAction, default=True,
                        help="also train each size reading the cache as training does (os.pread)")
    parser.add_argument("--memory-worker", choices=["build", "train", "train-pread"],
                        help=argparse.SUPPRESS)
    parser.add_argument("--n", type=int, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.memory_worker:
        print(json.dumps(memory_worker(args.memory_worker, args.n, Path(args.memory_dir), args)))
        return

    parts = args.parts.split(",")
    m = machine()
    print(machine_line(m))
    results: dict = {"machine": m, "targets": TARGETS, "command": " ".join(sys.argv)}
    rows = []
    if "epoch" in parts:
        results["epoch"] = ep = epoch_benchmark(args)
        s = ep["setup"]
        print(f"\n== epoch: {s['encoder']}, {s['images']} images x {s['captions_per_image']} "
              f"captions = {s['pairs']} pairs, batch {s['batch_size']}, vocab {s['vocab']}")
        for name in ("cached features", "re-encode every image",
                     "cached, batch trimmed to longest caption"):
            rows.append([f"epoch, {name}", f"{ep[name]['median_s']:.2f} s", "", ""])
        rows.append(["feature cache build (once)", f"{ep['build_feature_cache_s']:.2f} s", "",
                     ""])
        rows.append(["cached ÷ re-encode", f"{ep['ratio']:.3f}", "<= 0.1",
                     verdict(ep["ratio"], TARGETS["epoch_ratio"])])
        rows.append(["  (cached + cache build) ÷ re-encode, 1 epoch",
                     f"{ep['ratio_including_cache_build']:.3f}", "", ""])
        rows.append(["  trimmed batches ÷ re-encode", f"{ep['ratio_trimmed']:.3f}", "", ""])
    if "memory" in parts:
        print("\n== memory vs dataset size")
        results["memory"] = mem = memory_benchmark(args)
        for n, row in mem["sizes"].items():
            t = row["train"]
            rows.append([f"{n} images: cache {row['build']['file_bytes'] / 2**20:.0f} MiB on "
                         f"disk, epoch {t['epoch_s']:.0f} s (mmap, as now)",
                         f"peak RSS {t['ru_maxrss_bytes'] / 2**20:.0f} MiB = "
                         f"anon {t['peak']['RssAnon'] / 2**20:.0f} + file-backed "
                         f"{t['peak']['RssFile'] / 2**20:.0f} MiB", "", ""])
            if "train-pread" in row:
                p = row["train-pread"]
                rows.append([f"  same, rows read with os.pread (as training does), epoch "
                             f"{p['epoch_s']:.0f} s",
                             f"peak RSS {p['ru_maxrss_bytes'] / 2**20:.0f} MiB = "
                             f"anon {p['peak']['RssAnon'] / 2**20:.0f} + file-backed "
                             f"{p['peak']['RssFile'] / 2**20:.0f} MiB", "", ""])
        # Flat = peak memory grows by under a tenth of what the cache grows by (a cache read
        # into memory would give 1.0); a longer epoch alone adds ~100 MiB of allocator growth.
        sizes = list(mem["sizes"].values())
        cache_growth = sizes[-1]["build"]["file_bytes"] - sizes[0]["build"]["file_bytes"]

        def slope(key, field):
            first, last = sizes[0][key], sizes[-1][key]
            value = (field(last) - field(first)) / cache_growth
            return value, f"{value:+.3f} ({(field(last) - field(first)) / 2**20:+.0f} MiB)"

        for key, label in (("train", "plain memory map"),
                           ("train-pread", "os.pread, as training does")):
            if key not in sizes[0]:
                continue
            for name, field in (("anonymous RSS", lambda t: t["peak"]["RssAnon"]),
                                ("RSS (getrusage)", lambda t: t["ru_maxrss_bytes"])):
                value, text = slope(key, field)
                mem[f"slope {key} {name}"] = value
                rows.append([f"peak {name} growth / cache growth ({label})", text,
                             "flat (< 0.1)", "met" if value < 0.1 else "MISSED"])
    print("\n" + table(rows, ["figure (median)", "value", "target", "verdict"]))
    path = write_results(args.name, results)
    print(f"\n{machine_line(m)}\n{interference_line()}\nwritten {path.relative_to(ROOT)}")


if __name__ == "__main__":
    main()
