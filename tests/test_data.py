"""load_caption_dataset: every supported layout comes out in the same normalised form."""

import csv
import json
from pathlib import Path
from unittest import mock

import datasets
import pytest
from datasets import Dataset, DatasetDict, Features, Image, Value
from PIL import Image as PILImage

from captioner.data import DatasetFormatError, DatasetLoadError, load_caption_dataset, sources

COLOURS = [(255, 0, 0), (0, 255, 0), (0, 0, 255), (255, 255, 0), (0, 255, 255), (255, 0, 255)]


@pytest.fixture(autouse=True)
def _isolated_hf_cache(tmp_path_factory, monkeypatch):
    """Keep datasets' Arrow cache out of the user's home (and out of the data folders, where
    imagefolder would find it); never go online."""
    cache = tmp_path_factory.mktemp("hf-cache")
    monkeypatch.setattr(datasets.config, "HF_DATASETS_CACHE", cache)
    monkeypatch.setattr(datasets.config, "HF_HUB_OFFLINE", True)
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_DATASETS_OFFLINE", "1")


def _image(path: Path, index: int, mode: str = "RGB") -> str:
    path.parent.mkdir(parents=True, exist_ok=True)
    PILImage.new("RGB", (6, 4), COLOURS[index % len(COLOURS)]).convert(mode).save(path)
    return path.name


def _write_csv(path: Path, header: list[str], rows: list[list[str]]) -> None:
    with open(path, "w", newline="", encoding="utf-8") as f:
        writer = csv.writer(f)
        writer.writerow(header)
        writer.writerows(rows)


def _sizes(ds: DatasetDict) -> dict[str, int]:
    return {name: len(split) for name, split in ds.items()}


def _check_normalised(ds: DatasetDict, extra: tuple[str, ...] = ()) -> None:
    assert list(ds) == ["train", "validation", "test"]
    for split in ds.values():
        assert split.column_names == ["image", "captions", *extra]
        assert isinstance(split.features["image"], Image)
        assert split.features["captions"] == datasets.List(Value("string"))
        for row in split:
            assert row["image"].mode == "RGB" and row["image"].size == (6, 4)
            assert row["captions"] and all(c == c.strip() and c for c in row["captions"])


def test_imagefolder_numbered_caption_columns(tmp_path):
    for split, n in [("train", 4), ("validation", 2), ("test", 2)]:
        rows = []
        for i in range(n):
            name = _image(tmp_path / split / f"{split}{i}.png", i)
            rows.append([name, f"  {split} {i} first ", "", f"{split} {i} third"])
        _write_csv(
            tmp_path / split / "metadata.csv",
            ["file_name", "caption_0", "caption_1", "caption_2"],
            rows,
        )
    # One training image with only blank captions is dropped.
    _image(tmp_path / "train" / "blank.png", 5)
    with open(tmp_path / "train" / "metadata.csv", "a", newline="") as f:
        csv.writer(f).writerow(["blank.png", " ", "", ""])

    ds = load_caption_dataset(tmp_path)
    _check_normalised(ds)
    assert _sizes(ds) == {"train": 4, "validation": 2, "test": 2}
    assert ds["train"][0]["captions"] == ["train 0 first", "train 0 third"]
    assert ds["test"][1]["captions"] == ["test 1 first", "test 1 third"]
    assert ds["train"][0]["image"].getpixel((0, 0)) == COLOURS[0]


def test_imagefolder_captions_list_jsonl_with_val_name_and_objects(tmp_path):
    objects = [{"shape": "circle", "color": "red", "size": "big", "box": [0, 0, 3, 3]}]
    for split, n in [("train", 3), ("val", 2), ("test", 2)]:
        with open(_meta(tmp_path, split), "w") as f:
            for i in range(n):
                name = _image(tmp_path / split / f"{i}.png", i, mode="L" if i == 0 else "RGB")
                record = {"file_name": name, "captions": [f"{split} {i} a", f"{split} {i} b "]}
                f.write(json.dumps({**record, "objects": objects}) + "\n")
    ds = load_caption_dataset(tmp_path)
    _check_normalised(ds, extra=("objects",))  # grey image comes back RGB
    assert _sizes(ds) == {"train": 3, "validation": 2, "test": 2}
    assert ds["validation"][1]["captions"] == ["val 1 a", "val 1 b"]
    assert ds["train"][0]["objects"] == objects


def _meta(root: Path, split: str) -> Path:
    (root / split).mkdir(parents=True, exist_ok=True)
    return root / split / "metadata.jsonl"


