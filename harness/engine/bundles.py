"""Which jobs of a sweep stack: group them into bundles (``plan``), bounded by members and memory.

A bundle is a set of jobs that train as one stacked model (``harness.engine.stacked``). Its members may
differ in ``MEMBER_KEYS`` (seed, loss, optimizer, schedule, LR scaling) and in the task's data
knobs (outlier fraction, imbalance ratio, normalisation, ...) as long as their data have the same
shapes; they share the model architecture, batch size, epochs, device, threads and tracking.
Every member is checked and looked up for resume exactly as a solo job is (``harness.engine.run.admit``)
and gets its own MLflow run (``harness.engine.record.RunRecord``), tagged with its bundle and the bundle's
size. A job that cannot join a bundle runs as an ordinary job of the same sweep, with one line
saying why. Bundles are bounded by a member count and by memory. ``harness.engine.launch`` runs them.
"""

from __future__ import annotations

import copy
import json
from dataclasses import dataclass

import torch
from omegaconf import DictConfig, open_dict, read_write

from harness import HarnessError
from harness.config import schema, traits
from harness.config.values import plain
from harness.engine.build import Parts, assemble, setup
from harness.engine.job import Spec, spec_from_hydra
from harness.engine.run import UNSELECTED, admit, pass_over, refuse, skip
from harness.engine.stacked_model import batched_mlp, stackable
from harness.engine.train import Result
from harness.optimizers import needs_closure

MEMBER_KEYS = schema.member_keys()  # seed, loss, optimizer, schedule, lr_scaling, lr_reference_batch
MEMORY_SHARE = {"cuda": 0.5, "cpu": 0.25}  # share of free GPU / available RAM the bundles may use by default
WORKERS_GPU = 4  # bundles trained at once on a GPU, each in its own process (hydra.launcher.workers=null)
MIN_SPLIT = 16  # a group of compatible jobs is split among the workers only into bundles at least this big
# (a worker's start costs seconds; a smaller bundle trains in less)
ALONE = "no other job of the sweep shares its model, data shapes, batch size and epochs"
CPU_VMAP = (
    "on a CPU a stacked convolutional model (vmap) trains slower than its jobs one after another "
    "(hydra.launcher.vmap_on_cpu=true stacks it anyway)"
)


@dataclass
class Entry:
    """One job of the sweep as the launcher sees it."""

    cfg: DictConfig  # as Hydra composed it, hydra node included
    spec: Spec  # what the job is: ``Entry.of`` reads it from cfg
    tracker: object = None
    result: Result | None = None
    solo: str | None = None  # why it runs as an ordinary job (None: it may join a bundle)
    parts: Parts | None = None  # built by ``prepare`` (as a solo run's are, ``build.assemble``)
    shared_optimizer: bool = False  # its optimizer's traits say stacking: shared
    per_sample_mean: bool = False  # its loss's traits say so

    @classmethod
    def of(cls, cfg: DictConfig) -> Entry:
        """The job Hydra composed (hydra node included), with its spec read from it."""
        return cls(cfg, spec_from_hydra(task_config(cfg), cfg.hydra))

    @property
    def built(self) -> Parts:
        """Its parts, once ``prepare`` has built them (a bundle's members always have)."""
        assert self.parts is not None, "prepare() builds an entry's parts before it joins a bundle"
        return self.parts


def task_config(cfg: DictConfig) -> DictConfig:
    """The config a task function gets: the composed one without its hydra node."""
    out = copy.deepcopy(cfg)
    with read_write(out), open_dict(out):
        del out["hydra"]
    return out


def _json(tree) -> str:
    return json.dumps(tree, sort_keys=True, default=str)


def bundle_key(cfg: DictConfig) -> str:
    """What members must share in their configs; the task's knobs are compared by what they build
    (``signature``), so that jobs on data sets of the same shapes can share a bundle."""
    tree = plain(cfg)
    for key in MEMBER_KEYS + schema.free_keys():
        tree.pop(key, None)
    tree["task"] = tree["task"].get("_target_")
    return _json(tree)


