"""The statistics of a report: intervals over seeds, differences between methods and their tests,
the seeds a difference would need, and the expected best score of a tuning budget.

scipy does the bootstrap and the t-tests, statsmodels the Holm correction and the power analysis;
what is written here is only the glue and the expected-maximum formula of Dodge et al. (2019).
Every random draw is seeded, so a report is the same each time it is made from the same store.
"""

from __future__ import annotations

import math
import warnings
from dataclasses import dataclass

import numpy as np

RESAMPLES = 10_000
ALPHA = 0.05
POWER = 0.8


def rng() -> np.random.Generator:
    return np.random.default_rng(0)


def bootstrap_ci(values, level: float = 0.95) -> tuple[float, float]:
    """Percentile bootstrap interval of the mean. It stays inside the range of the values (so inside
    the metric's range: an accuracy interval never leaves [0, 1]); (nan, nan) below two values."""
    from scipy.stats import bootstrap

    x = np.asarray(values, dtype=float)
    x = x[np.isfinite(x)]
    if len(x) < 2:
        return math.nan, math.nan
    if np.ptp(x) == 0:
        return float(x[0]), float(x[0])
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        ci = bootstrap(
            (x,), np.mean, confidence_level=level, n_resamples=RESAMPLES, method="percentile", vectorized=True, rng=rng()
        ).confidence_interval
    return float(ci.low), float(ci.high)


def mean_ci(values, level: float = 0.95) -> tuple[float, float]:
    """Student's t interval of the mean over seeds (it covers at five seeds where the percentile
    bootstrap does not: ``python -m harness.report.coverage``); (nan, nan) below two values."""
    from scipy.stats import t

    x = np.asarray(values, dtype=float)
    x = x[np.isfinite(x)]
    if len(x) < 2:
        return math.nan, math.nan
    half = float(t.ppf(1 - (1 - level) / 2, len(x) - 1) * np.std(x, ddof=1) / math.sqrt(len(x)))
    return float(x.mean()) - half, float(x.mean()) + half


@dataclass
class Difference:
    """a - b over seeds: its mean, 95% bootstrap interval, the two-sided p-value of the test named in
    ``test``, n (pairs, or the smaller group), and the seeds per method that 80% power would need."""

    diff: float
    low: float
    high: float
    p: float
    test: str
    n: int
    seeds_needed: float


def compare(a: dict, b: dict) -> Difference:
    """a, b: seed -> score. Paired by seed (paired t-test, bootstrap of the per-seed differences) when
    both have the same seeds, at least two; otherwise Welch's t-test and a two-sample bootstrap."""
    from scipy.stats import bootstrap, ttest_ind, ttest_rel

    seeds = sorted(set(a) & set(b))
    paired = len(seeds) >= 2 and set(a) == set(b)
    if paired:
        x, y = np.array([a[s] for s in seeds], float), np.array([b[s] for s in seeds], float)
        d = x - y
        low, high = bootstrap_ci(d)
        sd = float(np.std(d, ddof=1))
        if constant(d):  # the t statistic is infinite: the exact sign-flip test says what n pairs can show
            p, test = sign_flip_p(d), "exact sign-flip test by seed (a constant difference)"
        else:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                p, test = float(ttest_rel(x, y).pvalue), "paired t-test by seed"
        return Difference(float(d.mean()), low, high, p, test, len(d), seeds_needed(abs(float(d.mean())), sd, paired=True))
    x, y = np.array(list(a.values()), float), np.array(list(b.values()), float)
    diff = float(x.mean() - y.mean()) if len(x) and len(y) else math.nan
    if len(x) < 2 or len(y) < 2:
        return Difference(diff, math.nan, math.nan, math.nan, "too few seeds for a test", min(len(x), len(y)), math.nan)
    test = "Welch's t-test"
    with warnings.catch_warnings(record=True):
        warnings.simplefilter("ignore")
        if constant(x) and constant(y):  # Welch's statistic is infinite: the exact permutation test instead
            low = high = diff
            p, test = permutation_p(x, y), "exact permutation test (each method constant over its seeds)"
        else:
            ci = bootstrap(
                (x, y),
                lambda u, v, axis=-1: u.mean(axis=axis) - v.mean(axis=axis),
                n_resamples=RESAMPLES,
                method="percentile",
                vectorized=True,
                rng=rng(),
            ).confidence_interval
            low, high = float(ci.low), float(ci.high)
            p = float(ttest_ind(x, y, equal_var=False).pvalue)
    sd = math.sqrt((np.var(x, ddof=1) + np.var(y, ddof=1)) / 2)
    return Difference(diff, low, high, p, test, min(len(x), len(y)), seeds_needed(abs(diff), sd, paired=False))


