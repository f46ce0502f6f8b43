"""Inference speed: what a user of the app waits for, and what a batch job gets through.

    HF_HUB_OFFLINE=1 .venv/bin/python benchmarks/inference.py            # everything (~3 min)
    .venv/bin/python benchmarks/inference.py --parts latency --models bundled --repeats 3

Figures (all timed side by side in one run, round-robin, medians reported):

* latency: the app's caption handler `Demo.view` for one image (open the upload, preprocess,
  encode, decode, build the explorer payload that the browser draws every heatmap from) divided
  by the encoder forward alone (batch 1, same model), greedy and beam 3, with a breakdown
  (load+preprocess / encode / decode / payload). Before and after in the same run: `Demo.view`
  and the encoder of git revision `--before` (default 4552883, the app that wrote one overlay
  JPEG per word and a grid PNG on the server), on the same model files, in a subprocess.
  There is no server-side slider step any more: the browser draws every word.
* throughput: `caption_images` on 32 images at batch size 1, 8 and 32, greedy and beam 3.
* startup: `python app.py --server-port P` until http://127.0.0.1:P/ answers 200.

Models: (a) the bundled model (`weights/`, else `runs/scenes/`), (b) a ResNet50-sized model
with random weights (stage 4, 7x7 grid, 224 px, 256/512/512, 3000-word vocabulary), saved to a
temporary folder so that both versions of the app load the same files.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
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
    free_port,
    interference_line,
    interleaved,
    machine,
    machine_line,
    median,
    ms,
    quiet_env,
    scratch,
    summary,
    table,
    tree_at,
    verdict,
    write_results,
)
from captioner.decoding import caption_images, decode, images_to_batch  # noqa: E402
from captioner.model import Captioner, CaptionerConfig  # noqa: E402
from captioner.vocab import SPECIALS  # noqa: E402

EXAMPLES = ROOT / "examples"
TARGETS = {"view_greedy_ratio_resnet50": 1.5, "startup_s": 10.0}
MAX_LEN = 20
BEFORE = "4552883"  # the app that drew the overlays on the server


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


def model_dir(name: str) -> Path:
    """The folder `app.py --weights` and `Demo.load` take: the bundled one, or the random
    ResNet50-sized model saved to a temporary folder (about 100 MB)."""
    if name == "bundled":
        return bundled_dir()
    return resnet50_model().save(scratch("resnet50"))


def shown_image(name: str) -> Path:
    """The image each model is shown: a scene for the scene model, a photo for the other."""
    return EXAMPLES / ("scene-1-counting.png" if name == "bundled" else "photo-grace-hopper.jpg")


def load_models(names: list[str]) -> dict:
    """name -> (Demo, image path shown to it (allowed as a client file), description, folder)."""
    from captioner.demo import Demo

    out = {}
    for name in names:
        folder = model_dir(name)
        demo = Demo.load(str(folder))
        image = shown_image(name)
        demo.allow_files([image])
        cfg = demo.model.config
        desc = (f"bundled ({folder.relative_to(ROOT)})" if name == "bundled"
                else "resnet50 (random init)")
        desc += (f": {cfg.encoder} stage {cfg.encoder_stage}, {cfg.image_size} px, "
                 f"{cfg.grid_size}x{cfg.grid_size} grid, vocab {len(cfg.vocab)}")
        out[name] = (demo, image, desc, folder)
    return out


# --- latency: the caption handler vs the encoder forward ---

def latency(demo, image: Path, repeats: int) -> dict:
    from captioner.demo import display_size, explorer_payload
    from captioner.demo.core import TOP_K, Result, unfamiliar_warning

    model = demo.model
    picture = demo.files.open(str(image))
    x = images_to_batch(model, [picture])

    @torch.inference_mode()
    def encoder():
        return model.encode(x)

    features = encoder()
    captions = {b: caption_images(model, [picture], beam_size=b, max_len=MAX_LEN,
                                  top_k=TOP_K)[0] for b in (1, 3)}

    def payload(beam):  # what Demo.view adds after the model: the familiarity check (scenes
        c = captions[beam]  # models), the display size, JSON-ready maps and questions

        def run():
            result = Result(c, display_size(*picture.size),
                            warning=unfamiliar_warning(picture, model))
            return explorer_payload(result, demo.cell_centres)
        return run

    cases = {
        "encoder forward": encoder,
        "Demo.view greedy": lambda: demo.view(str(image), 1, MAX_LEN),
        "Demo.view beam3": lambda: demo.view(str(image), 3, MAX_LEN),
        "  load+preprocess": lambda: images_to_batch(model, [demo.files.open(str(image))]),
        "  decode greedy": lambda: decode(model, features, beam_size=1, max_len=MAX_LEN,
                                          top_k=TOP_K),
        "  decode beam3": lambda: decode(model, features, beam_size=3, max_len=MAX_LEN,
                                         top_k=TOP_K),
        "  payload greedy": payload(1),
        "  payload beam3": payload(3),
    }
    times = interleaved(cases, repeats)
    result = {name.strip(): summary(t) for name, t in times.items()}
    enc = median(times["encoder forward"])
    result["ratio_greedy"] = median(times["Demo.view greedy"]) / enc
    result["ratio_beam3"] = median(times["Demo.view beam3"]) / enc
    result["words"] = {"greedy": len(captions[1].tokens), "beam3": len(captions[3].tokens)}
    result["payload_json_bytes"] = {
        beam: len(json.dumps(demo.view(str(image), b, MAX_LEN).explorer))
        for beam, b in (("greedy", 1), ("beam3", 3))}
    result["image"] = str(image.relative_to(ROOT))
    return result


# Runs in the old revision's tree (its `captioner` first on sys.path, this tree's `benchmarks`
# after it): the old handler wrote every overlay JPEG and the grid PNG, into a fresh folder
# each time so that they are really written.
BEFORE_LATENCY = """
import json, sys, tempfile, torch
from pathlib import Path
from benchmarks.common import interleaved, median, scratch, summary
from captioner.decoding import images_to_batch
from captioner.demo import Demo, load_input
folder, image, repeats, max_len, threads = sys.argv[1:]
if int(threads):
    torch.set_num_threads(int(threads))
