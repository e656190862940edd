"""python -m harness.bench [--quick] [--device cpu|cuda] [--data-dir DIR] [--out reports/bench]

Holds the harness against a raw PyTorch loop and its own targets. Every figure is a ratio of two
things timed side by side in this process (or in one sweep), repeated; the table gives the median
with [min, max]. Writes bench.md and bench.json under --out and prints the table.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

ROOT = Path(__file__).resolve().parent.parent


# ---------------------------------------------------------------- helpers


def cores() -> int:
    from harness.build import usable_cores

    return usable_cores()


def machine(device: str) -> dict[str, str]:
    cpu = platform.processor() or platform.machine()
    try:
        cpu = next(line.split(":", 1)[1].strip() for line in open("/proc/cpuinfo") if line.startswith("model name"))
    except (OSError, StopIteration):
        pass
    info = {"cpu": cpu, "cores": str(cores()), "torch": torch.__version__, "python": platform.python_version(), "device": device}
    if device.startswith("cuda"):
        info["gpu"] = torch.cuda.get_device_name(torch.device(device))
    return info


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def stats(values: list[float]) -> dict[str, float]:
    return {"median": statistics.median(values), "min": min(values), "max": max(values), "n": len(values)}


def harness_env() -> dict[str, str]:
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")]))}
    env.pop("MLFLOW_TRACKING_URI", None)
    return env


# ---------------------------------------------------------------- the raw loop the harness is held against


def mlp() -> nn.Module:
    return nn.Sequential(nn.Flatten(), nn.Linear(784, 256), nn.ReLU(), nn.Linear(256, 10))


def fresh_model(threads: int, device: torch.device, seed: int = 0) -> tuple[nn.Module, torch.optim.Optimizer]:
    torch.set_num_threads(threads)
    torch.manual_seed(seed)
    model = mlp().to(device)
    return model, torch.optim.Adam(model.parameters(), lr=1e-3)


def raw_loop(data, epochs: int, batch_size: int, threads: int, device: torch.device, seed: int = 0) -> list[float]:
    """Seconds per epoch of the minimal loop one writes by hand: preloaded tensors, shuffled
    minibatches, Adam, then validation and test accuracy and loss once per epoch."""
    model, opt = fresh_model(threads, device, seed)
    x, y = data.train.x, data.train.y
    g = torch.Generator().manual_seed(seed)
    times = []
    for _ in range(epochs):
        t0 = time.perf_counter()
        model.train()
        perm = torch.randperm(len(y), generator=g).to(device)
        for i in range(0, len(y), batch_size):
            idx = perm[i : i + batch_size]
            loss = F.cross_entropy(model(x[idx]), y[idx])
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
        model.eval()
        with torch.no_grad():
            results = []
            for split in (data.val, data.test):
                out = model(split.x)
                results += [(out.argmax(1) == split.y).float().mean(), F.cross_entropy(out, split.y)]
            torch.stack(results).tolist()
        sync(device)
        times.append(time.perf_counter() - t0)
    return times


def timed_steps(batches, threads: int, device: torch.device, max_batches: int | None) -> tuple[float, int]:
    """(seconds, samples) of training steps over `batches`, the fetching of each batch included."""
    model, opt = fresh_model(threads, device)
    seen, t0 = 0, time.perf_counter()
    for i, (xb, yb) in enumerate(batches):
        if max_batches is not None and i >= max_batches:
            break
        xb, yb = xb.to(device), yb.to(device)  # a no-op for tensors already there
        loss = F.cross_entropy(model(xb), yb)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        seen += len(yb)
    sync(device)
    return time.perf_counter() - t0, seen


def dataloader_epoch(
    data_dir: str, batch_size: int, threads: int, device: torch.device, max_batches: int | None
) -> tuple[float, int]:
    """Training through torchvision's per-sample MNIST (PIL + ToTensor + Normalize) and a DataLoader."""
    from torch.utils.data import DataLoader
    from torchvision import datasets, transforms

    ds = datasets.MNIST(
        data_dir,
        train=True,
        download=False,
        transform=transforms.Compose([transforms.ToTensor(), transforms.Normalize((0.1307,), (0.3081,))]),
    )
    return timed_steps(DataLoader(ds, batch_size=batch_size, shuffle=True, num_workers=0), threads, device, max_batches)


