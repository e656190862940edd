"""The sweep rows of ``python -m harness.bench`` (issue 13): whole sweeps and whole processes,
each timed side by side in one run of the bench.

1. per-job overhead: a 20-job sweep of small regression runs (basic launcher), wall time /
   (start-up + the sum of the jobs' training seconds);
2. the ``regression_outliers`` study: basic launcher wall / stacked launcher wall;
3. an MNIST bundle (12 configurations of the default MLP): basic wall / stacked wall;
4. a whole 4-epoch MNIST process in a folder whose store exists: harness wall / raw-loop wall;
4a. (``fresh``) the default job in a fresh folder: its store created by MLflow's migrations / copied
   from the harness's cache of an empty one (harness/tracking/fresh_store.py), wall time;
4b. (``conv``) 8 sequence models (a CNN over image columns): the stacked bundle's training seconds
   (``hydra.launcher.vmap_on_cpu=true``) / the sum of their training seconds one after another; the
   measurement behind running such models alone on a CPU;
5. (``--grid``) the full ``mnist_optimizers`` grid at a real budget, stacked: wall time;
6. (``--scaling``) members per second against bundle size: one stacked sweep of k seeds of the
   default MNIST MLP for k = 1, 2, 4, ..., its members x epochs / the bundle's training seconds.
"""

from __future__ import annotations

import statistics
import subprocess
import sys
import time
from pathlib import Path

from harness.bench.common import harness_env, run_sweep, stats

REGRESSION_20 = ["task=regression", "loss=mse,mae,huber,log_cosh", "seed=0,1,2,3,4", "epochs=5"]
MNIST_12 = ["task=mnist", "optimizer.lr=0.0003,0.001,0.003", "seed=0,1,2,3", "epochs=2"]
GRID = [
    "experiment=mnist_optimizers",
    "optimizer.weight_decay=0.0",
    "optimizer.lr=0.0003,0.001,0.003,0.01,0.03,0.1",
    "seed=0,1,2",
    "epochs=10",
]  # 108 runs


def sweep(work: Path, name: str, args: list[str], launcher: str = "stacked", experiment: str | None = None) -> dict:
    """One --multirun in its own store; its wall time and its runs' train_seconds."""
    wall, runs = run_sweep(work, name, args, launcher, experiment)
    return {
        "wall": wall,
        "train": [float(r.data.tags.get("train_seconds", 0)) for r in runs],
        "runs": len(runs),
        "bundles": len({r.data.tags.get("bundle") for r in runs}),
    }


def with_args(base: list[str], *changes: str) -> list[str]:
    """base with the keys of `changes` replaced (Hydra refuses a key given twice)."""
    keys = {c.split("=", 1)[0] for c in changes}
    return [a for a in base if a.split("=", 1)[0] not in keys] + list(changes)


def whole_process(cmd: list[str], cwd: Path, **env: str) -> float:
    t0 = time.perf_counter()
    proc = subprocess.run(cmd, capture_output=True, text=True, env={**harness_env(), **env}, cwd=cwd)
    if proc.returncode != 0:
        raise RuntimeError(f"{' '.join(cmd[:4])} failed: {proc.stderr[-2000:]}")
    return time.perf_counter() - t0


RAW_PROCESS = """
import sys, torch
from harness.bench.common import raw_loop
from harness.engine.device import resolve_threads
from harness.tasks.mnist import MNIST
device = torch.device(sys.argv[3])
raw_loop(MNIST(data_dir=sys.argv[2], download=False).load().to(device), int(sys.argv[1]), 128, resolve_threads("auto"), device)
"""  # the bench's own hand-written loop, as a whole process: imports, data, training, evaluation


SWEEP_ROWS = ("overhead", "outliers", "mnist12", "whole", "fresh", "conv")
SEQUENCE_8 = [
    "task=sequence",
    "loss=ctc,position_ce",
    "optimizer=adam",
    "optimizer.lr=0.01,0.03",
    "seed=0,1",
    "task.max_length=6",
    "task.jitter=4",
    "task.n_train=2000",
    "epochs=3",
]


def rows(row, work: Path, data_dir: str, device: str, quick: bool, reps: int, grid: bool, sweeps=SWEEP_ROWS) -> None:
    """Adds the sweep rows (those of 1-4 named in ``sweeps``, 5 when ``grid``) through
    ``row(key, measure, value, baseline, ratio, target, met, note)``."""
    if sweeps:
        sweep_rows(row, work, data_dir, device, quick, reps, sweeps)
    if grid:
        grid_row(row, work, data_dir, device)