demo = Demo.load(folder)
x = images_to_batch(demo.model, [load_input(image)])
def view(beam):
    def run():
        demo._workdir = Path(tempfile.mkdtemp(dir=base))
        demo.view(image, beam, int(max_len))
    return run
base = scratch("before-view")
encoder = torch.inference_mode()(lambda: demo.model.encode(x))
times = interleaved({"encoder forward": encoder, "Demo.view greedy": view(1),
                     "Demo.view beam3": view(3)}, int(repeats))
out = {k: summary(v) for k, v in times.items()}
enc = median(times["encoder forward"])
out["ratio_greedy"] = median(times["Demo.view greedy"]) / enc
out["ratio_beam3"] = median(times["Demo.view beam3"]) / enc
print(json.dumps(out))
"""


def latency_before(rev: str, tree: Path, folder: Path, image: Path, repeats: int,
                   threads: int) -> dict:
    """`Demo.view` and the encoder of revision `rev` (extracted in `tree`), same model files."""
    env = quiet_env(PYTHONPATH=str(ROOT))
    out = subprocess.run([sys.executable, "-c", BEFORE_LATENCY, str(folder), str(image),
                          str(repeats), str(MAX_LEN), str(threads)], cwd=tree, env=env,
                         check=True, capture_output=True, text=True).stdout
    return {"rev": rev, **json.loads(out.splitlines()[-1])}


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

@contextlib.contextmanager
def app_server(weights: Path, tree: Path = ROOT, threads: int = 0, timeout: float = 60.0):
    """Run `tree`'s app.py on a free loopback port (torch on `threads` threads; 0: its
    default); yields (url, seconds until its page answered 200, or None if it never did
    within `timeout`). The process is killed after."""
    port = free_port()
    url = f"http://127.0.0.1:{port}/"
    log = tempfile.TemporaryFile()
    start = time.perf_counter()
    proc = subprocess.Popen([sys.executable, "app.py", "--weights", str(weights),
                             "--server-port", str(port), "--server-name", "127.0.0.1"],
                            cwd=tree, env=quiet_env(**threads_env(threads)), stdout=log,
                            stderr=subprocess.STDOUT)
    ready = None
    try:
        while time.perf_counter() - start < timeout and proc.poll() is None:
            try:
                with urllib.request.urlopen(url, timeout=2) as r:
                    if r.status == 200:
                        ready = time.perf_counter() - start
                        break
            except OSError:
                time.sleep(0.05)
        if ready is None:
            log.seek(0)
            print("app did not become ready:\n" + log.read().decode(errors="replace")[-2000:],
                  file=sys.stderr)
        yield url, ready
    finally:
        proc.terminate()
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        log.close()


def threads_env(threads: int) -> dict[str, str]:
    """What makes a child's torch use `threads` threads (nothing for 0: its default)."""
    return {"OMP_NUM_THREADS": str(threads)} if threads else {}


def startup_once(weights: Path) -> float | None:
    with app_server(weights) as (_, ready):
        return ready


