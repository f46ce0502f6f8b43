"""What a visitor feels: the app in Chromium over an emulated real network, before and after.

    HF_HUB_OFFLINE=1 .venv/bin/python benchmarks/browser.py                 # ~3 min on 2 cores
    .venv/bin/python benchmarks/browser.py --models bundled --steps 5 --uploads 3

Needs Debian's chromium (/usr/bin/chromium) and playwright for Python (no `playwright install`).
Each app runs in its own process on a loopback port, with Chrome DevTools' network emulation of
150 ms latency, 10 Mbit/s down and 5 Mbit/s up: the old app (git revision `--before`, default
4552883, which drew one overlay JPEG per word on the server and asked it for every slider step,
extracted with `git archive`) and this tree's app, on the same weights, measured by the same code:

* requests per slider step: requests the page sends while the word slider moves;
* slider step to heatmap painted: set the slider's value and dispatch `input`, until the new
  heatmap is on the canvas (this app: `#heatmap`'s `data-painted-at`, stamped right after
  `putImageData`; the old app: the new `#heatmap img` loaded), and until the next animation
  frame; each word twice: shown for the first time, then again;
* data received per photo caption: bytes received for one upload of
  examples/photo-grace-hopper.jpg, after a warm-up caption (fonts etc.), not counting the page;
* upload to painted: from the file input's `change` to the first heatmap of the caption painted,
  beside the server's own time for it (the "· NN ms" of the details line: model and drawing);
* first page load: bytes on the wire (compressed, as Chromium asks for them) and requests, from
  opening the address with an empty cache until the network is idle: gradio's own scripts and
  styles, the page, and whatever it shows first (this app: the first example, captioned).

The photo is uploaded with one byte appended (same pixels): the page shows it among its examples,
and a visitor's own photo would not be in the browser's cache. Later uploads are the photo
mirrored or brightened (same size, another caption), so no old picture is served from the cache.
Models as in inference.py: the bundled one and a random ResNet50-sized one (saved to a
temporary folder for `app.py --weights`).
"""

from __future__ import annotations

import argparse
import re
import sys
from pathlib import Path
from urllib.parse import urlsplit

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from PIL import Image, ImageEnhance, ImageOps  # noqa: E402

from benchmarks.common import (  # noqa: E402
    ROOT,
    interference_line,
    machine,
    machine_line,
    percentiles,
    scratch,
    table,
    tree_at,
    verdict,
    write_results,
)
from benchmarks.inference import BEFORE, EXAMPLES, app_server, model_dir  # noqa: E402
from benchmarks.network import (  # noqa: E402
    CHROMIUM,
    CHROMIUM_ARGS,
    LATENCY_MS,
    NETWORK,
    Traffic,
)

PHOTO = EXAMPLES / "photo-grace-hopper.jpg"
WARM_UP = EXAMPLES / "scene-1-counting.png"
TIMEOUT_MS = 60_000
TARGETS = {"requests_per_step": 0, "step_painted_ms": 16, "photo_caption_kb": 150,
           "upload_round_trips": 3, "page_kb": 600}

# Installed in the page before its own scripts. Every heatmap paint is recorded in
# window.__bench.paints as {at, frame} (performance.now() when painted, and at the next animation
# frame): this app's explorer stamps #heatmap's data-painted / data-painted-at itself; for the
# old app a paint is a #heatmap <img> that finished loading. `t0` is the file input's change.
HOOKS = """(() => {
window.__bench = { t0: 0, paints: [] };
const paint = (at) => requestAnimationFrame(
  () => window.__bench.paints.push({ at, frame: performance.now() }));
document.addEventListener("change", (e) => {
  if (e.target.matches?.("#input-image input[type=file]")) window.__bench.t0 = performance.now();
}, true);
document.addEventListener("load", (e) => {
  if (e.target.tagName === "IMG" && e.target.closest("#heatmap")) paint(performance.now());
}, true);
new MutationObserver((records) => {
  for (const r of records) {
    if (r.attributeName === "data-painted") paint(Number(r.target.dataset.paintedAt));
  }
}).observe(document, { subtree: true, attributes: true, attributeFilter: ["data-painted"] });
})();"""

# One slider step: value set and `input` dispatched, as a drag does; resolves when painted.
STEP = """async (word) => {
  const b = window.__bench, before = b.paints.length;
  const slider = document.querySelector("#word-slider input[type=range]");
  const t0 = performance.now();
  slider.value = String(word);
  slider.dispatchEvent(new Event("input", { bubbles: true }));
  slider.dispatchEvent(new Event("change", { bubbles: true }));
  const end = t0 + 30000;
  while (b.paints.length === before && performance.now() < end) {
    await new Promise((r) => setTimeout(r, 1));
  }
  const p = b.paints[before];
  return p ? [p.at - t0, p.frame - t0] : null;
}"""