def signature(task, data, model: torch.nn.Module) -> str:
    """The model's architecture and the shapes of the data it trains on."""
    splits = [(tuple(s.x.shape), str(s.x.dtype), tuple(s.y.shape), str(s.y.dtype)) for s in (data.train, data.val, data.test)]
    return _json(
        [
            type(task).__qualname__,
            task.num_classes,
            str(model),
            [(n, tuple(p.shape)) for n, p in model.named_parameters()],
            splits,
        ]
    )


def optimizer_key(cfg: DictConfig) -> str:
    return _json(
        [
            plain(cfg[k]) if isinstance(cfg[k], DictConfig) else cfg[k]
            for k in ("optimizer", "schedule", "lr_scaling", "lr_reference_batch")
        ]
    )


def loss_key(cfg: DictConfig) -> str:
    return _json(plain(cfg.loss))


def switches_mode(cls) -> str | None:
    """Why an optimizer class cannot train a bundle's member whatever its traits say (None: it can)."""
    if callable(getattr(cls, "eval", None)) and callable(getattr(cls, "train", None)):
        return f"{cls.__name__} switches between training and averaged weights, which the stacked loop does not do"
    return None


def memory_budget(device: torch.device, memory_gb: float | None) -> float:
    if memory_gb is not None:
        return memory_gb * 2**30
    if device.type == "cuda":
        return MEMORY_SHARE["cuda"] * torch.cuda.mem_get_info(device)[0]
    import psutil

    return MEMORY_SHARE["cpu"] * psutil.virtual_memory().available


def member_bytes(model: torch.nn.Module, sample: torch.Tensor, batch_size: int, n_train: int, eval_chunk: int) -> int:
    """A member's memory in a bundle, estimated: parameters with their gradient and two optimizer
    states, the activations of a training step (kept for backward) or of an evaluation chunk, and
    the epoch's outputs kept for the running training metrics."""
    sizes: list[int] = []
    hooks = [
        m.register_forward_hook(lambda mod, inp, out: sizes.append(out[0].numel()))
        for m in model.modules()
        if not list(m.children())
    ]
    with torch.no_grad():
        out = model(sample[:1])
    for h in hooks:
        h.remove()
    per_sample = sum(sizes)
    params = sum(p.numel() for p in model.parameters())
    return 4 * (4 * params + max(2 * batch_size * per_sample, eval_chunk * per_sample) + n_train * out[0].numel())


NEEDS = {"gallery": "the training set beside each split"}  # see Task.needs; "decode" is given (Bundle.extras)


# ---------------------------------------------------------------- the plan


def admit_all(entries: list[Entry]) -> list[Entry]:
    """Check each job and look for its earlier runs, as a solo job would; returns those that still have to run."""
    todo = []
    for e in entries:
        try:
            e.tracker, done = admit(e.spec)
        except HarnessError as err:
            e.result = refuse(e.spec, err)
            continue
        if done == UNSELECTED:
            e.result = pass_over(e.spec)
            continue
        if done:
            e.result = skip(e.spec, done)
            continue
        todo.append(e)
    return todo


def prepare(e: Entry, loaded: dict) -> None:
    """Build a job's parts as a solo run's are built (``build.assemble``: data cached per task config, model,
    loss, optimizer recipe tried for one step on a copy of its model, so that a bad one fails this job
    alone), then read its traits. Sets ``e.solo`` if it cannot be stacked, ``e.result`` if its config is bad."""
    spec = e.spec
    cfg = spec.cfg
    try:
        task, _, _, _ = setup(cfg, spec.names, spec.ctx, cache=loaded)
        if task.own_step:  # decided by the task alone: nothing else needs building
            e.solo = "its task trains with its own step (two players), which a stacked step does not do"
            return
        if needs := [n for n in task.needs if n in NEEDS]:
            e.solo = f"its task's metrics need {' and '.join(NEEDS[n] for n in needs)}, which a stacked evaluation does not give"
            return
        parts = assemble(cfg, spec.names, spec.ctx, cache=loaded)
        cls = getattr(parts.factory, "func", parts.factory)
        if isinstance(cls, type) and needs_closure(cls):
            e.solo = f"its optimizer {cls.__module__}.{cls.__name__} needs a closure, which a stacked step cannot give"
            return
        if isinstance(cls, type) and (why := switches_mode(cls)):
            e.solo = f"its optimizer: {why}"
            return
        opt = traits.of(cfg, "optimizer", spec.names.get("optimizer"), spec.overrides)
        if opt.stacking == "solo":
            e.solo = f"its optimizer: {opt.why or 'its traits say stacking: solo'}"
            return
        e.parts = parts
        e.shared_optimizer = opt.stacking == "shared"
        e.per_sample_mean = traits.of(cfg, "loss", spec.names.get("loss"), spec.overrides).per_sample_mean
    except HarnessError as err:
        e.result = refuse(e.spec, err)


