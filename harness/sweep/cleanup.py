"""What a sweep leaves behind when it stops or dies, cleaned up: its worker processes, its SLURM jobs, and
the parent runs (with their children) of earlier sweeps whose process died."""

from __future__ import annotations

import contextlib
import sys
from pathlib import Path

from harness.sweep.journal import DIED, OUTCOMES


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
