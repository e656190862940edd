"""`hydra/sweeper=search` and its knobs (registered when Hydra scans the hydra_plugins package)."""

from dataclasses import dataclass, field
from typing import Any

from hydra.core.config_store import ConfigStore


@dataclass
class SearchSweeperConf:
    _target_: str = "hydra_plugins.harness_search_sweeper.search_sweeper.SearchSweeper"
    # random | qmc (quasi-random, Sobol) | tpe (Optuna's tree-structured Parzen estimator)
    sampler: str = "tpe"
    # trials per method (a method: one combination of the grid's other keys, e.g. optimizer=adam)
    n_trials: int = 20
    # trials asked per method before their jobs run together (null: all at once for random and qmc, 4 for tpe)
    batch: int | None = None
    # tpe only: random trials before TPE models the results (null: Optuna's default, 10); trials asked
    # in one round are spread by Optuna's constant liar (pending trials count as bad ones)
    startup: int | None = None
    # the sampler's seed: each method draws the same random/qmc candidates
    seed: int = 0
    # the metric a trial is scored by, mean over its seeds; null: the task's primary metric on validation
    objective: str | None = None
    # maximize | minimize; null: as the task's primary metric
    direction: str | None = None
    # the search space: key -> loguniform(a, b) | uniform(a, b) | int(a, b) | logint(a, b) | choice(x, y, ...)
    space: dict[str, str] = field(default_factory=dict)
    # the grid, as for the basic sweeper (methods, and `seed` for the repeats of each trial)
    params: dict[str, Any] = field(default_factory=dict)


ConfigStore.instance().store(group="hydra/sweeper", name="search", node=SearchSweeperConf, provider="harness")
