"""Vocabulary and tokenisation: one tokeniser for training data, references and model output."""

from __future__ import annotations

import re
from collections import Counter
from collections.abc import Iterable

PAD, START, END, UNK = "<pad>", "<start>", "<end>", "<unk>"
SPECIALS = (PAD, START, END, UNK)
_NON_WORD = re.compile(r"[^\w' ]+|_")


def tokenize(text: str) -> list[str]:
    """Lowercase, turn punctuation into spaces (keeping in-word apostrophes), split."""
    words = _NON_WORD.sub(" ", text.lower().replace("\u2019", "'")).split()
    return [w.strip("'") for w in words if w.strip("'")]


class Vocabulary:
    """Word <-> id mapping; the word list itself is what gets saved in config.json."""

    def __init__(self, words: Iterable[str]):
        self.words = list(words)
        if self.words[: len(SPECIALS)] != list(SPECIALS):
            raise ValueError(f"a vocabulary must start with the special tokens {SPECIALS}, "
                             f"got {self.words[:4]}")
        if len(set(self.words)) != len(self.words):
            raise ValueError("a vocabulary must not repeat words")
        self.index = {w: i for i, w in enumerate(self.words)}
        self.pad_id, self.start_id, self.end_id, self.unk_id = range(len(SPECIALS))

    @classmethod
    def build(cls, captions: Iterable[str], min_freq: int = 1, max_size: int | None = None):
        """Words seen at least `min_freq` times, most frequent first (ties alphabetical)."""
        counts = Counter(w for c in captions for w in tokenize(c))
        kept = sorted((w for w, n in counts.items() if n >= min_freq and w not in SPECIALS),
                      key=lambda w: (-counts[w], w))
        if max_size is not None:
            kept = kept[: max(0, max_size - len(SPECIALS))]
        return cls([*SPECIALS, *kept])

    def __len__(self) -> int:
        return len(self.words)

    def encode(self, caption: str, max_len: int | None = None) -> list[int]:
        """<start> w1 ... wn <end>, unknown words as <unk>, at most `max_len` words kept."""
        ids = [self.index.get(w, self.unk_id) for w in tokenize(caption)]
        if max_len is not None:
            ids = ids[:max_len]
        return [self.start_id, *ids, self.end_id]

    def decode(self, ids: Iterable[int]) -> list[str]:
        """Ids -> words, stopping at <end> and dropping <start>/<pad>."""
        words = []
        for i in ids:
            i = int(i)
            if i == self.end_id:
                break
            if i not in (self.pad_id, self.start_id):
                words.append(self.words[i])
        return words
