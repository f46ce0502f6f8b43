"""A new user's everyday mistakes, through the real commands: each ends in a short message
(what is wrong, what to do), no traceback, a non-zero exit, and nothing long done first."""

import json
import os
import re
import shlex
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from tests.conftest import free_port, wait_for_line

ROOT = Path(__file__).resolve().parent.parent
FAKE_TOKEN = "hf_notARealToken000000000000000"  # never sent anywhere: offline or loopback


def command_env(**changes) -> dict:
    """The test environment, offline, with no Hugging Face login unless a test gives one."""
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "OMP_NUM_THREADS": "1", "MPLBACKEND": "Agg",
           "PYTHONPATH": str(ROOT)}
    env.pop("HF_TOKEN", None)
    env.update(changes)
    return {k: v for k, v in env.items() if v is not None}


def run(args, cwd, timeout=120, **env) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, *map(str, args)], cwd=cwd, env=command_env(**env),
                          capture_output=True, text=True, timeout=timeout)


def refused(result, *words) -> str:
    """The command failed with a short message holding `words`, and no traceback."""
    err = result.stderr.strip()
    assert result.returncode != 0, (result.stdout, err)
    assert "Traceback" not in err, err
    assert 0 < len(err.splitlines()) <= 6, err
    for word in words:
        assert word in err, (word, err)
    return err


def unreachable_hub() -> dict:
    """A Hub endpoint on a loopback port nobody listens on: the network is 'down'."""
    return dict(HF_HUB_OFFLINE="0", HF_ENDPOINT=f"http://127.0.0.1:{free_port()}",
                HF_TOKEN=FAKE_TOKEN)


# --- train_space.py: refused before any data is read or folder made ---

TRAIN = [ROOT / "train_space.py", "--output-dir", "out", "--data-dir", "data",
         "--cache-dir", "cache"]


# Each refusal runs train_space.py's `main` in a fresh directory. Those that need no
# environment of their own share one Python process (starting one costs ~10 s of imports);
# those that set Hub variables, which huggingface_hub reads at import, get a process each.
REFUSALS = [
    (["--dataset", "./no-such-folder"], ["--dataset ./no-such-folder", "no such folder"]),
    (["--image-size", "100"], ["--image-size 100 is too small", "at least 193 px"]),
    (["--encoder", "resnet5"], ["--encoder must be one of", "resnet5"]),
    (["--dataset", "scenes", "--batch-size", "0"], ["--batch-size", "at least 1"]),
    (["--dataset", "scenes", "--seed", "-3"], ["--seed", "at least 0"]),
    (["--dataset", "scenes", "--push-to-hub", "my model"], ["not a Hub repo id"]),
    (["--dataset", "scenes-v2", "--steer-words", "2"], ["--steer-words", "from 0 to 1"]),
    (["--dataset", "scenes-v2", "--steer-classifier-only"],
     ["--steer-classifier-only", "give --steer-words too"]),
    (["--dataset", "scenes-v2", "--ground-each-object"],
     ["--ground-each-object", "give --ground-attention too"]),
    (["--dataset", "scenes-v2", "--time-limit", "-1"], ["--time-limit", "at least 0"]),
    (["--dataset", "scenes-v2", "--encoder-stage", "1", "--early-features"],
     ["--early-features needs encoder-stage 2 or more"]),
    (["--dataset", "scenes-v2", "--self-critical", "1", "--self-critical-samples", "1"],
     ["--self-critical-samples must be at least 2"]),
    (["--dataset", "scenes-v2", "--init-from", "nowhere"],
     ["--init-from nowhere", "no saved model"]),
    (["--dataset", "scenes-v2", "--init-from", "nowhere", "--resume"],
     ["--init-from starts a new run", "--resume"]),
]

