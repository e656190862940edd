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
import traceback
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
from harness.sweep import experiment_name, job_context, record_job
from harness.train import Result, train

CONF_DIR = Path(__file__).resolve().parent.parent / "conf"
NOT_IN_HASH = ("tracking", "threads", "data_dir", "progress", "eval_batch_size", "resume")  # knobs that do not change results
NOT_IN_RUN_NAME = ("tracking.", "progress", "hydra", "experiment=", "smoke=", "resume", "data_dir", "threads")
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
    if cfg.lr_scaling not in LR_SCALINGS:
        raise HarnessError(f"lr_scaling must be one of {', '.join(LR_SCALINGS)}, got {cfg.lr_scaling!r}")
    positive_int("lr_reference_batch")
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
    def targets_of(name: str):
        spec = OmegaConf.load(CONF_DIR / "loss" / f"{name}.yaml")
        bases = [d for d in spec.get("defaults", []) if d != "_self_"]  # a variant inherits from its base
        return spec.get("targets") or (targets_of(bases[0]) if bases else None)

    return [p.stem for p in sorted(CONF_DIR.glob("loss/*.yaml")) if targets_of(p.stem) in task.targets]


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


def usable_cores() -> int:
    """The cores this process may run on (its CPU affinity, e.g. a SLURM allocation)."""
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)