def tensor_epoch(data, batch_size: int, threads: int, device: torch.device, max_batches: int | None) -> tuple[float, int]:
    """Training on preloaded tensors: a batch is a slice of a shuffled index tensor."""
    x, y = data.train.x, data.train.y
    perm = torch.randperm(len(y)).to(device)
    return timed_steps(((x[idx], y[idx]) for idx in perm.split(batch_size)), threads, device, max_batches)


# ---------------------------------------------------------------- the harness, in process and as a command


def harness_run(data_dir: str, epochs: int, device: str, store: str, *extra: str):
    from harness.run import compose, run

    cfg = compose(
        "task=mnist",
        f"data_dir={data_dir}",
        "optimizer=adam",
        "batch_size=128",
        f"epochs={epochs}",
        f"device={device}",
        f"tracking.uri={store}",
        "progress=false",
        *extra,
    )
    return run(cfg)


def steady_epochs(result) -> list[float]:
    """Epoch seconds after the first (the first also pays warm-up)."""
    times = [h["epoch_seconds"] for h in result.history]
    return times[1:] if len(times) > 1 else times


def startup(data_dir: str, device: str, store: str, reps: int) -> tuple[list[float], list[float]]:
    """(seconds from process start to the first training step, peak RSS in MB) of `python -m harness`."""
    seconds, rss = [], []
    for _ in range(reps):
        t0 = time.perf_counter()
        proc = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "harness",
                "task=mnist",
                f"data_dir={data_dir}",
                f"device={device}",
                "epochs=1",
                f"tracking.uri={store}",
            ],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            env=harness_env(),
            cwd=tempfile.gettempdir(),
        )
        proc.stdout.readline()  # the header line is printed just before the first training step
        seconds.append(time.perf_counter() - t0)
        # The child's own peak (VmHWM, reset by exec), polled: its ru_maxrss would count this big
        # parent's memory, which the child shares until it execs.
        peak = 0
        while proc.poll() is None:
            peak = max(peak, vm_hwm_mb(proc.pid))
            time.sleep(0.05)
        proc.stdout.read()
        if proc.returncode != 0:
            raise RuntimeError(f"python -m harness failed: {proc.stderr.read()[-2000:]}")
        rss.append(peak)
    return seconds, rss


def vm_hwm_mb(pid: int) -> float:
    try:
        for line in open(f"/proc/{pid}/status"):
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
    except OSError:
        pass
    return 0.0


def import_breakdown(data_dir: str, store: str, top: int = 8) -> list[tuple[str, float]]:
    """The slowest top-level imports of a default MNIST run (python -X importtime), in seconds."""
    out = subprocess.run(
        [
            sys.executable,
            "-X",
            "importtime",
            "-m",
            "harness",
            "task=mnist",
            f"data_dir={data_dir}",
            "epochs=1",
            "progress=false",
            f"tracking.uri={store}",
            "task.n_train=1000",
        ],
        capture_output=True,
        text=True,
        env=harness_env(),
        cwd=tempfile.gettempdir(),
    )
    found = {}
    for line in out.stderr.splitlines():
        m = re.match(r"import time:\s+\d+ \|\s+(\d+) \| (\S.*)$", line)  # top level: no indentation
        if m:
            found[m.group(2)] = found.get(m.group(2), 0) + int(m.group(1)) / 1e6
    return sorted(found.items(), key=lambda kv: -kv[1])[:top]


