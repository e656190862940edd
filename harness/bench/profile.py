"""python -m harness.bench.profile [--out DIR] [--threads N]: where a small sweep's time goes (issue 30).

Runs the benchmark's 20-job regression sweep (``cost.REGRESSION_20``) four ways, each in a fresh store and
a process of its own under cProfile: stacked and basic launcher, tracking on and off. Then it sums the
profile's cumulative seconds by phase (``PHASES``: the functions whose cumulative time a phase is; a
nested phase is part of the one above it) and writes profile.md and profile.json into a folder of its own (harness-profile-DATE here) or ``--out``.

Read a column, not across columns: cProfile slows Python-heavy code (composition, imports) more than
torch's kernels, so its seconds are larger than the wall times of ``python -m harness.bench``. A row
indented with "of which" is part of the row above it; the top-level rows do not overlap. An import
lands in the first phase that needs it.
"""

from __future__ import annotations

import argparse
import json
import os
import pstats
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from harness.bench.common import harness_env, machine
from harness.bench.cost import REGRESSION_20

# (label, its functions as (path suffix, function name), depth: a row at depth d is part of the row above it at d - 1)
PHASES: list[tuple[str, list[tuple[str, str]], int]] = [
    ("import torch", [("torch/__init__.py", "<module>")], 0),
    ("import hydra", [("hydra/__init__.py", "<module>")], 0),
    ("sweep start: the sweep's checks, its store and parent run", [("harness/sweep/callback.py", "_start")], 0),
    ("import mlflow (first asked for by the tracking URI's check)", [("mlflow/__init__.py", "<module>")], 1),
    ("store opening: MLflow's client, the file, a first query", [("harness/tracking/store.py", "_open")], 1),
    ("import MLflow's SQL store", [("mlflow/store/tracking/sqlalchemy_store.py", "<module>")], 2),
    ("composition of each job (Hydra)", [("harness/config/compose.py", "load_sweep_config")], 0),
    ("run admission: config checks, earlier runs of the job looked up", [("harness/engine/run.py", "admit")], 0),
    ("models and optimizers built", [("harness/engine/build.py", "assemble")], 0),
    ("import torch._dynamo (torch.optim's first use: any PyTorch loop pays it)", [("torch/_dynamo/__init__.py", "<module>")], 1),
    ("run creation: runs, tags, params, config.yaml", [("harness/tracking/runs.py", "start_many")], 0),  # else: FALLBACK
    ("training: steps and evaluation", [("harness/engine/stacked.py", "train"), ("harness/engine/train.py", "train")], 0),
    ("evaluation", [("harness/engine/stacked.py", "evaluate"), ("harness/engine/train.py", "evaluate")], 1),
    ("metrics buffered and written during training", [("harness/tracking/runs.py", "log")], 1),
    ("run end: last metrics, outcome tags, status", [("harness/tracking/runs.py", "end_many")], 0),  # else: FALLBACK
    ("sweep end: summary and parent run closed", [("harness/sweep/callback.py", "on_multirun_end")], 0),
]
# Where a phase's functions are absent from a profile (an older checkout's, --code), the functions it had instead:
# before 776273d each run was opened and closed alone.
FALLBACK = {
    "run creation: runs, tags, params, config.yaml": [("harness/tracking/runs.py", "start")],
    "run end: last metrics, outcome tags, status": [("harness/tracking/runs.py", "end")],
}
WAYS = [("stacked", True), ("stacked", False), ("basic", True), ("basic", False)]


def phase_seconds(stats: pstats.Stats) -> dict[str, float]:
    """Each phase's seconds: the summed cumulative time of its functions (one per code path: the stacked
    engine's and a single run's); where none of them ran, of its ``FALLBACK`` functions."""
    table = stats.stats  # type: ignore[attr-defined]  # {(file, line, name): (cc, nc, tt, cumulative, callers)}

    def cumulative(functions: list[tuple[str, str]]) -> float | None:
        found = [
            ct
            for (path, _line, name), (_cc, _nc, _tt, ct, _callers) in table.items()
            if any(path.endswith(suffix) and name == fn for suffix, fn in functions)
        ]
        return sum(found) if found else None

    out = {}
    for label, functions, _ in PHASES:
        seconds = cumulative(functions)
        if seconds is None and label in FALLBACK:
            seconds = cumulative(FALLBACK[label])
        out[label] = seconds or 0.0
    return out


