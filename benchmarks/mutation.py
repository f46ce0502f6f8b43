"""Mutation score of the modules that carry the README's claims, one module at a time.

    python benchmarks/mutation.py                 # every module below (about an hour on 2 cores)
    python benchmarks/mutation.py decoding space  # just these
    python benchmarks/mutation.py --report        # rewrite the results from finished runs only

mutmut (pinned in requirements-dev.txt) plants one small change at a time ("mutant") in a
module and runs the tests that call the changed function; a mutant no test notices "survives".
Each module runs in its own scratch copy of the repository, mutants/<module>/ (git-ignored),
whose pyproject.toml gets the module and its covering tests added to [tool.mutmut]: a run then
only pays for the tests that can see that module (and, per mutant, only for the tests that call
the mutated function). Every run tests every mutant again, so no verdict is ever stale.

Results go to benchmarks/results/mutation.json and mutation.md: per module the mutants killed
(a test failed or timed out), survived, not covered by any selected test, the total and the
score killed / total. Every survivor is listed with its diff and, where a reviewer judged it
equivalent (no behaviour can change), the one-line reason from benchmarks/mutation_equivalents.json,
matched by function and by the changed lines, so the reason lapses when the code changes.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
WORK = ROOT / "mutants"
RESULTS = ROOT / "benchmarks" / "results"
EQUIVALENTS = ROOT / "benchmarks" / "mutation_equivalents.json"
MEANING = "tests/test_meaning_*.py"  # the tests written against these mutants, for every module


@dataclass
class Target:
    """One module, the tests that exercise it, and (for big modules) the functions that count."""

    path: str
    tests: list[str]
    functions: list[str] = field(default_factory=list)  # mutmut name globs; empty = all
    deselect: list[str] = field(default_factory=list)  # tests that cannot run in mutants/


TARGETS = {
    # not test_properties.py: its hypothesis runs take 14 s per mutant on 2 cores
    "decoding": Target("captioner/decoding.py", ["tests/test_decoding.py", MEANING]),
    "evaluation": Target("captioner/evaluation.py",
                         ["tests/test_evaluation.py", "tests/test_questioning.py", MEANING]),
    "familiarity": Target("captioner/familiarity.py", ["tests/test_questioning.py", MEANING]),
    # model.py: not test_decoding/test_properties, which call the model in every test (too slow
    # to run per mutant on 2 cores); the meaning tests check its equations directly
    "model": Target("captioner/model.py", ["tests/test_model.py", "tests/test_hub.py",
                                         "tests/test_hard_attention.py", MEANING],
                    # a train_space.py subprocess, which fails inside mutmut's copy
                    deselect=["tests/test_hard_attention.py::"
                              "test_train_space_refuses_an_unknown_attention_kind"]),
    "inputs": Target("captioner/demo/inputs.py",
                     ["tests/test_hardening.py", "tests/test_app_hardening.py",
                      "tests/test_demo.py", MEANING]),
    "space": Target("captioner/space.py", ["tests/test_space.py", MEANING]),
    "hub": Target("captioner/hub.py", ["tests/test_hub.py", MEANING]),
    # training.py: the checkpoint and resume code, not the training loop itself
    "training": Target("captioner/training.py", ["tests/test_training.py", MEANING],
                       ["*save_checkpoint*", "*load_checkpoint*", "*broadcast_state*",
                        "*epoch_pairs*"],
                       # their train_space.py subprocesses fail inside mutmut's copy; the
                       # in-process resume test of test_meaning_resume.py covers the claim
                       ["tests/test_training.py::test_resume_after_sigkill_matches_uninterrupted_run",
                        "tests/test_training.py::test_resume_without_checkpoint_is_a_clear_error"]),
    "features": Target("captioner/features.py", ["tests/test_features.py", MEANING]),
    "averaging": Target("captioner/averaging.py", ["tests/test_averaging.py", MEANING]),
    # cli.py: argument handling, not the commands' work
    "cli": Target("captioner/cli.py", ["tests/test_cli.py", MEANING],
                  ["*add_model_options*", "*build_parser*", "*check_decoding_args*",
                   "*look_here*", "*expand_inputs*", "*grid_names*", "*x_main__*"]),
}

KILLED = {"killed", "timeout"}


def tracked_files() -> list[Path]:
    """The repository's files as a fresh clone has them (falls back to a walk without git)."""
    try:
        out = subprocess.run(["git", "ls-files", "-z"], cwd=ROOT, capture_output=True,
                             check=True).stdout.decode()
        return [Path(p) for p in out.split("\0") if p and (ROOT / p).is_file()]
    except (OSError, subprocess.CalledProcessError):
        skip = {".git", ".venv", "mutants", "__pycache__", ".pytest_cache", "runs", "data"}
        return [p.relative_to(ROOT) for p in ROOT.rglob("*")
                if p.is_file() and not skip & set(p.relative_to(ROOT).parts)]


