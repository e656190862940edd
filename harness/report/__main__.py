"""python -m harness.report EXPERIMENT [--tracking-uri URI] [--out DIR] [--target TASK=VALUE ...]
python -m harness.report --gallery [--out DIR]"""

from __future__ import annotations

import argparse
import contextlib
import json
import math
import os
import re
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import TypeVar

import numpy as np
import pandas as pd

from harness.report import ReportError, protocol, stats
from harness.report import figures as fig
from harness.report.aggregate import DEFAULT_TARGETS, config_name, methods, performance_profile, rank
from harness.report.declaration import Declaration, label
from harness.report.load import (
    client_for,
    declaration,
    factors,
    histories,
    load_runs,
    parse_where,
    select_unit,
    slice_runs,
    training_seconds,
)
from harness.report.render import (
    collapses,
    findings,
    flat_sections,
    header,
    html_page,
    markdown,
    names_table,
    tuned_findings,
    tuned_sections,
)

MAX_FOREST = 25  # a forest plot shows the best 25 rows of a problem
TOLERANCE = 0.02  # a grid setting within 2% of the method's best validation score is in its good region
REPORTS = Path("reports")  # beside the store (sqlite:///mlflow.db): the folder the command runs in
T = TypeVar("T")
SWEEPS_LISTED = 5  # sweeps listed per experiment by --list (newest first)
LOCK_WAIT = 30.0  # seconds a report waits for a store another process holds locked, as a run does (tracking.lock_timeout)
RECORD = ".harness-report.json"  # in a report's folder: what it was made from and the files it wrote (nothing else is removed)


def choice_classes(client, runs: pd.DataFrame, config_cols: list[str]) -> dict:
    """(group, choice) -> the class its config names, from one run's config.yaml per choice (runs log no
    ``_target_`` param); a choice whose config cannot be read is left out."""
    import yaml

    out = {}
    for group in [c for c in config_cols if c in ("loss", "optimizer", "schedule")]:
        if f"param:{group}._target_" in runs and runs[f"param:{group}._target_"].notna().all():
            continue
        for name, part in runs.groupby(group, sort=True):
            try:
                with tempfile.TemporaryDirectory() as tmp:
                    cfg = yaml.safe_load(Path(client.download_artifacts(part["run_id"].iloc[0], "config.yaml", tmp)).read_text())
                out[(group, name)] = (cfg.get(group) or {}).get("_target_", "")
            except Exception:  # an artifact store out of reach: the table goes without the class
                continue
    return out


