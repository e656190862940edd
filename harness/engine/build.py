"""Building a job from its checked config: task and data, model, and its ``Parts``, the same for both engines.

Nothing here touches MLflow. Objects come from ``hydra.utils.instantiate`` after
``harness.config.checks`` has looked at every knob and at what each ``_target_`` names (the loss, optimizer
and schedule through ``harness.engine.components``); any failure to build is one ``HarnessError`` line. Within one process, a task's data is loaded once and reused by
every job that asks for the same task config (a sweep over seeds or losses reads it once).
"""

from __future__ import annotations

import json
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass

import torch
from omegaconf import DictConfig, OmegaConf

from harness import HarnessError
from harness.config.schema import CONF_DIR, epochs_of, seed_of
from harness.config.values import plain
from harness.engine.components import build_loss, build_object, build_optimizer, build_schedule, optimizer_factory, try_step
from harness.engine.device import resolve_device, resolve_eval_chunk, resolve_threads
from harness.sweep.journal import JobContext
from harness.tasks import Data, Task

DATA_CACHE_SIZE = 3  # task configs whose data a process keeps (a sweep over one task's knob reuses them)


# ---------------------------------------------------------------- task and data

_data: OrderedDict[str, tuple[Task, Data]] = OrderedDict()


def task_key(cfg: DictConfig) -> str:
    return json.dumps(plain(cfg.task), sort_keys=True, default=str)


def task_and_data(cfg: DictConfig, names: dict[str, str], device: torch.device, cache: dict | None = None) -> tuple[Task, Data]:
    """The task and its data on the device, loaded once per process per task config (kept in
    ``cache`` if given, else in a small process-wide cache). The loss is checked against the task's
    targets before any data is read."""
    store = _data if cache is None else cache
    key = f"{task_key(cfg)}|{device}"
    if key not in store:
        task: Task = build_object(cfg.task, "task")
        check_fit(cfg, names, task)
        data = task.load()
        check_data(data, names.get("task", "?"))
        store[key] = (task, data.to(device))
        if store is _data:
            while len(_data) > DATA_CACHE_SIZE:
                _data.popitem(last=False)
    if store is _data:
        _data.move_to_end(key)
    task, data = store[key]
    check_fit(cfg, names, task)
    return task, data


def check_data(data: Data, task: str) -> None:
    """Loaded data must be finite numbers: an inf in a CSV, or a split too small to standardise
    (its std is NaN), would otherwise train to a 'diverged' run with no word on why."""
    for split in ("train", "val", "test"):
        part = getattr(data, split)
        if len(part) == 0:
            raise HarnessError(f"task={task}: its {split} split is empty; give it more samples")
        for what, t in (("inputs", part.x), ("targets", part.y)):
            # one reduction pass: a NaN or inf anywhere makes the sum non-finite (a sum that merely overflows
            # is checked element by element), without a mask the size of the data
            if t.is_floating_point() and not bool(torch.isfinite(t.sum())) and not bool(torch.isfinite(t).all()):
                bad = int((~torch.isfinite(t)).sum())
                raise HarnessError(
                    f"task={task}: the {split} {what} hold {bad} value(s) that are not finite numbers (NaN or "
                    "inf) once loaded; the data must be finite (check the file for inf or numbers beyond "
                    "float32's 3.4e38, and the task's sizes: one training sample cannot be standardised)"
                )


def init_model(task: Task, seed: int, device: torch.device) -> torch.nn.Module:
    """The model a run with this seed starts from (seeded right before it is built: the same
    weights whether it trains alone or in a bundle)."""
    torch.manual_seed(seed)
    return task.model().to(device)


def losses_for(task: Task) -> list[str]:
    """The loss configs in conf/loss whose targets the task can feed."""

    def targets_of(name: str):
        spec = OmegaConf.load(CONF_DIR / "loss" / f"{name}.yaml")
        assert isinstance(spec, DictConfig), f"conf/loss/{name}.yaml is a mapping"
        bases = [d for d in spec.get("defaults", []) if d != "_self_"]  # a variant inherits from its base
        return spec.get("targets") or (targets_of(bases[0]) if bases else None)

    return [p.stem for p in sorted(CONF_DIR.glob("loss/*.yaml")) if targets_of(p.stem) in task.targets]


def check_fit(cfg: DictConfig, names: dict[str, str], task: Task) -> None:
    kind = cfg.loss.targets
    if kind not in task.targets:
        raise HarnessError(
            f"loss={names['loss']} takes {kind} targets, which task={names['task']} does not have; "
            f"losses that fit {names['task']}: {', '.join(losses_for(task))}"
        )


def batch_size_of(cfg: DictConfig, n: int) -> int:
    return n if cfg.batch_size == "full" else min(int(cfg.batch_size), n)


# ---------------------------------------------------------------- one whole job


