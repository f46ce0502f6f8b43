"""captioner web app: caption an image and see where the model looked for every word.

    python app.py                          # bundled weights/, http://127.0.0.1:7860
    python app.py --weights runs/scenes    # a model folder (or a Hugging Face Hub repo id)
    python app.py --share                  # public gradio.live link
    python app.py --device cuda            # the model on a GPU (default: auto, a GPU if any)
    python app.py --mcp                    # + the API endpoints as MCP tools
    python app.py --hard-weights DIR       # offer DIR's hard-attention model beside the default
    CAPTIONER_WEIGHTS=owner/repo python app.py

On a Hugging Face Space (app_file: app.py) the module-level `demo` is what gets served. All the
logic lives in `captioner.demo`; this file only wires it to gradio components.
"""

from __future__ import annotations

import argparse
import os
import socket
import sys
import tempfile
from pathlib import Path
from urllib.parse import parse_qsl

import gradio as gr

from captioner.demo import (
    BEAM_SIZES,
    DEFAULT_BEAM,
    MAX_LEN_RANGE,
    Demo,
    Look,
    check_int,
    example_thumbnails,
    web_asset,
)
from captioner.demo.handlers import event_field, ui_errors, user_errors
from captioner.demo.link import open_link, parse_link
from captioner.demo.why import hard_companion
from captioner.hub import BUNDLED_WEIGHTS, DEVICE_CHOICES, resolve_device
from captioner.lab import COMPOSE_DEFAULTS, POSITION_RANGE
from captioner.visualize import OVERLAY_FLOOR

HERE = Path(__file__).resolve().parent
EXAMPLES = HERE / "examples"
EXAMPLE_SUFFIXES = {".png", ".jpg", ".jpeg", ".webp"}
INTRO = """\
# captioner · Show, Attend and Tell
The model writes a caption one word at a time and, before each word, decides **where in the
picture to look**: the picture stays bright there. Step through the words with the slider.
"""

SCENES_NOTE = """\
This model knows only **generated scenes of coloured shapes**: try the examples or the **scene
lab** (a photo gets a warning, and a caption that means nothing).
"""

CSS = """
#caption textarea { font-size: 1.25rem; font-weight: 600; }
#caption.cx-unsure textarea { opacity: 0.5; font-style: italic; font-weight: 400; }
#intro p { margin: 0; }
#intro h1 { margin: 0 0 0.2rem; font-size: 1.5rem; }
#details p { margin: 0; }
#details:has(span.md:empty), #ground-truth:has(span.md:empty) { display: none; }
#ground-truth { font-size: 0.9rem; }
#ground-truth p { margin: 0 0 0.2rem; }
@media (max-width: 640px) {
  #intro h1 { font-size: 1.2rem; }
  #intro { font-size: 0.9rem; }
  #caption textarea { font-size: 1.05rem; }
  #details { font-size: 0.85rem; }
}
footer { display: none !important; }
"""


def example_files(folder: Path = EXAMPLES) -> list[str]:
    """Example images: scenes first, then photos, by name."""
    if not folder.is_dir():
        return []
    files = [p for p in folder.iterdir() if p.suffix.lower() in EXAMPLE_SUFFIXES]
    return [str(p) for p in sorted(files, key=lambda p: (not p.name.startswith("scene"), p.name))]


def explorer_component() -> gr.HTML:
    """The attention explorer: words, slider, heatmap and gallery, all drawn in the browser by
    captioner/demo/web/explorer.js from the payload each caption sends."""
    return gr.HTML(None, html_template=web_asset("explorer.html"),
                   css_template=web_asset("explorer.css"),
                   js_on_load=web_asset("explorer.js")
                   + "\nCaptionerExplorer.mount(element, props, watch, trigger);",
                   floor=OVERLAY_FLOOR,
                   image_selector="#input-image img", elem_id="explorer", render=False)


