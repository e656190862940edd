"""One run's MLflow record, from its creation to its end, the same for a solo run and a bundle's member:
its tags and params, its per-epoch metrics, and ``ending``, which ends every run still open the same way
(FINISHED, FAILED with the reason, KILLED) whatever stopped it."""

from __future__ import annotations

import contextlib
import json
import math
import sys
import time
from collections.abc import Iterator

from omegaconf import DictConfig, OmegaConf

from harness import HarnessError, __version__
from harness.config import schema
from harness.config.values import plain
from harness.engine.device import device_name, environment, git_commit
from harness.engine.job import Spec
from harness.engine.train import Result
from harness.tasks import file_digests
from harness.tracking import signals
from harness.tracking.runs import end_many, flatten, start_many

LR_POINTS_PER_RUN = 100  # per-step LR is logged as `lr_step`, thinned to at most about this many points per run
KILLED: list[str] = []  # ids of the runs this process closed as KILLED (for the stop message)


def run_params(cfg: DictConfig, names: dict[str, str]) -> dict[str, str]:
    """The params a person compares runs by in MLflow: the group choices (loss=mse, optimizer=adam, ...)
    and every knob, without the internal ones (class paths, logging and tracking settings), which
    stay in the run's config.yaml artifact. (Resume and the report use the config hash and tags.)"""
    params: dict[str, str] = {g: names[g] for g in ("task", "loss", "optimizer", "schedule") if g in names}
    quiet = schema.unhashed_while_null()  # a knob added later, at its null default: logged as before it existed
    for key, value in flatten(plain(cfg)).items():
        if schema.is_param(key) and not (value == "null" and key in quiet):
            params[key] = value
    for kind in schema.seed_kinds():  # the seed each kind of randomness used (null: the run's seed)
        params[kind] = str(schema.seed_of(cfg, kind))
    return params