def photos(count: int, folder: Path) -> list[Path]:
    """The example photo with one byte after the end of its JPEG (same pixels, but not the
    copy the page's examples have put in the browser's cache), then copies of it mirrored
    and/or brightened (same size)."""
    first = folder / PHOTO.name
    first.write_bytes(PHOTO.read_bytes() + b"\0")
    image = Image.open(PHOTO).convert("RGB")
    variants = [lambda im: ImageOps.mirror(im),
                lambda im: ImageEnhance.Brightness(im).enhance(0.85),
                lambda im: ImageEnhance.Brightness(im).enhance(1.15),
                lambda im: ImageEnhance.Brightness(ImageOps.mirror(im)).enhance(0.85)]
    out = [first]
    for i in range(count - 1):
        path = folder / f"photo-{i + 1}.jpg"
        variants[i % len(variants)](image).save(path, quality=90)
        out.append(path)
    return out


def upload(page, path: Path) -> dict:
    """Upload `path`, wait for its caption's first heatmap; times from the file input's change."""
    before = page.evaluate("window.__bench.t0 = 0, window.__bench.paints.length")
    page.locator("#input-image input[type=file]").set_input_files(str(path))
    page.wait_for_function("n => window.__bench.paints.length > n && window.__bench.t0 > 0",
                           arg=before)
    t0, p = page.evaluate("n => [window.__bench.t0, window.__bench.paints[n]]", before)
    words = page.locator("#caption textarea").input_value().split()
    details = page.locator("#details").inner_text()
    server = re.search(r"(\d+) ms", details)
    return {"painted_ms": p["at"] - t0, "frame_ms": p["frame"] - t0, "words": len(words),
            "server_ms": float(server.group(1)) if server else None}


def route(url: str) -> str:
    """A request's route, without the server folder that gradio puts in file URLs."""
    path = urlsplit(url).path
    head, sep, served = path.partition("file=")
    return head + sep + Path(served).name if sep else path


def measure(browser, url: str, uploads: int, steps: int, folder: Path) -> dict:
    """Everything for one running app, in a fresh browser context (an empty cache)."""
    context = browser.new_context(viewport={"width": 1280, "height": 900})
    page = context.new_page()
    page.set_default_timeout(TIMEOUT_MS)
    page.add_init_script(HOOKS)
    traffic = Traffic(page)
    page.goto(url)
    page.wait_for_selector("#input-image input[type=file]", state="attached")
    page.wait_for_load_state("networkidle")
    first_page = {"kb": traffic.received / 1024, "requests": traffic.sent}
    upload(page, WARM_UP)  # loads the fonts, scripts and icons a caption shows
    page.wait_for_load_state("networkidle")
    runs = []
    for path in photos(uploads, folder):
        received, sent = traffic.received, len(traffic.requests)
        run = upload(page, path)
        page.wait_for_load_state("networkidle")  # the old app's gallery pictures too
        page.wait_for_timeout(500)
        run["received_kb"] = (traffic.received - received) / 1024
        run["requests"] = [route(u) for u in traffic.requests[sent:]]
        runs.append(run)
    words = runs[-1]["words"]
    page.wait_for_function(  # the slider spans the caption (the old app sets it after it)
        "n => Number(document.querySelector('#word-slider input[type=range]').max) >= n",
        arg=words)
    # words 2, 3, ... each shown for the first time (this app draws it then), then the same
    # words again (this app keeps what it drew)
    order = [2 + i % (words - 1) for i in range(min(steps, words - 1))]
    sent, times = traffic.sent, {"first": [], "again": []}
    for visit, word in [("first", w) for w in order] + [("again", w) for w in order]:
        step = page.evaluate(STEP, word)
        if step is None:
            raise RuntimeError(f"slider step to word {word} was never painted")
        times[visit].append(step)
    page.wait_for_timeout(500)  # anything late is counted too
    requests = traffic.sent - sent
    context.close()
    every = times["first"] + times["again"]
    overhead = [(r["painted_ms"] - r["server_ms"]) / LATENCY_MS for r in runs
                if r["server_ms"] is not None]
    return {
        "page_kb": first_page["kb"], "page_requests": first_page["requests"],
        "uploads": runs,
        "photo_caption_kb": runs[0]["received_kb"],
        "received_kb": percentiles([r["received_kb"] for r in runs]),
        "upload_painted_ms": percentiles([r["painted_ms"] for r in runs]),
        "upload_frame_ms": percentiles([r["frame_ms"] for r in runs]),
        "server_ms": percentiles([r["server_ms"] for r in runs if r["server_ms"] is not None]),
        "upload_overhead_round_trips": percentiles(overhead) if overhead else None,
        "words": words, "steps": len(every), "requests": requests,
        "requests_per_step": requests / len(every),
        "step_painted_ms": percentiles([t[0] for t in every]),
        "step_frame_ms": percentiles([t[1] for t in every]),
        "step_first_view_painted_ms": percentiles([t[0] for t in times["first"]]),
        "step_again_painted_ms": percentiles([t[0] for t in times["again"]]),
        "steps_ms": times,
    }


