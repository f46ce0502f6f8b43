"""train_space.py end to end on tiny generated data: every dataset layout, resume after SIGKILL,
the model card, pushing (with the Hub patched) and multi-process training with accelerate."""

import csv
import hashlib
import json
import os
import shutil
import subprocess
import sys
from dataclasses import replace
from pathlib import Path
from unittest import mock

import numpy as np
import pytest
import torch
from conftest import found_in, wait_for_line
from PIL import Image
from safetensors.torch import load_file

from captioner import training
from captioner.decoding import caption_images
from captioner.hub import EARLY_FEATURES, WORD_QUERY, load_model, push_folder
from captioner.model import Captioner
from captioner.scenes import generate_scenes
from captioner.training import epochs_that_fit, main, start_from
from captioner.visualize import upsample_attention
from captioner.vocab import Vocabulary

ROOT = Path(__file__).resolve().parent.parent
TINY = ["--encoder", "resnet18", "--encoder-stage", "1", "--grid", "4", "--image-size", "32",
        "--embed-dim", "16", "--attention-dim", "16", "--hidden-dim", "32", "--dropout", "0",
        "--no-pretrained-encoder", "--batch-size", "8", "--max-eval-images", "16",
        "--no-meteor", "--warmup-steps", "1"]


@pytest.fixture(scope="module")
def scenes(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("scenes") / "scenes"
    return generate_scenes(root, num_train=48, num_validation=16, num_test=16, image_size=32,
                           seed=3, progress=False)


def rows(scenes: Path, split: str) -> list[dict]:
    return [json.loads(line) for line in (scenes / split / "metadata.jsonl").open()]


def write_layout(scenes: Path, root: Path, layout: str) -> Path:
    """The scenes dataset re-written in one of the layouts load_caption_dataset accepts."""
    splits = ["train"] if layout in ("kaggle", "unsplit") else ["train", "validation", "test"]
    for split in splits:
        folder = root / ("Images" if layout == "kaggle" else "" if layout == "unsplit" else split)
        folder.mkdir(parents=True, exist_ok=True)
        records = [r for s in (["train", "validation", "test"] if len(splits) == 1 else [split])
                   for r in ((s, x) for x in rows(scenes, s))]
        names = []
        for source_split, record in records:
            name = f"{source_split}-{record['file_name']}"
            shutil.copy(scenes / source_split / record["file_name"], folder / name)
            names.append((name, record["captions"]))
        if layout == "kaggle":
            with open(root / "captions.txt", "w", newline="") as f:
                writer = csv.writer(f)
                writer.writerow(["image", "caption"])
                writer.writerows((n, c) for n, caps in names for c in caps)
        elif layout in ("caption_columns", "unsplit"):
            with open(folder / "metadata.csv", "w", newline="") as f:
                writer = csv.writer(f)
                writer.writerow(["file_name"] + [f"caption_{i}" for i in range(5)])
                writer.writerows([n, *caps] for n, caps in names)
        elif layout == "caption_per_row":
            with open(folder / "metadata.csv", "w", newline="") as f:
                writer = csv.writer(f)
                writer.writerow(["file_name", "caption"])
                writer.writerows((n, c) for n, caps in names for c in caps)
        elif layout == "captions_list":
            with open(folder / "metadata.jsonl", "w") as f:
                f.writelines(json.dumps({"file_name": n, "captions": caps}) + "\n"
                             for n, caps in names)
    return root


def check_output(out: Path, epochs: int) -> dict:
    model = load_model(out)
    assert model.config.grid_size == 4
    for name in ("model.safetensors", "config.json", "README.md", "metrics.json", "log.jsonl",
                 "training_curve.png", "attention_example.png", "checkpoint.safetensors"):
        assert (out / name).is_file(), name
    metrics = json.loads((out / "metrics.json").read_text())
    for beam in ("beam1", "beam3"):
        assert {"bleu1", "bleu4", "rouge_l", "cider"} <= metrics[beam].keys()
        assert 0 <= metrics[beam]["bleu4"] <= 100
    log = [json.loads(line) for line in (out / "log.jsonl").open()]
    assert [row["epoch"] for row in log] == list(range(1, epochs + 1))
    card = (out / "README.md").read_text()
    assert "BLEU-4" in card and "python train_space.py" in card and "pipeline_tag" in card
    assert f"Trained for {epochs} epoch" in card and "CPU cores" in card
    return metrics


@pytest.mark.parametrize("layout", ["captions_list", "caption_columns", "caption_per_row",
                                    "kaggle", "unsplit"])
def test_train_on_each_layout(scenes, tmp_path, layout, monkeypatch):
    monkeypatch.chdir(tmp_path)
    data = write_layout(scenes, tmp_path / "data", layout)
    out = tmp_path / "out"
    main(["--dataset", str(data), "--output-dir", str(out), "--epochs", "1",
          "--cache-dir", str(tmp_path / "cache"), "--min-word-freq", "1",
          "--max-train-images", "40", *TINY])
    check_output(out, epochs=1)


@pytest.fixture(scope="module")
def one_shape_scenes(tmp_path_factory) -> Path:
    """Scenes layout (PNG + metadata.jsonl with objects) where every image holds one small red
    circle somewhere and every caption says so: a tiny model learns the words in a few
    hundred steps, so its captions name the object and the pointing game has trials."""
    from PIL import ImageDraw

    root = tmp_path_factory.mktemp("one-shape") / "scenes"
    rng = np.random.default_rng(11)
    for split, count in (("train", 48), ("validation", 16), ("test", 16)):
        (root / split).mkdir(parents=True)
        with open(root / split / "metadata.jsonl", "w") as meta:
            for i in range(count):
                x, y = (int(v) for v in rng.integers(0, 32 - 12, size=2))
                image = Image.new("RGB", (32, 32), (90, 90, 90))
                ImageDraw.Draw(image).ellipse([x, y, x + 11, y + 11], fill=(220, 30, 30))
                image.save(root / split / f"{i}.png")
                meta.write(json.dumps({"file_name": f"{i}.png",
                                       "captions": ["a small red circle"] * 5,
                                       "objects": [{"shape": "circle", "color": "red",
                                                    "size": "small",
                                                    "box": [x, y, x + 12, y + 12]}]}) + "\n")
    return root


def test_scenes_training_reports_grounding(one_shape_scenes, tmp_path, monkeypatch):
    """Scenes keep their boxes through the pipeline and the pointing game is really played:
    two trials per test image (colour and shape word), and the reported figure is the hit rate
    of the saved model's attention peaks, recomputed here from its captions."""
    monkeypatch.chdir(tmp_path)
    out = tmp_path / "out"
    main(["--dataset", str(one_shape_scenes), "--output-dir", str(out), "--epochs", "2",
          "--cache-dir", str(tmp_path / "cache"), "--fine-tune-encoder", "--lr", "3e-3", *TINY])
    metrics = check_output(out, epochs=2)
    beam1 = metrics["beam1"]
    assert beam1["objects_correct"] == 1.0, beam1["examples"]
    assert beam1["pointing_trials"] == 2 * 16
    log = [json.loads(line) for line in (out / "log.jsonl").open()]
    assert log[-1]["pointing_trials"] == 2 * 16  # validation too, every epoch it is scored
    assert log[1]["train_loss"] < log[0]["train_loss"]  # it learns

    model = load_model(out)
    test = [json.loads(line) for line in (one_shape_scenes / "test" / "metadata.jsonl").open()]
    images = [Image.open(one_shape_scenes / "test" / r["file_name"]).convert("RGB")
              for r in test]
    hits = strict = 0
    for record, cap in zip(test, caption_images(model, images, beam_size=1, max_len=20)):
        assert cap.tokens == ["a", "small", "red", "circle"]
        x0, y0, x1, y1 = record["objects"][0]["box"]
        for word in (2, 3):  # "red", "circle"
            heat = upsample_attention(cap.attention[word], 32, 32, model.encoder.cell_centres())
            y, x = np.unravel_index(np.argmax(heat), heat.shape)
            strict += x0 <= x + 0.5 <= x1 and y0 <= y + 0.5 <= y1
            hits += x0 - 8 <= x + 0.5 <= x1 + 8 and y0 - 8 <= y + 0.5 <= y1 + 8
    assert beam1["pointing"] == round(hits / 32, 4)
    assert beam1["pointing_strict"] == round(strict / 32, 4)


def weights_digest(state: dict) -> str:
    digest = hashlib.sha256()
    for name in sorted(state):
        digest.update(name.encode() + state[name].detach().contiguous().numpy().tobytes())
    return digest.hexdigest()


def test_early_stopping_saves_only_improvements_and_selects_the_best(scenes, tmp_path,
                                                                     monkeypatch):
    """Validation BLEU-4 scripted to 10, 30, 20, 25, 40, 50 with --patience 2: training stops
    after epoch 4 (two epochs without a better score), the model folder was written only at
    epochs 1 and 2 and holds epoch 2's weights, and epoch 2 is the one reported as selected."""
    scores = iter([10.0, 30.0, 20.0, 25.0, 40.0, 50.0])
    real_evaluate, real_save = training.evaluate_split, Captioner.save

    def scripted(model, split, **kwargs):
        if kwargs.get("full", True):  # the test-split evaluation at the end stays real
            return real_evaluate(model, split, **kwargs)
        return {"bleu4": next(scores), "examples": []}

    saved = []

    def recording_save(self, path):
        saved.append(weights_digest(self.state_dict()))
        return real_save(self, path)

    monkeypatch.setattr(training, "evaluate_split", scripted)
    monkeypatch.setattr(Captioner, "save", recording_save)
    monkeypatch.chdir(tmp_path)
    out = tmp_path / "out"
    main(["--dataset", str(scenes), "--output-dir", str(out), "--epochs", "6", "--patience",
          "2", "--cache-dir", str(tmp_path / "cache"), *TINY])
    log = [json.loads(line) for line in (out / "log.jsonl").open()]
    assert [row["epoch"] for row in log] == [1, 2, 3, 4]
    assert [row.get("selected", False) for row in log] == [True, True, False, False]
    assert len(saved) == 2 and saved[0] != saved[1]
    assert weights_digest(load_model(out).state_dict()) == saved[1]
    assert json.loads((out / "metrics.json").read_text())["selected_epoch"] == 2
    assert "Selected epoch: 2 " in (out / "README.md").read_text()


def test_selection_score():
    """BLEU-4 alone for photos; on scenes the mean of BLEU-4 / 100, content and pointing."""
    assert training.selection_score({"bleu4": 40.0}) == pytest.approx(0.4)
    assert training.selection_score({"bleu4": 40.0, "pointing": None}) == pytest.approx(0.4)
    assert training.selection_score({"bleu4": 60.0, "objects_correct": 0.5, "pointing": 0.7}) \
        == pytest.approx(0.6)


def run_training(args: list[str], cwd: Path, output: Path | None = None) -> subprocess.Popen:
    """train_space.py in a subprocess; stdout and stderr go to the file `output` when given."""
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1"}
    sink = open(output, "w") if output else None  # noqa: SIM115 (the child keeps it open)
    try:
        return subprocess.Popen([sys.executable, str(ROOT / "train_space.py"), *args], cwd=cwd,
                                env=env, stdout=sink or subprocess.DEVNULL,
                                stderr=sink or subprocess.PIPE)
    finally:
        if sink:
            sink.close()


def batches_run(output: Path) -> int:
    """The "trained N batches in this run" count printed at the end of a run."""
    (count,) = found_in(output, r"trained (\d+) batches in this run")
    return int(count)


@pytest.mark.slow
def test_resume_after_sigkill_matches_uninterrupted_run(scenes, tmp_path):
    """SIGKILL lands inside epoch 2 (after its start line, before its log row); --resume says
    it resumed after epoch 1, runs only epochs 2-3 (epoch start lines and batch count), and ends
    with exactly the log and test metrics of an uninterrupted run (CPU, one process,
    deterministic). A restart from scratch would redo epoch 1 and fail the counts."""
    common = ["--dataset", str(scenes), "--epochs", "3", "--cache-dir", str(tmp_path / "cache"),
              "--fine-tune-encoder", *TINY]
    straight = tmp_path / "straight"
    proc = run_training([*common, "--output-dir", str(straight)], tmp_path,
                        tmp_path / "straight.txt")
    assert proc.wait(300) == 0, (tmp_path / "straight.txt").read_text()[-2000:]
    per_epoch, rest = divmod(batches_run(tmp_path / "straight.txt"), 3)
    assert per_epoch > 0 and rest == 0

    out = tmp_path / "interrupted"
    killed = tmp_path / "killed.txt"
    proc = run_training([*common, "--output-dir", str(out)], tmp_path, killed)
    wait_for_line(killed, "epoch 2 started", proc)
    proc.kill()
    proc.wait()
    log = [json.loads(line) for line in (out / "log.jsonl").open()]
    assert [r["epoch"] for r in log] == [1], "the kill did not land inside epoch 2"
    assert not found_in(killed, "epoch 3 started|trained")
    assert not list(out.glob("*.tmp"))

    resumed_out = tmp_path / "resumed.txt"
    resumed = run_training([*common, "--output-dir", str(out), "--resume"], tmp_path,
                           resumed_out)
    assert resumed.wait(300) == 0, resumed_out.read_text()[-2000:]
    assert found_in(resumed_out, r"resumed from \S+checkpoint\.safetensors after epoch (\d+)") \
        == ["1"]
    assert found_in(resumed_out, r"epoch (\d+) started") == ["2", "3"]
    assert batches_run(resumed_out) == 2 * per_epoch

    log = [json.loads(line) for line in (out / "log.jsonl").open()]
    reference = [json.loads(line) for line in (straight / "log.jsonl").open()]
    assert [r["epoch"] for r in log] == [1, 2, 3]
    for got, want in zip(log, reference, strict=True):
        for key in ("train_loss", "val_loss", "bleu4", "lr", "selected"):
            assert got.get(key) == want.get(key), (key, got, want)
    assert (json.loads((out / "metrics.json").read_text())["beam3"]
            == json.loads((straight / "metrics.json").read_text())["beam3"])
    commands = [line for line in (out / "README.md").read_text().splitlines()
                if line.startswith("python train_space.py")]  # the card: how it was trained
    assert [c.endswith("--resume") for c in commands] == [False, True], commands


def test_init_from_starts_from_saved_weights_and_refuses_a_mismatch(scenes, tmp_path):
    """--init-from loads the saved model as the run's start (with a zero learning rate the
    result is bit-identical to it, where a fresh start of the same seed is not) and keeps its
    vocabulary, also when this run's captions build a smaller one. A model of another
    architecture, or one lacking words of this run's captions, is refused in one line naming
    the difference."""
    common = ["--dataset", str(scenes), "--epochs", "1", "--cache-dir", str(tmp_path / "cache"),
              *TINY]
    first = tmp_path / "first"
    main([*common, "--output-dir", str(first), "--min-word-freq", "1"])
    for name, extra in (("again", ["--init-from", str(first)]), ("fresh", [])):
        main([*common, "--output-dir", str(tmp_path / name), "--lr", "0",
              "--min-word-freq", "20", *extra])
    digest = {name: weights_digest(load_file(tmp_path / name / "model.safetensors"))
              for name in ("first", "again", "fresh")}
    assert digest["again"] == digest["first"] != digest["fresh"]
    config = {name: json.loads((tmp_path / name / "config.json").read_text())
              for name in ("first", "again", "fresh")}
    assert config["again"]["vocab"] == config["first"]["vocab"]
    # ... and the run reads its captions with those ids: the same weights, the same loss
    val_loss = {name: json.loads((tmp_path / name / "log.jsonl").read_text())["val_loss"]
                for name in ("first", "again")}
    assert val_loss["again"] == val_loss["first"]
    assert len(config["fresh"]["vocab"]) < len(config["first"]["vocab"])  # 20 drops words
    with pytest.raises(SystemExit, match="hidden_dim is 32 there, 48 here"):
        main([*common, "--output-dir", str(tmp_path / "wider"), "--init-from", str(first),
              "--hidden-dim", "48"])
    lacking = set(config["first"]["vocab"]) - set(config["fresh"]["vocab"])
    with pytest.raises(SystemExit, match=r"its vocabulary lacks \d+ word\(s\) of this run's "
                                         r"captions: (\w+)") as refused:
        main([*common, "--output-dir", str(tmp_path / "more"), "--init-from",
              str(tmp_path / "fresh"), "--min-word-freq", "1"])
    assert refused.value.code.split(": ")[-1].split(", ")[0] in lacking


def test_a_run_from_a_word_query_model_says_it_has_one(scenes, tmp_path):
    """--init-from a word-query model without --word-query keeps the query (above), and the
    run's card and saved training configuration say so, as they would with the flag."""
    common = ["--dataset", str(scenes), "--epochs", "1", "--cache-dir", str(tmp_path / "cache"),
              *TINY]
    main([*common, "--output-dir", str(tmp_path / "worded"), "--word-query"])
    main([*common, "--output-dir", str(tmp_path / "after"), "--init-from",
          str(tmp_path / "worded")])
    card = (tmp_path / "after" / "README.md").read_text()
    assert WORD_QUERY in card
    assert json.loads(card.split("```json")[1].split("```")[0])["word_query"] is True
    assert json.loads((tmp_path / "after" / "config.json").read_text())["word_query"] is True


def test_a_run_switched_to_early_features_trains_its_encoder_and_keeps_them(scenes, tmp_path):
    """--init-from a plain model with --early-features and the encoder trained: the run saves
    a model whose cells carry stage 1 (config, card), and the grown weights were trained."""
    common = ["--dataset", str(scenes), "--epochs", "1", "--cache-dir", str(tmp_path / "cache"),
              *TINY]
    common += ["--encoder-stage", "2", "--image-size", "40"]  # stage 1 has no earlier stage
    main([*common, "--output-dir", str(tmp_path / "plain")])
    main([*common, "--output-dir", str(tmp_path / "early"), "--init-from",
          str(tmp_path / "plain"), "--early-features", "--fine-tune-encoder"])
    card = (tmp_path / "early" / "README.md").read_text()
    assert EARLY_FEATURES in card
    assert json.loads(card.split("```json")[1].split("```")[0])["early_features"] is True
    early = load_model(tmp_path / "early")
    assert early.config.early_features
    plain = load_model(tmp_path / "plain")
    classifier = early.classifier.weight
    start = classifier.shape[1] - (early.encoder.out_dim - plain.encoder.out_dim) - 2
    assert classifier[:, start:-2].abs().sum() > 0  # the early columns moved off zero


def test_a_soft_model_starts_a_hard_run_with_its_own_weights(scenes, tmp_path):
    """--init-from a soft model with --attention hard: the hard run starts from the soft
    weights (at lr 0 they come out unchanged; only the hard model's reward baseline is new),
    and the saved model is a hard one."""
    common = ["--dataset", str(scenes), "--epochs", "1", "--cache-dir", str(tmp_path / "cache"),
              *TINY]
    main([*common, "--output-dir", str(tmp_path / "soft")])
    main([*common, "--output-dir", str(tmp_path / "hard"), "--attention", "hard", "--lr", "0",
          "--init-from", str(tmp_path / "soft")])
    soft = load_file(tmp_path / "soft" / "model.safetensors")
    hard = load_file(tmp_path / "hard" / "model.safetensors")
    assert set(hard) - set(soft) == {"reward_baseline"}
    assert weights_digest(soft) == weights_digest({k: hard[k] for k in soft})
    assert json.loads((tmp_path / "hard" / "config.json").read_text())["attention"] == "hard"


def test_epochs_that_fit_judge_by_the_epochs_this_run_timed():
    # resumed after epoch 1: epochs 2 and 3 took 130 s, so 65 s each; 470 s left -> 7 more
    assert epochs_that_fit(600, 130, 2, 3, 50) == 10
    assert epochs_that_fit(600, 130, 2, 3, 8) == 8  # never past --epochs
    assert epochs_that_fit(600, 640, 2, 3, 50) == 3  # over time: this epoch is the last


def test_time_limit_stops_in_time_with_the_learning_rate_decayed(scenes, tmp_path, monkeypatch,
                                                                  capsys):
    """With epochs of 60 s (a fake clock) and 2.5 minutes, a run capped at 6 epochs plans 2
    after its first, stops there, and its schedule ends at zero with them."""
    ticks = iter(range(0, 10_000, 60))
    monkeypatch.setattr(training, "clock", lambda: next(ticks))
    out = tmp_path / "limited"
    main(["--dataset", str(scenes), "--epochs", "6", "--time-limit", "2.5", "--lr", "0.01",
          "--output-dir", str(out), "--cache-dir", str(tmp_path / "cache"), *TINY])
    log = [json.loads(line) for line in (out / "log.jsonl").read_text().splitlines()]
    assert [row["epoch"] for row in log] == [1, 2]
    assert log[0]["lr"] > 0.005 and log[1]["lr"] == 0.0
    assert "--time-limit 2.5: stopping after epoch 2" in capsys.readouterr().out

    # a faster second epoch (60 s, then 10 s) would fit more, but the decay has ended: stop
    ticks = iter([0, 60, 70, 80, 90, 100, 110])
    main(["--dataset", str(scenes), "--epochs", "6", "--time-limit", "2.5", "--lr", "0.01",
          "--output-dir", str(tmp_path / "faster"), "--cache-dir", str(tmp_path / "cache"),
          *TINY])
    log = [json.loads(line) for line in (tmp_path / "faster" / "log.jsonl").read_text()
           .splitlines()]
    assert [row["epoch"] for row in log] == [1, 2] and log[1]["lr"] == 0.0


def test_the_grounding_options_reach_the_objective_with_each_scene_s_truth(scenes, tmp_path,
                                                                          monkeypatch):
    """--ground-attention (with --ground-each-object), --steer-words (with
    --steer-classifier-only) and --cell-words each reach their own term of the objective, and
    every training batch carries its scenes' truth (cells, size/colour/shape words, named, word
    objects)."""
    settings, batches = {}, []

    class Spy(training.Objective):
        def __init__(self, *args, **kwargs):
            settings.update(kwargs)
            super().__init__(*args, **kwargs)

        def forward(self, inputs, captions, *truth):
            batches.append([tuple(t.shape) for t in truth])
            return super().forward(inputs, captions, *truth)

    monkeypatch.setattr(training, "Objective", Spy)
    main(["--dataset", str(scenes), "--output-dir", str(tmp_path / "out"), "--cache-dir",
          str(tmp_path / "cache"), "--epochs", "1", "--ground-attention", "0.25",
          "--ground-each-object", "--steer-words", "0.75", "--steer-classifier-only",
          "--cell-words", "0.5", *TINY])
    assert (settings["ground"], settings["steer"], settings["cell_words"]) == (0.25, 0.75, 0.5)
    assert settings["steer_classifier_only"] is True and settings["ground_each_object"] is True
    cells, attributes, named, words = batches[0]
    assert cells[:2] == attributes[:2] == named and attributes[2] == 3 and len(words) == 2


def test_self_critical_training_rewards_each_pair_against_its_own_scene(scenes, tmp_path,
                                                                       monkeypatch):
    """--self-critical and --self-critical-samples reach the objective with the training
    scenes; each batch's image indices name the scenes of its captions, and the epoch's log
    row has the drawn captions' mean reward."""
    batches = []

    class Spy(training.Objective):
        def forward(self, inputs, captions, *truth):
            if truth:  # a training batch (validation's has none)
                batches.append((self.self_critical, self.samples, captions, truth[-1],
                                self.scenes))
            return super().forward(inputs, captions, *truth)

    monkeypatch.setattr(training, "Objective", Spy)
    out = tmp_path / "out"
    main(["--dataset", str(scenes), "--output-dir", str(out), "--cache-dir",
          str(tmp_path / "cache"), "--epochs", "1", "--self-critical", "0.5",
          "--self-critical-samples", "3", "--max-len", "6", *TINY])
    train = rows(scenes, "train")
    weight, samples, captions, images, known = batches[0]
    assert (weight, samples) == (0.5, 3) and len(known) == len(train)
    vocab = Vocabulary(json.loads((out / "config.json").read_text())["vocab"])
    for caption, image in zip(captions, images.tolist()):  # the caption is one of its scene's
        assert vocab.decode(caption.tolist()) in [vocab.decode(vocab.encode(c))
                                                  for c in train[image]["captions"]]
        assert [o.kind for o in known[image]] == [
            (o["size"], o["color"], o["shape"]) for o in train[image]["objects"]]
    reward = json.loads((out / "log.jsonl").read_text().splitlines()[0])["train_reward"]
    assert -0.5 <= reward <= 2.0


@pytest.mark.parametrize("flag", ["--ground-attention", "--steer-words", "--cell-words",
                                  "--self-critical"])
def test_grounding_needs_objects_and_says_so_before_encoding(scenes, tmp_path, flag):
    """A caption folder without object boxes cannot ground attention, steer words, name cells
    or reward captions: one line, before any image is encoded (no feature cache written)."""
    source = write_layout(scenes, tmp_path / "kaggle", "kaggle")
    with pytest.raises(SystemExit, match="--cell-words and --self-critical need each image's "
                                         "objects"):
        main(["--dataset", str(source), "--output-dir", str(tmp_path / "out"), "--cache-dir",
              str(tmp_path / "cache"), flag, "0.5", *TINY])
    assert not (tmp_path / "cache").exists()


def test_resume_without_checkpoint_is_a_clear_error(tmp_path):
    proc = run_training(["--dataset", "scenes", "--output-dir", str(tmp_path / "none"),
                         "--resume"], tmp_path)
    assert proc.wait(120) != 0
    err = proc.stderr.read().decode()
    assert "no checkpoint" in err and "Traceback" not in err


def test_push_to_hub_uses_token_without_leaking_it(scenes, tmp_path, monkeypatch, capsys):
    """Hub client patched (no network): both calls would authenticate with the HF_TOKEN
    (the Authorization header the client itself builds), exactly the model files are
    uploaded (the upload's own allow/ignore patterns applied to the folder: no checkpoint, no
    log), and the token is never printed nor written to any file."""
    from huggingface_hub.utils import filter_repo_objects

    secret = "hf_SECRETtoken1234567890"
    monkeypatch.setenv("HF_TOKEN", secret)
    monkeypatch.chdir(tmp_path)
    auth, uploaded = {}, {}

    def fake_create_repo(self, repo_id, **kwargs):
        auth["create_repo"] = self._build_hf_headers(token=kwargs.get("token")).get(
            "authorization")
        return mock.Mock(repo_id=repo_id)

    def fake_upload_folder(self, *, folder_path, repo_id, **kwargs):
        auth["upload_folder"] = self._build_hf_headers(token=kwargs.get("token")).get(
            "authorization")
        folder = Path(folder_path)
        present = sorted(str(p.relative_to(folder)) for p in folder.rglob("*") if p.is_file())
        sent = filter_repo_objects(present, allow_patterns=kwargs.get("allow_patterns"),
                                   ignore_patterns=kwargs.get("ignore_patterns"))
        uploaded.update(repo_id=repo_id, present=present,
                        files={name: (folder / name).read_bytes() for name in sent})
        return mock.Mock(repo_url=f"https://huggingface.co/{repo_id}")

    with mock.patch("huggingface_hub.HfApi.create_repo", fake_create_repo), \
            mock.patch("huggingface_hub.HfApi.whoami", lambda self: {"name": "me"}), \
            mock.patch("huggingface_hub.HfApi.upload_folder", fake_upload_folder):
        out = tmp_path / "out"
        main(["--dataset", str(scenes), "--output-dir", str(out), "--epochs", "1",
              "--cache-dir", str(tmp_path / "cache"), "--push-to-hub", "me/tiny", *TINY,
              "--warmup-steps", "1000"])
    assert auth == {"create_repo": f"Bearer {secret}", "upload_folder": f"Bearer {secret}"}
    assert uploaded["repo_id"] == "me/tiny"
    # the folder holds what must stay local, so the filter below had something to keep out
    assert {"checkpoint.safetensors", "log.jsonl"} <= set(uploaded["present"])
    assert sorted(uploaded["files"]) == ["README.md", "attention_example.png", "config.json",
                                         "metrics.json", "model.safetensors",
                                         "training_curve.png"]
    for name, data in uploaded["files"].items():
        assert secret.encode() not in data, name
    captured = capsys.readouterr()
    assert "pushed to https://huggingface.co/me/tiny" in captured.out
    assert secret not in captured.out + captured.err
    assert "--warmup-steps 1000 exceeds this run's" in captured.out
    for path in out.rglob("*"):
        if path.is_file():
            assert secret.encode() not in path.read_bytes(), path
    assert "me/tiny" in (out / "README.md").read_text()


def test_push_without_token_is_a_clear_error(tmp_path, monkeypatch):
    monkeypatch.delenv("HF_TOKEN", raising=False)
    monkeypatch.setenv("HF_HOME", str(tmp_path))  # no stored login either
    with pytest.raises(SystemExit, match="HF_TOKEN"):
        push_folder(tmp_path, "me/tiny")


def test_non_empty_output_dir_needs_overwrite_or_resume(tmp_path):
    out = tmp_path / "out"
    out.mkdir()
    (out / "notes.txt").write_text("an earlier run")
    with pytest.raises(SystemExit, match="--overwrite"):
        main(["--dataset", "scenes", "--output-dir", str(out), "--data-dir", str(tmp_path),
              "--num-scenes", "8", "--num-eval-scenes", "2", "--epochs", "0", *TINY])
    assert (out / "notes.txt").read_text() == "an earlier run"


def test_help_shows_real_defaults_and_presets(capsys):
    with pytest.raises(SystemExit):
        main(["--help"])
    text = " ".join(capsys.readouterr().out.split())
    assert "None" not in text
    assert "--epochs EPOCHS training epochs (default: 20; scenes: 12; scenes-v2: 15)" in text
    assert "--grid GRID attention grid side (features are pooled to grid x grid) (default: 7; " \
           "scenes: 8; scenes-v2: 16)" in text
    assert "relative to the working directory" in text
    from captioner.training_config import HELP, TrainConfig

    assert set(HELP) == set(TrainConfig.__dataclass_fields__)  # a help line for every option


def test_dataset_errors_are_messages(tmp_path, monkeypatch, capsys):
    import datasets

    with pytest.raises(SystemExit):  # refused by argparse, before any work
        main(["--dataset", str(tmp_path / "nowhere"), "--output-dir", str(tmp_path / "o")])
    assert "no such folder" in capsys.readouterr().err
    monkeypatch.setattr(datasets.config, "HF_DATASETS_CACHE", tmp_path / "hf")  # nothing cached
    with pytest.raises(SystemExit) as error:  # the default Hub dataset, offline
        main(["--output-dir", str(tmp_path / "o")])
    assert "jxie/flickr8k" in str(error.value) and "--dataset scenes" in str(error.value)
    assert "generate_scenes" not in str(error.value)


def test_num_eval_scenes_makes_small_validation_and_test_sets(tmp_path):
    from captioner.training import prepare_dataset
    from captioner.training_config import parse_args

    cfg = parse_args(["--dataset", "scenes", "--num-scenes", "12", "--num-eval-scenes", "3",
                      "--image-size", "32", "--grid", "4", "--data-dir", str(tmp_path)])
    sizes = {name: len(split) for name, split in prepare_dataset(cfg).items()}
    assert sizes == {"train": 12, "validation": 3, "test": 3}


@pytest.mark.parametrize("query, projection", [("word_query", "word_proj"),
                                               ("location_query", "location_proj")])
def test_init_from_switches_a_query_on_and_keeps_it(make_model, tmp_path, query, projection):
    """--init-from a plain model with --word-query (or --location-query): the saved weights,
    the new projection at zero. From a model that has it, a run without the flag keeps it and
    its weights (dropping it would silently change the model)."""
    plain = make_model(seed=5)
    plain.save(tmp_path / "plain")
    switched = start_from(str(tmp_path / "plain"), replace(plain.config, **{query: True}))
    assert getattr(switched.config, query)
    assert not getattr(switched.attention, projection).weight.any()
    for name, tensor in plain.state_dict().items():
        assert torch.equal(switched.state_dict()[name], tensor), name
    with torch.no_grad():
        getattr(switched.attention, projection).weight.fill_(0.25)
    switched.save(tmp_path / "switched")
    kept = start_from(str(tmp_path / "switched"), plain.config)
    assert getattr(kept.config, query)
    weight = getattr(kept.attention, projection).weight
    assert torch.equal(weight, torch.full_like(weight, 0.25))
