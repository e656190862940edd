"""The report's tables and pages: the tuned comparison, names, report.md and report.html (sentences: ``findings``)."""

from __future__ import annotations

import base64
import html
import math
from pathlib import Path

import pandas as pd

from harness.config import schema
from harness.report.aggregate import methods
from harness.report.declaration import label
from harness.report.load import training_seconds


def fmt(v, digits: int = 4) -> str:
    if v is None or (isinstance(v, float) and math.isnan(v)):
        return "n/a"
    return f"{v:.{digits}f}" if isinstance(v, float) else str(v)


def tuned_sections(selected: pd.DataFrame, decl, tolerance: float, seeds: str = "") -> dict[str, tuple[str, pd.DataFrame]]:
    """One table per problem: each method's selected setting, its validation and test scores, its
    training score (running over the last epoch's steps) with the train - test gap, the verdict."""
    caption = (
        f"The study {decl.text()}. Each method's setting is selected by the mean over seeds of the validation metric "
        f"(never the test metric); the test metric of that setting is reported over its seeds, with a 95% t interval. "
        f"The reference (rank 1) is the method best on validation; verdicts compare each other method with it on test "
        f"(paired by seed when the seeds pair; interval and tests at one level, Bonferroni over the problem's comparisons): "
        f"better, worse, equivalent or non-inferior at the declared margin, else undecided (not told apart, which is not equal). "
        f"Good region: the share of the method's grid whose validation score is within {tolerance:.0%} of its best."
        + (f" {seeds}" if seeds else "")
    )
    out = {}
    for problem, part in selected.groupby("problem", sort=True):
        show = pd.DataFrame(
            {
                "rank": part["rank"],
                "method": part["method"],
                "selected": part["setting"],
                "val (selection)": part["val_mean"].map(fmt),
                f"{part['metric'].iloc[0]} mean": part["test_mean"].map(fmt),
                "95% CI": [
                    f"[{fmt(lo)}, {fmt(hi)}]" if not math.isnan(lo) else "n/a"
                    for lo, hi in zip(part["ci95_low"], part["ci95_high"])
                ],
                "n": part["n"],
                "grid": part["grid"],
                **(
                    {"train (last epoch)": part["train_mean"].map(fmt), "train - test gap": part["gap"].map(fmt)}
                    if part.get("train_mean", pd.Series(dtype=float)).notna().any()
                    else {}
                ),
                "good region": [
                    f"{g:.0%}" if isinstance(g, float) and not math.isnan(g) else "n/a"
                    for g in part.get("good_share", [math.nan] * len(part))
                ],
                "at grid edge": part.get("at_edge", "").fillna(""),
                "verdict vs reference": part.get("verdict_short", part["verdict"]),
            }
        )
        show, same = constant_columns(
            show, {"n": "seeds per method", "grid": "settings in each method's grid"}, ("at grid edge",)
        )
        if part.get("train_corrupted", pd.Series(dtype=bool)).eq(True).any():
            same.append(
                "no training score or train - test gap: these runs trained on corrupted targets "
                "(outliers or flipped labels), so their training score measures the corruption, not the fit"
            )
        out[f"Tuned comparison: {problem}"] = (caption + (" " + "; ".join(same) + "." if same else ""), show)
    return out


def constant_columns(show: pd.DataFrame, named: dict[str, str], empty: tuple[str, ...]) -> tuple[pd.DataFrame, list[str]]:
    """Columns with one value in every row move to the caption ("5 seeds per method"); columns that
    are empty in every row are dropped. Returns (the table, the caption's phrases)."""
    phrases, drop = [], []
    if len(show) > 1:
        for col, words in named.items():
            if col in show and show[col].nunique() == 1:
                phrases.append(f"{show[col].iloc[0]} {words}")
                drop.append(col)
    drop += [col for col in empty if col in show and not show[col].astype(str).str.strip().any()]
    return show.drop(columns=drop), phrases