# `main` of train_space.py for each (folder, args), as `python train_space.py args` run in that
# folder would: a SystemExit's text goes to stderr with exit code 1, anything else is a
# traceback. Prints one JSON list of {returncode, stdout, stderr}.
REFUSE_IN_ONE_PROCESS = """
import contextlib, io, json, os, sys, traceback
from captioner.training import main
sys.argv[0] = "train_space.py"
results = []
for folder, args in json.loads(sys.argv[1]):
    os.chdir(folder)
    out, err, code = io.StringIO(), io.StringIO(), 0
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        try:
            main(args)
        except SystemExit as e:
            if isinstance(e.code, str):
                print(e.code, file=sys.stderr)
            code = 1 if isinstance(e.code, str) else (e.code or 0)
        except BaseException:
            traceback.print_exc()
            code = 1
    results.append({"returncode": code, "stdout": out.getvalue(), "stderr": err.getvalue()})
print(json.dumps(results))
"""


@pytest.fixture(scope="module")
def refusals(tmp_path_factory):
    """Each REFUSALS case's result and folder, from one process."""
    folders = [tmp_path_factory.mktemp("refusal") for _ in REFUSALS]
    cases = [[str(f), [*map(str, TRAIN[1:]), *args]] for f, (args, _) in zip(folders, REFUSALS)]
    hf_home = tmp_path_factory.mktemp("hf")
    result = run(["-c", REFUSE_IN_ONE_PROCESS, json.dumps(cases)], ROOT, timeout=300,
                 HF_HOME=str(hf_home))
    assert result.returncode == 0, result.stderr
    return [(subprocess.CompletedProcess([], r["returncode"], r["stdout"], r["stderr"]), f)
            for r, f in zip(json.loads(result.stdout.splitlines()[-1]), folders)]


def refused_before_any_work(result, folder, words) -> None:
    err = refused(result, *words)
    assert FAKE_TOKEN not in err + result.stdout
    assert list(folder.iterdir()) == [], "work began before the refusal"
    assert not re.search(r"epoch \d+ started", result.stdout + err)


@pytest.mark.parametrize("case", range(len(REFUSALS)),
                         ids=[" ".join(args) for args, _ in REFUSALS])
def test_train_space_refuses_before_any_work(refusals, case):
    result, folder = refusals[case]
    refused_before_any_work(result, folder, REFUSALS[case][1])


@pytest.mark.parametrize("env, words", [
    ({"HF_HOME": "hf"}, ["HF_TOKEN"]),
    ({"HF_TOKEN": FAKE_TOKEN}, ["cannot reach the Hugging Face Hub", "offline mode"]),
    ("unreachable", ["cannot reach the Hugging Face Hub", "refused"]),
])
def test_train_space_refuses_a_push_target_before_any_work(tmp_path, env, words):
    env = unreachable_hub() if env == "unreachable" else env
    args = ["--dataset", "scenes", "--push-to-hub", "me/tiny"]
    result = run([*TRAIN, *args], tmp_path, **{"HF_HOME": str(tmp_path / "hf"), **env})
    refused_before_any_work(result, tmp_path, words)


# Ctrl-C inside tqdm's constructor (a bar half built), then a second object whose __del__ fails
# for a reason of its own: the first report is noise under our message, the second is not ours
# to hide
CTRL_C_INSIDE_A_BAR = """
import sys
from tqdm.auto import tqdm
from captioner import training

class HalfBuilt(tqdm):
    def __init__(self):
        self.disable = False  # as tqdm's own __init__ does, before it sets `pos`
        raise KeyboardInterrupt

class Broken:
    def __del__(self):
        raise ValueError("a real problem")

def train(cfg, command):
    broken = Broken()  # freed with the traceback, as the half-built bar is
    HalfBuilt()

training.train = train
training.main(sys.argv[1:])
"""


def test_ctrl_c_inside_a_progress_bar_leaves_one_line_and_no_traceback(tmp_path):
    result = run(["-c", CTRL_C_INSIDE_A_BAR, "--dataset", "scenes", "--output-dir", "run"],
                 tmp_path)
    assert result.returncode == 130, result.stderr
    lines = result.stderr.splitlines()
    assert lines[0].startswith("interrupted before the first epoch ended"), lines
    rest = "\n".join(lines[1:])
    assert "tqdm" not in rest and "has no attribute" not in rest, rest
    assert "ValueError: a real problem" in rest, "a report that is not tqdm's was swallowed"


