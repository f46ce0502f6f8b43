"""Inference speed: what a user of the app waits for, and what a batch job gets through.

    HF_HUB_OFFLINE=1 .venv/bin/python benchmarks/inference.py            # everything (~3 min)
    .venv/bin/python benchmarks/inference.py --parts latency --models bundled --repeats 3

Figures (all timed side by side in one run, round-robin, medians reported):

* latency: "caption + all overlays" for one image = the path `Demo.caption` runs when a user
  presses Caption (load the file, preprocess, encode, decode, one heatmap overlay per word on
  the display copy of the image), divided by the encoder forward alone (batch 1, same model),
  for greedy and beam 3. Also a breakdown (load+preprocess / decode / overlays) and the whole
  app handler (`Demo.view`: also writes the overlay JPEGs and the grid PNG).
* slider: one move of the word slider, server side: gradio's own `process_api` for the
  `show_word` event (preprocess the gallery value, `word_view`, postprocess the outputs),
  on a gallery produced by the real caption handler. No model call.
* throughput: `caption_images` on 32 images at batch size 1, 8 and 32, greedy and beam 3.
* startup: `python app.py --server-port P` until http://127.0.0.1:P/ answers 200.

Models: (a) the bundled model (`weights/`, else `runs/scenes/`), (b) a ResNet50-sized model
with random weights (stage 4, 7x7 grid, 224 px, 256/512/512, 3000-word vocabulary).
"""

from __future__ import annotations

import argparse
import asyncio
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import torch  # noqa: E402

from benchmarks.common import (  # noqa: E402
    ROOT,
    clock,
    interference_line,
    interleaved,
    machine,
    machine_line,
    median,
    ms,
    summary,
    table,
    verdict,
    write_results,
)
from captioner.decoding import caption_images, decode, images_to_batch  # noqa: E402
from captioner.model import Captioner, CaptionerConfig  # noqa: E402
from captioner.visualize import attention_overlay  # noqa: E402
from captioner.vocab import SPECIALS  # noqa: E402

EXAMPLES = ROOT / "examples"
TARGETS = {"greedy_ratio": 1.25, "beam3_ratio": 1.5, "slider_s": 0.030, "startup_s": 10.0}
MAX_LEN = 20


def bundled_dir() -> Path:
    for candidate in (ROOT / "weights", ROOT / "runs" / "scenes"):
        if (candidate / "model.safetensors").is_file() and (candidate / "config.json").is_file():
            return candidate
    raise SystemExit("no bundled model: neither weights/ nor runs/scenes/ holds one")


