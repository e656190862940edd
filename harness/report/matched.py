"""Each selected run's test metric at a matched training loss: for methods that fit the training set at
different speeds (batch sizes, optimizers), generalisation compared at the same fit, not at the same epoch.

Per problem, the target is the highest final training loss among the runs of the methods' selected settings
(selection and confirmation runs alike), so every one of those runs reaches it by its last epoch; each run is
then read at the first epoch whose training loss is at or below it. The value is logged nowhere: the report adds
it to its runs as ``final:<primary metric>_at_matched_loss`` before selection reads them, so the tuned table's
other metrics carry it seed by seed, and a claim may name it as its ``metric``. Only where the methods share one
loss (a study that compares losses has no common loss scale to match); the epoch is the granularity.
"""

from __future__ import annotations

import pandas as pd

from harness.report.aggregate import comparable

SUFFIX = "_at_matched_loss"


def with_matched_loss(runs: pd.DataFrame, hist: pd.DataFrame, selected: pd.DataFrame, keys: list[str]) -> pd.DataFrame:
    """``runs`` with the column ``final:<metric>_at_matched_loss`` for the runs of each selected setting (NaN
    elsewhere). ``keys``: the columns that make a setting (its problem, method and tuned knobs)."""
    if hist.empty or "train/loss" not in set(hist["key"]) or "run_ids" not in selected:
        return runs
    by_id = runs.set_index("run_id")
    filled = comparable(runs, keys)
    values: dict[str, float] = {}
    metric_of: dict[str, str] = {}
    for _, part in selected.groupby("problem", sort=False):
        members: list[pd.Index] = []
        for ids in part["run_ids"]:
            if not ids:
                continue
            first = filled.loc[runs["run_id"] == ids[0]].iloc[0]
            same = (filled == first).all(axis=1) & runs["outcome"].eq("finished")
            members.append(pd.Index(runs.loc[same, "run_id"]))
        ids_all = [i for m in members for i in m]
        if len(members) < 2 or not ids_all:
            continue
        final_loss = pd.to_numeric(by_id.loc[ids_all, "final:train/loss"], errors="coerce")
        target = float(final_loss.max())
        curves = dict(tuple(hist[hist["run_id"].isin(ids_all)].groupby("run_id")))  # one pass over the histories
        for run_id in ids_all:
            metric = str(by_id.at[run_id, "primary_metric"])
            curve = curves.get(run_id, hist.iloc[:0])
            loss = curve[curve["key"] == "train/loss"].set_index("step")["value"]
            score = curve[curve["key"] == metric].set_index("step")["value"]
            reached = loss[loss <= target]
            if len(reached) and reached.index[0] in score.index:
                values[run_id] = float(score.loc[reached.index[0]])
                metric_of[run_id] = metric
    out = runs.copy()
    for metric in sorted(set(metric_of.values())):
        col = f"final:{metric}{SUFFIX}"
        out[col] = out["run_id"].map(lambda r, metric=metric: values.get(r) if metric_of.get(r) == metric else None)
        out[col] = pd.to_numeric(out[col], errors="coerce")
    return out
