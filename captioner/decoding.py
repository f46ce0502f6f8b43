"""Caption generation without teacher forcing: greedy and beam search, batched over images.

Both return, for every image, the words, a length-normalised log-probability and, for every
word, its attention map, its gate and (on request) the top-k words it was chosen from, so the
app, the CLI and evaluation all see exactly the same thing. Both run the same `_step`, which
can also be steered: start from given words (`Guide.prefix`) or look where the user says
(`Guide.attention`, maps built with `point_map` / `box_map`).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from functools import partial

import numpy as np
import torch
from PIL import Image

from captioner.model import Captioner
from captioner.preprocess import to_model_input
from captioner.vocab import SPECIALS, tokenize


@dataclass
class Caption:
    tokens: list[str]
    score: float  # mean log-probability per emitted token (words + <end>), <= 0
    attention: np.ndarray  # (len(tokens), grid, grid); every map sums to 1
    # Per token, the top-k next words (word, probability) of the distribution it came from.
    alternatives: list[list[tuple[str, float]]] = field(default_factory=list)
    # Per token, the mean sigmoid gate: how much of the attended image context it used.
    gate: np.ndarray = field(default_factory=lambda: np.zeros(0, dtype=np.float32))
    # Beam search only: every finished hypothesis (tokens, score), best first.
    beams: list[tuple[list[str], float]] = field(default_factory=list)
    truncated: bool = False  # stopped at max_len without emitting <end>

    @property
    def text(self) -> str:
        return " ".join(self.tokens)


@dataclass
class Guide:
    """Steers one image's decoding: start with the words `prefix` (scored and traced like any
    other word), and at word position i (0-based) use `attention[i]` (grid x grid, or flat)
    instead of the model's own attention."""

    prefix: str | Sequence[str] = ()
    attention: Mapping[int, np.ndarray] = field(default_factory=dict)


def normalise(total_logprob: float, length: int, length_penalty: float) -> float:
    """Length normalisation: without it beam search prefers short captions."""
    return total_logprob / max(length, 1) ** length_penalty


def images_to_batch(model: Captioner, images: list[Image.Image]) -> torch.Tensor:
    cfg = model.config
    batch = [to_model_input(im, cfg.image_size, cfg.image_mean, cfg.image_std) for im in images]
    return torch.stack(batch).to(next(model.parameters()).device)


# --- "look here" maps, at the encoder's true cell centres ---

def point_map(centres: np.ndarray, x: float, y: float, sigma: float | None = None) -> np.ndarray:
    """A Gaussian attention map (grid, grid) around the point (x, y), given in fractions of the
    image side; `sigma` (fraction of the side) defaults to half a cell."""
    if not (0 <= x <= 1 and 0 <= y <= 1):
        raise ValueError(f"look-here point ({x}, {y}) must be inside the image: x, y in [0, 1]")
    if sigma is None:
        sigma = (centres[-1] - centres[0]) / max(len(centres) - 1, 1) / 2 or 0.25
    weights_x = np.exp(-0.5 * ((centres - x) / sigma) ** 2)
    weights_y = np.exp(-0.5 * ((centres - y) / sigma) ** 2)
    heat = np.outer(weights_y, weights_x)
    if heat.sum() == 0:  # far from every centre: all weight on the nearest cell
        heat[np.abs(centres - y).argmin(), np.abs(centres - x).argmin()] = 1.0
    return (heat / heat.sum()).astype(np.float32)


def box_map(centres: np.ndarray, box: Sequence[float]) -> np.ndarray:
    """Attention spread evenly over the cells whose centres fall inside `box` (x0, y0, x1, y1
    in fractions of the side); a box between centres gets its nearest cell."""
    x0, y0, x1, y1 = box
    if not (0 <= x0 < x1 <= 1 and 0 <= y0 < y1 <= 1):
        raise ValueError(f"box {tuple(box)} must be x0 < x1, y0 < y1, all in [0, 1]")
    inside_x = (centres >= x0) & (centres <= x1)
    inside_y = (centres >= y0) & (centres <= y1)
    if not inside_x.any():
        inside_x = np.abs(centres - (x0 + x1) / 2) == np.abs(centres - (x0 + x1) / 2).min()
    if not inside_y.any():
        inside_y = np.abs(centres - (y0 + y1) / 2) == np.abs(centres - (y0 + y1) / 2).min()
    heat = np.outer(inside_y, inside_x).astype(np.float32)
    return heat / heat.sum()


