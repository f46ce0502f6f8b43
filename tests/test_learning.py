"""The learning test: a tiny model, trained for seconds, must caption its training images."""

import time

import numpy as np
import torch
from PIL import Image

from captioner.decoding import caption_images
from captioner.model import Captioner, CaptionerConfig
from captioner.preprocess import to_model_input
from captioner.vocab import Vocabulary

SIZE = 32


def solid(colour):
    return Image.new("RGB", (SIZE, SIZE), colour)


def halves(top, bottom):
    image = solid(bottom)
    image.paste(Image.new("RGB", (SIZE, SIZE // 2), top), (0, 0))
    return image


def stripes(a, b, vertical):
    pixels = np.zeros((SIZE, SIZE, 3), dtype=np.uint8)
    band = (np.arange(SIZE) // 4) % 2 == 0
    mask = band[None, :] if vertical else band[:, None]
    pixels[:] = np.where(mask[..., None], a, b)
    return Image.fromarray(pixels)


# Captions share words ("a", "on", "red", ...) so the model must look at the image to choose.
EXAMPLES = [
    (solid((220, 30, 30)), "a red square"),
    (solid((30, 30, 220)), "a blue square"),
    (halves((220, 30, 30), (30, 200, 30)), "red on green"),
    (halves((30, 200, 30), (220, 30, 30)), "green on red"),
    (stripes((250, 250, 250), (0, 0, 0), vertical=True), "black and white stripes"),
    (stripes((230, 220, 30), (30, 30, 220), vertical=False), "a yellow and blue stripe pattern"),
]


def test_tiny_model_learns_to_caption_its_training_images():
    torch.manual_seed(0)
    images = [image for image, _ in EXAMPLES]
    texts = [text for _, text in EXAMPLES]
    vocab = Vocabulary.build(texts)
    model = Captioner(CaptionerConfig(
        vocab=vocab.words, encoder="resnet18", encoder_stage=1, grid_size=4, image_size=SIZE,
        embed_dim=32, attention_dim=32, hidden_dim=64, dropout=0.0))
    cfg = model.config
    batch = torch.stack([to_model_input(im, SIZE, cfg.image_mean, cfg.image_std)
                         for im in images])
    ids = [vocab.encode(t) for t in texts]
    captions = torch.full((len(ids), max(map(len, ids))), vocab.pad_id, dtype=torch.long)
    for i, row in enumerate(ids):
        captions[i, : len(row)] = torch.tensor(row)

    optimiser = torch.optim.Adam(model.parameters(), lr=3e-3)

    def train(steps):
        model.train()
        for _ in range(steps):
            loss, ce = model.loss(model.encode(batch), captions)
            optimiser.zero_grad()
            loss.backward()
            optimiser.step()
            losses.append(ce.item())
        model.eval()

    def greedy_texts():
        return [c.text for c in caption_images(model, images, beam_size=1, max_len=8)]

    start, losses, step = time.monotonic(), [], 0
    assert greedy_texts() != texts  # the untrained model does not know them
    while step < 300 and greedy_texts() != texts:
        train(5)
        step += 5
    elapsed = time.monotonic() - start
    print(f"learned in {step} steps, {elapsed:.1f} s; cross-entropy {losses[0]:.2f} -> "
          f"{losses[-1]:.3f}")
    assert greedy_texts() == texts, f"after {step} steps"
    assert losses[-1] < losses[0] / 5
    # a little more training: then beam search must agree with greedy on these confident
    # captions (and not stop early on a pool of unlikely short ones)
    train(20)
    assert greedy_texts() == texts
    assert [c.text for c in caption_images(model, images, beam_size=3, max_len=8)] == texts
