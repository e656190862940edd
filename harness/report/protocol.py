"""The tuned comparison of a declared study (DeepOBS / AlgoPerf protocol).

A study declares what it compares (``study.compare``: the methods, e.g. the optimizer) and what it
tunes per method (``study.tune``: e.g. ``optimizer.lr``); the sweep writes the declaration on its
parent run, where the report finds it. For each problem (the task and every other factor that
varies) and each method:
1. every setting of the tuned knobs is scored by the **validation** metric's mean over seeds (a
   setting with a diverged or failed seed cannot be selected while a clean one exists; a failed or killed
   run whose job a resumed sweep reran to the end does not count against its setting);
2. the best setting is selected on that, never on the test metric;
3. the selected setting's **test** metric is reported over its seeds: mean, 95% t interval, n, and
   the selected values;
4. the reference is the method whose selected setting has the best validation mean (chosen on
   validation too); every other method is compared with it on test (``contrast``: paired by seed when
   the seeds pair; interval and tests at one level, Bonferroni over the problem's comparisons; better,
   worse, equivalent or non-inferior at the study's declared margin, else undecided), with the seeds
   that 80% power would need to detect a gain of the margin's size.
Sensitivity (the share of a method's grid within ``tolerance`` of its best validation score) and
the expected best validation score after k tuning trials come from the same settings table.
"""

from __future__ import annotations

import math

import numpy as np
import pandas as pd

from harness.config.schema import GROUPS
from harness.report import ReportError, stats
from harness.report.aggregate import comparable, superseded
from harness.report.contrast import Contrast, margin_of
from harness.report.declaration import Declaration, label
from harness.report.fresh import DECIDED, by_round, is_fresh, upto, versus
from harness.report.wording import verdict


def column(runs: pd.DataFrame, name: str) -> str:
    """The runs' column of a declared name: a config group (``optimizer``) or a key (``optimizer.lr``)."""
    col = name if name in GROUPS else f"param:{name}"
    if col not in runs.columns:
        raise ReportError(
            f"the study declares {name!r}, which none of its runs has (groups: {', '.join(GROUPS)}; "
            f"keys: {', '.join(sorted(c[6:] for c in runs.columns if c.startswith('param:'))[:12])}, ...)"
            + (f"; if a sweep of its own sets it (+{name}=...), that sweep has not run yet" if "." in name else "")
        )
    return col


def val_metric(metric: str) -> str:
    return "val/" + metric.split("/", 1)[-1]


def train_metric(metric: str) -> str:
    """The training-set counterpart of the primary metric (running over the last epoch's steps)."""
    return "train/" + metric.split("/", 1)[-1]


CORRUPTING = ("task.outlier_fraction", "task.label_noise")  # knobs that corrupt the training targets only


def corrupted_training(group: pd.DataFrame) -> bool:
    """Whether these runs trained on corrupted targets (outliers, flipped labels): their training
    score then measures the corruption, not fit, and a train - test gap would mislead."""
    for knob in CORRUPTING:
        values = pd.to_numeric(group.get(f"param:{knob}", pd.Series(dtype=object)), errors="coerce")
        if (values > 0).any():
            return True
    return False


