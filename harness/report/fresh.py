"""Fresh seeds after selection: the verdicts read only the runs of a confirmation sweep, in rounds.

A study first runs its grid (``study.stage=select``) and each method's setting is chosen on validation.
A confirmation sweep (``study.stage=confirm``) reruns only those settings on seeds the selection never
used, so the test scores the verdicts read carry no selection optimism; its runs are tagged ``stage``
confirm and their ``round``. A pair still undecided may get another round of new seeds, up to the
declared cap (``study.rounds``, K). The error rate stays honest by spending alpha evenly over the K
looks the study declared (Bonferroni over looks as over comparisons): every look tests at
alpha / (family x K), and a pair's verdict is the first look with a full verdict (better, worse, equivalent), or its last look.
That is conservative (a group-sequential boundary such as O'Brien-Fleming would spend less early),
but it needs no assumption about the looks' correlation and reads the same whatever the number of
rounds actually run.
"""

from __future__ import annotations

import pandas as pd

from harness.report.contrast import Contrast, contrast

CONFIRM = "confirm"  # a run's stage tag in a confirmation sweep
DECIDED = ("better", "worse", "equivalent")  # a full verdict; non-inferior may still sharpen with more seeds


def is_fresh(runs: pd.DataFrame) -> pd.Series:
    """The runs of confirmation sweeps (tag stage=confirm); older stores have no such tag: none."""
    if "stage" not in runs:
        return pd.Series(False, index=runs.index)
    return runs["stage"].astype(str).eq(CONFIRM)


def by_round(finished: pd.DataFrame, scores: pd.Series) -> dict[int, dict[str, float]]:
    """A setting's fresh test scores, {round: {seed: score}} (rounds from the runs' ``round`` tag)."""
    rounds = pd.to_numeric(finished.get("round", pd.Series(1, index=finished.index)), errors="coerce").fillna(1).astype(int)
    out: dict[int, dict[str, float]] = {}
    for (r, seed), score in zip(zip(rounds, finished["seed"].astype(str)), scores):
        out.setdefault(int(r), {})[seed] = float(score)
    return out


def upto(rounds: dict[int, dict[str, float]], look: int) -> dict[str, float]:
    """The scores of every round up to ``look``."""
    merged: dict[str, float] = {}
    for r in sorted(rounds):
        if r <= look:
            merged.update(rounds[r])
    return merged


def sequential(
    method: dict[int, dict[str, float]], reference: dict[int, dict[str, float]], mode: str, margin: float, family: int, cap: int
) -> tuple[Contrast, int]:
    """A method against the reference on fresh seeds, look by look over the rounds both ran (each look at
    alpha / (family x cap), so the union bound holds over every look): the first look with a full verdict
    (better, worse, equivalent), else the last look's. Returns (the contrast, its look)."""
    looks = sorted(set(method) & set(reference)) or sorted(set(method) | set(reference))[:1]
    c = None
    for look in looks:
        c = contrast(upto(method, look), upto(reference, look), mode, margin, family * cap)
        if c.verdict in DECIDED:
            return c, look
    assert c is not None, "sequential() needs fresh scores"
    return c, looks[-1]


def versus(
    method: dict[str, float],
    method_rounds: dict[int, dict[str, float]],
    reference: dict[str, float],
    reference_rounds: dict[int, dict[str, float]],
    mode: str,
    margin: float,
    family: int,
    cap: int,
) -> tuple[Contrast, int]:
    """A method's scores against the reference's: look by look on fresh seeds where both were confirmed
    (``sequential``), else one contrast on the scores they have. Returns (the contrast, its look; 0: the
    selection's seeds). The report's verdicts and the claims table both judge a pair with it."""
    if method_rounds and reference_rounds:
        return sequential(method_rounds, reference_rounds, mode, margin, family, cap)
    return contrast(method, reference, mode, margin, family), 0


def seeds_text(seeds: list[str]) -> str:
    """Seeds as a short list: 5-14, or 0, 3, 7."""
    nums = sorted(int(s) for s in seeds if str(s).lstrip("-").isdigit())
    if not nums:
        return ", ".join(sorted(seeds))
    if nums == list(range(nums[0], nums[-1] + 1)) and len(nums) > 2:
        return f"{nums[0]}-{nums[-1]}"
    return ", ".join(map(str, nums))


def caption(runs: pd.DataFrame, cap: int) -> str:
    """What the verdicts read, for the tuned comparison's caption."""
    fresh = is_fresh(runs)
    chosen = seeds_text(list(runs.loc[~fresh, "seed"].dropna().astype(str).unique()))
    if not fresh.any():
        return (
            f"The verdicts read the seeds the selection used ({chosen}): no confirmation sweep has run, so the "
            "selected settings' test scores still carry selection optimism (study.stage=confirm reruns them on fresh seeds)."
        )
    rounds = sorted(pd.to_numeric(runs.loc[fresh, "round"], errors="coerce").dropna().astype(int).unique()) or [1]
    again = seeds_text(list(runs.loc[fresh, "seed"].dropna().astype(str).unique()))
    return (
        f"Selection read seeds {chosen}; the verdicts read only fresh seeds ({again}) of each method's selected setting, "
        f"from {len(rounds)} confirmation round(s) of at most {cap} declared; each look is tested at alpha / "
        f"(comparisons x {cap}), and a pair's verdict is its first look with a full verdict (better, worse, equivalent), else its last."
    )
