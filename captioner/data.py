"""Load image-caption datasets from the Hub or local folders into one normalised form.

Whatever the source, :func:`load_caption_dataset` returns a ``DatasetDict`` with the splits
``train``, ``validation`` and ``test``, and in each the columns:

- ``image``: a ``datasets.Image(mode="RGB")`` feature (decodes to an RGB ``PIL.Image``);
- ``captions``: a list of non-empty, stripped strings (at least one per image);
- ``objects`` (only when the source has it, e.g. the procedural scenes dataset): the scene's
  objects as-is, a list of ``{"shape", "color", "size", "box"}`` dicts.
"""

from __future__ import annotations

import csv
import hashlib
import json
import logging
import os
import re
from collections.abc import Sequence
from pathlib import Path

import numpy as np
from datasets import Dataset, DatasetDict, Features, Image, LargeList, List, Value

logger = logging.getLogger(__name__)

DEFAULT_HUB_DATASET = "jxie/flickr8k"
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
ACCEPTED_LAYOUTS = """Accepted dataset sources:
  1. a Hugging Face Hub dataset id, e.g. 'jxie/flickr8k' (an image column and captions as
     caption_0..caption_N columns, a 'captions' list column or one 'caption' per row);
  2. an imagefolder: train/, validation/ and test/ subfolders (or one folder without split
     subfolders) holding the images and a metadata.csv or metadata.jsonl with a 'file_name'
     column and captions as caption_0..caption_N columns, a 'captions' list column, or one
     'caption' per row (several rows per image);
  3. the Kaggle Flickr8k layout: captions.txt (CSV with header 'image,caption') next to an
     Images/ folder."""
_NUMBERED_CAPTION = re.compile(r"captions?_(\d+)")
_LIST_FEATURES = (List, LargeList)  # datasets.Sequence(...) builds a List


class DatasetFormatError(ValueError):
    """The source exists but is not in a layout this loader understands."""


class DatasetLoadError(RuntimeError):
    """A Hub dataset could not be loaded (offline, unknown id, unsupported script, ...)."""


def load_caption_dataset(
    source: str | Path = DEFAULT_HUB_DATASET,
    *,
    seed: int = 0,
    validation_fraction: float = 0.05,
    test_fraction: float = 0.1,
    max_images: int | None = None,
) -> DatasetDict:
    """Load ``source`` (Hub id or local folder) as train/validation/test image-caption splits.

    Missing validation/test splits are carved out of train (a ``seed``-ed random selection of
    ``validation_fraction``/``test_fraction`` of its images). ``max_images`` keeps the first N
    images of each split, for quick runs.
    """
    if max_images is not None and max_images < 1:
        raise ValueError(f"max_images must be at least 1, got {max_images}")
    if not (0 < validation_fraction < 1 and 0 < test_fraction < 1):
        raise ValueError("validation_fraction and test_fraction must be between 0 and 1")
    if isinstance(source, Path) or _looks_local(source):
        path = Path(source).expanduser()
        if not path.exists():
            raise FileNotFoundError(f"dataset folder {str(path)!r} does not exist")
        raw, origin = _load_local(path), str(path)
    else:
        raw, origin = _load_hub(source), source
    splits = _canonical_splits(raw, origin)
    splits = {name: _normalise(ds, f"{origin} [{name}]") for name, ds in splits.items()}
    splits = _complete_splits(splits, seed, validation_fraction, test_fraction, origin)
    if max_images is not None:
        splits = {n: ds.select(range(min(len(ds), max_images))) for n, ds in splits.items()}
    return DatasetDict({name: splits[name] for name in SPLITS})


# --------------------------------------------------------------------------------------------
# Sources