def run_sweep(work: Path, name: str, args: list[str], launcher: str, experiment: str | None = None) -> tuple[float, list]:
    """One --multirun in a store of its own: (its wall time, its training runs)."""
    from mlflow.tracking import MlflowClient

    stamp = time.time_ns()
    db = work / f"{name}_{stamp}.db"
    cmd = [
        sys.executable,
        "-m",
        "harness",
        "--multirun",
        f"hydra/launcher={launcher}",
        "progress=false",
        f"tracking.uri=sqlite:///{db}",
        f"hydra.sweep.dir={work / f'multirun_{name}_{stamp}'}",
        *args,
    ]
    t0 = time.perf_counter()
    proc = subprocess.run(cmd, capture_output=True, text=True, env=harness_env(), cwd=work)
    wall = time.perf_counter() - t0
    if proc.returncode != 0:
        raise RuntimeError(f"sweep {name} failed: {proc.stderr[-2000:]}")
    client = MlflowClient(f"sqlite:///{db}")
    runs = [
        r
        for e in client.search_experiments()
        if experiment is None or e.name == experiment
        for r in client.search_runs([e.experiment_id])
        if r.data.tags.get("harness.role") != "sweep"
    ]
    return wall, runs


def sweep_throughput(jobs: int, args: list[str], store_dir: Path) -> dict:
    """The same jobs run one after another and through the joblib launcher: wall time of the whole
    sweep, the span from the first job's start to the last job's end (steady state, without the
    launcher's start-up), and the threads each job used."""
    out = {}
    for name, launcher in (("sequential", "basic"), ("joblib", "joblib")):
        wall, runs = run_sweep(store_dir, f"sweep_{name}", [f"seed=range({jobs})", *args], launcher)
        span = (max(r.info.end_time for r in runs) - min(r.info.start_time for r in runs)) / 1000
        out[name] = {"wall": wall, "span": span, "threads": sorted({r.data.tags["threads"] for r in runs})}
    return out


# ---------------------------------------------------------------- the suite