def header(experiment: str, runs: pd.DataFrame, table: pd.DataFrame, date: str) -> dict[str, str]:
    counts = runs["outcome"].value_counts().to_dict()
    seeds = table["n"]
    compute = training_seconds(runs)
    versions = ", ".join(sorted(str(v) for v in runs["harness_version"].dropna().unique())) or "unknown"
    return {
        "experiment": experiment,
        "runs": f"{len(runs)} (" + ", ".join(f"{v} {k}" for k, v in sorted(counts.items())) + ")",
        "configurations": str(len(table)),
        "seeds per configuration": seed_counts(seeds),
        "tasks": ", ".join(sorted(runs["task"].dropna().unique())),
        "generated": date,
        "harness version": versions,
        "devices": devices(runs),
        "total training time": f"{compute / 60:.1f} min ({compute:.0f} s; a stacked bundle counted once)",
    }


def seed_counts(n: pd.Series) -> str:
    """How many seeds the configurations have, as counts ('5 to 25'): '5-25' read like the seed ids 5 to 25."""
    low, high = int(n.min()), int(n.max())
    return str(low) if low == high else f"{low} to {high}"


def devices(runs: pd.DataFrame) -> str:
    """Where the runs trained, with counts: training times are comparable only within one device."""
    if "device" not in runs:
        return "unknown"
    kind = runs["device"].fillna("unknown").astype(str).str.split(":").str[0]
    named = runs["device_name"].fillna("") if "device_name" in runs else pd.Series("", index=runs.index)
    some_named = bool((named != "").any())  # runs logged before device_name was recorded say so beside named ones
    where = [
        f"{k} ({n})" if n else f"{k} (model not recorded)" if some_named and k != "unknown" else k for k, n in zip(kind, named)
    ]
    counts = pd.Series(where).value_counts()
    text = ", ".join(f"{w}: {c} run{'s' if c != 1 else ''}" for w, c in counts.items()) if len(counts) > 1 else counts.index[0]
    return text + ("; times are comparable only between runs on one device" if len(counts) > 1 else "")


NOT_KNOBS = schema.not_knobs()  # _target_, _partial_, targets, data_dir, download, traits


def names_table(
    runs: pd.DataFrame, config_cols: list[str], tuned: tuple[str, ...] = (), classes: dict | None = None
) -> tuple[str, pd.DataFrame] | None:
    """What each compared choice is (``focal_g5``: FocalLoss, gamma=5.0): its class and the knobs its
    runs logged, those the same in all its runs (the tuned ones and anything that varies are in the tables).
    classes: (group, name) -> class path, for runs that log no ``_target_`` param (read from their config.yaml)."""
    rows = []
    for group in [c for c in config_cols if c in ("loss", "optimizer", "schedule")]:
        prefix = f"param:{group}."
        cols = [
            c
            for c in runs.columns
            if c.startswith(prefix)
            and c[len(prefix) :] not in NOT_KNOBS
            and c[len(prefix) :].split(".")[0] not in NOT_KNOBS
            and f"{group}.{c[len(prefix) :]}" not in tuned
        ]
        for name, part in runs.groupby(group, sort=True):
            target = part.get(f"{prefix}_target_")
            path = (
                str(target.dropna().iloc[0])
                if target is not None and target.notna().any()
                else (classes or {}).get((group, name), "")
            )
            cls = str(path).rsplit(".", 1)[-1]
            knobs = []
            for c in cols:
                values = part[c].dropna().astype(str).unique()
                if len(values) == 1 and values[0] not in ("", "nan"):
                    knobs.append(f"{c[len(prefix) :]}={values[0]}")
            rows.append({"group": group, "name": name, "class": cls, "knobs": ", ".join(knobs)})
    if not rows:
        return None
    table = pd.DataFrame(rows)
    if not table["class"].astype(bool).any():
        table = table.drop(columns=["class"])
    return (
        "What each name in the tables is: its class and the knobs all its runs share, as the runs logged them "
        "(tuned knobs and those that vary are in the tables above).",
        table,
    )


