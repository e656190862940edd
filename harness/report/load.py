"""MLflow -> pandas: one row per run, and the per-epoch histories of the metrics a report plots."""

from __future__ import annotations

import math
import os
import re
from dataclasses import dataclass
from pathlib import Path

import pandas as pd

from harness.config import schema
from harness.config.values import same_value
from harness.report import ReportError

# params that never distinguish one configuration from another
GROUPS = schema.GROUPS


def all_runs(client, experiment_id: str) -> list:
    """Every run of an experiment, page by page (MLflow returns at most 1000 at a time)."""
    runs, token = [], None
    while True:
        page = client.search_runs([experiment_id], max_results=1000, page_token=token)
        runs += list(page)
        token = page.token
        if not token:
            return runs


def client_for(uri: str):
    import logging

    from mlflow.tracking import MlflowClient

    for name in ("mlflow", "alembic"):
        logging.getLogger(name).setLevel(logging.WARNING)
    os.environ.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")  # a bar per artifact read cluttered the output
    return MlflowClient(tracking_uri=uri)


def load_runs(client, experiment: str) -> tuple[pd.DataFrame, str]:
    """(one row per training run, the experiment id). Sweep parent runs are left out."""
    from mlflow.exceptions import MlflowException

    try:
        exp = client.get_experiment_by_name(experiment)
        if exp is not None and exp.lifecycle_stage == "deleted":
            raise ReportError(
                f"experiment {experiment!r} in {client.tracking_uri} is deleted (in MLflow's trash); restore "
                f"it first: mlflow experiments restore --experiment-id {exp.experiment_id}"
            )
        if exp is None:
            names = sorted(e.name for e in client.search_experiments())
            raise ReportError(
                f"no experiment {experiment!r} in {client.tracking_uri}; experiments there: "
                f"{', '.join(names) if names else 'none'}"
            )
        runs = all_runs(client, exp.experiment_id)
    except MlflowException as e:
        raise ReportError(f"cannot read the MLflow store {client.tracking_uri}: {str(e).splitlines()[0]}") from None
    rows = []
    for r in runs:
        tags = r.data.tags
        if tags.get("harness.role") == "sweep":
            continue
        row = {
            "run_id": r.info.run_id,
            "run_name": r.info.run_name,
            "status": r.info.status,
            "outcome": tags.get("outcome", r.info.status.lower()),
            "start": r.info.start_time,
            "end": r.info.end_time,
            "primary_metric": tags.get("primary_metric"),
            "primary_mode": tags.get("primary_mode", "max"),
            "harness_version": tags.get("harness_version"),
            "train_seconds": _float(tags.get("train_seconds")),
            "bundle": tags.get("bundle"),
            "device": tags.get("device"),
            "device_name": tags.get("device_name"),
            "seed": tags.get("seed", r.data.params.get("seed")),
            "parent_run_id": tags.get("mlflow.parentRunId"),
            "sweep_id": tags.get("sweep_id"),
            "stage": tags.get("stage", "select"),  # confirm: a rerun of a selected setting on fresh seeds
            "round": tags.get("round"),
        }
        for g in GROUPS:
            row[g] = tags.get(g)
        if row["status"] == "RUNNING":
            row["outcome"] = "running"
        elif row["status"] in ("FAILED", "KILLED") and row["outcome"] not in ("failed", "killed"):
            row["outcome"] = row["status"].lower()
        row.update({f"param:{k}": v for k, v in r.data.params.items()})
        row.update({f"final:{k}": v for k, v in r.data.metrics.items()})
        rows.append(row)
    if not rows:
        raise ReportError(f"experiment {experiment!r} has no runs yet")
    return pd.DataFrame(rows), exp.experiment_id


REUSED_FILE = (
    "harness_reused_runs.json"  # written by harness.sweep on a parent whose sweep resumed (the report reads only the store)
)


@dataclass
class Unit:
    """The runs a report reads: the sweeps (parent runs) they come from, and a sentence saying which."""

    runs: pd.DataFrame
    parents: list  # the parent runs read, newest first (the report attaches to the first)
    text: str