def build_app(model: Demo, examples: list[str] | None = None) -> gr.Blocks:
    """The page for a loaded model. `examples` defaults to the images in examples/."""
    examples = model.suitable_examples(example_files() if examples is None else examples)
    model.use_examples(examples)  # clients may name these and gradio's uploads, nothing else

    def shown(view):
        return view.caption, view.details, view.explorer

    def fresh(view):
        """A new picture's outputs: no scene-lab verdict any more."""
        return (*shown(view), "")

    # `kind` (every handler's last input): the attention switch, "soft" or "hard"
    def caption(image, beam_size, max_len, kind):
        with ui_errors(4, at=2) as failed:
            view = model.using(kind).view(image, beam_size, max_len,
                                          source=model.source_of(image))
            return fresh(view)
        return failed.outputs

    def show_example(number, beam_size, max_len, kind):
        """An example clicked: its picture and caption, with the visitor's own settings."""
        with ui_errors(5, at=3) as failed:
            number = check_int("example", number, 0, len(examples) - 1)
            path = examples[number]
            view = model.using(kind).view(path, beam_size, max_len, source={"example": number})
            return (path, *fresh(view))
        return failed.outputs

    def pick(image, beam_size, max_len, kind, evt: gr.EventData):
        """The visitor picked another word: the model writes the rest from there."""
        with ui_errors(3, at=2, keep=True, title="Cannot go on from this word") as failed:
            prefix = event_field(evt, "prefix", str)
            return shown(model.using(kind).view(image, beam_size, max_len, prefix=prefix))
        return failed.outputs

    def look(image, beam_size, max_len, kind, evt: gr.EventData):
        """The visitor clicked a point for the selected word: the model looks there."""
        with ui_errors(3, at=2, keep=True, title="Cannot look there") as failed:
            where = Look(event_field(evt, "word", int), event_field(evt, "x", float),
                         event_field(evt, "y", float))
            prefix = event_field(evt, "prefix", str)
            return shown(model.using(kind).view(image, beam_size, max_len, prefix=prefix,
                                                look=where))
        return failed.outputs

    def why(image, beam_size, max_len, kind, evt: gr.EventData):
        """"Why this word?" for the selected word of the caption shown (made again here from
        the picture, the forced words and the look-here point: nothing else is trusted)."""
        with ui_errors(3, at=2, keep=True, title="Cannot explain this word") as failed:
            word, prefix = event_field(evt, "word", int), event_field(evt, "prefix", str)
            where = None
            if (getattr(evt, "_data", None) or {}).get("look_word") is not None:
                where = Look(event_field(evt, "look_word", int),
                             event_field(evt, "look_x", float), event_field(evt, "look_y", float))
            return shown(model.using(kind).why_view(image, word, beam_size, max_len,
                                                    prefix=prefix, look=where))
        return failed.outputs

    def switch(image, beam_size, max_len, kind, evt: gr.EventData):
        """The attention switch moved: the same picture, settings and word with the other
        model. An example or lab scene is rebuilt from the page's link (checked as a shared
        link is); an upload is captioned again."""
        with ui_errors(5, at=2, keep=True, title="Cannot switch the model") as failed:
            kind = event_field(evt, "kind", str)  # the radio's new value, sent with the event
            word = event_field(evt, "word", int)
            link = parse_link(dict(parse_qsl(event_field(evt, "link", str).lstrip("?"))))
            if {"example", "scene", "compose"} & set(link):
                link.update(model=kind, beam=beam_size, len=max_len, word=word)
                opened = open_link(model, examples, link)
                return (*shown(opened.view), opened.truth, card(kind))
            view = model.using(kind).view(image, beam_size, max_len,
                                          source=model.source_of(image))
            view.explorer["word"] = word
            return (*fresh(view), card(kind))
        return failed.outputs

    def card(kind):
        """The "About the model" panel of the model in use."""
        return model.using(kind).model_markdown()

    def reset(image, beam_size, max_len, kind):
        with ui_errors(3, at=2, keep=True) as failed:
            return shown(model.using(kind).view(image, beam_size, max_len))
        return failed.outputs

    def api_caption(image, beam_size, max_len, kind) -> dict:
        with user_errors():
            return model.using(kind).api(image, beam_size, max_len)

    def api_caption_from(image, prefix, beam_size, max_len, kind) -> dict:
        with user_errors():
            return model.using(kind).api(image, beam_size, max_len, prefix=prefix)

    def api_look_here(image, word, x, y, beam_size, max_len, kind) -> dict:
        with user_errors():
            return model.using(kind).api(image, beam_size, max_len, look=Look(word, x, y))

    def api_why(image, word, prefix, beam_size, max_len, kind) -> dict:
        with user_errors():
            return model.using(kind).why(image, word, beam_size, max_len, prefix=prefix)

    def new_scene(seed, beam_size, max_len, kind):
        with ui_errors(6, at=3, keep=True, title="Cannot make this scene") as failed:
            picture, view, truth = model.using(kind).new_scene(seed, beam_size, max_len)
            return (picture, *shown(view), truth, int(seed) + 1)
        return failed.outputs

    def compose(beam_size, max_len, kind, *fields):
        specs = [{"shape": shape, "color": color, "size": size, "position": (x, y)}
                 for shape, color, size, x, y in zip(*[iter(fields)] * 5) if shape != "none"]
        with ui_errors(5, at=3, keep=True, title="Cannot compose this scene") as failed:
            picture, view, truth = model.using(kind).compose(specs, beam_size, max_len)
            return (picture, *shown(view), truth)
        return failed.outputs

    def restore(request: gr.Request):
        """A shared link: the page address names the view (see explorer.js `share`); without
        one the page opens on the first example. Returns image, settings, attention kind,
        outputs, truth, the model's card."""
        query = dict(request.query_params) if request else {}
        with ui_errors(9, at=6, title="Cannot open this link") as failed:
            link = parse_link(query)
            opened = open_link(model, examples, link)
            kind = model.using(link.get("model")).kind
            if opened.view is None:  # no examples and nothing named: an empty page
                return (None, opened.beam_size, opened.max_len, kind, "", "", None, "",
                        card(kind))
            return (opened.picture, opened.beam_size, opened.max_len, kind,
                    *shown(opened.view), opened.truth, card(kind))
        return failed.outputs

    with gr.Blocks(title="captioner: Show, Attend and Tell", delete_cache=(1800, 3600)) as demo:
        gr.Markdown(INTRO + (SCENES_NOTE if model.knows_scenes else ""), elem_id="intro")
        with gr.Row(equal_height=False):
            with gr.Column(scale=7, elem_id="main"):
                text = gr.Textbox(label="Caption", interactive=False, elem_id="caption",
                                  buttons=["copy"], lines=1, max_lines=6)
                details = gr.Markdown(elem_id="details")
                truth = gr.Markdown(elem_id="ground-truth")  # the scene lab's verdict
                explorer = explorer_component()
                explorer.render()
            with gr.Column(scale=3, min_width=280, elem_id="controls"):
                image = gr.Image(label="Image", type="filepath",
                                 height=170, format="png", elem_id="input-image",
                                 sources=["upload", "webcam", "clipboard"])
                beam = gr.Slider(*BEAM_SIZES, value=DEFAULT_BEAM, step=1, label="Beam size",
                                 info="1 = greedy; more compares more captions", elem_id="beam")
                max_len = gr.Slider(*MAX_LEN_RANGE, value=model.default_max_len, step=1,
                                    label="Maximum length", info="in words", elem_id="max-len")
                # soft <-> hard: explorer.js hears the change and asks for the same view
                kind = gr.Radio(model.kinds, value=model.kind, label="Attention",
                                info="soft: a weighted mean of the cells; hard: trained on one "
                                     "sampled cell (see the model card)",
                                visible=len(model.kinds) > 1, elem_id="attention-kind")
                run = gr.Button("Caption", variant="primary", elem_id="run")
                if examples:
                    gallery = gr.Dataset(
                        components=[gr.Image(visible=False, render=False)],
                        samples=[[t] for t in example_thumbnails(examples, example_folder(model))],
                        type="index", label="Examples: click one", elem_id="examples",
                        samples_per_page=12)
                if model.knows_scenes:
                    seed, new = new_scene_controls()
        if model.knows_scenes:
            fields, compose_button = composer(model.lab_options())
        with gr.Row(equal_height=False):
            with gr.Column(scale=5):
                with gr.Accordion("What does the picture show?", open=False):
                    gr.Markdown(model.explanation())
            with gr.Column(scale=6):
                with gr.Accordion("About the model", open=True):
                    info = gr.Markdown(model.model_markdown(), elem_id="model-info")

        outputs = [text, details, explorer]
        # preprocess=False: handlers get the raw payload and open it through model.files,
        # which allows only gradio's uploads and the examples (see captioner/demo/inputs.py).
        settings = [beam, max_len, kind]
        gr.on([run.click, image.upload], caption, inputs=[image, *settings],
              outputs=[*outputs, truth], preprocess=False, api_visibility="undocumented",
              api_name="caption_ui")
        # a removed picture takes its caption with it (in the page: no request)
        image.clear(None, outputs=[*outputs, truth], js="() => ['', '', null, '']")
        if examples:
            gallery.click(show_example, inputs=[gallery, *settings],
                          outputs=[image, *outputs, truth], api_name="example_ui",
                          api_visibility="undocumented")
        # Questions asked from the explorer (explorer.js triggers these with their details).
        explorer.pick(pick, inputs=[image, *settings], outputs=outputs, preprocess=False,
                      api_name="pick_ui", api_visibility="undocumented")
        explorer.look(look, inputs=[image, *settings], outputs=outputs, preprocess=False,
                      api_name="look_ui", api_visibility="undocumented")
        explorer.why(why, inputs=[image, *settings], outputs=outputs, preprocess=False,
                     api_name="why_ui", api_visibility="undocumented")
        explorer.switch(switch, inputs=[image, *settings], outputs=[*outputs, truth, info],
                        preprocess=False, api_name="switch_ui", api_visibility="undocumented")
        explorer.reset(reset, inputs=[image, *settings], outputs=outputs,
                       preprocess=False, api_name="reset_ui", api_visibility="undocumented")
        if model.knows_scenes:
            new.click(new_scene, inputs=[seed, *settings],
                      outputs=[image, *outputs, truth, seed],
                      api_name="new_scene_ui", api_visibility="undocumented")
            compose_button.click(compose, inputs=[*settings, *fields],
                                 outputs=[image, *outputs, truth],
                                 api_name="compose_ui", api_visibility="undocumented")
        demo.load(restore, outputs=[image, beam, max_len, kind, *outputs, truth, info],
                  api_visibility="private")

        # The API: gradio_client.Client(url).predict(handle_file(path), 3, 20, api_name="/caption")
        result = gr.JSON(label="result", visible=False)
        prefix = gr.Textbox(label="prefix", visible=False)
        word = gr.Number(label="word", precision=0, visible=False)
        x, y = gr.Number(label="x", visible=False), gr.Number(label="y", visible=False)
        for fn, inputs, name, description in [
            (api_caption, [image, *settings], "caption", "Caption an image."),
            (api_caption_from, [image, prefix, *settings], "caption_from",
             "Caption an image that starts with the words `prefix` (e.g. 'a small blue')."),
            (api_look_here, [image, word, x, y, *settings], "look_here",
             "Caption an image, making the model look at the point (x, y) (fractions of the "
             "width and height) at word number `word` (1-based)."),
        ]:
            gr.Button(visible=False).click(
                fn, inputs=inputs, outputs=result, preprocess=False, api_name=name,
                api_description=description + API_RESULT + API_KIND)
        gr.Button(visible=False).click(
            api_why, inputs=[image, word, prefix, *settings], outputs=result, preprocess=False,
            api_name="why", api_description=API_WHY + API_KIND)
    demo.queue(default_concurrency_limit=2, max_size=32)
    return demo