def prepare(name: str, target: Target) -> Path:
    """mutants/<name>/: the tracked tree (sources refreshed every time, so edits count) plus the
    module's [tool.mutmut] settings; mutmut's own verdicts inside are kept."""
    work = WORK / name
    for rel in tracked_files():
        dest = work / rel
        dest.parent.mkdir(parents=True, exist_ok=True)
        if not dest.exists() or dest.read_bytes() != (ROOT / rel).read_bytes():
            shutil.copy2(ROOT / rel, dest)
    for rel in ROOT.glob(MEANING):  # new test files count before they are committed
        shutil.copy2(rel, work / "tests" / rel.name)
    tests = sorted({str(p.relative_to(ROOT)) for pattern in target.tests
                    for p in ROOT.glob(pattern)})
    pyproject = (ROOT / "pyproject.toml").read_text()
    extra = (f"only_mutate = {json.dumps([target.path])}\n"
             f"pytest_add_cli_args_test_selection = {json.dumps(tests)}\n"
             'pytest_add_cli_args = ["-p", "no:cacheprovider", "-m", "not browser"'
             + "".join(f', "--deselect", "{t}"' for t in target.deselect) + "]\n")
    (work / "pyproject.toml").write_text(pyproject.replace("[tool.mutmut]\n",
                                                          "[tool.mutmut]\n" + extra))
    return work


def run(name: str, target: Target, children: int, recheck: bool = False) -> float:
    """mutmut run in the module's scratch copy; returns the seconds it took. `recheck`: only
    the mutants the last run did not kill (valid while the module's code is unchanged and
    tests were only added: a killed mutant stays killed)."""
    previous = verdicts(name, target) if recheck else None
    timing = run_times(name) if previous is not None else {}
    work = prepare(name, target)
    dotted = target.path[:-3].replace("/", ".")
    names = [f"{dotted}.{f}" for f in target.functions] or [f"{dotted}.*"]
    if previous is not None:
        # timeouts too: on a machine busy with other work a slow test run is no verdict
        names = sorted(m for m, verdict in previous.items() if verdict != "killed")
        if not names:
            return 0.0
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1",
           "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}
    start = time.monotonic()
    with open(work / "mutmut.log", "a" if previous is not None else "w") as log:
        subprocess.run([sys.executable, "-m", "mutmut", "run", "--max-children", str(children),
                        *names], cwd=work, env=env, stdout=log, stderr=subprocess.STDOUT)
    seconds = time.monotonic() - start
    if previous is not None:
        keep_earlier_kills(name, target, previous)
    key = "recheck" if previous is not None else "full"
    timing[key] = round(timing.get(key, 0) + seconds) if previous is not None else round(seconds)
    timing["commit"] = commit()  # the sources this run tested
    (work / "timing.json").write_text(json.dumps(timing))
    return seconds


