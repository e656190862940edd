"""The stacked launcher's run of a sweep: bundles trained as one stacked model each (in this process, or
side by side in worker processes), the jobs that run alone through Hydra's ``run_job``; every member
ends with its own MLflow record (``harness.engine.record``)."""

from __future__ import annotations

import contextlib
import sys
import time
import traceback
from collections.abc import Callable

import torch
from omegaconf import DictConfig

from harness import HarnessError
from harness.config import schema
from harness.engine.bundles import (
    Entry,
    admit_all,
    loss_key,
    optimizer_key,
    plan,
    prepare,
    resolve_workers,
)
from harness.engine.device import resolve_threads
from harness.engine.record import RunRecord, end_all, ending, failure, start_all
from harness.engine.run import open_tracker
from harness.engine.stacked import Member, train_stacked
from harness.engine.train import Result
from harness.sweep.journal import job_recorded, show_progress
from harness.tracking.runs import FlushGroup

# ---------------------------------------------------------------- a bundle's life


def member(e: Entry, on_epoch: Callable, data_index: int = 0) -> Member:
    """A prepared entry as a member of a stacked model: its own model, loss, optimizer and schedule."""
    cfg, parts = e.spec.cfg, e.built
    return Member(
        model=parts.model,
        loss=parts.loss,
        targets=parts.targets,
        seed=schema.seed_of(cfg, "order_seed"),  # its batches' order (its weights came from init_seed in prepare)
        on_epoch=on_epoch,
        shared_optimizer=e.shared_optimizer,
        make_optimizer=parts.make_optimizer,
        make_scheduler=parts.make_scheduler,
        opt_key=optimizer_key(cfg),
        loss_key=loss_key(cfg),
        per_sample_mean=e.per_sample_mean,
        data=data_index,
    )


def run_bundle(entries: list[Entry], label: str, threads: int) -> None:
    """Train the entries as one stacked model on ``threads`` threads (the launcher's share of the cores);
    each ends with its own record (FINISHED, FAILED or KILLED)."""
    parts = [e.built for e in entries]
    task, steps = parts[0].task, parts[0].steps_per_epoch
    torch.set_num_threads(threads)
    datasets: dict[str, int] = {}  # task config -> the index of its data set in the bundle
    for p in parts:
        datasets.setdefault(p.data_key, len(datasets))
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
    counts = {k: sum(e.result is not None and e.result.outcome == k for e in entries) for k in ("finished", "diverged", "failed")}
    print(f"bundle {label}: {', '.join(f'{v} {k}' for k, v in counts.items())} in {time.perf_counter() - t0:.1f}s", flush=True)
    show_progress(entries[0].spec.ctx, force=True)


def run_members(entries: list[Entry], records: list[RunRecord], label: str, threads: int, steps: int, datasets: dict) -> None:
    """Open each member's run (appending to ``records`` as they open, so that ``ending`` closes the open
    ones), train the bundle, and end each member's run with its own outcome."""
    parts = [e.built for e in entries]
    cfg, task, batch_size = entries[0].spec.cfg, parts[0].task, parts[0].batch_size
    writes = FlushGroup()  # the members' metrics go to the store together
    opening = [RunRecord(e.spec, e.tracker or open_tracker(e.spec)) for e in entries]
    starts = [
        r.opening(p.task, p.device, threads, batch_size, p.epochs, steps, {"bundle": label, "bundle_size": str(len(entries))})
        for r, p in zip(opening, parts)
    ]
    start_all(opening, starts)  # every member's run, tags and params in one transaction on a database store
    records += opening
    for r in records:
        writes.join(r.tracker)
    members = [member(e, r.epoch, datasets[p.data_key]) for e, r, p in zip(entries, records, parts)]
    data_list: list = [None] * len(datasets)
    for p in parts:
        data_list[datasets[p.data_key]] = (p.task, p.data)
    names = [e.spec.run_name for e in entries]
    results = train_stacked(
        data_list,
        members,
        epochs=parts[0].epochs,  # members share their batch size and budget, so their epochs
        batch_size=batch_size,
        eval_batch_size=parts[0].eval_batch_size(stacked=True),
        on_bundle_epoch=progress_line(label, parts[0].epochs, task.primary_metric, task.mode, names) if cfg.progress else None,
    )
    end_all(records, [(result.outcome, result, m.error) for result, m in zip(results, members)], task.primary_metric)
    for e, result in zip(entries, results):
        e.result = result


def progress_line(label: str, epochs: int, metric: str, mode: str, names: list[str]) -> Callable:
    def show(epoch: int, values: dict[int, dict[str, float]], seconds: float) -> None:
        scored = {k: v[metric] for k, v in values.items() if metric in v}
        best = (max if mode == "max" else min)(scored, key=lambda k: scored[k]) if scored else None
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
    entries = [Entry.of(cfg) for cfg in configs]
    units = plan(admit_all(entries), max_members, memory_gb, workers, vmap_on_cpu)
    bundles = [u for u in units if len(u) > 1]
    n = min(len(bundles), resolve_workers(workers, bundles[0][0].built.device)) if bundles else 1
    if bundles:
        print(
            f"stacked launcher: {sum(map(len, bundles))} of {len(entries)} jobs in {len(bundles)} bundle(s)"
            + (f" ({n} at a time, each in its own process)" if n > 1 else "")
            + f", {len(units) - len(bundles)} alone, {sum(e.result is not None and e.result.outcome != 'unselected' for e in entries)} "
            "skipped or refused"
            + (
                f", {passed} not selected (confirmation)"
                if (passed := sum(bool(e.result and e.result.outcome == "unselected") for e in entries))
                else ""
            ),
            flush=True,
        )
    for line in alone_lines([u[0] for u in units if len(u) == 1]):
        print(line, flush=True)
    ctx = entries[0].spec.ctx if entries else None
    sweep_id = (ctx.sweep.sweep_id if ctx and ctx.sweep else None) or "sweep"
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
                e.parts = None  # its model and data go; run_solo builds its own
                returns[id(e)] = run_solo(e.cfg)
                continue
            head, label = unit[0], labels[id(unit)]
            threads = max(1, resolve_threads(head.spec.cfg.threads, head.spec.ctx) // n)
            print(
                f"bundle {label} ({bundles.index(unit) + 1}/{len(bundles)}): {len(unit)} members, {head.spec.names['task']}, "
                f"batch {head.spec.cfg.batch_size}, {head.built.epochs} epochs, {threads} threads",
                flush=True,
            )
            if pool:
                pool.submit(unit, label, threads)
            else:
                run_bundle(unit, label, threads)
            for e in unit:
                e.parts = None  # the next bundle's models and data need the memory (a worker builds its own)
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
        by_reason.setdefault(e.solo or "?", []).append(str(e.spec.ctx.num) if e.spec.ctx else "?")
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
    entries = [Entry.of(cfg) for cfg in cfgs]
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
