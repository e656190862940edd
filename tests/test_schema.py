"""The config schema declares every run knob once, and every module reads its roles from it."""

from dataclasses import fields

from omegaconf import OmegaConf

from harness.config import schema
from harness.config.checks import CONF_DIR
from harness.engine.job import compose, config_hash, names_of
from harness.engine.record import run_params


def test_the_run_knobs_are_declared_in_the_schema_alone():
    written = OmegaConf.load(CONF_DIR / "config.yaml")
    assert set(written) == {"defaults", "hydra"}, "a run knob in conf/config.yaml would be declared twice"
    assert written.defaults[0] == "harness_schema"
    cfg = compose()
    assert set(cfg) == schema.top_level()
    for key, f in schema.walk():
        if f.metadata.get("group"):
            continue
        value = OmegaConf.select(cfg, key)
        if not isinstance(value, dict | type(cfg)):
            assert value == OmegaConf.select(OmegaConf.create(OmegaConf.structured(schema.Config)), key), key
        assert isinstance(f.metadata["role"], schema.Role), key


def test_every_knob_with_a_rule_refuses_a_bad_value_in_one_line():
    import pytest

    from harness import HarnessError
    from harness.config.checks import check_run_knobs

    for key, _rule, _why in schema.rules():
        cfg = compose(f"{key}=[1,2]")
        with pytest.raises(HarnessError, match=rf"^{key.replace('.', '[.]')} must be "):
            check_run_knobs(cfg)


def test_the_roles_give_the_lists_the_modules_used_to_keep():
    # the lists as they were written out in engine/run.py, engine/bundles.py and report/ before the schema
    assert set(schema.not_in_hash()) == {"tracking", "threads", "data_dir", "progress", "eval_batch_size", "resume", "study"}
    assert set(schema.not_in_run_name()) == {
        "tracking.",
        "progress",
        "hydra",
        "experiment=",
        "smoke=",
        "resume",
        "data_dir",
        "threads",
    } | {"optimizer.traits", "loss.traits", "+optimizer.traits", "+loss.traits"}  # and now traits, which are no knob
    assert set(schema.member_keys()) == {"seed", "loss", "optimizer", "schedule", "lr_scaling", "lr_reference_batch"} | {
        "init_seed",
        "order_seed",
    }  # and the seed kinds split off seed since
    assert set(schema.free_keys()) == {"progress", "resume"}
    internal = ["progress", "resume", "data_dir", "eval_batch_size", "threads", "task.data_dir", "task.download", "loss.targets"]
    assert not any(schema.is_param(k) for k in internal + ["tracking.uri", "study.tune", "optimizer._target_", "loss._partial_"])
    assert all(schema.is_param(k) for k in ["seed", "device", "epochs", "optimizer.lr", "task.n_train", "loss.delta"])
    not_factors = ["seed", "data_dir", "threads", "progress", "resume", "eval_batch_size", "device"]
    not_factors += ["tracking.uri", "task.data_dir", "task.download", "loss.targets", "study.compare", "hydra.run.dir"]
    assert not any(schema.is_factor(k) for k in not_factors)
    assert all(schema.is_factor(k) for k in ["optimizer.lr", "batch_size", "task.outlier_fraction", "an.old.param"])


def test_a_components_traits_are_no_knob():
    cfg = compose("task=regression")
    before = config_hash(cfg)
    OmegaConf.set_struct(cfg, False)
    cfg.optimizer.traits = {"stacking": "shared"}
    assert config_hash(cfg) == before
    params = run_params(cfg, names_of(cfg, {}))
    assert not [k for k in params if "traits" in k]
    assert not schema.is_factor("optimizer.traits.stacking")
    assert "traits" in schema.not_knobs()


def test_roles_cover_every_field():
    for cls in (schema.Config, schema.TrackingConfig, schema.StudyConfig):
        for f in fields(cls):
            assert "role" in f.metadata, f.name


def test_a_studys_margin_is_checked_and_written_on_the_sweeps_parent():
    import json

    import pytest

    from harness import HarnessError
    from harness.config.checks import check_run_knobs
    from harness.sweep.plan import study_tags

    tags = study_tags(compose("study.compare=[loss]", "study.margin=5%"))
    assert json.loads(tags["harness.margin"]) == "5%"
    tags = study_tags(compose("study.compare=[loss]", "study.margin={test/mse: 0.1, accuracy: 5%}"))
    assert json.loads(tags["harness.margin"]) == {"test/mse": 0.1, "accuracy": "5%"}
    assert "harness.margin" not in study_tags(compose("study.compare=[loss]"))
    for bad in ("study.margin=0", "study.margin=150%", "study.margin=[1]"):
        with pytest.raises(HarnessError, match="study.margin must be null, a number > 0"):
            check_run_knobs(compose(bad))


def test_a_config_from_before_the_seed_split_keeps_its_hash():
    # null init_seed / order_seed mean "the run's seed" and stay out of the hash, so resume still finds old runs
    assert config_hash(compose("seed=3")) == config_hash(compose("seed=3", "init_seed=null", "order_seed=null"))
    assert config_hash(compose("seed=3", "order_seed=1")) != config_hash(compose("seed=3"))
    params = run_params(compose("seed=3", "order_seed=1"), {})
    assert (str(params["seed"]), params["init_seed"], params["order_seed"]) == ("3", "3", "1")