def build_report(
    experiment: str,
    uri: str,
    out: Path,
    targets: dict[str, float],
    log_to_parent: bool = True,
    tolerance: float = TOLERANCE,
    where: dict[str, str] | None = None,
    force: bool = False,
    sweep: str | None = None,
    all_sweeps: bool = False,
    margin: object = None,
) -> Path:
    fig.reset_styles()
    client = client_for(uri)
    runs, experiment_id = load_runs(client, experiment)
    unit = select_unit(client, experiment_id, runs, sweep, all_sweeps)
    runs = unit.runs
    if where:
        runs = slice_runs(runs, where).reset_index(drop=True)
    decl = (
        Declaration.from_tags(unit.parents[0].data.tags, unit.parents[0].info.run_id)
        if unit.parents and not all_sweeps
        else declaration(client, experiment_id)
    )
    if margin is not None and decl is not None:  # given to the report, after the runs: said so wherever it shows
        decl.margin, decl.post_hoc = margin, True
    config_cols = factors(runs)
    keys = sorted(
        {
            "train/loss",
            "epoch_seconds",
            *runs["primary_metric"].dropna(),
            *("val/" + m.split("/", 1)[-1] for m in runs["primary_metric"].dropna()),
        }
        | ({"lr_step"} if "schedule" in config_cols else set())
        | ({"train/" + m.split("/", 1)[-1] for m in runs["primary_metric"].dropna()} if "loss" in config_cols else set())
    )
    hist = histories(client, runs[runs.outcome.isin(["finished", "diverged"])], keys)
    table = rank(runs, hist, config_cols, {**DEFAULT_TARGETS, **targets})
    earlier = claim_folder(out, experiment, where or {}, list(runs["run_id"]), force)

    if decl is None:  # a plain sweep: every configuration is a method of its own, nothing is tuned
        compared = [label(c) for c in methods(config_cols)]
        selected = (
            protocol.select(protocol.settings_table(runs, config_cols, protocol.Declaration(compared))[0], tolerance)
            if compared
            else None
        )
    else:
        selected = protocol.select(protocol.settings_table(runs, config_cols, decl)[0], tolerance, decl.margin)

    made: list[tuple[str, str]] = []
    for problem in sorted(table["problem"].unique()):
        if table[table.problem == problem]["n"].sum() == 0:
            continue
        stem = re.sub(r"[^A-Za-z0-9.]+", "_", problem.replace("task.", ""))
        part = selected[selected.problem == problem] if selected is not None else None
        if part is not None and len(part) > 1:
            rows = part.head(MAX_FOREST).assign(
                name=part["method"] + ("" if decl is None else " (" + part["setting"] + ")"),
                mean=part["test_mean"],
                low=part["ci95_low"],
                high=part["ci95_high"],
                winner=part["rank"] == 1,
            )
            note = "*: the reference (best on validation); shaded: not shown better or worse than it (alpha 0.05, Bonferroni)" + (
                f"; best {MAX_FOREST} of {len(part)} shown" if len(part) > MAX_FOREST else ""
            )
            made.append(
                (f"{problem}: forest plot", fig.forest(rows, part["metric"].iloc[0], problem, out / f"{stem}_forest.png", note))
            )
        if decl is not None and part is not None and len(part):
            groups = {f"{r['method']} ({r['setting']})": r["run_ids"] for _, r in part.head(fig.MAX_CURVES).iterrows() if r["n"]}
            made.append(
                (
                    f"{problem}: learning curves of the tuned methods",
                    fig.curves(
                        hist,
                        groups,
                        part["metric"].iloc[0],
                        problem,
                        "each method at its selected setting",
                        out / f"{stem}_curves.png",
                        dict(zip(runs["run_id"], runs["loss"])),
                    ),
                )
            )
            if part["grid"].max() > 1:
                lines = {r["method"]: stats.expected_best(r["grid_val"], r["mode"]) for _, r in part.iterrows() if r["n"]}
                made.append(
                    (
                        f"{problem}: expected best validation score vs tuning budget",
                        fig.expected_best(
                            lines, "val/" + part["metric"].iloc[0].split("/", 1)[-1], problem, out / f"{stem}_tuning_budget.png"
                        ),
                    )
                )
        else:
            made.append(
                (
                    f"{problem}: learning curves",
                    fig.learning_curves(runs, hist, table, config_cols, problem, out / f"{stem}_curves.png"),
                )
            )
    for task in sorted(table["task"].unique()):
        if table[table.task == task]["n"].sum() == 0:
            continue
        axes = fig.heatmap_axes(config_cols)
        if axes:
            others = tuple(
                c for c in config_cols if c not in ("task", *axes) and table[table.task == task][label(c)].nunique() > 1
            )
            made.append(
                (
                    f"{task}: {label(axes[0])} x {label(axes[1])}",
                    fig.heatmap(table, *axes, task, out / f"{task}_heatmap.png", others),
                )
            )
        if "param:optimizer.lr" in config_cols:
            made.append((f"{task}: LR sensitivity", fig.lr_sensitivity(runs, table, task, out / f"{task}_lr_sensitivity.png")))
        if "param:batch_size" in config_cols:
            made.append((f"{task}: batch size", fig.batch_size_effect(runs, config_cols, task, out / f"{task}_batch_size.png")))
        if "schedule" in config_cols:
            made.append((f"{task}: LR schedules", fig.lr_schedules(runs, hist, task, out / f"{task}_lr_schedules.png")))

    head = header(experiment, runs, table, time.strftime("%Y-%m-%d %H:%M"))
    head["read"] = unit.text
    if where:
        head["slice"] = (
            "only the runs with " + ", ".join(f"{k}={v}" for k, v in where.items()) + " (python -m harness.report --where)"
        )
    if decl is not None:
        ranks, cd, cd_text = protocol.mean_ranks(selected)
        head["protocol"] = (
            f"{decl.text()}; selected on the validation metric, test metric reported; "
            f"declared by sweep run {decl.run_id}" + (f" ({decl.overrides})" if decl.overrides else "")
        )
        notes = tuned_findings(selected) + findings(table, runs, config_cols)[table["problem"].nunique() :]
        sections = tuned_sections(selected, decl, tolerance)
        if len(ranks):
            notes.append(
                f"Across {selected['problem'].nunique()} problems, mean rank (1 is best): "
                + ", ".join(f"{m} {r:.2f}" for m, r in ranks["mean rank"].items())
                + f". {cd_text}."
            )
            if cd is not None:
                made.append(("critical-difference diagram", fig.critical_difference(cd, out / "critical_difference.png")))
            tuned = selected.assign(**{"param:method": selected["method"]})
            profile = performance_profile(
                tuned.rename(columns={"test_mean": "mean"}), ["param:method"], np.linspace(1.0, 2.0, 101)
            )
            made.append(
                ("performance profiles of the tuned methods", fig.performance_profiles(profile, out / "performance_profiles.png"))
            )
        selected.drop(columns=["run_ids", "grid_val"]).assign(test_by_seed=selected["test_by_seed"].map(json.dumps)).to_csv(
            out / "tuned.csv", index=False
        )
        epochs = sorted({int(float(e)) for e in runs.get("param:epochs", pd.Series(dtype=str)).dropna()})
        (out / "protocol.json").write_text(
            json.dumps(
                {
                    "experiment": experiment,
                    "where": where or {},
                    "compare": decl.compare,
                    "tune": decl.tune,
                    "margin": decl.margin,
                    "margin_post_hoc": decl.post_hoc,
                    "overrides": decl.overrides,
                    "runs": len(runs),
                    "finished": int((runs.outcome == "finished").sum()),
                    "epochs": epochs,
                    "seeds": sorted(selected["n"].unique().tolist()),
                    "train_seconds": training_seconds(runs),
                    "generated": time.strftime("%Y-%m-%d %H:%M"),
                },
                indent=1,
            )
        )
    else:
        head["protocol"] = "none declared (study.compare): a flat ranking of every configuration by its test metric"
        notes = findings(table, runs, config_cols)
        if selected is not None:
            notes += [
                f"**{p}**: " + protocol.join_verdicts([r["verdict"] for _, r in part.iloc[1:4].iterrows()]) + "."
                for p, part in selected.groupby("problem", sort=True)
                if len(part) > 1
            ]
        sections = flat_sections(table, config_cols)
        if table["problem"].nunique() > 1:
            profile = performance_profile(table, config_cols, np.linspace(1.0, 2.0, 101))
            made.append(("performance profiles", fig.performance_profiles(profile, out / "performance_profiles.png")))
    notes += collapses(runs, config_cols)
    if names := names_table(
        runs, config_cols, tuple(decl.tune) if decl is not None else (), choice_classes(client, runs, config_cols)
    ):
        sections["What the names mean"] = names
    summary = table.assign(configuration=table.apply(lambda r: config_name(r, config_cols), axis=1))
    lead = [
        c
        for c in ("configuration", "problem", "metric", "mean", "ci95_low", "ci95_high", "std", "n", "rank", "winner")
        if c in summary
    ]  # the numbers first; the factors and the bookkeeping after
    summary[lead + [c for c in summary.columns if c not in lead]].to_csv(out / "summary.csv", index=False)
    (out / "report.md").write_text(markdown(head, notes, sections, made))
    (out / "report.html").write_text(html_page(head, notes, sections, made))
    written = (
        ["report.md", "report.html", "summary.csv"]
        + [n for n in ("tuned.csv", "protocol.json") if decl is not None]
        + sorted({Path(path).name for _, path in made})
    )
    record_folder(out, experiment, where or {}, list(runs["run_id"]), written, earlier)
    if log_to_parent:
        if unit.parents and not all_sweeps:  # the newest sweep whose runs it read, never one it did not
            run_id = unit.parents[0].info.run_id
            for name in written:  # what this report wrote, not whatever else is in the folder (--out .)
                client.log_artifact(run_id, str(out / name), artifact_path="report")
            client.set_tag(run_id, "mlflow.note.content", parent_note(experiment_id, run_id, notes))
            print(f"logged the report as artifacts of sweep run {run_id} (its description links to it)")
    return out