def example_folder(model: Demo) -> Path:
    """Where this model's example thumbnails are written (one folder per model)."""
    return Path(tempfile.gettempdir()) / f"captioner-thumbnails-{model.fingerprint}"


API_RESULT = (" Returns JSON: caption, tokens, score (mean log-probability per token), "
              "attention (one grid x grid map per token), cell_centres, beam_size, max_len, "
              "alternatives (per token, the top words with their probabilities), gate (per "
              "token, 0-1), beams (every finished hypothesis with its score), truncated, forced, "
              "look, steered, warning (see docs/api.md).")


API_KIND = (" `attention`: 'soft' or 'hard', the model to use where the app offers both "
            "(default: the main model); results name it as attention_kind.")
API_WHY = ("Why word number `word` (1-based) of the caption of an image (starting with the "
           "words `prefix`, may be empty): its attention, Grad-CAM and occlusion maps (grid x "
           "grid, flattened row-major), the attended cells (the fewest holding half the "
           "attention), and p(word) with and without them (drop). See docs/faithfulness.md.")


def new_scene_controls() -> tuple[gr.Number, gr.Button]:
    """The scene lab's quick test: a fresh scene from a seed range never used in training."""
    with gr.Accordion("Scene lab: scenes with a known truth", open=True, elem_id="scene-lab"):
        with gr.Row():
            seed = gr.Number(0, label="Scene number", precision=0, minimum=0, elem_id="lab-seed",
                             min_width=100)
            new = gr.Button("New scene", elem_id="new-scene", min_width=100)
    return seed, new


