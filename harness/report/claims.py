"""python -m harness.report.claims [--reports DIR] [--page docs/results.md]

reports/claims.md from the studies' tuned reports (their tuned.csv and protocol.json) and the map in
reports/claims.yaml of which study settles which claim of ../shared/CLAIMS.md, and how. Every number
in it comes from a report; nothing is typed by hand. With --page (or --readme), the block between the page's
``<!-- claims:start -->`` and ``<!-- claims:end -->`` lines is replaced by the same table.
"""

from __future__ import annotations

import argparse
import json
import re
import sys
from pathlib import Path

import pandas as pd
import yaml

from harness.report import ReportError, stats
from harness.report.judge import OVERALL_RULE, Unconfirmed, check, effect, overall, rule_of
from harness.report.pages import replace_block

REPORTS = Path(__file__).resolve().parent.parent.parent / "reports"
CLAIMS_LIST = REPORTS.parent.parent / "shared" / "CLAIMS.md"


def load_study(reports: Path, study: str) -> tuple[pd.DataFrame, dict] | None:
    folder = reports / study
    if not (folder / "tuned.csv").exists() or not (folder / "protocol.json").exists():
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


def claim_texts() -> dict[str, str]:
    if not CLAIMS_LIST.exists():
        return {}
    return {m.group(1): m.group(2).strip() for m in re.finditer(r"^\| (C\d+) \| (.+?) \|$", CLAIMS_LIST.read_text(), re.M)}


def evidence(proto: dict) -> str:
    return (
        f"{proto['finished']} runs, "
        + (
            f"{', '.join(map(str, proto['steps']))} optimizer steps"
            if proto.get("steps")
            else f"{', '.join(map(str, proto['epochs']))} epochs"
        )
        + f", {'/'.join(map(str, proto['seeds']))} seeds "
        f"per method; compares {', '.join(proto['compare'])}, tunes {', '.join(proto['tune']) or 'nothing'} per method "
        f"(selected on validation); {proto['train_seconds'] / 60:.1f} min of training"
        + (f"; sweep overrides: {proto['overrides']}" if proto.get("overrides") else "")
    )


def primary_text(p: dict) -> str:
    rule = rule_of(p)
    if rule == "setting_in":
        return f"{p['a']}'s {p['knob']} in [{p['range'][0]:g}, {p['range'][1]:g}]"
    if rule == "good_range":
        return f"every {p['knob']} of {p['a']}'s grid in [{p['range'][0]:g}, {p['range'][1]:g}] within {p['margin']} of its best"
    if rule == "near":
        return f"{p['a']} within {p['value']:g} +- {p['tolerance']:g}"
    if rule == "gap_share":
        return f"{p['a']} closes at least {p['fraction']:g} of the gap from {p['b']} to {p['c']}"
    if rule == "drop":
        return f"{p['a']}'s best epoch better than its last, margin {p.get('margin', 'none')}"
    on = f" on {p['metric']}" if p.get("metric") else ""
    return f"{p['a']} {rule.replace('_', ' ')} vs {p['b']}{on}, margin {p.get('margin', 'none')}"


def post_hoc(declared: object, protos: list[dict]) -> str:
    """When a contrast was declared against when its studies' reports were made."""
    declared = str(declared or "")
    made = max((str(p.get("generated", "")) for p in protos), default="")
    if not declared:
        return "declared: no date"
    n = 16 if len(declared) >= 16 and len(made) >= 16 else 10  # to the minute where both say the time, else the day
    if made and declared[:n] > made[:n]:
        return f"declared {declared}, after its runs (reported {made[:n]}): post hoc"
    return f"declared {declared}, before its runs"


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

    def reported(name: str) -> bool:
        folder = reports / name
        return name == also or ((folder / "tuned.csv").exists() and (folder / "protocol.json").exists())

    works = [w for cid, spec in mapping.items() for w in workloads_of(cid, spec)]
    return max(1, sum(rule_of(w) != "setting_in" and reported(w["study"]) for w in works))


