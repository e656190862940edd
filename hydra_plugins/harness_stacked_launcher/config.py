"""`hydra/launcher=stacked` and its knobs (registered when Hydra scans the hydra_plugins package)."""

from dataclasses import dataclass

from hydra.core.config_store import ConfigStore


@dataclass
class StackedLauncherConf:
    _target_: str = "hydra_plugins.harness_stacked_launcher.stacked_launcher.StackedLauncher"
    # the most members one bundle holds (a bigger group of compatible jobs is split)
    max_members: int = 64
    # memory the bundles that train at once may use, in GiB; null: half of the GPU's free memory, or a quarter of the available RAM
    memory_gb: float | None = None
    # bundles trained at the same time, each in its own process; null: 1 on a CPU (one bundle's threads
    # use its cores), 4 on a GPU (a bundle of small models leaves it mostly idle)
    workers: int | None = None
    # stack models that only vmap can (CNNs, the sequence model) on a CPU too; false: they run alone
    # there, where a stacked convolution trains slower than one job after another (on a GPU they stack)
    vmap_on_cpu: bool = False


ConfigStore.instance().store(group="hydra/launcher", name="stacked", node=StackedLauncherConf, provider="harness")