def sweep_parents(client, experiment_id: str) -> list:
    """The experiment's sweep parent runs, newest first."""
    out, token = [], None
    while True:
        page = client.search_runs(
            [experiment_id],
            "tags.`harness.role` = 'sweep'",
            order_by=["attributes.start_time DESC"],
            max_results=1000,
            page_token=token,
        )
        out += list(page)
        token = page.token
        if not token:
            return out


def reused_runs(client, parent) -> list[str]:
    """The earlier runs a resumed sweep's skipped jobs stand for (none for a sweep that did not resume)."""
    import json
    import tempfile

    os.environ.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")  # one small file: no progress bar
    try:
        with tempfile.TemporaryDirectory() as tmp:
            path = client.download_artifacts(parent.info.run_id, REUSED_FILE, tmp)
            return list(json.loads(Path(path).read_text()).get("runs", []))
    except Exception:  # no such artifact: nothing was reused
        return []


def select_unit(client, experiment_id: str, runs: pd.DataFrame, sweep: str | None = None, everything: bool = False) -> Unit:
    """What one report reads. By default one unit: a declared study's sweeps (all sweeps whose parent
    declares the same comparison: selection, confirmation, seed rounds), else the newest sweep with
    the finished runs it reused on resume; runs made outside any sweep count only when the experiment
    has no sweep. ``sweep``: that sweep (its id or its parent run id) instead; ``everything``: all runs."""
    from harness.report.declaration import Declaration

    parents = sweep_parents(client, experiment_id)
    if everything or not parents:
        return Unit(runs, parents, f"all {len(runs)} runs of the experiment" + (" (--all-sweeps)" if everything else ""))
    if sweep is not None:
        chosen = [p for p in parents if sweep in (p.info.run_id, p.data.tags.get("sweep_id"))]
        if not chosen:
            listed = ", ".join(p.data.tags.get("sweep_id", p.info.run_id) for p in parents[:5])
            raise ReportError(
                f"no sweep {sweep!r} in this experiment; its sweeps, newest first: {listed}"
                + (" ..." if len(parents) > 5 else "")
            )
    else:
        newest = parents[0]
        decl = Declaration.from_tags(newest.data.tags, newest.info.run_id)
        if decl is not None:
            key = (decl.compare, decl.tune)
            chosen = [
                p
                for p in parents
                if (d := Declaration.from_tags(p.data.tags, p.info.run_id)) is not None and (d.compare, d.tune) == key
            ]
        else:
            chosen = [newest]
    ids = {p.info.run_id for p in chosen}
    reused = {r for p in chosen for r in reused_runs(client, p)}
    part = runs[runs["parent_run_id"].isin(ids) | runs["run_id"].isin(reused)].reset_index(drop=True)
    if part.empty:
        raise ReportError(
            f"the sweep(s) {', '.join(p.data.tags.get('sweep_id', p.info.run_id) for p in chosen)} have no runs "
            "yet (--all-sweeps reads every run of the experiment)"
        )
    names = ", ".join(p.data.tags.get("sweep_id", p.info.run_id) for p in chosen)
    declared = Declaration.from_tags(parents[0].data.tags) is not None
    why = (
        "the sweep asked for"
        if sweep is not None
        else "the sweeps of the study's declaration"
        if declared
        else "the newest sweep"
    )
    text = (
        f"{len(part)} runs from {why}: {names}"
        + (f" ({len(reused & set(part['run_id']))} of them reused on resume)" if reused else "")
        + (
            f"; {len(runs) - len(part)} other runs of the experiment left out (--sweep ID or --all-sweeps)"
            if len(runs) > len(part)
            else ""
        )
    )
    return Unit(part, chosen, text)


def open_sweeps(parents: list, runs: pd.DataFrame) -> str:
    """A sentence naming the sweeps read whose parent run is still RUNNING (empty if none): their study is not
    complete, so a report of it is provisional."""
    items = []
    for p in parents:
        if p.info.status != "RUNNING":
            continue
        named = re.search(r"\((\d+) jobs\)", p.info.run_name or "")  # sweeps from before the jobs tag: the run's name
        jobs = p.data.tags.get("jobs") or (named[1] if named else None)
        have = int((runs["parent_run_id"] == p.info.run_id).sum())
        items.append(
            f"{p.data.tags.get('sweep_id', p.info.run_id)} ({have} runs so far" + (f", of {jobs} jobs)" if jobs else ")")
        )
    if not items:
        return ""
    return (
        f"sweep(s) {', '.join(items)} still open (RUNNING in MLflow: under way, or their process died and the next "
        "sweep of the experiment closes them): what follows is provisional; rerun the report when they have ended"
    )