def resolve_threads(threads, ctx: dict | None = None) -> int:
    """auto: the cores this process may use, shared among the jobs that a sweep runs at once on this
    machine (joblib's n_jobs, submitit's cpus_per_task, or HARNESS_PARALLEL_JOBS), so that jobs x
    threads never exceeds the cores (oversubscription cost 20x here)."""
    if threads != "auto":
        return int(threads)
    cores = usable_cores()
    if ctx and ctx["launcher"].get("cpus_per_task"):
        return max(1, min(cores, int(ctx["launcher"].cpus_per_task)))
    jobs = ctx["parallel"] if ctx else int(os.environ.get("HARNESS_PARALLEL_JOBS", "1"))
    return max(1, cores // max(1, jobs))


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


LR_SCALINGS = {"none": lambda r: 1.0, "linear": lambda r: r, "sqrt": lambda r: r ** 0.5}


def build_optimizer(cfg: DictConfig, model: torch.nn.Module, batch_size: int) -> torch.optim.Optimizer:
    spec = cfg.optimizer
    if cfg.lr_scaling != "none" and "lr" in spec:  # e.g. the linear scaling rule: lr x batch / reference batch
        spec = OmegaConf.merge(spec, {"lr": spec.lr * LR_SCALINGS[cfg.lr_scaling](batch_size / cfg.lr_reference_batch)})
    factory = build_object(spec, "optimizer")
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


def build(cfg: DictConfig, names: dict[str, str], ctx: dict | None = None) -> Job:
    """Everything a run needs, or a HarnessError saying what is wrong. Opens no MLflow run."""
    check_knobs(cfg)
    check_types(cfg, names)
    task: Task = build_object(cfg.task, "task")
    kind = cfg.loss.targets
    if kind not in task.targets:
        raise HarnessError(f"loss={names['loss']} takes {kind} targets, which task={names['task']} does not have; "
                           f"losses that fit {names['task']}: {', '.join(losses_for(task))}")
    device = resolve_device(str(cfg.device))
    threads = resolve_threads(cfg.threads, ctx)
    torch.set_num_threads(threads)
    torch.manual_seed(cfg.seed)
    if device.type == "cuda":
        torch.backends.cudnn.deterministic, torch.backends.cudnn.benchmark = True, False
    data = task.load().to(device)
    model = task.model().to(device)
    loss = build_loss(cfg, task, data, device)
    n = len(data.train)
    batch_size = n if cfg.batch_size == "full" else min(int(cfg.batch_size), n)
    optimizer = build_optimizer(cfg, model, batch_size)
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


def open_tracker(cfg: DictConfig, experiment: str):
    if not cfg.tracking.enabled:
        return NullTracker()
    return MlflowTracker(cfg.tracking.uri, experiment, cfg.tracking.flush_seconds)


def previous_runs(tracker, config_hash_: str) -> tuple[str | None, list[str]]:
    """(a FINISHED run with this config hash, RUNNING ones left by a killed job) in the experiment."""
    if tracker.run_id is not None or not hasattr(tracker, "client"):
        return None, []
    runs = tracker.client.search_runs([tracker.experiment_id], f"tags.config_hash = '{config_hash_}'")
    finished = [r for r in runs if r.info.status == "FINISHED" and r.data.tags.get("harness.role") != "sweep"]
    return (finished[0].info.run_id if finished else None), [r.info.run_id for r in runs if r.info.status == "RUNNING"]


def compose(*overrides: str) -> DictConfig:
    """The config `python -m harness OVERRIDES` hands to run(), with HydraConfig set as Hydra sets it
    (for in-process runs: tests, the benchmark)."""
    from hydra import compose as hydra_compose, initialize_config_dir
    from hydra.core.hydra_config import HydraConfig
    from omegaconf import open_dict

    with initialize_config_dir(version_base="1.3", config_dir=str(CONF_DIR)):
        cfg = hydra_compose("config", overrides=list(overrides), return_hydra_config=True)
    HydraConfig.instance().set_config(cfg)
    with open_dict(cfg):
        del cfg["hydra"]
    return cfg


def run(cfg: DictConfig) -> Result:
    """One training run; in a --multirun, one job of the sweep (never raises: failures are recorded)."""
    choices, overrides = hydra_choices()
    names = {g: choices.get(g) or str(cfg[g].get("_target_", g)).rsplit(".", 1)[-1]
             for g in ("task", "loss", "optimizer", "schedule") if cfg.get(g) is not None}
    names.setdefault("loss", "none")
    ctx = job_context()
    sweep = (ctx or {}).get("sweep") or {}
    experiment = sweep.get("experiment") or experiment_name(cfg, names["task"])
    chash = config_hash(cfg)
    record = (lambda outcome, **kw: record_job(ctx["dir"], ctx["num"], {"num": ctx["num"], "overrides": ctx["overrides"],
                                                                        "outcome": outcome, **kw})) if ctx else (lambda *a, **k: None)
    tracker = NullTracker()
    try:
        if cfg.tracking.enabled:
            check_reachable(cfg.tracking.uri)  # seconds, before any data is loaded
        if ctx and cfg.tracking.enabled:  # a sweep's store exists already: look for this job's earlier runs
            tracker = open_tracker(cfg, experiment)
            done, stale = previous_runs(tracker, chash)
            for run_id in stale:  # its process died (kill -9, node lost): it will never end by itself
                tracker.client.set_tag(run_id, "outcome", "failed")
                tracker.client.set_tag(run_id, "error", "found RUNNING by a later sweep: its process died; rerun")
                tracker.client.set_terminated(run_id, status="FAILED")
            if done and cfg.resume:
                print(f"skipped: run {done} in {experiment!r} already finished this config (resume=false reruns it)", flush=True)
                record("skipped", run_id=done)
                return Result("skipped", 0)
        job = build(cfg, names, ctx)
        if isinstance(tracker, NullTracker):  # a single run: open the store only now that the input is good
            tracker = open_tracker(cfg, experiment)
    except HarnessError as e:
        if not ctx:
            fail(str(e))
        print(f"error: {e}", file=sys.stderr, flush=True)
        record("failed", error=str(e))
        return Result("failed", 0)

    run_name = ",".join(o for o in overrides if not o.startswith(NOT_IN_RUN_NAME)) or "defaults"
    tags = {"task": names["task"], "loss": names["loss"], "optimizer": names["optimizer"], "schedule": names["schedule"],
            "batch_size": str(cfg.batch_size), "seed": str(cfg.seed), "device": str(job.device), "threads": str(job.threads),
            "config_hash": chash, "harness_version": __version__, "primary_metric": job.task.primary_metric,
            "primary_mode": job.task.mode, "outcome": "running"}
    if commit := git_commit():
        tags["git_commit"] = commit
    if sweep.get("parent_run_id"):
        tags.update({"mlflow.parentRunId": sweep["parent_run_id"], "sweep_id": sweep["sweep_id"]})
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
        record("killed", run_id=tracker.run_id, seconds=time.perf_counter() - t0)
        print("interrupted: the MLflow run is marked KILLED", file=sys.stderr)
        sys.exit(130)
    except BaseException as e:
        tracker.end("FAILED", {"outcome": "failed", "error": f"{type(e).__name__}: {e}"[:5000]})
        if not ctx:
            raise
        traceback.print_exc()  # a failed job does not stop the sweep; the summary counts it
        record("failed", run_id=tracker.run_id, error=f"{type(e).__name__}: {e}", seconds=time.perf_counter() - t0)
        return Result("failed", 0)
    finally:
        signal.signal(signal.SIGTERM, previous)
    seconds = time.perf_counter() - t0
    end_tags = {"outcome": result.outcome, "train_seconds": f"{seconds:.3f}"}
    if result.diverged_epoch is not None:
        end_tags["diverged_epoch"] = str(result.diverged_epoch)
    tracker.end("FINISHED", end_tags)
    primary = result.final.get(job.task.primary_metric, float("nan"))
    record(result.outcome, run_id=tracker.run_id, metric=job.task.primary_metric, value=primary, seconds=seconds)
    if cfg.progress:
        print(f"{result.outcome}" + (f" at epoch {result.diverged_epoch} (NaN/inf loss)" if result.diverged_epoch else "")
              + f": {job.task.primary_metric} {primary:.4f} after {result.epochs} epochs, {seconds:.1f}s", flush=True)
    return result
