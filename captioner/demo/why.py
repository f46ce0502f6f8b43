""""Why this word?": for one word of a caption, three maps of the model's grid (its attention,
Grad-CAM of log p(word), and occlusion: the drop in log p(word) when each cell alone is
removed) and how much p(word) drops when the attended cells are removed together. Computed by
`captioner.faithfulness.explain_word` on request, for one caption and word at a time (each costs
one backward pass and grid x grid extra decodes). What each map proves and does not prove:
docs/faithfulness.md.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from captioner.faithfulness import WordExplanation
from captioner.hub import BUNDLED_WEIGHTS

DECIMALS = 5  # maps sent to the browser: 1e-5 is far below one colour level

# One line per map for the page: what it shows, and what it does not prove.
MAP_NOTES = {
    "attention": "where the model looked before writing the word; does not prove it used "
                 "what it saw there",
    "gradcam": "cells whose features push log p(word) up, to first order; a gradient, not "
               "what removing them does",
    "occlusion": "how much log p(word) falls when each cell alone is replaced by the "
                 "background; misses what several cells do together",
}


def hard_companion(source: str | Path) -> Path | None:
    """The hard-attention model the app offers beside `source`: the bundled weights/hard/ when
    `source` is the bundled weights and it is there; None for any other model (one model)."""
    hard = BUNDLED_WEIGHTS / "hard"
    if Path(str(source)).resolve() == BUNDLED_WEIGHTS and (hard / "config.json").is_file():
        return hard
    return None


def flat(values: np.ndarray) -> list[float]:
    return np.round(np.asarray(values, dtype=np.float64).ravel(), DECIMALS).tolist()


def why_payload(explanation: WordExplanation, tokens: list[str], word: int,
                attention_kind: str, steered: bool) -> dict:
    """Plain JSON for one word's explanation: the three maps flattened (grid x grid, row-major,
    as the explorer's attention), the attended cells, and p(word) with and without them."""
    p, without = explanation.probability, explanation.probability_without_attended
    return {
        "word": word,  # 1-based, as the explorer counts
        "token": tokens[word - 1],
        "caption": " ".join(tokens),
        "model": attention_kind,
        "grid": int(explanation.attention.shape[-1]),
        "attention": flat(explanation.attention),
        "gradcam": flat(explanation.gradcam),
        "occlusion": flat(explanation.occlusion),
        "attended": [bool(a) for a in np.asarray(explanation.attended).ravel()],
        "probability": round(p, 6),
        "probability_without_attended": round(without, 6),
        "drop": round(p - without, 6),
        # a look-here word's caption attention was the visitor's point, not the model's own
        "steered": steered,
        "notes": MAP_NOTES,
    }
