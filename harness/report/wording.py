"""A comparison with the reference in words: a verdict as a sentence (findings) or a table cell, and the
verdicts of a problem joined into one clause list."""

from __future__ import annotations

import math

import pandas as pd

from harness.report.contrast import Contrast


def fmt(v: float) -> str:
    return "n/a" if v is None or not math.isfinite(v) else f"{v:.4g}"


def interval(low: float, high: float) -> str:
    return "[unbounded]" if math.isinf(low) or math.isinf(high) else f"[{fmt(low)}, {fmt(high)}]"


def verdict(top: pd.Series, r: pd.Series, c: Contrast | None, short: bool = False, rounds: int = 1) -> str:
    """The comparison with the reference as a sentence (findings), or short for a table's row that names the method."""
    if r["rank"] == 1:
        return "reference (best on validation)" if r["n"] else "nothing finished"
    if c is None:
        return "nothing finished" if not r["n"] else "not compared"
    if c.verdict == "too few seeds":
        return f"{c.test}: n = {c.n}" if short else f"{r['method']}: {c.test} (n = {c.n})"
    look = int(r.get("look") or 0)
    if look:  # fresh seeds, look by look: the family is the comparisons times the declared looks
        level = f"{100 * c.level:.4g}%, Bonferroni over {c.family // rounds} comparison(s) x {rounds} look(s); look {look}, fresh seeds"
    else:
        level = f"{100 * c.level:.4g}%" + (f", Bonferroni over {c.family}" if c.family > 1 else "")
    gain = f"{fmt(c.gain)} {interval(c.low, c.high)}"
    at = f"n = {c.n}, {c.test}"
    margin = f"+-{fmt(c.margin)}"
    if c.verdict == "equivalent":
        what = f"equivalent to the reference within {margin}: gain {fmt(c.gain)}, bounds {interval(c.lower_bound, c.upper_bound)}"
        tail = f"TOST p = {c.p_equivalent:.2g}; {at}"
    elif c.verdict in ("better", "worse"):
        what = f"{c.verdict} than the reference: gain {gain}"
        tail = f"p = {c.p:.2g}; {at}"
    elif c.verdict == "non-inferior":
        what = f"not worse than the reference by {fmt(c.margin)} or more: gain {fmt(c.gain)}, lower bound {fmt(c.lower_bound)}"
        tail = f"p = {c.p_noninferior:.2g}; {at}"
    else:
        need = (
            "no margin declared"
            if not math.isfinite(c.seeds_needed)
            else "over 1,000 seeds to detect a gain of the margin's size"
            if c.seeds_needed > 1000
            else f"about {int(c.seeds_needed)} seeds to detect a gain of the margin's size ({margin}) at 80% power"
        )
        what = f"not told apart from the reference at n = {c.n}: gain {gain}"
        tail = f"p = {c.p:.2g}; undecided, not equal; {need}"
    if short:
        return f"{what} ({level}; {tail})"
    return f"{r['method']} vs {top['method']}: {what} ({level}; {tail})"


def join_verdicts(items: list[str]) -> str:
    """The verdicts as one clause list; methods that share an untestable verdict ("too few seeds for a
    test") are named together, instead of the same clause once per method."""
    shared: dict[str, list[str]] = {}
    order: list[str] = []
    for v in items:
        method, sep, tail = v.partition(": ")
        if sep and tail.startswith("too few seeds"):
            if tail not in shared:
                shared[tail] = []
                order.append("\0" + tail)
            shared[tail].append(method)
        else:
            order.append(v)
    return "; ".join(", ".join(shared[v[1:]]) + ": " + v[1:] if v.startswith("\0") else v for v in order)
