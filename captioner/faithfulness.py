"""Is attention an explanation? Measurements of whether the model *uses* what it looks at.

Attention maps are easy to draw and easy to over-trust (Jain & Wallace 2019; Adebayo et al.
2018). On generated scenes the named object's box is known, so each word that names an object
(its size, colour or shape word) can be tested by intervention on the encoder's feature grid:

- causal grounding: remove the object's cells and compare the drop in log p(word) with
  removing as many random cells elsewhere; the chance control does the same with the boxes of
  another scene, which cannot know where the object is;
- rank agreement (Spearman over cells) of attention with Grad-CAM and with occlusion;
- greedy captions when every word reads the plain mean of the grid (uniform attention);
- deletion and insertion curves over cells ranked by attention, Grad-CAM or at random;
- the randomisation sanity check: re-initialise the attention layers, see how far maps move.

"Removing" a cell replaces its image channels by the mean feature of background cells (cells
outside every object's box, in the same batch of scenes) and keeps its coordinate channels: the
decoder sees a natural input without the object, not an out-of-distribution hole. Scores are
teacher-forced on the model's own greedy caption, so attention is exactly what it drew.
docs/faithfulness.md says what each figure means and what it does not prove.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass

import numpy as np
import torch
from torch import nn

from captioner.decoding import Caption, box_map, decode, images_to_batch
from captioner.scenes import caption_correctness

CHUNK = 512  # teacher-forced rows scored at once
CURVE_POINTS = 9  # deletion/insertion: 0, 1/8, ..., all cells removed (or inserted)


# --- ranks and maps ---

def average_ranks(values: np.ndarray) -> np.ndarray:
    """Ranks from 0, ties sharing their mean rank (as Spearman's rho needs)."""
    values = np.asarray(values, dtype=np.float64).reshape(-1)
    order = np.argsort(values, kind="mergesort")
    ranks = np.empty(len(values))
    ranks[order] = np.arange(len(values))
    _, groups = np.unique(values, return_inverse=True)
    return (np.bincount(groups, ranks) / np.bincount(groups))[groups]


def spearman(a: np.ndarray, b: np.ndarray) -> float | None:
    """Spearman's rank correlation of two maps over their cells; None if either is constant."""
    ra, rb = average_ranks(a), average_ranks(b)
    ra, rb = ra - ra.mean(), rb - rb.mean()
    norm = np.sqrt((ra ** 2).sum() * (rb ** 2).sum())
    return float((ra * rb).sum() / norm) if norm > 0 else None


def object_cells(centres: np.ndarray, box, image_size: int) -> np.ndarray:
    """(P,) bool: the grid cells whose centres fall in the box (in pixels); at least one."""
    return box_map(centres, [v / image_size for v in box]).reshape(-1) > 0


def attended_cells(alpha: np.ndarray, mass: float = 0.5) -> np.ndarray:
    """(P,) bool: the fewest most-attended cells that hold at least `mass` of the attention."""
    alpha = np.asarray(alpha, dtype=np.float64).reshape(-1)
    order = np.argsort(-alpha, kind="mergesort")
    count = int(np.searchsorted(np.cumsum(alpha[order]), mass * alpha.sum()) + 1)
    cells = np.zeros(len(alpha), dtype=bool)
    cells[order[:min(count, len(alpha))]] = True
    return cells


# --- teacher-forced scoring of (ablated) feature grids ---

def caption_ids(model, captions: list[list[str]], device) -> torch.Tensor:
    """<start> + word ids, padded: the input that makes logits[:, i] predict word i."""
    vocab = model.vocab
    width = 1 + max((len(c) for c in captions), default=0)
    ids = torch.full((len(captions), width), vocab.pad_id, dtype=torch.long)
    for row, tokens in enumerate(captions):
        ids[row, 0] = vocab.start_id
        ids[row, 1:1 + len(tokens)] = torch.tensor([vocab.index.get(w, vocab.unk_id)
                                                    for w in tokens], dtype=torch.long)
    return ids.to(device)


def word_logprobs(model, features: torch.Tensor, ids: torch.Tensor):
    """log p of each word given the words before it (B, L) and the attention maps (B, L, P)."""
    logits, alphas = model(features, ids)
    logp = logits.float().log_softmax(dim=2)
    return logp.gather(2, ids[:, 1:].unsqueeze(2)).squeeze(2), alphas


@torch.no_grad()
def scored_rows(model, features: torch.Tensor, ids: torch.Tensor) -> torch.Tensor:
    """`word_logprobs` over many rows, CHUNK rows at a time (B, L)."""
    return torch.cat([word_logprobs(model, features[i:i + CHUNK], ids[i:i + CHUNK])[0]
                      for i in range(0, len(features), CHUNK)]) if len(features) else \
        torch.zeros(0, ids.shape[1] - 1)


def image_channels(model) -> torch.Tensor:
    """(D,) bool: the feature channels that come from the image (the others are coordinates;
    an ensemble's grid holds each member's channels in turn)."""
    return model.image_channel_mask()


def removed(model, features: torch.Tensor, cells: torch.Tensor, background: torch.Tensor):
    """Feature grids (B, P, D) with the image channels of `cells` (B, P bool) replaced by the
    background feature (one value per image channel); coordinate channels are left as they
    are."""
    image = image_channels(model).to(features.device)
    fill = features.new_zeros(features.shape[2])
    fill[image] = background
    return torch.where(cells.unsqueeze(2) & image, fill, features)


def background_feature(model, features: torch.Tensor, object_masks: torch.Tensor):
    """Mean image feature of cells outside every object (all cells if there are none)."""
    free = ~object_masks
    if not free.any():
        free = torch.ones_like(free)
    return features[..., image_channels(model).to(features.device)][free].mean(dim=0)


def gradcam(model, features: torch.Tensor, ids: torch.Tensor, positions: torch.Tensor):
    """Grad-CAM of log p(word at `positions[r]`) for each row r, over the grid (R, P):
    ReLU(sum_c w_c f_pc) with w_c the gradient averaged over cells (Selvaraju et al. 2017),
    on the image channels. Rows are independent copies, so one backward pass serves all."""
    image = image_channels(model).to(features.device)
    maps = []
    for i in range(0, len(features), CHUNK):
        grid = features[i:i + CHUNK].detach().clone().requires_grad_(True)
        with torch.enable_grad():
            logp, _ = word_logprobs(model, grid, ids[i:i + CHUNK])
            chosen = logp.gather(1, positions[i:i + CHUNK].unsqueeze(1)).sum()
            grad, = torch.autograd.grad(chosen, grid)
        weights = grad[..., image].mean(dim=1, keepdim=True)
        maps.append(torch.relu((weights * grid.detach()[..., image]).sum(dim=2)))
    return torch.cat(maps) if maps else torch.zeros(0, features.shape[1])


def occlusion(model, features: torch.Tensor, ids: torch.Tensor, background: torch.Tensor):
    """Drop in log p of every word when each single cell is removed: (B, L, P). One scene's P
    copies at a time: all B x P grids at once would take gigabytes (an ensemble's the most)."""
    cells = features.shape[1]
    one = torch.eye(cells, dtype=torch.bool, device=features.device)
    base = scored_rows(model, features, ids)
    drops = [base[b] - scored_rows(model, removed(model, grid.expand(cells, -1, -1), one,
                                                  background), ids[b].expand(cells, -1))
             for b, grid in enumerate(features)]
    return torch.stack(drops).transpose(1, 2) if drops else base.new_zeros(0, ids.shape[1] - 1,
                                                                              cells)


# --- the measurements, per batch of scenes ---

@dataclass
class NamedWord:
    """A caption word that names a scene object: its size, colour or shape word."""

    scene: int  # row within the batch
    position: int  # index into the caption's tokens
    cells: np.ndarray  # (P,) bool: the object's cells


def named_words(captions: list[Caption], objects: list[list[dict]], centres: np.ndarray,
                image_size: int) -> list[NamedWord]:
    words = []
    for scene, (caption, objs) in enumerate(zip(captions, objects)):
        result = caption_correctness(caption.tokens, objs)
        for mention, match in zip(result["parsed"].mentions, result["matches"]):
            if match is None:
                continue
            cells = object_cells(centres, objs[match]["box"], image_size)
            for position in (mention.size_index, mention.color_index, mention.shape_index):
                if position is not None and position < len(caption.tokens):
                    words.append(NamedWord(scene, position, cells))
    return words


def causal_trials(words: list[NamedWord], objects: list[list[dict]], centres, image_size,
                  rng: np.random.Generator):
    """Per word, four cell sets to remove: the object's, as many random cells outside it, the
    box of a random object of another scene in the batch (control), and as many random cells
    outside that box. None for words where a set cannot be drawn."""
    trials = []
    for word in words:
        others = [o for s, objs in enumerate(objects) if s != word.scene for o in objs]
        if not others:
            trials.append(None)
            continue
        control = object_cells(centres, others[rng.integers(len(others))]["box"], image_size)
        sets = [word.cells, elsewhere(word.cells, rng), control, elsewhere(control, rng)]
        trials.append(None if any(s is None for s in sets) else sets)
    return trials


def elsewhere(cells: np.ndarray, rng: np.random.Generator) -> np.ndarray | None:
    """As many cells as `cells` holds, drawn at random from the cells outside it."""
    outside = np.flatnonzero(~cells)
    if len(outside) < cells.sum():
        return None
    chosen = np.zeros_like(cells)
    chosen[rng.choice(outside, size=int(cells.sum()), replace=False)] = True
    return chosen


def curve_aucs(model, grid, ids_row, position, rankings: dict[str, np.ndarray], background):
    """Deletion and insertion AUC of p(word) for each ranking of the cells (most important
    first): remove the top k cells (deletion; low is faithful), or remove all but the top k
    (insertion; high is faithful), k from 0 to all in CURVE_POINTS steps."""
    cells = grid.shape[0]
    ks = np.linspace(0, cells, CURVE_POINTS).round().astype(int)
    masks = []
    for order in rankings.values():
        for k in ks:
            top = np.zeros(cells, dtype=bool)
            top[order[:k]] = True
            masks += [top, ~top]
    masks = torch.from_numpy(np.stack(masks)).to(grid.device)
    rows = removed(model, grid.unsqueeze(0).expand(len(masks), -1, -1), masks, background)
    p = scored_rows(model, rows, ids_row.expand(len(masks), -1))[:, position].exp().numpy()
    p = p.reshape(len(rankings), CURVE_POINTS, 2)
    x = ks / cells
    return {name: (float(np.trapezoid(p[i, :, 0], x)), float(np.trapezoid(p[i, :, 1], x)))
            for i, name in enumerate(rankings)}


@torch.no_grad()
def causal_results(model, features, ids, words: list[NamedWord], trials, background):
    """Per word with a trial (see `causal_trials`): (does removing the object's cells lower
    log p(word) more than removing as many cells elsewhere, the same for the control box),
    each 1.0 or 0.0."""
    kept = [(w, t) for w, t in zip(words, trials) if t is not None]
    if not kept:
        return []
    device = features.device
    scene = torch.tensor([w.scene for w, _ in kept for _ in range(4)], device=device)
    position = torch.tensor([w.position for w, _ in kept for _ in range(4)], device=device)
    cells = torch.from_numpy(np.stack([s for _, t in kept for s in t])).to(device)
    base = scored_rows(model, features[scene[::4]], ids[scene[::4]])
    base = base.gather(1, position[::4].unsqueeze(1)).squeeze(1).cpu().numpy()
    lp = scored_rows(model, removed(model, features[scene], cells, background), ids[scene])
    lp = lp.gather(1, position.unsqueeze(1)).reshape(-1, 4).cpu().numpy()
    drop = base[:, None] - lp  # (words, 4): object, elsewhere, control, control elsewhere
    return [(float(d[0] > d[1]), float(d[2] > d[3])) for d in drop]


def reinitialised_attention(model) -> nn.Module:
    """A copy of the model whose attention layers are freshly initialised (seeded)."""
    twin = copy.deepcopy(model)
    torch.manual_seed(0)
    for layer in twin.attention.modules():
        if isinstance(layer, nn.Linear):
            layer.reset_parameters()
    return twin.eval()


@torch.no_grad()
def uniform_greedy(model, features: torch.Tensor, max_len: int) -> list[Caption]:
    """Greedy captions when every word reads the plain mean of the grid; each Caption keeps the
    attention the model *would* have used, so its pointing can still be scored."""
    vocab = model.vocab
    state, projected = model.init_state(features)
    words = torch.full((len(features),), vocab.start_id, dtype=torch.long,
                       device=features.device)
    steps, maps = [], []
    for _ in range(max_len):
        logits, state, alpha, _ = model.step(words, state, features, projected,
                                             read=lambda a, f: f.mean(dim=1))
        logits[:, [vocab.pad_id, vocab.start_id]] = float("-inf")
        words = logits.argmax(dim=1)
        steps.append(words)
        maps.append(alpha)
        if (torch.stack(steps, 1) == vocab.end_id).any(dim=1).all():
            break
    ids = torch.stack(steps, 1).cpu().numpy()
    maps = torch.stack(maps, 1).float().cpu().numpy()
    grid = model.config.grid_size
    captions = []
    for row, alpha in zip(ids, maps):
        tokens = vocab.decode(row)
        captions.append(Caption(tokens, 0.0, alpha[:len(tokens)].reshape(-1, grid, grid)))
    return captions


class Tally:
    """Per-word results gathered over batches, summarised at the end."""

    def __init__(self):
        self.values: dict[str, list] = {}

    def add(self, name: str, value) -> None:
        if value is not None:
            self.values.setdefault(name, []).append(value)

    def mean(self, name: str) -> float | None:
        values = self.values.get(name)
        return round(float(np.mean(values)), 4) if values else None

    def count(self, name: str) -> int:
        return len(self.values.get(name, []))


@torch.no_grad()
def faithfulness_batch(model, twin, features, objects, tally: Tally, rng, *, max_len: int,
                       curve_budget: list[int]) -> list[Caption]:
    """Every measurement on one batch of encoded scenes; returns the uniform-attention captions
    (scored by the caller with the usual scene metrics)."""
    cfg = model.config
    centres = model.encoder.cell_centres()
    captions = decode(model, features, beam_size=1, max_len=max_len)
    words = named_words(captions, objects, centres, cfg.image_size)
    ids = caption_ids(model, [c.tokens for c in captions], features.device)
    masks = torch.stack([torch.from_numpy(np.any(
        [object_cells(centres, o["box"], cfg.image_size) for o in objs] or
        [np.zeros(cfg.grid_size ** 2, bool)], axis=0)) for objs in objects]).to(features.device)
    background = background_feature(model, features, masks)
    _, alphas = word_logprobs(model, features, ids)
    _, twin_alphas = word_logprobs(twin, features, ids)
    if words:
        scene = torch.tensor([w.scene for w in words], device=features.device)
        position = torch.tensor([w.position for w in words], device=features.device)
        cams = gradcam(model, features[scene], ids[scene], position).cpu().numpy()
        twin_cams = gradcam(twin, features[scene], ids[scene], position).cpu().numpy()
        occ = occlusion(model, features, ids, background).cpu().numpy()
        trials = causal_trials(words, objects, centres, cfg.image_size, rng)
        for grounded, chance in causal_results(model, features, ids, words, trials, background):
            tally.add("grounded", grounded)
            tally.add("grounded_chance", chance)
        alphas_np, twin_np = alphas.cpu().numpy(), twin_alphas.cpu().numpy()
        for i, word in enumerate(words):
            alpha = alphas_np[word.scene, word.position]
            tally.add("named", 1)
            tally.add("att_cam", spearman(alpha, cams[i]))
            tally.add("att_occ", spearman(alpha, occ[word.scene, word.position]))
            tally.add("cam_occ", spearman(cams[i], occ[word.scene, word.position]))
            tally.add("random_att", spearman(alpha, twin_np[word.scene, word.position]))
            tally.add("random_att_tv",
                      0.5 * np.abs(alpha - twin_np[word.scene, word.position]).sum())
            tally.add("random_cam", spearman(cams[i], twin_cams[i]))
            if curve_budget[0] > 0:
                curve_budget[0] -= 1
                order = lambda m: np.argsort(-m, kind="mergesort")  # noqa: E731
                aucs = curve_aucs(model, features[word.scene], ids[word.scene:word.scene + 1],
                                  word.position, {"attention": order(alpha),
                                                  "gradcam": order(cams[i]),
                                                  "random": rng.permutation(len(alpha))},
                                  background)
                for name, (deletion, insertion) in aucs.items():
                    tally.add(f"deletion_{name}", deletion)
                    tally.add(f"insertion_{name}", insertion)
    return uniform_greedy(model, features, max_len)


def faithfulness_for_split(model, split, *, max_len: int = 20, batch_size: int = 32,
                           curve_words: int = 1000, seed: int = 0) -> dict:
    """The faithfulness block of `evaluate` for a scenes split (see the module docstring).
    Deletion/insertion curves cost 54 decodes per word: only the first `curve_words` words."""
    from captioner.evaluation import objects_of, scene_metrics, split_features

    cfg = model.config
    objects = [objects_of(o) for o in split["objects"]]
    twin = reinitialised_attention(model)
    rng = np.random.default_rng(seed)
    tally, uniform, budget = Tally(), [], [curve_words]
    for start, features in split_features(model, split, batch_size=batch_size,
                                          desc="faithfulness"):
        uniform += faithfulness_batch(model, twin, features,
                                      objects[start:start + len(features)], tally, rng,
                                      max_len=max_len, curve_budget=budget)
    plain = scene_metrics(uniform, objects, cfg.image_size, model.encoder.cell_centres(),
                          cfg.grid_size)
    m = tally.mean
    return {
        "named_words": tally.count("named"),
        "causal_grounding": m("grounded"), "causal_grounding_chance": m("grounded_chance"),
        "causal_trials": tally.count("grounded"),
        "attention_gradcam_spearman": m("att_cam"),
        "attention_occlusion_spearman": m("att_occ"),
        "gradcam_occlusion_spearman": m("cam_occ"),
        "uniform_attention_exact": plain["objects_correct"],
        "uniform_attention_pointing": plain["pointing"],
        "deletion_auc": {k: m(f"deletion_{k}") for k in ("attention", "gradcam", "random")},
        "insertion_auc": {k: m(f"insertion_{k}") for k in ("attention", "gradcam", "random")},
        "curve_words": tally.count("deletion_attention"),
        "randomised_attention_spearman": m("random_att"),
        "randomised_attention_tv": m("random_att_tv"),
        "randomised_gradcam_spearman": m("random_cam"),
        "attention": cfg.attention + (f" ({cfg.hard_readout})" if cfg.attention == "hard"
                                      else ""),
    }


# --- one word, for the app ---

@dataclass
class WordExplanation:
    """Why one word of one caption: three maps (grid, grid) and what removing the attended
    cells does to the word's probability."""

    attention: np.ndarray
    gradcam: np.ndarray
    occlusion: np.ndarray  # drop in log p(word) when each cell alone is removed
    attended: np.ndarray  # bool: the fewest top cells holding half the attention
    probability: float
    probability_without_attended: float


@torch.no_grad()
def explain_word(model, image, tokens: list[str], position: int) -> WordExplanation:
    """Attention, Grad-CAM and occlusion for word `position` of the caption `tokens` of a PIL
    `image`, and its probability before and after removing the attended cells (background:
    the image's mean feature)."""
    if not 0 <= position < len(tokens):
        raise ValueError(f"word position {position} is outside the caption's "
                         f"{len(tokens)} words")
    model.eval()
    features = model.encode(images_to_batch(model, [image]))
    ids = caption_ids(model, [tokens], features.device)
    grid = model.config.grid_size
    logp, alphas = word_logprobs(model, features, ids)
    alpha = alphas[0, position].float().cpu().numpy()
    background = features[0][:, image_channels(model)].mean(dim=0)
    cam = gradcam(model, features, ids, torch.tensor([position], device=features.device))
    occ = occlusion(model, features, ids, background)[0, position].cpu().numpy()
    attended = attended_cells(alpha)
    without = scored_rows(model, removed(model, features, torch.from_numpy(attended)
                                         .to(features.device).unsqueeze(0), background), ids)
    return WordExplanation(
        attention=alpha.reshape(grid, grid), gradcam=cam[0].cpu().numpy().reshape(grid, grid),
        occlusion=occ.reshape(grid, grid), attended=attended.reshape(grid, grid),
        probability=float(logp[0, position].exp()),
        probability_without_attended=float(without[0, position].exp()))


def summary_lines(block: dict) -> list[str]:
    """The faithfulness block as printed by `evaluate`, one figure and its reading per line."""
    pct = lambda v: "n/a" if v is None else f"{v * 100:.1f} %"  # noqa: E731
    num = lambda v: "n/a" if v is None else f"{v:.3f}"  # noqa: E731
    dele, ins = block["deletion_auc"], block["insertion_auc"]
    return [
        f"faithfulness ({block['attention']} attention, {block['named_words']} words naming "
        f"an object in the greedy captions of {block.get('scenes', 'all')} scenes):",
        f"  causal grounding {pct(block['causal_grounding'])} (chance control "
        f"{pct(block['causal_grounding_chance'])}, {block['causal_trials']} words): removing "
        "the named object's cells hurts the word more than removing as many cells elsewhere",
        f"  attention vs Grad-CAM Spearman {num(block['attention_gradcam_spearman'])}, vs "
        f"occlusion {num(block['attention_occlusion_spearman'])} (Grad-CAM vs occlusion "
        f"{num(block['gradcam_occlusion_spearman'])})",
        f"  uniform attention: all objects right {pct(block['uniform_attention_exact'])}, "
        f"pointing of the unused maps {pct(block['uniform_attention_pointing'])}",
        f"  deletion AUC (low: faithful) attention {num(dele['attention'])}, Grad-CAM "
        f"{num(dele['gradcam'])}, random {num(dele['random'])}; insertion AUC (high: faithful) "
        f"attention {num(ins['attention'])}, Grad-CAM {num(ins['gradcam'])}, random "
        f"{num(ins['random'])} ({block['curve_words']} words)",
        f"  attention layers re-initialised: maps' Spearman with the trained ones "
        f"{num(block['randomised_attention_spearman'])}, total variation "
        f"{num(block['randomised_attention_tv'])}; Grad-CAM's "
        f"{num(block['randomised_gradcam_spearman'])}",
    ]
