"""Weight averaging of fine-tunes of one model (a "model soup", Wortsman et al., ICML 2022).

Runs fine-tuned from the same model stay close enough in weight space that a weighted mean of
their weights is a working model too, between them in what it does: docs/worlds.md mixes the
plain fine-tune with a run taught where to look and finds a smooth trade between exact content
and pointing. `python -m captioner average A:0.9 B:0.1 --output DIR` writes such a mix.
"""

from __future__ import annotations

import math
from dataclasses import asdict
from pathlib import Path

from captioner.hub import load_model, looks_like_path
from captioner.model import Captioner


def parse_part(text: str) -> tuple[str, float]:
    """"FOLDER:SHARE" -> (FOLDER, SHARE); a bare FOLDER (or one whose tail after the last ':'
    is not a number, e.g. a Windows drive) has share 1."""
    source, _, tail = text.rpartition(":")
    try:
        share = float(tail)
    except ValueError:
        return text, 1.0
    if not source:
        raise ValueError(f"{text!r}: no model folder before ':{tail}'")
    if not math.isfinite(share) or share <= 0:
        raise ValueError(f"{text!r}: the share must be a positive number, got {tail}")
    return source, share


def average_models(parts: list[tuple[str, float]]) -> Captioner:
    """The weighted mean (shares normalised to sum 1) of models with one config: every
    floating tensor averaged in float64, integer counters (batch-norm's batch count) taken
    from the first model. Refused if the configs differ (vocabulary, architecture, world)."""
    models = load_alike([source for source, _ in parts], "averaging",
                        "only fine-tunes of one model can be averaged")
    mixed = mix_states([m.state_dict() for m in models], [share for _, share in parts])
    models[0].load_state_dict(mixed)  # strict: mix_states keeps every name of the first
    return models[0]


def load_alike(sources: list[str], task: str, alike: str) -> list[Captioner]:
    """The models in `sources` for `task`, refused in one line unless there are two or more
    and their configs agree (vocabulary, architecture, world); `alike` says why they must."""
    if len(sources) < 2:
        raise ValueError(f"{task} needs at least two models")
    for source in sources:  # before any download, in this command's words (no --weights)
        if looks_like_path(source) and not Path(source).expanduser().exists():
            raise ValueError(f"{source}: no such model folder")
    models = [load_model(source) for source in sources]
    first = asdict(models[0].config)
    for source, model in zip(sources[1:], models[1:]):
        other = asdict(model.config)
        differ = [k for k in first if first[k] != other[k]]
        if differ:
            raise ValueError(f"{source}: its config differs from that of {sources[0]} in "
                             f"{', '.join(differ)}; {alike}")
    return models


def mix_states(states: list[dict], shares: list[float]) -> dict:
    """sum(share x state) / sum(shares) for every floating tensor, computed in float64 and
    stored in the tensor's own dtype; integer tensors are the first state's."""
    total = sum(shares)
    mixed = {}
    for name, tensor in states[0].items():
        if tensor.is_floating_point():
            mean = sum(s[name].double() * (share / total) for s, share in zip(states, shares))
            mixed[name] = mean.to(tensor.dtype)
        else:
            mixed[name] = tensor
    return mixed


def recipe(parts: list[tuple[str, float]]) -> str:
    """"0.9 x weights + 0.1 x runs/b": the mix as it was made, shares normalised."""
    total = sum(share for _, share in parts)
    return " + ".join(f"{share / total:.4g} x {Path(source).as_posix()}"
                      for source, share in parts)