def keep_earlier_kills(name: str, target: Target, previous: dict[str, str]) -> None:
    """After a recheck: mutmut forgets the verdicts of mutants it was not asked about (when the
    tests changed, it clears them), so the kills of the run before are written back."""
    meta = WORK / name / "mutants" / (target.path + ".meta")
    data = json.loads(meta.read_text())
    codes = data["exit_code_by_key"]
    from mutmut.stats import status_by_exit_code

    killed_code = next(c for c, status in status_by_exit_code.items() if status == "killed")
    for mutant, verdict in previous.items():
        if verdict in KILLED and status_by_exit_code.get(codes.get(mutant)) == "not checked":
            codes[mutant] = killed_code
    meta.write_text(json.dumps(data))


def run_times(name: str) -> dict:
    """Seconds of the module's last full run (and of the rechecks since): from timing.json, or
    for a run started by hand, from its settings file to mutmut's last word in its log."""
    work = WORK / name
    if (work / "timing.json").exists():
        return json.loads((work / "timing.json").read_text())
    if not (work / "mutmut.log").exists():
        return {}
    return {"full": round((work / "mutmut.log").stat().st_mtime
                          - (work / "pyproject.toml").stat().st_mtime)}


def verdicts(name: str, target: Target) -> dict[str, str] | None:
    """mutant name -> mutmut's status, for the mutants this target counts; None if never run."""
    meta = WORK / name / "mutants" / (target.path + ".meta")
    if not meta.exists():
        return None
    from fnmatch import fnmatch

    from mutmut.stats import status_by_exit_code

    codes = json.loads(meta.read_text())["exit_code_by_key"]
    dotted = target.path[:-3].replace("/", ".")
    keep = [f"{dotted}.{f}" for f in target.functions]
    return {k: status_by_exit_code[v] for k, v in codes.items()
            if not keep or any(fnmatch(k, pattern) for pattern in keep)}


def diff(name: str, target: Target, mutant: str) -> str:
    """The changed lines of one mutant (what `mutmut show` prints, without the context)."""
    from mutmut.mutation.diff_apply import get_diff_for_mutant

    here = Path.cwd()
    os.chdir(WORK / name)  # mutmut reads its mutants/ folder relative to the working directory
    try:
        out = get_diff_for_mutant(mutant, path=Path(target.path))
    finally:
        os.chdir(here)
    return "\n".join(line for line in out.splitlines()
                     if line[:1] in "+-" and not line.startswith(("+++", "---")))


def commit() -> str:
    """The commit measured (its sources; uncommitted edits are marked with a +)."""
    try:
        head = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=ROOT, check=True,
                              capture_output=True, text=True).stdout.strip()
        dirty = subprocess.run(["git", "status", "--porcelain", "--", "captioner", "tests"],
                               cwd=ROOT, capture_output=True, text=True).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return "unknown"
    return head + ("+" if dirty else "")


def function_of(mutant: str) -> str:
    return re.sub(r"__mutmut_\d+$", "", mutant)


