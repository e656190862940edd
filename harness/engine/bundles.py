"""The stacked launcher's work: group a sweep's jobs into bundles and run each bundle's members.

A bundle is a set of jobs that train as one stacked model (``harness.engine.stacked``). Its members may
differ in ``MEMBER_KEYS`` (seed, loss, optimizer, schedule, LR scaling) and in the task's data
knobs (outlier fraction, imbalance ratio, normalisation, ...) as long as their data have the same
shapes; they share the model architecture, batch size, epochs, device, threads and tracking.
Every member is checked and looked up for resume exactly as a solo job is (``harness.engine.run.admit``)
and gets its own MLflow run (``harness.engine.run.RunRecord``), tagged with its bundle and the bundle's
size. A job that cannot join a bundle runs as an ordinary job of the same sweep, with one line
saying why. Bundles are bounded by a member count and by memory.
"""

from __future__ import annotations

import contextlib
import copy
import json
import sys
import time
import traceback
from collections.abc import Callable
from dataclasses import dataclass, field

import torch
from omegaconf import DictConfig, OmegaConf, open_dict, read_write

from harness import HarnessError
from harness.config import schema, traits
from harness.engine.build import (
    batch_size_of,
    build_loss,
    build_optimizer,
    build_schedule,
    init_model,
    optimizer_factory,
    resolve_threads,
    setup,
    task_key,
    try_step,
)
from harness.engine.run import RunRecord, Spec, admit, ending, failure, open_tracker, refuse, skip, spec_from_hydra
from harness.engine.stacked import Member, batched_mlp, stackable, train_stacked
from harness.engine.train import Result
from harness.optimizers import needs_closure
from harness.sweep.journal import job_recorded, show_progress
from harness.tracking.runs import FlushGroup

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
    spec: Spec | None = None
    tracker: object = None
    result: Result | None = None
    solo: str | None = None  # why it runs as an ordinary job (None: it may join a bundle)
    parts: dict = field(default_factory=dict)


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
    tree = OmegaConf.to_container(cfg, resolve=True)
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
            OmegaConf.to_container(cfg[k], resolve=True) if isinstance(cfg[k], DictConfig) else cfg[k]
            for k in ("optimizer", "schedule", "lr_scaling", "lr_reference_batch")
        ]
    )


def loss_key(cfg: DictConfig) -> str:
    return _json(OmegaConf.to_container(cfg.loss, resolve=True))


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
        e.spec = spec_from_hydra(task_config(e.cfg), e.cfg.hydra)
        try:
            e.tracker, done = admit(e.spec)
        except HarnessError as err:
            e.result = refuse(e.spec, err)
            continue
        if done:
            e.result = skip(e.spec, done)
            continue
        todo.append(e)
    return todo