@pytest.mark.slow
def test_ctrl_c_during_training_says_how_to_resume_and_that_command_works(tmp_path):
    # four epochs of 96 scenes: the interrupt at epoch 2 lands long before the run could end
    args = ["--dataset", "scenes", "--num-scenes", "96", "--num-eval-scenes", "8",
            "--epochs", "4", "--output-dir", "run", "--data-dir", "data", "--cache-dir",
            "cache", "--no-meteor", "--encoder-stage", "1", "--grid", "4", "--image-size",
            "32", "--embed-dim", "16", "--attention-dim", "16", "--hidden-dim", "32",
            "--batch-size", "16", "--max-eval-images", "8", "--fine-tune-encoder"]
    output = tmp_path / "output.txt"
    with open(output, "w") as out:
        # SIGINT as a terminal gives it, even when the suite itself runs in the background
        # (a background job starts with SIGINT ignored, and Python keeps ignoring it)
        proc = subprocess.Popen([sys.executable, ROOT / "train_space.py", *args], cwd=tmp_path,
                                env=command_env(PYTHONUNBUFFERED="1"), stdout=out,
                                stderr=subprocess.STDOUT,
                                preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))
        wait_for_line(output, "epoch 2 started", proc)
        proc.send_signal(signal.SIGINT)
        assert proc.wait(120) == 130
    text = output.read_text()
    assert "Traceback" not in text and "KeyboardInterrupt" not in text
    (line,) = [t for t in text.splitlines() if t.startswith("interrupted")]
    checkpoint = Path("run") / "checkpoint.safetensors"
    assert f"the last checkpoint (epoch 1) is {checkpoint}" in line
    command = line.split("continue with: ")[1]
    assert shlex.split(command) == ["python", "train_space.py", *args, "--resume"]
    resumed = run([ROOT / "train_space.py", *shlex.split(command)[2:]], tmp_path, timeout=300)
    assert resumed.returncode == 0, resumed.stderr[-2000:]
    assert "resumed from run/checkpoint.safetensors after epoch 1" in resumed.stdout
    assert re.findall(r"epoch (\d+) started", resumed.stdout) == ["2", "3", "4"]


# --- pushing to and deploying on the Hub ---

def test_push_an_existing_run_checks_folder_token_and_network(tmp_path, saved_model_dir):
    cli = ["-m", "captioner", "push"]
    refused(run([*cli, tmp_path, "me/tiny"], ROOT, HF_TOKEN=FAKE_TOKEN), "config.json")
    refused(run([*cli, saved_model_dir, "me/x/y"], ROOT, HF_TOKEN=FAKE_TOKEN),
            "not a Hub repo id")
    refused(run([*cli, saved_model_dir, "me/tiny"], ROOT, HF_HOME=str(tmp_path)), "HF_TOKEN")
    err = refused(run([*cli, saved_model_dir, "me/tiny"], ROOT, **unreachable_hub()),
                  "cannot reach the Hugging Face Hub")
    assert len(err.splitlines()) == 1 and FAKE_TOKEN not in err


def test_deploy_space_without_network_is_one_line(saved_model_dir):
    result = run(["-m", "captioner", "deploy-space", "me/space", "--weights", saved_model_dir],
                 ROOT, **unreachable_hub())
    err = refused(result, "cannot reach the Hugging Face Hub")
    assert len(err.splitlines()) == 1 and FAKE_TOKEN not in err


# --- python -m captioner caption / evaluate ---

BUNDLED = ROOT / "weights"
SCENE, PHOTO = ROOT / "examples/scene-6-old-world.png", ROOT / "examples/photo-grace-hopper.jpg"
COUNTING = ROOT / "examples/scene-1-counting.png"


