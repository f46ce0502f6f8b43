"""`accelerate launch --multi_gpu --num_processes 2 train_space.py --cpu ...`: data-parallel
training on two CPU processes (torchrun + gloo) gives the single-process result, and survives
being killed and resumed. (`accelerate launch --cpu` alone starts one process: multi-CPU runs go
through the same torchrun launcher as GPUs, with the script's --cpu.)"""

import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import psutil
import pytest
from conftest import found_in, free_port, wait_for_line

from captioner.hub import load_model
from tests.test_training import TINY, batches_run, rows

ROOT = Path(__file__).resolve().parent.parent
ACCELERATE = [sys.executable, "-m", "accelerate.commands.launch", "--multi_gpu",
              "--num_processes", "2", "--num_machines", "1", "--mixed_precision", "no",
              "--dynamo_backend", "no"]
# Two processes average two per-process token means where one process averages all tokens of
# the same 8 captions, and reduce in another order: close, not bit-identical.
VAL_LOSS_TOLERANCE = 0.02  # relative


def launch(args: list[str], cwd: Path, processes: int, output: Path) -> subprocess.Popen:
    """train_space.py under accelerate (2 processes) or plain python (1); stdout and stderr to
    the file `output`. Its own session, so a kill of the group takes every worker."""
    prefix = ([*ACCELERATE, "--main_process_port", str(free_port())] if processes == 2
              else [sys.executable])
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1"}
    with open(output, "w") as sink:
        return subprocess.Popen([*prefix, str(ROOT / "train_space.py"), *args, "--cpu"], cwd=cwd,
                                env=env, stdout=sink, stderr=sink, start_new_session=True)


def kill_tree(proc: subprocess.Popen) -> None:
    """SIGKILL the launcher and every worker at once, as a crash would. (torchrun starts each
    worker in its own session, so killing the launcher's process group would leave them
    running, and they would finish the epoch behind the test's back.)"""
    launcher = psutil.Process(proc.pid)
    everyone = [launcher, *launcher.children(recursive=True)]
    assert len(everyone) >= 3, everyone  # launcher + two workers
    for process in everyone:
        process.send_signal(signal.SIGKILL)
    psutil.wait_procs(everyone, timeout=60)
    proc.wait()


def finish(proc: subprocess.Popen, output: Path, timeout: float = 400) -> None:
    code = proc.wait(timeout)
    assert code == 0, output.read_text()[-3000:]


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


@pytest.fixture(scope="module")
def two_process_run(scenes_dir, tmp_path_factory) -> tuple[Path, Path]:
    """An uninterrupted two-process run: (its output folder, its console output)."""
    tmp = tmp_path_factory.mktemp("double")
    out, output = tmp / "double", tmp / "double.txt"
    finish(launch(args_for(scenes_dir, tmp, out, batch=4), tmp, 2, output), output)
    return out, output


@pytest.mark.slow
def test_two_processes_match_one(scenes_dir, two_process_run, tmp_path):
    """Two data-parallel processes (batch 4 each) give the validation losses of one process
    with batch 8, and leave a normal, loadable model folder."""
    assert len(rows(scenes_dir, "train")) == 48
    single = tmp_path / "single"
    finish(launch(args_for(scenes_dir, tmp_path, single, batch=8), tmp_path, 1,
                  tmp_path / "single.txt"), tmp_path / "single.txt")
    double, _ = two_process_run
    load_model(double)
    for one, two in zip(log_of(single), log_of(double), strict=True):
        assert abs(one["val_loss"] - two["val_loss"]) <= VAL_LOSS_TOLERANCE * one["val_loss"], \
            (one, two)
    assert (double / "metrics.json").is_file() and (double / "README.md").is_file()


@pytest.mark.slow
def test_two_processes_resume_after_kill(scenes_dir, two_process_run, tmp_path):
    """Launcher and both workers killed inside epoch 2; --resume under two processes resumes
    after epoch 1, runs only epoch 2 (half the batches of the whole run) and ends with the log
    and test metrics of the uninterrupted two-process run."""
    out, killed = tmp_path / "out", tmp_path / "killed.txt"
    args = args_for(scenes_dir, tmp_path, out, batch=4)
    proc = launch(args, tmp_path, 2, killed)
    wait_for_line(killed, "epoch 2 started", proc)
    kill_tree(proc)
    assert [row["epoch"] for row in log_of(out)] == [1], "the kill did not land inside epoch 2"
    resumed = tmp_path / "resumed.txt"
    finish(launch([*args, "--resume"], tmp_path, 2, resumed), resumed)
    assert found_in(resumed, r"resumed from \S+ after epoch (\d+)") == ["1"]
    assert found_in(resumed, r"epoch (\d+) started") == ["2"]
    reference, reference_output = two_process_run
    whole = batches_run(reference_output)
    assert whole > 0 and batches_run(resumed) * 2 == whole
    for got, want in zip(log_of(out), log_of(reference), strict=True):
        for key in ("epoch", "train_loss", "val_loss", "bleu4", "lr"):
            assert got[key] == want[key], (key, got, want)
    assert (json.loads((out / "metrics.json").read_text())["beam3"]
            == json.loads((reference / "metrics.json").read_text())["beam3"])