def loop_rows(row, data_dir, dev, device, store, data, reps, epochs, subset, threads, quick, work) -> None:
    """The rows of one run against a raw loop: loop, tracking, data path, threads, joblib sweeps,
    start-up, memory, quality."""
    # warm-up: import MLflow and open the store once (start-up is timed below, in fresh processes)
    harness_run(data_dir, 1, dev, store, "task.n_train=1000")

    # 1 + 2: loop efficiency and tracking overhead, interleaved so that noise hits all three alike
    raw, on, off = [], [], []
    for _ in range(reps):
        raw.append(statistics.median(raw_loop(data, epochs, 128, threads, device)[1:] or [0]))
        on.append(statistics.median(steady_epochs(harness_run(data_dir, epochs, dev, store, *subset))))
        off.append(statistics.median(steady_epochs(harness_run(data_dir, epochs, dev, store, "tracking.enabled=false", *subset))))
    ratio = stats([a / b for a, b in zip(on, raw)])
    row(
        "loop",
        "loop efficiency: harness s/epoch / raw loop s/epoch",
        stats(on),
        stats(raw),
        ratio,
        "<= 1.10",
        ratio["median"] <= 1.10,
        f"s/epoch, each column's own median: harness {statistics.median(on):.3f}, raw {statistics.median(raw):.3f} "
        "(the result is the median of the paired ratios)",
    )
    ratio = stats([a / b for a, b in zip(on, off)])
    row("tracking", "tracking overhead: MLflow on / off", stats(on), stats(off), ratio, "<= 1.03", ratio["median"] <= 1.03)

    # 3: data path
    batches = 50 if quick else None
    loader_rates, tensor_rates = [], []
    for _ in range(reps):
        s, n = dataloader_epoch(data_dir, 128, threads, device, batches)
        loader_rates.append(n / s)
        s, n = tensor_epoch(data, 128, threads, device, batches)
        tensor_rates.append(n / s)
    ratio = stats([t / d for t, d in zip(tensor_rates, loader_rates)])
    row(
        "data_path",
        "data path: preloaded tensors / torchvision DataLoader (samples/s)",
        stats(tensor_rates),
        stats(loader_rates),
        ratio,
        ">= 20 (expected)",
        ratio["median"] >= 20,
        f"{'first 50 batches' if quick else 'one epoch'}, batch 128",
    )

    # 4: threads
    choices = {"auto": "auto", "1": 1, f"all ({os.cpu_count()})": os.cpu_count()}
    per = {k: [] for k in choices}
    for _ in range(reps):
        for label, t in choices.items():
            r = harness_run(data_dir, epochs, dev, store, "tracking.enabled=false", f"threads={t}", *subset)
            per[label].append(statistics.median(steady_epochs(r)))
    best = min(statistics.median(v) for v in per.values())
    ratio = stats([v / best for v in per["auto"]])
    row(
        "threads",
        "threads: auto s/epoch / best of (1, auto, all)",
        stats(per["auto"]),
        {"median": best},
        ratio,
        "<= 1.10",
        ratio["median"] <= 1.10,
        ", ".join(f"{k}: {statistics.median(v):.3f} s" for k, v in per.items()) + f" (auto = {threads})",
    )

    # 5: sweep throughput, for jobs that do not scale with threads (small regression MLPs) and, in the
    # full run, for the MNIST MLP (which does: 2 threads run it ~1.4x faster than 1)
    kinds = [("regression", ["task=regression", f"epochs={30 if quick else 200}"])]
    if not quick:
        kinds.append(("mnist", ["task=mnist", f"data_dir={data_dir}", "epochs=2", "task.n_train=20000"]))
    for kind, sweep_args in kinds:
        jobs = 8
        wall, span, seen = [], [], {}
        for _ in range(1 if quick else min(2, reps)):  # each repetition is two whole sweeps
            r = sweep_throughput(jobs, sweep_args, work)
            wall.append(r["sequential"]["wall"] / r["joblib"]["wall"])
            span.append(r["sequential"]["span"] / r["joblib"]["span"])
            seen = {k: v["threads"] for k, v in r.items()}
        ratio = stats(wall)
        row(
            f"sweep_{kind}",
            f"sweep throughput, 8 {kind} jobs: sequential / joblib wall time",
            stats(wall),
            None,
            ratio,
            ">= 1.7 (2 cores)" if cores() == 2 else None,
            ratio["median"] >= 1.7 if cores() == 2 else None,
            f"steady state (first job start to last job end) {statistics.median(span):.2f}x; threads per job: "
            f"sequential {seen['sequential']}, joblib {seen['joblib']}",
        )

    # 6 + 7: start-up and memory
    seconds, rss = startup(data_dir, dev, store, reps)
    offenders = import_breakdown(data_dir, store)
    s = stats(seconds)
    row(
        "startup",
        "start-up: process start to first training step (s)",
        s,
        None,
        s,
        "<= 3 s",
        s["median"] <= 3.0,
        "imports: " + ", ".join(f"{m} {t:.2f}s" for m, t in offenders),
    )
    m = stats(rss)
    row("memory", "peak RSS of a default MNIST run (MB)", m, None, m, "<= 1536 MB", m["median"] <= 1536)

    # 8: quality at speed
    q_epochs = 2 if quick else 10
    acc5, acc10, t98 = [], [], []
    for seed in range(1 if quick else 3):
        r = harness_run(data_dir, q_epochs, dev, store, "tracking.enabled=false", f"seed={seed}", *subset)
        accs = [h["test/accuracy"] for h in r.history]
        acc5.append(accs[min(4, len(accs) - 1)])
        acc10.append(accs[-1])
        elapsed, reached = 0.0, None
        for h in r.history:
            elapsed += h["epoch_seconds"]
            if h["test/accuracy"] >= 0.98:
                reached = elapsed
                break
        t98.append(reached)
    a10 = stats(acc10)
    hit = [t for t in t98 if t is not None]
    row(
        "quality",
        f"MNIST test accuracy after {min(5, q_epochs)} / {q_epochs} epochs (default MLP, Adam)",
        a10,
        stats(acc5),
        a10,
        "98% within 10 epochs",
        (len(hit) == len(t98)) if not quick else None,
        f"after {min(5, q_epochs)}: {statistics.median(acc5):.4f}; time to 98%: "
        + (f"{statistics.median(hit):.1f} s of training ({len(hit)}/{len(t98)} seeds)" if hit else "not reached"),
    )


