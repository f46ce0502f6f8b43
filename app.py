"""captioner web app: caption an image and see where the model looked for every word.

    python app.py                          # bundled weights/, http://127.0.0.1:7860
    python app.py --weights runs/scenes    # a model folder (or a Hugging Face Hub repo id)
    python app.py --share                  # public gradio.live link
    python app.py --device cuda            # the model on a GPU (default: auto, a GPU if any)
    python app.py --mcp                    # + the API endpoints as MCP tools
    CAPTIONER_WEIGHTS=owner/repo python app.py

On a Hugging Face Space (app_file: app.py) the module-level `demo` is what gets served. All the
logic lives in `captioner.demo`; this file only wires it to gradio components.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import socket
import sys
from dataclasses import dataclass
from pathlib import Path

import gradio as gr

from captioner.demo import (
    BEAM_SIZES,
    DEFAULT_BEAM,
    DEFAULT_MAX_LEN,
    MAX_LEN_RANGE,
    Demo,
    Look,
    web_asset,
)
from captioner.demo.inputs import short_repr
from captioner.hub import BUNDLED_WEIGHTS, DEVICE_CHOICES, resolve_device
from captioner.preprocess import ImageError
from captioner.scenes import COLORS, SHAPES, SIZES
from captioner.visualize import OVERLAY_ALPHA, OVERLAY_FLOOR, colormap_table

HERE = Path(__file__).resolve().parent
EXAMPLES = HERE / "examples"
EXAMPLE_SUFFIXES = {".png", ".jpg", ".jpeg", ".webp"}
CACHE_VERSION = "2"  # bump when the caption handler's outputs change (invalidates cached examples)

INTRO = """\
# captioner · Show, Attend and Tell