def _looks_local(source: str) -> bool:
    """Hub ids are 'name' or 'owner/name'; anything path-like is treated as a local path."""
    source = str(source)
    return (
        os.path.exists(source)
        or source.startswith((".", "/", "~"))
        or "\\" in source
        or source.count("/") > 1
        or bool(re.match(r"^[A-Za-z]:", source))
        or source.lower().endswith((".txt", ".csv", ".jsonl", ".json", ".parquet"))
    )


def _load_hub(source: str) -> DatasetDict:
    """``datasets.load_dataset(source)``, with a clear message when that fails."""
    import datasets

    try:
        loaded = datasets.load_dataset(source)
    except Exception as e:
        raise DatasetLoadError(
            f"could not load dataset {source!r} from the Hugging Face Hub: "
            f"{type(e).__name__}: {e}; (no local folder {source!r} exists either); "
            f"pass a local folder instead (or generate the offline "
            f"scenes dataset with captioner.scenes.generate_scenes).\n{ACCEPTED_LAYOUTS}"
        ) from e
    if isinstance(loaded, Dataset):
        loaded = DatasetDict({"train": loaded})
    return loaded


def _describe_folder(path: Path, limit: int = 12) -> str:
    entries = sorted(p.name + ("/" if p.is_dir() else "") for p in path.iterdir())
    if not entries:
        return "nothing (empty folder)"
    more = f", ... ({len(entries)} entries)" if len(entries) > limit else ""
    return ", ".join(entries[:limit]) + more


def _load_local(path: Path) -> DatasetDict:
    """Detect the local layout (Kaggle captions.txt, or imagefolder) and load it."""
    if path.is_file():
        if path.name == "captions.txt" or re.fullmatch(r"metadata\.(csv|jsonl)", path.name):
            path = path.parent
        else:
            raise DatasetFormatError(
                f"{str(path)!r} is a file; expected a dataset folder.\n{ACCEPTED_LAYOUTS}"
            )
    if (path / "captions.txt").is_file():
        return DatasetDict({"train": _load_kaggle(path)})
    if not any(_has_metadata(d) for d in [path, *path.iterdir()] if d.is_dir()):
        raise DatasetFormatError(
            f"no captions found in {str(path)!r}: it has no captions.txt and no "
            f"metadata.csv/metadata.jsonl (here or in split subfolders). It contains: "
            f"{_describe_folder(path)}.\n{ACCEPTED_LAYOUTS}"
        )
    import datasets

    try:
        loaded = datasets.load_dataset("imagefolder", **_imagefolder_files(path))
    except Exception as e:
        raise DatasetFormatError(
            f"could not read {str(path)!r} as an imagefolder: {type(e).__name__}: {e}. "
            f"It contains: {_describe_folder(path)}.\n{ACCEPTED_LAYOUTS}"
        ) from e
    # imagefolder keeps metadata rows whose image file is missing (decoding fails later): drop.
    return DatasetDict({name: _drop_missing_files(ds, name) for name, ds in loaded.items()})


def _has_metadata(folder: Path) -> bool:
    return any((folder / name).is_file() for name in ("metadata.csv", "metadata.jsonl"))


def _imagefolder_files(path: Path) -> dict:
    """``load_dataset`` arguments: explicit per-split patterns for plain layouts (about 6x
    faster than letting ``data_dir`` try its ~50 split-name patterns on every file), else
    ``data_dir`` and datasets' own split inference."""
    split_dirs = [d for d in sorted(path.iterdir()) if d.is_dir() and _has_metadata(d)]
    names = [SPLIT_ALIASES.get(d.name.lower()) for d in split_dirs]
    if not any(ch in str(path) for ch in "*?[]"):
        if not split_dirs and _has_metadata(path):
            return {"data_files": {"train": str(path / "**")}}
        plain = "train" in names and None not in names and len(set(names)) == len(names)
        if plain and not _has_metadata(path):
            return {"data_files": {n: str(d / "**") for n, d in zip(names, split_dirs)}}
    return {"data_dir": str(path)}


