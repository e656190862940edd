"""A component's traits live in its YAML: the stacked engine reads them, and they are true."""

import pytest
from omegaconf import OmegaConf

from harness import HarnessError
from harness.config import traits
from harness.config.checks import CONF_DIR, check_config
from harness.engine.job import compose, names_of
from tests.conftest import mlflow_runs, run_cli
from tests.test_stacked import check_equivalent

OPTIMIZERS = sorted(p.stem for p in CONF_DIR.glob("optimizer/*.yaml"))
SHARED = [o for o in OPTIMIZERS if traits.shipped("optimizer", o)[1] == {"stacking": "shared"}]


def test_every_shipped_optimizer_says_how_it_stacks():
    for name in OPTIMIZERS:
        _, declared = traits.shipped("optimizer", name)
        assert declared and declared["stacking"] in traits.STACKINGS, name
        if declared["stacking"] == "solo":
            assert declared.get("why"), f"{name} runs alone and must say why"
    assert {"adam", "sgd", "rmsprop", "lion"} <= set(SHARED)
    assert {"muon", "soap", "adafactor", "lbfgs", "schedulefree_adamw"} == {
        o for o in OPTIMIZERS if traits.shipped("optimizer", o)[1]["stacking"] == "solo"
    }


@pytest.mark.parametrize("name", [o for o in SHARED if o != "lion"])  # lion: pytorch-optimizer's import costs ~2 s
def test_a_shared_optimizer_is_shared_with_the_same_arithmetic_as_one_each(name):
    # two members with one config share one optimizer over their slices: each must train as it would alone
    check_equivalent([[f"optimizer={name}", "seed=0"], [f"optimizer={name}", "seed=1"]], common=["task=regression"])


def test_traits_are_checked_in_one_line():
    for overrides, message in [
        (["+optimizer.traits.speed=fast"], "unknown trait optimizer.traits.speed; optimizer's traits are stacking, why"),
        (["optimizer.traits.stacking=sometimes"], "optimizer.traits.stacking must be one of shared, per_member, solo"),
        (["loss=mse", "loss.traits.per_sample_mean=1"], "loss.traits.per_sample_mean must be true or false"),
        (["+task.traits.x=1"], "task.traits is not read"),
    ]:
        cfg = compose("task=regression", *overrides)
        with pytest.raises(HarnessError, match=message.replace(".", "[.]")):
            check_config(cfg, names_of(cfg, {}))


def test_a_class_changed_from_its_files_does_not_keep_the_files_traits():
    cfg = compose("optimizer=adam", "optimizer._target_=torch.optim.Adamax")
    got = traits.of(cfg, "optimizer", "adam", ["optimizer._target_=torch.optim.Adamax"])
    assert got.stacking == "solo" and "declare its own as optimizer.traits" in got.why
    overrides = ["optimizer._target_=torch.optim.Adamax", "optimizer.traits.stacking=shared"]
    assert traits.of(compose(*overrides), "optimizer", "adam", overrides).stacking == "shared"
    assert traits.of(compose("optimizer=adam"), "optimizer", "adam").stacking == "shared"
    bare = compose("~optimizer", "+optimizer={_target_: torch.optim.Adamax, _partial_: true}")
    assert traits.of(bare, "optimizer", None).stacking == "solo"  # no traits: it runs alone, correctly
    assert traits.without(OmegaConf.create({"_target_": "x", "traits": {"stacking": "shared"}})) == {"_target_": "x"}


NEW_OPTIMIZER = """\
# an optimizer the package does not ship: one file, in a config directory of one's own
_target_: torch.optim.Adamax
_partial_: true
lr: 0.002
traits:
  stacking: shared
"""


@pytest.mark.slow
def test_a_new_optimizer_is_one_yaml_file_and_runs_solo_and_stacked(tmp_path):
    (tmp_path / "conf" / "optimizer").mkdir(parents=True)
    (tmp_path / "conf" / "optimizer" / "adamax_mine.yaml").write_text(NEW_OPTIMIZER)
    search = f"hydra.searchpath=[file://{tmp_path / 'conf'}]"
    small = ["task=regression", "epochs=1", "task.n_train=200", "task.n_val=50", "task.n_test=50", "optimizer=adamax_mine"]
    one = run_cli(search, *small, cwd=tmp_path)
    assert one.returncode == 0, one.stderr[-2000:]
    swept = run_cli("--multirun", search, *small, "seed=1,2,3", cwd=tmp_path)
    assert swept.returncode == 0, swept.stderr[-2000:]
    assert "bundle" in swept.stdout and "3 finished" in swept.stdout, swept.stdout
    _, runs = mlflow_runs(tmp_path, "regression")
    children = [r for r in runs if r.data.tags.get("harness.role") != "sweep"]
    assert len(children) == 4 and all(r.info.status == "FINISHED" for r in children)
    assert {r.data.params["optimizer"] for r in children} == {"adamax_mine"}
    assert all(r.data.params["optimizer.lr"] == "0.002" for r in children)
    assert not any("traits" in k for r in children for k in r.data.params)
