"""Findings written from the numbers, and the report files: report.md, report.html, summary.csv."""
from __future__ import annotations

import base64
import html
import math
from pathlib import Path

import pandas as pd

from harness.report.aggregate import config_name, methods
from harness.report.load import label


def fmt(v, digits: int = 4) -> str:
    if v is None or (isinstance(v, float) and math.isnan(v)):
        return "n/a"
    return f"{v:.{digits}f}" if isinstance(v, float) else str(v)


def findings(table: pd.DataFrame, runs: pd.DataFrame, config_cols: list[str]) -> list[str]:
    """Plain sentences derived from the ranking: winner and margin, whether the margin exceeds the
    seed spread, what diverged, failed or is still running."""
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
        text += f" +- {fmt(best['std'])} over {best['n']} seeds" if best["n"] > 1 else " from a single seed (no spread to compare with)"
        if len(part) > 1:
            second = part.iloc[1]
            gap = abs(best["mean"] - second["mean"])
            text += f"; runner-up {name(second)} at {fmt(second['mean'])} ({better} is better, gap {fmt(gap)})"
            spread = max(best["std"], second["std"]) if best["n"] > 1 and second["n"] > 1 else math.nan
            if math.isnan(spread):
                text += ". With one seed the gap cannot be weighed against seed noise"
            elif gap > 2 * spread:
                text += f", more than twice the larger seed std ({fmt(spread)}): the order of the top two is clear"
            elif gap > spread:
                text += f", larger than the seed std ({fmt(spread)}) but less than twice it: suggestive, not settled"
            else:
                text += f", within the seed std ({fmt(spread)}): these seeds do not separate the top two"
            worst = part.iloc[-1]
            text += f". Worst: {name(worst)} at {fmt(worst['mean'])}"
        out.append(text + ".")
    diverged = runs[runs.outcome == "diverged"]
    if len(diverged):
        by = diverged.groupby([c for c in config_cols] or ["task"], dropna=False).size()
        items = [f"{', '.join(f'{label(c)}={k}' for c, k in zip(config_cols or ['task'], key if isinstance(key, tuple) else (key,)))} ({n})"
                 for key, n in by.items()]
        out.append(f"{len(diverged)} run(s) diverged (NaN/inf loss) and are left out of the means: " + "; ".join(items) + ".")
    finished = runs[runs.outcome == "finished"]
    lacking = sum(pd.isna(r.get(f"final:{r['primary_metric']}")) for _, r in finished.iterrows())
    if lacking:
        out.append(f"{lacking} finished run(s) logged no value of their primary metric and are left out of the means.")
    for outcome, what in (("failed", "failed"), ("killed", "were killed"), ("running", "are still RUNNING (left out; rerun the report when they end)")):
        k = int((runs.outcome == outcome).sum())
        if k:
            out.append(f"{k} run(s) {what}.")
    return out


def header(experiment: str, runs: pd.DataFrame, table: pd.DataFrame, date: str) -> dict[str, str]:
    counts = runs["outcome"].value_counts().to_dict()
    seeds = table["n"]
    compute = pd.to_numeric(runs["train_seconds"], errors="coerce").sum()
    versions = ", ".join(sorted(str(v) for v in runs["harness_version"].dropna().unique())) or "unknown"
    return {"experiment": experiment, "runs": f"{len(runs)} (" + ", ".join(f"{v} {k}" for k, v in sorted(counts.items())) + ")",
            "configurations": str(len(table)), "seeds per configuration": f"{seeds.min()}" + (f"-{seeds.max()}" if seeds.max() != seeds.min() else ""),
            "tasks": ", ".join(sorted(runs["task"].dropna().unique())), "generated": date, "harness version": versions,
            "total training time": f"{compute / 60:.1f} min ({compute:.0f} s)"}


def table_for_display(table: pd.DataFrame, config_cols: list[str]) -> pd.DataFrame:
    cols = ["rank", "winner"] + [label(c) for c in methods(config_cols)]
    show = table[["task"] + cols].copy()
    show["metric"] = table["metric"]
    show["mean +- std"] = [fmt(m) if math.isnan(s) else f"{fmt(m)} +- {fmt(s)}" for m, s in zip(table["mean"], table["std"])]
    show["95% CI"] = [f"[{fmt(lo)}, {fmt(hi)}]" if not math.isnan(lo) else "n/a" for lo, hi in zip(table["ci95_low"], table["ci95_high"])]
    show["n"] = table["n"]
    show["best epoch"] = table["best_epoch"].map(lambda v: "n/a" if v is None or (isinstance(v, float) and math.isnan(v)) else str(int(v)))
    if "time_to_target_s" in table:
        show["time to target (s)"] = [f"{fmt(t, 1)} ({r}, target {fmt(g, 3)})" if isinstance(r, str) else "n/a"
                                      for t, r, g in zip(table["time_to_target_s"], table.get("reached_target"), table.get("target"))]
    show["diverged"] = table["diverged"]
    if table["failed"].sum():
        show["failed"] = table["failed"]
    return show


def markdown(head: dict, notes: list[str], tables: dict[str, pd.DataFrame], figures: list[tuple[str, str]]) -> str:
    lines = [f"# Report: {head['experiment']}", ""]
    lines += [f"- **{k}**: {v}" for k, v in head.items() if k != "experiment"] + ["", "## Findings", ""]
    lines += [f"- {n}" for n in notes] + [""]
    for task, t in tables.items():
        lines += [f"## Ranking: {task}", "", "`*` marks the winner; mean, std and the 95% interval are over seeds of finished runs.", "",
                  t.drop(columns=["task"]).to_markdown(index=False), ""]
    if figures:
        lines += ["## Figures", ""]
        for title, path in figures:
            lines += [f"### {title}", "", f"![{title}]({Path(path).name})", ""]
    return "\n".join(lines)


def html_page(head: dict, notes: list[str], tables: dict[str, pd.DataFrame], figures: list[tuple[str, str]]) -> str:
    """One file with everything in it: figures embedded as base64 PNG."""
    import re

    def inline(text: str) -> str:
        return re.sub(r"\*\*(.+?)\*\*", r"<b>\1</b>", html.escape(text))

    parts = ["<!doctype html><html><head><meta charset='utf-8'>", f"<title>Report: {html.escape(head['experiment'])}</title>",
             "<style>body{font-family:sans-serif;max-width:1100px;margin:2em auto;padding:0 1em}table{border-collapse:collapse;"
             "font-size:13px}td,th{border:1px solid #ccc;padding:3px 6px;text-align:right}img{max-width:100%}</style></head><body>",
             f"<h1>Report: {html.escape(head['experiment'])}</h1><ul>"]
    parts += [f"<li><b>{html.escape(k)}</b>: {html.escape(v)}</li>" for k, v in head.items() if k != "experiment"]
    parts += ["</ul><h2>Findings</h2><ul>"] + [f"<li>{inline(n)}</li>" for n in notes] + ["</ul>"]
    for task, t in tables.items():
        parts += [f"<h2>Ranking: {html.escape(task)}</h2>", t.drop(columns=["task"]).to_html(index=False, border=0)]
    for title, path in figures:
        data = base64.b64encode(Path(path).read_bytes()).decode()
        parts += [f"<h3>{html.escape(title)}</h3><img alt='{html.escape(title)}' src='data:image/png;base64,{data}'>"]
    return "\n".join(parts + ["</body></html>"])