def fake_vocab(size: int = 3000) -> list[str]:
    """Made-up words (Flickr8k with min_freq 5 keeps about 3000)."""
    syllables = ["ka", "lo", "mi", "ne", "ru", "sa", "ti", "vo", "pe", "du", "ga", "zi"]
    words = []
    for i in range(size - len(SPECIALS)):
        a, b, c = i % 12, (i // 12) % 12, i // 144
        words.append(syllables[a] + syllables[b] + str(c))
    return [*SPECIALS, *words]


def resnet50_model() -> Captioner:
    torch.manual_seed(0)
    config = CaptionerConfig(vocab=fake_vocab(), encoder="resnet50", encoder_stage=4,
                             grid_size=7, image_size=224, embed_dim=256, attention_dim=512,
                             hidden_dim=512)
    return Captioner(config).eval()


def load_models(names: list[str]) -> dict:
    """name -> (Demo, image path shown to it, description)."""
    from captioner.demo import Demo, ModelInfo
    from captioner.hub import load_model

    out = {}
    for name in names:
        workdir = Path(tempfile.mkdtemp(prefix=f"bench-{name}-"))
        if name == "bundled":
            model_dir = bundled_dir()
            model = load_model(model_dir)
            info = ModelInfo.read(str(model_dir), model_dir, model)
            image = EXAMPLES / "scene-1.png"
            desc = f"bundled ({model_dir.relative_to(ROOT)})"
        else:
            model = resnet50_model()
            info = ModelInfo("random resnet50", workdir, "resnet50 (random weights)")
            image = EXAMPLES / "photo-grace-hopper.jpg"
            desc = "resnet50 (random init)"
        cfg = model.config
        desc += (f": {cfg.encoder} stage {cfg.encoder_stage}, {cfg.image_size} px, "
                 f"{cfg.grid_size}x{cfg.grid_size} grid, vocab {len(cfg.vocab)}")
        out[name] = (Demo(model, info, workdir=workdir), image, desc)
    return out


# --- latency: caption + all overlays vs encoder forward ---

def latency(demo, image: Path, repeats: int) -> dict:
    from captioner.demo import display_copy, load_input

    model = demo.model
    picture = load_input(str(image))
    x = images_to_batch(model, [picture])

    @torch.inference_mode()
    def encoder():
        return model.encode(x)

    features = encoder()
    captions = {b: caption_images(model, [picture], beam_size=b, max_len=MAX_LEN)[0]
                for b in (1, 3)}
    shown = display_copy(picture)
    base = Path(demo.workdir)

    def view(beam):
        def run():
            # a fresh folder each time, so the overlay files are really written (not reused)
            demo._workdir = Path(tempfile.mkdtemp(dir=base))
            demo.view(str(image), beam, MAX_LEN)
        return run

    def overlays(beam):  # as in Demo.caption: one display copy, one overlay per word
        def run():
            shown = display_copy(picture)
            return [attention_overlay(shown, a, demo.cell_centres)
                    for a in captions[beam].attention]
        return run

    cases = {
        "encoder forward": encoder,
        "caption+overlays greedy": lambda: demo.caption(str(image), 1, MAX_LEN),
        "caption+overlays beam3": lambda: demo.caption(str(image), 3, MAX_LEN),
        "  load+preprocess": lambda: images_to_batch(model, [load_input(str(image))]),
        "  decode greedy": lambda: decode(model, features, beam_size=1, max_len=MAX_LEN),
        "  decode beam3": lambda: decode(model, features, beam_size=3, max_len=MAX_LEN),
        "  overlays greedy": overlays(1),
        "  overlays beam3": overlays(3),
        "app handler Demo.view greedy": view(1),
        "app handler Demo.view beam3": view(3),
    }
    times = interleaved(cases, repeats)
    result = {name.strip(): summary(t) for name, t in times.items()}
    enc = median(times["encoder forward"])
    result["ratio_greedy"] = median(times["caption+overlays greedy"]) / enc
    result["ratio_beam3"] = median(times["caption+overlays beam3"]) / enc
    result["words"] = {"greedy": len(captions[1].tokens), "beam3": len(captions[3].tokens)}
    result["display_size"] = list(shown.size)
    result["image"] = str(image.relative_to(ROOT))
    shutil.rmtree(base, ignore_errors=True)
    return result


# --- slider: gradio's own handling of one slider move ---

def slider(demo, image: Path, moves: int) -> dict:
    from gradio.state_holder import SessionState

    import app as app_module
    from captioner.demo import word_view

    blocks = app_module.build_app(demo, examples=[])
    fns = {f.api_name: f for f in blocks.fns.values()}
    state = SessionState(blocks)
    payload = {"path": str(image), "meta": {"_type": "gradio.FileData"}}

    import gradio as gr

    caption_fn, word_fn = fns["caption_ui"], fns["show_word"]
    at = next(i for i, c in enumerate(caption_fn.outputs) if isinstance(c, gr.Gallery))
    slider_ = next(c for c in word_fn.inputs if not isinstance(c, gr.Gallery))
    resets = [f for f in blocks.fns.values() if slider_ in f.outputs
              and len(f.inputs) == 1 and isinstance(f.inputs[0], gr.Gallery)]

    async def run():
        out = await blocks.process_api(caption_fn, [payload, 3, MAX_LEN], state=state)
        gallery = out["data"][at]  # as the browser holds it and sends it back
        count = len(gallery)
        for fn in resets:  # what follows the caption (e.g. the slider's new maximum)
            await blocks.process_api(fn, [gallery], state=state)
        server, plain = [], []
        for i in range(moves):
            index = 1 + i % max(count, 1)
            inputs = [gallery if isinstance(c, gr.Gallery) else index for c in word_fn.inputs]
            server.append(await _timed(blocks.process_api(word_fn, inputs, state=state)))
            local = [(g["image"]["path"], g["caption"]) for g in gallery]
            plain.append(clock(lambda: word_view(local, index)))  # noqa: B023
        return count, server, plain

    count, server, plain = asyncio.run(run())
    return {"words": count, "process_api show_word": summary(server),
            "word_view alone": summary(plain)}


async def _timed(coroutine) -> float:
    start = time.perf_counter()
    await coroutine
    return time.perf_counter() - start


# --- throughput ---

def throughput(model: Captioner, n_images: int, batch_sizes: list[int], repeats: int) -> dict:
    from captioner.preprocess import load_image

    files = sorted(p for p in EXAMPLES.iterdir() if p.suffix in (".png", ".jpg"))
    base = [load_image(p) for p in files]
    images = [base[i % len(base)] for i in range(n_images)]
    cases = {}
    for beam in (1, 3):
        for bs in batch_sizes:
            cases[f"beam{beam} batch{bs}"] = (
                lambda b=beam, s=bs: caption_images(model, images, beam_size=b,
                                                    max_len=MAX_LEN, batch_size=s))
    times = interleaved(cases, repeats)
    return {name: {**summary(t), "images_per_s": n_images / median(t), "images": n_images}
            for name, t in times.items()}


# --- app start-up ---

def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def startup_once(weights: Path, timeout: float = 60.0) -> float | None:
    port = free_port()
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "GRADIO_ANALYTICS_ENABLED": "False"}
    log = tempfile.TemporaryFile()
    start = time.perf_counter()
    proc = subprocess.Popen([sys.executable, "app.py", "--weights", str(weights),
                             "--server-port", str(port), "--server-name", "127.0.0.1"],
                            cwd=ROOT, env=env, stdout=log, stderr=subprocess.STDOUT)
    ready = None
    try:
        while time.perf_counter() - start < timeout and proc.poll() is None:
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{port}/", timeout=2) as r:
                    if r.status == 200:
                        ready = time.perf_counter() - start
                        break
            except OSError:
                time.sleep(0.05)
    finally:
        proc.terminate()
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
    if ready is None:
        log.seek(0)
        print("app did not become ready:\n" + log.read().decode(errors="replace")[-2000:],
              file=sys.stderr)
    log.close()
    return ready