class RunRecord:
    """One run's MLflow record and journal line, from its creation to its end (exactly once)."""

    def __init__(self, spec: Spec, tracker):
        self.spec, self.tracker = spec, tracker
        self.stride, self.steps_done, self.ended = 1, 0, False
        self.t0 = time.perf_counter()
        self.primary, self.mode = "", "max"
        self.curve: list[float] = []  # the primary test metric, epoch by epoch
        self.epochs = 0  # what it trains (with a steps budget, not the epochs knob): set at its opening

    @property
    def run_id(self) -> str | None:
        return self.tracker.run_id

    def opening(
        self, task, device, threads: int, batch_size: int, epochs: int, steps_per_epoch: int, extra_tags: dict | None = None
    ) -> tuple:
        """What its run is created with: (run name, tags, params, config.yaml); ``epochs``: what it will train
        (``build.Parts.epochs``: with a ``steps`` budget, not the ``epochs`` knob)."""
        cfg, names = self.spec.cfg, self.spec.names
        tags = {
            "task": names["task"],
            "loss": names["loss"],
            "optimizer": names["optimizer"],
            "schedule": names["schedule"],
            "batch_size": str(cfg.batch_size),
            "seed": str(cfg.seed),
            "device": str(device),
            "device_name": device_name(device),
            "threads": str(threads),
            "config_hash": self.spec.hash,
            "harness_version": __version__,
            "primary_metric": task.primary_metric,
            "primary_mode": task.mode,
            "outcome": "running",
            "harness.overrides": ",".join(self.spec.overrides)[:5000],
            "harness.overrides_json": json.dumps(self.spec.overrides)[:5000],  # exact, for --rerun
            **(extra_tags or {}),
        }
        if commit := git_commit():
            tags["git_commit"] = commit
        tags.update(environment())
        if digests := file_digests(task.sources()):  # the data files the run read, by content
            tags["data_files"] = json.dumps(digests, sort_keys=True)
        sweep = self.spec.ctx.sweep if self.spec.ctx else None
        if sweep and sweep.confirm:  # a rerun of a selected setting on fresh seeds (harness.sweep.confirm)
            tags.update({"stage": "confirm", "round": str(sweep.confirm["round"])})
        if sweep and sweep.parent_run_id:
            tags.update({"mlflow.parentRunId": sweep.parent_run_id, "sweep_id": str(sweep.sweep_id)})
        if cfg.get("steps") is not None:  # the epochs its steps budget took at its batch size
            tags["epochs_trained"] = str(epochs)
        self.epochs = epochs
        self.stride = max(1, -(-(epochs * steps_per_epoch) // LR_POINTS_PER_RUN))
        self.primary, self.mode = task.primary_metric, task.mode
        return self.spec.run_name, tags, run_params(cfg, names), OmegaConf.to_yaml(cfg, resolve=True)

    def opened(self) -> None:
        self.spec.journal("running", run_id=self.run_id)
        self.t0 = time.perf_counter()

    def start(
        self, task, device, threads: int, batch_size: int, epochs: int, steps_per_epoch: int, extra_tags: dict | None = None
    ) -> None:
        start_all([self], [self.opening(task, device, threads, batch_size, epochs, steps_per_epoch, extra_tags)])

    def epoch(self, epoch: int, metrics: dict[str, float], lrs: list[float]) -> None:
        """Log one epoch: its metrics, and the LR of every stride-th optimizer step as `lr_step`; the last epoch
        also logs what the primary metric's curve did (``curve_metrics``)."""
        first = -self.steps_done % self.stride
        for i in range(first, len(lrs), self.stride):
            self.tracker.log({"lr_step": lrs[i]}, step=self.steps_done + i)
        self.steps_done += len(lrs)
        if self.primary in metrics:
            self.curve.append(float(metrics[self.primary]))
            if epoch == self.epochs:
                metrics = {**metrics, **curve_metrics(self.primary, self.mode, self.curve)}
        self.tracker.log(metrics, step=epoch)

    def closing(self, outcome: str, result: Result | None = None, error: str | None = None) -> tuple[str, dict[str, str]]:
        """Its end as the store takes it: (status, tags); FINISHED for finished and diverged."""
        status = {"finished": "FINISHED", "diverged": "FINISHED", "failed": "FAILED", "killed": "KILLED"}[outcome]
        tags = {"outcome": outcome, "train_seconds": f"{time.perf_counter() - self.t0:.3f}"}
        if result is not None and result.diverged_epoch is not None:
            tags["diverged_epoch"] = str(result.diverged_epoch)
        if error:
            tags["error"] = error[:5000]
        return status, tags

    def end(self, outcome: str, result: Result | None = None, error: str | None = None, metric: str | None = None) -> None:
        """Close the run (FINISHED for finished and diverged, FAILED, KILLED) and write the journal line."""
        end_all([self], [(outcome, result, error)], metric)


def curve_metrics(metric: str, mode: str, curve: list[float]) -> dict[str, float]:
    """What a run's primary test metric did over its epochs, logged with its last epoch: ``_best``, its best
    value (below the last one: the run overfitted or drifted); ``_epoch_mean``, its mean over the epochs (the
    area under the learning curve: higher for a run that got there sooner); ``_oscillation``, over the last
    quarter of the epochs (at least 3), the path length beyond the net change, per epoch (0 for a curve that
    moves one way; larger the more it goes back and forth); ``_early_oscillation``, the same over the first
    quarter (how unsteady the start is)."""
    finite = [v for v in curve if math.isfinite(v)]
    if not finite:
        return {}
    out = {f"{metric}_best": max(finite) if mode == "max" else min(finite), f"{metric}_epoch_mean": sum(curve) / len(curve)}
    k = max(3, len(curve) // 4)
    for name, part in (("_oscillation", curve[-k:]), ("_early_oscillation", curve[:k])):
        if len(curve) >= 3 and all(math.isfinite(v) for v in part):
            path = sum(abs(b - a) for a, b in zip(part, part[1:]))
            out[f"{metric}{name}"] = (path - abs(part[-1] - part[0])) / (len(part) - 1)
    return out


def start_all(records: list[RunRecord], starts: list[tuple]) -> None:
    """Create the records' runs (a bundle's members: in one transaction on a database store) with stopping
    signals deferred, then their journal lines; a stop that landed meanwhile ends them KILLED."""
    try:
        with signals.deferred():
            start_many([r.tracker for r in records], starts)
            for r in records:
                r.opened()
    except KeyboardInterrupt:  # a stop signal that landed while the runs were being created
        for r in records:
            if r.run_id:
                r.end("killed")
        raise


def end_all(records: list[RunRecord], outcomes: list[tuple[str, Result | None, str | None]], metric: str | None = None) -> None:
    """Close each record's run exactly once, ``(outcome, result, error)`` each (a bundle's members: in one
    transaction on a database store), and write its journal line."""
    todo = [(r, o) for r, o in zip(records, outcomes) if not r.ended]
    for r, _ in todo:
        r.ended = True
    closing = [r.closing(*o) for r, o in todo]
    for r, (outcome, _, _) in todo:
        if outcome == "killed" and r.run_id:
            KILLED.append(r.run_id)
    failed: dict[str, str] = {}
    with signals.deferred():
        try:
            failed = end_many([r.tracker for r, _ in todo], closing)
        finally:
            for (r, (outcome, result, error)), (_, tags) in zip(todo, closing):
                why = failed.get(r.run_id or "")
                if why:  # the store is gone or locked for good: say so; a later sweep closes the run
                    print(f"error: run {r.run_id} could not be closed: {why}", file=sys.stderr, flush=True)
                value = result.final.get(metric, float("nan")) if result is not None and metric else None
                r.spec.journal(
                    "failed" if why else outcome,
                    run_id=r.run_id,
                    seconds=float(tags["train_seconds"]),
                    error=why or error,
                    metric=metric,
                    value=value,
                )


def failure(err: BaseException) -> str:
    """A run's FAILED reason: a HarnessError's one line, or the exception's type and message."""
    return str(err) if isinstance(err, HarnessError) else f"{type(err).__name__}: {err}"


@contextlib.contextmanager
def ending(records: list[RunRecord], metric: str) -> Iterator[None]:
    """The end of every run, solo or a bundle's members, written once: a record still open when the
    block leaves early ends KILLED on a stop signal (Ctrl-C, SIGTERM, SIGHUP) or FAILED with the
    reason on any error, and the exception goes on to the caller. ``records`` may grow inside the block
    (a bundle opens its members' runs one by one)."""
    try:
        yield
    except KeyboardInterrupt:
        for record in records:
            record.end("killed", metric=metric)
        raise
    except Exception as err:
        for record in records:
            record.end("failed", error=failure(err), metric=metric)
        raise