def p(d: dict | None, unit: str = " ms", digits: int = 0) -> str:
    return f"{d['p50']:.{digits}f} / {d['p95']:.{digits}f}{unit}" if d else "-"


def rows_for(name: str, old: dict, new: dict) -> list[list]:
    t = TARGETS
    return [
        [name, "first page load (empty cache), requests", f"{old['page_kb']:.0f} KB, "
         f"{old['page_requests']}", f"{new['page_kb']:.0f} KB, {new['page_requests']}",
         "<= 600 KB", verdict(new["page_kb"], t["page_kb"])],
        [name, "requests per slider step", f"{old['requests_per_step']:.1f}",
         f"{new['requests_per_step']:.1f}", "0",
         verdict(new["requests_per_step"], t["requests_per_step"])],
        [name, "slider step to heatmap painted, p50 / p95", p(old["step_painted_ms"]),
         p(new["step_painted_ms"], digits=1), "<= 16 ms",
         verdict(new["step_painted_ms"]["p95"], t["step_painted_ms"])],
        [name, "  to the next animation frame", p(old["step_frame_ms"]),
         p(new["step_frame_ms"], digits=1), "", ""],
        [name, "  painted, word shown for the first time", p(old["step_first_view_painted_ms"]),
         p(new["step_first_view_painted_ms"], digits=1), "", ""],
        [name, "  painted, word shown before", p(old["step_again_painted_ms"]),
         p(new["step_again_painted_ms"], digits=1), "", ""],
        [name, "data received, photo caption", f"{old['photo_caption_kb']:.0f} KB",
         f"{new['photo_caption_kb']:.0f} KB", "<= 150 KB",
         verdict(new["photo_caption_kb"], t["photo_caption_kb"])],
        [name, "  per upload, p50 / p95", p(old["received_kb"], " KB"),
         p(new["received_kb"], " KB"), "", ""],
        [name, "upload to first heatmap painted, p50 / p95", p(old["upload_painted_ms"]),
         p(new["upload_painted_ms"]), "", ""],
        [name, "  server time (details line), p50 / p95", p(old["server_ms"]),
         p(new["server_ms"]), "", ""],
        [name, "  the rest, in 150 ms round trips, p50 / p95",
         p(old["upload_overhead_round_trips"], "", 1),
         p(new["upload_overhead_round_trips"], "", 1), "<= 3",
         verdict(new["upload_overhead_round_trips"]["p95"], t["upload_round_trips"])],
    ]


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--models", default="bundled,resnet50")
    parser.add_argument("--uploads", type=int, default=5, help="photo uploads per app")
    parser.add_argument("--steps", type=int, default=10,
                        help="words stepped to per app (each twice: first view, then again)")
    parser.add_argument("--before", default=BEFORE, metavar="REV",
                        help="the git revision of the old app")
    parser.add_argument("--threads", type=int, default=0,
                        help="torch threads of both apps (0: default)")
    parser.add_argument("--name", default="browser", help="results/<name>.json")
    args = parser.parse_args(argv)
    if not Path(CHROMIUM).exists():
        raise SystemExit(f"{CHROMIUM} not found (apt-get install chromium)")
    from playwright.sync_api import sync_playwright

    m = machine()
    print(machine_line(m))
    apps = {f"before ({args.before})": tree_at(args.before, "app.py", "captioner", "examples"),
            "after (this tree)": ROOT}
    folder = scratch("photos")
    results: dict = {"machine": m, "network": NETWORK, "targets": TARGETS,
                     "command": " ".join(sys.argv), "app_threads": args.threads,
                     "before_rev": args.before, "models": {}}
    rows = []
    with sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS,
                                     headless=True)
        for name in args.models.split(","):
            weights = model_dir(name)
            results["models"][name] = r = {}
            for label, tree in apps.items():
                with app_server(weights, tree, args.threads) as (url, ready):
                    if ready is None:
                        raise SystemExit(f"the {label} app never started")
                    print(f"{name}, {label}: measuring", flush=True)
                    r[label] = measure(browser, url, args.uploads, args.steps, folder)
            rows += rows_for(name, *r.values())
        browser.close()
    print("\n" + table(rows, ["model", "figure", *apps, "target", "verdict"]))
    path = write_results(args.name, results)
    print(f"\n{machine_line(m)}\n{interference_line()}\nwritten {path.relative_to(ROOT)}")


if __name__ == "__main__":
    main()