def python_seconds(code: str) -> float:
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "GRADIO_ANALYTICS_ENABLED": "False"}
    start = time.perf_counter()
    subprocess.run([sys.executable, "-c", code], cwd=ROOT, env=env, check=True,
                   stdout=subprocess.DEVNULL)
    return time.perf_counter() - start


def startup(repeats: int) -> dict:
    if not (ROOT / "app.py").is_file():
        return {"skipped": "no app.py"}
    weights = bundled_dir()
    steps = {
        "python alone": "pass",
        "import torch+torchvision": "import torch, torchvision",
        "import gradio": "import gradio",
        "import + Demo.load": f"from captioner.demo import Demo; Demo.load({str(weights)!r})",
    }
    runs, parts = [], {k: [] for k in steps}
    for _ in range(repeats):
        runs.append(startup_once(weights))
        for name, code in steps.items():
            parts[name].append(python_seconds(code))
    ok = [r for r in runs if r is not None]
    return {"weights": str(weights.relative_to(ROOT)), "runs_s": runs,
            "ready": summary(ok) if ok else None,
            "breakdown": {k: summary(v) for k, v in parts.items()}}


def use_baseline(rev: str) -> None:
    """Swap in the decoding and overlay functions of git revision `rev`, everywhere the
    caption path and this script look them up."""
    import captioner.demo
    from benchmarks.compare import module_at

    old_decoding = module_at(rev, "captioner/decoding.py", "baseline_decoding")
    old_visualize = module_at(rev, "captioner/visualize.py", "baseline_visualize")
    captioner.demo.caption_images = old_decoding.caption_images
    captioner.demo.attention_overlay = old_visualize.attention_overlay
    globals().update(caption_images=old_decoding.caption_images, decode=old_decoding.decode,
                     images_to_batch=old_decoding.images_to_batch,
                     attention_overlay=old_visualize.attention_overlay)


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--parts", default="latency,slider,throughput,startup")
    parser.add_argument("--models", default="bundled,resnet50")
    parser.add_argument("--repeats", type=int, default=9, help="latency rounds")
    parser.add_argument("--throughput-repeats", type=int, default=3)
    parser.add_argument("--images", type=int, default=32, help="images per throughput run")
    parser.add_argument("--batch-sizes", default="1,8,32")
    parser.add_argument("--slider-moves", type=int, default=60)
    parser.add_argument("--startup-repeats", type=int, default=3)
    parser.add_argument("--threads", type=int, default=0, help="torch threads (0: default)")
    parser.add_argument("--name", default="inference", help="results/<name>.json")
    parser.add_argument("--baseline", metavar="REV", help="use captioner/decoding.py and "
                        "captioner/visualize.py as they were at this git revision (before/after)")
    args = parser.parse_args(argv)
    if args.baseline:
        use_baseline(args.baseline)
    if args.threads:
        torch.set_num_threads(args.threads)
    parts = args.parts.split(",")
    m = machine()
    print(machine_line(m))
    results: dict = {"machine": m, "targets": TARGETS, "command": " ".join(sys.argv),
                     "baseline_rev": args.baseline, "models": {}}
    demos = load_models(args.models.split(",")) if set(parts) - {"startup"} else {}
    rows = []
    for name, (demo, image, desc) in demos.items():
        print(f"\n== {desc}")
        r: dict = {"description": desc}
        if "latency" in parts:
            r["latency"] = lat = latency(demo, image, args.repeats)
            words = lat["words"]
            print(table([[k, ms(v["median_s"]), ms(v["min_s"])] for k, v in lat.items()
                         if isinstance(v, dict) and "median_s" in v],
                        ["latency, batch 1", "median", "min"]))
            for beam, key in (("greedy", "ratio_greedy"), ("beam3", "ratio_beam3")):
                target = TARGETS[f"{beam}_ratio"]
                rows.append([name, f"caption+overlays / encoder, {beam} ({words[beam]} words)",
                             f"{lat[key]:.2f}x", f"<= {target}", verdict(lat[key], target)])
        if "slider" in parts:
            r["slider"] = sl = slider(demo, image, args.slider_moves)
            s = sl["process_api show_word"]["median_s"]
            rows.append([name, f"slider step, server side ({sl['words']} words)", ms(s),
                         "<= 30 ms", verdict(s, TARGETS["slider_s"])])
            rows.append([name, "  word_view alone", ms(sl["word_view alone"]["median_s"]),
                         "", ""])
        if "throughput" in parts:
            sizes = [int(b) for b in args.batch_sizes.split(",")]
            r["throughput"] = tp = throughput(demo.model, args.images, sizes,
                                              args.throughput_repeats)
            for k, v in tp.items():
                rows.append([name, f"throughput {k}", f"{v['images_per_s']:.1f} img/s", "", ""])
        results["models"][name] = r
    if "startup" in parts:
        results["startup"] = st = startup(args.startup_repeats)
        if st.get("ready"):
            s = st["ready"]["median_s"]
            rows.append(["app", f"start-up to ready ({st['weights']})", f"{s:.1f} s",
                         "<= 10 s", verdict(s, TARGETS["startup_s"])])
            for k, v in st["breakdown"].items():
                rows.append(["app", f"  {k}", f"{v['median_s']:.1f} s", "", ""])
        elif "skipped" not in st:
            rows.append(["app", "start-up to ready", "never ready", "<= 10 s", "MISSED"])
    print("\n" + table(rows, ["model", "figure (median)", "value", "target", "verdict"]))
    path = write_results(args.name, results)
    print(f"\n{machine_line(m)}\n{interference_line()}\nwritten {path.relative_to(ROOT)}")


if __name__ == "__main__":
    main()
