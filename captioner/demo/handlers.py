"""How the app's gradio handlers answer a visitor's mistake: one log line and a message, never
a traceback, and for the page's own handlers a message in the explorer that clears (or keeps)
what is shown. Needs gradio (the `[app]` extra); `app.py` wires it."""

from __future__ import annotations

import contextlib
import html
import sys
import time

import gradio as gr

from captioner.demo.inputs import short_repr
from captioner.preprocess import ImageError


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


class Failure:
    """What a page handler returns when the visitor's request failed (see `ui_errors`)."""

    def __init__(self, count: int, at: int, keep: bool):
        self.count, self.at, self.keep = count, at, keep
        self.outputs = None

    def failed(self, message: str) -> None:
        outputs = [gr.skip()] * self.count
        if not self.keep:  # the caption shown no longer belongs to the picture: clear it
            outputs[self.at - 2] = outputs[self.at - 1] = ""  # caption, details
            if self.at + 1 < self.count:
                outputs[self.at + 1] = ""  # the scene lab's verdict
        # the explorer shows the message and ends its "writing the rest..." status; `at` makes
        # every failure a new value, so the page hears about a repeated one too
        outputs[self.at] = {"error": message, "keep": self.keep, "at": time.time()}
        self.outputs = tuple(outputs)


@contextlib.contextmanager
def ui_errors(count: int, at: int, keep: bool = False, title: str = "Cannot caption this image"):
    """For the page's handlers (`count` outputs, the explorer at index `at`): a bad image or
    setting becomes a warning and a message in the explorer, never an "Error" over the
    outputs. With `keep` (a question about the picture shown, a lab scene that could not be
    made) what is shown stays; otherwise the caption and explorer are cleared."""
    failure = Failure(count, at, keep)
    try:
        yield failure
    except (ImageError, ValueError) as e:
        gr.Warning(html.escape(str(e)), title=title)
        failure.failed(str(e))


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