def test_imagefolder_one_caption_per_row_is_grouped(tmp_path):
    for split, n in [("train", 20), ("test", 3)]:
        rows = []
        for i in range(n):
            _image(tmp_path / split / f"{i:02d}.png", i)
        for k in range(3):  # rows interleaved: all first captions, then all second, ...
            rows += [[f"{i:02d}.png", f"{split} {i} caption {k}"] for i in range(n)]
        _write_csv(tmp_path / split / "metadata.csv", ["file_name", "caption"], rows)
    ds = load_caption_dataset(tmp_path, validation_fraction=0.1, seed=3)
    _check_normalised(ds)
    # train + test, no validation: validation carved out of train.
    assert _sizes(ds) == {"train": 18, "validation": 2, "test": 3}
    for split in ds.values():
        for row in split:
            assert len(row["captions"]) == 3
            prefix = row["captions"][0].rsplit(" ", 1)[0]
            assert row["captions"] == [f"{prefix} {k}" for k in range(3)]
    assert ds["test"][2]["captions"][0] == "test 2 caption 0"
    train = {r["captions"][0] for r in ds["train"]}
    val = {r["captions"][0] for r in ds["validation"]}
    assert not train & val and len(train | val) == 20


def test_unsplit_folder_gets_deterministic_splits(tmp_path):
    rows = [[_image(tmp_path / f"{i:02d}.png", i), f"picture {i}", f"image {i}"] for i in range(40)]
    _write_csv(tmp_path / "metadata.csv", ["file_name", "caption_0", "caption_1"], rows)
    ds = load_caption_dataset(tmp_path, seed=0, validation_fraction=0.1, test_fraction=0.2)
    _check_normalised(ds)
    assert _sizes(ds) == {"train": 28, "validation": 4, "test": 8}

    def ids(d):
        return {name: [r[0] for r in split["captions"]] for name, split in d.items()}

    first = ids(ds)
    assert sorted(sum(first.values(), [])) == sorted(f"picture {i}" for i in range(40))
    again = ids(load_caption_dataset(tmp_path, seed=0, validation_fraction=0.1, test_fraction=0.2))
    assert again == first
    other = ids(load_caption_dataset(tmp_path, seed=1, validation_fraction=0.1, test_fraction=0.2))
    assert other != first

    capped = load_caption_dataset(tmp_path, seed=0, max_images=3)
    assert _sizes(capped) == {"train": 3, "validation": 2, "test": 3}  # 5% of 40 rounds to 2
    full = load_caption_dataset(tmp_path, seed=0)
    assert capped["train"]["captions"] == full["train"]["captions"][:3]


def test_fast_split_patterns_match_datasets_own_inference(tmp_path, monkeypatch):
    for split in ("train", "valid", "test"):
        rows = [[_image(tmp_path / split / f"{i}.png", i), f"{split} {i}"] for i in range(3)]
        _write_csv(tmp_path / split / "metadata.csv", ["file_name", "caption"], rows)
    fast = load_caption_dataset(tmp_path)
    monkeypatch.setattr(sources, "_imagefolder_files", lambda path: {"data_dir": str(path)})
    slow = load_caption_dataset(tmp_path)
    assert _sizes(fast) == _sizes(slow) == {"train": 3, "validation": 3, "test": 3}
    for name in fast:
        assert fast[name]["captions"] == slow[name]["captions"]


def test_kaggle_flickr8k_layout(tmp_path):
    rows = []
    for i in range(12):
        name = _image(tmp_path / "Images" / f"{1000 + i}_abc.jpg", i)
        rows += [[name, f"A dog, number {i}, runs ."], [name, f' "quoted" caption {i} ']]
    rows.append(["missing.jpg", "an image that is not there"])
    rows.append(["1000_abc.jpg", "   "])
    _write_csv(tmp_path / "captions.txt", ["image", "caption"], rows)
    ds = load_caption_dataset(tmp_path)
    _check_normalised(ds)
    assert sum(_sizes(ds).values()) == 12
    by_first = {r["captions"][0]: r["captions"] for split in ds.values() for r in split}
    assert by_first["A dog, number 0, runs ."] == ["A dog, number 0, runs .", '"quoted" caption 0']
    # Passing the captions.txt file itself works too.
    assert _sizes(load_caption_dataset(tmp_path / "captions.txt")) == _sizes(ds)


def test_local_path_that_does_not_exist_is_not_sent_to_the_hub(tmp_path):
    with mock.patch("datasets.load_dataset") as load:
        for missing in [tmp_path / "nope", "./no/such/folder", "~/no-such-dataset-here"]:
            with pytest.raises(FileNotFoundError, match="does not exist"):
                load_caption_dataset(missing)
    load.assert_not_called()