def prepare(e: Entry, loaded: dict) -> None:
    """Build a job's data (cached per task config), model, loss and optimizer recipe, and try its
    optimizer and schedule on its own model once, so that a bad one fails this job alone. Sets
    ``e.solo`` if it cannot be stacked, ``e.result`` if its config is bad."""
    spec = e.spec
    assert spec is not None  # admit_all set it
    cfg = spec.cfg
    try:
        task, data, device, _ = setup(cfg, spec.names, spec.ctx, cache=loaded)
        if task.own_step:  # decided by the task alone: nothing else needs building
            e.solo = "its task trains with its own step (two players), which a stacked step does not do"
            return
        if needs := [n for n in task.needs if n in NEEDS]:
            e.solo = f"its task's metrics need {' and '.join(NEEDS[n] for n in needs)}, which a stacked evaluation does not give"
            return
        n = len(data.train)
        batch_size = batch_size_of(cfg, n)
        model = init_model(task, cfg.seed, device)
        factory = optimizer_factory(cfg, batch_size)
        cls = getattr(factory, "func", factory)
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
        try_step(cfg, task, model, batch_size, -(-n // batch_size), factory)
        e.parts = {
            "task": task,
            "data": data,
            "data_key": task_key(cfg),
            "device": device,
            "model": model,
            "loss": build_loss(cfg, task, data, device),
            "shared_optimizer": opt.stacking == "shared",
            "per_sample_mean": traits.of(cfg, "loss", spec.names.get("loss"), spec.overrides).per_sample_mean,
            "factory": factory,
            "batch_size": batch_size,
        }
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
                shapes.setdefault(signature(e.parts["task"], e.parts["data"], e.parts["model"]), []).append(e)
        for ready in shapes.values():
            head = ready[0].parts
            why = stackable(head["model"], head["data"].train.x) if len(ready) > 1 else ALONE
            if why is None and head["device"].type == "cpu" and not vmap_on_cpu and batched_mlp(head["model"]) is None:
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
    x = head.parts["data"].train.x
    n = resolve_workers(workers, head.parts["device"])
    per_member = member_bytes(head.parts["model"], x, head.parts["batch_size"], len(x), head.spec.cfg.eval_batch_size)
    share = max(min(MIN_SPLIT, len(ready)), -(-len(ready) // n))  # one bundle per worker, unless that leaves them small
    size = max(1, min(max_members, share, int(memory_budget(head.parts["device"], memory_gb) / n // max(1, per_member))))
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


# ---------------------------------------------------------------- a bundle's life


def member(e: Entry, on_epoch: Callable, steps_per_epoch: int, data_index: int = 0) -> Member:
    """A prepared entry as a member of a stacked model: its own model, loss, optimizer and schedule."""
    cfg, batch_size = e.spec.cfg, e.parts["batch_size"]
    return Member(
        model=e.parts["model"],
        loss=e.parts["loss"],
        targets=cfg.loss.targets,
        seed=cfg.seed,
        on_epoch=on_epoch,
        shared_optimizer=e.parts["shared_optimizer"],
        make_optimizer=lambda params: build_optimizer(cfg, params, batch_size, e.parts["factory"]),
        make_scheduler=lambda opt: build_schedule(cfg, opt, cfg.epochs, steps_per_epoch),
        opt_key=optimizer_key(cfg),
        loss_key=loss_key(cfg),
        per_sample_mean=e.parts["per_sample_mean"],
        data=data_index,
    )


def run_bundle(entries: list[Entry], label: str, threads: int) -> None:
    """Train the entries as one stacked model on ``threads`` threads (the launcher's share of the cores);
    each ends with its own record (FINISHED, FAILED or KILLED)."""
    head = entries[0]
    task, batch_size = head.parts["task"], head.parts["batch_size"]
    torch.set_num_threads(threads)
    datasets: dict[str, int] = {}  # task config -> the index of its data set in the bundle
    for e in entries:
        datasets.setdefault(e.parts["data_key"], len(datasets))
    steps = -(-len(head.parts["data"].train) // batch_size)
    records: list[RunRecord] = []
    t0 = time.perf_counter()
    try:
        with ending(records, task.primary_metric):
            run_members(entries, records, label, threads, steps, datasets)
    except KeyboardInterrupt:  # ending() closed the open runs as KILLED
        raise
    except Exception as err:  # the shared part broke: ending() closed every open member's run as FAILED with it
        message = failure(err)
        if not isinstance(err, HarnessError):
            traceback.print_exc()
        print(f"error: bundle {label} failed: {message}", file=sys.stderr, flush=True)
        for e in entries[len(records) :]:  # never opened a run
            e.spec.journal("failed", error=message)
        for e in entries:
            e.result = e.result or Result("failed", 0)
        return
    counts = {k: sum(e.result.outcome == k for e in entries) for k in ("finished", "diverged", "failed")}
    print(f"bundle {label}: {', '.join(f'{v} {k}' for k, v in counts.items())} in {time.perf_counter() - t0:.1f}s", flush=True)
    show_progress(head.spec.ctx, force=True)


def run_members(entries: list[Entry], records: list[RunRecord], label: str, threads: int, steps: int, datasets: dict) -> None:
    """Open each member's run (appending to ``records`` as they open, so that ``ending`` closes the open
    ones), train the bundle, and end each member's run with its own outcome."""
    head = entries[0]
    cfg, task, device, batch_size = head.spec.cfg, head.parts["task"], head.parts["device"], head.parts["batch_size"]
    writes = FlushGroup()  # the members' metrics go to the store together
    for e in entries:
        record = RunRecord(e.spec, e.tracker or open_tracker(e.spec))
        writes.join(record.tracker)
        record.start(
            e.parts["task"],
            device,
            threads,
            batch_size,
            cfg.epochs * steps,
            extra_tags={"bundle": label, "bundle_size": str(len(entries))},
        )
        records.append(record)
    members = [member(e, r.epoch, steps, datasets[e.parts["data_key"]]) for e, r in zip(entries, records)]
    data_list = [None] * len(datasets)
    for e in entries:
        data_list[datasets[e.parts["data_key"]]] = (e.parts["task"], e.parts["data"])
    names = [e.spec.run_name for e in entries]
    results = train_stacked(
        data_list,
        members,
        epochs=cfg.epochs,
        batch_size=batch_size,
        eval_batch_size=cfg.eval_batch_size,
        on_bundle_epoch=progress_line(label, cfg.epochs, task.primary_metric, task.mode, names) if cfg.progress else None,
    )
    for e, record, result, m in zip(entries, records, results, members):
        record.end(result.outcome, result, error=m.error, metric=task.primary_metric)
        e.result = result


def progress_line(label: str, epochs: int, metric: str, mode: str, names: list[str]) -> Callable:
    def show(epoch: int, values: dict[int, dict[str, float]], seconds: float) -> None:
        scored = {k: v[metric] for k, v in values.items() if metric in v}
        best = (max if mode == "max" else min)(scored, key=scored.get) if scored else None
        text = f"best {metric} {scored[best]:.4f} ({names[best]})" if best is not None else "no member left"
        print(f"bundle {label} epoch {epoch:>{len(str(epochs))}}/{epochs}  {text}  {seconds:.2f}s", flush=True)

    return show


BUNDLES_LAUNCHED: dict[str, int] = {}  # per sweep: a sweeper that launches in rounds (search) numbers bundles on


def launch(
    configs: list[DictConfig],
    run_solo: Callable[[DictConfig], object],
    max_members: int = 64,
    memory_gb: float | None = None,
    workers: int | None = 1,
    vmap_on_cpu: bool = False,
) -> list[object]:
    """Run a sweep's composed jobs: bundles stacked, the rest through ``run_solo`` (Hydra's run_job).
    With more than one worker (``resolve_workers``), bundles train side by side in worker processes
    while the jobs that run alone run here. Returns one item per job, in order: run_solo's return for
    solo jobs, the Result for the others."""
    entries = [Entry(cfg) for cfg in configs]
    units = plan(admit_all(entries), max_members, memory_gb, workers, vmap_on_cpu)
    bundles = [u for u in units if len(u) > 1]
    n = min(len(bundles), resolve_workers(workers, bundles[0][0].parts["device"])) if bundles else 1
    if bundles:
        print(
            f"stacked launcher: {sum(map(len, bundles))} of {len(entries)} jobs in {len(bundles)} bundle(s)"
            + (f" ({n} at a time, each in its own process)" if n > 1 else "")
            + f", {len(units) - len(bundles)} alone, {sum(e.result is not None for e in entries)} skipped or refused",
            flush=True,
        )
    for line in alone_lines([u[0] for u in units if len(u) == 1]):
        print(line, flush=True)
    sweep_id = (
        entries[0].spec.ctx.sweep.sweep_id
        if entries and entries[0].spec and entries[0].spec.ctx and entries[0].spec.ctx.sweep
        else None
    ) or "sweep"
    returns: dict[int, object] = {}
    offset = BUNDLES_LAUNCHED.get(sweep_id, 0)
    BUNDLES_LAUNCHED[sweep_id] = offset + len(bundles)
    labels = {id(u): f"{sweep_id}-b{offset + i + 1}" for i, u in enumerate(bundles)}
    pool = Workers(n) if n > 1 else None
    try:
        # with workers, every bundle is handed out first and the solo jobs run here meanwhile; without, all in sweep order
        for unit in sorted(units, key=len, reverse=True) if pool else units:
            if len(unit) == 1:
                e = unit[0]
                e.parts.clear()  # its model and data go; run_solo builds its own
                returns[id(e)] = run_solo(e.cfg)
                continue
            head, label = unit[0], labels[id(unit)]
            threads = max(1, resolve_threads(head.spec.cfg.threads, head.spec.ctx) // n)
            print(
                f"bundle {label} ({bundles.index(unit) + 1}/{len(bundles)}): {len(unit)} members, {head.spec.names['task']}, "
                f"batch {head.spec.cfg.batch_size}, {head.spec.cfg.epochs} epochs, {threads} threads",
                flush=True,
            )
            if pool:
                pool.submit(unit, label, threads)
            else:
                run_bundle(unit, label, threads)
            for e in unit:
                e.parts.clear()  # the next bundle's models and data need the memory (a worker builds its own)
            if pool and unit is bundles[-1] and torch.cuda.is_available():
                torch.cuda.empty_cache()  # what planning built here goes back to the workers
        if pool:
            pool.wait()
    finally:
        if pool:
            pool.close()
    return [returns.get(id(e), e.result) for e in entries]


def alone_lines(solo: list[Entry], shown: int = 8) -> list[str]:
    """One line per reason for the jobs that run alone, naming their job numbers (the first few)."""
    by_reason: dict[str, list[str]] = {}
    for e in solo:
        by_reason.setdefault(e.solo, []).append(str(e.spec.ctx.num) if e.spec and e.spec.ctx else "?")
    lines = []
    for reason, nums in by_reason.items():
        named = ", ".join(nums[:shown]) + (f", ... ({len(nums)} in all)" if len(nums) > shown else "")
        lines.append(f"job {named} runs alone: {reason}" if len(nums) == 1 else f"jobs {named} run alone: {reason}")
    return lines


# ---------------------------------------------------------------- bundles side by side


def bundle_worker(cfgs: list[DictConfig], label: str, threads: int) -> list[Result | None]:
    """A worker process's whole job: one bundle, from its members' composed configs (each checked
    and looked up again here, as the launcher did), closed as run_bundle closes it."""
    from hydra.core.utils import setup_globals

    from harness.tracking import signals

    signals.install(once=True)  # the first stop closes the members as KILLED; the sweep's later ones find nothing left
    signals.watch_parent()  # the launcher killed outright (kill -9): close the members as KILLED rather than train on
    setup_globals()  # Hydra's resolvers (${now:...}) in the configs, as in the launcher's process
    entries = [Entry(cfg) for cfg in cfgs]
    try:
        loaded: dict = {}
        ready = []
        for e in admit_all(entries):
            prepare(e, loaded)
            if e.result is None:
                ready.append(e)
        if ready:
            run_bundle(ready, label, threads)
    except KeyboardInterrupt:  # run_bundle has closed what it opened
        signals.exit_if_orphaned()  # the launcher was killed outright: nobody waits for the results
        for e in entries:
            e.result = e.result or Result("killed", 0)
    return [e.result for e in entries]


class Workers:
    """Bundles trained in worker processes (spawned: a CUDA context cannot cross a fork), at most n at once."""

    def __init__(self, n: int):
        import concurrent.futures
        import multiprocessing

        self.pool = concurrent.futures.ProcessPoolExecutor(max_workers=n, mp_context=multiprocessing.get_context("spawn"))
        self.futures: dict = {}

    def submit(self, unit: list[Entry], label: str, threads: int) -> None:
        self.futures[self.pool.submit(bundle_worker, [e.cfg for e in unit], label, threads)] = (unit, label)

    def wait(self) -> None:
        import concurrent.futures

        for future in concurrent.futures.as_completed(self.futures):
            unit, label = self.futures[future]
            try:
                results = future.result()
            except Exception as err:  # the worker died (out of memory, killed) or broke before training
                message = f"its bundle's worker failed: {type(err).__name__}: {str(err).splitlines()[0]}"
                print(
                    f"error: bundle {label}: {message}; its members' open runs are closed as failed when the sweep ends",
                    file=sys.stderr,
                    flush=True,
                )
                results = [None] * len(unit)
                for e in unit:
                    if e.spec.ctx and not job_recorded(e.spec.ctx.dir, e.spec.ctx.num):
                        e.spec.journal(
                            "failed", error=message
                        )  # never opened a run (one it opened stays 'running' for the sweep's end)
            for e, r in zip(unit, results):
                e.result = r or Result("failed", 0)

    def close(self) -> None:
        """Leave no worker behind: on a stop (Ctrl-C, SIGTERM) the workers are sent SIGTERM, which
        closes their members' runs as KILLED (the sweep's end closes any they could not)."""
        import concurrent.futures

        import psutil

        busy = [f for f in self.futures if not f.done()]
        if busy:
            for p in list((getattr(self.pool, "_processes", None) or {}).values()):
                with contextlib.suppress(psutil.Error, ValueError):
                    psutil.Process(p.pid).terminate()
            concurrent.futures.wait(busy, timeout=30)  # each worker closes its members' runs, then answers
        self.pool.shutdown(wait=not busy, cancel_futures=True)
