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
from typing import TYPE_CHECKING, Any

from hydra.experimental.callback import Callback
from omegaconf import DictConfig

from harness.sweep.cleanup import cancel_cluster_jobs, close_dead_sweeps, terminate_children
from harness.sweep.journal import (
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

if TYPE_CHECKING:
    from harness.tracking.store import Store

ACTIVE: SweepCallback | None = None  # the sweep this process runs, for the stop handler in harness.__main__


class SweepCallback(Callback):
    def __init__(self) -> None:
        self.store: Store | None = None
        self.parent_run_id: str | None = None
        self.experiment_id: str | None = None
        self.directory: Path | None = None
        self.info: dict[str, Any] = {}
        self.started = 0.0

    @property
    def folder(self) -> Path:
        """The sweep's folder (``_start`` sets it before the sweep's end or a stop reads it)."""
        assert self.directory is not None, "the sweep's folder is set when it starts"
        return self.directory

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
        from harness import HarnessError
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
        if config.study.stage == "confirm":  # which settings this sweep reruns, read from the study's earlier runs
            if not config.tracking.enabled:
                raise HarnessError(
                    "study.stage=confirm reads the study's selection from the store: it needs tracking.enabled=true"
                )
            from harness.sweep.confirm import plan

            assert self.store is not None  # opened above: tracking is enabled
            self.info["confirm"] = plan(self.store.client, experiment_id, experiment, config)
            c = self.info["confirm"]
            print(
                f"confirmation round {c['round']} of at most {config.study.rounds}: {len(c['selected'])} selected setting(s) "
                f"on fresh seeds {', '.join(c['seeds'])}"
                + (" (catching up the settings this round left out)" if c.get("catch_up") else "")
                + "; the other jobs of the grid pass",
                flush=True,
            )
        claim(directory, self.info)
        if self.store is not None:  # tracking is enabled
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
                        **({"jobs": str(self.info["jobs"])} if self.info["jobs"] else {}),  # the name may be edited in the UI
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
        outcomes = read_journal(self.folder)
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
            record_job(self.folder, o["num"], o)
        return outcomes

    def finish(self, outcomes: list[dict[str, Any]], status: str | None = None) -> dict[str, int]:
        """Print the table and the counts, close the parent run, mark the folder's sweep finished."""
        from harness.tracking import signals

        counts = {k: sum(o["outcome"] == k for o in outcomes) for k in OUTCOMES}
        shown = [o for o in outcomes if o["outcome"] != "unselected"]  # a confirmation's passed jobs: counted, not listed
        if shown:
            print("\n" + summary_table(shown), flush=True)
        missing = (self.info.get("jobs") or 0) - len(outcomes)
        print(
            "sweep "
            + ("stopped" if status == "KILLED" else "done")
            + ": "
            + ", ".join(f"{v} {k}" for k, v in counts.items() if v or k != "unselected")
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
            write_atomic(self.folder / SWEEP_FILE, {**self.info, "finished": True})
        return counts

    def on_multirun_end(self, config: DictConfig, **kwargs: Any) -> None:
        global ACTIVE
        outcomes = self.settle("failed", "its process ended without closing the run (killed or crashed)")
        if not outcomes:
            print("sweep done: no job recorded an outcome", flush=True)
        self.warn_not_run(outcomes)
        counts = self.finish(outcomes)
        ACTIVE = None
        if self.store is not None and self.experiment_id:
            from harness.tracking.uris import runs_link

            print(f"runs in the MLflow UI: {runs_link(self.store.uri, self.experiment_id)}", flush=True)
            print(f"report: {report_command(self.info.get('experiment'), self.store.uri)}", flush=True)
        if counts["failed"] + counts["killed"]:
            sys.exit(1)

    def warn_not_run(self, outcomes: list[dict[str, Any]]) -> None:
        """A confirmation round whose grid lacked some selected settings says which, and how to catch them up."""
        from harness import HarnessError
        from harness.sweep.confirm import not_run

        plan = self.info.get("confirm")
        if not plan or self.store is None or not self.parent_run_id or not self.experiment_id:
            return
        try:
            reused = [o["run_id"] for o in outcomes if o["outcome"] == "skipped" and o.get("run_id")]
            missing = self.store.call(not_run, self.store.client, self.experiment_id, self.parent_run_id, plan, reused)
        except HarnessError as e:
            print(f"error: could not check which selected settings ran: {e}", file=sys.stderr)
            return
        if missing:
            shown = "; ".join(", ".join(f"{k}={v}" for k, v in s.items() if v is not None) for s in missing[:3])
            shown += "; ..." if len(missing) > 3 else ""
            verb = "is" if len(missing) == 1 else "are"
            print(
                f"note: {len(missing)} of the {len(plan['selected'])} selected settings {verb} not in this sweep's grid "
                f"and did not run ({shown}): run the study's sweep that has them with study.stage=confirm and the same "
                f"seeds (seed={','.join(plan['seeds'])}) to catch round {plan['round']} up",
                flush=True,
            )

    def abort(self, why: str) -> None:
        """The sweep was stopped (Ctrl-C, SIGTERM, SIGHUP): stop the workers, close what is open as KILLED."""
        global ACTIVE
        from harness.tracking import signals

        ACTIVE = None
        with signals.deferred():
            stopped = terminate_children()
            cancelled = cancel_cluster_jobs(self.folder, self.started)
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