def caption(*args, cwd=ROOT, **env) -> subprocess.CompletedProcess:
    return run(["-m", "captioner", "caption", *args], cwd, **env)


@pytest.fixture
def image(tmp_path) -> Path:
    from PIL import Image

    path = tmp_path / "img.png"
    Image.new("RGB", (40, 30), (200, 40, 40)).save(path)
    return path


@pytest.mark.parametrize("args, words", [
    (["--attention-grid", "g.xyz"], ["--attention-grid g.xyz", ".png or .jpg", ".svg"]),
    (["--output", "c.txt"], ["--output c.txt", ".jsonl or .csv"]),
    (["--max-len", "5", "--look-here", "6:0.5,0.5"], ["--look-here word 6 is past --max-len 5"]),
    (["--max-len", "2", "--prefix", "a red square"], ["--prefix has 3 words", "--max-len 2"]),
    (["--look-here", "2:0.5,1.2"], ["'2:0.5,1.2'", "fractions in [0, 1]"]),
    (["--top-k", "-2"], ["--top-k", "at least 0"]),
    (["--batch-size", "0"], ["--batch-size", "at least 1"]),
])
def test_caption_refuses_bad_arguments_before_captioning(saved_model_dir, image, tmp_path,
                                                          args, words):
    result = caption(image, "--weights", saved_model_dir, *args, cwd=tmp_path)
    refused(result, *words)
    assert result.stdout == ""  # nothing captioned
    assert sorted(p.name for p in tmp_path.iterdir()) == ["img.png", "model"]  # nothing written


@pytest.mark.parametrize("args, words", [
    (["--num-scenes", "0"], ["--num-scenes", "at least 1"]),
    (["--seed", "-1"], ["--seed", "at least 0"]),
    (["--beam-size", "2", "0"], ["--beam-size", "at least 1"]),
    (["--output", "metrics.txt"], ["--output metrics.txt", ".json"]),
])
def test_evaluate_refuses_bad_arguments_before_generating_scenes(saved_model_dir, tmp_path,
                                                                 args, words):
    result = run(["-m", "captioner", "evaluate", "--weights", saved_model_dir, "--data-dir",
                  "scenes", *args], tmp_path)
    refused(result, *words)
    assert not (tmp_path / "scenes").exists() and result.stdout == ""