@dataclass
class Parts:
    """What a job's config builds into, the same for a solo run and a bundle's member: its task and data on
    the device, its model (seeded by ``init_seed``), its loss and the kind of targets that loss takes, and
    its optimizer recipe (LR scaled for its batch size), already tried for one step on a copy of the model."""

    cfg: DictConfig
    task: Task
    data: Data
    device: torch.device
    threads: int
    model: torch.nn.Module
    loss: torch.nn.Module
    targets: str  # the loss's target kind: index, onehot, real, embedding, ... (``train.as_targets``)
    factory: Callable  # parameters -> optimizer
    batch_size: int
    data_key: str  # equal for jobs whose task config (and so data) is equal

    @property
    def steps_per_epoch(self) -> int:
        return -(-len(self.data.train) // self.batch_size)

    def eval_batch_size(self, stacked: bool = False) -> int:
        """Its evaluation chunk (``eval_batch_size``, auto resolved for its device and threads, solo or stacked)."""
        return resolve_eval_chunk(self.cfg.eval_batch_size, self.device, self.threads, self.data.train.x[0].numel(), stacked)

    @property
    def epochs(self) -> int:
        """The epochs it trains: ``epochs``, or as many as its ``steps`` budget takes at its batch size."""
        return epochs_of(self.cfg, self.steps_per_epoch)

    def make_optimizer(self, params) -> torch.optim.Optimizer:
        return build_optimizer(self.cfg, params, self.batch_size, self.factory)

    def make_scheduler(self, optimizer):
        return build_schedule(self.cfg, optimizer, self.epochs, self.steps_per_epoch)


def setup(
    cfg: DictConfig, names: dict[str, str], ctx: JobContext | None = None, cache: dict | None = None
) -> tuple[Task, Data, torch.device, int]:
    """The task, its data on the device, and the threads: what every member of a bundle shares.
    The config must have passed ``harness.config.checks.check_config``."""
    device = resolve_device(str(cfg.device))
    task, data = task_and_data(cfg, names, device, cache)
    threads = resolve_threads(cfg.threads, ctx)
    torch.set_num_threads(threads)
    if device.type == "cuda":
        torch.backends.cudnn.deterministic, torch.backends.cudnn.benchmark = True, False
    return task, data, device, threads


def assemble(cfg: DictConfig, names: dict[str, str], ctx: JobContext | None = None, cache: dict | None = None) -> Parts:
    """A job's parts (after ``check_config``), or a HarnessError saying what is wrong. Opens no MLflow run.
    Both engines build a job with it: ``build`` for the plain loop, ``bundles.prepare`` for a bundle."""
    task, data, device, threads = setup(cfg, names, ctx, cache)
    model = init_model(task, seed_of(cfg, "init_seed"), device)
    loss = build_loss(cfg, task, data, device)
    batch_size = batch_size_of(cfg, len(data.train))
    factory = optimizer_factory(cfg, batch_size)
    parts = Parts(cfg, task, data, device, threads, model, loss, cfg.loss.targets, factory, batch_size, task_key(cfg))
    try_step(cfg, task, model, batch_size, parts.steps_per_epoch, factory)
    return parts


@dataclass
class Job:
    """A solo run's parts, with its optimizer and schedule built on its model: what the plain loop trains."""

    parts: Parts
    optimizer: torch.optim.Optimizer
    scheduler: object

    def train(self, epochs: int, seed: int, on_epoch):
        """Train this job's model with the plain loop (``harness.engine.train``), shuffled by ``seed``, evaluating
        in its config's chunks (``Parts.eval_batch_size``)."""
        from harness.engine.train import train

        p = self.parts
        return train(
            p.model,
            p.task,
            p.data,
            p.loss,
            p.targets,
            self.optimizer,
            self.scheduler,
            epochs=epochs,
            batch_size=p.batch_size,
            generator=torch.Generator().manual_seed(seed),
            on_epoch=on_epoch,
            eval_batch_size=p.eval_batch_size(),
        )


def build(cfg: DictConfig, names: dict[str, str], ctx: JobContext | None = None) -> Job:
    """A solo run, ready to train (after ``check_config``), or a HarnessError. Opens no MLflow run."""
    parts = assemble(cfg, names, ctx)
    optimizer = parts.make_optimizer(parts.task.param_groups(parts.model))
    return Job(parts, optimizer, parts.make_scheduler(optimizer))


def metric_names(cfg: DictConfig, names: dict[str, str]) -> list[str]:
    """The metrics a run of this config logs per split (``val/loss``, ``val/mse``, ...), found by evaluating
    its untrained model once on the validation split (for a search's objective, checked before it runs)."""
    from harness.engine.train import evaluate, metric_extras

    task, data, device, threads = setup(cfg, names)
    model = init_model(task, 0, device)
    loss = build_loss(cfg, task, data, device)
    chunk = resolve_eval_chunk(cfg.eval_batch_size, device, threads, data.train.x[0].numel())
    keys = evaluate(model, task, data.val, loss, cfg.loss.targets, chunk, **metric_extras(task, loss, model, data, chunk))
    return [f"{split}/{k}" for split in ("train", "val", "test") for k in keys] + ["epoch_seconds", "samples_per_second"]