def _drop_missing_files(ds: Dataset, split: str) -> Dataset:
    image_column = next((c for c, f in ds.features.items() if isinstance(f, Image)), None)
    if image_column is None:
        return ds
    refs = ds.cast_column(image_column, Image(decode=False))[image_column]
    keep = [i for i, r in enumerate(refs) if r["bytes"] is not None or os.path.isfile(r["path"])]
    if len(keep) < len(ds):
        logger.warning(
            "%s: %d metadata rows name image files that do not exist; dropped",
            split, len(ds) - len(keep),
        )
        ds = ds.select(keep)
    return ds


def _load_kaggle(path: Path) -> Dataset:
    """Kaggle Flickr8k: captions.txt (``image,caption`` CSV, one row per caption) + Images/."""
    images_dir = next((path / n for n in ("Images", "images") if (path / n).is_dir()), None)
    if images_dir is None:
        raise DatasetFormatError(
            f"{str(path)!r} has captions.txt but no Images/ folder next to it. It contains: "
            f"{_describe_folder(path)}.\n{ACCEPTED_LAYOUTS}"
        )
    with open(path / "captions.txt", newline="", encoding="utf-8") as f:
        reader = csv.DictReader(f)
        fields = [(c or "").strip().lower() for c in reader.fieldnames or []]
        if "image" not in fields or "caption" not in fields:
            raise DatasetFormatError(
                f"{str(path / 'captions.txt')!r} has columns {reader.fieldnames}; expected a "
                f"CSV header 'image,caption'.\n{ACCEPTED_LAYOUTS}"
            )
        reader.fieldnames = fields
        groups: dict[str, list[str]] = {}
        for row in reader:
            name = (row.get("image") or "").strip()
            if name:
                groups.setdefault(name, []).append(row.get("caption") or "")
    missing = [n for n in groups if not (images_dir / n).is_file()]
    if missing:
        logger.warning(
            "%s: %d images named in captions.txt are missing (e.g. %s); dropped",
            path, len(missing), missing[0],
        )
    names = [n for n in groups if (images_dir / n).is_file()]
    return Dataset.from_dict(
        {"image": [str(images_dir / n) for n in names], "captions": [groups[n] for n in names]},
        features=Features({"image": Image(), "captions": List(Value("string"))}),
    )


# --------------------------------------------------------------------------------------------
# Normalisation


def _canonical_splits(raw: DatasetDict, origin: str) -> dict[str, Dataset]:
    """Rename val/valid/dev to validation (etc.); a single odd-named split counts as train."""
    splits: dict[str, Dataset] = {}
    for name, ds in raw.items():
        canonical = SPLIT_ALIASES.get(name.lower())
        if canonical is None and len(raw) == 1:
            canonical = "train"
        if canonical is None:
            logger.warning("%s: ignoring split %r (not train/validation/test)", origin, name)
        elif canonical in splits:
            raise DatasetFormatError(f"{origin}: more than one split maps to {canonical!r}")
        else:
            splits[canonical] = ds
    if "train" not in splits:
        raise DatasetFormatError(
            f"{origin}: no train split among {list(raw)}.\n{ACCEPTED_LAYOUTS}"
        )
    return splits


def _clean(captions: Sequence | None) -> list[str]:
    return [str(c).strip() for c in captions or [] if c is not None and str(c).strip()]


def _as_json_list(value: object) -> list | None:
    if isinstance(value, str) and value.lstrip().startswith("["):
        try:
            parsed = json.loads(value)
        except ValueError:
            return None
        return parsed if isinstance(parsed, list) else None
    return None


def _image_keys(ds: Dataset, image_column: str) -> list[str]:
    """One key per row identifying its image (file path, else a hash of the bytes)."""
    refs = ds.cast_column(image_column, Image(decode=False))[image_column]
    return [r["path"] or hashlib.sha1(r["bytes"]).hexdigest() for r in refs]


