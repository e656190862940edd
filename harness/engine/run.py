"""The life of one run: check, skip if already done, build, open its MLflow run, train, close it.

``run(cfg)`` is what ``python -m harness`` calls for a single run and for each job of a sweep.
Input is checked before any MLflow run opens (``harness.config.checks``), so bad input never leaves a
record behind. From the moment a run is created it always ends FINISHED, FAILED or KILLED: its
creation and its end are written with stopping signals deferred (``harness.tracking.signals``), and a
signal at any other moment unwinds through the ``except`` that closes it. ``RunRecord`` is the
record of one run; the stacked launcher (``harness.engine.launch``) gives one to each member of a bundle,
so that a member's record cannot be told from a solo run's.
"""

from __future__ import annotations

import sys
import time
import traceback

from omegaconf import DictConfig

from harness import HarnessError
from harness.config.checks import check_config
from harness.config.schema import seed_of
from harness.config.values import has_setting
from harness.engine.build import build
from harness.engine.job import Spec, fail, spec_from_hydra, unswept_note
from harness.engine.record import RunRecord, ending, run_params
from harness.engine.train import Result
from harness.sweep.journal import DIED, show_progress
from harness.tracking import signals
from harness.tracking.runs import MlflowTracker, NullTracker
from harness.tracking.store import open_store, process_alive
from harness.tracking.uris import runs_link

SKIPS_SHOWN = 3  # a resumed sweep names this many skipped jobs per process, then one line for the rest
SKIPPED: list[str] = []  # ids of the finished runs this process skipped (resume)
UNSELECTED = "unselected"  # admit's answer for a job whose setting a confirmation sweep does not rerun


# ---------------------------------------------------------------- before a run opens


def open_tracker(spec: Spec):
    t = spec.cfg.tracking
    if not t.enabled:
        return NullTracker()
    return MlflowTracker(open_store(t.uri, t.lock_timeout), spec.experiment, t.flush_seconds)


def admit(spec: Spec):
    """Check the job's config; in a sweep, also look for earlier runs of it. Returns (tracker or
    None, the id of a FINISHED run that makes this job a skip, UNSELECTED for a job a confirmation
    sweep passes, or None). Raises HarnessError."""
    check_config(spec.cfg, spec.names)
    if unselected(spec):
        return None, UNSELECTED
    if not (spec.ctx and spec.cfg.tracking.enabled):
        return None, None  # a single run opens the store only once the whole input is good
    tracker = open_tracker(spec)
    done = close_dead_runs(tracker, spec.hash)
    return tracker, (done if spec.cfg.resume else None)


def unselected(spec: Spec) -> bool:
    """In a confirmation sweep (``study.stage=confirm``), whether this job's setting is not one of those the
    sweep reruns (``harness.sweep.confirm``): such a job passes, with no run. A single run cannot confirm."""
    if spec.cfg.study.stage != "confirm":
        return False
    plan = spec.ctx.sweep.confirm if spec.ctx and spec.ctx.sweep else None
    if plan is None:
        raise HarnessError(
            "study.stage=confirm reruns a study's selected settings on fresh seeds: run it as the study's --multirun "
            "(python -m harness --multirun experiment=NAME study.stage=confirm seed=5,6,7,8,9)"
        )
    params = run_params(spec.cfg, spec.names)
    return not any(has_setting(params, s) for s in plan["selected"])


def pass_over(spec: Spec) -> Result:
    """A confirmation's job whose setting was not selected: one journal line, no MLflow run."""
    spec.journal("unselected")
    return Result("unselected", 0)


def close_dead_runs(tracker: MlflowTracker, chash: str):
    """Close the RUNNING runs of this config whose process died (kill -9, a lost node) as FAILED;
    runs still being written by a live process are left alone. Returns a FINISHED run, if any."""
    store = tracker.store
    runs = store.call(store.client.search_runs, [tracker.experiment_id], f"tags.config_hash = '{chash}'")
    for r in runs:
        if r.info.status == "RUNNING" and not process_alive(r.data.tags):
            with signals.deferred():
                store.close_run(r.info.run_id, "FAILED", {"outcome": "failed", "error": DIED})
    finished = [r for r in runs if r.info.status == "FINISHED" and r.data.tags.get("harness.role") != "sweep"]
    return finished[0] if finished else None


# ---------------------------------------------------------------- a run


