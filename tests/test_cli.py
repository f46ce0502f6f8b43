"""`python -m captioner caption ...` end to end on a tiny random model saved to a temp folder."""

import json
import os
import re
import subprocess
import sys
from contextlib import nullcontext
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from captioner import cli, hub

ROOT = Path(__file__).resolve().parent.parent


def run_cli(*args, timeout=120):
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "OMP_NUM_THREADS": "1", "MPLBACKEND": "Agg"}
    return subprocess.run([sys.executable, "-m", "captioner", "caption", *map(str, args)],
                          cwd=ROOT, env=env, capture_output=True, text=True, timeout=timeout)


@pytest.fixture
def images(tmp_path):
    rng = np.random.default_rng(0)
    png = tmp_path / "img1.png"
    Image.fromarray(rng.integers(0, 256, (40, 50, 3), dtype=np.uint8)).save(png)
    jpg = tmp_path / "img2.jpg"
    Image.fromarray(rng.integers(0, 256, (61, 33, 3), dtype=np.uint8)).save(jpg)
    return png, jpg


def check_json_line(line, image, grid):
    record = json.loads(line)
    base = {"image", "caption", "tokens", "score", "attention_shape", "truncated", "warning"}
    assert base <= set(record) <= base | {"beams", "alternatives", "gate"}
    assert record["image"] == str(image)
    assert record["caption"] == " ".join(record["tokens"])
    assert isinstance(record["score"], float | int) and record["score"] <= 0
    assert record["attention_shape"] == [len(record["tokens"]), grid, grid]
    return record


def test_caption_json_and_attention_grids(saved_model_dir, images, tmp_path):
    png, jpg = images
    out = tmp_path / "g.png"
    result = run_cli(png, jpg, "--weights", saved_model_dir, "--json", "--attention-grid", out,
                     "--max-len", "6")
    assert result.returncode == 0, result.stderr
    assert "Traceback" not in result.stderr
    lines = result.stdout.strip().splitlines()
    assert len(lines) == 2
    for line, image in zip(lines, images):
        record = check_json_line(line, image, grid=4)
        assert len(record["tokens"]) <= 6
    for name in ("g-img1.png", "g-img2.png"):  # several images: OUT-<image name>.png each
        with Image.open(tmp_path / name) as grid:
            grid.load()
            assert grid.format == "PNG" and grid.width > 100 and grid.height > 100
    assert not out.exists()


def test_missing_weights_folder_explains_what_to_do(images, tmp_path, capsys):
    # in-process: an exception escaping main() (a traceback) would fail the test
    code = cli.main(["caption", str(images[0]), "--weights", str(tmp_path / "no-model-here")])
    captured = capsys.readouterr()
    assert code != 0
    assert "Traceback" not in captured.err
    assert "cannot load weights" in captured.err and "no such model folder" in captured.err
    assert "--weights" in captured.err and "model.safetensors" in captured.err
    assert captured.out == ""


def test_broken_weights_folder_is_an_error_message_not_a_traceback(saved_model_dir, images,
                                                                   capsys):
    (saved_model_dir / "model.safetensors").write_bytes(b"truncated")
    code = cli.main(["caption", str(images[0]), "--weights", str(saved_model_dir)])
    captured = capsys.readouterr()
    assert code != 0 and "not a readable safetensors file" in captured.err


def test_default_weights_missing_says_how_to_train_them(images, tmp_path, monkeypatch, capsys):
    monkeypatch.setattr(hub, "BUNDLED_WEIGHTS", tmp_path / "weights")
    assert cli.main(["caption", str(images[0])]) == 2
    err = capsys.readouterr().err
    assert "train_space.py" in err and "--weights" in err


def test_corrupt_image_among_good_ones(saved_model_dir, images, tmp_path, capsys):
    png, jpg = images
    broken = tmp_path / "broken.jpg"
    broken.write_text("not a jpeg at all")
    code = cli.main(["caption", str(png), str(broken), str(jpg), "--weights",
                     str(saved_model_dir), "--json", "--beam-size", "2", "--max-len", "5"])
    captured = capsys.readouterr()
    assert code != 0
    assert "broken.jpg" in captured.err and "not an image" in captured.err
    assert "img1" not in captured.err and "img2" not in captured.err
    lines = captured.out.strip().splitlines()
    assert [json.loads(line)["image"] for line in lines] == [str(png), str(jpg)]
    for line, image in zip(lines, (png, jpg)):
        check_json_line(line, image, grid=4)


def test_plain_text_output_and_single_grid(saved_model_dir, images, tmp_path, capsys):
    out = tmp_path / "one.png"
    code = cli.main(["caption", str(images[1]), "--weights", str(saved_model_dir),
                     "--attention-grid", str(out), "--beam-size", "1", "--max-len", "4"])
    assert code == 0
    assert capsys.readouterr().out.startswith(f"{images[1]}: ")
    with Image.open(out) as grid:
        assert grid.format == "PNG"