def table_for_display(table: pd.DataFrame, config_cols: list[str]) -> pd.DataFrame:
    cols = ["rank", "winner"] + [label(c) for c in methods(config_cols)]
    show = table[["task"] + cols].copy()
    show["metric"] = table["metric"]
    show["mean +- std"] = [fmt(m) if math.isnan(s) else f"{fmt(m)} +- {fmt(s)}" for m, s in zip(table["mean"], table["std"])]
    show["95% CI"] = [
        f"[{fmt(lo)}, {fmt(hi)}]" if not math.isnan(lo) else "n/a" for lo, hi in zip(table["ci95_low"], table["ci95_high"])
    ]
    show["n"] = table["n"]
    show["best epoch"] = table["best_epoch"].map(
        lambda v: "n/a" if v is None or (isinstance(v, float) and math.isnan(v)) else str(int(v))
    )
    if "time_to_target_s" in table:
        show["time to target (s)"] = [
            f"{fmt(t, 1)} ({r}, target {fmt(g, 3)})" if isinstance(r, str) else "n/a"
            for t, r, g in zip(table["time_to_target_s"], table.get("reached_target"), table.get("target"))
        ]
    show["diverged"] = table["diverged"]
    if table["failed"].sum():
        show["failed"] = table["failed"]
    return show


FLAT = (
    "`*` marks the winner; mean and std over seeds of finished runs, 95% t interval. "
    "No study declaration (study.compare): this ranks every configuration by its test metric, so picking the top row "
    "is selection on the test set; declare what is compared and tuned for a tuned comparison."
)


def flat_sections(table: pd.DataFrame, config_cols: list[str]) -> dict[str, tuple[str, pd.DataFrame]]:
    return {
        f"Flat ranking: {problem}": (FLAT, table_for_display(part, config_cols))
        for problem, part in table.groupby("problem", sort=True)
    }


def markdown(head: dict, notes: list[str], tables: dict[str, tuple[str, pd.DataFrame]], figures: list[tuple[str, str]]) -> str:
    lines = [f"# Report: {head['experiment']}", ""]
    lines += [f"- **{k}**: {v}" for k, v in head.items() if k != "experiment"] + ["", "## Findings", ""]
    lines += [f"- {n}" for n in notes] + [""]
    for title, (caption, t) in tables.items():
        lines += [f"## {title}", "", caption, "", t.drop(columns=["task"], errors="ignore").to_markdown(index=False), ""]
    if figures:
        lines += ["## Figures", ""]
        for title, path in figures:
            lines += [f"### {title}", "", f"![{title}]({Path(path).name})", ""]
    return "\n".join(lines)


def html_page(
    head: dict, notes: list[str], tables: dict[str, pd.DataFrame], figures: list[tuple[str, str]], embed: bool = False
) -> str:
    """The report as one page. Its figures are the PNG files beside it (as report.md's), or with ``embed``
    inlined as base64 PNG: the copy logged to MLflow, whose artifact viewer shows one file at a time."""
    import re

    def inline(text: str) -> str:
        return re.sub(r"\*\*(.+?)\*\*", r"<b>\1</b>", html.escape(text))

    parts = [
        "<!doctype html><html><head><meta charset='utf-8'>",
        f"<title>Report: {html.escape(head['experiment'])}</title>",
        "<style>body{font-family:sans-serif;max-width:1100px;margin:2em auto;padding:0 1em}table{border-collapse:collapse;"
        "font-size:13px}td,th{border:1px solid #ccc;padding:3px 6px;text-align:right}img{max-width:100%}</style></head><body>",
        f"<h1>Report: {html.escape(head['experiment'])}</h1><ul>",
    ]
    parts += [f"<li><b>{html.escape(k)}</b>: {html.escape(v)}</li>" for k, v in head.items() if k != "experiment"]
    parts += ["</ul><h2>Findings</h2><ul>"] + [f"<li>{inline(n)}</li>" for n in notes] + ["</ul>"]
    for title, (caption, t) in tables.items():
        parts += [
            f"<h2>{html.escape(title)}</h2><p>{inline(caption)}</p>",
            t.drop(columns=["task"], errors="ignore").to_html(index=False, border=0),
        ]
    for title, path in figures:
        src = f"data:image/png;base64,{base64.b64encode(Path(path).read_bytes()).decode()}" if embed else Path(path).name
        parts += [f"<h3>{html.escape(title)}</h3><img alt='{html.escape(title)}' src='{html.escape(src)}'>"]
    return "\n".join(parts + ["</body></html>"])