def print_epoch(epoch: int, epochs: int, m: dict[str, float], primary: str) -> None:
    shown = ["train/loss", "val/loss", primary] + [k for k in ("test/r2", "test/balanced_accuracy") if k in m and k != primary]
    parts = "  ".join(f"{k} {m[k]:.4f}" for k in shown if k in m)
    print(f"epoch {epoch:>{len(str(epochs))}}/{epochs}  {parts}  lr {m['lr']:.3g}  {m['epoch_seconds']:.2f}s", flush=True)


def skip(spec: Spec, done) -> Result:
    """Resume: this config already has a FINISHED run (``done``) in the experiment; its final
    metrics come back as the job's (a search sweeper tells them to its sampler again)."""
    run_id = done.info.run_id
    SKIPPED.append(run_id)
    if not spec.ctx or len(SKIPPED) <= SKIPS_SHOWN:
        print(f"skipped: run {run_id} in {spec.experiment!r} already finished this config (resume=false reruns it)", flush=True)
    elif len(SKIPPED) == SKIPS_SHOWN + 1:
        print(
            "skipped: more jobs whose config already finished; not listed one by one (the sweep's summary counts them)",
            flush=True,
        )
    spec.journal("skipped", run_id=run_id)
    return Result("skipped", 0, final=dict(done.data.metrics))


def refuse(spec: Spec, error: HarnessError) -> Result:
    """Bad input: one line; a single run exits 2, a sweep's job is recorded as failed and the sweep goes on."""
    if not spec.ctx:
        fail(str(error))
    print(f"error: {error}", file=sys.stderr, flush=True)
    spec.journal("failed", error=str(error))
    return Result("failed", 0)


def run(cfg: DictConfig) -> Result:
    """One training run; in a --multirun, one job of the sweep (only a stop signal leaves it as an exception)."""
    spec = spec_from_hydra(cfg)
    signals.install()
    if spec.ctx is None and (note := unswept_note(cfg)):
        print(note, flush=True)
    if spec.ctx and "Joblib" in spec.ctx.launcher_target:
        signals.watch_parent()  # a joblib worker: its sweep's process may be killed outright (kill -9)
        signals.exit_if_orphaned()  # a job queued before that: not started
    try:
        return run_spec(spec, cfg)
    except KeyboardInterrupt:
        signals.exit_if_orphaned()  # its run is closed: an orphaned worker leaves instead of taking the next job
        raise


def run_spec(spec: Spec, cfg: DictConfig) -> Result:
    try:
        tracker, done = admit(spec)
        if done == UNSELECTED:
            return pass_over(spec)
        if done:
            return skip(spec, done)
        job = build(cfg, spec.names, spec.ctx)
        parts = job.parts
        record = RunRecord(spec, tracker or open_tracker(spec))
        record.start(parts.task, parts.device, parts.threads, parts.batch_size, parts.epochs, parts.steps_per_epoch)
    except HarnessError as e:
        return refuse(spec, e)
    if cfg.progress:
        print(
            f"{spec.run_name}: {spec.names['task']} x {spec.names['loss']} x {spec.names['optimizer']} x "
            f"{spec.names['schedule']}, batch {parts.batch_size}, {len(parts.data.train)} train samples, {parts.device} "
            f"({parts.threads} threads)" + (f", MLflow run {record.run_id} in {spec.experiment!r}" if record.run_id else ""),
            flush=True,
        )

    def on_epoch(epoch: int, metrics: dict[str, float], lrs: list[float]) -> None:
        record.epoch(epoch, metrics, lrs)
        if cfg.progress:
            print_epoch(epoch, parts.epochs, metrics, parts.task.primary_metric)

    primary = parts.task.primary_metric
    try:
        with ending([record], primary):
            result: Result = job.train(epochs=parts.epochs, seed=seed_of(cfg, "order_seed"), on_epoch=on_epoch)
            record.end(result.outcome, result, metric=primary)
    except HarnessError as e:  # the store failed us mid-run (locked past tracking.lock_timeout, ...)
        return refuse(spec, e)
    except Exception:
        if not spec.ctx:
            raise
        traceback.print_exc()  # a failed job does not stop the sweep; the summary counts it
        return Result("failed", 0)
    if cfg.progress:
        print(
            f"{result.outcome}"
            + (f" at epoch {result.diverged_epoch} (NaN/inf loss)" if result.diverged_epoch else "")
            + f": {primary} {result.final.get(primary, float('nan')):.4f} after {result.epochs} epochs, "
            f"{time.perf_counter() - record.t0:.1f}s",
            flush=True,
        )
        if record.run_id and not spec.ctx:
            print(f"run in the MLflow UI: {runs_link(record.tracker.store.uri, record.tracker.experiment_id)}", flush=True)
    show_progress(spec.ctx)
    return result
