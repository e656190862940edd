"""How much of the outcome's spread each factor explains: a variance decomposition of a study's runs.

For one task (and its primary metric), every finished run's final test score is fitted by an additive
model with each varying factor as a category (the method, each tuned knob, each condition, and each
seed kind: ``seed``, ``task.data_seed``): ordinary least squares from statsmodels, and its type-II
ANOVA table. A factor's share is its sum of squares over the total; what no factor explains alone
(interactions, noise) is the residual's share. This answers "is the choice of loss or the seed what
moves the score?" with the runs at hand; it is descriptive (a fixed-effects ANOVA), not a test.
"""

from __future__ import annotations

import math
import re
import warnings

import numpy as np
import pandas as pd

SEED_KINDS = ("param:init_seed", "param:order_seed", "seed", "param:seed", "param:task.data_seed")


def factor_columns(runs: pd.DataFrame, config_cols: list[str]) -> list[str]:
    """The factors that vary among the runs: the report's factors and the seed kinds (init_seed and
    order_seed where the runs logged them; runs from before the split have one ``seed`` for both). A
    column that splits the runs exactly as an earlier one does (seed, init_seed and order_seed in a sweep
    that varies only ``seed``) is the same factor and counted once, under its first name."""
    cols = [c for c in config_cols if c != "task"] + [s for s in SEED_KINDS if s not in config_cols]
    kept: list[str] = []
    partitions: set[tuple] = set()
    for c in cols:
        if c not in runs.columns or runs[c].nunique(dropna=True) <= 1:
            continue
        partition = tuple(pd.factorize(runs[c].astype(str))[0])
        if partition not in partitions:
            partitions.add(partition)
            kept.append(c)
    return kept


def importance(runs: pd.DataFrame, config_cols: list[str], metric: str) -> pd.DataFrame:
    """One row per factor (and 'residual'): its share of the total sum of squares of ``final:METRIC``
    over the finished runs. Empty when fewer than 3 runs or no factor varies."""
    from statsmodels.formula.api import ols
    from statsmodels.stats.anova import anova_lm

    col = f"final:{metric}"
    if col not in runs.columns:
        return pd.DataFrame(columns=["factor", "share", "levels"])
    data = runs[runs["outcome"] == "finished"].copy()
    data["y"] = pd.to_numeric(data[col], errors="coerce")
    data = data[data["y"].map(lambda v: isinstance(v, float) and math.isfinite(v))]
    factors = [c for c in factor_columns(data, config_cols) if data[c].nunique(dropna=True) > 1]
    if len(data) < 3 or not factors or data["y"].var() == 0:
        return pd.DataFrame(columns=["factor", "share", "levels"])
    names = {c: f"f{i}" for i, c in enumerate(factors)}
    frame = data[["y"]].assign(**{names[c]: data[c].astype(str) for c in factors})
    formula = "y ~ " + " + ".join(f"C({names[c]})" for c in factors)
    if len(data) - 1 - sum(data[c].nunique() - 1 for c in factors) < 1:
        return pd.DataFrame(columns=["factor", "share", "levels"])  # no residual left (one seed per cell): nothing to split
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        try:
            table = anova_lm(ols(formula, data=frame).fit(), typ=2)
        except (ValueError, np.linalg.LinAlgError):  # a design the model cannot separate (factors that nest)
            return pd.DataFrame(columns=["factor", "share", "levels"])
    total = float(((frame["y"] - frame["y"].mean()) ** 2).sum())
    back = {f"C({v})": k for k, v in names.items()}
    rows = [
        {
            "factor": label_of(back.get(term, term)),
            "share": float(row["sum_sq"]) / total if total else math.nan,
            "levels": int(data[back[term]].nunique()) if term in back else len(data),
        }
        for term, row in table.iterrows()
    ]
    out = pd.DataFrame(rows)
    out.loc[out["factor"] == "Residual", "factor"] = "residual (interactions and noise)"
    return out.sort_values("share", ascending=False, key=lambda s: s.where(~out["factor"].str.startswith("residual"), -1))


def label_of(col: str) -> str:
    return re.sub(r"^param:", "", col)
