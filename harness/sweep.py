"""Sweeps: one MLflow parent run per ``--multirun``, a summary table at the end, resume.

``SweepCallback`` is a Hydra callback (``hydra.callbacks`` in conf/config.yaml). Before any job
starts it creates the MLflow store, the experiment and the sweep's parent run *once* (many
processes opening a fresh sqlite file at once race in MLflow's schema migration), and writes
``<sweep dir>/harness_sweep.json`` so that every job, in whatever process or machine the launcher
puts it, logs into the same experiment under that parent. Each job writes its outcome to
``<sweep dir>/harness_jobs/<num>.json``; at the end the callback prints the table, closes the
parent run with the counts, and exits 1 only if a job failed (diverged is an outcome, not a failure).
"""
from __future__ import annotations

import atexit
import json
import os
import sys
import time
import traceback
import uuid
from pathlib import Path
from typing import Any

from hydra.experimental.callback import Callback
from omegaconf import DictConfig

SWEEP_FILE = "harness_sweep.json"
JOBS_DIR = "harness_jobs"
OUTCOMES = ("finished", "diverged", "failed", "killed", "skipped")


def sweep_dir(hydra_cfg) -> Path:
    path = Path(hydra_cfg.sweep.dir)
    return path if path.is_absolute() else Path(hydra_cfg.runtime.cwd) / path


def swept_groups(overrides: list[str]) -> set[str]:
    """Config keys/groups that the command line sweeps over (task=a,b -> {'task'})."""
    from hydra.core.override_parser.overrides_parser import OverridesParser

    return {o.key_or_group for o in OverridesParser.create().parse_overrides(overrides) if o.is_sweep_override()}


def count_jobs(hydra_cfg) -> int | None:
    """How many jobs this sweep launches, computed as Hydra's basic sweeper will (None if unknown)."""
    try:
        from hydra._internal.core_plugins.basic_sweeper import BasicSweeper
        from hydra.core.override_parser.overrides_parser import OverridesParser

        params = [f"{k}={v}" for k, v in (hydra_cfg.sweeper.get("params") or {}).items()]
        parsed = OverridesParser.create().parse_overrides(params + list(hydra_cfg.overrides.task))
        return len(BasicSweeper.split_arguments(parsed, None)[0])
    except Exception:  # another sweeper (optuna, ...): unknown
        return None


def experiment_name(cfg: DictConfig, task_choice: str, task_is_swept: bool = False) -> str:
    """tracking.experiment, else the task's name ("multitask" for a sweep over tasks), + the suffix."""
    name = cfg.tracking.experiment or ("multitask" if task_is_swept else task_choice)
    return f"{name}{cfg.tracking.get('experiment_suffix') or ''}"


def read_sweep(directory: Path) -> dict[str, Any] | None:
    path = directory / SWEEP_FILE
    return json.loads(path.read_text()) if path.exists() else None


def record_job(directory: Path, num: int, outcome: dict[str, Any]) -> None:
    jobs = directory / JOBS_DIR
    jobs.mkdir(parents=True, exist_ok=True)
    tmp = jobs / f".{num}.json.tmp"
    tmp.write_text(json.dumps(outcome))
    tmp.replace(jobs / f"{num}.json")  # atomic: the summary never reads half a file


def summary_table(outcomes: list[dict[str, Any]]) -> str:
    """One row per job; the overrides column leaves out those every job shares."""
    common = set.intersection(*(set(o.get("overrides", "").split(",")) for o in outcomes)) if len(outcomes) > 1 else set()
    rows = [("#", "outcome", "metric", "value", "seconds", "overrides")]
    for o in sorted(outcomes, key=lambda o: o["num"]):
        o = {**o, "overrides": ",".join(x for x in o.get("overrides", "").split(",") if x not in common)}
        value = o.get("value")
        rows.append((str(o["num"]), o["outcome"], o.get("metric") or "", "" if value is None else f"{value:.4f}",
                     "" if o.get("seconds") is None else f"{o['seconds']:.1f}", o.get("overrides", "")))
    widths = [max(len(r[i]) for r in rows) for i in range(5)]
    return "\n".join("  ".join(c.ljust(w) for c, w in zip(r[:5], widths)) + "  " + r[5] for r in rows)


