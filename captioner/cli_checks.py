"""Argument checks shared by `python -m captioner` and `train_space.py`: a user's mistake is
one line from argparse (or a message before any long work), never a traceback hours later."""

from __future__ import annotations

import argparse
from pathlib import Path


class Parser(argparse.ArgumentParser):
    """An ArgumentParser whose errors are one line and a pointer to --help, not the usage of
    every option first (train_space.py has dozens)."""

    def error(self, message: str):
        self.exit(2, f"{self.prog}: error: {message}\n(see {self.prog} --help)\n")


def at_least(low: float, kind: type = int):
    """An argparse `type`: a number of `kind` no smaller than `low`."""
    noun = "a whole number" if kind is int else "a number"

    def parse(text: str):
        try:
            value = kind(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"'{text}' is not {noun}") from None
        if value < low:
            raise argparse.ArgumentTypeError(f"must be at least {low:g}, got {text}")
        return value

    parse.__name__ = kind.__name__  # argparse names the type in its own messages
    return parse


def output_problem(path: Path | None, flag: str, suffixes: tuple[str, ...]) -> str | None:
    """Where a command will write a file: a message when its suffix is not one it writes or
    its folder cannot be made; otherwise None, with the folder created."""
    if path is None:
        return None
    if path.suffix.lower() not in suffixes:
        return f"{flag} {path}: the file name must end in {' or '.join(suffixes)}"
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        return f"{flag} {path}: cannot create its folder ({e.strerror or e})"
    if path.is_dir():
        return f"{flag} {path}: is a folder; give a file name"
    return None