# --- steering, turned into tensors once per batch ---

def prefix_ids(vocab, prefix: str | Sequence[str]) -> list[int]:
    """Word ids of a forced start; a word the model does not know is an error that names it."""
    specials = [t for t in SPECIALS if isinstance(prefix, str) and t in prefix]
    if specials:  # the tokeniser would strip the brackets and report a plain word
        raise ValueError(f"{specials[0]} is one of the model's special tokens, not a word: "
                         "give only words")
    words = tokenize(prefix) if isinstance(prefix, str) else list(prefix)
    unknown = [w for w in words if w not in vocab.index or w in SPECIALS]
    if unknown:
        listed = ", ".join(repr(w) for w in dict.fromkeys(unknown))
        listed = listed if len(listed) <= 60 else listed[:59] + "…"  # a long paste, cut
        raise ValueError(f"prefix word(s) not in the model's vocabulary: {listed}")
    return [vocab.index[w] for w in words]


@dataclass
class _Steering:
    forced: torch.Tensor  # (rows, L) word id forced at each step, -1 where free
    overrides: dict[int, tuple[torch.Tensor, torch.Tensor]]  # step -> (rows mask, maps)


def _steering(model: Captioner, guides, batch: int, copies: int, device) -> _Steering | None:
    """One Guide for all images, or one per image -> tensors for `batch * copies` rows."""
    if guides is None:
        return None
    if isinstance(guides, Guide):
        guides = [guides] * batch
    if len(guides) != batch:
        raise ValueError(f"got {len(guides)} guides for {batch} images")
    cells = model.config.grid_size ** 2
    prefixes = [prefix_ids(model.vocab, g.prefix) for g in guides]
    forced = torch.full((batch, max(map(len, prefixes))), -1, dtype=torch.long)
    for b, ids in enumerate(prefixes):
        forced[b, :len(ids)] = torch.tensor(ids, dtype=torch.long)
    overrides: dict[int, tuple[torch.Tensor, torch.Tensor]] = {}
    for b, guide in enumerate(guides):
        for position, heat in guide.attention.items():
            heat = np.asarray(heat, dtype=np.float64).reshape(-1)
            if heat.size != cells or not np.isfinite(heat).all() or (heat < 0).any() \
                    or heat.sum() <= 0:
                raise ValueError(f"attention map for word {position} must hold {cells} "
                                 "non-negative values with a positive sum")
            rows, maps = overrides.setdefault(
                int(position), (torch.zeros(batch, dtype=torch.bool), torch.zeros(batch, cells)))
            rows[b] = True
            maps[b] = torch.from_numpy(heat / heat.sum())
    expand = lambda x: x.repeat_interleave(copies, dim=0).to(device)  # noqa: E731
    return _Steering(expand(forced), {t: (expand(r), expand(m))
                                      for t, (r, m) in overrides.items()})


def _word_logprobs(logits: torch.Tensor, vocab) -> torch.Tensor:
    """Log-probabilities of the next token; <pad> and <start> are never generated (decoding
    them would drop a word from the caption but keep its attention map, misaligning the rest)."""
    logp = logits.float().log_softmax(dim=1)
    logp[:, [vocab.pad_id, vocab.start_id]] = float("-inf")
    return logp


def _step(model, t, words, state, features, projected, steering, top_k):
    """One word for every row, shared by greedy and beam search. Returns the model's
    log-probabilities, the ones to choose from (only the forced word where a prefix forces
    one), the new state and this word's trace: attention, mean gate and top-k alternatives."""
    override = steering.overrides.get(t) if steering else None
    logits, state, alpha, gate = model.step(words, state, features, projected, override)
    logp = _word_logprobs(logits, model.vocab)
    choose = logp
    if steering is not None and t < steering.forced.shape[1]:
        forced = steering.forced[:, t]
        rows = forced >= 0
        if rows.any():
            choose = logp.clone()
            choose[rows] = float("-inf")
            choose[rows, forced[rows]] = logp[rows, forced[rows]]
    trace = {"attention": alpha.float(), "gate": gate.float().mean(dim=1)}
    if top_k:
        trace["alt_logp"], trace["alt_ids"] = logp.topk(min(top_k, logp.shape[1]), dim=1)
    return logp, choose, state, trace


