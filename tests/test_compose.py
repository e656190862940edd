"""ComposeOnce (harness.compose): a job derived from an already composed one equals the job Hydra composes in full."""
import pytest
from hydra import initialize_config_dir
from hydra.core.global_hydra import GlobalHydra
from hydra.types import RunMode
from omegaconf import OmegaConf

from harness.checks import CONF_DIR
from harness.compose import ComposeOnce

JOBS = [
    ["task=regression", "loss=mse", "seed=0"],
    ["task=regression", "loss=mse", "seed=7"],                      # derived: a plain value
    ["task=regression", "loss=huber", "seed=7"],                    # a group choice: composed in full
    ["task=regression", "loss=huber", "seed=2", "optimizer.lr=0.5"],
    ["task=regression", "loss=huber", "seed=3", "optimizer.lr=0.01"],  # derived from the one above
    ["task=regression", "loss=huber", "seed=3", "task.outlier_fraction=0.2"],
    ["task=regression", "loss=huber", "seed=4", "task.outlier_fraction=0.05"],
    ["task=imbalanced", "loss=focal", "seed=1", "loss.gamma=1.0"],
    ["task=imbalanced", "loss=focal", "seed=2", "loss.gamma=5.0"],
    ["task=imbalanced", "loss=focal", "seed=2", "tracking.experiment=x"],   # null before: composed in full
    ["task=imbalanced", "loss=focal", "seed=2", "tracking.experiment=y"],
]


@pytest.fixture
def loader():
    with initialize_config_dir(version_base="1.3", config_dir=str(CONF_DIR)):
        yield GlobalHydra.instance().config_loader()


def plain(cfg):
    tree = OmegaConf.to_container(cfg, resolve=False)
    tree["hydra"].pop("runtime", None)  # output dir and choices: set by the launcher at run time
    return tree


def test_derived_jobs_equal_full_compositions(loader):
    master = loader.load_configuration("config", ["hydra/launcher=basic"], RunMode.MULTIRUN)
    once = ComposeOnce(loader)
    for overrides in JOBS:
        derived = once.load_sweep_config(master, list(overrides))
        full = loader.load_sweep_config(master, list(overrides))
        assert plain(derived) == plain(full), overrides
        assert OmegaConf.to_container(derived.hydra.overrides.task) == overrides
        assert derived.hydra.job.override_dirname == full.hydra.job.override_dirname
    assert len(once._templates) >= 3  # some jobs were derived, not composed


def test_the_launchers_second_call_gets_the_validated_config(loader):
    master = loader.load_configuration("config", ["hydra/launcher=basic"], RunMode.MULTIRUN)
    once = ComposeOnce(loader)
    first = once.load_sweep_config(master, ["seed=5"])
    assert once.load_sweep_config(master, ["seed=5"]) is first
