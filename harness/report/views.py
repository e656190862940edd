"""Figures over a study's knobs: the metric by two knobs (heatmap), by LR, by batch size, the schedules' LRs,
what share of the outcome each factor explains, and every run across the tuned knobs (parallel coordinates)."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd

from harness.report.declaration import label
from harness.report.figures import plt, pretty, save, style


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
        else:  # names, or a knob some runs lack (a tuned knob only one method has): "-" there, as in the tables
            named = data[a].map(lambda x: "-" if pd.isna(x) else str(x))
            levels = sorted(named.unique())
            v = named.map({x: i for i, x in enumerate(levels)}).astype(float)
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


def heatmap_axes(config_cols: list[str]) -> tuple[str, str] | None:
    """loss x optimizer when both vary, else the first two varying factors."""
    cols = [c for c in config_cols if c != "task"]
    if "loss" in cols and "optimizer" in cols:
        return "loss", "optimizer"
    return (cols[0], cols[1]) if len(cols) >= 2 else None


def heatmap(table: pd.DataFrame, rows: str, cols: str, task: str, path, others: tuple[str, ...] = ()) -> str:
    """Final primary metric for each (rows, cols) pair: the best configuration's seed mean when other
    factors (``others``, named under the title) vary."""
    part = table[table.task == task]
    mode, metric = part["mode"].iloc[0], part["metric"].iloc[0]
    grid = part.pivot_table(index=label(rows), columns=label(cols), values="mean", aggfunc="max" if mode == "max" else "min")
    fig, ax = plt().subplots(figsize=(1.3 * grid.shape[1] + 3, 0.6 * grid.shape[0] + 2))
    values = grid.values.astype(float)
    finite = values[np.isfinite(values)]
    vmin, vmax = color_range(finite, mode)
    im = ax.imshow(values, cmap="viridis" if mode == "max" else "viridis_r", aspect="auto", vmin=vmin, vmax=vmax)
    ax.set_xticks(range(grid.shape[1]), [str(c) for c in grid.columns], rotation=30, ha="right")
    ax.set_yticks(range(grid.shape[0]), [str(i) for i in grid.index])
    best = np.unravel_index((np.nanargmax if mode == "max" else np.nanargmin)(values), values.shape) if finite.size else None
    for i in range(grid.shape[0]):
        for j in range(grid.shape[1]):
            v = values[i, j]
            missing = math.isnan(v)
            r, g, b, _ = im.cmap(im.norm(v)) if not missing else (1, 1, 1, 1)
            dark = 0.299 * r + 0.587 * g + 0.114 * b < 0.5  # white text on dark cells, black on light
            top = best is not None and (i, j) == best
            ax.text(
                j,
                i,
                "no finished run" if missing else f"{v:.3f}" + (" (best)" if top else ""),
                ha="center",
                va="center",
                color="white" if dark else "black",
                fontsize=8,
                fontweight="bold" if top else "normal",
            )
            if top:
                ax.add_patch(plt().Rectangle((j - 0.5, i - 0.5), 1, 1, fill=False, edgecolor="red", linewidth=2.5))
    clipped = vmin is not None and vmax is not None and bool((finite < vmin).any() if mode == "max" else (finite > vmax).any())
    notes = ([f"each cell: the best over {', '.join(label(o) for o in others)}"] if others else []) + (
        ["colours span the better half; worse cells share the end colour"] if clipped else []
    )
    ax.set(xlabel=label(cols), ylabel=label(rows))
    ax.set_title(f"{task}: final {pretty(metric)} ({'higher' if mode == 'max' else 'lower'} is better)", pad=16 if notes else 6)
    if notes:  # under the title, small: as a colour bar label it ran off a short figure
        ax.annotate(
            "; ".join(notes),
            xy=(0.5, 1),
            xycoords="axes fraction",
            xytext=(0, 3),
            textcoords="offset points",
            ha="center",
            va="bottom",
            fontsize=7,
        )
    fig.colorbar(im, ax=ax, label=pretty(metric))
    return save(fig, path)


def color_range(finite: np.ndarray, mode: str) -> tuple[float | None, float | None]:
    """The heatmap's colour scale: from the median cell to the best, so that the good cells differ
    in colour (a scale over the whole grid paints them all alike when a few cells collapsed)."""
    if finite.size < 4:
        return (None, None)
    median = float(np.median(finite))
    lo, hi = (median, float(finite.max())) if mode == "max" else (float(finite.min()), median)
    return (lo, hi) if hi > lo else (None, None)


def lr_sensitivity(runs: pd.DataFrame, table: pd.DataFrame, task: str, path) -> str:
    """Final metric against the learning rate (log axis): a line per optimizer through the means of its
    runs at each learning rate, each run a dot (seeds, and any other factor that varies), diverged runs
    as crosses at the bottom edge."""
    part = runs[(runs.task == task)].copy()
    metric = part["primary_metric"].iloc[0]
    part["lr"] = pd.to_numeric(part["param:optimizer.lr"], errors="coerce")
    part["value"] = pd.to_numeric(part.get(f"final:{metric}"), errors="coerce")
    fig, ax = plt().subplots(figsize=(8, 5))
    finite = part[part.outcome == "finished"]["value"].dropna()
    floor = finite.min() if len(finite) else 0.0
    for opt, g in part.groupby("optimizer"):
        ok = g[g.outcome == "finished"]
        means = ok.groupby("lr")["value"].mean()
        (line,) = ax.plot(means.index, means.values, label=opt, **style(f"optimizer={opt}"))
        ax.scatter(ok["lr"], ok["value"], color=line.get_color(), s=12, alpha=0.5)
        bad = g[g.outcome == "diverged"]
        if len(bad):
            ax.scatter(bad["lr"], [floor] * len(bad), marker="x", color=line.get_color(), s=60)
    if (part.outcome == "diverged").any():  # in the legend only when something diverged
        ax.scatter([], [], marker="x", color="gray", label="diverged (NaN/inf)")
    ax.set_xscale("log")
    varies = [c for c in ("seed", "loss", "schedule", "param:batch_size") if c in part and part[c].nunique() > 1]
    dots = "seeds" if varies == ["seed"] else "runs (" + ", ".join(label(c) for c in varies) + ")" if varies else "runs"
    ax.set(
        title=f"{task}: LR sensitivity (final {pretty(metric)}; line: mean, dots: {dots})",
        xlabel="learning rate (log scale)",
        ylabel=pretty(metric),
    )
    ax.legend(fontsize=8)
    return save(fig, path)


def batch_size_effect(runs: pd.DataFrame, config_cols: list[str], task: str, path) -> str:
    """Final metric and training wall time against the batch size, a line per other factor level."""
    part = runs[(runs.task == task) & (runs.outcome.isin(["finished", "diverged"]))].copy()
    metric = part["primary_metric"].iloc[0]
    sizes = sorted(part["param:batch_size"].unique(), key=lambda b: (b == "full", int(b) if b != "full" else 0))
    pos = {b: i for i, b in enumerate(sizes)}
    part["x"] = part["param:batch_size"].map(pos)
    part["value"] = pd.to_numeric(part.get(f"final:{metric}"), errors="coerce")
    others = [c for c in config_cols if c not in ("task", "param:batch_size")]
    fig, axes = plt().subplots(1, 2, figsize=(12, 4.5))
    for key, g in part.groupby(others) if others else [("all", part)]:
        name = ", ".join(f"{label(c)}={k}" for c, k in zip(others, key if isinstance(key, tuple) else (key,))) or "all runs"
        ok = g[g.outcome == "finished"].groupby("x")
        axes[0].plot(ok["value"].mean().index, ok["value"].mean().values, label=name, **style(name))
        axes[1].plot(ok["train_seconds"].median().index, ok["train_seconds"].median().values, label=name, **style(name))
    for ax in axes:
        ax.set_xticks(range(len(sizes)), [str(s) for s in sizes])
    axes[0].set(title=f"{task}: final {pretty(metric)} vs batch size (same epochs)", xlabel="batch size", ylabel=pretty(metric))
    axes[1].set(title=f"{task}: training wall time vs batch size", xlabel="batch size", ylabel="training time (s)")
    axes[1].set_yscale("log")
    axes[0].legend(fontsize=8)
    return save(fig, path)


def lr_schedules(runs: pd.DataFrame, hist: pd.DataFrame, task: str, path) -> str:
    """The LR each schedule used, per optimizer step (one run per schedule)."""
    part = runs[(runs.task == task) & runs.outcome.isin(["finished", "diverged"])]
    fig, ax = plt().subplots(figsize=(9, 4.5))
    for schedule, g in part.groupby("schedule"):
        h = hist[(hist.run_id == g.sort_values("seed")["run_id"].iloc[0]) & (hist.key == "lr_step")].sort_values("step")
        ax.plot(h["step"], h["value"], label=schedule)
    ax.set(title=f"{task}: learning rate per optimizer step, by schedule", xlabel="optimizer step", ylabel="learning rate")
    ax.legend(fontsize=8)
    return save(fig, path)
