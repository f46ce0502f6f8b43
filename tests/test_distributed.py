"""`accelerate launch --multi_gpu --num_processes 2 train_space.py --cpu ...`: data-parallel
training on two CPU processes (torchrun + gloo) gives the single-process result, and survives
being killed and resumed. (`accelerate launch --cpu` alone starts one process: multi-CPU runs go
through the same torchrun launcher as GPUs, with the script's --cpu.)"""

import json
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

from captioner.hub import load_model
from tests.test_training import TINY, rows

ROOT = Path(__file__).resolve().parent.parent
ACCELERATE = [sys.executable, "-m", "accelerate.commands.launch", "--multi_gpu",
              "--num_processes", "2", "--num_machines", "1", "--mixed_precision", "no",
              "--dynamo_backend", "no"]
# Two processes average two per-process token means where one process averages all tokens of
# the same 8 captions, and reduce in another order: close, not bit-identical.
VAL_LOSS_TOLERANCE = 0.02  # relative


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def launch(args: list[str], cwd: Path, processes: int) -> subprocess.Popen:
    prefix = ([*ACCELERATE, "--main_process_port", str(free_port())] if processes == 2
              else [sys.executable])
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1"}
    return subprocess.Popen([*prefix, str(ROOT / "train_space.py"), *args, "--cpu"], cwd=cwd,
                            env=env,
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                            start_new_session=True)


def finish(proc: subprocess.Popen, timeout: float = 400) -> None:
    code = proc.wait(timeout)
    assert code == 0, proc.stderr.read().decode()[-3000:]


def log_of(out: Path) -> list[dict]:
    return [json.loads(line) for line in (out / "log.jsonl").open()]


@pytest.fixture(scope="module")
def scenes_dir(tmp_path_factory):
    from captioner.scenes import generate_scenes

    return generate_scenes(tmp_path_factory.mktemp("ddp") / "scenes", num_train=48,
                           num_validation=16, num_test=16, image_size=32, seed=5,
                           progress=False)


def args_for(scenes_dir: Path, tmp: Path, out: Path, batch: int, epochs: int = 2) -> list[str]:
    tiny = list(TINY)
    tiny[tiny.index("--batch-size") + 1] = str(batch)
    return ["--dataset", str(scenes_dir), "--epochs", str(epochs), "--cache-dir",
            str(tmp / "cache"), "--fine-tune-encoder", "--output-dir", str(out), *tiny]


def test_two_processes_match_one(scenes_dir, tmp_path):
    assert len(rows(scenes_dir, "train")) == 48
    single, double = tmp_path / "single", tmp_path / "double"
    finish(launch(args_for(scenes_dir, tmp_path, single, batch=8), tmp_path, 1))
    finish(launch(args_for(scenes_dir, tmp_path, double, batch=4), tmp_path, 2))
    load_model(double)  # a normal, loadable model folder
    for one, two in zip(log_of(single), log_of(double), strict=True):
        assert abs(one["val_loss"] - two["val_loss"]) <= VAL_LOSS_TOLERANCE * one["val_loss"], \
            (one, two)
    assert (double / "metrics.json").is_file() and (double / "README.md").is_file()


def test_two_processes_resume_after_kill(scenes_dir, tmp_path):
    out = tmp_path / "out"
    args = args_for(scenes_dir, tmp_path, out, batch=4, epochs=3)
    proc = launch(args, tmp_path, 2)
    deadline = time.monotonic() + 300
    while not (out / "log.jsonl").is_file() and time.monotonic() < deadline:
        time.sleep(0.05)
    os.killpg(proc.pid, signal.SIGKILL)  # the launcher and both workers, as a crash would
    proc.wait()
    assert len(log_of(out)) < 3
    finish(launch([*args, "--resume"], tmp_path, 2))
    assert [row["epoch"] for row in log_of(out)] == [1, 2, 3]
    load_model(out)