def python_seconds(code: str) -> float:
    start = time.perf_counter()
    subprocess.run([sys.executable, "-c", code], cwd=ROOT, env=quiet_env(), check=True,
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


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--parts", default="latency,throughput,startup")
    parser.add_argument("--models", default="bundled,resnet50")
    parser.add_argument("--repeats", type=int, default=9, help="latency rounds")
    parser.add_argument("--throughput-repeats", type=int, default=3)
    parser.add_argument("--images", type=int, default=32, help="images per throughput run")
    parser.add_argument("--batch-sizes", default="1,8,32")
    parser.add_argument("--startup-repeats", type=int, default=3)
    parser.add_argument("--threads", type=int, default=0, help="torch threads (0: default)")
    parser.add_argument("--name", default="inference", help="results/<name>.json")
    parser.add_argument("--before", default=BEFORE, metavar="REV",
                        help="also time Demo.view of this git revision's captioner package on "
                             "the same model files ('' to skip)")
    args = parser.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    parts = args.parts.split(",")
    m = machine()
    print(machine_line(m))
    results: dict = {"machine": m, "targets": TARGETS, "command": " ".join(sys.argv),
                     "before_rev": args.before or None, "models": {}}
    demos = load_models(args.models.split(",")) if set(parts) - {"startup"} else {}
    tree = tree_at(args.before, "captioner") if args.before and "latency" in parts else None
    rows = []
    for name, (demo, image, desc, folder) in demos.items():
        print(f"\n== {desc}")
        r: dict = {"description": desc}
        if "latency" in parts:
            r["latency"] = lat = latency(demo, image, args.repeats)
            print(table([[k, ms(v["median_s"]), ms(v["min_s"])] for k, v in lat.items()
                         if isinstance(v, dict) and "median_s" in v],
                        ["latency, batch 1", "median", "min"]))
            if tree:
                r["latency_before"] = old = latency_before(args.before, tree, folder, image,
                                                           args.repeats, args.threads)
            for beam in ("greedy", "beam3"):
                ratio = lat[f"ratio_{beam}"]
                target = TARGETS["view_greedy_ratio_resnet50"]
                judged = name == "resnet50" and beam == "greedy"
                after = (f"{ms(lat[f'Demo.view {beam}']['median_s'])} / "
                         f"{ms(lat['encoder forward']['median_s'])} = {ratio:.2f}x")
                before = (f"{ms(old[f'Demo.view {beam}']['median_s'])} / "
                          f"{ms(old['encoder forward']['median_s'])} = "
                          f"{old[f'ratio_{beam}']:.2f}x") if tree else ""
                rows.append([name, f"Demo.view / encoder, {beam} ({lat['words'][beam]} words)",
                             before, after, f"<= {target}" if judged else "reported",
                             verdict(ratio, target) if judged else ""])
            for part in ("load+preprocess", "decode greedy", "decode beam3", "payload greedy",
                         "payload beam3"):
                rows.append([name, f"  {part}", "", ms(lat[part]["median_s"]), "", ""])
            rows.append([name, "  payload JSON greedy / beam3", "",
                         "{greedy} / {beam3} bytes".format(**lat["payload_json_bytes"]), "", ""])
        if "throughput" in parts:
            sizes = [int(b) for b in args.batch_sizes.split(",")]
            r["throughput"] = tp = throughput(demo.model, args.images, sizes,
                                              args.throughput_repeats)
            for k, v in tp.items():
                rows.append([name, f"throughput {k}", "", f"{v['images_per_s']:.1f} img/s",
                             "", ""])
        results["models"][name] = r
    if "startup" in parts:
        results["startup"] = st = startup(args.startup_repeats)
        if st.get("ready"):
            s = st["ready"]["median_s"]
            rows.append(["app", f"start-up to ready ({st['weights']})", "", f"{s:.1f} s",
                         "<= 10 s", verdict(s, TARGETS["startup_s"])])
            for k, v in st["breakdown"].items():
                rows.append(["app", f"  {k}", "", f"{v['median_s']:.1f} s", "", ""])
        elif "skipped" not in st:
            rows.append(["app", "start-up to ready", "", "never ready", "<= 10 s", "MISSED"])
    before = f"before ({args.before})" if tree else "before"
    print("\n" + table(rows, ["model", "figure (median)", before, "after (this tree)", "target",
                              "verdict"]))
    path = write_results(args.name, results)
    print(f"\n{machine_line(m)}\n{interference_line()}\nwritten {path.relative_to(ROOT)}")


if __name__ == "__main__":
    main()