Upload a picture (or paste one, use the webcam, or click an example). The model writes a caption
one word at a time and, before each word, decides **where in the image to look**. Move the
**word slider**, click a word or a thumbnail, to see that attention as a heatmap for each word.
"""

CSS = """
#caption textarea { font-size: 1.25rem; font-weight: 600; }
footer { display: none !important; }
"""


def example_files(folder: Path = EXAMPLES) -> list[str]:
    """Example images: scenes first, then photos, by name."""
    if not folder.is_dir():
        return []
    files = [p for p in folder.iterdir() if p.suffix.lower() in EXAMPLE_SUFFIXES]
    return [str(p) for p in sorted(files, key=lambda p: (not p.name.startswith("scene"), p.name))]


def add_examples(model: Demo, examples: list[str], inputs, outputs, fn) -> gr.Examples:
    """Clickable examples whose outputs are cached on first use, in a folder per model so that
    new weights never show old captions."""
    previous = os.environ.get("GRADIO_EXAMPLES_CACHE")
    base = Path(previous or ".gradio/cached_examples")
    os.environ["GRADIO_EXAMPLES_CACHE"] = str(
        base / f"captioner-{model.fingerprint}-v{CACHE_VERSION}")
    try:
        return gr.Examples([[path, DEFAULT_BEAM, DEFAULT_MAX_LEN] for path in examples],
                           inputs=inputs, outputs=outputs, fn=fn, cache_examples=True,
                           cache_mode="lazy", preprocess=False, visible_columns=[0],
                           examples_per_page=12, label="Examples: click one",
                           elem_id="examples")
    finally:
        if previous is None:
            os.environ.pop("GRADIO_EXAMPLES_CACHE", None)
        else:
            os.environ["GRADIO_EXAMPLES_CACHE"] = previous


def explorer_component() -> gr.HTML:
    """The attention explorer: words, slider, heatmap and gallery, all drawn in the browser by
    captioner/demo/web/explorer.js from the payload each caption sends."""
    return gr.HTML(None, html_template=web_asset("explorer.html"),
                   css_template=web_asset("explorer.css"),
                   js_on_load=web_asset("explorer.js")
                   + "\nCaptionerExplorer.mount(element, props, watch, trigger);",
                   colormap=colormap_table(), alpha=OVERLAY_ALPHA, floor=OVERLAY_FLOOR,
                   image_selector="#input-image img", elem_id="explorer", render=False)


def build_app(model: Demo, examples: list[str] | None = None) -> gr.Blocks:
    """The page for a loaded model. `examples` defaults to the images in examples/."""
    examples = model.suitable_examples(example_files() if examples is None else examples)
    model.allow_files(examples)  # clients may name these and gradio's uploads, nothing else

    def shown(view):
        return view.caption, view.details, view.explorer

    def caption(image, beam_size, max_len):
        with user_errors():
            return shown(model.view(image, beam_size, max_len))

    def pick(image, beam_size, max_len, evt: gr.EventData):
        """The visitor picked another word: the model writes the rest from there."""
        with user_errors():
            prefix = event_field(evt, "prefix", str)
            return shown(model.view(image, beam_size, max_len, prefix=prefix))

    def look(image, beam_size, max_len, evt: gr.EventData):
        """The visitor clicked a point for the selected word: the model looks there."""
        with user_errors():
            where = Look(event_field(evt, "word", int), event_field(evt, "x", float),
                         event_field(evt, "y", float))
            prefix = event_field(evt, "prefix", str)
            return shown(model.view(image, beam_size, max_len, prefix=prefix, look=where))

    def api_caption(image, beam_size, max_len) -> dict:
        with user_errors():
            return model.api(image, beam_size, max_len)

    def api_caption_from(image, prefix, beam_size, max_len) -> dict:
        with user_errors():
            return model.api(image, beam_size, max_len, prefix=prefix)

    def api_look_here(image, word, x, y, beam_size, max_len) -> dict:
        with user_errors():
            return model.api(image, beam_size, max_len, look=Look(word, x, y))

    def new_scene(seed, beam_size):
        with user_errors():
            picture, view, truth = model.new_scene(seed, beam_size)
        return (picture, *shown(view), truth, int(seed) + 1)

    def compose(beam_size, *fields):
        specs = [{"shape": shape, "color": color, "size": size, "position": (x, y)}
                 for shape, color, size, x, y in zip(*[iter(fields)] * 5) if shape != "none"]
        with user_errors():
            picture, view, truth = model.compose(specs, beam_size)
        return (picture, *shown(view), truth)

    with gr.Blocks(title="captioner: Show, Attend and Tell", delete_cache=(1800, 3600)) as demo:
        gr.Markdown(INTRO)
        # The outputs are made first (rendered further down) so the examples can refer to them.
        text = gr.Textbox(label="Caption", interactive=False, elem_id="caption",
                          buttons=["copy"], lines=1, max_lines=3, render=False)
        details = gr.Markdown(elem_id="details", render=False)
        explorer = explorer_component()
        outputs = [text, details, explorer]

        with gr.Row(equal_height=False):
            with gr.Column(scale=5):
                image = gr.Image(label="Image", type="filepath", height=340, format="png",
                                 sources=["upload", "webcam", "clipboard"],
                                 elem_id="input-image")
                with gr.Row():
                    beam = gr.Slider(*BEAM_SIZES, value=DEFAULT_BEAM, step=1, label="Beam size",
                                     info="1 = greedy; larger beams compare more captions")
                    max_len = gr.Slider(*MAX_LEN_RANGE, value=DEFAULT_MAX_LEN, step=1,
                                        label="Maximum length", info="in words")
                run = gr.Button("Caption", variant="primary", elem_id="run")
                if examples:
                    add_examples(model, examples, [image, beam, max_len], outputs, caption)
            with gr.Column(scale=6):
                for component in (text, details, explorer):
                    component.render()
                if model.knows_scenes:
                    lab = scene_lab()
        with gr.Row(equal_height=False):
            with gr.Column(scale=5):
                with gr.Accordion("What does the heatmap mean?", open=True):
                    gr.Markdown(model.explanation())
            with gr.Column(scale=6):
                with gr.Accordion("About the model", open=True):
                    gr.Markdown(model.model_markdown(), elem_id="model-info")

        # preprocess=False: handlers get the raw payload and open it through model.files,
        # which allows only gradio's uploads and the examples (see captioner/demo/inputs.py).
        gr.on([run.click, image.upload], caption, inputs=[image, beam, max_len],
              outputs=outputs, preprocess=False, api_visibility="undocumented",
              api_name="caption_ui")
        # Questions asked from the explorer (explorer.js triggers these with their details).
        explorer.pick(pick, inputs=[image, beam, max_len], outputs=outputs, preprocess=False,
                      api_name="pick_ui", api_visibility="undocumented")
        explorer.look(look, inputs=[image, beam, max_len], outputs=outputs, preprocess=False,
                      api_name="look_ui", api_visibility="undocumented")
        explorer.reset(caption, inputs=[image, beam, max_len], outputs=outputs,
                       preprocess=False, api_name="reset_ui", api_visibility="undocumented")
        if model.knows_scenes:
            lab.new.click(new_scene, inputs=[lab.seed, beam],
                          outputs=[image, *outputs, lab.truth, lab.seed],
                          api_name="new_scene_ui", api_visibility="undocumented")
            lab.compose.click(compose, inputs=[beam, *lab.fields],
                              outputs=[image, *outputs, lab.truth],
                              api_name="compose_ui", api_visibility="undocumented")

        # The API: gradio_client.Client(url).predict(handle_file(path), 3, 20, api_name="/caption")
        result = gr.JSON(label="result", visible=False)
        prefix = gr.Textbox(label="prefix", visible=False)
        word = gr.Number(label="word", precision=0, visible=False)
        x, y = gr.Number(label="x", visible=False), gr.Number(label="y", visible=False)
        for fn, inputs, name, description in [
            (api_caption, [image, beam, max_len], "caption", "Caption an image."),
            (api_caption_from, [image, prefix, beam, max_len], "caption_from",
             "Caption an image that starts with the words `prefix` (e.g. 'a small blue')."),
            (api_look_here, [image, word, x, y, beam, max_len], "look_here",
             "Caption an image, making the model look at the point (x, y) (fractions of the "
             "width and height) at word number `word` (1-based)."),
        ]:
            gr.Button(visible=False).click(
                fn, inputs=inputs, outputs=result, preprocess=False, api_name=name,
                api_description=description + API_RESULT)
    demo.queue(default_concurrency_limit=2, max_size=32)
    return demo


API_RESULT = (" Returns JSON: caption, tokens, score (mean log-probability per token), "
              "attention (one grid x grid map per token), cell_centres, beam_size, max_len, "
              "alternatives (per token, the top words with their probabilities), gate (per "
              "token, 0-1), beams (every finished hypothesis with its score), truncated, forced, "
              "look, steered, warning (see docs/api.md).")


@contextlib.contextmanager
def user_errors():
    """Bad images and settings become a message for the visitor, never a traceback."""
    try:
        yield
    except (ImageError, ValueError) as e:
        # one line in the server log (a visitor's mistake is not the server's failure)
        print(f"captioner app: refused a request: {' '.join(str(e).split())}", file=sys.stderr)
        raise gr.Error(str(e), title="Cannot caption this image",
                       print_exception=False) from None


def event_field(evt: gr.EventData, name: str, kind: type):
    """One field of what the page's explorer sent with an event (a client could send anything:
    a missing or malformed field is a ValueError, shown as a message)."""
    value = (getattr(evt, "_data", None) or {}).get(name)
    try:
        if value is None:
            raise ValueError
        return kind(value)
    except (TypeError, ValueError):
        raise ValueError(f"the page sent a bad '{name}': {short_repr(value)}") from None


@dataclass
class SceneLab:
    """The scene lab's controls (shown for models trained on generated scenes)."""

    seed: gr.Number
    new: gr.Button
    fields: list  # shape, colour, size, x, y for each of three objects
    compose: gr.Button
    truth: gr.Markdown


