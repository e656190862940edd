"""Where a run runs: its device (``device=auto|cpu|cuda|cuda:N``) and that device's name, the CPU threads it
may use without oversubscribing the cores, and the commit of the code it runs."""

from __future__ import annotations

import functools
import os
from pathlib import Path

import torch

from harness import HarnessError
from harness.config.schema import CONF_DIR
from harness.sweep.journal import JobContext


def resolve_device(requested: str) -> torch.device:
    if requested == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if requested == "cpu":
        return torch.device("cpu")
    if requested.startswith("cuda"):
        if not torch.cuda.is_available():
            raise HarnessError(f"device={requested} but no CUDA GPU is visible to torch here; use device=cpu or device=auto")
        try:
            device = torch.device(requested)
        except RuntimeError:
            raise HarnessError(f"device={requested!r} is unknown; allowed: auto, cpu, cuda, cuda:N") from None
        if device.index is not None and device.index >= torch.cuda.device_count():
            raise HarnessError(f"device={requested} but only {torch.cuda.device_count()} GPU(s) are visible")
        return device
    raise HarnessError(f"device={requested!r} is unknown; allowed: auto, cpu, cuda, cuda:N")


@functools.cache
def device_name(device: torch.device) -> str:
    """What the device is, for the record: the GPU's name, or the CPU's model as the OS reports it."""
    if device.type == "cuda":
        return torch.cuda.get_device_name(device)
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    import platform

    return platform.processor() or platform.machine() or "cpu"


def usable_cores() -> int:
    """The cores this process may run on (its CPU affinity, e.g. a SLURM allocation)."""
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)


def resolve_threads(threads, ctx: JobContext | None = None) -> int:
    """auto: the cores this process may use, shared among the jobs that a sweep runs at once on this
    machine (joblib's n_jobs, submitit's cpus_per_task, or HARNESS_PARALLEL_JOBS), so that jobs x
    threads never exceeds the cores (oversubscription cost 20x here)."""
    if threads != "auto":
        return int(threads)
    cores = usable_cores()
    if ctx and ctx.launcher.get("cpus_per_task"):
        return max(1, min(cores, int(ctx.launcher.cpus_per_task)))
    jobs = ctx.parallel if ctx else int(os.environ.get("HARNESS_PARALLEL_JOBS", "1"))
    return max(1, cores // max(1, jobs))


EVAL_CHUNK = 4096
# One CPU thread: at most 256 inputs a chunk, and at most 256 MNIST images' worth of input values (200,704), so that
# a chunk's activations stay in the caches. Measured: the bench's cost_eval rows (docs/performance.md).
EVAL_CHUNK_ONE_THREAD, EVAL_VALUES_ONE_THREAD = 256, 256 * 28 * 28


def resolve_eval_chunk(value, device: torch.device, threads: int, sample_values: int, stacked: bool = False) -> int:
    """The evaluation chunk (``eval_batch_size``) for inputs of ``sample_values`` values each. auto, for a solo
    run on a CPU with one thread: 256 inputs, fewer where they are wide (as many as hold 256 MNIST images' values:
    28 of the 28 x 252 digit strings), since a bigger chunk's activations leave the caches (on one core the small
    CNN evaluated 15,000 images in half the time in chunks of 256 as of 4096, the sequence model its digit strings
    in half the time in chunks of 28 as of 256); 4096 otherwise: a GPU wants big chunks, several threads split a
    small chunk too thin, and a stacked bundle shares its chunk among its members (and sizes its bundles by it).
    Results do not depend on it."""
    if value != "auto":
        return int(value)
    if device.type == "cpu" and threads == 1 and not stacked:
        return max(1, min(EVAL_CHUNK_ONE_THREAD, EVAL_VALUES_ONE_THREAD // max(1, sample_values)))
    return EVAL_CHUNK


@functools.lru_cache(maxsize=1)
def git_commit() -> str | None:
    """The checkout's commit, looked up once per process."""
    import subprocess

    try:
        out = subprocess.run(["git", "rev-parse", "HEAD"], cwd=Path(CONF_DIR).parent, capture_output=True, text=True, timeout=5)
        return out.stdout.strip() or None if out.returncode == 0 else None
    except (OSError, subprocess.SubprocessError):
        return None


@functools.lru_cache(maxsize=1)
def environment() -> dict[str, str]:
    """The software a run ran on, for its tags (looked up once per process): Python, torch and MLflow
    versions, and whether the checkout had uncommitted changes (``git_dirty``: its code is not its commit's)."""
    import platform
    import subprocess
    from importlib.metadata import PackageNotFoundError, version

    env = {"python_version": platform.python_version(), "torch_version": torch.__version__}
    try:
        env["mlflow_version"] = version("mlflow")
    except PackageNotFoundError:
        pass
    try:
        out = subprocess.run(
            ["git", "status", "--porcelain", "--untracked-files=no"],
            cwd=Path(CONF_DIR).parent,
            capture_output=True,
            text=True,
            timeout=5,
        )
        if out.returncode == 0:
            env["git_dirty"] = "true" if out.stdout.strip() else "false"
    except (OSError, subprocess.SubprocessError):
        pass
    return env