def composer(options: dict) -> tuple[list, gr.Button]:
    """Scenes of the visitor's own objects, of the lab's world (`options`: `Demo.lab_options`):
    one row per object it allows, wide enough that no control is clipped (on a phone the row
    wraps)."""
    fields = []
    with gr.Accordion("Scene lab: compose a scene of your own objects", open=True,
                      elem_id="composer"):
        for n, (shape, colour, size, x, y) in enumerate(COMPOSE_DEFAULTS[options["world"]], 1):
            with gr.Row(equal_height=True):
                fields += [
                    gr.Dropdown(["none", *options["shapes"]], value=shape, label=f"object {n}",
                                min_width=110),
                    gr.Dropdown(options["colors"], value=colour, label="colour",
                                min_width=110),
                    gr.Dropdown(options["sizes"], value=size, label="size", min_width=110)]
                # centre positions at which even a big object fits
                fields += [gr.Slider(*POSITION_RANGE, value=value, step=0.05, label=label,
                                     min_width=160)
                           for value, label in ((x, "x: left → right"), (y, "y: top → bottom"))]
        compose = gr.Button("Compose and caption", elem_id="compose")
    return fields, compose


def weights_source(arg: str | None = None) -> str:
    return arg or os.environ.get("CAPTIONER_WEIGHTS") or str(BUNDLED_WEIGHTS)


