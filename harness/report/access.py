"""The store as a report opens it: a clear line for a store that is not there, a wait for one that
another process holds locked, the listing of its experiments and sweeps, and the classes its runs' configs name."""

from __future__ import annotations

import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import TypeVar

import pandas as pd

from harness.report import ReportError
from harness.report.load import (
    all_runs,
    client_for,
)

T = TypeVar("T")
SWEEPS_LISTED = 5  # sweeps listed per experiment by --list (newest first)
LOCK_WAIT = 30.0  # seconds a report waits for a store another process holds locked, as a run does (tracking.lock_timeout)


def check_store(uri: str) -> None:
    """One line, and nothing created, for a store a report cannot read: a sqlite file that is not
    there (MLflow would create an empty one), corrupt or unreadable, an unknown scheme, a dead server."""
    from harness import HarnessError
    from harness.tracking.uris import check_uri, sqlite_path

    try:
        check_uri(uri)
    except HarnessError as e:
        raise ReportError(str(e)) from None
    path = sqlite_path(uri) if uri.startswith("sqlite:") else None
    if path is not None and not path.exists():
        raise ReportError(
            f"there is no MLflow store at {path.resolve()} (run a sweep there first, or pass "
            f"--tracking-uri to where the runs are)"
        )


def waiting_out_locks(make: Callable[[], T], uri: str, wait: float = LOCK_WAIT) -> T:
    """make(), again while another process holds the store locked (a sweep writing), for up to ``wait`` seconds."""
    from harness.tracking.uris import is_locked, quiet_mlflow

    quiet_mlflow()
    deadline, pause = time.monotonic() + wait, 0.5
    while True:
        try:
            return make()
        except Exception as e:
            if not is_locked(e):
                raise
            if time.monotonic() >= deadline:
                raise ReportError(
                    f"the MLflow store {uri} stayed locked by another process for {wait:g} s (a sweep "
                    "writing to it?); try again when it is free"
                ) from None
            time.sleep(pause)


def listing(uri: str) -> str:
    """The store's experiments, each with its runs and its sweeps (id, date, jobs, outcome), newest first."""

    client = client_for(uri)
    lines = [f"experiments in {uri} (report one: python -m harness.report EXPERIMENT):"]
    for exp in sorted(client.search_experiments(), key=lambda e: e.name):
        runs = all_runs(client, exp.experiment_id)
        sweeps = sorted((r for r in runs if r.data.tags.get("harness.role") == "sweep"), key=lambda r: -r.info.start_time)
        jobs = len(runs) - len(sweeps)
        if not runs and exp.name == "Default":
            continue
        lines.append(f"  {exp.name}: {jobs} run(s), {len(sweeps)} sweep(s)")
        for r in sweeps[:SWEEPS_LISTED]:
            t = r.data.tags
            counts = ", ".join(
                f"{t[f'jobs_{k}']} {k}"
                for k in ("finished", "diverged", "failed", "killed", "skipped")
                if t.get(f"jobs_{k}", "0") != "0"
            )
            when = time.strftime("%Y-%m-%d %H:%M", time.localtime(r.info.start_time / 1000))
            lines.append(
                f"    sweep {t.get('sweep_id', r.info.run_id)}  {when}  {r.info.run_name}  "
                f"{t.get('outcome', r.info.status.lower())}" + (f" ({counts})" if counts else "")
            )
        if len(sweeps) > SWEEPS_LISTED:
            lines.append(f"    ... and {len(sweeps) - SWEEPS_LISTED} older sweep(s)")
    if len(lines) == 1:
        lines.append("  none yet: run a sweep first (python -m harness --multirun ...)")
    return "\n".join(lines)


def choice_classes(client, runs: pd.DataFrame, config_cols: list[str]) -> dict:
    """(group, choice) -> the class its config names, from one run's config.yaml per choice (runs log no
    ``_target_`` param); a choice whose config cannot be read is left out."""
    import yaml

    out = {}
    for group in [c for c in config_cols if c in ("loss", "optimizer", "schedule")]:
        if f"param:{group}._target_" in runs and runs[f"param:{group}._target_"].notna().all():
            continue
        for name, part in runs.groupby(group, sort=True):
            try:
                with tempfile.TemporaryDirectory() as tmp:
                    cfg = yaml.safe_load(Path(client.download_artifacts(part["run_id"].iloc[0], "config.yaml", tmp)).read_text())
                out[(group, name)] = (cfg.get(group) or {}).get("_target_", "")
            except Exception:  # an artifact store out of reach: the table goes without the class
                continue
    return out
