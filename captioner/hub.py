"""Finding, loading and publishing model folders (local directories or Hugging Face Hub repos)."""

from __future__ import annotations

import contextlib
import json
import re
from dataclasses import fields
from pathlib import Path

from huggingface_hub import snapshot_download

from captioner.ensemble import Ensemble
from captioner.model import CONFIG_FILE, WEIGHTS_FILE, Captioner, CaptionerConfig, WeightsError

BUNDLED_WEIGHTS = Path(__file__).resolve().parent.parent / "weights"
REPO_ID = re.compile(r"^[\w.-]+(/[\w.-]+)?$")
MODEL_FILES = [CONFIG_FILE, WEIGHTS_FILE, "README.md", "metrics.json", "*.png"]


def looks_like_path(source: str) -> bool:
    """Hub ids are `name` or `owner/name`; anything else (./x, /x, a/b/c) is a local path."""
    return source.startswith((".", "~")) or not REPO_ID.match(source)


def resolve_model_dir(source: str | Path | None = None, revision: str | None = None) -> Path:
    """A local model folder as is, or a Hub repo id (at `revision`: a branch, tag or commit)
    downloaded (and cached) with the hub API."""
    source = str(source or BUNDLED_WEIGHTS)
    path = Path(source).expanduser()
    if path.is_dir():
        return path
    if path.is_file():  # model.safetensors or config.json given: the folder is what counts
        if path.name in (WEIGHTS_FILE, CONFIG_FILE):
            return path.parent
        raise WeightsError(f"{path} is a file: pass the folder that holds {WEIGHTS_FILE} and "
                           f"{CONFIG_FILE}, or a Hub repo id.")
    if looks_like_path(source):
        raise WeightsError(f"{path}: no such model folder.{missing_bundle_hint(path)} Pass "
                           "--weights with a folder holding model.safetensors + config.json, "
                           "or a Hub repo id.")
    try:
        return Path(snapshot_download(source, revision=revision, allow_patterns=MODEL_FILES))
    except Exception as e:  # offline, unknown repo, auth: all need the same advice
        raise WeightsError(f"no local folder '{source}' exists (in {Path.cwd()}), and it could "
                           f"not be fetched from the Hugging Face Hub either "
                           f"({type(e).__name__}: {e}). Pass a local model folder or a Hub "
                           "repo id you can reach.") from e


def missing_bundle_hint(path: Path) -> str:
    """Where the default weights come from when they are missing: a checkout can train them;
    an installed package never ships them."""
    if path.resolve() != BUNDLED_WEIGHTS:
        return ""
    if (Path(__file__).resolve().parent.parent / "train_space.py").is_file():  # a checkout
        return " Train them with `python train_space.py --dataset scenes --output-dir weights`."
    return (" The installed package ships no weights: the bundled demonstration model is the "
            "weights/ folder of the project's repository.")