def constant(values: np.ndarray) -> bool:
    """No spread beyond floating-point rounding (a t statistic would be infinite or meaningless)."""
    return float(np.ptp(values)) <= 1e-12 * max(1.0, float(np.max(np.abs(values))))


def sign_flip_p(d: np.ndarray) -> float:
    """Exact two-sided sign-flip test of a zero mean difference over all 2^n sign assignments: for a
    constant non-zero difference at n pairs it is 2 / 2^n (0.0625 at n = 5), never 0; 1 when d is 0."""
    from scipy.stats import permutation_test

    if not np.any(d):
        return 1.0
    return float(permutation_test((d,), np.mean, permutation_type="samples", n_resamples=np.inf).pvalue)


def permutation_p(x: np.ndarray, y: np.ndarray) -> float:
    """Exact two-sided permutation test of equal means over all splits of the pooled scores."""
    from scipy.stats import permutation_test

    if float(x.mean()) == float(y.mean()):
        return 1.0
    return float(
        permutation_test(
            (x, y), lambda u, v, axis=-1: u.mean(axis=axis) - v.mean(axis=axis), n_resamples=np.inf, vectorized=True
        ).pvalue
    )


def seeds_needed(effect: float, sd: float, paired: bool) -> float:
    """Seeds per method for a two-sided t-test at ALPHA to detect ``effect`` with POWER, given the
    seed-to-seed standard deviation (of the differences when paired). inf when there is no effect."""
    from statsmodels.stats.power import TTestIndPower, TTestPower

    if not (effect > 0) or not math.isfinite(sd):
        return math.inf
    if sd == 0:
        return 2.0
    size = effect / sd
    with warnings.catch_warnings(record=True):  # statsmodels turns its ConvergenceWarning to "always"
        warnings.simplefilter("ignore")
        try:
            n = (TTestPower() if paired else TTestIndPower()).solve_power(
                effect_size=size, alpha=ALPHA, power=POWER, alternative="two-sided"
            )
            n = float(np.asarray(n).ravel()[0])
        except Exception:
            n = math.nan
    if not math.isfinite(n):  # the solver gives up on tiny effects: the normal approximation is exact enough there
        from scipy.stats import norm

        n = (1 if paired else 2) * ((norm.ppf(1 - ALPHA / 2) + norm.ppf(POWER)) / size) ** 2
    return max(2.0, math.ceil(n))


def holm(pvalues: list[float]) -> list[float]:
    """Holm-adjusted p-values (nan stays nan)."""
    from statsmodels.stats.multitest import multipletests

    p = np.asarray(pvalues, float)
    out = np.full(len(p), math.nan)
    ok = np.isfinite(p)
    if ok.any():
        out[ok] = multipletests(p[ok], method="holm")[1]
    return out.tolist()


def expected_best(values, mode: str, budgets=None) -> np.ndarray:
    """Expected best of k settings drawn uniformly with replacement from a tuning grid's scores, for
    k = 1..len(values) (Dodge et al., 2019, "Show your work", eq. 1). For mode 'min' the expected lowest."""
    v = np.sort(np.asarray(values, float))
    if mode == "min":
        v = v[::-1]
    n = len(v)
    ks = np.arange(1, n + 1) if budgets is None else np.asarray(budgets)
    i = np.arange(1, n + 1)
    return np.array([float(np.sum(v * ((i / n) ** k - ((i - 1) / n) ** k))) for k in ks])