def settings_table(
    runs: pd.DataFrame, config_cols: list[str], decl: Declaration
) -> tuple[pd.DataFrame, list[str], list[str], list[str]]:
    """One row per (problem, method, tuned setting): validation and test means over seeds, the
    per-seed test and validation scores, eligibility. Returns (table, problem, method, tuned columns)."""
    method_cols = [column(runs, c) for c in decl.compare]
    tuned_cols = [column(runs, c) for c in decl.tune if column(runs, c) not in method_cols]
    problem_cols = ["task"] + [c for c in config_cols if c not in method_cols + tuned_cols and c != "task"]
    runs = runs.copy()
    keys = list(dict.fromkeys(problem_cols + method_cols + tuned_cols))
    runs[keys] = comparable(runs, keys)
    runs["fresh"] = is_fresh(runs)
    rows = []
    for key, everything in runs.groupby(problem_cols + method_cols + tuned_cols, sort=False):
        key = key if isinstance(key, tuple) else (key,)
        group = everything[~everything["fresh"]]  # selection reads only the selection's runs
        if group.empty:
            continue  # a setting only a confirmation ran (its selection runs are not in this report)
        metric, mode = group["primary_metric"].iloc[0], group["primary_mode"].iloc[0]
        finished = group[group.outcome == "finished"]
        group = group[~superseded(group, ["seed"])]  # a job rerun to its end is not a failed seed
        confirmed = everything[everything["fresh"] & (everything.outcome == "finished")]
        confirmed_test = pd.to_numeric(confirmed.get(f"final:{metric}"), errors="coerce")
        confirmed = confirmed[confirmed_test.notna()]
        test = pd.to_numeric(finished.get(f"final:{metric}"), errors="coerce")
        val = pd.to_numeric(finished.get(f"final:{val_metric(metric)}"), errors="coerce")
        train = pd.to_numeric(
            finished.get(f"final:{train_metric(metric)}", pd.Series(math.nan, index=finished.index)), errors="coerce"
        )
        ok = test.notna() & val.notna()
        seeds = finished["seed"].astype(str)
        row = dict(zip(problem_cols + method_cols + tuned_cols, key))
        corrupted = corrupted_training(group)
        row.update(
            {
                "metric": metric,
                "val_metric": val_metric(metric),
                "mode": mode,
                "val_mean": float(val[ok].mean()) if ok.any() else math.nan,
                "test_mean": float(test[ok].mean()) if ok.any() else math.nan,
                "n": int(ok.sum()),
                "train_mean": float(train[ok].mean()) if ok.any() and not corrupted else math.nan,
                "train_corrupted": corrupted,
                "runs": len(group),
                "clean": bool(ok.sum() == len(group)),
                "test_by_seed": dict(zip(seeds[ok], test[ok].astype(float))),
                "val_by_seed": dict(zip(seeds[ok], val[ok].astype(float))),
                "run_ids": list(finished.loc[ok, "run_id"]),
                "fresh_by_round": by_round(confirmed, confirmed_test.dropna()),
                "others": other_metrics(metric, finished[ok], confirmed),
            }
        )
        rows.append(row)
    table = pd.DataFrame(rows)
    table.insert(
        0,
        "problem",
        table.apply(lambda r: ", ".join([str(r["task"])] + [f"{label(c)}={r[c]}" for c in problem_cols[1:]]), axis=1),
    )
    table.insert(1, "method", table.apply(lambda r: ", ".join(f"{label(c)}={r[c]}" for c in method_cols), axis=1))
    table["setting"] = table.apply(  # a tuned knob the method does not have ("-": only another method's) left out
        lambda r: ", ".join(f"{label(c)}={r[c]}" for c in tuned_cols if r[c] != "-") or "(fixed)", axis=1
    )
    return table, problem_cols, method_cols, tuned_cols


def other_metrics(metric: str, finished: pd.DataFrame, confirmed: pd.DataFrame) -> dict[str, dict]:
    """A setting's other test metrics (minority recall beside macro-F1, MAE beside deviance), seed by seed:
    {metric: {"selection": {seed: score}, "fresh": {round: {seed: score}}}}, for a claim judged on one of them."""
    out = {}
    for col in sorted(c for c in finished.columns if c.startswith("final:test/") and c != f"final:{metric}"):
        chosen = pd.to_numeric(finished[col], errors="coerce")
        fresh = pd.to_numeric(confirmed.get(col, pd.Series(math.nan, index=confirmed.index)), errors="coerce")
        out[col.removeprefix("final:")] = {
            "selection": dict(zip(finished["seed"].astype(str)[chosen.notna()], chosen.dropna().astype(float))),
            "fresh": by_round(confirmed[fresh.notna()], fresh.dropna()),
        }
    return out


def better(mode: str):
    return (lambda a, b: a > b) if mode == "max" else (lambda a, b: a < b)


