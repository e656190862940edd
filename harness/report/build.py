"""One report, from the store to its folder: the runs it reads, the tables, the tuned comparison of a
declared study, the figures, report.md and report.html, and its note on the sweep's parent run."""

from __future__ import annotations

import json
import re
import tempfile
import time
from pathlib import Path

import numpy as np
import pandas as pd

from harness.report import figures as fig
from harness.report import protocol, stats, views
from harness.report.access import choice_classes
from harness.report.aggregate import DEFAULT_TARGETS, config_name, methods, performance_profile, rank
from harness.report.declaration import Declaration, label
from harness.report.findings import collapses, findings, tuned_findings
from harness.report.folder import claim_folder, record_folder
from harness.report.fresh import caption as fresh_caption
from harness.report.load import (
    client_for,
    declaration,
    factors,
    histories,
    load_runs,
    open_sweeps,
    select_unit,
    slice_runs,
    training_seconds,
)
from harness.report.matched import with_matched_loss
from harness.report.render import (
    flat_sections,
    header,
    html_page,
    markdown,
    names_table,
    tuned_sections,
)
from harness.report.views import study_views
from harness.report.wording import join_verdicts

MAX_FOREST = 25  # a forest plot shows the best 25 rows of a problem
TOLERANCE = 0.02  # a grid setting within 2% of the method's best validation score is in its good region
REPORTS = Path("reports")  # beside the store (sqlite:///mlflow.db): the folder the command runs in


RUN_COLUMNS = (
    "run_id",
    "run_name",
    "sweep_id",
    "stage",
    "round",
    "outcome",
    "status",
    "bundle",
    "device",
    "device_name",
    "harness_version",
)