def main(argv=None) -> int:
    p = argparse.ArgumentParser(prog="python -m harness.bench", description=__doc__.split("\n\n")[1])
    p.add_argument("--quick", action="store_true", help="the same measurements, smaller, in about a minute (CI smoke)")
    p.add_argument("--device", default="cpu", help="cpu or cuda (default cpu)")
    p.add_argument(
        "--data-dir",
        default=os.environ.get("HARNESS_DATA_DIR", str(ROOT.parent / "shared" / "data")),
        help="folder holding MNIST/raw (default: $HARNESS_DATA_DIR or ../shared/data)",
    )
    p.add_argument("--out", default=str(ROOT / "reports" / "bench"), help="where bench.md and bench.json go")
    p.add_argument("--reps", type=int, default=None, help="repetitions per figure (default 5, --quick 1)")
    p.add_argument("--sweeps-only", action="store_true", help="only the sweep rows (overhead, stacked launcher, whole process)")
    p.add_argument(
        "--only",
        default=None,
        help="comma-separated parts to run, of: loop, sweeps (or one of its rows: "
        "overhead, outliers, mnist12, whole, fresh, conv), grid, scaling (default: loop,sweeps, plus grid and scaling when asked for)",
    )
    p.add_argument("--grid", action="store_true", help="add the full mnist_optimizers grid (108 runs x 10 epochs; long on a CPU)")
    p.add_argument(
        "--scaling",
        action="store_true",
        help="add a members-per-second vs bundle-size table (bundles of 1 to 64 MNIST MLPs, 2 epochs)",
    )
    args = p.parse_args(argv)
    from harness.bench_sweeps import SWEEP_ROWS

    allowed = ("loop", "sweeps", *SWEEP_ROWS, "grid", "scaling")
    parts = (
        set(args.only.split(","))
        if args.only
        else ({"sweeps"} if args.sweeps_only else {"loop", "sweeps"}) | {k for k in ("grid", "scaling") if getattr(args, k)}
    )
    if not parts or parts - set(allowed):
        print(f"error: --only {args.only!r}: allowed parts are {', '.join(allowed)}", file=sys.stderr)
        return 2

    from harness import HarnessError
    from harness.build import resolve_device
    from harness.tasks.mnist import MNIST

    try:
        device = resolve_device(args.device)
        MNIST(data_dir=args.data_dir, download=False).load()
    except HarnessError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    quick, reps = args.quick, args.reps or (1 if args.quick else 5)
    epochs = 3 if quick else 6
    subset = ["task.n_train=10000"] if quick else []
    from harness.build import resolve_threads

    threads = resolve_threads("auto")
    work = Path(tempfile.mkdtemp(prefix="harness-bench-"))  # the bench's stores and sweep folders; removed at the end
    try:
        return measure(args, parts, device, quick, reps, epochs, subset, threads, work)
    finally:
        shutil.rmtree(work, ignore_errors=True)


