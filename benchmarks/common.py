"""Helpers shared by the benchmark scripts: machine description, timing, tables, JSON output,
and the fresh test scenes of a scenes model."""

from __future__ import annotations

import argparse
import json
import os
import platform
import socket
import statistics
import subprocess
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
RESULTS = HERE / "results"


def cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def other_load() -> list[str]:
    """Other CPU-heavy processes (e.g. a training run) that would skew the timings."""
    try:
        out = subprocess.run(["pgrep", "-af", "train_space.py|accelerate launch"],
                             capture_output=True, text=True, timeout=5).stdout
    except (OSError, subprocess.SubprocessError):
        return []
    return [without_machine_paths(line) for line in out.splitlines()
            if str(os.getpid()) != line.split()[0]]


def without_machine_paths(command: str) -> str:
    """A command line with each absolute path cut to its file name (results are committed)."""
    return " ".join(Path(word).name if word.startswith("/") else word
                    for word in command.split())


def repo_path(path: str | Path) -> str:
    """A model folder as results record it: repository-relative, else its name (results are
    committed, so never a machine path)."""
    resolved = Path(path).resolve()
    return str(resolved.relative_to(ROOT) if resolved.is_relative_to(ROOT) else resolved.name)


def machine() -> dict:
    import numpy as np
    import torch

    return {
        "cpu": cpu_model(),
        "logical_cores": os.cpu_count(),
        "usable_cores": len(os.sched_getaffinity(0)),
        "torch_threads": torch.get_num_threads(),
        "torch_interop_threads": torch.get_num_interop_threads(),
        "torch": torch.__version__,
        "numpy": np.__version__,
        "python": platform.python_version(),
        "load_average_1m": round(os.getloadavg()[0], 2),
        "other_heavy_processes": other_load(),
        "utc": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
    }


def _cpu_seconds() -> tuple[float, float]:
    """(all processes' busy CPU seconds from /proc/stat, this process's and its children's)."""
    ticks = os.sysconf("SC_CLK_TCK")
    fields = Path("/proc/stat").read_text().splitlines()[0].split()[1:]
    user, nice, system, idle, iowait, irq, softirq, steal = (int(x) for x in fields[:8])
    busy = (user + nice + system + irq + softirq) / ticks
    t = os.times()
    return busy, t.user + t.system + t.children_user + t.children_system


class Interference:
    """How many cores *other* processes kept busy while a benchmark ran (0 = a quiet machine).

    Started when this module is imported; `report()` at the end of a run."""

    def __init__(self):
        self.start_wall = time.time()
        self.start_busy, self.start_own = _cpu_seconds()

    def report(self) -> dict:
        wall = time.time() - self.start_wall
        busy, own = _cpu_seconds()
        other = max(0.0, (busy - self.start_busy) - (own - self.start_own))
        return {"wall_s": round(wall, 1), "own_cpu_s": round(own - self.start_own, 1),
                "other_processes_cpu_s": round(other, 1),
                "other_processes_mean_cores": round(other / wall, 2) if wall else 0.0}


INTERFERENCE = Interference()


def machine_line(m: dict) -> str:
    loaded = (f"  LOADED: {len(m['other_heavy_processes'])} other heavy process(es) running"
              if m["other_heavy_processes"] else "")
    return (f"{m['cpu']} | {m['usable_cores']} cores | torch {m['torch']} "
            f"({m['torch_threads']} threads) | numpy {m['numpy']} | "
            f"load avg {m['load_average_1m']}{loaded}")


def clock(fn: Callable[[], object]) -> float:
    start = time.perf_counter()
    fn()
    return time.perf_counter() - start


def interleaved(cases: dict[str, Callable[[], object]], repeats: int,
                warmup: int = 1) -> dict[str, list[float]]:
    """Time every case `repeats` times, round-robin (A B C A B C ...), so that a change in
    machine load hits all of them alike; returns the seconds of each run per case."""
    for _ in range(warmup):
        for fn in cases.values():
            fn()
    times: dict[str, list[float]] = {name: [] for name in cases}
    for _ in range(repeats):
        for name, fn in cases.items():
            times[name].append(clock(fn))
    return times


def median(xs) -> float:
    return statistics.median(xs)