def scene_lab() -> SceneLab:
    """New scenes from a seed range never used in training, and scenes of your own objects."""
    with gr.Accordion("Scene lab: test the model on scenes with a known truth", open=True,
                      elem_id="scene-lab"):
        with gr.Row():
            seed = gr.Number(0, label="Scene number", precision=0, minimum=0, elem_id="lab-seed")
            new = gr.Button("New scene", elem_id="new-scene")
        fields = []
        for n in range(1, 4):
            with gr.Row():
                fields += [
                    gr.Dropdown(["none", *SHAPES], value=("circle", "square", "none")[n - 1],
                                label=f"object {n}", min_width=90),
                    gr.Dropdown(list(COLORS), value=list(COLORS)[n - 1], label="colour",
                                min_width=90),
                    gr.Dropdown(list(SIZES), value="big", label="size", min_width=80),
                    gr.Slider(0.2, 0.8, value=(0.3, 0.7, 0.5)[n - 1], step=0.05, label="x",
                              min_width=80),
                    gr.Slider(0.2, 0.8, value=(0.3, 0.7, 0.5)[n - 1], step=0.05, label="y",
                              min_width=80)]
        compose = gr.Button("Compose and caption", elem_id="compose")
        truth = gr.Markdown(elem_id="ground-truth")
    return SceneLab(seed, new, fields, compose, truth)


