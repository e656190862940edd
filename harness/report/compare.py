"""python -m harness.report.compare REPORT_A REPORT_B [--out FILE]

Two tuned studies of the same methods side by side (for example a grid and a search at the same
budget): each method's selected setting and test metric in both, and B - A, paired by seed where
both ran the same seeds, with a 95% Student's t interval. Reads the reports' tuned.csv. Where a study
was confirmed on fresh seeds the other never ran, the pair reads both studies' selection seeds (the
selected setting's test scores on the seeds it was selected on: ``selection_by_seed``), and says so.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np
import pandas as pd

from harness.report.stats import mean_ci


def load(folder: Path) -> pd.DataFrame:
    path = folder / "tuned.csv"
    if not path.exists():
        raise SystemExit(f"error: {path} does not exist (a report of a declared study writes it)")
    return pd.read_csv(path)


def paired_difference(a: dict, b: dict) -> tuple[float, float, float, int]:
    """Mean of b - a over the seeds both have, and its 95% Student's t interval (the reports' own)."""
    seeds = sorted(set(a) & set(b))
    d = np.array([b[s] - a[s] for s in seeds])
    low, high = mean_ci(d)
    return (float(d.mean()) if len(d) else float("nan")), low, high, len(d)


def by_seed(row: pd.Series, column: str) -> dict:
    value = row.get(column)
    return json.loads(value) if isinstance(value, str) else {}


def scores(ra: pd.Series, rb: pd.Series) -> tuple[dict, dict, str]:
    """The two rows' test scores by seed to pair: the reported ones where they share seeds, else each study's
    selection seeds (a study confirmed on fresh seeds the other never ran), with a note saying which."""
    a, b = by_seed(ra, "test_by_seed"), by_seed(rb, "test_by_seed")
    if set(a) & set(b):
        return a, b, ""
    a, b = by_seed(ra, "selection_by_seed") or a, by_seed(rb, "selection_by_seed") or b
    return a, b, " (on the seeds both selected on)" if set(a) & set(b) else ""


def compare(a: pd.DataFrame, b: pd.DataFrame, name_a: str, name_b: str) -> str:
    rows = []
    for _, ra in a.iterrows():
        match = b[(b.problem == ra.problem) & (b.method == ra.method)]
        if match.empty:
            continue
        rb = match.iloc[0]
        sa, sb, on = scores(ra, rb)
        diff, low, high, n = paired_difference(sa, sb)
        rows.append(
            {
                "problem": ra.problem,
                "method": ra.method,
                f"{name_a}: selected": ra.setting,
                f"{name_a}: {ra.metric}": f"{ra.test_mean:.4f} [{ra.ci95_low:.4f}, {ra.ci95_high:.4f}]",
                f"{name_b}: selected": rb.setting,
                f"{name_b}: {rb.metric}": f"{rb.test_mean:.4f} [{rb.ci95_low:.4f}, {rb.ci95_high:.4f}]",
                f"{name_b} - {name_a} (paired by seed)": f"{diff:+.4f} [{low:+.4f}, {high:+.4f}], n = {n}{on}",
            }
        )
    if not rows:
        raise SystemExit(f"error: {name_a} and {name_b} share no (problem, method)")
    return pd.DataFrame(rows).to_markdown(index=False)


def main(argv=None) -> int:
    p = argparse.ArgumentParser(prog="python -m harness.report.compare", description=__doc__.split("\n\n")[1])
    p.add_argument("a", type=Path, help="a report folder (its tuned.csv)")
    p.add_argument("b", type=Path, help="another report folder")
    p.add_argument("--out", type=Path, help="also write the table here (markdown)")
    args = p.parse_args(argv)
    table = compare(load(args.a), load(args.b), args.a.name, args.b.name)
    print(table)
    if args.out:
        args.out.write_text(
            f"# {args.b.name} against {args.a.name}\n\n`python -m harness.report.compare {args.a} {args.b}`\n\n"
            f"Test metric at each study's selected setting (selected on validation), mean and 95% Student's t "
            f"interval over the seeds each study reports (a confirmed study's fresh seeds); the difference is paired "
            f"by seed, on the seeds both selected on where one study was confirmed on seeds the other never ran.\n\n{table}\n"
        )
        print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
