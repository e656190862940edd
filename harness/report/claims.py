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
from harness.report.judge import check, effect, rule_of

REPORTS = Path(__file__).resolve().parent.parent.parent / "reports"
CLAIMS_LIST = REPORTS.parent.parent / "shared" / "CLAIMS.md"


def load_study(reports: Path, study: str) -> tuple[pd.DataFrame, dict] | None:
    folder = reports / study
    if not (folder / "tuned.csv").exists() or not (folder / "protocol.json").exists():
        return None
    tuned = pd.read_csv(folder / "tuned.csv")
    tuned["test_by_seed"] = tuned["test_by_seed"].map(lambda s: json.loads(s) if isinstance(s, str) else {})
    proto = json.loads((folder / "protocol.json").read_text())
    if "fresh_by_round" in tuned:  # a confirmed study: fresh seeds, round by round (harness/report/fresh.py)
        tuned["fresh_by_round"] = tuned["fresh_by_round"].map(
            lambda s: {int(r): v for r, v in json.loads(s).items()} if isinstance(s, str) else {}
        )
        tuned.attrs["rounds"] = int(proto.get("confirmation", {}).get("rounds_declared", 1))
    return tuned, proto


def claim_texts() -> dict[str, str]:
    if not CLAIMS_LIST.exists():
        return {}
    return {m.group(1): m.group(2).strip() for m in re.finditer(r"^\| (C\d+) \| (.+?) \|$", CLAIMS_LIST.read_text(), re.M)}


def evidence(proto: dict) -> str:
    return (
        f"{proto['finished']} runs, {', '.join(map(str, proto['epochs']))} epochs, {'/'.join(map(str, proto['seeds']))} seeds "
        f"per method; compares {', '.join(proto['compare'])}, tunes {', '.join(proto['tune']) or 'nothing'} per method "
        f"(selected on validation); {proto['train_seconds'] / 60:.1f} min of training"
        + (f"; sweep overrides: {proto['overrides']}" if proto.get("overrides") else "")
    )


def primary_text(p: dict) -> str:
    rule = rule_of(p)
    if rule == "setting_in":
        return f"{p['a']}'s {p['knob']} in [{p['range'][0]:g}, {p['range'][1]:g}]"
    if rule == "near":
        return f"{p['a']} within {p['value']:g} +- {p['tolerance']:g}"
    if rule == "gap_share":
        return f"{p['a']} closes at least {p['fraction']:g} of the gap from {p['b']} to {p['c']}"
    return f"{p['a']} {rule.replace('_', ' ')} vs {p['b']}, margin {p.get('margin', 'none')}"


def post_hoc(spec: dict, protos: list[dict]) -> str:
    """When the claim's contrast was declared against when its studies' reports were made."""
    declared = str(spec.get("declared", ""))
    made = max((str(p.get("generated", "")) for p in protos), default="")
    if not declared:
        return "declared: no date"
    if made and declared[:10] > made[:10]:
        return f"declared {declared}, after its runs (reported {made[:10]}): post hoc"
    return f"declared {declared}, before its runs"


def build(reports: Path, mapping: dict) -> tuple[str, list[dict]]:
    """The claims table. Each claim is judged by its one primary contrast (``primary`` in claims.yaml,
    with its margin and rule); the family is the set of primary contrasts with a test, so every claim's
    test is at alpha / family (Bonferroni). Secondary checks are shown, each at its claim's own family
    level, and judge nothing."""
    texts = claim_texts()
    ready: dict[str, tuple[dict, dict[str, tuple[pd.DataFrame, dict]]]] = {}
    rows: dict[str, dict] = {}
    for cid in sorted(set(texts) | set(mapping), key=lambda k: int(k[1:])):
        spec = mapping.get(cid)
        text = texts.get(cid) or (spec or {}).get("claim", "")
        row = {"id": cid, "claim": text, "study": "none yet", "verdict": "not studied", "primary contrast": "", "effect": ""}
        rows[cid] = row | {"evidence": ""}
        if spec is None:
            continue
        if not isinstance(spec.get("primary"), dict):
            raise ReportError(f"claims map: {cid} declares no primary contrast (primary: {{a, b, where, rule, margin}})")
        checks = [spec["primary"], *spec.get("checks", [])]
        studies = list(dict.fromkeys([spec["study"]] + [c["study"] for c in checks if c.get("study")]))
        loaded = {name: load_study(reports, name) for name in studies}
        missing = [name for name, got in loaded.items() if got is None]
        rows[cid].update(study=", ".join(studies), **{"primary contrast": primary_text(spec["primary"])})
        if missing:
            rows[cid].update(
                verdict="not run with the protocol yet", evidence="; ".join(f"reports/{m}/ has no tuned.csv" for m in missing)
            )
            continue
        ready[cid] = (spec, {name: got for name, got in loaded.items() if got is not None})
    family = max(1, sum(rule_of(spec["primary"]) != "setting_in" for spec, _ in ready.values()))
    for cid, (spec, studies_of) in ready.items():

        def table_of(c: dict, spec=spec, studies_of=studies_of) -> pd.DataFrame:
            return studies_of[c.get("study") or spec["study"]][0]

        primary = check(table_of(spec["primary"]), spec["primary"], family, spec["primary"].get("margin"))
        secondary = spec.get("checks", [])
        inner = max(1, sum(rule_of(c) != "setting_in" for c in secondary))
        others = [check(table_of(c), c, inner, spec["primary"].get("margin")) for c in secondary]
        rows[cid].update(
            verdict=primary["verdict"],
            effect=effect(primary) + "".join(f"; secondary: {effect(c)}" for c in others),
            evidence="; ".join(
                (f"{name}: " if len(studies_of) > 1 else "") + evidence(proto) for name, (_, proto) in studies_of.items()
            )
            + f"; {post_hoc(spec, [proto for _, proto in studies_of.values()])}",
        )
    table = pd.DataFrame(list(rows.values()))
    lines = [
        "# Claims and their verdicts",
        "",
        "Generated by `python -m harness.report.claims` from the studies' tuned reports (`reports/*/tuned.csv`) and the map "
        "in `reports/claims.yaml`; not typed by hand. Each claim is judged by its one primary contrast, declared in the map "
        "with its margin and its rule (the rules and how a contrast's verdict decides a claim: `RULES` in "
        "`harness/report/judge.py`). A contrast is a's test metric against b's at each method's setting selected on "
        f"validation, paired by seed; its interval and tests are at one level across the table's {family} tested primary "
        f"contrasts (Bonferroni: {100 * (1 - stats.ALPHA / family):.4g}%; for a study confirmed on fresh seeds, only those "
        "seeds, look by look at that level divided by its declared rounds). Secondary checks are shown and judge nothing. "
        "A margin declared after a study's runs is marked post hoc.",
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
        readme = Path(args.readme)
        body = readme.read_text()
        short = pd.DataFrame([{k: r[k] for k in ("id", "claim", "study", "verdict")} for r in rows]).to_markdown(index=False)
        new, n = re.subn(
            r"(<!-- claims:start -->\n).*?(<!-- claims:end -->)",
            lambda m: m.group(1) + short + "\n" + m.group(2),
            body,
            flags=re.S,
        )
        if not n:
            print(f"error: {readme} has no <!-- claims:start --> ... <!-- claims:end --> block", file=sys.stderr)
            return 2
        readme.write_text(new)
        print(f"rewrote the claims block of {readme}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
