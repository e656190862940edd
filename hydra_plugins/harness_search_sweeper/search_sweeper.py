"""The search sweeper: a Hydra sweeper plugin on Optuna's ask-and-tell API.

The sweep's grid (``hydra.sweeper.params`` and the command line's comma lists, as for the basic
sweeper) names the *methods* (every combination of its keys but ``seed``) and the *seeds*. For each
method an Optuna study proposes ``n_trials`` settings of ``space``; a trial runs once per seed, its
jobs launched by the configured launcher like any job of a sweep (child runs of the sweep's parent,
stacked where they can be), and its score is the mean over its seeds of the objective (the task's
primary metric on validation by default). A trial with a seed that failed or diverged is told to
Optuna as failed. Trials are asked in rounds (``batch``); each round's jobs of every method launch
together. Resume: a job whose config already finished is skipped and its recorded metrics are told
again, so a seeded sampler retraces the same trials.
"""

from __future__ import annotations

import logging
import math
import re
import statistics
from collections.abc import Sequence
from pathlib import Path
from typing import Any, Literal

from hydra.core.override_parser.overrides_parser import OverridesParser
from hydra.plugins.launcher import Launcher
from hydra.plugins.sweeper import Sweeper
from hydra.types import HydraContext, TaskFunction
from omegaconf import DictConfig, OmegaConf

log = logging.getLogger(__name__)

SAMPLERS = ("random", "qmc", "tpe")
SPEC = re.compile(r"^\s*(loguniform|uniform|int|logint|choice)\s*\((.*)\)\s*$")


def parse_space(space: dict) -> dict:
    """key -> an Optuna distribution, from 'loguniform(1e-4, 1)' and the like."""
    from optuna.distributions import BaseDistribution, CategoricalDistribution, FloatDistribution, IntDistribution

    from harness import HarnessError

    out: dict[str, BaseDistribution] = {}
    for key, spec in space.items():
        m = SPEC.match(str(spec))
        allowed = "loguniform(a, b), uniform(a, b), int(a, b), logint(a, b) or choice(x, y, ...)"
        if not m:
            raise HarnessError(f"hydra.sweeper.space.{key}={spec!r} is not a search range; allowed: {allowed}")
        kind, args = m.group(1), [a.strip() for a in m.group(2).split(",") if a.strip()]
        try:
            if kind == "choice":
                if len(args) < 2:
                    raise ValueError("choice needs at least two values")
                out[key] = CategoricalDistribution(args)
                continue
            if len(args) != 2:
                raise ValueError(f"{kind} takes two bounds")
            if kind in ("int", "logint"):
                low, high = int(args[0]), int(args[1])
                out[key] = IntDistribution(low, high, log=kind == "logint")
            else:
                lo, hi = float(args[0]), float(args[1])
                if not (math.isfinite(lo) and math.isfinite(hi)):
                    raise ValueError("bounds must be finite numbers")
                out[key] = FloatDistribution(lo, hi, log=kind == "loguniform")
        except ValueError as e:
            raise HarnessError(f"hydra.sweeper.space.{key}={spec!r}: {e}; allowed: {allowed}") from None
    return out


def fmt(value: Any) -> str:
    return f"{value:.4g}" if isinstance(value, float) else str(value)


def method_labels(methods: list[tuple[str, ...]]) -> list[str]:
    """Each method by the overrides that tell it from the others (all equal: 'all jobs')."""
    varying = [o for o in dict.fromkeys(o for m in methods for o in m) if not all(o in m for m in methods)]
    return [" ".join(o for o in m if o in varying) or "all jobs" for m in methods]