def select(settings: pd.DataFrame, tolerance: float, margin: object = None, rounds: int = 1) -> pd.DataFrame:
    """One row per (problem, method): the setting with the best validation mean, its test scores (on fresh
    seeds where a confirmation sweep reran it, else on the selection's), the grid's sensitivity, then the
    verdict against the problem's best method (``rounds``: the declared cap of confirmation rounds)."""
    rows = []
    for (problem, method), part in settings.groupby(["problem", "method"], sort=False):
        mode = part["mode"].iloc[0]
        scored = part[part["n"] > 0]
        pool = scored[scored["clean"]] if scored["clean"].any() else scored
        if pool.empty:
            rows.append(
                {
                    "problem": problem,
                    "method": method,
                    "mode": mode,
                    "metric": part["metric"].iloc[0],
                    "n": 0,
                    "grid": len(part),
                    "setting": "(nothing finished)",
                    "test_mean": math.nan,
                    "val_mean": math.nan,
                }
            )
            continue
        best = pool.loc[pool["val_mean"].idxmax() if mode == "max" else pool["val_mean"].idxmin()]
        fresh = best.get("fresh_by_round") or {}
        scores = upto(fresh, max(fresh)) if fresh else best["test_by_seed"]
        low, high = stats.mean_ci(list(scores.values()))
        vals = scored["val_mean"].to_numpy(float)
        slack = tolerance * abs(best["val_mean"])
        within = vals >= best["val_mean"] - slack if mode == "max" else vals <= best["val_mean"] + slack
        at_edge = (
            "" if within.all() else edge(part, best)
        )  # a flat grid (all within tolerance): its edge is only where the tie fell
        rows.append(
            {
                "problem": problem,
                "task": best["task"],
                "method": method,
                "mode": mode,
                "metric": best["metric"],
                "setting": best["setting"],
                "val_mean": best["val_mean"],
                "test_mean": float(np.mean(list(scores.values()))) if fresh else best["test_mean"],
                "train_mean": best["train_mean"],
                "gap": best["train_mean"] - best["test_mean"],  # on the selection's seeds, where the training score is
                "train_corrupted": bool(best.get("train_corrupted", False)),
                "test_std": float(np.std(list(scores.values()), ddof=1)) if len(scores) > 1 else math.nan,
                "ci95_low": low,
                "ci95_high": high,
                "n": len(scores) if fresh else best["n"],
                "seeds": "fresh" if fresh else "selection",
                "grid": len(part),
                "good_share": float(within.sum() / len(part)),
                "at_edge": at_edge,
                "test_by_seed": scores,
                "selection_by_seed": best["test_by_seed"],
                "fresh_by_round": fresh,
                "others": best.get("others") or {},
                "run_ids": best["run_ids"],
                "grid_val": vals.tolist(),
            }
        )
    table = pd.DataFrame(rows)
    return verdicts(table, margin, rounds)


def edge(part: pd.DataFrame, best: pd.Series) -> str:
    """The tuned knobs whose selected value is the smallest or largest of the grid (the best may lie outside).
    A knob that some of the method's settings leave at its default (a second sweep of Adam's epsilon beside runs
    at torch's 1e-8, which they do not log) is not judged: where that default lies in the grid is not known."""
    out = []
    for col in [c for c in part.columns if c.startswith("param:")]:
        numbers = pd.to_numeric(part[col], errors="coerce")
        if numbers.isna().any():
            continue
        values = numbers.unique()
        v = pd.to_numeric(pd.Series([best[col]]), errors="coerce").iloc[0]
        at_zero = v == 0 == values.min()  # 0 (none of it: weight decay, momentum) has nothing below it
        if len(values) > 2 and math.isfinite(v) and not at_zero and (v == values.min() or v == values.max()):
            out.append(label(col))
    return ", ".join(out)


