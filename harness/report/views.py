"""Figures of a study's whole grid: what share of the outcome each factor explains, and every run across
the tuned knobs (parallel coordinates)."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd

from harness.report.figures import plt, pretty, save


def importance_bars(shares: pd.DataFrame, metric: str, task: str, path) -> str:
    """One bar per factor: its share of the variance of the final test metric over the finished runs."""
    fig, ax = plt().subplots(figsize=(8, 0.8 + 0.4 * len(shares)))
    ys = list(range(len(shares)))[::-1]
    colors = ["#9aa5b1" if f.startswith("residual") else "#2b6cb0" for f in shares["factor"]]
    ax.barh(ys, shares["share"], color=colors)
    ax.set_yticks(ys, [f"{f} ({n})" if not f.startswith("residual") else f for f, n in zip(shares["factor"], shares["levels"])])
    for y, s in zip(ys, shares["share"]):
        ax.text(s, y, f" {s:.0%}", va="center", fontsize=8)
    ax.set(
        title=f"{task}: share of the variance of {pretty(metric)} over the finished runs (type-II ANOVA; levels in brackets)",
        xlabel="share of the total sum of squares",
        xlim=(0, 1.1),
    )
    ax.title.set_fontsize(9)
    return save(fig, path)


def parallel_coordinates(runs: pd.DataFrame, axes: list[str], metric: str, mode: str, task: str, path) -> str:
    """Every finished run as a line across the tuned knobs and the methods (a number axis in log scale
    where its values span more than a decade), ending at its final test metric; coloured by that metric."""
    col = f"final:{metric}"
    data = runs[runs["outcome"] == "finished"].copy()
    data["y"] = pd.to_numeric(data[col], errors="coerce")
    data = data[np.isfinite(data["y"])]
    scaled, ticks = [], []
    for a in axes:
        values = pd.to_numeric(data[a], errors="coerce")
        if values.notna().all():
            logged = values.min() > 0 and values.max() / values.min() > 10
            v = np.log10(values) if logged else values
            levels = sorted(values.unique())
            ticks.append([(float(np.log10(x)) if logged else float(x), f"{x:g}") for x in levels])
        else:
            levels = sorted(data[a].astype(str).unique())
            v = data[a].astype(str).map({x: i for i, x in enumerate(levels)}).astype(float)
            ticks.append(list(enumerate(levels)))
        low, high = float(v.min()), float(v.max())
        scaled.append((v - low) / (high - low) if high > low else v * 0 + 0.5)
        ticks[-1] = [((t - low) / (high - low) if high > low else 0.5, s) for t, s in ticks[-1]]
    y = data["y"]
    ylow, yhigh = float(y.min()), float(y.max())
    scaled.append((y - ylow) / (yhigh - ylow) if yhigh > ylow else y * 0 + 0.5)
    fig, ax = plt().subplots(figsize=(max(6, 2 + 1.6 * len(scaled)), 5))
    cmap = plt().get_cmap("viridis" if mode == "max" else "viridis_r")
    shade = scaled[-1].to_numpy()
    matrix = np.vstack([s.to_numpy() for s in scaled]).T
    for row, c in zip(matrix, shade):
        ax.plot(range(len(scaled)), row, color=cmap(c if math.isfinite(c) else 0.5), alpha=0.35, lw=1)
    for i, axis_ticks in enumerate(ticks):
        for t, s in axis_ticks:
            ax.text(i, t, f" {s}", fontsize=7, va="center")
    for i in range(len(scaled)):
        ax.axvline(i, color="#444444", lw=0.6)
    ax.text(len(scaled) - 1, 0, f" {ylow:.4g}", fontsize=7, va="center")
    ax.text(len(scaled) - 1, 1, f" {yhigh:.4g}", fontsize=7, va="center")
    ax.set_xticks(range(len(scaled)), [a.replace("param:", "") for a in axes] + [pretty(metric)], fontsize=8)
    ax.set_yticks([])
    ax.set(title=f"{task}: every finished run across its settings ({'higher' if mode == 'max' else 'lower'} is better)")
    ax.title.set_fontsize(9)
    return save(fig, path)


def study_views(runs: pd.DataFrame, config_cols: list[str], out) -> tuple[dict, list[tuple[str, str]]]:
    """For each task of a declared study: the factor-importance table and figure, and the parallel
    coordinates of its runs. Returns (sections, figures) as the report adds them."""
    import re

    from harness.report.importance import SEED_KINDS, factor_columns, importance

    sections: dict[str, tuple[str, pd.DataFrame]] = {}
    made: list[tuple[str, str]] = []
    for task, part in runs.groupby("task", sort=True):
        metrics = part["primary_metric"].dropna()
        if metrics.empty:
            continue
        metric, mode = (
            metrics.iloc[0],
            str(part["primary_mode"].dropna().iloc[0]) if part["primary_mode"].notna().any() else "max",
        )
        stem = re.sub(r"[^A-Za-z0-9.]+", "_", str(task))
        shares = importance(part, config_cols, metric)
        if len(shares) > 1:
            caption = (
                f"The share of the variance of {metric} over the finished runs of {task} that each factor explains on its "
                "own (an additive model, type-II ANOVA: statsmodels); the residual is what no factor explains alone "
                "(interactions and seed-to-seed noise). Descriptive, not a test."
            )
            shown = shares.assign(share=shares["share"].map(lambda s: f"{s:.1%}"))
            sections[f"{task}: what moves {metric}"] = (caption, shown)
            made.append(
                (f"{task}: factor importance", importance_bars(shares, metric, str(task), out / f"{stem}_importance.png"))
            )
        axes = [c for c in factor_columns(part, config_cols) if c not in SEED_KINDS]
        if axes:
            made.append(
                (
                    f"{task}: every run across its settings",
                    parallel_coordinates(part, axes, metric, mode, str(task), out / f"{stem}_parallel.png"),
                )
            )
    return sections, made