def open_contrasts(selected: pd.DataFrame, experiment: str, rounds: int, reports: Path = REPORTS) -> set[tuple[str, str]]:
    """The (problem, method)s of the claims' primary contrasts on this study that its runs so far leave
    inconclusive at the claims table's level: a confirmation round follows them as it follows the study's own
    open pairs, since a claim may read another metric than the study's primary one (minority recall beside
    macro-F1) and is judged at a stricter level (its family is every claim's). More rounds never change the error
    rate: each look is tested at alpha / (family x declared rounds) whatever the reason a round runs. ``selected``:
    ``protocol.select``'s table; no claims map (a user's own project): none."""
    path = reports / "claims.yaml"
    if not path.exists():
        return set()
    mapping = yaml.safe_load(path.read_text()) or {}
    check_map(mapping)
    family = family_of(reports, mapping, also=experiment)
    tuned = selected.copy()
    tuned.attrs["rounds"] = rounds
    out: set[tuple[str, str]] = set()
    for cid, spec in mapping.items():
        for w in workloads_of(cid, spec):
            if w["study"] != experiment or rule_of(w) in ("setting_in", "good_range"):  # judged on the selection's runs
                continue
            judged = check(tuned, w, family, w.get("margin"))
            if judged["verdict"] == "inconclusive":
                out |= {(str(judged["problem"]), str(w[k])) for k in ("a", "b", "c") if w.get(k)}
    return out


