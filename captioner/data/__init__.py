"""Load image-caption datasets, in whatever form people hold them, into one normalised form.

Whatever the source (see ``ACCEPTED_LAYOUTS``; reading each form is ``sources``' job),
:func:`load_caption_dataset` returns a ``DatasetDict`` with the splits ``train``,
``validation`` and ``test``, and in each the columns:

- ``image``: a ``datasets.Image(mode="RGB")`` feature (decodes to an RGB ``PIL.Image``);
- ``captions``: a list of non-empty, stripped strings (at least one per image);
- ``objects`` (only when the source has it, e.g. the procedural scenes dataset): the scene's
  objects as-is, a list of ``{"shape", "color", "size", "box"}`` dicts.
"""

from __future__ import annotations

import fnmatch
import hashlib
import json
import logging
import re
from collections.abc import Sequence
from pathlib import Path

import numpy as np
from datasets import Dataset, DatasetDict, Image, LargeList, List, Value, concatenate_datasets

from captioner.data._common import (
    ACCEPTED_LAYOUTS,
    SPLIT_ALIASES,
    SPLIT_COLUMN_VALUES,
    SPLITS,
    DatasetFormatError,
    DatasetLoadError,
)
from captioner.data.sources import load_hub, load_local, looks_local

logger = logging.getLogger(__name__)

DEFAULT_HUB_DATASET = "jxie/flickr8k"
CAPTION_LIST_NAMES = ("captions", "caption", "sentences")
_NUMBERED_CAPTION = re.compile(r"captions?_(\d+)")
_LIST_FEATURES = (List, LargeList)  # datasets.Sequence(...) builds a List


def load_caption_dataset(
    source: str | Path = DEFAULT_HUB_DATASET,
    *,
    seed: int = 0,
    validation_fraction: float = 0.05,
    test_fraction: float = 0.1,
    max_images: int | None = None,
    image_column: str | None = None,
    caption_column: str | None = None,
    split_column: str | None = None,
) -> DatasetDict:
    """Load ``source`` (Hub id, local folder or file) as train/validation/test image-caption
    splits.

    ``image_column``/``caption_column`` name the columns when they are not the usual ones
    (``caption_column`` may be a pattern such as ``caption_*``); ``split_column`` holds each
    row's split (Karpathy-split Flickr30k/COCO; used automatically when a single-split source
    has a ``split`` column). Missing validation/test splits are carved out of train (a
    ``seed``-ed random selection of ``validation_fraction``/``test_fraction`` of its images).
    ``max_images`` keeps the first N images of each split, for quick runs.
    """
    if max_images is not None and max_images < 1:
        raise ValueError(f"max_images must be at least 1, got {max_images}")
    if not (0 < validation_fraction < 1 and 0 < test_fraction < 1):
        raise ValueError("validation_fraction and test_fraction must be between 0 and 1")
    root = None
    if isinstance(source, Path) or looks_local(source):
        path = Path(source).expanduser()
        if not path.exists():
            raise FileNotFoundError(f"dataset folder {str(path)!r} does not exist")
        raw, origin = load_local(path), str(path)
        root = path if path.is_dir() else path.parent
    else:
        raw, origin = load_hub(source), source
    raw = _split_by_column(raw, split_column, origin)
    splits = _canonical_splits(raw, origin)
    splits = {name: _normalise(ds, f"{origin} [{name}]", image_column, caption_column, root)
              for name, ds in splits.items()}
    splits = _complete_splits(splits, seed, validation_fraction, test_fraction, origin)
    if max_images is not None:
        splits = {n: ds.select(range(min(len(ds), max_images))) for n, ds in splits.items()}
    return DatasetDict({name: splits[name] for name in SPLITS})


# --------------------------------------------------------------------------------------------
# Splits


def _split_by_column(raw: DatasetDict, column: str | None, origin: str) -> DatasetDict:
    """Rows → splits by a column's value (train/val/test/restval...), when one is given, or
    when a single-split source has a ``split`` column."""
    if column is None:
        only = next(iter(raw.values())) if len(raw) == 1 else None
        if only is None or not _is_text(only.features.get("split")):
            return raw
        column = "split"
    missing = [name for name, ds in raw.items() if column not in ds.column_names]
    if missing:
        raise DatasetFormatError(
            f"{origin}: no split column {column!r}; found columns "
            f"{next(iter(raw.values())).column_names}. Pass --split-column with a column "
            f"holding train/val/test values.")
    rows = concatenate_datasets(list(raw.values())) if len(raw) > 1 else next(iter(raw.values()))
    groups: dict[str, list[int]] = {}
    unknown: set[str] = set()
    for i, value in enumerate(rows[column]):
        name = SPLIT_COLUMN_VALUES.get(str(value).strip().lower())
        if name is None:
            unknown.add(str(value))
        else:
            groups.setdefault(name, []).append(i)
    if unknown:
        logger.warning("%s: rows whose %s is %s are not train/validation/test; ignored",
                       origin, column, sorted(unknown))
    if not groups:
        raise DatasetFormatError(
            f"{origin}: column {column!r} holds no split names (train, val, test, restval, "
            f"...); found {sorted(unknown)[:5]}")
    return DatasetDict({name: rows.select(groups[name]) for name in SPLITS if name in groups})


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
            f"{origin}: no train split among {list(raw)}; if a column holds each row's split, "
            f"pass --split-column.\n{ACCEPTED_LAYOUTS}"
        )
    return splits


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


# --------------------------------------------------------------------------------------------
# Columns


def _columns_found(ds: Dataset) -> str:
    return ", ".join(f"{name} ({_kind(feature)})" for name, feature in ds.features.items())