def plan(
    entries: list[Entry], max_members: int, memory_gb: float | None, workers: int | None = 1, vmap_on_cpu: bool = False
) -> list[list[Entry]]:
    """Units of work in sweep order: bundles (2+ entries) and solo jobs (1 entry, its reason in ``solo``).
    On a CPU, models that only vmap can stack (anything but a plain MLP) run alone unless ``vmap_on_cpu``:
    on a 2-core CPU a bundle of 8 sequence models trained in 1.22x the time of training them one by one
    (``python -m harness.bench --only conv``)."""
    groups: dict[str, list[Entry]] = {}
    for e in entries:
        groups.setdefault(bundle_key(e.spec.cfg), []).append(e)
    units: list[list[Entry]] = []
    loaded: dict = {}  # each distinct task config's data, loaded once for the whole plan
    for group in groups.values():
        if len(group) == 1:  # nothing to share: no need to build anything here
            group[0].solo = ALONE
            units.append(group)
            continue
        shapes: dict[str, list[Entry]] = {}
        for e in group:
            prepare(e, loaded)
            if e.result is None and e.solo is None:
                shapes.setdefault(signature(e.built.task, e.built.data, e.built.model), []).append(e)
        for ready in shapes.values():
            head = ready[0].built
            why = stackable(head.model, head.data.train.x) if len(ready) > 1 else ALONE
            if why is None and head.device.type == "cpu" and not vmap_on_cpu and batched_mlp(head.model) is None:
                why = CPU_VMAP
            for e in ready:
                e.solo = why
        units += [[e] for e in group if e.solo is not None and e.result is None]
        for ready in shapes.values():
            if ready[0].solo is None:
                units += split(ready, max_members, memory_gb, workers)
    return units


def resolve_workers(workers: int | None, device: torch.device) -> int:
    """How many bundles train at once: as asked, else 1 on a CPU (one bundle's threads already use its
    cores) and WORKERS_GPU on a GPU (a bundle of small models leaves it mostly idle: its steps are
    bound by launching kernels, which processes side by side overlap)."""
    return workers if workers is not None else (WORKERS_GPU if device.type == "cuda" else 1)


def split(ready: list[Entry], max_members: int, memory_gb: float | None, workers: int | None = 1) -> list[list[Entry]]:
    """Bundles of at most max_members that fit the memory budget (shared by the bundles that train
    at once), one per worker where that leaves each at least MIN_SPLIT members; members that may
    share an optimizer (and a loss call) side by side."""
    head = ready[0]
    x = head.built.data.train.x
    n = resolve_workers(workers, head.built.device)
    per_member = member_bytes(head.built.model, x, head.built.batch_size, len(x), head.built.eval_batch_size(stacked=True))
    share = max(min(MIN_SPLIT, len(ready)), -(-len(ready) // n))  # one bundle per worker, unless that leaves them small
    size = max(1, min(max_members, share, int(memory_budget(head.built.device, memory_gb) / n // max(1, per_member))))
    ready.sort(key=lambda e: (optimizer_key(e.spec.cfg), loss_key(e.spec.cfg)))
    count = -(-len(ready) // size)
    base, extra = divmod(len(ready), count)  # as even as the bound allows: 108 in bundles of <= 64 -> 54 + 54
    bounds = [0]
    for i in range(count):
        bounds.append(bounds[-1] + base + (i < extra))
    out = [ready[a:b] for a, b in zip(bounds, bounds[1:])]
    for unit in out:
        if len(unit) == 1:
            unit[0].solo = "the member count or memory bound left it alone in its bundle"
    return out
