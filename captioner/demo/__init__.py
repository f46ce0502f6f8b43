"""The web app's logic, testable without a browser: `core` (captioning and what the page
shows), `packing` (compact maps and pictures, the lab's truth), `inputs` (what a client may
send), `link` (the page's shareable link), `model_info` (the model panel) and `web/` (the
browser code that draws the attention). `app.py` only wires these to gradio components."""

from captioner.demo.core import (
    BEAM_SIZES,
    DEFAULT_BEAM,
    DEFAULT_MAX_LEN,
    DISPLAY_MAX,
    DISPLAY_MIN,
    EMPTY_CAPTION,
    MAX_LEN_RANGE,
    Demo,
    Look,
    Result,
    View,
    api_payload,
    describe_score,
    display_copy,
    display_size,
    example_thumbnails,
    explorer_payload,
    web_asset,
)
from captioner.demo.inputs import NO_IMAGE, ClientFiles, check_int, load_input
from captioner.demo.model_info import ModelInfo
from captioner.demo.packing import pack_map, unpack_map

__all__ = ["BEAM_SIZES", "DEFAULT_BEAM", "DEFAULT_MAX_LEN", "DISPLAY_MAX", "DISPLAY_MIN",
           "EMPTY_CAPTION", "MAX_LEN_RANGE", "NO_IMAGE", "ClientFiles", "Demo", "Look",
           "ModelInfo", "Result", "View", "api_payload", "check_int", "describe_score",
           "display_copy", "display_size", "example_thumbnails", "explorer_payload",
           "load_input", "pack_map", "unpack_map", "web_asset"]
