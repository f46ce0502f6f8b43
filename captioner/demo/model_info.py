"""What the app's model panel says: where the weights came from, what they were trained on and
how well they did, read from the files saved beside the weights (never a server path)."""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path

from captioner.hub import BUNDLED_WEIGHTS, read_metrics
from captioner.model import Captioner


def _card_sections(readme: str) -> dict[str, str]:
    """'## Heading' -> text of a model card (front matter removed); '#' -> the title."""
    text = re.sub(r"\A---\n.*?\n---\n", "", readme, flags=re.S)
    sections: dict[str, str] = {}
    title = re.search(r"^# (.+)$", text, flags=re.M)
    if title:
        sections["#"] = title.group(1).strip()
    for match in re.finditer(r"^## (.+?)\n(.*?)(?=^## |\Z)", text, flags=re.M | re.S):
        sections[match.group(1).strip().lower()] = match.group(2).strip()
    return sections


def _first_paragraph(text: str) -> str:
    return text.strip().split("\n\n")[0].replace("\n", " ").strip()


METRIC_NAMES = [("bleu4", "BLEU-4"), ("meteor", "METEOR"), ("rouge_l", "ROUGE-L"),
                ("cider", "CIDEr"), ("objects_correct", "all objects right"),
                ("relations_correct", "relations right"), ("pointing", "pointing accuracy"),
                ("pointing_chance", "pointing by chance")]
FRACTIONS = {"objects_correct", "relations_correct", "pointing", "pointing_chance"}


def metrics_markdown(metrics: dict, beams: list[str]) -> str:
    """A narrow table (one row per metric, one column per beam size) for the model panel."""
    header = "| metric | " + " | ".join("greedy" if b == "beam1" else f"beam {b[4:]}"
                                         for b in beams) + " |"
    lines = [header, "|---" * (len(beams) + 1) + "|"]
    for key, label in METRIC_NAMES:
        values = [metrics[b].get(key) for b in beams]
        if all(v is None for v in values):
            continue
        cells = ["–" if v is None else f"{v:.1%}" if key in FRACTIONS else f"{v:.1f}"
                 for v in values]
        lines.append(f"| {label} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


@dataclass
class ModelInfo:
    """What the model panel says: where the weights came from and how well they do."""

    source: str  # what the user asked for (folder or Hub id)
    model_dir: Path  # where the files are: read here, never shown
    architecture: str
    dataset: str | None = None
    metrics: dict = field(default_factory=dict)
    card: dict[str, str] = field(default_factory=dict)

    @classmethod
    def read(cls, source: str, model_dir: Path, model: Captioner) -> ModelInfo:
        cfg = model.config
        stage = f" (stages 1–{cfg.encoder_stage})" if cfg.encoder_stage < 4 else ""
        architecture = (f"{cfg.encoder}{stage} encoder → {cfg.grid_size}×{cfg.grid_size} "
                        f"attention grid → LSTM decoder ({cfg.hidden_dim} units); "
                        f"{len(model.vocab)}-word vocabulary; images resized to "
                        f"{cfg.image_size}×{cfg.image_size}")
        if cfg.members > 1:
            architecture = (f"an ensemble of {cfg.members} models that decode together "
                            f"(mean word probabilities and attention maps), each: {architecture}")
        try:
            metrics = read_metrics(model_dir)
        except (OSError, ValueError):
            metrics = {}
        readme = Path(model_dir) / "README.md"
        try:
            card = _card_sections(readme.read_text(encoding="utf-8")) if readme.is_file() else {}
        except (OSError, UnicodeDecodeError):
            card = {}
        dataset = metrics.get("dataset") if isinstance(metrics, dict) else None
        return cls(source, Path(model_dir), architecture, dataset,
                   metrics if isinstance(metrics, dict) else {}, card)

    @property
    def trained_on(self) -> str:
        if "training data" in self.card:
            return _first_paragraph(self.card["training data"])
        if self.dataset == "scenes":
            return ("procedurally generated scenes of coloured shapes (`captioner.scenes`), "
                    "not photos")
        if self.dataset:
            return f"`{self.dataset}`"
        return "unknown (no metrics.json or model card beside the weights)"

    @property
    def weights_label(self) -> str:
        """Where the weights came from, in words a visitor may see: "bundled weights", a Hub
        repo id with its revision, or a local folder's name — never a path on the server."""
        if Path(self.model_dir).resolve() == BUNDLED_WEIGHTS.resolve():
            return "bundled weights (`weights/` in the app's repository)"
        if Path(self.source).expanduser().is_dir():
            return f"local folder `{Path(self.source).resolve().name}`"
        revision = Path(self.model_dir).name  # a Hub snapshot folder is named by its commit
        return f"Hugging Face Hub `{self.source}`" + (
            f" at revision `{revision[:12]}`" if re.fullmatch(r"[0-9a-f]{40}", revision) else "")

    def markdown(self) -> str:
        lines = []
        if self.card.get("#"):
            lines.append(f"### {self.card['#']}")
        lines += [f"**Weights:** {self.weights_label}", "", f"**Model:** {self.architecture}",
                  "",
                  f"**Trained on:** {self.trained_on}", ""]
        beams = [k for k in ("beam1", "beam3") if isinstance(self.metrics.get(k), dict)]
        if beams:
            images = self.metrics.get("images")
            epoch = self.metrics.get("selected_epoch")
            lines.append(f"**Test metrics** ({self.metrics.get('split', 'test')} split"
                         + (f", {images} images" if images else "")
                         + (f", epoch {epoch}" if epoch else "")
                         + "; caption metrics on the 0–100 scale):")
            lines += ["", metrics_markdown(self.metrics, beams), ""]
            b = self.metrics[beams[-1]]
            if b.get("pointing") is not None:
                chance = b.get("pointing_chance")
                lines.append(f"**Pointing accuracy** (does the attention peak land on the object "
                             f"a word names?): {b['pointing']:.0%}"
                             + (f" vs {chance:.0%} by chance" if chance is not None else "")
                             + ".")
                lines.append("")
        else:
            lines += ["**Test metrics:** none found (no metrics.json beside the weights).", ""]
        if self.card.get("intended use and limits"):
            lines.append(f"**Limits:** {_first_paragraph(self.card['intended use and limits'])}")
        return "\n".join(lines).strip() + "\n"


