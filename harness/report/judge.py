"""A claim's contrast judged by its rule: a pair's verdict (better, not worse, equivalent at a margin), a share of
a gap, nearness to a published figure, a selected setting inside a range; ``RULES`` writes down once how a
contrast's verdict decides its claim. Read from a study's tuned.csv (``claimmap.load_study``)."""

from __future__ import annotations

import math

import pandas as pd

from harness.report import ReportError, curve, stats
from harness.report.contrast import margin_of
from harness.report.fresh import upto, versus
from harness.report.wording import fmt, interval


def matches(problem: str, where: str) -> bool:
    """Each of `where`'s comma-separated parts is one of the problem's parts ("outlier_fraction=0.0"
    matches "task.outlier_fraction=0.0", not "...=0.05"; "jitter=4, max_length=6" needs both)."""
    parts = problem.split(", ")
    return all(any(part == w or part.endswith("." + w) for part in parts) for w in where.split(", "))


def selected_value(setting: str, knob: str) -> float:
    for part in str(setting).split(", "):
        key, _, value = part.partition("=")
        if key == knob:
            return float(value)
    raise ReportError(f"claims map: the selected setting {setting!r} has no {knob}")


# How a primary contrast's verdict decides its claim: written down here, once. A pair's verdict is a's
# against b (harness/report/contrast.py: better, worse, equivalent within the margin, non-inferior, undecided).
RULES: dict[str, dict[str, str]] = {
    "better": {  # a is better than b (the difference test rejects; not shown to lie within the margin)
        "better": "supported",
        "worse": "contradicted",
        "equivalent": "contradicted",  # within the margin: no difference that matters
        "non-inferior": "inconclusive",
        "undecided": "inconclusive",
    },
    "not_worse": {  # a is not worse than b by the margin or more
        "better": "supported",
        "equivalent": "supported",
        "non-inferior": "supported",
        "worse": "contradicted",
        "undecided": "inconclusive",
    },
    "equivalent": {  # a and b differ by less than the margin
        "equivalent": "supported",
        "better": "contradicted",
        "worse": "contradicted",
        "non-inferior": "inconclusive",
        "undecided": "inconclusive",
    },
    # gap_share: a closes at least `fraction` of the gap from b to c, judged per seed as a against the
    # point that fraction of the way from b to c: a better than it -> supported, worse -> contradicted.
    "gap_share": {"better": "supported", "worse": "contradicted"},
    # drop: a's best epoch against its last (the primary metric's `_best` curve metric against the metric itself,
    # paired by seed): the best better by more than the margin -> supported (a overfits or drifts away from its
    # best), within the margin -> contradicted.
    "drop": {"better": "supported", "equivalent": "contradicted", "worse": "contradicted"},
    # near (a's test score within value +- tolerance: its one-sided bounds inside -> supported, its two-sided
    # interval wholly outside -> contradicted) and setting_in (a's selected value of a knob inside a range;
    # the selection is one number, with no uncertainty) are judged in check(); good_range (every value of the knob's
    # grid inside the range within the margin of the best value, on the whole response curve with intervals) in
    # harness/report/curve.py.
}
PAIR_RULES = ("better", "not_worse", "equivalent")

# How the verdicts of a claim's workloads decide the claim: written down here, once.
OVERALL_RULE = (
    "a claim is supported only where it is supported on every workload tested, contradicted where it is contradicted "
    "on a real-data workload or on every workload tested, and inconclusive otherwise (the workloads column says why)."
)


def overall(verdicts: list[tuple[str, bool]]) -> tuple[str, str]:
    """The claim's verdict from its workloads' (verdict, on real data) pairs, by OVERALL_RULE, and why when the
    workloads do not all agree ("" when there is one workload or they agree)."""
    said = [v for v, _ in verdicts]
    if len(set(said)) <= 1:
        return (said[0] if said else "inconclusive"), ""
    if any(v == "contradicted" and real for v, real in verdicts):
        return "contradicted", "contradicted on real data"
    if "supported" in said and "contradicted" in said:
        return "inconclusive", "the workloads disagree"
    return "inconclusive", "not decided on every workload"


