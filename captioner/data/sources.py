"""Read a dataset source, in whichever form it is held, into a raw ``DatasetDict``.

Each reader returns the splits as the source names them and the columns as they are;
normalising names and columns is the package's ``__init__``'s job.
"""

from __future__ import annotations

import csv
import logging
import os
import re
from pathlib import Path

from datasets import Dataset, DatasetDict, Features, Image, List, Value

from captioner.data._common import (
    ACCEPTED_LAYOUTS,
    SPLIT_ALIASES,
    DatasetFormatError,
    DatasetLoadError,
    describe_folder,
)

logger = logging.getLogger(__name__)

# File types `datasets` reads with a packaged builder, by suffix.
DATA_FILE_BUILDERS = {".parquet": "parquet", ".arrow": "arrow", ".csv": "csv",
                      ".jsonl": "json", ".json": "json"}
_SAVE_TO_DISK_MARKERS = ("dataset_dict.json", "state.json")


def looks_local(source: str) -> bool:
    """Hub ids are 'name' or 'owner/name'; anything path-like is treated as a local path."""
    source = str(source)
    return (
        os.path.exists(source)
        or source.startswith((".", "/", "~"))
        or "\\" in source
        or source.count("/") > 1
        or bool(re.match(r"^[A-Za-z]:", source))
        or source.lower().endswith((".txt", *DATA_FILE_BUILDERS))
    )


def load_hub(source: str) -> DatasetDict:
    """``datasets.load_dataset(source)``: online, or offline from datasets' own cache."""
    import datasets

    try:
        loaded = datasets.load_dataset(source)
    except Exception as e:
        raise DatasetLoadError(
            f"could not load dataset {source!r} from the Hugging Face Hub: "
            f"{type(e).__name__}: {e}; (no local folder {source!r} exists either). Offline, a "
            f"Hub dataset loads only once 🤗 datasets has cached it; pass a local folder "
            f"instead, or train on the generated scenes with --dataset scenes."
            f"\n{ACCEPTED_LAYOUTS}"
        ) from e
    return as_dict(loaded)


def as_dict(loaded: Dataset | DatasetDict) -> DatasetDict:
    return DatasetDict({"train": loaded}) if isinstance(loaded, Dataset) else loaded


def load_local(path: Path) -> DatasetDict:
    """Detect the form of a local file or folder and read it."""
    if path.is_file():
        if path.name == "captions.txt" or re.fullmatch(r"metadata\.(csv|jsonl)", path.name):
            path = path.parent
        elif path.suffix.lower() in DATA_FILE_BUILDERS:
            return _load_data_files(DATA_FILE_BUILDERS[path.suffix.lower()],
                                    data_files={"train": str(path)}, where=path)
        else:
            raise DatasetFormatError(
                f"{str(path)!r} is a file, but not parquet, arrow, csv, jsonl or captions.txt."
                f"\n{ACCEPTED_LAYOUTS}"
            )
    if (path / "captions.txt").is_file():
        return DatasetDict({"train": _load_kaggle(path)})
    if any((path / marker).is_file() for marker in _SAVE_TO_DISK_MARKERS):
        import datasets

        return as_dict(datasets.load_from_disk(str(path)))
    if any(_has_metadata(d) for d in [path, *path.iterdir()] if d.is_dir()):
        loaded = _load_data_files("imagefolder", where=path, **_imagefolder_files(path))
        # imagefolder keeps metadata rows whose image file is missing (decoding fails later).
        return DatasetDict({name: _drop_missing_files(ds, name) for name, ds in loaded.items()})
    if _is_repo_copy(path):
        return _load_data_files(str(path), where=path)
    raise DatasetFormatError(
        f"no captions found in {str(path)!r}: no captions.txt, no metadata.csv/metadata.jsonl "
        f"(here or in split subfolders), no data files (parquet, arrow, csv, jsonl) and no "
        f"save_to_disk files. It contains: {describe_folder(path)}.\n{ACCEPTED_LAYOUTS}"
    )


def _is_repo_copy(path: Path) -> bool:
    """A local copy of a Hub dataset repo: data files somewhere below, or README `configs:`."""
    readme = path / "README.md"
    if readme.is_file() and re.search(r"^configs:", _front_matter(readme), re.MULTILINE):
        return True
    return any(p.suffix.lower() in DATA_FILE_BUILDERS and not p.name.startswith(".")
               for p in path.rglob("*") if p.is_file())


def _front_matter(readme: Path) -> str:
    text = readme.read_text(encoding="utf-8", errors="replace")
    match = re.match(r"---\n(.*?)\n---", text, re.DOTALL)
    return match.group(1) if match else ""


def _load_data_files(builder: str, *, where: Path, **kwargs) -> DatasetDict:
    """``load_dataset`` on local files, with the folder's contents in the error."""
    import datasets

    try:
        return as_dict(datasets.load_dataset(builder, **kwargs))
    except Exception as e:
        folder = where if where.is_dir() else where.parent
        raise DatasetFormatError(
            f"could not read {str(where)!r}: {type(e).__name__}: {e}. "
            f"{folder} contains: {describe_folder(folder)}.\n{ACCEPTED_LAYOUTS}"
        ) from e


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
            f"{describe_folder(path)}.\n{ACCEPTED_LAYOUTS}"
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
