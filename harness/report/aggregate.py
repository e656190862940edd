"""Runs -> one row per configuration: mean, std and 95% bootstrap interval over seeds, best epoch,
time to a target (AlgoPerf-style), outcome counts; sorted best first."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd

from harness.config import schema
from harness.report.declaration import label
from harness.report.stats import mean_ci

# time-to-target defaults per task (the primary metric's value to reach); --target overrides
DEFAULT_TARGETS = {"mnist": 0.97, "imbalanced": 0.75, "regression": 0.25}


def reached(value: float, target: float, mode: str) -> bool:
    return value >= target if mode == "max" else value <= target


def time_to_target(hist: pd.DataFrame, metric: str, target: float, mode: str) -> dict[str, float]:
    """run_id -> seconds of training (summed epoch_seconds) until `metric` first reaches `target`."""
    out = {}
    for run_id, h in hist.groupby("run_id"):
        values = h[h.key == metric].set_index("step")["value"].sort_index()
        seconds = h[h.key == "epoch_seconds"].set_index("step")["value"].sort_index().cumsum()
        hit = [s for s, v in values.items() if reached(v, target, mode)]
        if hit and hit[0] in seconds.index:
            out[run_id] = float(seconds[hit[0]])
    return out


# task.* params that are choices of the method (the model and the input preprocessing), not of the problem
TASK_METHOD_KEYS = schema.MODEL_KEYS


def conditions(config_cols: list[str]) -> list[str]:
    """Factors that change the problem (task.* data params: outlier fraction, imbalance ratio, ...)."""
    return [c for c in config_cols if c.startswith("param:task.") and c.split(".", 1)[1] not in TASK_METHOD_KEYS]


def methods(config_cols: list[str]) -> list[str]:
    """Factors that are choices being compared (loss, optimizer, lr, batch size, ...)."""
    return [c for c in config_cols if c != "task" and c not in conditions(config_cols)]


def rank(runs: pd.DataFrame, hist: pd.DataFrame, config_cols: list[str], targets: dict[str, float]) -> pd.DataFrame:
    """One row per (task, configuration); columns: the factors, then the statistics. Configurations are
    ranked within each *problem*: a task, or a task at one level of its varied conditions."""
    keys = ["task"] + [c for c in config_cols if c != "task"]
    rows = []
    for key, group in runs.groupby(keys, dropna=False, sort=False):
        key = key if isinstance(key, tuple) else (key,)
        task = group["task"].iloc[0]
        metric, mode = group["primary_metric"].iloc[0], group["primary_mode"].iloc[0]
        finished = group[group.outcome == "finished"]
        values = (
            pd.to_numeric(finished.get(f"final:{metric}"), errors="coerce").dropna() if len(finished) else pd.Series(dtype=float)
        )
        n = len(values)
        mean = values.mean() if n else math.nan
        std = values.std(ddof=1) if n > 1 else math.nan
        low, high = mean_ci(values.to_numpy())
        row = dict(zip(keys, key))
        row["problem"] = ", ".join([str(task)] + [f"{label(c)}={row[c]}" for c in conditions(config_cols)])
        row.update(
            {
                "metric": metric,
                "mode": mode,
                "mean": mean,
                "std": std,
                "ci95_low": low,
                "ci95_high": high,
                "n": n,
                "runs": len(group),
                "diverged": int((group.outcome == "diverged").sum()),
                "failed": int(group.outcome.isin(["failed", "killed"]).sum()),
                "running": int((group.outcome == "running").sum()),
            }
        )
        # best epoch: where the seed-mean of the validation version of the primary metric is best
        h = hist[hist.run_id.isin(finished.run_id)]
        val_metric = "val/" + metric.split("/", 1)[-1]
        curve = h[h.key == (val_metric if (h.key == val_metric).any() else metric)].groupby("step")["value"].mean()
        row["best_epoch"] = int(curve.idxmax() if mode == "max" else curve.idxmin()) if len(curve) else None
        target = targets.get(task)
        if target is not None and n:
            times = time_to_target(h, metric, target, mode)
            row["target"] = target
            row["time_to_target_s"] = float(np.median(list(times.values()))) if times else math.nan
            row["reached_target"] = f"{len(times)}/{len(finished)}"
        rows.append(row)
    table = pd.DataFrame(rows)
    ordered = []
    for _, part in table.groupby("problem", sort=True):
        part = part.sort_values("mean", ascending=part["mode"].iloc[0] == "min", na_position="last").reset_index(drop=True)
        part.insert(0, "rank", range(1, len(part) + 1))
        part.insert(1, "winner", ["*" if i == 0 and not math.isnan(part["mean"].iloc[0]) else "" for i in range(len(part))])
        ordered.append(part)
    return pd.concat(ordered, ignore_index=True).rename(columns={c: label(c) for c in config_cols})


def comparable(frame: pd.DataFrame, keys: list[str]) -> pd.DataFrame:
    """``frame[keys]`` with a missing value read as "-" (a knob a configuration lacks, such as Adam's epsilon
    beside SGD), so that the same setting compares and groups as equal."""
    return frame[keys].astype(object).where(frame[keys].notna(), "-")


def superseded(runs: pd.DataFrame, keys: list[str]) -> pd.Series:
    """The failed or killed runs that have a finished run with the same ``keys`` (configuration and seed): a
    resumed sweep reran the job whose process died (a session's end, kill -9), so nothing of the study is missing."""
    ident = comparable(runs, keys).astype(str).agg("|".join, axis=1)
    done = set(ident[runs.outcome == "finished"])
    return runs.outcome.isin(["failed", "killed"]) & ident.isin(done)


def config_name(row: pd.Series, config_cols: list[str]) -> str:
    """The method part of a configuration (its problem is in row['problem'])."""
    parts = [f"{label(c)}={row[label(c)]}" for c in methods(config_cols)]
    return ", ".join(parts) if parts else "(one configuration)"


def performance_profile(table: pd.DataFrame, config_cols: list[str], taus: np.ndarray) -> pd.DataFrame:
    """AlgoPerf/Dolan-More profile: for each configuration, the fraction of problems (tasks, or a task at
    each level of its conditions) on which its score is within a factor tau of the best configuration's
    (ratios oriented so that 1 is best)."""
    table = table.assign(config=table.apply(lambda r: config_name(r, config_cols), axis=1))
    tasks = table["problem"].unique()
    ratios: dict[str, dict[str, float]] = {}
    for task in tasks:
        part = table[table.problem == task].dropna(subset=["mean"])
        if part.empty:
            continue
        best = part["mean"].max() if part["mode"].iloc[0] == "max" else part["mean"].min()
        for _, r in part.iterrows():
            ratio = best / r["mean"] if r["mode"] == "max" else r["mean"] / best
            ratios.setdefault(r["config"], {})[task] = ratio if ratio > 0 else math.inf
    profile = {c: [sum(v.get(t, math.inf) <= tau for t in tasks) / len(tasks) for tau in taus] for c, v in ratios.items()}
    return pd.DataFrame(profile, index=taus)