def per_run(runs: pd.DataFrame) -> pd.DataFrame:
    """The report's data, one row per run it read: its id and outcome, its config (every logged param, the
    seeds among them) and its final metrics, so that anyone can recompute the report without the store."""
    params = sorted(c for c in runs.columns if c.startswith("param:"))
    finals = sorted(c for c in runs.columns if c.startswith("final:"))
    return runs[[c for c in RUN_COLUMNS if c in runs.columns] + params + finals].sort_values("run_id")


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
        settings, *cols = protocol.settings_table(runs, config_cols, decl)
        selected = protocol.select(settings, tolerance, decl.margin, decl.rounds)
        if "loss" not in decl.compare:  # methods that share a loss: also read at a matched training loss
            scored = with_matched_loss(runs, hist, selected, [c for group in cols for c in group])
            if len(scored.columns) > len(runs.columns):  # selection again, its other metrics now with that one
                settings = protocol.settings_table(scored, config_cols, decl)[0]
                selected = protocol.select(settings, tolerance, decl.margin, decl.rounds)

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
        axes = views.heatmap_axes(config_cols)
        if axes:
            others = tuple(
                c for c in config_cols if c not in ("task", *axes) and table[table.task == task][label(c)].nunique() > 1
            )
            made.append(
                (
                    f"{task}: {label(axes[0])} x {label(axes[1])}",
                    views.heatmap(table, *axes, task, out / f"{task}_heatmap.png", others),
                )
            )
        if "param:optimizer.lr" in config_cols:
            made.append((f"{task}: LR sensitivity", views.lr_sensitivity(runs, table, task, out / f"{task}_lr_sensitivity.png")))
        if "param:batch_size" in config_cols:
            made.append((f"{task}: batch size", views.batch_size_effect(runs, config_cols, task, out / f"{task}_batch_size.png")))
        if "schedule" in config_cols:
            made.append((f"{task}: LR schedules", views.lr_schedules(runs, hist, task, out / f"{task}_lr_schedules.png")))

    head = header(experiment, runs, table, time.strftime("%Y-%m-%d %H:%M"))
    head["read"] = unit.text
    if where:
        head["slice"] = (
            "only the runs with " + ", ".join(f"{k}={v}" for k, v in where.items()) + " (python -m harness.report --where)"
        )
    # the study's sweeps, oldest first: the first (its selection) declared it; the rest ran rounds or other parts
    sweeps = (
        [d for p in reversed(unit.parents) if (d := Declaration.from_tags(p.data.tags, p.info.run_id)) is not None]
        if unit.parents and not all_sweeps
        else []
    )
    if decl is not None:  # what was declared, and when, before any result
        # runs older than the first sweep were reused by resume from another sweep
        declared_at = min(p.info.start_time for p in unit.parents) if unit.parents and not all_sweeps else None
        predating = int((runs["start"] < declared_at).sum()) if declared_at else 0
        text = decl.declared_text(sorted(runs["primary_metric"].dropna().unique()), sweeps)
        if predating:
            text += f"; {predating} of the {len(runs)} runs predate the study's first sweep (reused by resume from another sweep)"
        head = {"declared": text, **head}
    if not all_sweeps and (still := open_sweeps(unit.parents, runs)):
        head = {"incomplete": still, **head}  # before anything a reader might take for a result
    if decl is not None:
        assert selected is not None  # a declared study always selects
        ranks, cd, cd_text = protocol.mean_ranks(selected)
        first = sweeps[0] if sweeps else decl
        head["protocol"] = (
            f"{decl.text()}; selected on the validation metric, test metric reported; "
            f"declared by sweep run {first.run_id}"
            + (f" ({first.overrides})" if first.overrides else "")
            + (f"; {len(sweeps) - 1} later sweep(s), the newest {decl.run_id}" if len(sweeps) > 1 else "")
        )
        notes = tuned_findings(selected) + findings(table, runs, config_cols)[table["problem"].nunique() :]
        sections = tuned_sections(selected, decl, tolerance, fresh_caption(runs, decl.rounds))
        extra, views_made = study_views(runs, config_cols, out)
        sections.update(extra)
        made += views_made
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
        confirmed = bool((selected["seeds"] == "fresh").any())
        dropped = ["run_ids", "grid_val"] + (
            [] if confirmed else ["seeds", "look", "fresh_by_round", "others", "selection_by_seed"]
        )
        written = selected.drop(columns=dropped).assign(test_by_seed=selected["test_by_seed"].map(json.dumps))
        if confirmed:  # the fresh seeds round by round, for the claims table's looks
            written["fresh_by_round"] = selected["fresh_by_round"].map(json.dumps)
            # others: the selected setting's other test metrics; selection_by_seed: its test scores on the selection's
            # seeds, for a study compared with another on the seeds both selected on (harness/report/compare.py)
            for col in ("others", "selection_by_seed"):
                written[col] = selected[col].map(lambda o: json.dumps(o if isinstance(o, dict) else {}))
        written.to_csv(out / "tuned.csv", index=False)
        epochs = sorted({int(float(e)) for e in runs.get("param:epochs", pd.Series(dtype=str)).dropna()})
        steps = sorted(
            {int(float(s)) for s in runs.get("param:steps", pd.Series(dtype=str)).dropna() if s not in ("null", "None")}
        )
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
                    **({"steps": steps} if steps else {}),
                    "seeds": sorted(selected["n"].unique().tolist()),
                    **(
                        {"confirmation": {"rounds_declared": decl.rounds, "caption": fresh_caption(runs, decl.rounds)}}
                        if confirmed
                        else {}
                    ),
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
                f"**{p}**: " + join_verdicts([r["verdict"] for _, r in part.iloc[1:4].iterrows()]) + "."
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
    per_run(runs).to_csv(out / "runs.csv", index=False)
    (out / "report.md").write_text(markdown(head, notes, sections, made))
    (out / "report.html").write_text(html_page(head, notes, sections, made))
    written = (
        ["report.md", "report.html", "summary.csv", "runs.csv"]
        + [n for n in ("tuned.csv", "protocol.json") if decl is not None]
        + sorted({Path(path).name for _, path in made})
    )
    record_folder(out, experiment, where or {}, list(runs["run_id"]), written, earlier)
    if log_to_parent and "incomplete" in head:  # provisional verdicts are not attached to the sweep still writing there
        print(
            f"not logged to sweep run {unit.parents[0].info.run_id}: a sweep it read is still open; rerun the report when it has ended"
        )
    elif log_to_parent:
        if unit.parents and not all_sweeps:  # the newest sweep whose runs it read, never one it did not
            run_id = unit.parents[0].info.run_id
            with tempfile.TemporaryDirectory() as tmp:
                # MLflow's artifact viewer shows report.html alone: the copy logged there embeds the figures
                (Path(tmp) / "report.html").write_text(html_page(head, notes, sections, made, embed=True))
                for name in written:  # what this report wrote, not whatever else is in the folder (--out .)
                    local = Path(tmp) / name if name == "report.html" else out / name
                    client.log_artifact(run_id, str(local), artifact_path="report")
            client.set_tag(run_id, "mlflow.note.content", parent_note(experiment_id, run_id, notes))
            print(f"logged the report as artifacts of sweep run {run_id} (its description links to it)")
    return out


def parent_note(experiment_id: str, run_id: str, notes: list[str]) -> str:
    """The sweep parent's description (MLflow shows ``mlflow.note.content`` as markdown on the run's
    page): the headline finding and where the report is among the run's artifacts."""
    headline = notes[0] if notes else "no finding (nothing finished)"
    return (
        f"{headline}\n\n**Report**: [report/report.html](#/experiments/{experiment_id}/runs/{run_id}/artifacts) "
        "among this run's artifacts (also report.md, the figures, summary.csv)."
    )