def check_folder(out: Path) -> None:
    """The output folder can be a folder we write into: one line for a file in its way or no permission."""
    for part in (out, *out.parents):
        if part.exists():
            if not part.is_dir():
                raise ReportError(f"cannot write the report into {out}: {part} is a file, not a folder")
            break
    try:
        out.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise ReportError(f"cannot create the report folder {out}: {e.strerror}") from None
    if not os.access(out, os.W_OK | os.X_OK):
        raise ReportError(f"cannot write the report into {out}: permission denied (pass --out to a folder you can write)")


def read_record(out: Path) -> dict | None:
    """What the report in this folder was made from and which files it wrote (None: no report recorded here)."""
    try:
        record = json.loads((out / RECORD).read_text())
        return record if isinstance(record, dict) and isinstance(record.get("files"), list) else None
    except (OSError, ValueError):
        return None


def claim_folder(out: Path, experiment: str, where: dict, run_ids: list[str], force: bool) -> list[str]:
    """May this report be written into ``out``? Only over nothing, over a report of the same
    experiment (and slice) whose runs it still holds (a report that grew), or with --force. Returns
    the files the earlier report recorded writing there: the only ones this one may remove."""
    check_folder(out)
    record = read_record(out)
    if (out / "report.md").exists() and not force:
        if record is None:
            raise ReportError(
                f"{out} already holds a report.md this command did not record writing; pass --force to "
                "replace it (files it did not write are kept), or --out another folder"
            )
        same = record.get("experiment") == experiment and record.get("where", {}) == where
        if not same or not set(record.get("runs", [])) <= set(run_ids):
            raise ReportError(
                f"{out} holds a report made from other runs ({len(record.get('runs', []))} runs of "
                f"{record.get('experiment')!r}, generated {record.get('generated')}); pass --force to "
                "replace it, or --out another folder"
            )
    return [f for f in (record or {}).get("files", []) if isinstance(f, str) and f == Path(f).name]