OTHER_RULES = ("gap_share", "near", "setting_in", "good_range", "drop")


class Unconfirmed(ReportError):
    """A contrast on another metric than the primary one, in a study not confirmed on fresh seeds (its tuned.csv
    has no other metrics): the claims table shows that workload as waiting for its rerun."""


def rows_of(tuned: pd.DataFrame, c: dict, method: str) -> pd.Series:
    """The study's row of `method` on the problem `where` names; with a `metric` (and its `mode`), that row read
    on the metric instead of the study's primary one (the selected setting stays the one validation chose)."""
    rows = tuned[tuned["problem"].map(lambda pr: matches(pr, c["where"])) & (tuned["method"] == method)]
    if len(rows) != 1:
        raise ReportError(f"claims map: no single problem matching {c['where']!r} with method {method!r}")
    row = rows.iloc[0]
    metric = c.get("metric")
    if not metric or metric == row["metric"]:
        return row
    if c.get("mode") not in ("max", "min"):
        raise ReportError(f"claims map: a contrast on {metric} must say whether higher is better (mode: max or min)")
    if "others" not in row.index:
        raise Unconfirmed(f"{metric} needs the study rerun on fresh seeds (study.stage=confirm)")
    scores = (row.get("others") or {}).get(metric)
    if scores is None:
        raise ReportError(
            f"claims map: {metric} is not among the other test metrics of {method} in tuned.csv "
            "(they are written for a study confirmed on fresh seeds)"
        )
    fresh = {int(r): v for r, v in scores["fresh"].items()}
    by_seed = upto(fresh, max(fresh)) if fresh else scores["selection"]
    return pd.Series(
        {**row.to_dict(), "metric": metric, "mode": c["mode"], "test_by_seed": by_seed, "fresh_by_round": fresh}
        | {"test_mean": sum(by_seed.values()) / len(by_seed) if by_seed else math.nan, "n": len(by_seed)}
    )


def rule_of(c: dict) -> str:
    rule = c.get("rule") or c.get("expect")
    if rule not in PAIR_RULES + OTHER_RULES:
        raise ReportError(f"claims map: unknown rule {rule!r} (rules: {', '.join(PAIR_RULES + OTHER_RULES)})")
    return rule


