"""Names shared by the dataset modules: errors, split names and the help text on layouts."""

from __future__ import annotations

from pathlib import Path

SPLITS = ("train", "validation", "test")
SPLIT_ALIASES = {
    "train": "train",
    "training": "train",
    "validation": "validation",
    "valid": "validation",
    "val": "validation",
    "dev": "validation",
    "test": "test",
    "testing": "test",
}
# Values of a split column (Karpathy's Flickr30k/COCO splits): `restval` (COCO's 30k validation
# images not in Karpathy's val/test) is trained on, as Karpathy and most papers since do.
SPLIT_COLUMN_VALUES = {**SPLIT_ALIASES, "restval": "train"}
ACCEPTED_LAYOUTS = """Accepted dataset sources:
  1. a Hugging Face Hub dataset id, e.g. 'jxie/flickr8k' (online, or offline once 🤗 datasets
     has cached it);
  2. a local copy of a Hub dataset repo: parquet, arrow, csv or jsonl data files whose names
     say the split (data/train-00000-of-00001.parquet, ...) or a README.md with `configs:`;
  3. a folder written by Dataset(Dict).save_to_disk, or one parquet/csv/jsonl/arrow file;
  4. an imagefolder: train/, validation/ and test/ subfolders (or one folder without split
     subfolders) holding the images and a metadata.csv or metadata.jsonl with a 'file_name'
     column;
  5. the Kaggle Flickr8k layout: captions.txt (CSV with header 'image,caption') next to an
     Images/ folder.
Captions may be caption_0..caption_N columns, a list column ('captions', 'caption',
'sentences') or one 'caption' per row; other names: --caption-column (a column or a pattern
such as 'caption_*'), --image-column, --split-column (a column of train/val/test values)."""


class DatasetFormatError(ValueError):
    """The source exists but is not in a layout this loader understands."""


class DatasetLoadError(RuntimeError):
    """A Hub dataset could not be loaded (offline and not cached, unknown id, script, ...)."""


def describe_folder(path: Path, limit: int = 12) -> str:
    """A short listing for error messages: what the folder holds instead of what we wanted."""
    entries = sorted(p.name + ("/" if p.is_dir() else "") for p in path.iterdir())
    if not entries:
        return "nothing (empty folder)"
    more = f", ... ({len(entries)} entries)" if len(entries) > limit else ""
    return ", ".join(entries[:limit]) + more