def load_pair_or_exit(source: str, hard: str | None = None,
                      device: str | None = "auto") -> Demo:
    """The model, and beside it the hard-attention model `hard` (default: the bundled
    weights/hard/ when `source` is the bundled weights) for the page's soft <-> hard switch."""
    model = load_or_exit(source, device)
    hard = hard or hard_companion(source)
    if hard is not None:
        try:
            model.pair(load_or_exit(str(hard), device))
        except ValueError as e:  # e.g. --hard-weights naming a soft model
            print(f"captioner app: --hard-weights: {e}", file=sys.stderr)
            raise SystemExit(2) from None
    return model


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
    parser.add_argument("--hard-weights", default=os.environ.get("CAPTIONER_HARD_WEIGHTS"),
                        help="a hard-attention model folder or Hub repo id offered beside the "
                             "main one (default: the bundled weights/hard/ with the bundled "
                             "weights, else none)")
    parser.add_argument("--share", action="store_true", help="create a public gradio.live link")
    parser.add_argument("--server-name", default=None,
                        help="interface to listen on (default 127.0.0.1; 0.0.0.0 for all)")
    parser.add_argument("--server-port", type=int, default=None, help="port (default 7860)")
    parser.add_argument("--mcp", action="store_true",
                        help="also serve the API endpoints (caption, caption_from, look_here, "
                             "why) as MCP tools (Model Context Protocol) at /gradio_api/mcp/")
    parser.add_argument("--device", default=os.environ.get("CAPTIONER_DEVICE", "auto"),
                        help=f"where the model runs: {DEVICE_CHOICES} (default: $CAPTIONER_DEVICE,"
                             " else auto = a CUDA GPU when there is one)")
    return parser.parse_args(argv)


# the system's own fonts: no web-font download (a lighter first page)
THEME = gr.themes.Soft(font=["system-ui", "-apple-system", "Segoe UI", "Roboto", "sans-serif"],
                       font_mono=["ui-monospace", "SFMono-Regular", "Menlo", "monospace"])


def launch(app: gr.Blocks, **kwargs):
    return app.launch(max_file_size="10mb", css=CSS, theme=THEME, **kwargs)


def __getattr__(name: str):
    """`app.demo`, built on first use (gradio's reload mode and Spaces look for it), so that
    importing this module stays cheap and never loads weights by itself."""
    if name == "demo":
        global demo
        demo = build_app(load_pair_or_exit(weights_source(),
                                           os.environ.get("CAPTIONER_HARD_WEIGHTS"),
                                           os.environ.get("CAPTIONER_DEVICE")))
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
    app = build_app(load_pair_or_exit(weights_source(args.weights), args.hard_weights,
                                      args.device))
    try:
        launch(app, share=args.share, server_name=args.server_name,
               server_port=args.server_port, mcp_server=args.mcp)
    except OSError as e:  # taken between the check and the launch
        if args.server_port is None or "port" not in str(e):
            raise
        raise SystemExit(busy) from None


if __name__ == "__main__":
    main()