class SearchSweeper(Sweeper):
    def __init__(
        self,
        sampler: str = "tpe",
        n_trials: int = 20,
        batch: int | None = None,
        seed: int = 0,
        objective: str | None = None,
        direction: str | None = None,
        space: dict | None = None,
        params: dict | None = None,
        startup: int | None = None,
    ) -> None:
        self.sampler, self.n_trials, self.batch, self.seed = sampler, n_trials, batch, seed
        self.startup = startup
        self.objective, self.direction = objective, direction
        self.space = dict(space or {})
        self.params = dict(params or {})
        self.config: DictConfig | None = None
        self.hydra_context: HydraContext | None = None
        self.launcher: Launcher | None = None

    def setup(self, *, hydra_context: HydraContext, task_function: TaskFunction, config: DictConfig) -> None:
        from hydra.core.plugins import Plugins

        self.hydra_context, self.config = hydra_context, config
        self.launcher = Plugins.instance().instantiate_launcher(
            hydra_context=hydra_context, task_function=task_function, config=config
        )

    # ---------------------------------------------------------------- checks and the plan

    def check(self) -> None:
        from harness import HarnessError

        if self.sampler not in SAMPLERS:
            raise HarnessError(f"hydra.sweeper.sampler={self.sampler!r} is unknown; allowed: {', '.join(SAMPLERS)}")
        from harness.tasks import check_positive_int

        check_positive_int("hydra.sweeper.n_trials", self.n_trials)
        if self.batch is not None:
            check_positive_int("hydra.sweeper.batch", self.batch)
        if self.startup is not None:
            check_positive_int("hydra.sweeper.startup", self.startup)
            if self.sampler != "tpe":
                raise HarnessError(
                    f"hydra.sweeper.startup applies to sampler=tpe only (sampler is {self.sampler}); "
                    "leave it null for random and qmc"
                )
        if self.direction not in (None, "maximize", "minimize"):
            raise HarnessError(f"hydra.sweeper.direction={self.direction!r}; allowed: maximize, minimize, null (the task's)")
        if not self.space:
            raise HarnessError(
                "hydra.sweeper.space is empty: name what to search, e.g. +hydra.sweeper.space.optimizer.lr='loguniform(1e-4, 1)'"
            )
        parse_space(self.space)
        if self.objective is not None and (not isinstance(self.objective, str) or "/" not in self.objective):
            raise HarnessError(
                f"hydra.sweeper.objective must be null (the task's primary metric on validation) or a "
                f"logged metric such as val/accuracy, got {self.objective!r}"
            )

    def methods(self, arguments: list[str]) -> tuple[list[tuple[str, ...]], list[str | None]]:
        """The grid's combinations without the seed (methods), and the seeds (None: the config's)."""
        from hydra._internal.core_plugins.basic_sweeper import BasicSweeper

        from harness import HarnessError

        assert self.hydra_context is not None, "setup() comes first"
        parser = OverridesParser.create(config_loader=self.hydra_context.config_loader)
        overrides = parser.parse_overrides([f"{k}={v}" for k, v in self.params.items()] + list(arguments))
        clash = sorted({o.get_key_element().lstrip("+~") for o in overrides if o.is_sweep_override()} & set(self.space))
        if clash:
            raise HarnessError(f"{', '.join(clash)} is both searched (hydra.sweeper.space) and swept on the grid; choose one")
        for o in overrides:  # one value given for a searched key (smoke=on, or by hand) pins it
            key = o.get_key_element().lstrip("+~")
            if key in self.space:
                print(
                    f"search: {key} is pinned to {o.get_value_element_as_str()} on the command line or grid: not searched",
                    flush=True,
                )
                del self.space[key]
        jobs = BasicSweeper.split_arguments(overrides, None)[0]
        methods: list[tuple[str, ...]] = []
        seeds: list[str | None] = []
        for job in jobs:
            seed = next((o.split("=", 1)[1] for o in job if o.split("=", 1)[0].lstrip("+") == "seed"), None)
            method = tuple(o for o in job if o.split("=", 1)[0].lstrip("+") != "seed")
            if method not in methods:
                methods.append(method)
            if seed not in seeds:
                seeds.append(seed)
        return methods, seeds

    def objective_of(self, method: tuple[str, ...]) -> tuple[str, Literal["maximize", "minimize"]]:
        """(metric, direction): as configured (checked: maximize or minimize), else the task's primary metric on validation."""
        configured: Literal["maximize", "minimize"] | None = (
            "maximize" if self.direction == "maximize" else "minimize" if self.direction == "minimize" else None
        )
        if self.objective and configured:
            return self.objective, configured
        from hydra.utils import instantiate

        assert self.hydra_context is not None and self.config is not None, "setup() comes first"
        cfg = self.hydra_context.config_loader.load_sweep_config(self.config, list(method))
        task = instantiate(cfg.task)
        metric = self.objective or "val/" + task.primary_metric.split("/", 1)[-1]
        return metric, configured or ("maximize" if task.mode == "max" else "minimize")

    def make_sampler(self):
        import optuna

        if self.sampler == "random":
            return optuna.samplers.RandomSampler(seed=self.seed)
        if self.sampler == "qmc":
            return optuna.samplers.QMCSampler(seed=self.seed, scramble=True)
        import warnings

        startup = {} if self.startup is None else {"n_startup_trials": self.startup}
        with warnings.catch_warnings():  # constant_liar is marked experimental
            warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
            return optuna.samplers.TPESampler(seed=self.seed, constant_liar=True, **startup)

    # ---------------------------------------------------------------- the sweep

    def sweep(self, arguments: list[str]) -> Any:
        import optuna

        assert self.config is not None and self.launcher is not None, "setup() comes first"
        self.check()
        methods, seeds = self.methods(arguments)
        space = parse_space(self.space)
        if not space:  # everything searched is pinned: one trial is the whole search
            self.n_trials = 1
        from harness.sweep import callback as sweep_state

        if sweep_state.ACTIVE is not None:  # the sweep's count of jobs, for its summary
            sweep_state.ACTIVE.info["jobs"] = len(methods) * len(seeds) * self.n_trials
        metric, direction = self.objective_of(methods[0])
        labels = method_labels(methods)
        optuna.logging.set_verbosity(optuna.logging.WARNING)
        studies = [optuna.create_study(direction=direction, sampler=self.make_sampler()) for _ in methods]
        batch = self.batch or (self.n_trials if self.sampler in ("random", "qmc") else 4)
        sweep_dir = Path(self.config.hydra.sweep.dir)
        sweep_dir.mkdir(parents=True, exist_ok=True)
        OmegaConf.save(self.config, sweep_dir / "multirun.yaml")
        name = self.sampler
        if self.sampler == "tpe":
            import inspect

            default = inspect.signature(optuna.samplers.TPESampler).parameters["n_startup_trials"].default
            start = default if self.startup is None else self.startup
            name = f"tpe (its first {min(start, self.n_trials)} trials random)"
        print(
            f"search: {name}, {self.n_trials} trials x {len(seeds)} seed(s) for each of {len(methods)} method(s), "
            f"{direction} {metric} (mean over seeds), rounds of {batch} trials",
            flush=True,
        )
        asked, job_idx, returns = 0, 0, []
        while asked < self.n_trials:
            n = min(batch, self.n_trials - asked)
            trials = [[study.ask(space) for _ in range(n)] for study in studies]
            jobs, owners = [], []
            for m, (method, its) in enumerate(zip(methods, trials)):
                for t, trial in enumerate(its):
                    setting = [f"{k}={fmt(v)}" for k, v in trial.params.items()]
                    for seed in seeds:
                        jobs.append(list(method) + setting + ([f"seed={seed}"] if seed is not None else []))
                        owners.append((m, t))
            results = self.launcher.launch(jobs, initial_job_idx=job_idx)
            job_idx += len(jobs)
            returns.append(results)
            scores: dict[tuple[int, int], list[float | None]] = {}
            for owner, r in zip(owners, results):
                scores.setdefault(owner, []).append(self.score(r, metric))
            for (m, t), values in scores.items():
                trial = trials[m][t]
                if any(v is None for v in values):
                    studies[m].tell(trial, state=optuna.trial.TrialState.FAIL)
                else:
                    studies[m].tell(trial, statistics.fmean(v for v in values if v is not None))
            asked += n
            for label, study in zip(labels, studies):
                done = [t for t in study.trials if t.state == optuna.trial.TrialState.COMPLETE]
                at = ", ".join(f"{k}={fmt(v)}" for k, v in study.best_params.items()) if done else ""
                best = (f"best {study.best_value:.4g}" + (f" at {at}" if at else "")) if done else "no trial finished yet"
                print(f"search {label}: {asked}/{self.n_trials} trials, {best}", flush=True)
        return returns

    @staticmethod
    def score(r, metric: str) -> float | None:
        """A job's objective value, or None when it did not finish with a finite one."""
        try:
            result = r.return_value
        except Exception:  # noqa: BLE001  the job raised: a failed trial
            return None
        if result is None or getattr(result, "outcome", None) not in ("finished", "skipped"):
            return None
        value = (getattr(result, "final", None) or {}).get(metric)
        return float(value) if value is not None and math.isfinite(value) else None

    def validate_batch_is_legal(self, batch: Sequence[Sequence[str]]) -> None:  # jobs are checked as they run
        return None