def test_only_bad_images(saved_model_dir, tmp_path, capsys):
    code = cli.main(["caption", str(tmp_path / "missing.png"), "--weights",
                     str(saved_model_dir)])
    captured = capsys.readouterr()
    assert code != 0 and "no such file" in captured.err and captured.out == ""


@pytest.mark.parametrize("flag", ["--beam-size", "--max-len"])
def test_bad_decoding_arguments(saved_model_dir, images, capsys, flag):
    with pytest.raises(SystemExit) as exit_:  # an argparse error
        cli.main(["caption", str(images[0]), "--weights", str(saved_model_dir), flag, "0"])
    assert exit_.value.code == 2 and "at least 1" in capsys.readouterr().err


def test_folders_recursive_images_only_and_output_files(saved_model_dir, images, tmp_path,
                                                         capsys):
    folder = tmp_path / "album"
    (folder / "sub").mkdir(parents=True)
    for image in images:
        (folder / "sub" / image.name).write_bytes(image.read_bytes())
    (folder / "notes.txt").write_text("not an image")
    jsonl, table = tmp_path / "out.jsonl", tmp_path / "out.csv"
    args = ["caption", str(folder), "--weights", str(saved_model_dir), "--max-len", "4"]
    assert cli.main([*args, "--output", str(jsonl)]) == 0
    assert cli.main([*args, "--output", str(table)]) == 0
    expected = [str(folder / "sub" / image.name) for image in images]
    records = [json.loads(line) for line in jsonl.read_text().splitlines()]
    assert [r["image"] for r in records] == expected
    for record, image in zip(records, expected):
        check_json_line(json.dumps(record), image, grid=4)
    import csv

    with open(table, newline="") as f:
        rows = list(csv.DictReader(f))
    assert [(r["image"], r["caption"]) for r in rows] == [(r["image"], r["caption"])
                                                           for r in records]
    assert "notes.txt" not in capsys.readouterr().err
    assert cli.main([*args, "--output", str(tmp_path / "out.txt")]) == 2
    assert ".jsonl or .csv" in capsys.readouterr().err
    empty = tmp_path / "empty"
    empty.mkdir()
    assert cli.main(["caption", str(empty), "--weights", str(saved_model_dir)]) != 0
    assert "no images" in capsys.readouterr().err


def test_grid_names_are_unique_and_stable(saved_model_dir, images, tmp_path):
    a, b = tmp_path / "a", tmp_path / "b"
    for folder in (a, b):
        folder.mkdir()
        (folder / "img.png").write_bytes(images[0].read_bytes())
    out = tmp_path / "grids" / "g.png"
    out.parent.mkdir()
    missing = tmp_path / "gone.png"
    for inputs in ([a / "img.png", b / "img.png"], [a / "img.png", missing, b / "img.png"]):
        for old in out.parent.iterdir():
            old.unlink()
        cli.main(["caption", *map(str, inputs), "--weights", str(saved_model_dir),
                  "--attention-grid", str(out), "--max-len", "3"])
        assert sorted(p.name for p in out.parent.iterdir()) == ["g-a-img-png.png",
                                                                 "g-b-img-png.png"]
    # one good image among failures keeps the name it has beside the other inputs
    cli.main(["caption", str(images[0]), str(missing), "--weights", str(saved_model_dir),
              "--attention-grid", str(out), "--max-len", "3"])
    assert (out.parent / "g-img1.png").is_file() and not out.exists()


@pytest.mark.parametrize("args, message", [
    (["--dataset", "/no/such/folder"], "does not exist"),
    (["--dataset", "nobody/no-such-dataset"], "--dataset scenes"),
    (["--device", "tpu"], "unknown device 'tpu'"),
])
def test_evaluate_errors_are_messages(saved_model_dir, tmp_path, capsys, args, message):
    code = cli.main(["evaluate", "--weights", str(saved_model_dir), "--data-dir",
                     str(tmp_path), *args])
    err = capsys.readouterr().err
    assert code == 2 and message in err and "Traceback" not in err


def test_evaluate_prints_percentages(saved_model_dir, tmp_path, capsys, monkeypatch):
    from captioner import evaluation

    real = evaluation.caption_metrics
    monkeypatch.setattr(evaluation, "caption_metrics",  # no Java start-up for METEOR
                        lambda refs, hyps, meteor=True: real(refs, hyps, meteor=False))
    assert cli.main(["evaluate", "--weights", str(saved_model_dir), "--data-dir", str(tmp_path),
                     "--num-scenes", "3", "--beam-size", "1", "--max-len", "3",
                     "--batch-size", "2"]) == 0
    out = capsys.readouterr().out
    assert re.search(r"objects_correct \d+\.\d %", out) and "pointing 0." not in out


