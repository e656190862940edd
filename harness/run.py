"""One run: check the composed config, build task/model/loss/optimizer/schedule, train, track.

Everything that can be wrong with the input is checked before an MLflow run is opened, so bad
input never leaves a half-open run behind; once a run is open it always ends FINISHED, FAILED or
KILLED (Ctrl-C and SIGTERM included).
"""
from __future__ import annotations

import hashlib
import json
import os
import signal
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import torch
import torch.nn.functional as F
from hydra.utils import instantiate
from omegaconf import DictConfig, OmegaConf

from harness import HarnessError, __version__, schedules
from harness.losses import TARGET_KINDS
from harness.tasks import Data, Task
from harness.tracking import MlflowTracker, NullTracker, check_reachable, flatten
from harness.train import Result, train

CONF_DIR = Path(__file__).resolve().parent.parent / "conf"
NOT_IN_HASH = ("tracking", "threads", "data_dir", "progress", "eval_batch_size")  # knobs that do not change results
LR_POINTS_PER_EPOCH = 50  # per-step LR is logged as `lr_step`, thinned to at most this many points per epoch


def fail(message: str, code: int = 2):
    print(f"error: {message}", file=sys.stderr)
    sys.exit(code)


# ---------------------------------------------------------------- checks and choices

def check_knobs(cfg: DictConfig) -> None:
    def positive_int(name):
        v = cfg[name]
        if isinstance(v, bool) or not isinstance(v, int) or v < 1:
            raise HarnessError(f"{name} must be a positive integer, got {v!r}")

    positive_int("epochs")
    positive_int("eval_batch_size")
    if cfg.batch_size != "full":
        if isinstance(cfg.batch_size, bool) or not isinstance(cfg.batch_size, int) or cfg.batch_size < 1:
            raise HarnessError(f"batch_size must be a positive integer or 'full', got {cfg.batch_size!r}")
    if isinstance(cfg.seed, bool) or not isinstance(cfg.seed, int):
        raise HarnessError(f"seed must be an integer, got {cfg.seed!r}")
    if cfg.threads != "auto" and (isinstance(cfg.threads, bool) or not isinstance(cfg.threads, int) or cfg.threads < 1):
        raise HarnessError(f"threads must be 'auto' or a positive integer, got {cfg.threads!r}")
    lr = cfg.optimizer.get("lr")
    if lr is not None and (isinstance(lr, bool) or not isinstance(lr, (int, float)) or lr <= 0):
        raise HarnessError(f"optimizer.lr must be a positive number, got {lr!r}")
    if cfg.get("loss") is None or "_target_" not in cfg.loss:
        raise HarnessError("no loss chosen: pass loss=NAME (see python -m harness --help)")
    if cfg.loss.get("targets") not in TARGET_KINDS:
        raise HarnessError(f"loss.targets must be one of {', '.join(TARGET_KINDS)}, got {cfg.loss.get('targets')!r}")


def check_types(cfg: DictConfig, names: dict[str, str]) -> None:
    """A knob whose shipped default (conf/GROUP/NAME.yaml) is a number or a bool must still be one."""
    for group in ("task", "loss", "optimizer", "schedule"):
        path = CONF_DIR / group / f"{names.get(group)}.yaml"
        if not path.exists() or cfg.get(group) is None:
            continue
        shipped = OmegaConf.to_container(OmegaConf.load(path))  # unresolved: ${data_dir} stays text
        for key, default in shipped.items():
            if key.startswith("_") or key == "defaults" or key not in cfg[group]:
                continue
            value = cfg[group][key]
            if isinstance(default, bool):
                ok, kind = isinstance(value, bool), "true or false"
            elif isinstance(default, (int, float)):
                ok, kind = isinstance(value, (int, float)) and not isinstance(value, bool), "a number"
            else:
                continue
            if not ok:
                raise HarnessError(f"{group}.{key} must be {kind}, got {value!r}")