def _kind(feature) -> str:
    if isinstance(feature, Image):
        return "image"
    if isinstance(feature, _LIST_FEATURES):
        return f"list of {_kind(feature.feature)}"
    return "string" if _is_text(feature) else getattr(feature, "dtype", type(feature).__name__)


def _is_text(feature) -> bool:
    return isinstance(feature, Value) and feature.dtype in ("string", "large_string")


def _image_column(ds: Dataset, wanted: str | None, where: str, root: Path | None,
                  keep: list[str]) -> Dataset:
    """The image column, as ``image`` of type Image, beside the ``keep`` columns; a column of
    file paths (relative to the dataset folder) is read as images."""
    images = [c for c, f in ds.features.items() if isinstance(f, Image)]
    column = wanted or ("image" if "image" in ds.column_names
                        else images[0] if len(images) == 1 else None)
    if column is None or column not in ds.column_names:
        raise DatasetFormatError(
            f"{where}: {'no column ' + repr(wanted) if wanted else 'no image column'}; found "
            f"columns {_columns_found(ds)}. Pass --image-column with the column holding the "
            f"images (or their file paths).\n{ACCEPTED_LAYOUTS}"
        )
    ds = ds.select_columns([column, *keep])
    if not isinstance(ds.features[column], Image):
        if not _is_text(ds.features[column]):
            raise DatasetFormatError(f"{where}: column {column!r} holds neither images nor "
                                     f"file paths; found columns {_columns_found(ds)}")
        if root is not None:
            ds = ds.map(lambda batch: {column: [str(root / p) for p in batch[column]]},
                        batched=True)
        ds = ds.cast_column(column, Image())
    return ds.rename_column(column, "image") if column != "image" else ds


def _caption_values(ds: Dataset, wanted: str | None, where: str):
    """(captions per row, None) for list or numbered columns; (None, one caption per row)."""
    columns = ds.column_names
    if wanted and any(ch in wanted for ch in "*?["):
        numbered = sorted(fnmatch.filter(columns, wanted),
                          key=lambda c: [int(t) if t.isdigit() else t
                                         for t in re.split(r"(\d+)", c)])
        if not numbered:
            raise DatasetFormatError(f"{where}: no column matches {wanted!r}; found columns "
                                     f"{_columns_found(ds)}")
    elif wanted:
        if wanted not in columns:
            raise DatasetFormatError(f"{where}: no caption column {wanted!r}; found columns "
                                     f"{_columns_found(ds)}")
        return _one_column(ds, wanted)
    else:
        numbered = sorted((c for c in columns if _NUMBERED_CAPTION.fullmatch(c)),
                          key=lambda c: int(_NUMBERED_CAPTION.fullmatch(c).group(1)))
        named = [c for c in CAPTION_LIST_NAMES if c in columns]
        lists = [c for c in named if isinstance(ds.features[c], _LIST_FEATURES)]
        if lists or (named and not numbered):
            return _one_column(ds, (lists or named)[0])
        if not numbered:
            raise DatasetFormatError(
                f"{where}: no caption column; found columns {_columns_found(ds)}. Expected "
                f"caption_0..caption_N, a 'captions' list or one 'caption' per row; pass "
                f"--caption-column NAME (a column of strings or of lists of strings) or a "
                f"pattern such as 'caption_*'.\n{ACCEPTED_LAYOUTS}"
            )
    table = ds.select_columns(numbered).to_dict()
    return [_clean(row) for row in zip(*(table[c] for c in numbered))], None


def _one_column(ds: Dataset, column: str):
    if isinstance(ds.features[column], _LIST_FEATURES):
        return [_clean(c) for c in ds[column]], None
    values = list(ds[column])
    as_lists = [_as_json_list(v) for v in values]
    if values and all(v is not None for v in as_lists):  # JSON-encoded lists in a CSV
        return [_clean(v) for v in as_lists], None
    return None, values


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


def _image_keys(ds: Dataset) -> list[str]:
    """One key per row identifying its image (file path, else a hash of the bytes)."""
    refs = ds.cast_column("image", Image(decode=False))["image"]
    return [r["path"] or hashlib.sha1(r["bytes"]).hexdigest() for r in refs]


def _normalise(ds: Dataset, where: str, image_column: str | None, caption_column: str | None,
               root: Path | None) -> Dataset:
    """Columns → ``image``, ``captions`` (+ ``objects``); images without captions dropped."""
    captions, per_row = _caption_values(ds, caption_column, where)
    extras = ["objects"] if "objects" in ds.column_names else []
    base = _image_column(ds, image_column, where, root, extras)
    if per_row is not None:  # one caption per row: group rows by image
        groups: dict[str, list[int]] = {}
        for i, key in enumerate(_image_keys(base)):
            groups.setdefault(key, []).append(i)
        base = base.select([rows[0] for rows in groups.values()])
        captions = [_clean([per_row[i] for i in rows]) for rows in groups.values()]
    base = base.add_column("captions", captions, feature=List(Value("string")))
    keep = [i for i, c in enumerate(captions) if c]
    if len(keep) < len(captions):
        logger.warning("%s: dropped %d images without captions", where, len(captions) - len(keep))
        base = base.select(keep)
    base = base.cast_column("image", Image(mode="RGB"))
    return base.select_columns(["image", "captions", *extras])


__all__ = [
    "ACCEPTED_LAYOUTS",
    "DEFAULT_HUB_DATASET",
    "DatasetFormatError",
    "DatasetLoadError",
    "load_caption_dataset",
]
