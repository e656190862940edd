"""The statistics of a report beside the contrasts (``contrast.py``): a method's interval over seeds and
the expected best score of a tuning budget (the expected-maximum formula of Dodge et al., 2019)."""

from __future__ import annotations

import math

import numpy as np

ALPHA = 0.05  # every test's error rate, before its family's correction
POWER = 0.8  # the power "seeds needed" is computed for


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