def record_folder(out: Path, experiment: str, where: dict, run_ids: list[str], written: list[str], earlier: list[str]) -> None:
    """Remove what the earlier report wrote and this one did not (a figure no longer made), nothing
    else, and record what this one wrote and read."""
    for name in sorted(set(earlier) - set(written) - {RECORD}):
        with contextlib.suppress(FileNotFoundError):
            (out / name).unlink()
    (out / RECORD).write_text(
        json.dumps(
            {
                "experiment": experiment,
                "where": where,
                "runs": sorted(run_ids),
                "files": written,
                "generated": time.strftime("%Y-%m-%d %H:%M"),
            },
            indent=1,
        )
    )


def safe_name(name: str) -> str:
    """A folder name under reports/ for an experiment: no separators, never '.' or '..' or hidden."""
    safe = re.sub(r"[^A-Za-z0-9._-]+", "_", name)
    return re.sub(r"^\.+", lambda m: "_" * len(m.group()), safe) or "_"


def parent_note(experiment_id: str, run_id: str, notes: list[str]) -> str:
    """The sweep parent's description (MLflow shows ``mlflow.note.content`` as markdown on the run's
    page): the headline finding and where the report is among the run's artifacts."""
    headline = notes[0] if notes else "no finding (nothing finished)"
    return (
        f"{headline}\n\n**Report**: [report/report.html](#/experiments/{experiment_id}/runs/{run_id}/artifacts) "
        "among this run's artifacts (also report.md, the figures, summary.csv)."
    )


