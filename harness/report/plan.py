"""python -m harness.report.plan [--reports DIR]

reports/plan.md from the declared plan of studies (reports/plan.yaml: order, claims, budget in minutes of
training) and what each study's report measured (its protocol.json: runs, minutes of training, whether its
verdicts read fresh seeds, how many of its declared confirmation rounds ran, and which claims a round left would
still follow). A study not yet run, or run only before the confirmation protocol, is listed
with the size of its grid and what its last run cost. Nothing in it is typed by hand.
"""

from __future__ import annotations

import argparse
import json
import math
import sys
from pathlib import Path

import pandas as pd
import yaml

from harness.report import ReportError
from harness.report.claimmap import load_study, still_open
from harness.report.pages import replace_block

REPORTS = Path(__file__).resolve().parent.parent.parent / "reports"
EXPERIMENTS = REPORTS.parent / "experiments"


def sweep_params(study: str, experiments: Path) -> dict | None:
    """A study's sweep lists, with those of the study it builds on (a plain name in its defaults) beneath its
    own; None for a search (a sweeper that samples) or a study with no file."""
    path = experiments / f"{study}.yaml"
    if not path.exists():
        return None
    cfg = yaml.safe_load(path.read_text()) or {}
    params: dict = {}
    for d in cfg.get("defaults", []):
        if "sweeper" in str(d):
            return None
        if isinstance(d, str) and d != "_self_":
            base = sweep_params(d, experiments)
            if base is None:
                return None
            params.update(base)
    return params | (((cfg.get("hydra") or {}).get("sweeper") or {}).get("params") or {})


def grid_runs(study: str, experiments: Path = EXPERIMENTS) -> int | None:
    """The number of runs a study's selection sweep launches (the product of its sweep lists), or None."""
    params = sweep_params(study, experiments)
    return math.prod(len(str(v).split(",")) for v in params.values()) if params else None


def needs(entry: dict) -> str:
    """What a study waits on, as its plan entry declares it (``needs``: a GPU, CPU hours), for one not yet run."""
    return f" (needs {entry['needs']})" if entry.get("needs") else ""


def status(reports: Path, entry: dict) -> dict:
    study, budget = entry["study"], float(entry["budget"])
    proto_path = reports / study / "protocol.json"
    grid = grid_runs(study, reports.parent / "experiments")
    row = {
        "study": study,
        "claims": ", ".join(entry.get("claims", [])) or "-",
        "selection grid": "a search" if grid is None else f"{grid} runs",
        "budget (min)": f"{budget:g}",
    }
    if not proto_path.exists():
        return row | {"runs": "-", "training (min)": "-", "status": "not run" + needs(entry)}
    proto = json.loads(proto_path.read_text())
    minutes = proto.get("train_seconds", math.nan) / 60
    measured = {"runs": str(proto.get("finished", "?")), "training (min)": f"{minutes:.1f}"}
    within = "within budget" if minutes <= budget else f"over budget by {minutes - budget:.1f} min"
    if "confirmation" not in proto and entry.get("stopped"):  # its plan entry says why its rounds were not run
        date = proto.get("generated", "?")[:10]
        return row | measured | {"status": f"selection only ({date}), stopped: {entry['stopped']}; {within}" + needs(entry)}
    if "confirmation" not in proto and proto.get("margin") is not None and not proto.get("margin_post_hoc"):
        # a study declared before its runs without confirmation rounds (a search): its verdicts read its own seeds
        date = proto.get("generated", "?")[:10]
        return row | measured | {"status": f"run with its declared margin ({date}), no confirmation rounds, {within}"}
    if "confirmation" not in proto:
        return (
            row
            | measured
            | {"status": f"first run only ({proto.get('generated', '?')[:10]}): not yet rerun on fresh seeds" + needs(entry)}
        )
    return (
        row
        | measured
        | {"status": f"confirmed on fresh seeds ({proto.get('generated', '?')[:10]}){rounds_of(reports, study, proto)}, {within}"}
    )


def rounds_of(reports: Path, study: str, proto: dict) -> str:
    """How many of its declared confirmation rounds a study ran, and the claims whose primary contrast on it is
    still inconclusive with a round left (``claimmap.still_open``: a later round would rerun them): "" where the
    report does not say."""
    declared = proto["confirmation"].get("rounds_declared")
    got = load_study(reports, study)
    if not declared or got is None or "fresh_by_round" not in got[0]:
        return ""
    tuned = got[0]
    ran = max((max(r) for r in tuned["fresh_by_round"] if r), default=0)
    text = f", {ran} of {declared} rounds"
    if ran < int(declared):
        waiting = sorted(still_open(tuned, study, int(declared), reports), key=lambda c: int(c[1:]) if c[1:].isdigit() else 0)
        if waiting:
            text += f" ({', '.join(waiting)} still inconclusive at the claims' level: round {ran + 1} would follow)"
    return text


def build(reports: Path, plan: dict) -> str:
    lines = [
        "# The studies' plan and what it cost",
        "",
        "Generated by `python -m harness.report.plan` from `reports/plan.yaml` (the order, claims and budgets, declared "
        "before the runs) and each study's `protocol.json`; not typed by hand. Budgets and training are minutes of "
        "training as the report counts them (a stacked bundle's wall time once), on this project's 2-core machine. "
        "A study run only before the confirmation protocol shows what that first run cost.",
        "",
    ]
    for part, entries in plan.items():
        if not isinstance(entries, list):
            raise ReportError(f"plan: {part} must be a list of {{study, claims, budget}}")
        table = pd.DataFrame([status(reports, e) for e in entries])
        table.insert(0, "order", range(1, len(table) + 1))
        lines += [f"## {part}", "", table.to_markdown(index=False), ""]
    return "\n".join(lines)


def study_list(reports: Path, plan: dict) -> str:
    """The results page's list of studies: each a link to its report, its claims and where it stands."""
    lines = []
    for entries in plan.values():
        for e in entries:
            row = status(reports, e)
            report = reports / e["study"] / "report.md"
            link = f"[{e['study']}](../reports/{e['study']}/report.md)" if report.exists() else e["study"]
            lines.append(f"- {link} ({row['claims']}): {row['status']}")
    return "\n".join(lines) + "\n"


def main(argv=None) -> int:
    p = argparse.ArgumentParser(
        prog="python -m harness.report.plan", description="reports/plan.md from the plan and the reports."
    )
    p.add_argument("--reports", default=str(REPORTS), help="folder holding plan.yaml and the studies' reports")
    p.add_argument("--page", help="also rewrite the list of studies between a page's studies:start and studies:end lines")
    args = p.parse_args(argv)
    reports = Path(args.reports)
    try:
        plan = yaml.safe_load((reports / "plan.yaml").read_text()) or {}
        text = build(reports, plan)
    except (OSError, KeyError, ReportError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    (reports / "plan.md").write_text(text)
    print(f"wrote {reports / 'plan.md'}")
    if args.page:
        why = replace_block(Path(args.page), "studies", study_list(reports, plan))
        if why:
            print(f"error: {why}", file=sys.stderr)
            return 2
        print(f"rewrote the list of studies of {args.page}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
