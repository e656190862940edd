"""The sweep's Hydra callback: one MLflow parent run per ``--multirun``, its start, end and stop.

``SweepCallback`` is a Hydra callback (``hydra.callbacks`` in conf/config.yaml). Before any job
starts it claims the sweep's folder (two sweeps never share one), creates the MLflow store, the
experiment and the sweep's parent run *once* (many processes opening a fresh sqlite file at once
race in MLflow's schema migration), closes what dead sweeps left RUNNING in the experiment, and
writes ``<sweep dir>/harness_sweep.json`` so that every job, in whatever process or machine the
launcher puts it, logs into the same experiment under that parent.

Each job keeps its line in the journal ``<sweep dir>/harness_jobs/<num>.json``: ``running`` with
its run id as soon as its MLflow run exists, then its outcome. At the end the callback prints the
table, closes any run whose job's process died (FAILED), closes the parent with the counts, and
exits 1 only if a job failed (diverged is an outcome, not a failure). A stopped sweep (Ctrl-C,
SIGTERM, SIGHUP: ``abort``) stops its worker processes, cancels the SLURM jobs it submitted, closes
every run still open as KILLED and the parent as KILLED with the counts.
"""

from __future__ import annotations

import atexit
import contextlib
import os
import sys
import time
import traceback
import uuid
from pathlib import Path
from typing import Any

from hydra.experimental.callback import Callback
from omegaconf import DictConfig

from harness.sweep.journal import (
    DIED,
    OUTCOMES,
    REUSED_FILE,
    SWEEP_FILE,
    claim,
    read_journal,
    record_job,
    summary_table,
    sweep_dir,
    write_atomic,
)
from harness.sweep.plan import check_sweep, count_jobs, study_tags, swept_groups, swept_keys
from harness.tracking.runs import experiment_name

ACTIVE: SweepCallback | None = None  # the sweep this process runs, for the stop handler in harness.__main__


def terminate_children(timeout: float = 10.0) -> int:
    """Stop this process's worker processes (joblib's loky workers, submitit_local jobs): SIGTERM,
    which closes their runs as KILLED, then SIGKILL for any still alive after `timeout` seconds."""
    import psutil

    children = [c for c in psutil.Process().children(recursive=True) if not is_resource_tracker(c)]
    for c in children:
        with contextlib.suppress(psutil.Error):
            c.terminate()
    _, alive = psutil.wait_procs(children, timeout=timeout)
    for c in alive:
        with contextlib.suppress(psutil.Error):
            c.kill()
    return len(children)


def cancel_cluster_jobs(directory: Path, since: float) -> list[str]:
    """Cancel (``scancel``) the SLURM jobs this sweep submitted that may still be queued or running:
    hydra-submitit-launcher keeps a folder per job, named by its SLURM id, under
    ``<sweep dir>/.submitit``; only folders made since this sweep started count (an earlier sweep
    in the folder, or an earlier cluster that numbered its jobs from 1 again, is left alone).
    Cancelled jobs get SIGTERM and close their runs KILLED; a finished id is refused by scancel,
    harmlessly. Returns the job ids asked to stop."""
    import shutil
    import subprocess

    folder, scancel = directory / ".submitit", shutil.which("scancel")
    if scancel is None or not folder.is_dir():
        return []
    ids = sorted(
        {
            p.name.split("_")[0]
            for p in folder.iterdir()
            if p.is_dir() and p.name.split("_")[0].isdigit() and p.stat().st_mtime >= since - 1
        }
    )
    if ids:
        try:
            subprocess.run([scancel, *ids], capture_output=True, timeout=30)
        except (OSError, subprocess.SubprocessError) as e:
            print(f"warning: scancel {' '.join(ids)} failed ({e}); cancel this sweep's SLURM jobs by hand", file=sys.stderr)
    return ids


def is_resource_tracker(process) -> bool:
    """loky's resource tracker: it holds no run, and leaves by itself when this process exits
    (killing it makes loky start another, which prints tracebacks about what the first one freed)."""
    import psutil

    try:
        return any("resource_tracker" in part for part in process.cmdline())
    except psutil.Error:
        return False


def close_dead_sweeps(store, experiment_id: str) -> int:
    """Close the parent runs (and their RUNNING children) of sweeps in this experiment whose process
    died (kill -9, a lost node): children FAILED, parent KILLED with the job counts."""
    from harness.tracking import signals
    from harness.tracking.store import process_alive

    client = store.client
    parents = store.call(client.search_runs, [experiment_id], "tags.`harness.role` = 'sweep' and attributes.status = 'RUNNING'")
    closed = 0
    for p in parents:
        if process_alive(p.data.tags):
            continue
        children = store.call(client.search_runs, [experiment_id], f"tags.`mlflow.parentRunId` = '{p.info.run_id}'")
        outcomes = []
        with signals.deferred():
            for c in children:
                outcome = c.data.tags.get("outcome", "failed")
                if c.info.status == "RUNNING" and not process_alive(c.data.tags):
                    store.close_run(c.info.run_id, "FAILED", {"outcome": "failed", "error": DIED})
                    outcome = "failed"
                outcomes.append(outcome)
            counts = {f"jobs_{k}": str(sum(o == k for o in outcomes)) for k in OUTCOMES}
            store.close_run(
                p.info.run_id,
                "KILLED",
                {"outcome": "killed", **counts, "error": "found RUNNING by a later sweep: its process died"},
            )
        closed += 1
    return closed


