"""The claims map (reports/claims.yaml): which study settles which claim of ../shared/CLAIMS.md, by which primary
contrast on each workload, with its margin and rule; read and checked here, with the studies' tuned reports it
names (``load_study``), the claims table's family (``family_of``) and the contrasts a confirmation round still
follows (``open_contrasts``). The table itself: harness/report/claims.py; the rules: harness/report/judge.py."""

from __future__ import annotations

import json
from pathlib import Path

import pandas as pd
import yaml

from harness.report import ReportError
from harness.report.judge import check, rule_of

REPORTS = Path(__file__).resolve().parent.parent.parent / "reports"


def load_map(reports: Path) -> dict:
    """The claims map in ``reports``, checked (one line for a key it does not know)."""
    mapping = yaml.safe_load((reports / "claims.yaml").read_text()) or {}
    check_map(mapping)
    return mapping


def has_report(reports: Path, study: str) -> bool:
    """Whether a study has a tuned report the claims can read (its tuned.csv and protocol.json)."""
    return (reports / study / "tuned.csv").exists() and (reports / study / "protocol.json").exists()


def load_study(reports: Path, study: str) -> tuple[pd.DataFrame, dict] | None:
    folder = reports / study
    if not has_report(reports, study):
        return None
    tuned = pd.read_csv(folder / "tuned.csv")
    tuned["test_by_seed"] = tuned["test_by_seed"].map(lambda s: json.loads(s) if isinstance(s, str) else {})
    proto = json.loads((folder / "protocol.json").read_text())
    tuned.attrs.update(folder=folder, tune=list(proto.get("tune", [])))  # for a response curve (harness/report/curve.py)
    if "fresh_by_round" in tuned:  # a confirmed study: fresh seeds, round by round (harness/report/fresh.py)
        tuned["fresh_by_round"] = tuned["fresh_by_round"].map(
            lambda s: {int(r): v for r, v in json.loads(s).items()} if isinstance(s, str) else {}
        )
        tuned.attrs["rounds"] = int(proto.get("confirmation", {}).get("rounds_declared", 1))
    if "others" in tuned:  # the selected setting's other test metrics, for a contrast that names its `metric`
        tuned["others"] = tuned["others"].map(lambda s: json.loads(s) if isinstance(s, str) else {})
    return tuned, proto


def workloads_of(cid: str, spec: dict) -> list[dict]:
    """A claim's primary contrast on each workload it is tested on: ``primary`` (on the claim's study) and each
    entry of ``workloads`` (a contrast with its own ``study``), each labelled (``workload``, ``real``: real data)."""
    if not isinstance(spec.get("primary"), dict):
        raise ReportError(f"claims map: {cid} declares no primary contrast (primary: {{a, b, where, rule, margin}})")
    out = []
    for i, c in enumerate([spec["primary"], *spec.get("workloads", [])]):
        if not isinstance(c, dict) or (i and not c.get("study")):
            raise ReportError(f"claims map: {cid}'s workloads[{i - 1}] must be a contrast naming its study")
        study = c.get("study") or spec["study"]
        out.append(
            {**c, "study": study, "workload": str(c.get("workload") or study), "real": bool(c.get("real", False))}
            | {"declared": c.get("declared", spec.get("declared"))}
        )
    return out


CLAIM_KEYS = {"claim", "study", "declared", "primary", "workloads", "checks"}
CONTRAST_KEYS = {
    *("workload", "real", "study", "a", "b", "c", "where", "rule", "expect", "margin", "metric", "mode"),
    *("knob", "range", "fraction", "tolerance", "value"),
}


def check_map(mapping: dict) -> None:
    """One line for a key the map does not know: in a YAML flow mapping ({workload: Fashion-MNIST (2,000
    images), ...}) a comma inside an unquoted value silently cuts it into more keys."""
    for cid, spec in mapping.items():
        if not isinstance(spec, dict):
            raise ReportError(f"claims map: {cid} is not a mapping of {', '.join(sorted(CLAIM_KEYS))}")
        unknown = set(spec) - CLAIM_KEYS
        if unknown:
            raise ReportError(
                f"claims map: {cid} has unknown key(s) {', '.join(map(str, sorted(unknown)))}; known: {', '.join(sorted(CLAIM_KEYS))}"
            )
        for c in [spec.get("primary") or {}, *(spec.get("workloads") or []), *(spec.get("checks") or [])]:
            bad = sorted(str(k) for k in c if k not in CONTRAST_KEYS)
            if bad:
                raise ReportError(
                    f"claims map: a contrast of {cid} has unknown key(s) {', '.join(bad)} (a comma inside an "
                    f"unquoted value of a {{...}} entry splits it: quote the value); known: {', '.join(sorted(CONTRAST_KEYS))}"
                )


def family_of(reports: Path, mapping: dict, also: str = "") -> int:
    """The claims table's family: its primary contrasts with a test (every rule but setting_in, a selection with
    no uncertainty) on a workload whose study has a report (``also``: a study counted as if it had one, for a
    confirmation before its first report). Every one is tested at alpha / family (Bonferroni)."""
    works = [w for cid, spec in mapping.items() for w in workloads_of(cid, spec)]
    return max(1, sum(rule_of(w) != "setting_in" and (w["study"] == also or has_report(reports, w["study"])) for w in works))


def still_open(selected: pd.DataFrame, experiment: str, rounds: int, reports: Path = REPORTS) -> dict[str, set[tuple[str, str]]]:
    """The claims whose primary contrast on this study its runs so far leave inconclusive at the claims table's
    level, each with the (problem, method)s of that contrast: {claim id: {(problem, method), ...}}. A confirmation
    round follows them as it follows the study's own open pairs, since a claim may read another metric than the
    study's primary one (minority recall beside macro-F1) and is judged at a stricter level (its family is every
    claim's). More rounds never change the error rate: each look is tested at alpha / (family x declared rounds)
    whatever the reason a round runs. ``selected``: ``protocol.select``'s table (or a study's tuned.csv as
    ``load_study`` reads it); no claims map (a user's own project): none."""
    if not (reports / "claims.yaml").exists():
        return {}
    mapping = load_map(reports)
    family = family_of(reports, mapping, also=experiment)
    tuned = selected.copy()
    tuned.attrs["rounds"] = rounds
    out: dict[str, set[tuple[str, str]]] = {}
    for cid, spec in mapping.items():
        for w in workloads_of(cid, spec):
            if w["study"] != experiment or rule_of(w) in ("setting_in", "good_range"):  # judged on the selection's runs
                continue
            judged = check(tuned, w, family, w.get("margin"))
            if judged["verdict"] == "inconclusive":
                out.setdefault(cid, set()).update((str(judged["problem"]), str(w[k])) for k in ("a", "b", "c") if w.get(k))
    return out


def open_contrasts(selected: pd.DataFrame, experiment: str, rounds: int, reports: Path = REPORTS) -> set[tuple[str, str]]:
    """The (problem, method)s of every claim ``still_open`` on this study: what a later confirmation round reruns
    beside the study's own open pairs."""
    return set().union(*still_open(selected, experiment, rounds, reports).values())
