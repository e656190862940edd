"""The life of one run: check, skip if already done, build, open its MLflow run, train, close it.

``run(cfg)`` is what ``python -m harness`` calls for a single run and for each job of a sweep.
Input is checked before any MLflow run opens (``harness.config.checks``), so bad input never leaves a
record behind. From the moment a run is created it always ends FINISHED, FAILED or KILLED: its
creation and its end are written with stopping signals deferred (``harness.tracking.signals``), and a
signal at any other moment unwinds through the ``except`` that closes it. ``RunRecord`` is the
record of one run; the stacked launcher (``harness.engine.bundles``) gives one to each member of a bundle,
so that a member's record cannot be told from a solo run's.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import sys
import time
import traceback
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import cast

from omegaconf import DictConfig, OmegaConf

from harness import HarnessError, __version__
from harness.config import schema
from harness.config.checks import check_config
from harness.engine.build import build, device_name, git_commit
from harness.engine.train import Result
from harness.sweep.journal import DIED, JobContext, job_context, show_progress
from harness.tracking import signals
from harness.tracking.runs import MlflowTracker, NullTracker, experiment_name, flatten
from harness.tracking.store import open_store, process_alive
from harness.tracking.uris import runs_link

NOT_IN_HASH = schema.not_in_hash()  # knobs that do not change results
NOT_IN_RUN_NAME = schema.not_in_run_name()
LR_POINTS_PER_RUN = 100  # per-step LR is logged as `lr_step`, thinned to at most about this many points per run
KILLED: list[str] = []  # ids of the runs this process closed as KILLED (for the stop message)
SKIPS_SHOWN = 3  # a resumed sweep names this many skipped jobs per process, then one line for the rest
SKIPPED: list[str] = []  # ids of the finished runs this process skipped (resume)


def fail(message: str, code: int = 2):
    print(f"error: {message}", file=sys.stderr)
    sys.exit(code)


def config_hash(cfg: DictConfig) -> str:
    tree = cast(dict, OmegaConf.to_container(cfg, resolve=True))
    for key in NOT_IN_HASH:
        tree.pop(key, None)
    for group in schema.GROUPS:  # a component's declared traits say how it runs, not what it computes
        if isinstance(tree.get(group), dict):
            tree[group].pop(schema.TRAITS_KEY, None)
    return hashlib.sha256(json.dumps(tree, sort_keys=True, default=str).encode()).hexdigest()[:16]


# ---------------------------------------------------------------- what a job is


@dataclass
class Spec:
    """One job as composed: its config, the group options chosen, its command-line overrides and,
    in a sweep, its place there (number, sweep folder, the sweep's experiment and parent run)."""

    cfg: DictConfig
    names: dict[str, str]
    overrides: list[str]
    ctx: JobContext | None = None
    hash: str = field(init=False)
    run_name: str = field(init=False)
    experiment: str = field(init=False)

    def __post_init__(self):
        self.hash = config_hash(self.cfg)
        sweep = self.ctx.sweep if self.ctx else None
        varies = sweep.varies if sweep else ()  # in a sweep: named by what varies across its jobs (all overrides in the tag)
        shown = [o for o in self.overrides if o.split("=", 1)[0].lstrip("+~") in varies] if varies else []
        self.run_name = ",".join(shown or [o for o in self.overrides if not o.startswith(NOT_IN_RUN_NAME)]) or "defaults"
        self.experiment = (sweep.experiment if sweep else None) or experiment_name(self.cfg, self.names["task"])

    def journal(self, outcome: str, **info) -> None:
        """This job's line in the sweep's journal (nothing for a single run)."""
        if self.ctx:
            self.ctx.record(outcome, **info)


def names_of(cfg: DictConfig, choices: dict[str, str]) -> dict[str, str]:
    names = {
        g: choices.get(g) or str(cfg[g].get("_target_", g)).rsplit(".", 1)[-1]
        for g in ("task", "loss", "optimizer", "schedule")
        if isinstance(cfg.get(g), DictConfig)
    }
    names.setdefault("loss", "none")
    return names


def spec_from_hydra(cfg: DictConfig, hydra_cfg=None) -> Spec:
    """The Spec of a job Hydra composed (hydra_cfg: its hydra node; default: the current HydraConfig)."""
    from hydra.core.hydra_config import HydraConfig

    hc = hydra_cfg if hydra_cfg is not None else (HydraConfig.get() if HydraConfig.initialized() else None)
    choices, overrides = (dict(hc.runtime.choices), list(hc.overrides.task)) if hc is not None else ({}, [])
    return Spec(cfg, names_of(cfg, choices), overrides, job_context(hc))


def compose(*overrides: str) -> DictConfig:
    """The config `python -m harness OVERRIDES` hands to run(), with HydraConfig set as Hydra sets it
    (for in-process runs: tests, the benchmark)."""
    from hydra import compose as hydra_compose
    from hydra import initialize_config_dir
    from hydra.core.hydra_config import HydraConfig
    from omegaconf import open_dict

    from harness.config.schema import CONF_DIR

    with initialize_config_dir(version_base="1.3", config_dir=str(CONF_DIR)):
        cfg = hydra_compose("config", overrides=list(overrides), return_hydra_config=True)
    HydraConfig.instance().set_config(cfg)
    with open_dict(cfg):
        del cfg["hydra"]
    return cfg


# ---------------------------------------------------------------- before a run opens


def open_tracker(spec: Spec):
    t = spec.cfg.tracking
    if not t.enabled:
        return NullTracker()
    return MlflowTracker(open_store(t.uri, t.lock_timeout), spec.experiment, t.flush_seconds)


def admit(spec: Spec):
    """Check the job's config; in a sweep, also look for earlier runs of it. Returns (tracker or
    None, the id of a FINISHED run that makes this job a skip, or None). Raises HarnessError."""
    check_config(spec.cfg, spec.names)
    if not (spec.ctx and spec.cfg.tracking.enabled):
        return None, None  # a single run opens the store only once the whole input is good
    tracker = open_tracker(spec)
    done = close_dead_runs(tracker, spec.hash)
    return tracker, (done if spec.cfg.resume else None)


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


# ---------------------------------------------------------------- the record of one run


def run_params(cfg: DictConfig, names: dict[str, str]) -> dict[str, str]:
    """The params a person compares runs by in MLflow: the group choices (loss=mse, optimizer=adam, ...)
    and every knob, without the internal ones (class paths, logging and tracking settings), which
    stay in the run's config.yaml artifact. (Resume and the report use the config hash and tags.)"""
    params = {g: names[g] for g in ("task", "loss", "optimizer", "schedule") if g in names}
    for key, value in flatten(OmegaConf.to_container(cfg, resolve=True)).items():
        if schema.is_param(key):
            params[key] = value
    return params


class RunRecord:
    """One run's MLflow record and journal line, from its creation to its end (exactly once)."""

    def __init__(self, spec: Spec, tracker):
        self.spec, self.tracker = spec, tracker
        self.stride, self.steps_done, self.ended = 1, 0, False
        self.t0 = time.perf_counter()

    @property
    def run_id(self) -> str | None:
        return self.tracker.run_id

    def start(self, task, device, threads: int, batch_size: int, total_steps: int, extra_tags: dict | None = None) -> None:
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
        sweep = self.spec.ctx.sweep if self.spec.ctx else None
        if sweep and sweep.parent_run_id:
            tags.update({"mlflow.parentRunId": sweep.parent_run_id, "sweep_id": str(sweep.sweep_id)})
        self.stride = max(1, -(-total_steps // LR_POINTS_PER_RUN))
        try:
            with signals.deferred():
                self.tracker.start(self.spec.run_name, tags, run_params(cfg, names), OmegaConf.to_yaml(cfg, resolve=True))
                self.spec.journal("running", run_id=self.run_id)
        except KeyboardInterrupt:  # a stop signal that landed while the run was being created
            if self.run_id:
                self.end("killed")
            raise
        self.t0 = time.perf_counter()

    def epoch(self, epoch: int, metrics: dict[str, float], lrs: list[float]) -> None:
        """Log one epoch: its metrics, and the LR of every stride-th optimizer step as `lr_step`."""
        first = -self.steps_done % self.stride
        for i in range(first, len(lrs), self.stride):
            self.tracker.log({"lr_step": lrs[i]}, step=self.steps_done + i)
        self.steps_done += len(lrs)
        self.tracker.log(metrics, step=epoch)

    def end(self, outcome: str, result: Result | None = None, error: str | None = None, metric: str | None = None) -> None:
        """Close the run (FINISHED for finished and diverged, FAILED, KILLED) and write the journal line."""
        if self.ended:
            return
        self.ended = True
        seconds = time.perf_counter() - self.t0
        status = {"finished": "FINISHED", "diverged": "FINISHED", "failed": "FAILED", "killed": "KILLED"}[outcome]
        tags = {"outcome": outcome, "train_seconds": f"{seconds:.3f}"}
        if result is not None and result.diverged_epoch is not None:
            tags["diverged_epoch"] = str(result.diverged_epoch)
        if error:
            tags["error"] = error[:5000]
        value = result.final.get(metric, float("nan")) if result is not None and metric else None
        if outcome == "killed" and self.run_id:
            KILLED.append(self.run_id)
        with signals.deferred():
            try:
                self.tracker.end(status, tags)
            except HarnessError as e:  # the store is gone or locked for good: say so; a later sweep closes the run
                print(f"error: run {self.run_id} could not be closed: {e}", file=sys.stderr, flush=True)
                outcome, error = "failed", str(e)
            finally:
                self.spec.journal(outcome, run_id=self.run_id, seconds=seconds, error=error, metric=metric, value=value)


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
        if done:
            return skip(spec, done)
        job = build(cfg, spec.names, spec.ctx)
        record = RunRecord(spec, tracker or open_tracker(spec))
        steps = -(-len(job.data.train) // job.batch_size)
        record.start(job.task, job.device, job.threads, job.batch_size, cfg.epochs * steps)
    except HarnessError as e:
        return refuse(spec, e)
    if cfg.progress:
        print(
            f"{spec.run_name}: {spec.names['task']} x {spec.names['loss']} x {spec.names['optimizer']} x "
            f"{spec.names['schedule']}, batch {job.batch_size}, {len(job.data.train)} train samples, {job.device} "
            f"({job.threads} threads)" + (f", MLflow run {record.run_id} in {spec.experiment!r}" if record.run_id else ""),
            flush=True,
        )

    def on_epoch(epoch: int, metrics: dict[str, float], lrs: list[float]) -> None:
        record.epoch(epoch, metrics, lrs)
        if cfg.progress:
            print_epoch(epoch, cfg.epochs, metrics, job.task.primary_metric)

    primary = job.task.primary_metric
    try:
        with ending([record], primary):
            result: Result = job.train(epochs=cfg.epochs, seed=cfg.seed, on_epoch=on_epoch, eval_batch_size=cfg.eval_batch_size)
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