def check_store(uri: str) -> None:
    """One line, and nothing created, for a store a report cannot read: a sqlite file that is not
    there (MLflow would create an empty one), corrupt or unreadable, an unknown scheme, a dead server."""
    from harness import HarnessError
    from harness.tracking.uris import check_uri, sqlite_path

    try:
        check_uri(uri)
    except HarnessError as e:
        raise ReportError(str(e)) from None
    path = sqlite_path(uri) if uri.startswith("sqlite:") else None
    if path is not None and not path.exists():
        raise ReportError(
            f"there is no MLflow store at {path.resolve()} (run a sweep there first, or pass "
            f"--tracking-uri to where the runs are)"
        )


def waiting_out_locks(make: Callable[[], T], uri: str, wait: float = LOCK_WAIT) -> T:
    """make(), again while another process holds the store locked (a sweep writing), for up to ``wait`` seconds."""
    from harness.tracking.uris import is_locked, quiet_mlflow

    quiet_mlflow()
    deadline, pause = time.monotonic() + wait, 0.5
    while True:
        try:
            return make()
        except Exception as e:
            if not is_locked(e):
                raise
            if time.monotonic() >= deadline:
                raise ReportError(
                    f"the MLflow store {uri} stayed locked by another process for {wait:g} s (a sweep "
                    "writing to it?); try again when it is free"
                ) from None
            time.sleep(pause)


def listing(uri: str) -> str:
    """The store's experiments, each with its runs and its sweeps (id, date, jobs, outcome), newest first."""
    from harness.report.load import client_for

    client = client_for(uri)
    lines = [f"experiments in {uri} (report one: python -m harness.report EXPERIMENT):"]
    for exp in sorted(client.search_experiments(), key=lambda e: e.name):
        runs = []
        token = None
        while True:
            page = client.search_runs([exp.experiment_id], max_results=1000, page_token=token)
            runs += list(page)
            token = page.token
            if not token:
                break
        sweeps = sorted((r for r in runs if r.data.tags.get("harness.role") == "sweep"), key=lambda r: -r.info.start_time)
        jobs = len(runs) - len(sweeps)
        if not runs and exp.name == "Default":
            continue
        lines.append(f"  {exp.name}: {jobs} run(s), {len(sweeps)} sweep(s)")
        for r in sweeps[:SWEEPS_LISTED]:
            t = r.data.tags
            counts = ", ".join(
                f"{t[f'jobs_{k}']} {k}"
                for k in ("finished", "diverged", "failed", "killed", "skipped")
                if t.get(f"jobs_{k}", "0") != "0"
            )
            when = time.strftime("%Y-%m-%d %H:%M", time.localtime(r.info.start_time / 1000))
            lines.append(
                f"    sweep {t.get('sweep_id', r.info.run_id)}  {when}  {r.info.run_name}  "
                f"{t.get('outcome', r.info.status.lower())}" + (f" ({counts})" if counts else "")
            )
        if len(sweeps) > SWEEPS_LISTED:
            lines.append(f"    ... and {len(sweeps) - SWEEPS_LISTED} older sweep(s)")
    if len(lines) == 1:
        lines.append("  none yet: run a sweep first (python -m harness --multirun ...)")
    return "\n".join(lines)


def parse_targets(items: list[str]) -> dict[str, float]:
    out = {}
    for item in items:
        task, _, value = item.partition("=")
        try:
            out[task] = float(value)
        except ValueError:
            raise ReportError(f"--target takes TASK=NUMBER (e.g. mnist=0.98), got {item!r}") from None
    return out


def parse_margin(text: str | None) -> object:
    if text is None:
        return None
    from harness.config.schema import margin_ok

    value: object = text.strip()
    if not str(value).endswith("%"):
        try:
            value = float(str(value))
        except ValueError:
            value = None
    if value is None or not margin_ok(value):
        raise ReportError(f"--margin must be a number > 0 (in the metric's units) or N% (of the reference's mean), got {text!r}")
    return value