class SweepCallback(Callback):
    def __init__(self) -> None:
        self.client = None
        self.parent_run_id: str | None = None
        self.started = 0.0

    def on_multirun_start(self, config: DictConfig, **kwargs: Any) -> None:
        # Hydra turns a callback's exception into a warning and carries on; a sweep that cannot
        # reach its store must stop instead, so exit here (SystemExit passes through Hydra).
        from harness import HarnessError

        try:
            self._start(config)
        except HarnessError as e:
            print(f"error: {e}", file=sys.stderr)
            sys.exit(2)
        except Exception:
            traceback.print_exc()
            sys.exit(1)

    def _start(self, config: DictConfig) -> None:
        from harness.tracking import MlflowTracker, check_reachable

        hc = config.hydra
        directory = sweep_dir(hc)
        directory.mkdir(parents=True, exist_ok=True)
        overrides = list(hc.overrides.task)
        experiment = experiment_name(config, hc.runtime.choices.get("task", "task"), "task" in swept_groups(overrides))
        sweep_id = f"{time.strftime('%Y%m%d-%H%M%S')}-{uuid.uuid4().hex[:6]}"
        info: dict[str, Any] = {"sweep_id": sweep_id, "experiment": experiment, "parent_run_id": None, "jobs": count_jobs(hc),
                                "tracking_uri": str(config.tracking.uri) if config.tracking.enabled else None}
        self.started = time.time()
        if config.tracking.enabled:
            check_reachable(config.tracking.uri)
            tracker = MlflowTracker(config.tracking.uri, experiment)  # creates the store and experiment once, here
            self.client = tracker.client
            run = self.client.create_run(tracker.experiment_id, run_name=f"sweep {sweep_id}", tags={
                "harness.role": "sweep", "sweep_id": sweep_id, "overrides": " ".join(overrides)[:5000],
                "launcher": str(hc.launcher._target_).rsplit(".", 1)[-1], "outcome": "running"})
            self.parent_run_id = info["parent_run_id"] = run.info.run_id
            atexit.register(self._close_if_open, "KILLED")
        (directory / SWEEP_FILE).write_text(json.dumps(info))
        print(f"sweep {sweep_id}: {info['jobs'] or 'unknown number of'} jobs, experiment {experiment!r}" + (f", parent run {self.parent_run_id}" if self.parent_run_id else "")
              + f", outputs in {directory}", flush=True)

    def on_multirun_end(self, config: DictConfig, **kwargs: Any) -> None:
        directory = sweep_dir(config.hydra)
        outcomes = [json.loads(p.read_text()) for p in sorted((directory / JOBS_DIR).glob("*.json"))]
        if not outcomes:
            print("sweep done: no job recorded an outcome", flush=True)
        counts = {k: sum(o["outcome"] == k for o in outcomes) for k in OUTCOMES}
        print("\n" + summary_table(outcomes), flush=True)
        print("sweep done: " + ", ".join(f"{v} {k}" for k, v in counts.items()) + f" in {time.time() - self.started:.1f}s", flush=True)
        failed = counts["failed"] + counts["killed"]
        if self.client is not None and self.parent_run_id:
            from mlflow.entities import Metric, RunTag

            now = int(time.time() * 1000)
            self.client.log_batch(self.parent_run_id, metrics=[Metric(f"jobs_{k}", v, now, 0) for k, v in counts.items()],
                                  tags=[RunTag("outcome", "failed" if failed else "finished")] +
                                       [RunTag(f"jobs_{k}", str(v)) for k, v in counts.items()])
            self._close_if_open("FAILED" if failed else "FINISHED")
        if failed:
            sys.exit(1)

    def _close_if_open(self, status: str) -> None:
        if self.client is not None and self.parent_run_id:
            run_id, self.parent_run_id = self.parent_run_id, None
            try:
                self.client.set_terminated(run_id, status=status)
            except Exception:  # the process is exiting anyway; never hide the real error
                pass


def job_context() -> dict[str, Any] | None:
    """For a job of a --multirun: its number, overrides, sweep dir and the sweep's info; else None."""
    from hydra.core.hydra_config import HydraConfig
    from hydra.types import RunMode

    if not HydraConfig.initialized() or HydraConfig.get().mode != RunMode.MULTIRUN:
        return None
    hc = HydraConfig.get()
    directory = sweep_dir(hc)
    sweep = read_sweep(directory) or {}
    return {"num": int(hc.job.num), "overrides": ",".join(hc.overrides.task), "dir": directory, "sweep": sweep,
            "launcher": hc.launcher, "parallel": parallel_jobs(hc.launcher, sweep.get("jobs"))}


def parallel_jobs(launcher, total_jobs: int | None) -> int:
    """How many jobs of a sweep run at once on this machine, from the launcher config."""
    target = str(launcher.get("_target_", ""))
    total = total_jobs or 10 ** 6
    if "Joblib" in target:
        n = int(launcher.get("n_jobs") or -1)
        cores = os.cpu_count() or 1
        return min(total, n if n > 0 else max(1, cores + 1 + n))  # joblib: -1 is all cores, -2 all but one, ...
    if target.endswith("LocalLauncher"):  # submitit_local starts every job at once (up to array_parallelism)
        return min(total, int(launcher.get("array_parallelism") or 256))
    return 1  # the basic launcher runs one job at a time; on a cluster each job has its own allocation