def sweep_rows(row, work: Path, data_dir: str, device: str, quick: bool, reps: int, which=SWEEP_ROWS) -> None:
    small = ["epochs=1"] if quick else []

    if "overhead" in which:
        # 1: per-job overhead (the basic launcher: the cost every launcher's jobs pay)
        ratios, walls, trains, starts = [], [], [], []
        for _ in range(1 if quick else min(3, reps)):
            one = sweep(work, "one", ["task=regression", "epochs=5", "seed=0"], "basic")
            many = sweep(work, "twenty", with_args(REGRESSION_20, *small), "basic")
            start = one["wall"] - sum(one["train"])
            ratios.append(many["wall"] / (start + sum(many["train"])))
            walls.append(many["wall"])
            trains.append(sum(many["train"]))
            starts.append(start)
        r = stats(ratios)
        row(
            "sweep_overhead",
            "per-job overhead: 20-job regression sweep wall / (start-up + sum of training s)",
            stats(walls),
            None,
            r,
            "<= 1.5",
            r["median"] <= 1.5,
            f"wall {statistics.median(walls):.1f} s, start-up (a 1-job sweep's wall - its "
            f"training) {statistics.median(starts):.1f} s, training {statistics.median(trains):.1f} s, so "
            f"{(statistics.median(walls) - statistics.median(starts) - statistics.median(trains)) / 19:.2f} s a job beyond the "
            "first; basic launcher",
        )

    if "outliers" in which:
        # 2: the regression_outliers study, basic vs stacked
        study = ["experiment=regression_outliers", f"device={device}"] + (["smoke=on"] if quick else [])
        ratios, notes = [], []
        for _ in range(1 if quick else min(2, reps)):
            basic = sweep(work, "outliers_basic", study, "basic")
            stacked = sweep(work, "outliers_stacked", study, "stacked")
            ratios.append(basic["wall"] / stacked["wall"])
            notes.append((basic["wall"], stacked["wall"], stacked["runs"]))
        r = stats(ratios)
        b, s, n = notes[-1]
        row(
            "stacked_study",
            "regression_outliers study: basic launcher wall / stacked launcher wall",
            None,
            None,
            r,
            ">= 5",
            r["median"] >= 5,
            f"{n} runs{' (smoke=on)' if quick else ''}: basic {b:.1f} s, stacked {s:.1f} s (last repetition)",
        )

    if "mnist12" in which:
        # 3: an MNIST bundle of 12 configurations of the default MLP
        mnist = with_args(
            MNIST_12, f"data_dir={data_dir}", f"device={device}", *(["task.n_train=2000", "epochs=1"] if quick else [])
        )
        basic = sweep(work, "mnist12_basic", mnist, "basic")
        stacked = sweep(work, "mnist12_stacked", mnist, "stacked")
        ratio = stats([basic["wall"] / stacked["wall"]])
        gpu = device.startswith("cuda")
        row(
            "stacked_mnist",
            "MNIST, 12 configurations of the default MLP: one after another wall / one bundle wall",
            None,
            None,
            ratio,
            ">= 10 (GPU)" if gpu else "modest on CPU",
            ratio["median"] >= 10 if gpu else None,
            f"basic {basic['wall']:.1f} s, stacked {stacked['wall']:.1f} s, {'1 epoch on 2000 images' if quick else '2 epochs'}",
        )

    if "whole" in which:
        # 4: a whole 4-epoch MNIST process in a folder whose store exists, harness vs the raw loop
        folder = work / "whole"
        folder.mkdir(exist_ok=True)
        epochs = 1 if quick else 4
        harness = [
            sys.executable,
            "-m",
            "harness",
            "task=mnist",
            f"data_dir={data_dir}",
            f"epochs={epochs}",
            "progress=false",
            f"device={device}",
            f"tracking.uri=sqlite:///{folder}/mlflow.db",
        ]
        raw = [sys.executable, "-c", RAW_PROCESS, str(epochs), data_dir, device]
        whole_process(harness, folder)  # the store exists from here on
        pairs = [(whole_process(harness, folder), whole_process(raw, folder)) for _ in range(1 if quick else min(3, reps))]
        r = stats([h / w for h, w in pairs])
        row(
            "whole_process",
            f"whole process, {epochs}-epoch MNIST run, store exists: harness wall / raw loop wall",
            None,
            None,
            r,
            "<= 1.25",
            r["median"] <= 1.25,
            f"harness {statistics.median(h for h, _ in pairs):.1f} s, raw loop {statistics.median(w for _, w in pairs):.1f} s",
        )

    if "fresh" in which:
        # 4a: the default job in a new folder: MLflow migrates a new store, or the harness copies its cached empty one
        (work / "no-cache").write_text("")  # HARNESS_CACHE under a file: no cache can be made, MLflow migrates
        cmd = [sys.executable, "-m", "harness", "progress=false", f"device={device}"]
        caches = {"migrated": str(work / "no-cache" / "cache"), "copied": str(work / "store-cache")}

        def fresh(side: str, i: int) -> float:
            folder = work / f"fresh-{side}-{i}"
            folder.mkdir()
            return whole_process(cmd, folder, HARNESS_CACHE=caches[side])

        fresh("copied", -1)  # fills the cache, as the first fresh folder after an install does
        pairs = [(fresh("migrated", i), fresh("copied", i)) for i in range(1 if quick else min(3, reps))]
        r = stats([m / c for m, c in pairs])
        row(
            "fresh_store",
            "default job in a fresh folder: store migrated by MLflow / copied from the cache, wall",
            None,
            None,
            r,
            "> 1",
            r["median"] > 1,
            f"migrated {statistics.median(m for m, _ in pairs):.1f} s, copied {statistics.median(c for _, c in pairs):.1f} s",
        )

    if "conv" in which:
        # 4b: is stacking a convolutional model worth it on this device? (on a CPU the launcher says no by default)
        seq = with_args(SEQUENCE_8, f"device={device}", *(["task.n_train=500", "epochs=1"] if quick else []))
        ratios, notes = [], []
        for _ in range(1 if quick else min(3, reps)):
            stacked = sweep(work, "conv_stacked", seq + ["hydra.launcher.vmap_on_cpu=true"], "stacked")
            basic = sweep(work, "conv_basic", seq, "basic")
            st, so = max(stacked["train"]), sum(basic["train"])  # a bundle's members share its training seconds
            ratios.append(st / so)
            notes.append((st, so, stacked["bundles"]))
        r = stats(ratios)
        st, so, nb = notes[-1]
        row(
            "stacked_conv",
            "8 sequence models (column CNN): stacked bundle training s / sum of training s one after another",
            None,
            None,
            r,
            "< 1 on a GPU; > 1 keeps them alone on a CPU",
            None,
            f"stacked {st:.1f} s in {nb} bundle(s), one after another {so:.1f} s (last repetition), "
            f"{'1 epoch on 500 sequences' if quick else '3 epochs on 2000'}",
        )


