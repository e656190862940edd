"""The report's figures. Each takes pandas tables and a path, and writes one PNG with a title,
labelled axes (with units) and a legend. matplotlib is imported here only, with the Agg backend."""

from __future__ import annotations

import pandas as pd

from harness.report.declaration import label

MAX_CURVES = 8  # learning curves show the best configurations only, or the plot is unreadable
MARKERS = "osv^DP*h<>"  # no cross: an x marks a diverged run
_styles: dict[str, dict] = {}


def reset_styles() -> None:
    """A new report: methods get their colours and markers afresh (in the order its figures meet them)."""
    _styles.clear()


def style(name: str) -> dict:
    """The colour and marker of a method, the same in every figure of a report."""
    if name not in _styles:
        i = len(_styles)
        colors = plt().get_cmap("tab10").colors
        _styles[name] = {
            "color": colors[i % len(colors)],
            "marker": MARKERS[i % len(MARKERS)],
            "linestyle": ("-", "--", ":")[(i // len(colors)) % 3],
        }
    return _styles[name]


def plt():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as pyplot

    return pyplot


def save(fig, path) -> str:
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt().close(fig)
    return str(path)


def pretty(metric: str) -> str:
    return metric.replace("/", " ").replace("_", " ")


def learning_curves(
    runs: pd.DataFrame, hist: pd.DataFrame, table: pd.DataFrame, config_cols: list[str], problem: str, path
) -> str:
    """The flat ranking's best configurations of a problem: train loss and the primary metric per epoch."""
    from harness.report.aggregate import config_name

    part = table[table.problem == problem].head(MAX_CURVES)
    metric, task = part["metric"].iloc[0], part["task"].iloc[0]
    raw_cols = [c for c in config_cols if c != "task"]
    groups = {}
    for _, row in part.iterrows():
        mask = pd.Series(True, index=runs.index)
        for raw in raw_cols:
            mask &= runs[raw].astype(str) == str(row[label(raw)])
        groups[config_name(row, config_cols)] = runs[mask & (runs.task == task) & runs.outcome.isin(["finished", "diverged"])][
            "run_id"
        ]
    return curves(
        hist,
        groups,
        metric,
        problem,
        f"best {len(part)} of {len(table[table.problem == problem])} configurations",
        path,
        dict(zip(runs["run_id"], runs["loss"])),
    )


def training_key(hist: pd.DataFrame, groups: dict, metric: str, loss_of: dict | None) -> str:
    """What the left panel plots: the training loss, unless the groups train different loss functions
    (MSE and MAE values are not one scale; ``loss_of``: run id -> loss name), then the task's metric
    on the training data where the runs logged it."""
    shared = "train/" + metric.split("/", 1)[-1]
    ids = [i for g in groups.values() for i in g]
    if loss_of and len({loss_of.get(i) for i in ids}) > 1 and (hist.key == shared).any():
        return shared
    return "train/loss"


def curves(
    hist: pd.DataFrame, groups: dict, metric: str, problem: str, legend_title: str, path, loss_of: dict | None = None
) -> str:
    """The training loss (or, when the groups train different losses, the metric on the training data)
    and ``metric`` per epoch for each named group of runs: seed mean with a +-1 std band (DeepOBS-style)."""
    fig, axes = plt().subplots(1, 2, figsize=(12, 4.5))
    left = training_key(hist, groups, metric, loss_of)
    for name, ids in groups.items():
        for ax, key in zip(axes, [left, metric]):
            wide = hist[hist.run_id.isin(list(ids)) & (hist.key == key)].pivot_table(
                index="step", columns="run_id", values="value"
            )
            if wide.empty:
                continue
            mean, std = wide.mean(axis=1), wide.std(axis=1).fillna(0)
            (line,) = ax.plot(
                mean.index, mean.values, ms=3, label=name, **style(name.split(" (", 1)[0])
            )  # "method (setting)": by method
            ax.fill_between(mean.index, mean - std, mean + std, color=line.get_color(), alpha=0.2)
    from matplotlib.ticker import MaxNLocator

    for ax in axes:
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    if left == "train/loss":
        axes[0].set(
            title=f"{problem}: training loss (mean +- std over seeds)", xlabel="epoch", ylabel="train loss (running mean)"
        )
        if (hist[hist.key == "train/loss"]["value"] > 0).all():
            axes[0].set_yscale("log")
    else:  # different loss functions: their values are not one scale
        axes[0].set(
            title=f"{problem}: {pretty(left)}\n(the methods train different losses: their values are not one scale)",
            xlabel="epoch",
            ylabel=f"{pretty(left)} (running mean)",
        )
    axes[1].set(title=f"{pretty(metric)} (mean +- std over seeds)", xlabel="epoch", ylabel=pretty(metric))
    axes[1].legend(fontsize=7, title=legend_title, title_fontsize=7)
    return save(fig, path)


def forest(rows: pd.DataFrame, metric: str, problem: str, path, note: str = "") -> str:
    """Each method's score with its 95% interval, the reference (best on validation) on top and marked,
    the methods not shown better or worse than it shaded (rows: name, mean, low, high, winner, distinct)."""
    rows = rows.reset_index(drop=True)
    fig, ax = plt().subplots(figsize=(8, 0.9 + 0.38 * len(rows)))
    ys = list(range(len(rows)))[::-1]
    for y, (_, r) in zip(ys, rows.iterrows()):
        tie = not r["winner"] and not r["distinct"]
        if tie:
            ax.axhspan(y - 0.45, y + 0.45, color="#f2c14e", alpha=0.25, lw=0)
        color = "#c0392b" if r["winner"] else ("#555555" if r["distinct"] else "#b7791f")
        if pd.notna(r["low"]):
            ax.plot([r["low"], r["high"]], [y, y], color=color, lw=2)
        ax.plot([r["mean"]], [y], marker="D" if r["winner"] else "o", color=color, ms=7 if r["winner"] else 5)
    ax.set_yticks(ys, [("* " if r["winner"] else "") + str(r["name"]) for _, r in rows.iterrows()], fontsize=8)
    ax.set(title=f"{problem}: {pretty(metric)}, mean and 95% t interval over seeds")
    ax.set_xlabel(pretty(metric) + (f"\n{note}" if note else ""), fontsize=8)
    ax.title.set_fontsize(9)
    return save(fig, path)


def expected_best(lines: dict, metric: str, problem: str, path) -> str:
    """Expected best validation score after k tuning trials, one line per method (Dodge et al., 2019)."""
    fig, ax = plt().subplots(figsize=(8, 4.5))
    for name, values in lines.items():
        ax.plot(range(1, len(values) + 1), values, ms=3, label=name, **style(name))
    from matplotlib.ticker import MaxNLocator

    ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    ax.set(
        title=f"{problem}: expected best {pretty(metric)} after k tuning trials",
        xlabel="k (settings tried, drawn from the grid)",
        ylabel=f"expected best {pretty(metric)}",
    )
    ax.legend(fontsize=7)
    return save(fig, path)


def critical_difference(result, path) -> str:
    """autorank's critical-difference diagram (Friedman test, Nemenyi post-hoc)."""
    from autorank import plot_stats

    pyplot = plt()
    ax = plot_stats(result, allow_insignificant=True)
    fig = ax.get_figure() if hasattr(ax, "get_figure") else pyplot.gcf()
    return save(fig, path)


def performance_profiles(profile: pd.DataFrame, path) -> str:
    """Fraction of tasks on which a configuration is within a factor tau of the best (AlgoPerf-style)."""
    fig, ax = plt().subplots(figsize=(8, 5))
    for config in profile.columns:
        ax.step(profile.index, profile[config].values, where="post", label=config)
    ax.set(
        title="Performance profiles across tasks",
        xlabel="tau (score ratio to the best configuration on a task)",
        ylabel="fraction of tasks within tau of the best",
        ylim=(-0.02, 1.02),
    )
    ax.legend(fontsize=7)
    return save(fig, path)