def measure(args, parts, device, quick: bool, reps: int, epochs: int, subset: list[str], threads: int, work: Path) -> int:
    from harness.tasks.mnist import MNIST

    dev = str(device)
    store = f"sqlite:///{work}/bench.db"
    rows: list[dict] = []
    t_start = time.perf_counter()

    out = Path(args.out)
    scaling: list[dict] = []

    def save(final: bool = False) -> dict:
        """bench.json and bench.md with what is measured so far: a bench stopped at a time limit keeps its rows."""
        report = {
            "machine": machine(dev),
            "quick": quick,
            "reps": reps,
            "epochs": epochs,
            "threads_auto": threads,
            "seconds": time.perf_counter() - t_start,
            "complete": final,
            "rows": rows,
            "scaling": scaling or None,
            "date": time.strftime("%Y-%m-%d %H:%M"),
        }
        out.mkdir(parents=True, exist_ok=True)
        (out / "bench.json").write_text(json.dumps(report, indent=2))
        (out / "bench.md").write_text(markdown(report))
        return report

    def row(key, measure, a, b, ratio, target=None, met=None, note=""):
        rows.append(
            {
                "key": key,
                "measure": measure,
                "value": a,
                "baseline": b,
                "ratio": ratio,
                "target": target,
                "met": met,
                "note": note,
            }
        )
        save()
        r = ratio["median"] if isinstance(ratio, dict) else ratio
        verdict = (
            ""
            if not target
            else f" (expected: {target})"
            if met is None
            else f" (target {target}: {'met' if met else 'NOT met'})"
        )
        print(f"  {measure}: {r:.3f}{verdict}" + (f"  {note}" if note else ""), flush=True)

    print(f"harness bench on {dev}{' (quick)' if quick else ''}: {reps} repetitions, {epochs} epochs each", flush=True)
    data = (
        None
        if "loop" not in parts
        else MNIST(data_dir=args.data_dir, download=False, **({"n_train": 10000} if quick else {})).load().to(device)
    )

    if "loop" in parts:
        loop_rows(row, args.data_dir, dev, device, store, data, reps, epochs, subset, threads, quick, work)
    from harness import bench_sweeps

    sweeps = bench_sweeps.SWEEP_ROWS if "sweeps" in parts else tuple(k for k in bench_sweeps.SWEEP_ROWS if k in parts)
    bench_sweeps.rows(row, work, args.data_dir, dev, quick, reps, "grid" in parts, sweeps)
    if "scaling" in parts:
        print("members per second vs bundle size (stacked launcher, default MNIST MLP):", flush=True)
        bench_sweeps.scaling(work, args.data_dir, dev, quick, out=scaling, on_line=save)

    report = save(final=True)
    print("\n" + markdown(report))
    print(f"wrote {out / 'bench.md'} and {out / 'bench.json'} in {report['seconds']:.0f} s")
    return 0


def fmt(x) -> str:
    if x is None:
        return ""
    if isinstance(x, dict):
        if "min" in x and x.get("n", 1) > 1:
            return f"{x['median']:.3g} [{x['min']:.3g}, {x['max']:.3g}]"
        return f"{x['median']:.3g}"
    return f"{x:.3g}"


def markdown(report: dict) -> str:
    m = report["machine"]
    stopped = (
        ""
        if report.get("complete", True)
        else "**Incomplete: the bench stopped before its last part; these rows are what it measured.**\n\n"
    )
    head = (
        f"# harness bench{' (quick)' if report['quick'] else ''}\n\n{stopped}"
        f"{report['date']}; {m['cpu']}, {m['cores']} cores; torch {m['torch']}; device {m['device']}"
        + (f" ({m['gpu']})" if "gpu" in m else "")
        + f"; threads=auto -> {report['threads_auto']}; "
        f"median [min, max] of {report['reps']} repetitions (sweeps: 2, quality: 3 seeds); harness runs: MNIST, MLP 784-256-10, Adam, batch 128, "
        f"{report['epochs']} epochs, s/epoch = median of epochs 2..n.\n\n"
    )
    lines = ["| measure | result | target | met | notes |", "|---|---|---|---|---|"]
    for r in report["rows"]:
        met = "" if r["met"] is None else ("yes" if r["met"] else "**no**")
        lines.append(f"| {r['measure']} | {fmt(r['ratio'])} | {r['target'] or ''} | {met} | {r['note']} |")
    text = head + ("\n".join(lines) + "\n" if report["rows"] else "")
    if report.get("scaling"):
        from harness.bench_sweeps import scaling_markdown

        epochs = report["scaling"][0]["epochs"]
        text += (
            f"\nMembers per second against bundle size: one stacked sweep of k seeds of the default MNIST MLP, "
            f"{epochs} epoch{'s' if epochs > 1 else ''} each, one bundle; member-epochs / s = k x epochs / the bundle's "
            "training seconds.\n\n" + scaling_markdown(report["scaling"])
        )
    return text


if __name__ == "__main__":
    sys.exit(main())