def summary(xs: list[float]) -> dict:
    return {"median_s": median(xs), "min_s": min(xs), "max_s": max(xs), "runs": len(xs)}


def percentiles(xs: list[float]) -> dict:
    """p50 and p95 (linear interpolation, as numpy.percentile) of a handful of samples."""
    import numpy as np

    return {"p50": float(np.percentile(xs, 50)), "p95": float(np.percentile(xs, 95)),
            "runs": len(xs)}


def interference_line() -> str:
    r = INTERFERENCE.report()
    flag = "  (NOT QUIET: timings are suspect)" if r["other_processes_mean_cores"] > 0.1 else ""
    return (f"other processes used {r['other_processes_mean_cores']:.2f} cores on average "
            f"during this {r['wall_s']:.0f} s run{flag}")


def ms(seconds: float) -> str:
    return f"{seconds * 1000:.1f} ms" if seconds < 10 else f"{seconds:.1f} s"


def table(rows: list[list], header: list[str]) -> str:
    cells = [[str(c) for c in row] for row in [header, *rows]]
    widths = [max(len(row[i]) for row in cells) for i in range(len(header))]
    lines = [" | ".join(c.ljust(w) for c, w in zip(row, widths)) for row in cells]
    lines.insert(1, "-+-".join("-" * w for w in widths))
    return "\n".join(lines)


def verdict(value: float, target: float, lower_is_better: bool = True) -> str:
    ok = value <= target if lower_is_better else value >= target
    return "met" if ok else "MISSED"


def write_results(name: str, data: dict) -> Path:
    RESULTS.mkdir(parents=True, exist_ok=True)
    if "machine" in data:  # was the machine quiet all along?
        data["machine"]["load_average_1m_at_end"] = round(os.getloadavg()[0], 2)
        data["machine"]["other_heavy_processes_at_end"] = other_load()
        data["machine"]["interference"] = INTERFERENCE.report()
    path = RESULTS / f"{name}.json"
    path.write_text(json.dumps(data, indent=2, default=str) + "\n")
    return path


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def quiet_env(**extra: str) -> dict[str, str]:
    """The environment for child processes: offline, no analytics (no traffic off the machine)."""
    return {**os.environ, "HF_HUB_OFFLINE": "1", "GRADIO_ANALYTICS_ENABLED": "False", **extra}


_SCRATCH = tempfile.TemporaryDirectory(prefix="bench-")  # removed when the script ends


def scratch(name: str) -> Path:
    """A fresh temporary folder, deleted with everything in it when the script ends (saved
    models are about 100 MB)."""
    return Path(tempfile.mkdtemp(prefix=f"{name}-", dir=_SCRATCH.name))


def tree_at(rev: str, *paths: str) -> Path:
    """`paths` as they were at git revision `rev`, extracted into a fresh temporary folder, so
    that an old version of the app can run beside the working tree's (before/after in one run)."""
    folder = scratch(f"at-{rev}")
    archive = subprocess.run(["git", "archive", rev, *paths], cwd=ROOT, check=True,
                             capture_output=True).stdout
    subprocess.run(["tar", "-x", "-C", str(folder)], input=archive, check=True)
    return folder


def scene_arguments(parser: argparse.ArgumentParser) -> None:
    """The options of a benchmark on fresh scenes of a scenes model's world."""
    parser.add_argument("--weights", default=str(ROOT / "weights"))
    parser.add_argument("--num-scenes", type=int, default=1000)
    parser.add_argument("--seed", type=int, default=2026)
    parser.add_argument("--data-dir", type=Path, default=ROOT / "data")


def scenes_model_and_test(args: argparse.Namespace):
    """(model, world, test split) for `scene_arguments`: `--num-scenes` fresh scenes of the
    model's world from `--seed`, drawn at the model's image size (as `evaluate` draws them)."""
    from captioner.cli import scene_set
    from captioner.data import load_caption_dataset
    from captioner.hub import load_model
    from captioner.scenes.worlds import world_of

    model = load_model(args.weights)
    world = world_of(model)
    if world is None:
        raise SystemExit(f"{args.weights}: not a scenes model (its config names no world)")
    test = load_caption_dataset(str(scene_set(args, world, model.config.image_size)))["test"]
    return model, world, test