def test_outputs_into_missing_folders_are_created(saved_model_dir, image, tmp_path):
    result = caption(image, "--weights", saved_model_dir, "--max-len", "3", "--output",
                     "new/deeper/captions.csv", "--attention-grid", "grids/one.png",
                     cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    assert (tmp_path / "grids/one.png").stat().st_size > 1000
    rows = (tmp_path / "new/deeper/captions.csv").read_text().splitlines()
    assert rows[0] == "image,caption,score,truncated,warning" and len(rows) == 2


@pytest.mark.slow
def test_evaluate_output_into_a_missing_folder(saved_model_dir, tmp_path):
    result = run(["-m", "captioner", "evaluate", "--weights", saved_model_dir, "--data-dir",
                  "scenes", "--num-scenes", "2", "--beam-size", "1", "--max-len", "3",
                  "--output", "results/today/metrics.json"], tmp_path, timeout=300)
    assert result.returncode == 0, result.stderr
    metrics = json.loads((tmp_path / "results/today/metrics.json").read_text())
    assert metrics["images"] == 2 and "bleu4" in metrics["beam1"]


def test_weights_may_name_the_model_file_but_not_another_file(saved_model_dir, image):
    by_file = caption(image, "--weights", saved_model_dir / "model.safetensors", "--max-len", "4")
    by_folder = caption(image, "--weights", saved_model_dir, "--max-len", "4")
    assert by_file.returncode == 0, by_file.stderr
    assert by_file.stdout == by_folder.stdout and by_file.stdout.startswith(f"{image}: ")
    (saved_model_dir / "notes.txt").write_text("not a model")
    refused(caption(image, "--weights", saved_model_dir / "notes.txt"),
            "notes.txt is a file: pass the folder that holds model.safetensors")


def test_installed_package_without_weights_says_what_to_pass(tmp_path, image):
    """The package as `pip install .` leaves it: no weights/ beside it, no train_space.py."""
    import shutil

    site = tmp_path / "site-packages"
    shutil.copytree(ROOT / "captioner", site / "captioner",
                    ignore=shutil.ignore_patterns("__pycache__"))
    result = run(["-m", "captioner", "caption", image], tmp_path, PYTHONPATH=str(site))
    err = refused(result, "--weights", "Hub repo id", "installed package ships no weights",
                  "weights/ folder of the project's repository")
    assert "train_space.py" not in err and result.stdout == ""


def test_caption_tells_photos_cut_captions_and_alternatives_in_every_format(tmp_path):
    if not (BUNDLED / "model.safetensors").is_file():
        pytest.skip("needs the bundled weights/")
    # text: the warning on stderr (the photo only), the cut marked, --top-k shown per word
    text = caption(SCENE, PHOTO, "--max-len", "3", "--top-k", "2", "--beam-size", "1")
    assert text.returncode == 0, text.stderr
    assert text.stderr.count("warning:") == 1
    assert f"warning: {PHOTO}: This model was trained only on generated scenes" in text.stderr
    lines = text.stdout.splitlines()
    assert lines[0].startswith(f"{SCENE}: ") and lines[0].endswith(" [cut at --max-len 3]")
    assert len(lines) == 8 and lines[4].startswith(f"{PHOTO}: ")
    assert all(re.fullmatch(r"  \d\. \S+ \(gate [01]\.\d\d\): \S+ [01]\.\d\d, \S+ [01]\.\d\d",
                            line) for line in lines[1:4] + lines[5:8]), lines
    # JSON and CSV: a warning field (null for the scene) and the cut flag
    # (13 steps: the old-world scene's 12 words end, the counting scene's longer caption is cut)
    out = tmp_path / "c.csv"
    result = caption(SCENE, PHOTO, COUNTING, "--json", "--beam-size", "1", "--max-len", "13",
                     "--output", out)
    records = [json.loads(line) for line in result.stdout.splitlines()]
    assert records[0]["warning"] is None and "not meaningful" in records[1]["warning"]
    assert records[2]["warning"] is None
    assert [records[0]["truncated"], records[2]["truncated"]] == [False, True]
    assert [len(r["tokens"]) for r in (records[0], records[2])] == [12, 13]
    import csv

    rows = list(csv.DictReader(out.open()))
    assert rows[0]["warning"] == "" and rows[1]["warning"] == records[1]["warning"]
    assert [r["truncated"] for r in rows] == [str(r["truncated"]) for r in records]


def test_look_here_past_the_end_of_the_caption_is_refused():
    if not (BUNDLED / "model.safetensors").is_file():
        pytest.skip("needs the bundled weights/")
    result = caption(SCENE, "--look-here", "19:0.5,0.5", "--beam-size", "1")
    refused(result, f"{SCENE}: --look-here word 19: the caption ended after",
            "the point was not used")
    assert result.stdout == ""


# --- the web app: its command line, its API and its server log ---

def test_app_on_a_busy_port_says_server_port_before_loading_anything(tmp_path):
    import socket

    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        # the weights do not exist either: the port is refused before any model is read
        result = run([ROOT / "app.py", "--server-port", port, "--weights", tmp_path / "none"],
                     tmp_path, timeout=180)
    err = refused(result, f"port {port} is already in use", "--server-port")
    assert len(err.splitlines()) == 1 and "launch()" not in err and "weights" not in err


def test_app_hard_weights_naming_a_soft_model_is_one_line(tmp_path, saved_model_dir):
    """--hard-weights must name a hard-attention model: two soft ones cannot be switched."""
    result = run([ROOT / "app.py", "--weights", saved_model_dir, "--hard-weights",
                  saved_model_dir, "--server-port", free_port()], tmp_path, timeout=180)
    err = refused(result, "--hard-weights", "both models have soft attention")
    assert len(err.splitlines()) == 1, err


@pytest.mark.slow
def test_visitor_mistakes_are_clear_messages_and_one_log_line(tmp_path, saved_model_dir):
    """The real app as a server; an API client sends what a careless script would."""
    import gradio_client
    from PIL import Image

    picture = tmp_path / "upload.png"
    Image.new("RGB", (48, 40), (30, 90, 200)).save(picture)
    port = free_port()
    log = tmp_path / "server.log"
    with open(log, "w") as out:
        server = subprocess.Popen(
            [sys.executable, ROOT / "app.py", "--weights", saved_model_dir, "--server-port",
             str(port)], cwd=tmp_path, env=command_env(PYTHONUNBUFFERED="1"), stdout=out,
            stderr=subprocess.STDOUT)
    try:
        wait_for_line(log, "Running on", server, timeout=300)
        client = gradio_client.Client(f"http://127.0.0.1:{port}/", verbose=False)
        upload = gradio_client.handle_file(str(picture))

        def message(*args, api_name):
            with pytest.raises(gradio_client.exceptions.AppError) as error:
                client.predict(upload, *args, api_name=api_name)
            return str(error.value)

        look = "/look_here"
        assert "look-here word must be a whole number from 1 to 8, got 2.5" in message(
            2.5, 0.5, 0.5, 1, 8, api_name=look)  # not silently word 2
        assert "look-here word must be a whole number from 1 to 8, got None" in message(
            None, 0.5, 0.5, 1, 8, api_name=look)
        assert "look-here x must be inside the image" in message(1, "left", 0.5, 1, 8,
                                                                  api_name=look)
        assert "look-here y must be inside the image" in message(1, 0.5, None, 1, 8,
                                                                  api_name=look)
        assert "beam size must be a whole number from 1 to 5, got 2.5" in message(
            "a", 2.5, 8, api_name="/caption_from")
        assert "<end> is one of the model's special tokens" in message(
            "a <end>", 1, 8, api_name="/caption_from")
        long = message("x" * 5000, 1, 8, api_name="/caption_from")
        assert "not in the model's vocabulary" in long and len(long) < 300
        # still serving, and every refusal above is one line in the log, with no traceback
        assert client.predict(upload, 1, 4, api_name="/caption")["tokens"]
    finally:
        server.terminate()
        server.wait(60)
    text = log.read_text()
    assert "Traceback" not in text
    refusals = [line for line in text.splitlines() if "refused a request" in line]
    assert len(refusals) == 7 and all(len(line) < 300 for line in refusals), refusals


# --- what the documentation promises ---

def test_readme_stays_short_and_the_api_keys_are_all_documented(tiny_model):
    """README.md is read by newcomers (and is the Space card): at most 300 lines. The app's
    API description and docs/api.md name every key the endpoints return, no more, no less."""
    from PIL import Image

    from captioner.demo import Demo, ModelInfo, api_payload

    readme = (ROOT / "README.md").read_text()
    assert len(readme.splitlines()) <= 300
    assert "<!-- test-command -->" in readme and "<!-- /test-command -->" in readme
    demo = Demo(tiny_model, ModelInfo.read("tiny", ROOT, tiny_model))
    image = Image.new("RGB", (32, 32), (10, 200, 30))
    keys = set(api_payload(demo.caption(image, 2, 5), demo.cell_centres))
    documented = set(re.findall(r"^\| `(\w+)`(?:, `(\w+)`)? \|", (ROOT / "docs/api.md")
                                .read_text(), re.M))
    assert {k for pair in documented for k in pair if k} == keys
    import app

    listed = app.API_RESULT.split("Returns JSON: ")[1].rstrip(".")
    named = {name.strip() for name in re.sub(r"\([^)]*\)", "", listed).split(",")}
    assert named == keys, named ^ keys