class SweepCallback(Callback):
    def __init__(self) -> None:
        self.store = None
        self.parent_run_id: str | None = None
        self.experiment_id: str | None = None
        self.directory: Path | None = None
        self.info: dict[str, Any] = {}
        self.started = 0.0

    def on_multirun_start(self, config: DictConfig, **kwargs: Any) -> None:
        # Hydra turns a callback's exception into a warning and carries on; a sweep that cannot
        # reach its store must stop instead, so exit here (SystemExit passes through Hydra).
        from harness import HarnessError
        from harness.config import compose
        from harness.tracking import signals

        signals.install()
        compose.install()  # each job composed once, for whatever launcher
        try:
            self._start(config)
        except HarnessError as e:
            print(f"error: {e}", file=sys.stderr)
            sys.exit(2)
        except Exception:
            traceback.print_exc()
            sys.exit(1)

    def _start(self, config: DictConfig) -> None:
        global ACTIVE
        from harness.config.checks import check_run_knobs
        from harness.tracking import signals
        from harness.tracking.store import open_store, process_tag

        hc = config.hydra
        check_run_knobs(config)
        check_sweep(config)
        self.directory = directory = sweep_dir(hc)
        overrides = list(hc.overrides.task)
        experiment = experiment_name(config, hc.runtime.choices.get("task", "task"), "task" in swept_groups(overrides))
        sweep_id = f"{time.strftime('%Y%m%d-%H%M%S')}-{uuid.uuid4().hex[:6]}"
        varies = swept_keys(hc)
        self.info = {
            "sweep_id": sweep_id,
            "experiment": experiment,
            "parent_run_id": None,
            "jobs": count_jobs(hc),
            "varies": varies,
            "tracking_uri": str(config.tracking.uri) if config.tracking.enabled else None,
            "process": process_tag(),
            "started": time.time(),
        }
        self.started = self.info["started"]
        if config.tracking.enabled:  # a store that cannot be used stops the sweep before it leaves a folder
            self.store = open_store(config.tracking.uri, config.tracking.lock_timeout)  # creates the store once, here
            experiment_id = self.experiment_id = self.store.experiment_id(experiment)
        claim(directory, self.info)
        if config.tracking.enabled:
            if closed := close_dead_sweeps(self.store, experiment_id):
                print(f"closed {closed} sweep(s) in {experiment!r} whose process had died (marked KILLED)", flush=True)
            with signals.deferred():
                name = f"sweep: {' x '.join(varies) or 'one job'} ({self.info['jobs'] or '?'} jobs)"
                run = self.store.call(
                    self.store.client.create_run,
                    experiment_id,
                    run_name=name,
                    tags={
                        "harness.role": "sweep",
                        "sweep_id": sweep_id,
                        "overrides": " ".join(overrides)[:5000],
                        "launcher": str(hc.launcher._target_).rsplit(".", 1)[-1],
                        "outcome": "running",
                        "process": process_tag(),
                        **study_tags(config),
                    },
                )
                self.parent_run_id = self.info["parent_run_id"] = run.info.run_id
                write_atomic(directory / SWEEP_FILE, self.info)
        ACTIVE = self
        atexit.register(self._at_exit)
        suffix = config.tracking.get("experiment_suffix") or ""
        print(
            f"sweep {sweep_id}: {self.info['jobs'] or 'unknown number of'} jobs, experiment {experiment!r}"
            + (
                f" (with tracking.experiment_suffix={suffix}, which smoke=on sets to keep a wiring test apart "
                "from the full study's runs)"
                if suffix and experiment.endswith(suffix)
                else ""
            )
            + (f", parent run {self.parent_run_id}" if self.parent_run_id else "")
            + f", outputs in {directory}",
            flush=True,
        )

    # ---------------------------------------------------------------- the end, normal or not

    def settle(self, outcome: str, error: str) -> list[dict[str, Any]]:
        """The journal, with every job still 'running' closed in MLflow as `outcome` (its process is
        gone: it died, or was stopped with the sweep)."""
        from harness import HarnessError

        status = {"killed": "KILLED", "failed": "FAILED"}[outcome]
        outcomes = read_journal(self.directory)
        for o in outcomes:
            if o["outcome"] != "running":
                continue
            if self.store is not None and o.get("run_id"):
                try:
                    if self.store.call(self.store.client.get_run, o["run_id"]).info.status == "RUNNING":
                        self.store.close_run(o["run_id"], status, {"outcome": outcome, "error": error})
                except HarnessError as e:
                    print(f"error: run {o['run_id']} could not be closed: {e}", file=sys.stderr)
            o.update(outcome=outcome, error=error)
            record_job(self.directory, o["num"], o)
        return outcomes

    def finish(self, outcomes: list[dict[str, Any]], status: str | None = None) -> dict[str, int]:
        """Print the table and the counts, close the parent run, mark the folder's sweep finished."""
        from harness.tracking import signals

        counts = {k: sum(o["outcome"] == k for o in outcomes) for k in OUTCOMES}
        if outcomes:
            print("\n" + summary_table(outcomes), flush=True)
        missing = (self.info.get("jobs") or 0) - len(outcomes)
        print(
            "sweep "
            + ("stopped" if status == "KILLED" else "done")
            + ": "
            + ", ".join(f"{v} {k}" for k, v in counts.items())
            + (f", {missing} not run" if missing > 0 else "")
            + f" in {time.time() - self.started:.1f}s",
            flush=True,
        )
        failed = counts["failed"] + counts["killed"]
        status = status or ("FAILED" if failed else "FINISHED")
        if self.store is not None and self.parent_run_id:
            from mlflow.entities import Metric, RunTag

            now = int(time.time() * 1000)
            outcome = {"KILLED": "killed", "FAILED": "failed"}.get(status, "finished")
            with signals.deferred():
                self.store.call(
                    self.store.client.log_batch,
                    self.parent_run_id,
                    metrics=[Metric(f"jobs_{k}", v, now, 0) for k, v in counts.items()],
                    tags=[RunTag("outcome", outcome)] + [RunTag(f"jobs_{k}", str(v)) for k, v in counts.items()],
                )
                reused = sorted({o["run_id"] for o in outcomes if o["outcome"] == "skipped" and o.get("run_id")})
                if reused:  # resume: the finished runs of earlier sweeps that stand for this sweep's jobs (the report reads them)
                    self.store.call(self.store.client.log_dict, self.parent_run_id, {"runs": reused}, REUSED_FILE)
                self.store.call(self.store.client.set_terminated, self.parent_run_id, status=status)
                self.parent_run_id = None
        with contextlib.suppress(OSError):
            write_atomic(self.directory / SWEEP_FILE, {**self.info, "finished": True})
        return counts

    def on_multirun_end(self, config: DictConfig, **kwargs: Any) -> None:
        global ACTIVE
        outcomes = self.settle("failed", "its process ended without closing the run (killed or crashed)")
        if not outcomes:
            print("sweep done: no job recorded an outcome", flush=True)
        counts = self.finish(outcomes)
        ACTIVE = None
        if self.store is not None and self.experiment_id:
            from harness.tracking.uris import runs_link

            print(f"runs in the MLflow UI: {runs_link(self.store.uri, self.experiment_id)}", flush=True)
            print(f"report: {report_command(self.info.get('experiment'), self.store.uri)}", flush=True)
        if counts["failed"] + counts["killed"]:
            sys.exit(1)

    def abort(self, why: str) -> None:
        """The sweep was stopped (Ctrl-C, SIGTERM, SIGHUP): stop the workers, close what is open as KILLED."""
        global ACTIVE
        from harness.tracking import signals

        ACTIVE = None
        with signals.deferred():
            stopped = terminate_children()
            cancelled = cancel_cluster_jobs(self.directory, self.started)
            outcomes = self.settle("killed", f"stopped with its sweep ({why})")
            self.finish(outcomes, "KILLED")
        print(
            f"interrupted ({why}): the sweep's open runs and its parent run are marked KILLED"
            + (f"; {stopped} worker process(es) stopped" if stopped else "")
            + (f"; SLURM job(s) {', '.join(cancelled)} cancelled" if cancelled else ""),
            file=sys.stderr,
            flush=True,
        )

    def _at_exit(self) -> None:
        """Last resort (the process exits some other way): never leave the parent RUNNING."""
        if self.parent_run_id is not None:
            with contextlib.suppress(Exception):
                self.finish(self.settle("failed", "the sweep process exited before the sweep ended"), "FAILED")


def report_command(experiment: str | None, uri: str) -> str:
    """The command that makes this sweep's report, as a person would type it in the same folder."""
    import shlex

    default = os.environ.get("MLFLOW_TRACKING_URI", "sqlite:///mlflow.db")
    where = "" if uri == default or uri == f"sqlite:///{Path('mlflow.db').resolve()}" else f" --tracking-uri {shlex.quote(uri)}"
    return f"python -m harness.report {shlex.quote(experiment or 'EXPERIMENT')}{where}"