def report() -> None:
    equivalents = json.loads(EQUIVALENTS.read_text()) if EQUIVALENTS.exists() else []
    old = RESULTS / "mutation.json"
    previous = json.loads(old.read_text())["modules"] if old.exists() else {}
    modules = {}
    for name, target in TARGETS.items():
        status = verdicts(name, target)
        if status is None:  # no scratch copy here: keep what an earlier run measured
            if name in previous:
                modules[name] = previous[name]
            continue
        survivors = []
        for mutant, verdict in sorted(status.items()):
            if verdict in KILLED or verdict == "not checked":  # unfinished runs are flagged
                continue
            change = diff(name, target, mutant)
            why = next((e["why"] for e in equivalents if e["function"] == function_of(mutant)
                        and e["diff"].strip() == change.strip()), None)
            survivors.append({"mutant": mutant, "status": verdict, "diff": change,
                              "equivalent_because": why})
        killed = sum(v in KILLED for v in status.values())
        seconds = run_times(name)
        # a scratch copy from before runs were stamped: the commit the last report named
        measured_at = (seconds.pop("commit", None) or previous.get(name, {}).get("commit")
                       or commit())
        modules[name] = {"module": target.path, "functions": target.functions or "all",
                         "tests": target.tests, "killed": killed,
                         "survived": sum(v == "survived" for v in status.values()),
                         "not_covered": sum(v == "no tests" for v in status.values()),
                         "not_checked": sum(v == "not checked" for v in status.values()),
                         "total": len(status),
                         "score": round(100 * killed / max(len(status), 1), 1),
                         "unjustified": sum(s["equivalent_because"] is None for s in survivors),
                         "seconds": seconds, "commit": measured_at, "survivors": survivors}
    RESULTS.mkdir(parents=True, exist_ok=True)
    import mutmut

    record = {"command": "python benchmarks/mutation.py", "mutmut": mutmut.__version__,
              "cpus": os.cpu_count(), "modules": modules}
    old.write_text(json.dumps(record, indent=1) + "\n")
    lines = ["# Mutation score per module", "",
             f"`python benchmarks/mutation.py` (mutmut {mutmut.__version__}, {os.cpu_count()} "
             "CPUs). Killed = a test failed or timed out; score = killed / total; survivors with "
             "a reason in benchmarks/mutation_equivalents.json are equivalent mutants (no "
             "behaviour can change), the others are counted as unjustified.", "",
             "| module | killed | survived | not covered | total | score | unjustified | time "
             "| at commit |",
             "|---|---|---|---|---|---|---|---|---|"]
    unfinished = [m["module"] for m in modules.values() if m["not_checked"]]
    for m in modules.values():
        times = m["seconds"]
        t = f"{times.get('full', 0) / 60:.0f} min" + (
            f" + {times['recheck'] / 60:.0f} min recheck" if "recheck" in times else "")
        checked = m["total"] - m["not_checked"]
        score = (f"{m['score']} %" if not m["not_checked"] else
                 f"unfinished: {checked} of {m['total']} checked")
        lines.append(f"| {m['module']} | {m['killed']} | {m['survived']} | {m['not_covered']} "
                     f"| {m['total']} | {score} | {m['unjustified']} | {t} "
                     f"| {m.get('commit', 'before 9bf37a4')} |")
    if unfinished:
        lines += ["", f"Unfinished runs (some mutants not checked yet): {', '.join(unfinished)}"]
    for m in modules.values():
        if m["survivors"]:
            lines += ["", f"## Survivors in {m['module']}", ""]
            for s in m["survivors"]:
                reason = s["equivalent_because"] or "NOT JUSTIFIED: needs a test"
                lines += [f"- `{s['mutant']}` ({s['status']}): {reason}", "  ```diff",
                          *("  " + line for line in s["diff"].splitlines()), "  ```"]
    (RESULTS / "mutation.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines[:6 + len(modules)]))


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("modules", nargs="*", metavar="MODULE",
                        help=f"some of: {', '.join(TARGETS)} (default: all)")
    parser.add_argument("--report", action="store_true", help="only rewrite the results files")
    parser.add_argument("--recheck", action="store_true",
                        help="re-test only the mutants the last run of each module left alive or "
                             "timed out (after adding tests; a full run re-tests every mutant)")
    parser.add_argument("--children", type=int, default=os.cpu_count() or 1,
                        help="mutants tested at once (default: the number of CPUs)")
    args = parser.parse_args(argv)
    unknown = [m for m in args.modules if m not in TARGETS]
    if unknown:
        parser.error(f"unknown module {unknown[0]!r}: choose from {', '.join(TARGETS)}")
    try:
        import mutmut  # noqa: F401
    except ImportError:
        print("mutmut is not installed: pip install -r requirements-dev.txt", file=sys.stderr)
        return 2
    if not args.report:
        for name in args.modules or TARGETS:
            print(f"{name}: running (log in mutants/{name}/mutmut.log)", flush=True)
            seconds = run(name, TARGETS[name], args.children, args.recheck)
            print(f"{name}: {seconds / 60:.1f} min", flush=True)
    report()
    return 0


if __name__ == "__main__":
    sys.exit(main())