def test_hub_id_goes_to_load_dataset(tmp_path):
    paths = [str(tmp_path / _image(tmp_path / f"{i}.png", i)) for i in range(3)]
    features = Features({"image": Image(), **{f"caption_{k}": Value("string") for k in range(5)}})

    def split(n):
        captions = {f"caption_{k}": [f"c{k} {i}" for i in range(n)] for k in range(5)}
        return Dataset.from_dict({"image": paths[:n], **captions}, features=features)

    fake = DatasetDict({"train": split(3), "validation": split(2), "test": split(1)})
    with mock.patch("datasets.load_dataset", return_value=fake) as load:
        ds = load_caption_dataset("jxie/flickr8k")
    load.assert_called_once_with("jxie/flickr8k")
    _check_normalised(ds)
    assert _sizes(ds) == {"train": 3, "validation": 2, "test": 1}
    assert ds["train"][2]["captions"] == [f"c{k} 2" for k in range(5)]


def test_hub_failure_has_a_clear_message():
    error = ConnectionError("offline")
    with mock.patch("datasets.load_dataset", side_effect=error):
        with pytest.raises(DatasetLoadError) as info:
            load_caption_dataset("someone/some-captions")
    message = str(info.value)
    assert "someone/some-captions" in message and "Hugging Face Hub" in message
    assert "offline" in message and "local folder" in message and "no local folder" in message
    assert info.value.__cause__ is error


def test_folder_without_metadata(tmp_path):
    for i in range(3):
        _image(tmp_path / f"img{i}.png", i)
    with pytest.raises(DatasetFormatError) as info:
        load_caption_dataset(tmp_path)
    message = str(info.value)
    assert "img0.png" in message and "metadata.csv" in message and "captions.txt" in message


def test_metadata_without_caption_columns(tmp_path):
    rows = [[_image(tmp_path / f"{i}.png", i), "cat"] for i in range(3)]
    _write_csv(tmp_path / "metadata.csv", ["file_name", "label_text"], rows)
    with pytest.raises(DatasetFormatError) as info:
        load_caption_dataset(tmp_path)
    message = str(info.value)
    assert "label_text" in message and "caption_0" in message


def test_metadata_without_file_name(tmp_path):
    rows = [[_image(tmp_path / f"{i}.png", i), "a cat"] for i in range(3)]
    _write_csv(tmp_path / "metadata.csv", ["path", "caption"], rows)
    with pytest.raises(DatasetFormatError, match="file_name"):
        load_caption_dataset(tmp_path)


def test_bad_kaggle_layouts(tmp_path):
    (tmp_path / "a").mkdir()
    _write_csv(tmp_path / "a" / "captions.txt", ["image", "caption"], [["x.jpg", "a cat"]])
    with pytest.raises(DatasetFormatError, match="Images/"):
        load_caption_dataset(tmp_path / "a")
    _image(tmp_path / "b" / "Images" / "x.jpg", 0)
    _write_csv(tmp_path / "b" / "captions.txt", ["filename", "text"], [["x.jpg", "a cat"]])
    with pytest.raises(DatasetFormatError, match="filename"):
        load_caption_dataset(tmp_path / "b")


def test_too_few_images_to_split(tmp_path):
    name = _image(tmp_path / "0.png", 0)
    _write_csv(tmp_path / "metadata.csv", ["file_name", "caption"], [[name, "x"]])
    with pytest.raises(DatasetFormatError, match="too few"):
        load_caption_dataset(tmp_path)


# --- the forms people hold datasets in (nlphuji/flickr30k's schema: one split, a split column)

FLICKR30K_SPLITS = ["train", "restval", "val", "train", "test", "dev", "train", "test", "val"]


def _flickr30k_rows(tmp_path) -> Dataset:
    """nlphuji/flickr30k's columns: image, caption (a list), sentids, split, img_id, filename."""
    features = Features({"image": Image(), "caption": datasets.List(Value("string")),
                         "sentids": datasets.List(Value("string")), "split": Value("string"),
                         "img_id": Value("string"), "filename": Value("string")})
    n = len(FLICKR30K_SPLITS)
    paths = [str(tmp_path / "px" / _image(tmp_path / "px" / f"{i}.jpg", i)) for i in range(n)]
    return Dataset.from_dict({
        "image": paths, "caption": [[f"photo {i} one ", f"photo {i} two"] for i in range(n)],
        "sentids": [[str(2 * i), str(2 * i + 1)] for i in range(n)], "split": FLICKR30K_SPLITS,
        "img_id": [str(i) for i in range(n)], "filename": [f"{i}.jpg" for i in range(n)],
    }, features=features).map(lambda row: {"image": row["image"]})  # embed the image bytes


def _check_flickr30k(ds: DatasetDict) -> None:
    """train + restval -> train, val/dev -> validation, test -> test; lists kept in order."""
    _check_normalised(ds)
    by_split = {name: sorted(int(r["captions"][0].split()[1]) for r in split)
                for name, split in ds.items()}
    assert by_split == {"train": [0, 1, 3, 6], "validation": [2, 5, 8], "test": [4, 7]}
    assert ds["test"][0]["captions"] == ["photo 4 one", "photo 4 two"]


