"""python -m harness.report.claims [--reports DIR] [--readme README.md]

reports/claims.md from the studies' tuned reports (their tuned.csv and protocol.json) and the map in
reports/claims.yaml of which study settles which claim of ../shared/CLAIMS.md, and how. Every number
in it comes from a report; nothing is typed by hand. With --readme, the block between the README's
``<!-- claims:start -->`` and ``<!-- claims:end -->`` lines is replaced by the same table.
"""

from __future__ import annotations

import argparse
import json
import math
import re
import sys
from pathlib import Path

import pandas as pd
import yaml

from harness.report import ReportError, stats
from harness.report.contrast import contrast, margin_of
from harness.report.fresh import sequential
from harness.report.wording import fmt, interval

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


def compared(a: pd.Series, scores: dict, rounds_of: dict, mode: str, margin: float, family: int, rounds: int):
    """a against scores: on fresh seeds look by look where both sides were confirmed (``rounds_of``: the
    other side's fresh scores by round; each look at alpha / (family x rounds), as the study's report
    does), else on the seeds they have. Returns (contrast, look; 0: the selection's seeds)."""
    mine = a.get("fresh_by_round") or {}
    if mine and rounds_of:
        return sequential(mine, rounds_of, mode, margin, family, rounds)
    return contrast(a["test_by_seed"], scores, mode, margin, family), 0


def matches(problem: str, where: str) -> bool:
    """Each of `where`'s comma-separated parts is one of the problem's parts ("outlier_fraction=0.0"
    matches "task.outlier_fraction=0.0", not "...=0.05"; "jitter=4, max_length=6" needs both)."""
    parts = problem.split(", ")
    return all(any(part == w or part.endswith("." + w) for part in parts) for w in where.split(", "))


def selected_value(setting: str, knob: str) -> float:
    for part in str(setting).split(", "):
        key, _, value = part.partition("=")
        if key == knob:
            return float(value)
    raise ReportError(f"claims map: the selected setting {setting!r} has no {knob}")


# How a primary contrast's verdict decides its claim: written down here, once. A pair's verdict is a's
# against b (harness/report/contrast.py: better, worse, equivalent within the margin, non-inferior, undecided).
RULES: dict[str, dict[str, str]] = {
    "better": {  # a is better than b (the difference test rejects; not shown to lie within the margin)
        "better": "supported",
        "worse": "contradicted",
        "equivalent": "contradicted",  # within the margin: no difference that matters
        "non-inferior": "inconclusive",
        "undecided": "inconclusive",
    },
    "not_worse": {  # a is not worse than b by the margin or more
        "better": "supported",
        "equivalent": "supported",
        "non-inferior": "supported",
        "worse": "contradicted",
        "undecided": "inconclusive",
    },
    "equivalent": {  # a and b differ by less than the margin
        "equivalent": "supported",
        "better": "contradicted",
        "worse": "contradicted",
        "non-inferior": "inconclusive",
        "undecided": "inconclusive",
    },
    # gap_share: a closes at least `fraction` of the gap from b to c, judged per seed as a against the
    # point that fraction of the way from b to c: a better than it -> supported, worse -> contradicted.
    "gap_share": {"better": "supported", "worse": "contradicted"},
    # near (a's test score within value +- tolerance: its one-sided bounds inside -> supported, its two-sided
    # interval wholly outside -> contradicted) and setting_in (a's selected value of a knob inside a range;
    # the selection is one number, with no uncertainty) are judged in check().
}
PAIR_RULES = ("better", "not_worse", "equivalent")
OTHER_RULES = ("gap_share", "near", "setting_in")


def rows_of(tuned: pd.DataFrame, c: dict, method: str) -> pd.Series:
    rows = tuned[tuned["problem"].map(lambda pr: matches(pr, c["where"])) & (tuned["method"] == method)]
    if len(rows) != 1:
        raise ReportError(f"claims map: no single problem matching {c['where']!r} with method {method!r}")
    return rows.iloc[0]


def rule_of(c: dict) -> str:
    rule = c.get("rule") or c.get("expect")
    if rule not in PAIR_RULES + OTHER_RULES:
        raise ReportError(f"claims map: unknown rule {rule!r} (rules: {', '.join(PAIR_RULES + OTHER_RULES)})")
    return rule