def check(tuned: pd.DataFrame, c: dict, family: int = 1, margin: object = None) -> dict:
    """One contrast of a claim, judged by its rule at the family's level (Bonferroni: alpha / family):
    a against b (pairs), a against the point ``fraction`` of the way from b to c (gap_share), a's score
    against a published value (near), a's selected setting against a range (setting_in)."""
    rule = rule_of(c)
    a = rows_of(tuned, c, c["a"])
    out = {**c, "rule": rule, "problem": a["problem"], "metric": a["metric"], "family": family}
    if rule == "setting_in":
        v = selected_value(a["setting"], c["knob"])
        low, high = c["range"]
        return {**out, "value": v, "verdict": "supported" if low <= v <= high else "contradicted"}
    if rule == "good_range":
        if "folder" not in tuned.attrs:
            raise ReportError("claims map: good_range reads the study's runs.csv, and this tuned table has no folder")
        if not (tuned.attrs["folder"] / "runs.csv").exists():  # a report made before per-run data was written
            raise Unconfirmed("a response curve needs the study's per-run data (runs.csv), which its rerun writes")
        r = curve.response(curve.load_runs(tuned.attrs["folder"]), c, a["metric"], a["mode"], tuned.attrs.get("tune", []), family)
        return {**out, "curve": r, "verdict": r["verdict"]}
    if rule == "near":
        level = stats.ALPHA / family
        scores = list(a["test_by_seed"].values())
        lo1, hi1 = stats.mean_ci(scores, 1 - 2 * level)  # the one-sided bounds (TOST against value +- tolerance)
        lo2, hi2 = stats.mean_ci(scores, 1 - level)
        low, high = c["value"] - c["tolerance"], c["value"] + c["tolerance"]
        verdict = "supported" if low < lo1 and hi1 < high else "contradicted" if hi2 < low or lo2 > high else "inconclusive"
        return {**out, "mean": a["test_mean"], "low": lo2, "high": hi2, "n": a["n"], "verdict": verdict}
    if rule == "gap_share":
        b, to = rows_of(tuned, c, c["b"]), rows_of(tuned, c, c["c"])
        f = float(c["fraction"])
        seeds = set(b["test_by_seed"]) & set(to["test_by_seed"])
        point = {s: (1 - f) * b["test_by_seed"][s] + f * to["test_by_seed"][s] for s in seeds}
        fb, fc = b.get("fresh_by_round") or {}, to.get("fresh_by_round") or {}
        rounds_point = {r: {s: (1 - f) * fb[r][s] + f * fc[r][s] for s in set(fb[r]) & set(fc.get(r, {}))} for r in fb if r in fc}
        d, look = versus(
            a["test_by_seed"],
            a.get("fresh_by_round") or {},
            point,
            rounds_point,
            a["mode"],
            math.nan,
            family,
            tuned.attrs.get("rounds", 1),
        )
        gap = b["test_mean"] - to["test_mean"]
        closed = (b["test_mean"] - a["test_mean"]) / gap if gap else math.nan
        return {
            **out,
            "contrast": d,
            "look": look,
            "closed": closed,
            "verdict": RULES["gap_share"].get(d.verdict, "inconclusive"),
        }
    if rule == "drop":  # the same method read at its best epoch (b: its last)
        b, a = a, rows_of(tuned, {**c, "metric": f"{a['metric']}_best", "mode": a["mode"]}, c["a"])
        out["b"] = f"{c['a']} at its last epoch"
    else:
        b = rows_of(tuned, c, c["b"])
    m = margin_of(c.get("margin", margin), b["test_mean"], a["metric"])
    d, look = versus(
        a["test_by_seed"],
        a.get("fresh_by_round") or {},
        b["test_by_seed"],
        b.get("fresh_by_round") or {},
        a["mode"],
        m,
        family,
        tuned.attrs.get("rounds", 1),
    )
    return {**out, "contrast": d, "look": look, "margin": m, "verdict": RULES[rule].get(d.verdict, "inconclusive")}


def effect(c: dict) -> str:
    if c["rule"] == "good_range":
        return curve.text(c)
    if c["rule"] == "setting_in":
        return (
            f"{c['problem']}: {c['a']} selects {c['knob']}={c['value']:g} on validation "
            f"({'inside' if c['verdict'] == 'supported' else 'outside'} [{c['range'][0]:g}, {c['range'][1]:g}])"
        )
    level = f"{100 * (1 - stats.ALPHA / c['family']):.4g}%"
    if c["rule"] == "near":
        return (
            f"{c['problem']}: {c['a']} reaches {c['metric']} {fmt(c['mean'])} {interval(c['low'], c['high'])} "
            f"({level}, n = {c['n']}; the claim: {c['value']:g} +- {c['tolerance']:g})"
        )
    d = c["contrast"]
    level = f"{100 * d.level:.4g}%" + (f", look {c['look']} on fresh seeds" if c.get("look") else "")
    if c["rule"] == "gap_share":
        return (
            f"{c['problem']}: {c['a']} closes {fmt(c['closed'])} of the {c['metric']} gap from {c['b']} to {c['c']}; "
            f"against the point {c['fraction']:g} of the way: gain {fmt(d.gain)} {interval(d.low, d.high)} ({level}, n = {d.n})"
        )
    margin = f"margin +-{fmt(c['margin'])}" if math.isfinite(c["margin"]) else "no margin"
    needs = (
        f"; about {math.ceil(d.seeds_needed)} seeds would give 80% power at the margin"
        if d.verdict in ("undecided", "non-inferior") and math.isfinite(d.seeds_needed)
        else ""
    )
    return (
        f"{c['problem']}: {c['a']} vs {c['b']}: {d.verdict}, gain {fmt(d.gain)} {interval(d.low, d.high)} {c['metric']} "
        f"({level}, {margin}; {d.test}, n = {d.n}{needs})"
    )