@pytest.fixture
def flickr30k(tmp_path):
    return _flickr30k_rows(tmp_path)


def test_local_copy_of_a_hub_repo_parquet(flickr30k, tmp_path):
    repo = tmp_path / "flickr30k"
    (repo / "data").mkdir(parents=True)
    flickr30k.to_parquet(str(repo / "data" / "test-00000-of-00001.parquet"))
    (repo / "README.md").write_text("# a copy of the dataset repo\n")
    _check_flickr30k(load_caption_dataset(repo))
    # the parquet file on its own
    _check_flickr30k(load_caption_dataset(repo / "data" / "test-00000-of-00001.parquet"))


def test_save_to_disk_folders(flickr30k, tmp_path):
    DatasetDict({"test": flickr30k}).save_to_disk(str(tmp_path / "dict"))
    _check_flickr30k(load_caption_dataset(tmp_path / "dict"))
    flickr30k.save_to_disk(str(tmp_path / "one"))
    _check_flickr30k(load_caption_dataset(tmp_path / "one"))


def test_hub_id_offline_from_datasets_cache(flickr30k, tmp_path):
    """What `load_dataset("owner/name")` left in datasets' cache loads with the Hub offline."""
    repo = tmp_path / "flickr30k"
    (repo / "data").mkdir(parents=True)
    flickr30k.to_parquet(str(repo / "data" / "test-00000-of-00001.parquet"))
    datasets.load_dataset(str(repo))  # caches under flickr30k/default/0.0.0/<hash>/
    cache = Path(datasets.config.HF_DATASETS_CACHE)
    (built,) = (cache / "flickr30k" / "default" / "0.0.0").glob("*/dataset_info.json")
    hub_copy = cache / "someone___flickr30k" / "default" / "0.0.0" / built.parent.name
    hub_copy.parent.mkdir(parents=True)
    built.parent.rename(hub_copy)  # where an online load of someone/flickr30k leaves it
    _check_flickr30k(load_caption_dataset("someone/flickr30k"))


def test_repo_copy_with_configs_csv_of_paths_and_mapped_columns(tmp_path):
    repo = tmp_path / "repo"
    for split, n in [("train", 4), ("validation", 2), ("test", 2)]:
        rows = [[f"images/{split}{i}.png", f"{split} {i} a", f"{split} {i} b", "x"]
                for i in range(n)]
        for i in range(n):
            _image(repo / "images" / f"{split}{i}.png", i)
        (repo / "annotations").mkdir(parents=True, exist_ok=True)
        _write_csv(repo / "annotations" / f"{split}-part.csv",
                   ["path", "text_1", "text_2", "text_notes"], rows)
    (repo / "README.md").write_text(
        "---\nconfigs:\n- config_name: default\n  data_files:\n"
        + "".join(f"  - split: {s}\n    path: annotations/{s}-part.csv\n"
                  for s in ("train", "validation", "test"))
        + "---\n# captions\n")
    with pytest.raises(DatasetFormatError) as info:
        load_caption_dataset(repo)
    assert "text_1 (string)" in str(info.value) and "--caption-column" in str(info.value)
    with pytest.raises(DatasetFormatError) as info:
        load_caption_dataset(repo, caption_column="text_?")
    assert "path (string)" in str(info.value) and "--image-column" in str(info.value)
    ds = load_caption_dataset(repo, image_column="path", caption_column="text_?")
    _check_normalised(ds)
    assert _sizes(ds) == {"train": 4, "validation": 2, "test": 2}
    assert ds["validation"][1]["captions"] == ["validation 1 a", "validation 1 b"]
    assert ds["test"][1]["image"].getpixel((0, 0)) == COLOURS[1]


@pytest.mark.parametrize("suffix", [".jsonl", ".csv"])
def test_single_file_with_split_column(tmp_path, suffix):
    names = [_image(tmp_path / f"{i}.png", i) for i in range(len(FLICKR30K_SPLITS))]
    rows = [{"image": name, "caption": json.dumps([f"photo {i} one", f"photo {i} two"]),
             "fold": split} for i, (name, split) in enumerate(zip(names, FLICKR30K_SPLITS))]
    path = tmp_path / f"captions{suffix}"
    if suffix == ".csv":
        _write_csv(path, list(rows[0]), [list(r.values()) for r in rows])
    else:
        path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    with pytest.raises(DatasetFormatError, match="no split column 'split'"):
        load_caption_dataset(path, split_column="split")
    _check_flickr30k(load_caption_dataset(path, split_column="fold"))
