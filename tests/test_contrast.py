"""A contrast's interval and tests agree, match statsmodels' TOST, and cover at small n (by simulation)."""

import math

import numpy as np
import pytest
from statsmodels.stats.weightstats import ttost_ind, ttost_paired

from harness.report import coverage
from harness.report.contrast import contrast, margin_of

REF = {0: 1.0, 1: 1.2, 2: 0.9, 3: 1.1, 4: 1.05}


def test_tost_is_statsmodels_ttost_paired_and_ttost_ind():
    method = {0: 1.02, 1: 1.21, 2: 0.93, 3: 1.1, 4: 1.08}
    c = contrast(method, REF, "max", margin=0.05)
    x, y = np.array(list(method.values())), np.array(list(REF.values()))
    assert c.p_equivalent == pytest.approx(ttost_paired(x, y, -0.05, 0.05)[0], rel=1e-9)
    assert c.verdict == "equivalent" and c.test == "paired t-test by seed"
    unpaired = contrast({s + 10: v for s, v in method.items()}, REF, "max", margin=0.05)
    assert unpaired.test == "Welch's t-test"
    assert unpaired.p_equivalent == pytest.approx(ttost_ind(x, y, -0.05, 0.05, usevar="unequal")[0], rel=1e-9)


def test_the_interval_and_the_tests_never_disagree():
    g = np.random.default_rng(1)
    for _ in range(300):
        family = int(g.integers(1, 5))
        shift, spread, margin = g.normal(0, 0.1), g.uniform(0.01, 0.2), g.uniform(0.01, 0.2)
        method = {s: REF[s] + shift + g.normal(0, spread) for s in REF}
        c = contrast(method, REF, "max", margin=margin, family=family)
        assert (c.p < 0.05) == (c.low > 0 or c.high < 0)  # the two-sided interval at 1 - alpha/family
        assert (c.p_equivalent < 0.05) == (-margin < c.lower_bound and c.upper_bound < margin)  # TOST
        assert (c.p_noninferior < 0.05) == (c.lower_bound > -margin)
        assert c.low <= c.lower_bound <= c.gain <= c.upper_bound <= c.high


def test_the_verdicts():
    better = {s: v + 0.3 + 0.01 * s for s, v in REF.items()}
    assert contrast(better, REF, "max", margin=0.05).verdict == "better"
    assert contrast(better, REF, "min", margin=0.05).verdict == "worse"  # the orientation follows the metric
    assert contrast(better, REF, "max").verdict == "better"  # no margin: better / worse / undecided only
    slightly = {s: v - 0.01 + 0.002 * (-1) ** s for s, v in REF.items()}
    assert contrast(slightly, REF, "max", margin=0.05).verdict == "equivalent"  # worse, but by less than matters
    assert contrast(slightly, REF, "max").verdict == "worse"
    noisy = {s: v + 0.1 + 0.1 * (-1) ** s for s, v in REF.items()}
    assert contrast(noisy, REF, "max", margin=0.15).verdict == "non-inferior"  # not worse by 0.15; maybe better
    unclear = {s: v + 0.02 + 0.1 * (-1) ** s for s, v in REF.items()}
    assert contrast(unclear, REF, "max", margin=0.01).verdict == "undecided"
    assert contrast({0: 1.0}, REF, "max").verdict == "too few seeds"


def test_a_constant_difference_gets_the_exact_test_and_the_interval_that_inverts_it():
    five = contrast({s: v + 0.1 for s, v in REF.items()}, REF, "max", margin=0.2)
    assert five.p == pytest.approx(2 / 2**5) and five.test.startswith("exact sign-flip")
    assert math.isinf(five.low) and math.isinf(five.high)  # 0.0625 > 0.05: no 95% interval can bound it
    assert five.lower_bound == pytest.approx(0.1) and five.verdict == "equivalent"  # one-sided: 1/32 < 0.05
    ten = contrast({s: 1.1 for s in range(10)}, {s: 1.0 for s in range(10)}, "max", margin=0.05, family=3)
    assert ten.low == pytest.approx(0.1) == ten.high and ten.verdict == "better"
    assert ten.p == pytest.approx(3 * 2 / 2**10)
    unpaired = contrast({s: 2.0 for s in range(5)}, {s + 5: 1.0 for s in range(5)}, "max")
    assert unpaired.p == pytest.approx(2 / math.comb(10, 5)) and unpaired.verdict == "better"