def losses_for(task: Task) -> list[str]:
    """The loss configs in conf/loss whose targets the task can feed."""
    names = []
    for path in sorted(CONF_DIR.glob("loss/*.yaml")):
        if OmegaConf.load(path).get("targets") in task.targets:
            names.append(path.stem)
    return names


def resolve_device(requested: str) -> torch.device:
    if requested == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if requested == "cpu":
        return torch.device("cpu")
    if requested.startswith("cuda"):
        if not torch.cuda.is_available():
            raise HarnessError(f"device={requested} but no CUDA GPU is visible to torch here; use device=cpu or device=auto")
        device = torch.device(requested)
        if device.index is not None and device.index >= torch.cuda.device_count():
            raise HarnessError(f"device={requested} but only {torch.cuda.device_count()} GPU(s) are visible")
        return device
    raise HarnessError(f"device={requested!r} is unknown; allowed: auto, cpu, cuda, cuda:N")


def resolve_threads(threads) -> int:
    """auto: the cores this process may use, divided among the parallel jobs of a sweep
    (HARNESS_PARALLEL_JOBS, set by the launcher config), so jobs x threads never exceeds the cores."""
    if threads != "auto":
        return int(threads)
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
    jobs = max(1, int(os.environ.get("HARNESS_PARALLEL_JOBS", "1")))
    return max(1, cores // jobs)


def hydra_choices() -> tuple[dict[str, str], list[str]]:
    """The group options chosen (task, loss, ...) and the command-line overrides, when run by Hydra."""
    from hydra.core.hydra_config import HydraConfig

    if not HydraConfig.initialized():
        return {}, []
    hc = HydraConfig.get()
    return dict(hc.runtime.choices), list(hc.overrides.task)


def config_hash(cfg: DictConfig) -> str:
    tree = OmegaConf.to_container(cfg, resolve=True)
    for key in NOT_IN_HASH:
        tree.pop(key, None)
    return hashlib.sha256(json.dumps(tree, sort_keys=True, default=str).encode()).hexdigest()[:16]


def git_commit() -> str | None:
    try:
        out = subprocess.run(["git", "rev-parse", "HEAD"], cwd=CONF_DIR.parent, capture_output=True, text=True, timeout=5)
        return out.stdout.strip() or None if out.returncode == 0 else None
    except (OSError, subprocess.SubprocessError):
        return None


# ---------------------------------------------------------------- building

def class_weights(spec, y: torch.Tensor, num_classes: int, what: str):
    """None, 'balanced' (n / (C * n_c), as scikit-learn), a number (binary focal alpha) or C weights."""
    if spec is None or isinstance(spec, (int, float)):
        return spec
    if spec == "balanced":
        counts = torch.bincount(y, minlength=num_classes).float()
        return len(y) / (num_classes * counts.clamp_min(1.0))
    if isinstance(spec, str):
        raise HarnessError(f"{what} must be null, 'balanced' or a list of {num_classes} numbers, got {spec!r}")
    weights = torch.tensor([float(w) for w in spec])
    if weights.shape != (num_classes,):
        raise HarnessError(f"{what} needs {num_classes} class weights, got {len(weights)}")
    return weights


def build_object(spec, what: str):
    """hydra.utils.instantiate, with any failure turned into one HarnessError line."""
    from hydra.errors import InstantiationException

    try:
        return instantiate(spec)
    except InstantiationException as e:
        if isinstance(e.__cause__, HarnessError):
            raise e.__cause__ from None
        cause = e.__cause__ or e
        raise HarnessError(f"cannot build the {what} {spec.get('_target_')}: {str(cause).splitlines()[0]}") from None
    except HarnessError:
        raise
    except Exception as e:
        raise HarnessError(f"cannot build the {what} {spec.get('_target_')}: {str(e).splitlines()[0]}") from None


def build_loss(cfg: DictConfig, task: Task, data: Data, device: torch.device) -> torch.nn.Module:
    spec = OmegaConf.to_container(cfg.loss, resolve=True)
    spec.pop("targets")
    for key in ("weight", "alpha"):  # class weights: CrossEntropyLoss.weight, FocalLoss.alpha
        if key in spec:
            spec[key] = class_weights(spec[key], data.train.y, task.num_classes, f"loss.{key}")
    return build_object(spec, "loss").to(device)


def targets_fn(kind: str, num_classes: int):
    if kind == "onehot":
        return lambda y: F.one_hot(y, num_classes).float()
    return lambda y: y


def build_optimizer(cfg: DictConfig, model: torch.nn.Module) -> torch.optim.Optimizer:
    factory = build_object(cfg.optimizer, "optimizer")
    try:
        return factory(model.parameters())
    except Exception as e:
        raise HarnessError(f"cannot build the optimizer {cfg.optimizer.get('_target_')}: {e}") from None


def build_schedule(cfg: DictConfig, optimizer, epochs: int, steps_per_epoch: int):
    factory = build_object(cfg.schedule, "schedule")
    try:
        return schedules.build(factory, optimizer, epochs * steps_per_epoch, steps_per_epoch)
    except Exception as e:
        raise HarnessError(f"cannot build the schedule {cfg.schedule.get('_target_')}: {e}") from None


@dataclass
class Job:
    task: Task
    data: Data
    model: torch.nn.Module
    loss: torch.nn.Module
    targets: object
    optimizer: torch.optim.Optimizer
    scheduler: object
    batch_size: int
    device: torch.device
    threads: int


def build(cfg: DictConfig, names: dict[str, str]) -> Job:
    """Everything a run needs, or a HarnessError saying what is wrong. Opens no MLflow run."""
    check_knobs(cfg)
    check_types(cfg, names)
    task: Task = build_object(cfg.task, "task")
    kind = cfg.loss.targets
    if kind not in task.targets:
        raise HarnessError(f"loss={names['loss']} takes {kind} targets, which task={names['task']} does not have; "
                           f"losses that fit {names['task']}: {', '.join(losses_for(task))}")
    device = resolve_device(str(cfg.device))
    threads = resolve_threads(cfg.threads)
    torch.set_num_threads(threads)
    torch.manual_seed(cfg.seed)
    if device.type == "cuda":
        torch.backends.cudnn.deterministic, torch.backends.cudnn.benchmark = True, False
    data = task.load().to(device)
    model = task.model().to(device)
    loss = build_loss(cfg, task, data, device)
    optimizer = build_optimizer(cfg, model)
    n = len(data.train)
    batch_size = n if cfg.batch_size == "full" else min(int(cfg.batch_size), n)
    scheduler = build_schedule(cfg, optimizer, cfg.epochs, -(-n // batch_size))
    return Job(task, data, model, loss, targets_fn(kind, task.num_classes), optimizer, scheduler, batch_size, device, threads)


# ---------------------------------------------------------------- the run

class Stopped(KeyboardInterrupt):
    """SIGTERM (a cluster scheduler, kill) is handled like Ctrl-C: the run is marked KILLED."""


def _on_sigterm(signum, frame):
    raise Stopped()


def print_epoch(epoch: int, epochs: int, m: dict[str, float], primary: str) -> None:
    shown = ["train/loss", "val/loss", primary] + [k for k in ("test/r2", "test/balanced_accuracy") if k in m and k != primary]
    parts = "  ".join(f"{k} {m[k]:.4f}" for k in shown if k in m)
    print(f"epoch {epoch:>{len(str(epochs))}}/{epochs}  {parts}  lr {m['lr']:.3g}  {m['epoch_seconds']:.2f}s", flush=True)


def run(cfg: DictConfig) -> dict[str, float]:
    choices, overrides = hydra_choices()
    names = {g: choices.get(g) or str(cfg[g].get("_target_", g)).rsplit(".", 1)[-1]
             for g in ("task", "loss", "optimizer", "schedule") if cfg.get(g) is not None}
    names.setdefault("loss", "none")
    experiment = cfg.tracking.experiment or names["task"]
    try:
        if cfg.tracking.enabled:
            check_reachable(cfg.tracking.uri)  # seconds, before any data is loaded
        job = build(cfg, names)
        tracker = MlflowTracker(cfg.tracking.uri, experiment, cfg.tracking.flush_seconds) if cfg.tracking.enabled else NullTracker()
    except HarnessError as e:
        fail(str(e))

    run_name = ",".join(o for o in overrides if not o.startswith(("tracking.", "progress", "hydra"))) or "defaults"
    tags = {"task": names["task"], "loss": names["loss"], "optimizer": names["optimizer"], "schedule": names["schedule"],
            "batch_size": str(cfg.batch_size), "seed": str(cfg.seed), "device": str(job.device), "threads": str(job.threads),
            "config_hash": config_hash(cfg), "harness_version": __version__, "primary_metric": job.task.primary_metric,
            "primary_mode": job.task.mode, "outcome": "running"}
    if commit := git_commit():
        tags["git_commit"] = commit
    tracker.start(run_name, tags, flatten(OmegaConf.to_container(cfg, resolve=True)), OmegaConf.to_yaml(cfg, resolve=True))
    if cfg.progress:
        print(f"{run_name}: {names['task']} x {names['loss']} x {names['optimizer']} x {names['schedule']}, "
              f"batch {job.batch_size}, {len(job.data.train)} train samples, {job.device} ({job.threads} threads)"
              + (f", MLflow run {tracker.run_id} in {experiment!r}" if tracker.run_id else ""), flush=True)

    steps_done = 0

    def on_epoch(epoch: int, metrics: dict[str, float], lrs: list[float]) -> None:
        nonlocal steps_done
        stride = max(1, -(-len(lrs) // LR_POINTS_PER_EPOCH))
        for i in range(0, len(lrs), stride):
            tracker.log({"lr_step": lrs[i]}, step=steps_done + i)
        steps_done += len(lrs)
        tracker.log(metrics, step=epoch)
        if cfg.progress:
            print_epoch(epoch, cfg.epochs, metrics, job.task.primary_metric)

    previous = signal.signal(signal.SIGTERM, _on_sigterm)
    t0 = time.perf_counter()
    try:
        result: Result = train(job.model, job.task, job.data, job.loss, job.targets, job.optimizer, job.scheduler,
                               epochs=cfg.epochs, batch_size=job.batch_size, generator=torch.Generator().manual_seed(cfg.seed),
                               on_epoch=on_epoch, eval_batch_size=cfg.eval_batch_size)
    except KeyboardInterrupt:
        tracker.end("KILLED", {"outcome": "killed"})
        print("interrupted: the MLflow run is marked KILLED", file=sys.stderr)
        sys.exit(130)
    except BaseException as e:
        tracker.end("FAILED", {"outcome": "failed", "error": f"{type(e).__name__}: {e}"[:5000]})
        raise
    finally:
        signal.signal(signal.SIGTERM, previous)
    end_tags = {"outcome": result.outcome, "train_seconds": f"{time.perf_counter() - t0:.3f}"}
    if result.diverged_epoch is not None:
        end_tags["diverged_epoch"] = str(result.diverged_epoch)
    tracker.end("FINISHED", end_tags)
    if cfg.progress:
        primary = result.final.get(job.task.primary_metric, float("nan"))
        print(f"{result.outcome}" + (f" at epoch {result.diverged_epoch} (NaN/inf loss)" if result.diverged_epoch else "")
              + f": {job.task.primary_metric} {primary:.4f} after {result.epochs} epochs, {time.perf_counter() - t0:.1f}s", flush=True)
    return result.final
