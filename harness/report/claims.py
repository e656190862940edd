"""python -m harness.report.claims [--reports DIR] [--page docs/results.md]

reports/claims.md from the studies' tuned reports (their tuned.csv and protocol.json) and the map in
reports/claims.yaml of which study settles which claim of ../shared/CLAIMS.md, and how. Every number
in it comes from a report; nothing is typed by hand. With --page (or --readme), the block between the page's
``<!-- claims:start -->`` and ``<!-- claims:end -->`` lines is replaced by the same table.
"""

from __future__ import annotations

import argparse
import re
import sys
from pathlib import Path

import pandas as pd
import yaml

from harness.report import ReportError, stats
from harness.report.claimmap import REPORTS, check_map, family_of, load_study, workloads_of
from harness.report.judge import OVERALL_RULE, Unconfirmed, check, effect, overall, rule_of
from harness.report.pages import replace_block

CLAIMS_LIST = REPORTS.parent.parent / "shared" / "CLAIMS.md"


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
        + (f"; newest sweep: {shown_overrides(proto['overrides'])}" if proto.get("overrides") else "")
    )


def shown_overrides(overrides: str) -> str:
    """A sweep's command-line overrides as the evidence column shows them: the experiment, the stage, the seeds and
    every knob that changes a result, without those that change none (where the data and the store are, threads,
    progress, the launcher: ``declaration.changes_results``), which name one machine's paths."""
    from harness.report.declaration import changes_results

    def kept(key: str) -> bool:
        return key.lstrip("+~") in ("experiment", "seed", "study.stage") or changes_results(key)

    return " ".join(t for t in overrides.split() if kept(t.split("=", 1)[0]))


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
        names = list(
            dict.fromkeys([w["study"] for w in works] + [c.get("study") or spec["study"] for c in spec.get("checks", [])])
        )
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
        # a check in a study no workload reads names it: its cell (jitter=4) does not say which study it is from
        own = {w["study"] for w in works} | {spec["study"]}
        others = [
            (f" ({c['study']})" if c.get("study") and c["study"] not in own else "", j)
            for c in secondary
            if (j := assess(c, spec["study"], inner, spec["primary"].get("margin")))
        ]
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
                + [f"secondary{source}: {effect(j)}" for source, j in others]
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