def read_config(model_dir: Path) -> CaptionerConfig:
    """config.json -> CaptionerConfig, with errors that name the file and the problem."""
    path = model_dir / CONFIG_FILE
    if not path.is_file():
        raise WeightsError(f"{path}: file not found (a model folder needs {CONFIG_FILE} "
                           f"and {WEIGHTS_FILE})")
    try:
        raw = json.loads(path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise WeightsError(f"{path}: not valid JSON ({e})") from e
    if not isinstance(raw, dict) or not raw.get("vocab"):
        raise WeightsError(f"{path}: has no 'vocab' (the model's word list); "
                           "was it saved by captioner?")
    known = {f.name for f in fields(CaptionerConfig)}
    try:
        return CaptionerConfig(**{k: v for k, v in raw.items() if k in known})
    except (TypeError, ValueError) as e:
        raise WeightsError(f"{path}: invalid config ({e})") from e


DEVICE_CHOICES = "auto, cpu, cuda, cuda:N or mps"


def resolve_device(name: str | None = "auto") -> str:
    """`auto` (or None) -> CUDA when available, else MPS, else the CPU; an explicit device is
    checked, so asking for a GPU that is not there is a clear error, not a crash mid-run."""
    import torch

    name = (name or "auto").strip().lower()
    if name == "auto":
        if torch.cuda.is_available():
            return "cuda"
        mps = getattr(torch.backends, "mps", None)
        return "mps" if mps is not None and mps.is_available() else "cpu"
    if name == "cpu":
        return "cpu"
    match = re.fullmatch(r"cuda(?::(\d+))?", name)
    if match:
        if not torch.cuda.is_available():
            raise ValueError(f"device '{name}': CUDA is not available on this machine "
                             "(use --device cpu or auto)")
        index = int(match.group(1) or 0)
        if index >= torch.cuda.device_count():
            raise ValueError(f"device '{name}': only {torch.cuda.device_count()} CUDA "
                             "device(s) here")
        return name
    if name == "mps":
        mps = getattr(torch.backends, "mps", None)
        if mps is None or not mps.is_available():
            raise ValueError("device 'mps': Apple's Metal backend is not available here")
        return name
    raise ValueError(f"unknown device '{name}': use {DEVICE_CHOICES}")


QUANTIZE_CHOICES = ("int8",)


def quantize_decoder(model: Captioner) -> Captioner:
    """Dynamic int8 weights for the decoder's Linear and LSTMCell layers (CPU only; the
    encoder has neither, so it stays fp32). torch 2.14 deprecates this API in favour of
    torchao, which is not installed here: its warnings are silenced, not ignored."""
    import warnings

    import torch
    from torch import nn

    with warnings.catch_warnings():
        warnings.simplefilter("ignore", (DeprecationWarning, UserWarning))
        return torch.ao.quantization.quantize_dynamic(model, {nn.Linear, nn.LSTMCell},
                                                      dtype=torch.qint8)


def load_model(source: str | Path | None = None, device: str | None = "cpu",
               revision: str | None = None, quantize: str | None = None
               ) -> Captioner | Ensemble:
    """Load a trained captioner strictly from a folder or Hub repo id (default: bundled; Hub
    repos at `revision`), onto `device` (see `resolve_device`; "auto" picks a GPU if any);
    `quantize="int8"` makes the decoder int8 (CPU only; see benchmarks/quantization.py)."""
    if quantize not in (None, *QUANTIZE_CHOICES):
        raise ValueError(f"quantize must be one of {QUANTIZE_CHOICES} or None, got {quantize!r}")
    device = resolve_device(device)
    if quantize and device != "cpu":
        raise ValueError(f"int8 decoding runs on the CPU only, not on '{device}'")
    model_dir = resolve_model_dir(source, revision)
    config = read_config(model_dir)  # validated, unknown keys dropped: build from this one
    kind = Ensemble if config.members > 1 else Captioner  # one model, or several as one
    model = kind.from_pretrained(model_dir, map_location=device, config=config).to(device)
    return quantize_decoder(model) if quantize else model


def read_metrics(model_dir: Path) -> dict:
    """The metrics.json that training writes beside the weights ({} if absent)."""
    path = Path(model_dir) / "metrics.json"
    return json.loads(path.read_text()) if path.is_file() else {}


CAPTION_METRICS = [("bleu1", "BLEU-1", "bleu"), ("bleu2", "BLEU-2", "bleu"),
                   ("bleu3", "BLEU-3", "bleu"), ("bleu4", "BLEU-4", "bleu"),
                   ("meteor", "METEOR", "meteor"), ("rouge_l", "ROUGE-L", "rouge"),
                   ("cider", "CIDEr", "cider")]
# Fractions in metrics.json, shown as percentages so every column reads on one 0-100 scale.
FRACTION_METRICS = [("objects_correct", "all objects right"),
                    ("relations_correct", "relations right"),
                    ("relations_stated", "relation stated"),
                    ("pointing", "pointing ±1 cell"), ("pointing_chance", "chance ±1 cell"),
                    ("pointing_strict", "pointing in box"),
                    ("pointing_strict_chance", "chance in box"),
                    ("steering", "steering (greedy)"), ("steering_chance", "chance (steering)")]
BEAMS = ("beam1", "beam3")


def metrics_table(metrics: dict) -> str:
    """Markdown table of test metrics at each beam size, all on one 0-100 scale: caption
    metrics as pycocoevalcap x 100, exact content, pointing and steering as percentages."""
    names = [(k, label, 1) for k, label, _ in CAPTION_METRICS] + [
        (k, f"{label} (%)", 100) for k, label in FRACTION_METRICS]
    beams = [k for k in BEAMS if k in metrics]
    present = [n for n in names if any(metrics[b].get(n[0]) is not None for b in beams)]
    lines = ["| decoding | " + " | ".join(label for _, label, _ in present) + " |",
             "|---" * (len(present) + 1) + "|"]
    for beam in beams:
        cells = [(metrics[beam].get(k), scale) for k, _, scale in present]
        lines.append(f"| beam {beam[4:]} | " + " | ".join(
            "–" if v is None else f"{round(v * scale, 2):g}" for v, scale in cells) + " |")
    return "\n".join(lines)


def eval_results(metrics: dict, dataset: str, dataset_name: str) -> list:
    """The test metrics as huggingface_hub EvalResults, so the Hub shows them on the model."""
    from huggingface_hub import EvalResult

    results = []
    for beam in (b for b in BEAMS if b in metrics):
        named = [(k, label, kind) for k, label, kind in CAPTION_METRICS] + [
            (k, f"{label} (%)", "accuracy") for k, label in FRACTION_METRICS[:1]]
        for key, label, kind in named:
            value = metrics[beam].get(key)
            if value is not None:
                results.append(EvalResult(
                    task_type="image-to-text", task_name="Image captioning",
                    dataset_type=dataset, dataset_name=dataset_name, dataset_split="test",
                    metric_type=kind, metric_name=f"{label}, beam {beam[4:]}",
                    metric_value=round(value * (100 if kind == "accuracy" else 1), 2)))
    return results


CARD_TEMPLATE = """---
{{ card_data }}
---

# {{ title }}

A "Show, Attend and Tell" image captioner built with {{ project }}: a torchvision
**{{ encoder }}** turns the image into a {{ grid }}×{{ grid }} grid of features, gated
{{ attention }} attention picks where to look for each word, and an LSTM writes the caption.
Every word comes with its attention map.{{ attention_note }}

## Training data

{{ data_description }}

## Test metrics

Decoded without teacher forcing on the **test split** ({{ images }} images). One scale
throughout: caption metrics are pycocoevalcap's scores × 100 (CIDEr can exceed 100; tokenised
with captioner's tokeniser){{ percent_note }}.{{ skipped }}

{{ table }}

Selected epoch: {{ selected_epoch }} (best validation score).{{ pointing_note }}

![training curve](training_curve.png)

![attention for every word of a test image](attention_example.png)

## How it was trained

{% if trained_in %}{{ trained_in }}

{% endif %}```bash
{{ command }}
```

<details><summary>Full training configuration</summary>

```json
{{ config }}
```
</details>

## Use

```bash
python -m captioner caption {{ example }} --weights {{ weights_ref }} --attention-grid grid.png
```

```python
from captioner import load_model, load_image, caption_images
model = load_model("{{ weights_ref }}")
caption = caption_images(model, [load_image("{{ example }}")], beam_size=3)[0]
print(caption.text, caption.attention.shape)  # (words, grid, grid)
```

## Intended use and limits

{{ limits }}
"""

SCENES_DESCRIPTION = (
    "**Procedurally generated scenes** (`captioner.scenes`): 1–3 shapes (circle, square, "
    "triangle) in several colours and two sizes on plain, muted backgrounds whose tone "
    "varies from scene to scene, each image with 5 templated captions that include spatial "
    "relations. It is *not* a photo dataset.")
SCENES_V2_DESCRIPTION = (
    "**Procedurally generated scenes, world scenes-v2** (`captioner.scenes.v2`, see "
    "docs/worlds.md): 1–5 shapes of 6 kinds in 8 colours and 3 sizes on gradient, noise or "
    "striped backgrounds, identical objects counted (\"two small red circles\"), distractors "
    "that share attributes, partial occlusion, and four colour–shape pairs held out of "
    "training for a compositional test. It is *not* a photo dataset.")
SCENES_LIMITS = (
    "A demonstration model: it describes generated scenes of simple shapes and nothing else. "
    "On real photos its captions are meaningless. Use it to see how attention moves from object "
    "to object, and to check the training and evaluation pipeline end to end.")
PHOTO_LIMITS = (
    "Trained on a few thousand Flickr photos of people and animals; it writes short, generic "
    "English captions and inherits the biases of its data. Not for accessibility-critical or "
    "safety-critical use without human review.")
LEARNED_ALONE = "(no box supervision; attention learned from captions only)"
POINTING_GAME = (
    f"**Pointing game** {LEARNED_ALONE}: for each "
    "object a caption names, at its colour word and at its shape word, is the peak of the "
    "attention map inside the object's box widened by one grid cell (*±1 cell*), or inside "
    "the box itself (*in box*)? *Chance* is the hit rate of a uniformly random peak for the "
    "same boxes.")
STEERING = (
    "**Steering**: at the colour word of a named object, attention is forced onto another "
    "object's box; how often the model then says that object's colour (chance: 1 / number of "
    "colours).")
STEERING_FOLLOWED = " The words follow where the model looks, not only co-occur with it."
# Runs with captioner.grounding's losses were *taught* what the two games measure.
TAUGHT_POINTING = ("(attention *taught* to look at each named object's box, `--ground-attention`"
                   ": this measures how well that carries over to unseen scenes, not whether it "
                   "emerged from captions alone)")
TAUGHT_STEERING = (" Colour words were trained to follow forced attention (`--steer-words`), so "
                   "this, too, measures how well the teaching carries over to unseen scenes.")
TAUGHT_CELLS = (" Each object's cells were trained to name its size, colour and shape when read "
                "alone (`--cell-words`), which also moves colour words towards a forced look.")
POINTING_DESIGN = (
    "What made attention point: a ResNet18 cut after stage 2 (local receptive fields, one cell "
    "per 8 pixels), coordinate channels on the feature grid, the attended context fed to the "
    "word classifier, attention maps drawn at the true cell centres, objects at least two "
    "cells wide, and a cosine learning-rate decay.")


HARD_ATTENTION = (
    "\n\n**Hard attention** (Xu et al. 2015, section 4.1): in training, each word reads *one* "
    "grid cell drawn from its attention map, and the map learns by REINFORCE (reward: the "
    "caption's log-likelihood, minus a moving-average baseline b <- 0.9 b + 0.1 reward), with "
    "an entropy bonus of 0.002; half of the batches read the soft expectation instead "
    "(semi-sampling, p = 0.5), the settings of the authors' code. At test time this model "
    "reads the {readout} (`hard_readout` in config.json).")


WORD_QUERY = (
    "\n\n**Word query**: the attention is asked from the LSTM state *and* the word just said "
    "(`word_query` in config.json), so after \"a small\" the model can look for a small "
    "object; the paper asks from the state alone, which has not read that word yet.")

LOCATION_QUERY = (
    "\n\n**Location query**: the attention is also asked where the last word looked "
    "(`location_query` in config.json, a small convolution of that map as in Chorowski et al. "
    "2015), so the shape word after \"red\" can stay on the red object the colour word found.")

EARLY_FEATURES = (
    "\n\n**Early features**: each grid cell also carries the encoder's stage-1 features "
    "(`early_features` in config.json), which see a smaller patch than the last stage's and so "
    "keep a neighbouring object's shape out of the cell.")

SELF_CRITICAL = (
    "\n\n**Self-critical training** (Rennie et al. 2017): besides the teacher-forced loss, the "
    "model drew {samples} captions per image and was rewarded for what they got right about "
    "the scene (the share of objects said right, plus 1 when all were and identical ones were "
    "counted, minus 0.5 for a false relation), each against the mean reward of the others "
    "(`--self-critical {weight:g}`, captioner/self_critical.py).")


def pointing_note(metrics: dict, cfg: dict | None = None) -> str:
    """The pointing game's definition when it was measured (and steering's, when that was);
    the design that made attention point only when this run's attention beat chance at every
    beam size. A run trained with grounding or steering (`cfg`) says that it was taught."""
    measured = [metrics[b] for b in BEAMS if metrics.get(b, {}).get("pointing") is not None]
    if not measured:
        return ""
    pointed = all(m["pointing"] > m["pointing_chance"] for m in measured)
    steering = [metrics[b] for b in BEAMS if metrics.get(b, {}).get("steering") is not None]
    followed = steering and all(m["steering"] > m["steering_chance"] for m in steering)
    cfg = cfg or {}
    game = POINTING_GAME.replace(LEARNED_ALONE, TAUGHT_POINTING) \
        if cfg.get("ground_attention") else POINTING_GAME
    taught = (TAUGHT_STEERING if cfg.get("steer_words") else "") + \
        (TAUGHT_CELLS if cfg.get("cell_words") else "")
    return ("\n\n" + game
            + ("\n\n" + STEERING + (STEERING_FOLLOWED if followed else "") + taught
               if steering else "")
            + ("\n\n" + POINTING_DESIGN if pointed else ""))


def readout_text(cfg: dict) -> str:
    readout = cfg.get("hard_readout", "expectation")
    return ("expectation (the attention-weighted mean, as soft attention does)"
            if readout == "expectation" else "single most attended cell (argmax)")


def training_time(history: list[dict], hardware: str) -> str:
    """"Trained for 12 epochs in 1 h 32 min on 2 CPU cores": the epochs' own times from the
    log (a resumed run's epochs each counted once), validation included."""
    seconds = sum(row.get("seconds", 0) for row in history)
    hours, minutes = divmod(round(seconds / 60), 60)
    took = f"{hours} h {minutes} min" if hours else f"{minutes} min"
    return (f"Trained for {len(history)} epoch{'s' * (len(history) != 1)} in {took} on "
            f"{hardware} (each epoch's time, with its validation, from `log.jsonl`).")


def write_model_card(out: Path, *, cfg: dict, metrics: dict, command: str,
                     weights_ref: str | None = None, project_url: str | None = None,
                     trained_in: str = "") -> Path:
    """README.md for the model folder, written with huggingface_hub's ModelCard API, with the
    dataset and the test metrics in its metadata. `weights_ref` is how users should name the
    model (default: Hub repo or output folder); `project_url` links the code (never guessed);
    `trained_in` says how long it took on what (`training_time`)."""
    from huggingface_hub import ModelCard, ModelCardData

    from captioner.scenes import is_world

    scenes = is_world(cfg["dataset"])
    description = (SCENES_V2_DESCRIPTION if cfg["dataset"] == "scenes-v2"
                   else SCENES_DESCRIPTION)
    hub_dataset = not scenes and not Path(cfg["dataset"]).exists()
    title = (f"captioner: {cfg['encoder']} + attention LSTM on "
             f"{'generated scenes' if scenes else cfg['dataset']}")
    data = ModelCardData(
        library_name="captioner", license="mit", pipeline_tag="image-to-text",
        tags=["image-captioning", "show-attend-and-tell", "attention", "pytorch"],
        datasets=[cfg["dataset"]] if hub_dataset else None, model_name=title,
        eval_results=eval_results(
            metrics, cfg["dataset"] if hub_dataset or scenes else "local",
            "generated scenes (captioner.scenes)" if scenes else cfg["dataset"]))
    skipped = sorted({s for b in BEAMS for s in metrics.get(b, {}).get("skipped", [])})
    fractions = any(metrics[b].get(k) is not None for b in BEAMS if b in metrics
                    for k, _ in FRACTION_METRICS)
    card = ModelCard.from_template(
        data, template_str=CARD_TEMPLATE, title=title,
        project=f"[captioner]({project_url})" if project_url else "captioner",
        encoder=cfg["encoder"] + (f" (stages 1–{cfg['encoder_stage']})"
                                  if cfg["encoder_stage"] < 4 else ""),
        grid=cfg["grid"], images=metrics["images"], table=metrics_table(metrics),
        attention="hard" if cfg.get("attention") == "hard" else "soft",
        attention_note=(HARD_ATTENTION.format(readout=readout_text(cfg))
                        if cfg.get("attention") == "hard" else "")
        + (WORD_QUERY if cfg.get("word_query") else "")
        + (LOCATION_QUERY if cfg.get("location_query") else "")
        + (EARLY_FEATURES if cfg.get("early_features") else "")
        + (SELF_CRITICAL.format(samples=cfg.get("self_critical_samples", 4),
                                weight=cfg["self_critical"])
           if cfg.get("self_critical") else ""),
        percent_note="; exact content and pointing are percentages (%)" if fractions else "",
        skipped=(" Skipped: " + "; ".join(skipped) + ".") if skipped else "",
        selected_epoch=metrics.get("selected_epoch"), pointing_note=pointing_note(metrics, cfg),
        data_description=description if scenes else
        f"`{cfg['dataset']}` loaded with 🤗 datasets; train/validation/test splits as provided "
        "(or carved deterministically from train).",
        command=command, config=json.dumps(cfg, indent=2), trained_in=trained_in,
        example="scene.png" if scenes else "photo.jpg",
        weights_ref=weights_ref or cfg.get("push_to_hub") or cfg["output_dir"],
        limits=SCENES_LIMITS if scenes else PHOTO_LIMITS)
    card.save(out / "README.md")
    return out / "README.md"


def hub_client(purpose: str):
    """An HfApi holding the user's token (HF_TOKEN or `hf auth login`), which is read here and
    handed to the client, never printed or saved."""
    from huggingface_hub import HfApi, get_token

    token = get_token()
    if not token:
        raise SystemExit(f"{purpose} needs a Hugging Face token: set HF_TOKEN or run "
                         "`hf auth login` (the token is read, never printed or saved).")
    return HfApi(token=token)


def unreachable(error: Exception) -> bool:
    """A network failure (offline mode, no route, DNS, timeout), not an answer from the Hub."""
    import httpx2

    return isinstance(error, ConnectionError | TimeoutError | httpx2.TransportError)


@contextlib.contextmanager
def hub_calls():
    """Network failures while talking to the Hub become one line, not an HTTP traceback."""
    try:
        yield
    except Exception as e:
        if not unreachable(e):
            raise
        reason = str(e).split(". ")[0] or type(e).__name__
        raise SystemExit(f"cannot reach the Hugging Face Hub: {reason}. Check the network "
                         "(and the HF_HUB_OFFLINE and HF_ENDPOINT variables).") from None


def repo_id_problem(repo_id: str, purpose: str) -> str | None:
    """Why `repo_id` cannot name a Hub repo (None when it can)."""
    from huggingface_hub.utils import HFValidationError, validate_repo_id

    try:
        validate_repo_id(repo_id)
    except HFValidationError:
        return (f"{purpose}: {repo_id!r} is not a Hub repo id; give OWNER/NAME (letters, "
                "digits, '-', '_', '.')")
    return None


def check_push_target(repo_id: str, purpose: str = "--push-to-hub"):
    """Before any long work: the repo id is well formed, a token is there, the Hub is
    reachable and accepts it. Returns the authenticated client."""
    from huggingface_hub.errors import HfHubHTTPError

    problem = repo_id_problem(repo_id, purpose)
    if problem:
        raise SystemExit(problem)
    api = hub_client(purpose)
    with hub_calls():
        try:
            api.whoami()
        except HfHubHTTPError as e:
            status = getattr(e.response, "status_code", None)
            if status not in (401, 403):
                raise
            raise SystemExit(f"{purpose}: the Hugging Face Hub refused the token ({status}); "
                             "set a valid HF_TOKEN or run `hf auth login` again.") from None
    return api


def push_folder(out: Path, repo_id: str) -> str:
    """Upload a model folder (weights, config, card, figures; no checkpoint) to the Hub."""
    api = hub_client("--push-to-hub")
    with hub_calls():
        api.create_repo(repo_id, exist_ok=True)
        info = api.upload_folder(folder_path=str(out), repo_id=repo_id,
                                 allow_patterns=MODEL_FILES,
                                 commit_message="Upload captioner model")
    return str(getattr(info, "repo_url", None) or f"https://huggingface.co/{repo_id}")
