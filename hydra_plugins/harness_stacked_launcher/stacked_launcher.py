"""The stacked launcher: a Hydra launcher plugin, built as hydra-joblib-launcher is.

Hydra hands it the sweep's jobs; it takes each job's config as the sweeper's validation composed it
(``harness.config.compose.ComposeOnce``), then ``harness.engine.bundles`` groups
compatible jobs into bundles that train as one stacked model and runs the rest as ordinary jobs,
in this process, one after another; with ``workers`` > 1 (a GPU's default), bundles train side by
side in worker processes.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from pathlib import Path

from hydra.core.utils import JobReturn, JobStatus, configure_log, run_job, setup_globals
from hydra.plugins.launcher import Launcher
from hydra.types import HydraContext, TaskFunction
from omegaconf import DictConfig, open_dict

log = logging.getLogger(__name__)


class StackedLauncher(Launcher):
    def __init__(
        self, max_members: int = 64, memory_gb: float | None = None, workers: int | None = None, vmap_on_cpu: bool = False
    ) -> None:
        self.max_members, self.memory_gb, self.workers, self.vmap_on_cpu = max_members, memory_gb, workers, vmap_on_cpu
        self.config: DictConfig | None = None
        self.task_function: TaskFunction | None = None
        self.hydra_context: HydraContext | None = None

    def setup(self, *, hydra_context: HydraContext, task_function: TaskFunction, config: DictConfig) -> None:
        from harness.config.compose import ComposeOnce

        if not isinstance(hydra_context.config_loader, ComposeOnce):  # the sweep callback has usually done it
            hydra_context.config_loader = ComposeOnce(hydra_context.config_loader)  # shared with the sweeper
        self.config, self.hydra_context, self.task_function = config, hydra_context, task_function

    def run_solo(self, cfg: DictConfig) -> JobReturn:
        assert self.hydra_context is not None and self.task_function is not None, "setup() comes first"
        return run_job(
            hydra_context=self.hydra_context,
            task_function=self.task_function,
            config=cfg,
            job_dir_key="hydra.sweep.dir",
            job_subdir_key="hydra.sweep.subdir",
        )

    def check(self) -> None:
        """The launcher's knobs, one line for a bad one (``harness.sweep.plan.check_sweep`` calls it before the
        sweep writes anything)."""
        from harness import HarnessError
        from harness.tasks import check_positive_int

        check_positive_int("hydra.launcher.max_members", self.max_members)
        if self.memory_gb is not None and (
            isinstance(self.memory_gb, bool) or not isinstance(self.memory_gb, (int, float)) or not self.memory_gb > 0
        ):
            raise HarnessError(f"hydra.launcher.memory_gb must be null or a number > 0, got {self.memory_gb!r}")
        if self.workers is not None and (isinstance(self.workers, bool) or not isinstance(self.workers, int) or self.workers < 1):
            raise HarnessError(
                f"hydra.launcher.workers must be null (1 on a CPU, 4 on a GPU) or a positive integer, got {self.workers!r}"
            )
        if not isinstance(self.vmap_on_cpu, bool):
            raise HarnessError(f"hydra.launcher.vmap_on_cpu must be true or false, got {self.vmap_on_cpu!r}")

    def launch(self, job_overrides: Sequence[Sequence[str]], initial_job_idx: int) -> Sequence[JobReturn]:
        from harness.engine.launch import launch

        assert self.config is not None and self.hydra_context is not None, "setup() comes first"
        self.check()
        setup_globals()
        configure_log(self.config.hydra.hydra_logging, self.config.hydra.verbose)
        Path(str(self.config.hydra.sweep.dir)).mkdir(parents=True, exist_ok=True)
        configs = []
        for i, overrides in enumerate(job_overrides):
            cfg = self.hydra_context.config_loader.load_sweep_config(self.config, list(overrides))
            with open_dict(cfg):
                cfg.hydra.job.id = cfg.hydra.job.num = initial_job_idx + i
            configs.append(cfg)
        results = launch(configs, self.run_solo, self.max_members, self.memory_gb, self.workers, self.vmap_on_cpu)
        return [
            r
            if isinstance(r, JobReturn)
            else JobReturn(
                overrides=list(cfg.hydra.overrides.task),
                cfg=cfg,
                hydra_cfg=cfg,
                status=JobStatus.COMPLETED,
                _return_value=r,
                task_name=cfg.hydra.job.name,
                working_dir=str(Path.cwd()),
            )
            for cfg, r in zip(configs, results)
        ]