def declaration(client, experiment_id: str):
    """The newest study declaration among the experiment's sweep parent runs (None: a plain sweep)."""
    from harness.report.declaration import Declaration

    parents = client.search_runs(
        [experiment_id], "tags.`harness.role` = 'sweep'", order_by=["attributes.start_time DESC"], max_results=200
    )
    for parent in parents:
        found = Declaration.from_tags(parent.data.tags, parent.info.run_id)
        if found is not None:
            return found
    return None


def _float(v):
    try:
        return float(v)
    except (TypeError, ValueError):
        return math.nan


def factors(runs: pd.DataFrame) -> list[str]:
    """The columns that vary between configurations: the group choices (task, loss, ...) and any param
    that differs between runs and is not already implied by a group choice (focal's gamma by loss=focal).
    A param absent from some runs and at one value in the others is no factor: a knob the harness gained
    between a study's sweeps (a selection before it, a confirmation after), whose default keeps the old
    behaviour."""
    out = [g for g in GROUPS if runs[g].nunique(dropna=False) > 1]
    params = [c for c in runs.columns if c.startswith("param:")]
    for col in sorted(params):
        key = col[len("param:") :]
        if not schema.is_factor(key):
            continue
        if key in GROUPS or key.endswith(("_target_", "_partial_")):
            continue  # the group choice itself (a param since the params were trimmed) and class paths (before): the group columns say it
        if runs[col].nunique(dropna=False) <= 1:
            continue
        if runs[col].isna().any() and runs[col].nunique() <= 1:
            continue  # a knob added to the harness between a study's sweeps, at one value where it is logged
        group = key.split(".")[0]
        if group in GROUPS and key != "optimizer.lr" and runs.groupby(group, dropna=False)[col].nunique(dropna=False).max() <= 1:
            continue  # implied by the group choice
        out.append(col)
    return out


def training_seconds(runs: pd.DataFrame) -> float:
    """Wall seconds of training: a stacked bundle's members each carry the bundle's time, so a bundle counts once."""
    seconds = pd.to_numeric(runs["train_seconds"], errors="coerce")
    bundles = runs["bundle"] if "bundle" in runs else pd.Series(None, index=runs.index)
    solo = seconds[bundles.isna()].sum()
    stacked = seconds[bundles.notna()].groupby(bundles[bundles.notna()]).max().sum()
    return float(solo + stacked)


def histories(client, runs: pd.DataFrame, keys: list[str]) -> pd.DataFrame:
    """Long table (run_id, key, step, value) of the given metric keys for every run."""
    rows = []
    for run_id in runs["run_id"]:
        for key in keys:
            for m in client.get_metric_history(run_id, key):
                rows.append((run_id, key, m.step, m.value))
    return pd.DataFrame(rows, columns=["run_id", "key", "step", "value"])


def parse_where(items: list[str]) -> dict[str, str]:
    where = {}
    for item in items:
        key, sep, value = item.partition("=")
        if not sep or not key.strip() or not value.strip():
            raise ReportError(f"--where {item!r}: expected KEY=VALUE, e.g. --where optimizer.weight_decay=0.0")
        where[key.strip()] = value.strip()
    return where


def slice_runs(runs: pd.DataFrame, where: dict[str, str]) -> pd.DataFrame:
    """The runs whose param (or group choice, e.g. optimizer=adam) KEY has the value given, for every KEY."""
    for key, value in where.items():
        col = key if key in GROUPS else f"param:{key}"
        if col not in runs:
            known = sorted(c.split(":", 1)[1] for c in runs.columns if c.startswith("param:"))
            raise ReportError(f"--where {key}={value}: no run logged {key}; its runs log: {', '.join(known)}")
        keep = runs[col].map(lambda v, value=value: same_value(v, value))
        if not keep.any():
            seen = sorted({str(v) for v in runs[col].dropna()})
            raise ReportError(f"--where {key}={value}: no run has that value; values logged: {', '.join(seen)}")
        runs = runs[keep]
    return runs