def build(reports: Path, mapping: dict) -> tuple[str, list[dict]]:
    """The claims table. Each claim is judged by its primary contrast on each workload it is tested on
    (``primary`` and ``workloads`` in claims.yaml, each with its margin and rule); ``judge.overall`` decides the
    claim from the workloads' verdicts. The family is the set of primary contrasts with a test, across all claims
    and workloads, so every one is tested at alpha / family (Bonferroni). Secondary checks are shown, each at its
    claim's own family level, and judge nothing."""
    check_map(mapping)
    texts = claim_texts()
    loaded: dict[str, tuple[pd.DataFrame, dict] | None] = {}

    def study(name: str) -> tuple[pd.DataFrame, dict] | None:
        if name not in loaded:
            loaded[name] = load_study(reports, name)
        return loaded[name]

    ready: dict[str, tuple[dict, list[dict]]] = {}
    rows: dict[str, dict] = {}
    for cid in sorted(set(texts) | set(mapping), key=lambda k: int(k[1:])):
        spec = mapping.get(cid)
        text = texts.get(cid) or (spec or {}).get("claim", "")
        row = {"id": cid, "claim": text, "study": "none yet", "verdict": "not studied", "workloads": "", "primary contrast": ""}
        rows[cid] = row | {"effect": "", "evidence": ""}
        if spec is None:
            continue
        works = workloads_of(cid, spec)
        names = list(dict.fromkeys([w["study"] for w in works] + [c["study"] for c in spec.get("checks", []) if c.get("study")]))
        rows[cid].update(study=", ".join(names), **{"primary contrast": primary_text(works[0])})
        for name in names:  # a check may name a study no workload uses: loaded too, or its checks would vanish
            study(name)
        run = [w for w in works if study(w["study"]) is not None]
        if not run:
            missing = [m for m in names if study(m) is None]
            rows[cid].update(
                verdict="not run with the protocol yet", evidence="; ".join(f"reports/{m}/ has no tuned.csv" for m in missing)
            )
            continue
        ready[cid] = (spec, works)
    family = family_of(reports, mapping)
    have = {name: got for name, got in loaded.items() if got is not None}

    def assess(c: dict, study: str, family: int, margin: object) -> dict | None:
        """A contrast judged, or None where its study has no report yet or waits for a confirmation on fresh seeds."""
        got = have.get(c.get("study") or study)
        try:
            return None if got is None else check(got[0], c, family, margin)
        except Unconfirmed:
            return None

    for cid, (spec, works) in ready.items():
        judged = [
            j | {"workload": w["workload"], "real": w["real"]} if (j := assess(w, w["study"], family, w.get("margin"))) else None
            for w in works
        ]
        verdict, why = (
            overall([(j["verdict"], j["real"]) for j in judged if j]) if any(judged) else ("not run with the protocol yet", "")
        )
        done = sum(j is not None for j in judged)
        if 0 < done < len(works):  # the verdict reads only the workloads judged so far: say so
            why = "; ".join(x for x in (why, f"{done} of {len(works)} workloads judged") if x)
        secondary = [c for c in spec.get("checks", []) if (c.get("study") or spec["study"]) in have]
        inner = max(1, sum(rule_of(c) != "setting_in" for c in secondary))
        others = [j for c in secondary if (j := assess(c, spec["study"], inner, spec["primary"].get("margin")))]
        label = lambda w: w["workload"] + (" (real data)" if w["real"] else "")  # noqa: E731
        many = len(works) > 1
        used = list(dict.fromkeys(w["study"] for w in works if w["study"] in have))
        rows[cid].update(
            verdict=verdict,
            workloads="; ".join(
                f"{label(w)}: {j['verdict'] if j else 'not run yet' if w['study'] not in have else 'awaits its rerun on fresh seeds'}"
                for w, j in zip(works, judged, strict=True)
            )
            + (f" ({why})" if why else ""),
            effect="; ".join(
                [(f"[{j['workload']}] " if many else "") + effect(j) for j in judged if j]
                + [f"secondary: {effect(c)}" for c in others]
            ),
            evidence="; ".join((f"{name}: " if len(used) > 1 else "") + evidence(have[name][1]) for name in used)
            + "; "
            + "; ".join(
                (f"[{w['workload']}] " if many else "") + post_hoc(w["declared"], [have[w["study"]][1]])
                for w in works
                if w["study"] in have
            ),
        )
    table = pd.DataFrame(list(rows.values()))
    lines = [
        "# Claims and their verdicts",
        "",
        "Generated by `python -m harness.report.claims` from the studies' tuned reports (`reports/*/tuned.csv`) and the map "
        "in `reports/claims.yaml`; not typed by hand. Each claim is judged by its primary contrast on each workload it is "
        "tested on, declared in the map with its margin and its rule (the rules and how a contrast's verdict decides a "
        "claim: `RULES` in `harness/report/judge.py`). A contrast is a's test metric against b's at each method's setting "
        "selected on validation, paired by seed; its interval and tests are at one level across the table's "
        f"{family} tested primary contrasts (Bonferroni: {100 * (1 - stats.ALPHA / family):.4g}%; for a study confirmed on "
        "fresh seeds, only those seeds, look by look at that level divided by its declared rounds). "
        f"Workloads that disagree: {OVERALL_RULE} Secondary checks are shown and judge nothing. A margin declared after a "
        "study's runs is marked post hoc.",
        "",
        table.to_markdown(index=False),
        "",
    ]
    return "\n".join(lines), list(rows.values())


def main(argv=None) -> int:
    p = argparse.ArgumentParser(
        prog="python -m harness.report.claims", description="reports/claims.md from the studies' reports."
    )
    p.add_argument("--reports", default=str(REPORTS), help="folder holding the studies' reports and claims.yaml")
    p.add_argument("--page", "--readme", dest="readme", help="also rewrite the claims block of this page (docs/results.md)")
    args = p.parse_args(argv)
    reports = Path(args.reports)
    try:
        mapping = yaml.safe_load((reports / "claims.yaml").read_text()) or {}
        text, rows = build(reports, mapping)
    except (OSError, ReportError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    (reports / "claims.md").write_text(text)
    print(
        f"wrote {reports / 'claims.md'}: "
        + ", ".join(f"{v} {k}" for k, v in pd.Series([r["verdict"] for r in rows]).value_counts().items())
    )
    if args.readme:
        short = pd.DataFrame([{k: r[k] for k in ("id", "claim", "verdict", "workloads")} for r in rows]).to_markdown(index=False)
        why = replace_block(Path(args.readme), "claims", short)
        if why:
            print(f"error: {why}", file=sys.stderr)
            return 2
        print(f"rewrote the claims block of {args.readme}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