def test_bad_device_and_missing_local_name(images, capsys):
    assert cli.main(["caption", str(images[0]), "--device", "cuda:7"]) == 2
    assert "device 'cuda:7'" in capsys.readouterr().err
    assert cli.main(["caption", str(images[0]), "--weights", "no-such-folder-here"]) == 2
    err = capsys.readouterr().err
    assert "no local folder 'no-such-folder-here'" in err and "Hugging Face Hub" in err


def test_every_option_has_help_with_its_default():
    parser = cli.build_parser()
    for command in ("caption", "evaluate", "deploy-space"):
        sub = parser._subparsers._group_actions[0].choices[command]
        for action in sub._actions:
            assert action.help, (command, action.dest)
            if action.default not in (None, False) and action.dest != "help":
                assert "default" in action.help, (command, action.dest)


def test_questioning_flags_end_to_end():
    """--top-k, --prefix and --look-here on the bundled model, through the real command."""
    result = run_cli(ROOT / "examples/scene-6-old-world.png", "--json", "--top-k", "3", "--prefix",
                     "a small blue", "--look-here", "5:0.5,0.5", "--beam-size", "2")
    assert result.returncode == 0, result.stderr
    record = json.loads(result.stdout)
    tokens = record["tokens"]
    assert tokens[:3] == ["a", "small", "blue"] and record["truncated"] is False
    assert len(record["alternatives"]) == len(record["gate"]) == len(tokens)
    for ranked in record["alternatives"]:
        assert len(ranked) == 3 and all(0 <= r["prob"] <= 1 for r in ranked)
        assert [r["prob"] for r in ranked] == sorted((r["prob"] for r in ranked), reverse=True)
    assert all(0 <= g <= 1 for g in record["gate"])
    assert record["beams"][0] == {"tokens": tokens, "score": record["score"]}


@pytest.mark.parametrize("args, message", [
    (["--prefix", "a magenta"], "'magenta'"),  # not a word of the model's
    (["--look-here", "0:0.5,0.5"], "counts from 1"),
    (["--look-here", "2:1.5,0.5"], "fractions"),
    (["--look-here", "two"], "WORD:X,Y"),
    (["--top-k", "-1"], "--top-k"),
])
def test_questioning_flags_reject_bad_values(images, capsys, args, message):
    with pytest.raises(SystemExit) if "--prefix" not in args else nullcontext():
        assert cli.main(["caption", str(images[0]), *args]) == 2
    assert message in capsys.readouterr().err


def test_evaluate_command_on_fresh_scenes(tmp_path, monkeypatch, capsys):
    """`python -m captioner evaluate` (in-process; METEOR's Java left out for speed) with the
    bundled weights on 20 freshly generated scenes: prints and writes every metric for each
    beam, plays the pointing game (trials counted), and the trained model's grounding is well
    above the chance rate for the same boxes."""
    from captioner import evaluation

    assert (hub.BUNDLED_WEIGHTS / "model.safetensors").is_file(), "weights/ is in the repo"
    monkeypatch.setattr(evaluation, "java_available", lambda: False)
    out = tmp_path / "metrics.json"
    code = cli.main(["evaluate", "--num-scenes", "20", "--data-dir", str(tmp_path / "data"),
                     "--beam-size", "1", "3", "--output", str(out), "--no-faithfulness"])
    assert code == 0  # faithfulness: tests/test_faithfulness.py, on tiny models and ensembles
    result = capsys.readouterr()
    results = json.loads(out.read_text())
    assert results["images"] == 20 and results["dataset"] == "scenes-v2"  # the model's world
    generated = list((tmp_path / "data").rglob("test/*.png"))  # generated, not reused:
    assert len([p for p in generated if "heldout" not in str(p)]) == 20  # test scenes and
    assert len([p for p in generated if "heldout" in str(p)]) == 20  # held-out pair scenes
    printed = [line for line in result.out.splitlines() if line.startswith("beam ")]
    assert len(printed) == 2
    for beam, line in zip(("beam1", "beam3"), printed):
        metrics = results[beam]
        assert {"bleu1", "bleu4", "rouge_l", "cider", "objects_correct", "relations_correct",
                "pointing", "pointing_strict", "pointing_chance"} <= metrics.keys()
        assert f"bleu4 {metrics['bleu4']}," in line
        assert f"pointing {metrics['pointing'] * 100:.1f} %" in line  # fractions as percentages
        assert metrics["pointing_trials"] >= 20  # at least one named object per scene
        assert metrics["objects_correct"] >= 0.5, metrics["examples"]
        assert metrics["pointing"] > metrics["pointing_chance"] + 0.2
        assert metrics["pointing_strict"] > metrics["pointing_strict_chance"]
        assert 50 <= metrics["bleu4"] <= 100
        assert metrics["skipped"] == ["meteor: needs Java, which is not installed"]
