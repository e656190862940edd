"""Findings written from the numbers: the sentences at the top of a report (winners, collapses, verdicts)."""

from __future__ import annotations

import pandas as pd

from harness.report.aggregate import config_name, superseded
from harness.report.declaration import label
from harness.report.render import fmt
from harness.report.wording import join_verdicts


def setting(cols: list[str], key) -> str:
    """``knob=value, ...`` of a group's key, without the knobs its configuration lacks (NaN: a knob only some
    methods have, such as Adam's epsilon beside SGD)."""
    values = key if isinstance(key, tuple) else (key,)
    return ", ".join(f"{label(c)}={v}" for c, v in zip(cols, values) if not pd.isna(v))


def rerun(runs: pd.DataFrame, outcome: str, config_cols: list[str]) -> int:
    """How many runs of this outcome have a finished run of the same configuration and seed (a resumed sweep
    reruns a job whose process died, so nothing of the study is missing)."""
    keys = [c for c in [*config_cols, "seed"] if c in runs.columns]
    return int((superseded(runs, keys) & (runs.outcome == outcome)).sum()) if keys else 0


def findings(table: pd.DataFrame, runs: pd.DataFrame, config_cols: list[str]) -> list[str]:
    """Plain sentences derived from the ranking: winner, runner-up and worst; what diverged, failed or
    is still running. (Whether two configurations differ is the verdicts' job: a test, not a std.)"""
    name = lambda r: config_name(r, config_cols)  # noqa: E731
    out = []
    for task, part in table.groupby("problem", sort=True):
        part = part.dropna(subset=["mean"])
        if part.empty:
            out.append(f"**{task}**: no configuration finished, so there is nothing to rank.")
            continue
        best, metric, mode = part.iloc[0], part["metric"].iloc[0], part["mode"].iloc[0]
        better = "higher" if mode == "max" else "lower"
        text = f"**{task}**: best is {name(best)} with {metric} {fmt(best['mean'])}"
        text += (
            f" +- {fmt(best['std'])} (std) over {best['n']} seeds"
            if best["n"] > 1
            else " from a single seed (no spread to compare with)"
        )
        if len(part) > 1:
            second = part.iloc[1]
            text += f"; runner-up {name(second)} at {fmt(second['mean'])} ({better} is better)"
        if len(part) > 2:  # with two, the runner-up is the worst
            worst = part.iloc[-1]
            text += f". Worst: {name(worst)} at {fmt(worst['mean'])}"
        out.append(text + ".")
    diverged = runs[runs.outcome == "diverged"]
    if len(diverged):
        by = diverged.groupby([c for c in config_cols] or ["task"], dropna=False).size()
        items = [f"{setting(config_cols or ['task'], key)} ({n})" for key, n in by.items()]
        out.append(f"{len(diverged)} run(s) diverged (NaN/inf loss) and are left out of the means: " + "; ".join(items) + ".")
    finished = runs[runs.outcome == "finished"]
    lacking = sum(pd.isna(r.get(f"final:{r['primary_metric']}")) for _, r in finished.iterrows())
    if lacking:
        out.append(f"{lacking} finished run(s) logged no value of their primary metric and are left out of the means.")
    for outcome, what in (
        ("failed", "failed"),
        ("killed", "were killed"),
        ("running", "are still RUNNING (left out; rerun the report when they end)"),
    ):
        k = int((runs.outcome == outcome).sum())
        if k:
            again = rerun(runs, outcome, config_cols) if outcome in ("failed", "killed") else 0
            redone = f"; {'each' if again == k else f'{again} of them'} rerun and finished (same configuration and seed)"
            out.append(f"{k} run(s) {what}{redone if again else ''}.")
    return out


def collapses(runs: pd.DataFrame, config_cols: list[str], shown: int = 6) -> list[str]:
    """Where configurations collapsed, from the runs' final metrics: a classifier that never predicts
    the minority class (its test recall is 0 in every seed), or one whose test accuracy stays at chance."""
    done = runs[runs.outcome == "finished"]
    cols = [c for c in config_cols if c != "task"]
    out = []
    for task, part in done.groupby("task", sort=True):
        checks: list[tuple[str, str, float]] = []  # (what, metric, bound): the metric is at most bound in every seed
        if "final:test/minority_recall" in part and part["final:test/minority_recall"].notna().any():
            checks.append(
                (
                    "never predict the minority class (test recall of that class 0 in every seed)",
                    "final:test/minority_recall",
                    0.0,
                )
            )
        classes = pd.to_numeric(part.get("param:task.num_classes", pd.Series(dtype=float)), errors="coerce").dropna()
        k = int(classes.iloc[0]) if len(classes) else (10 if task == "mnist" else 0)
        if k > 1 and "final:test/accuracy" in part and part["final:test/accuracy"].notna().any():
            checks.append(
                (f"stay at chance (test accuracy within 0.02 of 1/{k} in every seed)", "final:test/accuracy", 1 / k + 0.02)
            )
        groups = list(part.groupby(cols, sort=True, dropna=False)) if cols else [((task,), part)]
        for what, metric, bound in checks:
            hits = [setting(cols, key) or task for key, g in groups if (pd.to_numeric(g[metric], errors="coerce") <= bound).all()]
            if hits:
                more = f" and {len(hits) - shown} more" if len(hits) > shown else ""
                out.append(f"**{task}**: {len(hits)} of {len(groups)} configurations {what}: {'; '.join(hits[:shown])}{more}.")
    return out


def tuned_findings(selected: pd.DataFrame) -> list[str]:
    out = []
    for problem, part in selected.groupby("problem", sort=True):
        top = part.iloc[0]
        if not top["n"]:
            out.append(f"**{problem}**: no method finished.")
            continue
        text = (
            f"**{problem}**: the reference (best on validation) is {top['method']} ({top['setting']}, selected on validation) with {top['metric']} "
            f"{fmt(top['test_mean'])} [{fmt(top['ci95_low'])}, {fmt(top['ci95_high'])}] over {top['n']} seeds"
        )
        rest = [r["verdict"] for _, r in part.iloc[1:].iterrows()]
        out.append(text + (". Against it: " + join_verdicts(rest) if rest else "") + ".")
        edges = [f"{r['method']} ({r['at_edge']})" for _, r in part.iterrows() if r.get("at_edge")]
        if edges:
            out.append(
                f"**{problem}**: the selected value lies at the edge of the grid for {', '.join(edges)}: "
                "the best may lie outside it; widen the grid."
            )
    return out
