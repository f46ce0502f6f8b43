"""Caption generation without teacher forcing: greedy and beam search, batched over images.

Both return, for every image, the words, a length-normalised log-probability and the attention
map of every word, so the app, the CLI and evaluation all see exactly the same thing.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
from PIL import Image

from captioner.model import Captioner
from captioner.preprocess import to_model_input


@dataclass
class Caption:
    tokens: list[str]
    score: float  # mean log-probability per emitted token (words + <end>), <= 0
    attention: np.ndarray  # (len(tokens), grid, grid); every map sums to 1

    @property
    def text(self) -> str:
        return " ".join(self.tokens)


def normalise(total_logprob: float, length: int, length_penalty: float) -> float:
    """Length normalisation: without it beam search prefers short captions."""
    return total_logprob / max(length, 1) ** length_penalty


def images_to_batch(model: Captioner, images: list[Image.Image]) -> torch.Tensor:
    cfg = model.config
    batch = [to_model_input(im, cfg.image_size, cfg.image_mean, cfg.image_std) for im in images]
    return torch.stack(batch).to(next(model.parameters()).device)


BATCH_SIZE = 32  # images encoded and decoded together: the API's and the CLI's default


@torch.inference_mode()
def caption_images(model: Captioner, images: list[Image.Image], *, beam_size: int = 3,
                   max_len: int = 20, batch_size: int = BATCH_SIZE,
                   length_penalty: float = 1.0) -> list[Caption]:
    """PIL images -> captions, in batches of `batch_size`."""
    if beam_size < 1 or max_len < 1:
        raise ValueError("beam_size and max_len must be at least 1")
    captions = []
    for start in range(0, len(images), batch_size):
        features = model.encode(images_to_batch(model, images[start:start + batch_size]))
        captions += decode(model, features, beam_size=beam_size, max_len=max_len,
                           length_penalty=length_penalty)
    return captions


def decode(model: Captioner, features: torch.Tensor, *, beam_size: int = 3, max_len: int = 20,
           length_penalty: float = 1.0) -> list[Caption]:
    """Encoded features (B, P, D) -> one Caption per image."""
    if beam_size == 1:
        return greedy(model, features, max_len=max_len, length_penalty=length_penalty)
    return beam_search(model, features, beam_size=beam_size, max_len=max_len,
                       length_penalty=length_penalty)


def _word_logprobs(logits: torch.Tensor, vocab) -> torch.Tensor:
    """Log-probabilities of the next token; <pad> and <start> are never generated (decoding
    them would drop a word from the caption but keep its attention map, misaligning the rest)."""
    logp = logits.float().log_softmax(dim=1)
    logp[:, [vocab.pad_id, vocab.start_id]] = float("-inf")
    return logp


def _to_caption(model, ids, total, alphas, length_penalty) -> Caption:
    grid = model.config.grid_size
    tokens = model.vocab.decode(ids)
    attention = np.asarray(alphas, dtype=np.float32)[: len(tokens)].reshape(-1, grid, grid)
    return Caption(tokens, float(normalise(total, len(ids), length_penalty)), attention)


@torch.inference_mode()
def greedy(model: Captioner, features: torch.Tensor, *, max_len: int = 20,
           length_penalty: float = 1.0) -> list[Caption]:
    vocab = model.vocab
    batch = features.shape[0]
    state, projected = model.init_state(features)
    words = torch.full((batch,), vocab.start_id, dtype=torch.long, device=features.device)
    done = torch.zeros(batch, dtype=torch.bool, device=features.device)
    total = torch.zeros(batch, device=features.device)
    steps, alphas = [], []
    for _ in range(max_len):
        logits, state, alpha = model.step(words, state, features, projected)
        logp, words = _word_logprobs(logits, vocab).max(dim=1)
        total += logp * ~done
        steps.append(words)
        alphas.append(alpha)
        done |= words == vocab.end_id
        if done.all():
            break
    ids = torch.stack(steps, 1).cpu().numpy()
    alphas = torch.stack(alphas, 1).float().cpu().numpy()
    total = total.cpu().numpy()
    captions = []
    for b in range(batch):
        ends = np.flatnonzero(ids[b] == vocab.end_id)
        length = ends[0] + 1 if len(ends) else ids.shape[1]
        captions.append(_to_caption(model, ids[b, :length], total[b], alphas[b],
                                    length_penalty))
    return captions


@torch.inference_mode()
def beam_search(model: Captioner, features: torch.Tensor, *, beam_size: int = 3,
                max_len: int = 20, length_penalty: float = 1.0) -> list[Caption]:
    """Keep `beam_size` live hypotheses per image; a hypothesis that emits <end> moves to the
    image's finished pool. An image is done once its pool holds `beam_size` hypotheses and no
    live one scores better than the best of them; at `max_len` the live ones join the pool, so
    there is always an answer even for a model that never ends a sentence."""
    vocab = model.vocab
    batch, k = features.shape[0], beam_size
    device = features.device
    state, projected = model.init_state(features)
    # One encoder pass per image: every hypothesis shares its image's features and projection.
    features = features.repeat_interleave(k, dim=0)
    projected = projected.repeat_interleave(k, dim=0)
    state = state.select(torch.arange(batch, device=device).repeat_interleave(k))
    scores = torch.full((batch, k), float("-inf"), device=device)
    scores[:, 0] = 0.0  # all beams start identical: expand only the first one
    words = torch.full((batch * k,), vocab.start_id, dtype=torch.long, device=device)
    seqs = torch.zeros((batch * k, 0), dtype=torch.long, device=device)
    history = torch.zeros((batch * k, 0, features.shape[1]), device=device)
    finished: list[list[tuple[np.ndarray, float, np.ndarray]]] = [[] for _ in range(batch)]
    done = [False] * batch
    for t in range(max_len):
        logits, state, alpha = model.step(words, state, features, projected)
        logp = _word_logprobs(logits, vocab)
        vocab_size = logp.shape[1]
        candidates = (scores.reshape(-1, 1) + logp).reshape(batch, k * vocab_size)
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
                        finished[b].append((ids, score, history[row].cpu().numpy()))
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
        history = torch.cat([history[origin], alpha[origin].float().unsqueeze(1)], dim=1)
        state = state.select(origin)
        if all(done):
            break
    captions = []
    for b in range(batch):
        pool = finished[b]
        if not done[b]:  # max_len reached: unfinished hypotheses compete too
            pool += [(seqs[b * k + beam].cpu().numpy(), scores[b, beam].item(),
                      history[b * k + beam].cpu().numpy())
                     for beam in range(k) if scores[b, beam].item() > float("-inf")]
        ids, total, alphas = max(
            pool, key=lambda item: normalise(item[1], len(item[0]), length_penalty))
        captions.append(_to_caption(model, ids, total, alphas, length_penalty))
    return captions
