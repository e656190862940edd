"""A tuned knob's response curve, read from a study's committed per-run data (``reports/STUDY/runs.csv``),
and the ``good_range`` rule that judges a claim about a range of good values (C13: Adam's good learning rates
lie around 1e-4 to 1e-3) on the whole curve with intervals, not on the one value validation picked.

At each value of the knob, the method's other tuned knobs are chosen on validation (mean over the selection
seeds), and its test metric is read by seed. The best value is the one whose chosen setting validation ranks
first; every other value is compared with it, paired by seed, with a Student's t interval at the claim's
family level divided by the number of values in the range (Bonferroni). A value is *good* where its interval
lies above minus the margin (not worse than the best by the margin), *poor* where it lies below it, and
undecided otherwise. The rule: supported where every value of the grid inside the range is good, contradicted
where one is poor, inconclusive otherwise. The curve reads the selection's seeds (the confirmation reruns only
the selected setting), so the best value's own score carries the selection's optimism, which makes the others
look worse than they are: a *poor* verdict is the conservative side of it."""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from harness.config.values import same_value
from harness.report import ReportError, stats
from harness.report.wording import fmt, interval


def load_runs(folder: Path) -> pd.DataFrame:
    """The study's per-run data as text (``judge.check`` has made sure the file is there)."""
    return pd.read_csv(Path(folder) / "runs.csv", dtype=str)


def column(runs: pd.DataFrame, key: str) -> str:
    """The per-run data's column of a knob ("optimizer.lr" -> "param:optimizer.lr"; "outlier_fraction" matches
    "param:task.outlier_fraction")."""
    for col in runs.columns:
        if col.startswith("param:") and (col == f"param:{key}" or col.endswith(f".{key}")):
            return col
    raise ReportError(f"claims map: the study's runs.csv has no knob {key!r}")


def rows_for(runs: pd.DataFrame, method: str, where: str) -> pd.DataFrame:
    """The selection's finished runs of `method` ("optimizer=adam") on the problem `where` names (its
    comma-separated parts: "key=value" or a task name)."""
    keep = runs.get("outcome", pd.Series("finished", index=runs.index)).eq("finished")
    if "stage" in runs:
        keep &= runs["stage"].fillna("select").eq("select")
    for part in [method, *str(where).split(", ")]:
        key, eq, value = part.partition("=")
        if eq:
            keep &= runs[column(runs, key)].map(lambda v, value=value: same_value(v, value))
        else:
            keep &= runs["param:task"].eq(part)
    return runs[keep]


def response(runs: pd.DataFrame, c: dict, metric: str, mode: str, tune: list[str], family: int) -> dict:
    """The curve of `c['knob']` for method `c['a']` on `c['where']`, each value against the best, and the
    ``good_range`` verdict for `c['range']` at `c['margin']` (in the metric's units)."""
    sub = rows_for(runs, c["a"], c["where"])
    knob = column(sub, c["knob"])
    test, val = f"final:{metric}", "final:val/" + metric.split("/", 1)[-1]
    if sub.empty or test not in sub or val not in sub:
        raise ReportError(f"claims map: no selection runs of {c['a']} on {c['where']!r} with {test} and {val}")
    others = [column(sub, k) for k in tune if k != c["knob"]]
    sub = sub.assign(**{test: sub[test].astype(float), val: sub[val].astype(float), "_seed": sub["param:seed"]})
    sign = 1.0 if mode == "max" else -1.0
    points: list[dict[str, Any]] = []
    for value, at in sub.groupby(sub[knob].astype(float)):
        means = at.groupby(others)[val].mean() if others else pd.Series({(): at[val].mean()})
        chosen = means.idxmax() if mode == "max" else means.idxmin()
        if others:
            pick = np.ones(len(at), bool)
            for col, v in zip(others, chosen if isinstance(chosen, tuple) else (chosen,), strict=True):
                pick &= (at[col] == v).to_numpy()
            at = at[pick]
        points.append(
            {"value": float(value), "val": float(means[chosen]), "by_seed": dict(zip(at["_seed"], at[test], strict=True))}
        )
    if not points:
        raise ReportError(f"claims map: {c['a']} has no values of {c['knob']} on {c['where']!r}")
    best = max(points, key=lambda p: sign * p["val"])
    low, high = (float(x) for x in c["range"])
    inside = [p for p in points if low * (1 - 1e-9) <= p["value"] <= high * (1 + 1e-9)]
    k = max(1, sum(p is not best for p in inside))
    level = stats.ALPHA / (family * k)
    margin = float(c["margin"])
    for p in points:
        seeds = sorted(set(p["by_seed"]) & set(best["by_seed"]))
        p["mean"] = float(np.mean(list(p["by_seed"].values())))
        if p is best:
            p.update(gain=0.0, low=math.nan, high=math.nan, n=len(seeds), verdict="best")
            continue
        d = [sign * (p["by_seed"][s] - best["by_seed"][s]) for s in seeds]
        lo, hi = stats.mean_ci(d, 1 - level)
        if len(d) >= 2 and np.std(d) == 0:  # a constant difference: its interval is the point
            lo = hi = float(d[0])
        verdict = "good" if lo > -margin else "poor" if hi < -margin else "undecided"
        p.update(gain=float(np.mean(d)) if d else math.nan, low=lo, high=hi, n=len(seeds), verdict=verdict)
    said = [p["verdict"] for p in inside]
    verdict = (
        "inconclusive"
        if not inside
        else "supported"
        if all(v in ("good", "best") for v in said)
        else "contradicted"
        if "poor" in said
        else "inconclusive"
    )
    return {"points": points, "best": best["value"], "level": 1 - level, "k": k, "margin": margin, "verdict": verdict}


def text(c: dict) -> str:
    """The curve in one line: each value's test mean, and its gain over the best value with its interval."""
    r = c["curve"]
    parts = []
    for p in r["points"]:
        if p["verdict"] == "best":
            parts.append(f"{p['value']:g}: {fmt(p['mean'])} (best on validation)")
        else:
            parts.append(f"{p['value']:g}: {fmt(p['mean'])}, {fmt(p['gain'])} {interval(p['low'], p['high'])} {p['verdict']}")
    n = max((p["n"] for p in r["points"]), default=0)
    return (
        f"{c['problem']}: {c['a']}'s {c['knob']} response on {c['metric']} (each value at its other knobs' best on "
        f"validation; against the best value, paired by seed, n = {n} selection seeds, {100 * r['level']:.4g}%, margin "
        f"+-{fmt(r['margin'])}; range [{c['range'][0]:g}, {c['range'][1]:g}]): " + "; ".join(parts)
    )
