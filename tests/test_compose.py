"""ComposeOnce (harness.config.compose): a job derived from an already composed one equals the job Hydra composes in full."""

import pytest
from hydra import initialize_config_dir
from hydra.core.global_hydra import GlobalHydra
from hydra.types import RunMode
from omegaconf import OmegaConf, open_dict

from harness.config.checks import CONF_DIR
from harness.config.compose import ComposeOnce

JOBS = [
    ["task=regression", "loss=mse", "seed=0"],
    ["task=regression", "loss=mse", "seed=7"],  # derived: a plain value
    ["task=regression", "loss=huber", "seed=7"],  # a group choice: composed in full
    ["task=regression", "loss=huber", "seed=2", "optimizer.lr=0.5"],
    ["task=regression", "loss=huber", "seed=3", "optimizer.lr=0.01"],  # derived from the one above
    ["task=regression", "loss=huber", "seed=3", "task.outlier_fraction=0.2"],
    ["task=regression", "loss=huber", "seed=4", "task.outlier_fraction=0.05"],
    ["task=imbalanced", "loss=focal", "seed=1", "loss.gamma=1.0"],
    ["task=imbalanced", "loss=focal", "seed=2", "loss.gamma=5.0"],
    ["task=imbalanced", "loss=focal", "seed=2", "tracking.experiment=x"],  # null before: composed in full
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


def test_the_same_job_twice_gets_two_configs(loader):
    # seed=0,0: the sweeper validates both, then a launcher takes the first and sets its hydra.job.id;
    # the second must not be handed that same object (the basic launcher crashed on it, read-only;
    # the stacked launcher recorded both jobs under one number)
    master = loader.load_configuration("config", ["hydra/launcher=basic"], RunMode.MULTIRUN)
    once = ComposeOnce(loader)
    for _ in range(2):
        once.load_sweep_config(master, ["seed=5"])
    first = once.load_sweep_config(master, ["seed=5"])
    with open_dict(first):
        first.hydra.job.id = first.hydra.job.num = 0
    second = once.load_sweep_config(master, ["seed=5"])
    assert second is not first and OmegaConf.is_missing(second.hydra.job, "id")
    assert plain(second) == plain(loader.load_sweep_config(master, ["seed=5"]))


def test_a_batch_larger_than_the_memo_derives_each_job_at_most_twice(loader, monkeypatch):
    """The sweeper validates the whole batch, then the launcher asks for each job in the same order:
    with a memo that evicted its oldest, every job of a batch larger than the memo was derived
    twice and handed out as a fresh copy; now the first MEMO_SIZE come from the memo."""
    import harness.config.compose as compose

    monkeypatch.setattr(compose, "MEMO_SIZE", 4)
    master = loader.load_configuration("config", ["hydra/launcher=basic"], RunMode.MULTIRUN)
    once = ComposeOnce(loader)
    derived = []
    monkeypatch.setattr(once, "_derive", lambda m, o, _d=once._derive: derived.append(o) or _d(m, o))
    batch = [[f"seed={i}"] for i in range(6)]
    validated = [once.load_sweep_config(master, list(o)) for o in batch]
    launched = [once.load_sweep_config(master, list(o)) for o in batch]
    assert len(derived) == 6 + 2
    assert all(a is b for a, b in zip(validated[:4], launched[:4]))
    assert [c.seed for c in launched] == list(range(6))