def check(tuned: pd.DataFrame, c: dict, family: int = 1, margin: object = None) -> dict:
    """One contrast of a claim, judged by its rule at the family's level (Bonferroni: alpha / family):
    a against b (pairs), a against the point ``fraction`` of the way from b to c (gap_share), a's score
    against a published value (near), a's selected setting against a range (setting_in)."""
    rule = rule_of(c)
    a = rows_of(tuned, c, c["a"])
    out = {**c, "rule": rule, "problem": a["problem"], "metric": a["metric"], "family": family}
    if rule == "setting_in":
        v = selected_value(a["setting"], c["knob"])
        low, high = c["range"]
        return {**out, "value": v, "verdict": "supported" if low <= v <= high else "contradicted"}
    if rule == "near":
        level = stats.ALPHA / family
        scores = list(a["test_by_seed"].values())
        lo1, hi1 = stats.mean_ci(scores, 1 - 2 * level)  # the one-sided bounds (TOST against value +- tolerance)
        lo2, hi2 = stats.mean_ci(scores, 1 - level)
        low, high = c["value"] - c["tolerance"], c["value"] + c["tolerance"]
        verdict = "supported" if low < lo1 and hi1 < high else "contradicted" if hi2 < low or lo2 > high else "inconclusive"
        return {**out, "mean": a["test_mean"], "low": lo2, "high": hi2, "n": a["n"], "verdict": verdict}
    if rule == "gap_share":
        b, to = rows_of(tuned, c, c["b"]), rows_of(tuned, c, c["c"])
        f = float(c["fraction"])
        seeds = set(b["test_by_seed"]) & set(to["test_by_seed"])
        point = {s: (1 - f) * b["test_by_seed"][s] + f * to["test_by_seed"][s] for s in seeds}
        fb, fc = b.get("fresh_by_round") or {}, to.get("fresh_by_round") or {}
        rounds_point = {r: {s: (1 - f) * fb[r][s] + f * fc[r][s] for s in set(fb[r]) & set(fc.get(r, {}))} for r in fb if r in fc}
        d, look = compared(a, point, rounds_point, a["mode"], math.nan, family, tuned.attrs.get("rounds", 1))
        gap = b["test_mean"] - to["test_mean"]
        closed = (b["test_mean"] - a["test_mean"]) / gap if gap else math.nan
        return {
            **out,
            "contrast": d,
            "look": look,
            "closed": closed,
            "verdict": RULES["gap_share"].get(d.verdict, "inconclusive"),
        }
    b = rows_of(tuned, c, c["b"])
    m = margin_of(c.get("margin", margin), b["test_mean"], a["metric"])
    d, look = compared(a, b["test_by_seed"], b.get("fresh_by_round") or {}, a["mode"], m, family, tuned.attrs.get("rounds", 1))
    return {**out, "contrast": d, "look": look, "margin": m, "verdict": RULES[rule].get(d.verdict, "inconclusive")}


def effect(c: dict) -> str:
    if c["rule"] == "setting_in":
        return (
            f"{c['problem']}: {c['a']} selects {c['knob']}={c['value']:g} on validation "
            f"({'inside' if c['verdict'] == 'supported' else 'outside'} [{c['range'][0]:g}, {c['range'][1]:g}])"
        )
    level = f"{100 * (1 - stats.ALPHA / c['family']):.4g}%"
    if c["rule"] == "near":
        return (
            f"{c['problem']}: {c['a']} reaches {c['metric']} {fmt(c['mean'])} {interval(c['low'], c['high'])} "
            f"({level}, n = {c['n']}; the claim: {c['value']:g} +- {c['tolerance']:g})"
        )
    d = c["contrast"]
    level = f"{100 * d.level:.4g}%" + (f", look {c['look']} on fresh seeds" if c.get("look") else "")
    if c["rule"] == "gap_share":
        return (
            f"{c['problem']}: {c['a']} closes {fmt(c['closed'])} of the {c['metric']} gap from {c['b']} to {c['c']}; "
            f"against the point {c['fraction']:g} of the way: gain {fmt(d.gain)} {interval(d.low, d.high)} ({level}, n = {d.n})"
        )
    margin = f"margin +-{fmt(c['margin'])}" if math.isfinite(c["margin"]) else "no margin"
    return (
        f"{c['problem']}: {c['a']} vs {c['b']}: {d.verdict}, gain {fmt(d.gain)} {interval(d.low, d.high)} {c['metric']} "
        f"({level}, {margin}; {d.test}, n = {d.n})"
    )


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
        "`harness/report/claims.py`). A contrast is a's test metric against b's at each method's setting selected on "
        f"validation, paired by seed; its interval and tests are at one level across the table's {family} tested primary "
        f"contrasts (Bonferroni: {100 * (1 - stats.ALPHA / family):.4g}%). Secondary checks are shown and judge nothing. "
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
    p.add_argument("--readme", help="also rewrite the claims block of this README")
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
