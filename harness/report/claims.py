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
from harness.report.protocol import fmt

REPORTS = Path(__file__).resolve().parent.parent.parent / "reports"
CLAIMS_LIST = REPORTS.parent.parent / "shared" / "CLAIMS.md"


def load_study(reports: Path, study: str) -> tuple[pd.DataFrame, dict] | None:
    folder = reports / study
    if not (folder / "tuned.csv").exists() or not (folder / "protocol.json").exists():
        return None
    tuned = pd.read_csv(folder / "tuned.csv")
    tuned["test_by_seed"] = tuned["test_by_seed"].map(lambda s: json.loads(s) if isinstance(s, str) else {})
    return tuned, json.loads((folder / "protocol.json").read_text())


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


def check(tuned: pd.DataFrame, c: dict) -> dict:
    """One check: the a-b difference on one problem, from the per-seed test scores of the selected
    settings; or (expect: setting_in) whether a's selected value of a knob lies in a range."""
    rows = tuned[tuned["problem"].map(lambda pr: matches(pr, c["where"]))]
    if c["expect"] in ("setting_in", "near"):
        a = rows[rows["method"] == c["a"]]
        if len(a) != 1:
            raise ReportError(f"claims map: no single problem matching {c['where']!r} with method {c['a']!r}")
        a = a.iloc[0]
        if c["expect"] == "setting_in":
            v = selected_value(a["setting"], c["knob"])
            low, high = c["range"]
            return {
                **c,
                "problem": a["problem"],
                "value": v,
                "holds": low <= v <= high,
                "against": not low <= v <= high,
                "p": math.nan,
            }
        low, high = (
            c["value"] - c["tolerance"],
            c["value"] + c["tolerance"],
        )  # near: the test score's interval vs value +- tolerance
        return {
            **c,
            "problem": a["problem"],
            "metric": a["metric"],
            "mean": a["test_mean"],
            "low": a["ci95_low"],
            "high": a["ci95_high"],
            "n": a["n"],
            "holds": low <= a["ci95_low"] and a["ci95_high"] <= high,
            "against": a["ci95_high"] < low or a["ci95_low"] > high,
            "p": math.nan,
        }
    a, b = rows[rows["method"] == c["a"]], rows[rows["method"] == c["b"]]
    if len(a) != 1 or len(b) != 1:
        raise ReportError(f"claims map: no single problem matching {c['where']!r} with methods {c['a']!r} and {c['b']!r}")
    a, b = a.iloc[0], b.iloc[0]
    d = stats.compare(a["test_by_seed"], b["test_by_seed"])
    sign = 1 if a["mode"] == "max" else -1  # > 0: a better
    return {
        **c,
        "problem": a["problem"],
        "metric": a["metric"],
        "diff": d.diff,
        "low": d.low,
        "high": d.high,
        "p": d.p,
        "test": d.test,
        "n": d.n,
        "a_better": sign * d.diff > 0,
        "a_setting": a["setting"],
        "b_setting": b["setting"],
    }


def judge(checks: list[dict]) -> str:
    ok, against = True, False
    for c in checks:
        if c["expect"] in ("setting_in", "near"):
            ok &= c["holds"]
            against |= c["against"]
            continue
        significant = math.isfinite(c["p_holm"]) and c["p_holm"] < stats.ALPHA
        if c["expect"] == "better":
            ok &= significant and c["a_better"]
            against |= significant and not c["a_better"]
        else:  # not_worse
            worse = significant and not c["a_better"]
            ok &= not worse
            against |= worse
    return "contradicted" if against else ("supported" if ok else "inconclusive")


def effect(c: dict) -> str:
    if c["expect"] == "setting_in":
        return (
            f"{c['problem']}: {c['a']} selects {c['knob']}={c['value']:g} on validation "
            f"({'inside' if c['holds'] else 'outside'} [{c['range'][0]:g}, {c['range'][1]:g}])"
        )
    if c["expect"] == "near":
        return (
            f"{c['problem']}: {c['a']} reaches {c['metric']} {fmt(c['mean'])} [{fmt(c['low'])}, {fmt(c['high'])}] "
            f"(n = {c['n']}; the claim: {c['value']:g} +- {c['tolerance']:g})"
        )
    return (
        f"{c['problem']}: {c['a']} - {c['b']} = {fmt(c['diff'])} [{fmt(c['low'])}, {fmt(c['high'])}] {c['metric']} "
        f"(p = {c['p_holm']:.2g} Holm, {c['test']}, n = {c['n']})"
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


def build(reports: Path, mapping: dict) -> tuple[str, list[dict]]:
    texts = claim_texts()
    rows = []
    for cid in sorted(set(texts) | set(mapping), key=lambda k: int(k[1:])):
        spec = mapping.get(cid)
        text = texts.get(cid) or (spec or {}).get("claim", "")
        if spec is None:
            rows.append({"id": cid, "claim": text, "study": "none yet", "verdict": "not studied", "effect": "", "evidence": ""})
            continue
        studies = list(dict.fromkeys([spec["study"]] + [c["study"] for c in spec["checks"] if c.get("study")]))
        loaded = {name: load_study(reports, name) for name in studies}
        missing = [name for name, got in loaded.items() if got is None]
        if missing:
            rows.append(
                {
                    "id": cid,
                    "claim": text,
                    "study": ", ".join(studies),
                    "verdict": "not run with the protocol yet",
                    "effect": "",
                    "evidence": "; ".join(f"reports/{m}/ has no tuned.csv" for m in missing),
                }
            )
            continue
        checks = [check(loaded[c.get("study") or spec["study"]][0], c) for c in spec["checks"]]
        for c, p in zip(checks, stats.holm([c["p"] for c in checks])):
            c["p_holm"] = p
        rows.append(
            {
                "id": cid,
                "claim": text,
                "study": ", ".join(studies),
                "verdict": judge(checks),
                "effect": "; ".join(effect(c) for c in checks),
                "evidence": "; ".join((f"{name}: " if len(studies) > 1 else "") + evidence(loaded[name][1]) for name in studies),
            }
        )
    table = pd.DataFrame(rows)
    lines = [
        "# Claims and their verdicts",
        "",
        "Generated by `python -m harness.report.claims` from the studies' tuned reports (`reports/*/tuned.csv`) and the map "
        "in `reports/claims.yaml`; not typed by hand. A difference is a - b of the test metric at each method's setting "
        "selected on validation, with a 95% bootstrap interval over seeds and a p-value Holm-corrected over the claim's checks.",
        "",
        table.to_markdown(index=False),
        "",
    ]
    return "\n".join(lines), rows


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