def profile_way(work: Path, launcher: str, tracked: bool, threads: int, code: str | None = None) -> dict:
    name = f"{launcher}_{'tracked' if tracked else 'untracked'}"
    prof = work / f"{name}.prof"
    cmd = [
        sys.executable,
        "-m",
        "cProfile",
        "-o",
        str(prof),
        "-m",
        "harness",
        "--multirun",
        f"hydra/launcher={launcher}",
        "progress=false",
        f"tracking.uri=sqlite:///{work / (name + '.db')}",
        f"hydra.sweep.dir={work / ('multirun_' + name)}",
        f"threads={threads}",
        *REGRESSION_20,
        *([] if tracked else ["tracking.enabled=false"]),
    ]
    t0 = time.perf_counter()
    env = harness_env()
    if code:  # another checkout's harness (a profile before a change): first on the path
        env["PYTHONPATH"] = os.pathsep.join([code, env["PYTHONPATH"]])
    proc = subprocess.run(cmd, capture_output=True, text=True, env=env, cwd=work)
    wall = time.perf_counter() - t0
    if proc.returncode != 0:
        raise RuntimeError(f"the {name} sweep failed: {proc.stderr.strip().splitlines()[-1:]}")
    stats = pstats.Stats(str(prof))
    return {"way": name, "wall": wall, "profiled": stats.total_tt, "phases": phase_seconds(stats)}  # type: ignore[attr-defined]


def table(results: list[dict]) -> str:
    head = "| phase | " + " | ".join(r["way"].replace("_", ", ") for r in results) + " |"
    lines = [head, "|---" * (len(results) + 1) + "|"]
    lines.append(
        "| whole process, wall time outside the profiler (s) | " + " | ".join(f"{r['wall']:.2f}" for r in results) + " |"
    )
    lines.append("| whole process under cProfile (s) | " + " | ".join(f"{r['profiled']:.2f}" for r in results) + " |")
    for label, _, depth in PHASES:
        shown = "&nbsp;&nbsp;" * depth + f"of which: {label}" if depth else label
        lines.append(f"| {shown} | " + " | ".join(f"{r['phases'][label]:.2f}" for r in results) + " |")
    return "\n".join(lines) + "\n"


def main(argv=None) -> int:
    p = argparse.ArgumentParser(prog="python -m harness.bench.profile", description=__doc__.split("\n\n")[1])
    p.add_argument(
        "--out", default=None, help="where profile.md and profile.json go (default: a new folder harness-profile-DATE here)"
    )
    p.add_argument("--threads", type=int, default=1, help="torch threads of each sweep (default 1)")
    p.add_argument(
        "--code",
        default=None,
        help="profile the harness of another checkout (e.g. a git worktree of an older commit), for a before/after profile",
    )
    args = p.parse_args(argv)
    out = Path(args.out or f"harness-profile-{time.strftime('%Y%m%d-%H%M%S')}")
    out.mkdir(parents=True, exist_ok=True)
    results = []
    try:
        with tempfile.TemporaryDirectory(prefix="harness-profile-") as tmp:
            for launcher, tracked in WAYS:
                print(f"profiling the 20-job sweep: {launcher} launcher, tracking {'on' if tracked else 'off'} ...", flush=True)
                results.append(profile_way(Path(tmp), launcher, tracked, args.threads, args.code))
    except KeyboardInterrupt:
        print("stopped: no profile written", file=sys.stderr)
        return 130
    except RuntimeError as e:
        print(f"error: {e}", file=sys.stderr)
        return 1
    info = machine("cpu")
    header = (
        f"{time.strftime('%Y-%m-%d %H:%M')}; {info['cpu']}, {info['cores']} cores; torch {info['torch']}; "
        f"`{' '.join(REGRESSION_20)}`, threads={args.threads}; seconds of one run of each way, cumulative under cProfile"
        + (f"; the harness of {args.code}" if args.code else "")
        + "."
    )
    md = f"# harness profile\n\n{header}\n\n{table(results)}"
    (out / "profile.md").write_text(md)
    (out / "profile.json").write_text(json.dumps({"header": header, "results": results}, indent=1))
    print(md)
    print(f"written: {out / 'profile.md'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
