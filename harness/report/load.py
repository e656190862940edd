"""MLflow -> pandas: one row per run, and the per-epoch histories of the metrics a report plots."""
from __future__ import annotations

import math

import pandas as pd

from harness.report import ReportError

# params that never distinguish one configuration from another
NOT_FACTORS = ("seed", "data_dir", "threads", "progress", "resume", "eval_batch_size", "device")
NOT_FACTOR_PREFIXES = ("tracking.", "task.data_dir", "task.download", "loss.targets", "study.")
GROUPS = ("task", "loss", "optimizer", "schedule")


def client_for(uri: str):
    import logging

    from mlflow.tracking import MlflowClient

    for name in ("mlflow", "alembic"):
        logging.getLogger(name).setLevel(logging.WARNING)
    return MlflowClient(tracking_uri=uri)


def load_runs(client, experiment: str) -> tuple[pd.DataFrame, str]:
    """(one row per training run, the experiment id). Sweep parent runs are left out."""
    from mlflow.exceptions import MlflowException

    try:
        exp = client.get_experiment_by_name(experiment)
        if exp is None:
            names = sorted(e.name for e in client.search_experiments())
            raise ReportError(f"no experiment {experiment!r} in {client.tracking_uri}; experiments there: "
                              f"{', '.join(names) if names else 'none'}")
        runs, token = [], None
        while True:
            page = client.search_runs([exp.experiment_id], max_results=1000, page_token=token)
            runs += list(page)
            token = page.token
            if not token:
                break
    except MlflowException as e:
        raise ReportError(f"cannot read the MLflow store {client.tracking_uri}: {str(e).splitlines()[0]}") from None
    rows = []
    for r in runs:
        tags = r.data.tags
        if tags.get("harness.role") == "sweep":
            continue
        row = {"run_id": r.info.run_id, "run_name": r.info.run_name, "status": r.info.status,
               "outcome": tags.get("outcome", r.info.status.lower()), "start": r.info.start_time, "end": r.info.end_time,
               "primary_metric": tags.get("primary_metric"), "primary_mode": tags.get("primary_mode", "max"),
               "harness_version": tags.get("harness_version"), "train_seconds": _float(tags.get("train_seconds")),
               "bundle": tags.get("bundle"), "device": tags.get("device"), "device_name": tags.get("device_name"),
               "seed": tags.get("seed", r.data.params.get("seed"))}
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


def declaration(client, experiment_id: str):
    """The newest study declaration among the experiment's sweep parent runs (None: a plain sweep)."""
    from harness.report.protocol import Declaration

    parents = client.search_runs([experiment_id], "tags.`harness.role` = 'sweep'", order_by=["attributes.start_time DESC"],
                                 max_results=200)
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
    that differs between runs and is not already implied by a group choice (focal's gamma by loss=focal)."""
    out = [g for g in GROUPS if runs[g].nunique(dropna=False) > 1]
    params = [c for c in runs.columns if c.startswith("param:")]
    for col in sorted(params):
        key = col[len("param:"):]
        if key in NOT_FACTORS or key.startswith(NOT_FACTOR_PREFIXES) or key.split(".")[0] in ("hydra",):
            continue
        if key in GROUPS or key.endswith(("_target_", "_partial_")):
            continue  # the group choice itself (a param since the params were trimmed) and class paths (before): the group columns say it
        if runs[col].nunique(dropna=False) <= 1:
            continue
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


def label(factor: str) -> str:
    return factor[len("param:"):] if factor.startswith("param:") else factor


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


def same_value(a, b: str) -> bool:
    """A logged value against one given on the command line: as text, or as numbers (0 matches 0.0)."""
    if str(a) == b:
        return True
    try:
        return float(a) == float(b)
    except (TypeError, ValueError):
        return False


def slice_runs(runs: pd.DataFrame, where: dict[str, str]) -> pd.DataFrame:
    """The runs whose param (or group choice, e.g. optimizer=adam) KEY has the value given, for every KEY."""
    for key, value in where.items():
        col = key if key in GROUPS else f"param:{key}"
        if col not in runs:
            known = sorted(c.split(":", 1)[1] for c in runs.columns if c.startswith("param:"))
            raise ReportError(f"--where {key}={value}: no run logged {key}; its runs log: {', '.join(known)}")
        keep = runs[col].map(lambda v: same_value(v, value))
        if not keep.any():
            seen = sorted({str(v) for v in runs[col].dropna()})
            raise ReportError(f"--where {key}={value}: no run has that value; values logged: {', '.join(seen)}")
        runs = runs[keep]
    return runs