def verdicts(table: pd.DataFrame, margin: object = None, rounds: int = 1) -> pd.DataFrame:
    """Rank each problem's methods by their selected setting's validation mean: the reference (rank 1)
    is chosen on validation, as the settings were. Compare each other method with it on the test scores
    of the selected settings (``contrast``: one level across the problem's comparisons, Bonferroni),
    at the declared margin (``margin``: study.margin). Where both were rerun on fresh seeds, look by look
    (``fresh.sequential``: each look at alpha / (comparisons x ``rounds``))."""
    out = []
    for _, part in table.groupby("problem", sort=True):
        mode = part["mode"].iloc[0]
        part = part.sort_values("val_mean", ascending=mode == "min", na_position="last").reset_index(drop=True)
        part.insert(0, "rank", range(1, len(part) + 1))
        top = part.iloc[0]
        compared = [bool(i and r["n"] and top["n"]) for i, r in part.iterrows()]
        family = max(1, sum(compared))
        m = margin_of(margin, top["test_mean"], top["metric"]) if top["n"] else math.nan
        looked = [compare(r, top, mode, m, family, rounds) if ok else (None, 0) for ok, (_, r) in zip(compared, part.iterrows())]
        cs = [c for c, _ in looked]
        part["look"] = [look for _, look in looked]
        nan = math.nan
        part["gain"] = [c.gain if c else nan for c in cs]
        part["gain_low"] = [c.low if c else nan for c in cs]
        part["gain_high"] = [c.high if c else nan for c in cs]
        part["margin"] = m
        part["p"] = [c.p if c else nan for c in cs]
        part["p_equivalent"] = [c.p_equivalent if c else nan for c in cs]
        part["p_noninferior"] = [c.p_noninferior if c else nan for c in cs]
        part["test"] = [c.test if c else "" for c in cs]
        part["family"] = family
        part["seeds_needed"] = [c.seeds_needed if c else nan for c in cs]
        part["versus_reference"] = [c.verdict if c else ("reference" if i == 0 else "") for i, c in enumerate(cs)]
        part["distinct"] = [bool(c and c.verdict in ("better", "worse")) for c in cs]
        part["verdict"] = [verdict(top, r, c, rounds=rounds) for (_, r), c in zip(part.iterrows(), cs)]
        part["verdict_short"] = [verdict(top, r, c, short=True, rounds=rounds) for (_, r), c in zip(part.iterrows(), cs)]
        out.append(part)
    return pd.concat(out, ignore_index=True)


def open_pairs(selected: pd.DataFrame, margin: object = None, rounds: int = 1) -> set[tuple[str, str]]:
    """The (problem, method)s in a pair of selected methods without a full verdict yet (better, worse, equivalent),
    any two of a problem's methods, not only each against the reference: a claim's contrast may be between two
    others (triplet against the classifier's features, where the reference is contrastive). Judged as the report
    judges a pair (``compare``), at one level across the problem's pairs, the margin read on the pair's second
    method (the one better on validation)."""
    out: set[tuple[str, str]] = set()
    for problem, part in selected.groupby("problem", sort=False):
        mode = part["mode"].iloc[0]
        part = part[part["n"] > 0].sort_values("val_mean", ascending=mode == "min")
        pairs = [(a, b) for i, (_, b) in enumerate(part.iterrows()) for _, a in list(part.iterrows())[i + 1 :]]
        for a, b in pairs:
            m = margin_of(margin, b["test_mean"], b["metric"])
            c, _ = compare(a, b, mode, m, len(pairs), rounds)
            if c.verdict not in DECIDED:
                out |= {(str(problem), str(a["method"])), (str(problem), str(b["method"]))}
    return out


def compare(r: pd.Series, top: pd.Series, mode: str, margin: float, family: int, rounds: int) -> tuple[Contrast, int]:
    """A method against the reference: on fresh seeds look by look where both were confirmed (its look), else
    on the scores they have (look 0: the selection's seeds)."""
    return versus(
        r["test_by_seed"],
        r.get("fresh_by_round") or {},
        top["test_by_seed"],
        top.get("fresh_by_round") or {},
        mode,
        margin,
        family,
        rounds,
    )


def mean_ranks(selected: pd.DataFrame) -> tuple[pd.DataFrame, object | None, str]:
    """Across problems: each method's mean rank, and autorank's result (Friedman test with a post-hoc
    test; it needs five problems or more) with a sentence about it."""
    wide = selected.pivot_table(index="problem", columns="method", values="test_mean", aggfunc="first").dropna(axis=0)
    if wide.shape[0] < 2 or wide.shape[1] < 2:
        return pd.DataFrame(), None, "one problem or one method: no ranking across problems"
    mode = selected["mode"].iloc[0]
    ranks = wide.rank(axis=1, ascending=mode == "min").mean().sort_values().rename("mean rank").to_frame()
    if wide.shape[0] < 5:
        return (
            ranks,
            None,
            (f"{wide.shape[0]} problems: a Friedman test with a critical-difference diagram needs five or more; mean ranks only"),
        )
    import warnings

    from autorank import autorank

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        result = autorank(wide if mode == "max" else -wide, alpha=stats.ALPHA, verbose=False, force_mode="nonparametric")
    return ranks, result, f"autorank: {result.omnibus} omnibus test p = {result.pvalue:.3g}, post-hoc {result.posthoc}"