def main(argv=None) -> int:
    p = argparse.ArgumentParser(prog="python -m harness.report", description="Tables and figures from an MLflow experiment.")
    p.add_argument("experiment", nargs="?", help="MLflow experiment name (a study's name, or a task's)")
    p.add_argument(
        "--tracking-uri",
        default=os.environ.get("MLFLOW_TRACKING_URI", "sqlite:///mlflow.db"),
        help="MLflow store (default: $MLFLOW_TRACKING_URI or sqlite:///mlflow.db)",
    )
    p.add_argument("--out", help="output folder (default: reports/EXPERIMENT, or reports/gallery, in the current folder)")
    p.add_argument(
        "--target",
        action="append",
        default=[],
        metavar="TASK=VALUE",
        help=f"time-to-target threshold of a task's primary metric (defaults: {DEFAULT_TARGETS})",
    )
    p.add_argument("--gallery", action="store_true", help="plot the loss functions and their gradients instead")
    p.add_argument(
        "--list", action="store_true", help="list the store's experiments and their sweeps (also what no EXPERIMENT does)"
    )
    p.add_argument(
        "--tolerance",
        type=float,
        default=TOLERANCE,
        help=f"good region: grid settings within this fraction of a method's best validation score (default {TOLERANCE})",
    )
    p.add_argument(
        "--margin",
        help="the smallest difference that matters, for a study that declared none (a number in the metric's units, "
        "or N%% of the reference's mean); the report says it was given after the runs",
    )
    p.add_argument("--no-log", action="store_true", help="do not log the report to the sweep's parent run")
    p.add_argument(
        "--sweep",
        metavar="ID",
        help="report on this sweep (its id or its parent run's id) instead of the default "
        "unit: the newest sweep with the runs it reused, or all the sweeps of a declared study",
    )
    p.add_argument("--all-sweeps", action="store_true", help="report on every run of the experiment, whatever sweep made it")
    p.add_argument(
        "--force",
        action="store_true",
        help="replace a report in the output folder that was made from other runs (files it did not write are kept)",
    )
    p.add_argument(
        "--where",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="report on a slice: only the runs whose param KEY equals VALUE (repeatable); "
        "default output reports/EXPERIMENT-KEY-VALUE, not logged to the parent run",
    )
    args = p.parse_args(argv)
    try:
        if not math.isfinite(args.tolerance) or not 0 <= args.tolerance < 1:
            raise ReportError(f"--tolerance must be a number in [0, 1) (a fraction of the best score), got {args.tolerance}")
        if args.gallery:
            out = Path(args.out or REPORTS / "gallery")
            check_folder(out)
            paths = fig.loss_gallery(out / "regression_losses.png", out / "classification_losses.png")
            print("wrote " + ", ".join(paths))
            return 0
        if not args.experiment or args.list:
            check_store(args.tracking_uri)
            print(waiting_out_locks(lambda: listing(args.tracking_uri), args.tracking_uri))
            return 0
        margin = parse_margin(args.margin)
        where = parse_where(args.where)
        if "sweep_id" in where:  # --where sweep_id=ID is --sweep ID
            if args.sweep and args.sweep != where["sweep_id"]:
                raise ReportError("--sweep and --where sweep_id=... name different sweeps; give one")
            args.sweep = where.pop("sweep_id")
        if args.sweep and args.all_sweeps:
            raise ReportError("--sweep ID and --all-sweeps exclude each other")
        check_store(args.tracking_uri)
        name = args.experiment + "".join(f"-{k}-{v}" for k, v in where.items())
        out = waiting_out_locks(
            lambda: build_report(
                args.experiment,
                args.tracking_uri,
                Path(args.out or REPORTS / safe_name(name)),
                parse_targets(args.target),
                not args.no_log and not where,
                args.tolerance,
                where,
                args.force,
                args.sweep,
                args.all_sweeps,
                margin,
            ),
            args.tracking_uri,
        )
        figures = [f for f in (read_record(out) or {}).get("files", []) if f.endswith(".png")]
        print(f"wrote {out / 'report.md'}, {out / 'report.html'}, {out / 'summary.csv'} and {len(figures)} figures")
        return 0
    except ReportError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    except OSError as e:  # the folder went read-only, the disk is full, ...
        print(f"error: cannot write the report: {e.strerror or e}" + (f" ({e.filename})" if e.filename else ""), file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