def test_margins_as_declared():
    assert margin_of(0.005, 0.9, "test/accuracy") == 0.005
    assert margin_of("5%", 2.0, "test/mse") == pytest.approx(0.1)
    assert margin_of({"mse": "5%", "accuracy": 0.005}, -2.0, "test/mse") == pytest.approx(0.1)
    assert math.isnan(margin_of(None, 1.0, "test/mse")) and math.isnan(margin_of({"accuracy": 0.01}, 1.0, "test/mse"))


def test_seeds_needed_is_for_the_declared_margin_not_the_observed_difference():
    noisy = {s: v + 0.3 + 0.1 * (-1) ** s for s, v in REF.items()}
    small, large = contrast(noisy, REF, "max", margin=0.05), contrast(noisy, REF, "max", margin=0.5)
    assert small.seeds_needed > large.seeds_needed >= 2
    assert math.isnan(contrast(noisy, REF, "max").seeds_needed)


@pytest.mark.parametrize("n", coverage.SIZES)
def test_the_interval_covers_at_small_n_by_simulation(n):
    """2,000 simulated studies per cell (the issue's bar): 95% t intervals cover within 0.93-0.97 on
    normal differences; the percentile bootstrap the reports used before does not at n = 5."""
    normal = coverage.DISTRIBUTIONS["normal"]
    t = coverage.t_interval_coverage(normal, n, 2000)
    assert 0.93 <= t <= 0.97, t
    if n == 5:
        assert coverage.percentile_coverage(normal, n, 2000) < 0.9
    for name in ("skewed (lognormal)", "heavy-tailed (t, 3 df)"):  # what they do there is printed, not promised
        draw = coverage.DISTRIBUTIONS[name]
        assert coverage.t_interval_coverage(draw, n, 500) > coverage.percentile_coverage(draw, n, 500)


def test_factor_importance_finds_the_factor_that_moves_the_score():
    import pandas as pd

    from harness.report.importance import importance

    g = np.random.default_rng(0)
    rows = []
    for opt, effect in (("adam", 0.9), ("sgd", 0.8)):
        for lr in ("0.01", "0.1"):
            for seed in range(5):
                score = effect + 0.001 * g.standard_normal()  # the optimizer moves it; lr and seed barely
                rows.append(
                    {"outcome": "finished", "optimizer": opt, "param:optimizer.lr": lr, "seed": seed, "final:test/acc": score}
                )
    rows.append({"outcome": "failed", "optimizer": "sgd", "param:optimizer.lr": "1", "seed": 0, "final:test/acc": 0.0})
    shares = importance(pd.DataFrame(rows), ["optimizer", "param:optimizer.lr"], "test/acc").set_index("factor")["share"]
    assert shares["optimizer"] > 0.99 and shares["optimizer.lr"] < 0.01 and shares["seed"] < 0.01
    assert shares.sum() == pytest.approx(1.0, abs=0.02)  # type-II sums of squares of a balanced design add up
    assert importance(pd.DataFrame(rows[:2]), ["optimizer"], "test/acc").empty  # too few runs
    saturated = [{**rows[0], "optimizer": name, "final:test/acc": v} for name, v in (("a", 0.1), ("b", 0.5), ("c", 0.9))]
    assert importance(pd.DataFrame(saturated), ["optimizer"], "test/acc").empty  # one run per level: no residual left


def test_a_constant_difference_needs_the_seeds_its_exact_test_needs_at_the_level():
    """With no spread the exact test rejects only once 2 / 2^n (pairs) or 2 / C(2n, n) (groups) is within the
    level: at 0.05 / 70 (a family of 70) ten pairs cannot (2 / 1024 > 0.000714), twelve can (2 / 4096)."""
    same = contrast({s: 0.8 for s in range(10)}, {s: 0.8 for s in range(10)}, "max", margin=0.005, family=70)
    assert same.verdict == "undecided" and same.seeds_needed == 12
    assert contrast({s: 0.8 for s in range(5)}, {s: 0.8 for s in range(5)}, "max", margin=0.005).seeds_needed == 6
    groups = contrast({s: 0.9 for s in range(3)}, {s + 9: 0.8 for s in range(3)}, "max", margin=0.005, family=70)
    assert groups.test.startswith("exact permutation") and groups.seeds_needed == 7  # 2 / C(14, 7) = 0.00058


def test_groups_of_unequal_size_with_no_spread_get_the_exact_p_of_their_own_sizes():
    """Three seeds against six, each method constant: the observed split is one of C(9, 3) = 84."""
    unequal = contrast({s: 0.9 for s in range(3)}, {s + 9: 0.8 for s in range(6)}, "max", margin=0.005)
    assert unequal.test.startswith("exact permutation") and unequal.p == pytest.approx(2 / math.comb(9, 3))