def weights_source(arg: str | None = None) -> str:
    return arg or os.environ.get("CAPTIONER_WEIGHTS") or str(BUNDLED_WEIGHTS)


def load_or_exit(source: str, device: str | None = "auto") -> Demo:
    """Load the model or stop with a message that names the problem (never random weights)."""
    try:
        device = resolve_device(device)
    except ValueError as e:  # e.g. --device cuda on a machine without a GPU
        print(f"captioner app: {e}", file=sys.stderr)
        raise SystemExit(2) from None
    try:
        return Demo.load(source, device=device)
    except Exception as e:  # WeightsError, but also anything else: never start without a model
        print(f"captioner app: cannot load the model weights from '{source}'.\n"
              f"  problem: {e if str(e) else type(e).__name__}\n"
              "  fix: python app.py --weights DIR_OR_REPO_ID (a folder with model.safetensors "
              "and config.json, or a Hugging Face Hub repo id), or set CAPTIONER_WEIGHTS.",
              file=sys.stderr)
        raise SystemExit(2) from None


def parse_args(argv=None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--weights", help="model folder or Hugging Face Hub repo id "
                        "(default: $CAPTIONER_WEIGHTS, else the bundled weights/ folder)")
    parser.add_argument("--share", action="store_true", help="create a public gradio.live link")
    parser.add_argument("--server-name", default=None,
                        help="interface to listen on (default 127.0.0.1; 0.0.0.0 for all)")
    parser.add_argument("--server-port", type=int, default=None, help="port (default 7860)")
    parser.add_argument("--mcp", action="store_true",
                        help="also serve the API endpoints (caption, caption_from, look_here) as "
                             "MCP tools (Model Context Protocol) at /gradio_api/mcp/")
    parser.add_argument("--device", default=os.environ.get("CAPTIONER_DEVICE", "auto"),
                        help=f"where the model runs: {DEVICE_CHOICES} (default: $CAPTIONER_DEVICE,"
                             " else auto = a CUDA GPU when there is one)")
    return parser.parse_args(argv)


def launch(app: gr.Blocks, **kwargs):
    return app.launch(max_file_size="10mb", css=CSS, theme=gr.themes.Soft(), **kwargs)


def __getattr__(name: str):
    """`app.demo`, built on first use (gradio's reload mode and Spaces look for it), so that
    importing this module stays cheap and never loads weights by itself."""
    if name == "demo":
        global demo
        demo = build_app(load_or_exit(weights_source(), os.environ.get("CAPTIONER_DEVICE")))
        return demo
    raise AttributeError(name)


def port_taken(host: str | None, port: int | None) -> bool:
    """Whether another program already listens on the asked --server-port (checked before
    the model loads; gradio's own message would say to edit launch())."""
    if port is None:
        return False
    with socket.socket() as probe:
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # as the server will
        try:
            probe.bind((host or "127.0.0.1", port))
        except OSError:
            return True
    return False


def main(argv=None) -> None:
    args = parse_args(argv)
    busy = (f"captioner app: port {args.server_port} is already in use: pass another "
            "--server-port, or stop the program using it.")
    if port_taken(args.server_name, args.server_port):
        raise SystemExit(busy)
    app = build_app(load_or_exit(weights_source(args.weights), args.device))
    try:
        launch(app, share=args.share, server_name=args.server_name,
               server_port=args.server_port, mcp_server=args.mcp)
    except OSError as e:  # taken between the check and the launch
        if args.server_port is None or "port" not in str(e):
            raise
        raise SystemExit(busy) from None


if __name__ == "__main__":
    main()
