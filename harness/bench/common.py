"""What the benchmark's rows share: the machine, timing statistics, the raw PyTorch loop the harness is
held against, and the harness run in process, as a command and as a sweep."""

from __future__ import annotations

import os
import platform
import re
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

ROOT = Path(__file__).resolve().parent.parent.parent


# ---------------------------------------------------------------- helpers


def cores() -> int:
    from harness.engine.device import usable_cores

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
    from harness.engine.job import compose
    from harness.engine.run import run

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
        assert proc.stdout is not None and proc.stderr is not None
        proc.stdout.readline()  # the header line is printed just before the first training step
        seconds.append(time.perf_counter() - t0)
        # The child's own peak (VmHWM, reset by exec), polled: its ru_maxrss would count this big
        # parent's memory, which the child shares until it execs.
        peak = 0.0
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
    found: dict[str, float] = {}
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


def span(runs: list) -> float:
    """Seconds from the first run's start to the last run's end, as MLflow recorded them."""
    return (max(r.info.end_time for r in runs) - min(r.info.start_time for r in runs)) / 1000


def sweep_throughput(jobs: int, args: list[str], store_dir: Path) -> dict:
    """The same jobs run one after another and through the joblib launcher: wall time of the whole
    sweep, the span from the first job's start to the last job's end (steady state, without the
    launcher's start-up), and the threads each job used."""
    out = {}
    for name, launcher in (("sequential", "basic"), ("joblib", "joblib")):
        wall, runs = run_sweep(store_dir, f"sweep_{name}", [f"seed=range({jobs})", *args], launcher)
        out[name] = {"wall": wall, "span": span(runs), "threads": sorted({r.data.tags["threads"] for r in runs})}
    return out
