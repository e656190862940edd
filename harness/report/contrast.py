"""One contrast between a method and its reference: an interval, the tests at a declared margin, and a verdict.

The gain is the method's score minus the reference's, oriented so that a positive gain means the
method is better (for a metric to minimise, the reference's score minus the method's). Paired by
seed when both have the same seeds (at least two), else Welch. A contrast belongs to a family (the
comparisons of one problem with its reference, or a claim's primary contrasts) of ``family`` members,
and everything is at one level: Bonferroni, alpha / family. So the interval and the tests can never
disagree: the two-sided interval at 1 - alpha/family excludes 0 exactly when the difference test
rejects, and the one-sided bounds (the interval at 1 - 2 alpha/family) say equivalence and
non-inferiority exactly when TOST (two one-sided t-tests, as statsmodels' ``ttost_paired``) does.

The verdict, from the method's side:
- ``equivalent``: the gain lies within (-margin, +margin) (TOST rejects both one-sided nulls); said even
  where the difference test also rejects (a real difference smaller than what matters);
- ``better`` / ``worse``: the difference test rejects, and the gain is not shown to be within the margin;
- ``non-inferior``: not worse by the margin or more (the lower one-sided test rejects), nothing else shown;
- ``undecided``: nothing shown; "not told apart at n seeds", which is not "equal".
Without a declared margin only better / worse / undecided can be said.

A difference with no spread (each seed's difference the same: a t statistic would be infinite) gets
the exact sign-flip test (paired) or the exact permutation test (unpaired, each method constant) and
the interval that inverts it: at five pairs a constant difference gives p = 2/2^5 = 0.0625 two-sided,
so no two-sided interval at 95% can bound it (it is reported as unbounded), while one-sided it gives
1/32 = 0.031.

``tests/test_contrast.py`` checks by simulation that the intervals cover at n = 5 and n = 10.
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from harness.report.stats import ALPHA, POWER


@dataclass
class Contrast:
    gain: float  # > 0: the method is better than the reference
    low: float  # two-sided interval of the gain at 1 - alpha/family
    high: float
    lower_bound: float  # one-sided bounds at 1 - alpha/family each (the interval at 1 - 2 alpha/family)
    upper_bound: float
    p: float  # two-sided p of no difference, Bonferroni-adjusted (capped at 1)
    p_equivalent: float  # TOST at the margin, adjusted (nan without a margin)
    p_noninferior: float  # the lower one-sided test at the margin, adjusted (nan without a margin)
    test: str
    n: int
    family: int
    margin: float  # absolute, in the metric's units (nan: none declared)
    seeds_needed: float  # seeds for 80% power to detect a gain of the margin's size at this level (nan: no margin)
    verdict: str  # better | worse | equivalent | non-inferior | undecided | too few seeds

    @property
    def level(self) -> float:
        return 1 - ALPHA / self.family


def contrast(method: dict, reference: dict, mode: str, margin: float = math.nan, family: int = 1) -> Contrast:
    """method, reference: seed -> score; mode: 'max' or 'min'; margin: the smallest gain that matters (> 0)."""
    sign = 1.0 if mode == "max" else -1.0
    seeds = sorted(set(method) & set(reference))
    paired = len(seeds) >= 2 and set(method) == set(reference)
    a_level = ALPHA / family
    if paired:
        d = sign * (np.array([method[s] for s in seeds], float) - np.array([reference[s] for s in seeds], float))
        n, gain = len(d), float(d.mean())
        if _constant(d):
            flips = lambda m: 1 / 2**m  # noqa: E731
            return _exact(gain, n, margin, family, flips(n), flips, "exact sign-flip test by seed (a constant difference)")
        sd = float(np.std(d, ddof=1))
        se, df, test = sd / math.sqrt(n), n - 1, "paired t-test by seed"
    else:
        x = np.array(list(method.values()), float)
        y = np.array(list(reference.values()), float)
        n = min(len(x), len(y))
        gain = sign * float(x.mean() - y.mean()) if len(x) and len(y) else math.nan
        if len(x) < 2 or len(y) < 2:
            nan = math.nan
            return Contrast(
                gain, nan, nan, nan, nan, nan, nan, nan, "too few seeds for a test", n, family, margin, nan, "too few seeds"
            )
        if _constant(x) and _constant(y):
            p_min = 1 / math.comb(len(x) + len(y), len(x))  # only the observed split puts one group's values above the other's
            splits = lambda m: 1 / math.comb(2 * m, m)  # noqa: E731  (m seeds per method)
            return _exact(gain, n, margin, family, p_min, splits, "exact permutation test (each method constant over its seeds)")
        vx, vy = np.var(x, ddof=1) / len(x), np.var(y, ddof=1) / len(y)
        se = math.sqrt(vx + vy)
        df = (vx + vy) ** 2 / (vx**2 / (len(x) - 1) + vy**2 / (len(y) - 1))
        sd, test = math.sqrt((np.var(x, ddof=1) + np.var(y, ddof=1)) / 2), "Welch's t-test"
    from scipy.stats import t

    two = t.ppf(1 - a_level / 2, df) * se
    one = t.ppf(1 - a_level, df) * se
    p = min(1.0, family * 2 * t.sf(abs(gain) / se, df))
    if math.isfinite(margin):
        p_lower = t.sf((gain + margin) / se, df)  # H0: gain <= -margin
        p_upper = t.cdf((gain - margin) / se, df)  # H0: gain >= +margin
        p_eq, p_ni = min(1.0, family * max(p_lower, p_upper)), min(1.0, family * p_lower)
        needed = seeds_for(margin, sd, paired, a_level)
    else:
        p_eq = p_ni = needed = math.nan
    low, high = gain - two, gain + two
    return Contrast(
        gain,
        float(low),
        float(high),
        float(gain - one),
        float(gain + one),
        float(p),
        float(p_eq),
        float(p_ni),
        test,
        n,
        family,
        margin,
        float(needed),
        decide(p, p_eq, p_ni, gain),
    )


def decide(p: float, p_equivalent: float, p_noninferior: float, gain: float) -> str:
    if math.isfinite(p_equivalent) and p_equivalent < ALPHA:
        return "equivalent"
    if math.isfinite(p) and p < ALPHA:
        return "better" if gain > 0 else "worse"
    if math.isfinite(p_noninferior) and p_noninferior < ALPHA:
        return "non-inferior"
    return "undecided"


def _constant(values: np.ndarray) -> bool:
    """No spread beyond floating-point rounding (a t statistic would be infinite or meaningless)."""
    return float(np.ptp(values)) <= 1e-12 * max(1.0, float(np.max(np.abs(values))))


def _exact(
    gain: float, n: int, margin: float, family: int, p_min: float, p_min_of: Callable[[int], float], name: str
) -> Contrast:
    """A contrast with no spread (the gain is ``gain`` whichever way the seeds are shuffled): the exact
    test of each hypothesis about it, whose one-sided p is ``p_min`` (1/2^n sign flips; 1/C(nx + ny, nx)
    splits) where the data lie on the alternative's side, else 1; and the intervals that invert those tests
    (the point ``gain`` where the test can reject at the level, else unbounded). With no spread the power is
    all or nothing: the seeds needed are the fewest m whose exact two-sided test (``p_min_of(m)``) can reject
    at this level at all."""
    a_level = ALPHA / family

    def above(c: float) -> float:  # H0: gain <= c
        return p_min if gain > c and not math.isclose(gain, c, abs_tol=1e-12) else 1.0

    def below(c: float) -> float:  # H0: gain >= c
        return p_min if gain < c and not math.isclose(gain, c, abs_tol=1e-12) else 1.0

    p = min(1.0, family * min(1.0, 2 * min(above(0.0), below(0.0))))
    low, high = (gain, gain) if 2 * p_min <= a_level else (-math.inf, math.inf)
    lower_bound, upper_bound = (gain, gain) if p_min <= a_level else (-math.inf, math.inf)
    if math.isfinite(margin):
        p_eq = min(1.0, family * max(above(-margin), below(margin)))
        p_ni = min(1.0, family * above(-margin))
    else:
        p_eq = p_ni = math.nan
    needed = next((float(m) for m in range(2, 65) if 2 * p_min_of(m) <= a_level), math.inf) if math.isfinite(margin) else math.nan
    return Contrast(
        gain, low, high, lower_bound, upper_bound, p, p_eq, p_ni, name, n, family, margin, needed, decide(p, p_eq, p_ni, gain)
    )


def seeds_for(margin: float, sd: float, paired: bool, alpha: float) -> float:
    """Seeds per method for a two-sided t-test at ``alpha`` to detect a gain of the margin's size with
    80% power, given the seed-to-seed standard deviation (of the differences, when paired)."""
    from statsmodels.stats.power import TTestIndPower, TTestPower

    if not (margin > 0) or not math.isfinite(sd):
        return math.nan
    if sd == 0:
        return 2.0
    size = margin / sd
    with warnings.catch_warnings(record=True):
        warnings.simplefilter("ignore")
        try:
            n = (TTestPower() if paired else TTestIndPower()).solve_power(
                effect_size=size, alpha=alpha, power=POWER, alternative="two-sided"
            )
            n = float(np.asarray(n).ravel()[0])
        except Exception:
            n = math.nan
    if not math.isfinite(n):
        from scipy.stats import norm

        n = (1 if paired else 2) * ((norm.ppf(1 - alpha / 2) + norm.ppf(POWER)) / size) ** 2
    return max(2.0, math.ceil(n))


def margin_of(declared, reference_mean: float, metric: str) -> float:
    """A study's declared margin in the metric's units: a number, 'N%' of the reference's mean, or a
    mapping metric -> either (nan where nothing is declared for the metric)."""
    if isinstance(declared, dict):
        declared = declared.get(metric, declared.get(metric.split("/")[-1]))
    if declared is None:
        return math.nan
    if isinstance(declared, str) and declared.endswith("%"):
        return float(declared[:-1]) / 100 * abs(reference_mean)
    return float(declared)