def _to_caption(model, ids, total, trace, length_penalty) -> Caption:
    """A hypothesis (ids incl. <end> if it ended, and its per-step trace as numpy) -> Caption."""
    grid = model.config.grid_size
    vocab = model.vocab
    tokens = vocab.decode(ids)
    n = len(tokens)
    alternatives = [[(vocab.words[i], float(np.exp(lp))) for i, lp in zip(ids_, logps)]
                    for ids_, logps in zip(trace["alt_ids"][:n], trace["alt_logp"][:n])
                    ] if "alt_ids" in trace else []
    return Caption(tokens, float(normalise(total, len(ids), length_penalty)),
                   np.asarray(trace["attention"], dtype=np.float32)[:n].reshape(-1, grid, grid),
                   alternatives=alternatives, gate=np.asarray(trace["gate"][:n], np.float32),
                   truncated=vocab.end_id not in set(np.asarray(ids).tolist()))


BATCH_SIZE = 32  # images encoded and decoded together: the API's and the CLI's default


@torch.inference_mode()
def caption_images(model: Captioner, images: list[Image.Image], *, beam_size: int = 3,
                   max_len: int = 20, batch_size: int = BATCH_SIZE, length_penalty: float = 1.0,
                   top_k: int = 0, guide: Guide | Sequence[Guide] | None = None
                   ) -> list[Caption]:
    """PIL images -> captions, in batches of `batch_size` (`guide`: one for all, or per image)."""
    if beam_size < 1 or max_len < 1:
        raise ValueError("beam_size and max_len must be at least 1")
    if guide is not None and not isinstance(guide, Guide) and len(guide) != len(images):
        raise ValueError(f"got {len(guide)} guides for {len(images)} images")
    captions = []
    for start in range(0, len(images), batch_size):
        features = model.encode(images_to_batch(model, images[start:start + batch_size]))
        captions += decode(model, features, beam_size=beam_size, max_len=max_len,
                           length_penalty=length_penalty, top_k=top_k,
                           guide=guide if guide is None or isinstance(guide, Guide)
                           else guide[start:start + batch_size])
    return captions


def decode(model: Captioner, features: torch.Tensor, *, beam_size: int = 3, max_len: int = 20,
           length_penalty: float = 1.0, top_k: int = 0,
           guide: Guide | Sequence[Guide] | None = None) -> list[Caption]:
    """Encoded features (B, P, D) -> one Caption per image."""
    search = greedy if beam_size == 1 else partial(beam_search, beam_size=beam_size)
    return search(model, features, max_len=max_len, length_penalty=length_penalty,
                  top_k=top_k, guide=guide)


@torch.inference_mode()
def greedy(model: Captioner, features: torch.Tensor, *, max_len: int = 20,
           length_penalty: float = 1.0, top_k: int = 0,
           guide: Guide | Sequence[Guide] | None = None) -> list[Caption]:
    vocab = model.vocab
    batch = features.shape[0]
    steering = _steering(model, guide, batch, 1, features.device)
    state, projected = model.init_state(features)
    words = torch.full((batch,), vocab.start_id, dtype=torch.long, device=features.device)
    done = torch.zeros(batch, dtype=torch.bool, device=features.device)
    total = torch.zeros(batch, device=features.device)
    steps, traces = [], []
    for t in range(max_len):
        _, choose, state, trace = _step(model, t, words, state, features, projected,
                                        steering, top_k)
        logp, words = choose.max(dim=1)
        total += logp * ~done
        steps.append(words)
        traces.append(trace)
        done |= words == vocab.end_id
        if done.all():
            break
    ids = torch.stack(steps, 1).cpu().numpy()
    trace = {name: torch.stack([tr[name] for tr in traces], 1).cpu().numpy()
             for name in traces[0]}
    total = total.cpu().numpy()
    captions = []
    for b in range(batch):
        ends = np.flatnonzero(ids[b] == vocab.end_id)
        length = ends[0] + 1 if len(ends) else ids.shape[1]
        captions.append(_to_caption(model, ids[b, :length], total[b],
                                    {name: v[b] for name, v in trace.items()}, length_penalty))
    return captions