def _normalise(ds: Dataset, where: str) -> Dataset:
    """Columns → ``image``, ``captions`` (+ ``objects``); images without captions dropped."""
    columns = list(ds.features)
    images = [c for c, f in ds.features.items() if isinstance(f, Image)]
    image_column = "image" if "image" in images else (images[0] if len(images) == 1 else None)
    if image_column is None:
        raise DatasetFormatError(
            f"{where}: no image column (need one 'image' column of type Image); "
            f"found columns {columns}.\n{ACCEPTED_LAYOUTS}"
        )
    numbered = sorted(
        (c for c in columns if _NUMBERED_CAPTION.fullmatch(c)),
        key=lambda c: int(_NUMBERED_CAPTION.fullmatch(c).group(1)),
    )
    per_row: list[str] | None = None  # one caption per row: group rows by image
    if "captions" in columns and isinstance(ds.features["captions"], _LIST_FEATURES):
        captions = [_clean(c) for c in ds["captions"]]
    elif numbered:
        table = ds.select_columns(numbered).to_dict()
        captions = [_clean(row) for row in zip(*(table[c] for c in numbered))]
    elif "captions" in columns or "caption" in columns:
        values = list(ds["captions" if "captions" in columns else "caption"])
        as_lists = [_as_json_list(v) for v in values]
        if values and all(v is not None for v in as_lists):  # JSON-encoded lists in a CSV
            captions = [_clean(v) for v in as_lists]
        else:
            per_row = values
    else:
        raise DatasetFormatError(
            f"{where}: no caption column; found columns {columns}. Expected caption_0.."
            f"caption_N, a 'captions' list or one 'caption' per row.\n{ACCEPTED_LAYOUTS}"
        )

    extras = ["objects"] if "objects" in columns else []
    base = ds.select_columns([image_column, *extras])
    if per_row is not None:
        groups: dict[str, list[int]] = {}
        for i, key in enumerate(_image_keys(ds, image_column)):
            groups.setdefault(key, []).append(i)
        base = base.select([rows[0] for rows in groups.values()])
        captions = [_clean([per_row[i] for i in rows]) for rows in groups.values()]
    base = base.add_column("captions", captions, feature=List(Value("string")))
    keep = [i for i, c in enumerate(captions) if c]
    if len(keep) < len(captions):
        logger.warning("%s: dropped %d images without captions", where, len(captions) - len(keep))
        base = base.select(keep)
    if image_column != "image":
        base = base.rename_column(image_column, "image")
    base = base.cast_column("image", Image(mode="RGB"))
    return base.select_columns(["image", "captions", *extras])


def _complete_splits(
    splits: dict[str, Dataset],
    seed: int,
    validation_fraction: float,
    test_fraction: float,
    origin: str,
) -> dict[str, Dataset]:
    """Carve missing validation/test splits out of train, deterministically from ``seed``."""
    wanted = {"test": test_fraction, "validation": validation_fraction}
    missing = [name for name in wanted if name not in splits]
    if not missing:
        return splits
    train = splits["train"]
    n = len(train)
    counts = {name: max(1, int(round(n * wanted[name]))) for name in missing}
    if n - sum(counts.values()) < 1:
        raise DatasetFormatError(
            f"{origin}: only {n} captioned images in train, too few to also make "
            f"{' and '.join(missing)} splits"
        )
    order = np.random.default_rng(seed).permutation(n)
    start = 0
    taken: list[int] = []
    for name in missing:
        chosen = order[start : start + counts[name]]
        splits[name] = train.select(sorted(int(i) for i in chosen))
        taken.extend(int(i) for i in chosen)
        start += counts[name]
    splits["train"] = train.select(sorted(set(range(n)) - set(taken)))
    return splits


__all__ = [
    "ACCEPTED_LAYOUTS",
    "DEFAULT_HUB_DATASET",
    "DatasetFormatError",
    "DatasetLoadError",
    "load_caption_dataset",
]