def grid_row(row, work: Path, data_dir: str, device: str) -> None:
    """5: the mnist_optimizers grid at a real budget (6 optimizers x 6 LRs x 3 seeds x 10 epochs = 108 runs)."""
    gpu = device.startswith("cuda")
    args = GRID + [f"data_dir={data_dir}", f"device={device}"]
    run = sweep(work, "grid", args, "stacked", "mnist_optimizers")
    note = f"training {max(run['train']):.1f} s for the longest bundle"
    if gpu:  # the default there trains several bundles at once, each in its own process; side by side with one at a time
        one = sweep(work, "grid_one_worker", args + ["hydra.launcher.workers=1"], "stacked", "mnist_optimizers")
        note += (
            f"; {run['bundles']} bundles, up to 4 at once (the GPU default); "
            f"one bundle at a time (hydra.launcher.workers=1): {one['wall']:.1f} s, {one['wall'] / run['wall']:.2f}x the wall"
        )
    target = 60 if gpu else 600
    row(
        "grid",
        f"mnist_optimizers grid, {run['runs']} runs x 10 epochs, stacked: wall (s)",
        None,
        None,
        stats([run["wall"]]),
        f"<= {target} s",
        run["wall"] <= target,
        note,
    )


SCALING_SIZES = (1, 2, 4, 8, 16, 32, 64)


def scaling(
    work: Path, data_dir: str, device: str, quick: bool, sizes=SCALING_SIZES, out: list | None = None, on_line=None
) -> list[dict]:
    """Members per second against bundle size: for each k, one stacked sweep of k seeds of the
    default MNIST MLP (one bundle, ``max_members`` = k), k x epochs / the bundle's training seconds.
    Prints each line as it is measured (the biggest bundles take the longest), appends it to ``out``
    and calls ``on_line()``, so that a bench stopped midway keeps the lines it has."""
    epochs = 1 if quick else 2
    base = ["task=mnist", f"data_dir={data_dir}", f"device={device}", f"epochs={epochs}"] + (
        ["task.n_train=2000"] if quick else []
    )
    out = [] if out is None else out
    for k in sizes:
        run = sweep(work, f"scaling{k}", base + [f"seed=range({k})", f"hydra.launcher.max_members={k}"], "stacked")
        train = max(run["train"])
        line = {
            "members": k,
            "runs": run["runs"],
            "epochs": epochs,
            "train_s": train,
            "wall_s": run["wall"],
            "member_epochs_per_s": k * epochs / train if train else float("nan"),
        }
        out.append(line)
        print(
            f"  bundle of {k}: {line['member_epochs_per_s']:.2f} member-epochs/s (training {train:.1f} s, wall {run['wall']:.1f} s)",
            flush=True,
        )
        one = out[0]["member_epochs_per_s"]
        line["speedup_vs_1"] = line["member_epochs_per_s"] / one if one else float("nan")
        if on_line:
            on_line()
    return out


def scaling_markdown(lines: list[dict]) -> str:
    rows = [
        "| members in the bundle | member-epochs / s | vs 1 member | bundle training (s) | sweep wall (s) |",
        "|---:|---:|---:|---:|---:|",
    ]
    rows += [
        f"| {r['members']} | {r['member_epochs_per_s']:.3g} | {r['speedup_vs_1']:.3g} | {r['train_s']:.3g} | {r['wall_s']:.3g} |"
        for r in lines
    ]
    return "\n".join(rows) + "\n"