@torch.inference_mode()
def beam_search(model: Captioner, features: torch.Tensor, *, beam_size: int = 3,
                max_len: int = 20, length_penalty: float = 1.0, top_k: int = 0,
                guide: Guide | Sequence[Guide] | None = None) -> list[Caption]:
    """Keep `beam_size` live hypotheses per image; a hypothesis that emits <end> moves to the
    image's finished pool. An image is done once its pool holds `beam_size` hypotheses and no
    live one scores better than the best of them; at `max_len` the live ones join the pool, so
    there is always an answer even for a model that never ends a sentence."""
    vocab = model.vocab
    batch, k = features.shape[0], beam_size
    device = features.device
    steering = _steering(model, guide, batch, k, device)
    state, projected = model.init_state(features)
    # One encoder pass per image: every hypothesis shares its image's features and projection.
    features = features.repeat_interleave(k, dim=0)
    projected = projected.repeat_interleave(k, dim=0)
    state = state.select(torch.arange(batch, device=device).repeat_interleave(k))
    scores = torch.full((batch, k), float("-inf"), device=device)
    scores[:, 0] = 0.0  # all beams start identical: expand only the first one
    words = torch.full((batch * k,), vocab.start_id, dtype=torch.long, device=device)
    seqs = torch.zeros((batch * k, 0), dtype=torch.long, device=device)
    rows, cells, width = batch * k, features.shape[1], min(top_k, len(vocab))
    history = {"attention": torch.zeros(rows, 0, cells, device=device),  # per row, every step
               "gate": torch.zeros(rows, 0, device=device)}
    if top_k:
        history["alt_logp"] = torch.zeros(rows, 0, width, device=device)
        history["alt_ids"] = torch.zeros(rows, 0, width, dtype=torch.long, device=device)
    finished: list[list[tuple[np.ndarray, float, dict]]] = [[] for _ in range(batch)]
    done = [False] * batch

    def traced(row):
        return {name: h[row].cpu().numpy() for name, h in history.items()}

    for t in range(max_len):
        _, choose, state, trace = _step(model, t, words, state, features, projected,
                                        steering, top_k)
        vocab_size = choose.shape[1]
        candidates = (scores.reshape(-1, 1) + choose).reshape(batch, k * vocab_size)
        top_scores, top_index = candidates.topk(2 * k, dim=1)
        top_beam, top_word = top_index // vocab_size, top_index % vocab_size
        top_scores, top_beam, top_word = (x.cpu() for x in (top_scores, top_beam, top_word))
        origin, new_words, new_scores = [], [], []
        for b in range(batch):
            live = []
            for rank, (score, beam, word) in enumerate(zip(
                    top_scores[b].tolist(), top_beam[b].tolist(), top_word[b].tolist())):
                row = b * k + beam
                if word == vocab.end_id:
                    # Only an <end> among the k best candidates finishes a hypothesis: the
                    # others would fill the pool with captions the beam itself would drop.
                    if rank < k and not done[b] and score > float("-inf"):
                        ids = np.append(seqs[row].cpu().numpy(), word)
                        finished[b].append((ids, score, traced(row)))
                elif len(live) < k:
                    live.append((row, word, score))
            if not done[b] and len(finished[b]) >= k:
                # A full pool is not enough: its captions may all be worse than a live one
                # (e.g. junk that ended early while the likely caption is still being written).
                best = max(normalise(s, len(ids), length_penalty) for ids, s, _ in finished[b])
                done[b] = all(normalise(s, t + 1, length_penalty) <= best for _, _, s in live)
            origin += [row for row, _, _ in live]
            new_words += [word for _, word, _ in live]
            new_scores += [float("-inf") if done[b] else score for _, _, score in live]
        origin = torch.tensor(origin, device=device)
        words = torch.tensor(new_words, device=device)
        scores = torch.tensor(new_scores, device=device).reshape(batch, k)
        seqs = torch.cat([seqs[origin], words.unsqueeze(1)], dim=1)
        history = {name: torch.cat([history[name][origin], step[origin].unsqueeze(1)], dim=1)
                   for name, step in trace.items()}
        state = state.select(origin)
        if all(done):
            break
    captions = []
    for b in range(batch):
        pool = finished[b]
        if not done[b]:  # max_len reached: unfinished hypotheses compete too
            pool += [(seqs[b * k + beam].cpu().numpy(), scores[b, beam].item(),
                      traced(b * k + beam))
                     for beam in range(k) if scores[b, beam].item() > float("-inf")]
        pool.sort(key=lambda item: normalise(item[1], len(item[0]), length_penalty),
                  reverse=True)
        ids, total, trace = pool[0]
        caption = _to_caption(model, ids, total, trace, length_penalty)
        caption.beams = [(vocab.decode(i), float(normalise(s, len(i), length_penalty)))
                         for i, s, _ in pool]
        captions.append(caption)
    return captions
