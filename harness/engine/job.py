"""What a job is, from its composed config to its MLflow identity: the config hash that resume matches on,
the group choices, the run's name and experiment, its place in a sweep (``Spec``); and ``compose`` for
in-process runs (tests, the benchmark)."""

from __future__ import annotations

import hashlib
import json
import sys
from dataclasses import dataclass, field

from omegaconf import DictConfig

from harness.config import schema
from harness.config.values import plain, same_value
from harness.sweep.journal import JobContext, job_context
from harness.tracking.runs import experiment_name

NOT_IN_HASH = schema.not_in_hash()  # knobs that do not change results
NOT_IN_RUN_NAME = schema.not_in_run_name()


def override_key(override: str) -> str:
    """The key of a command-line override (``+loss.delta=0.5`` -> ``loss.delta``)."""
    return override.split("=", 1)[0].lstrip("+~")


def fail(message: str, code: int = 2):
    print(f"error: {message}", file=sys.stderr)
    sys.exit(code)


def config_hash(cfg: DictConfig) -> str:
    tree = plain(cfg)
    for key in NOT_IN_HASH:
        tree.pop(key, None)
    for key in schema.unhashed_while_null():  # seed kinds, steps: null as before they existed (old configs keep their hash)
        if tree.get(key) is None:
            tree.pop(key, None)
    for group in schema.GROUPS:  # a component's declared traits say how it runs, not what it computes
        if isinstance(tree.get(group), dict):
            tree[group].pop(schema.TRAITS_KEY, None)
    return hashlib.sha256(json.dumps(tree, sort_keys=True, default=str).encode()).hexdigest()[:16]


# ---------------------------------------------------------------- what a job is


@dataclass
class Spec:
    """One job as composed: its config, the group options chosen, its command-line overrides and,
    in a sweep, its place there (number, sweep folder, the sweep's experiment and parent run)."""

    cfg: DictConfig
    names: dict[str, str]
    overrides: list[str]
    ctx: JobContext | None = None
    hash: str = field(init=False)
    run_name: str = field(init=False)
    experiment: str = field(init=False)

    def __post_init__(self):
        self.hash = config_hash(self.cfg)
        sweep = self.ctx.sweep if self.ctx else None
        varies = sweep.varies if sweep else ()  # in a sweep: named by what varies across its jobs (all overrides in the tag)
        shown = [o for o in self.overrides if override_key(o) in varies] if varies else []
        self.run_name = ",".join(shown or [o for o in self.overrides if not o.startswith(NOT_IN_RUN_NAME)]) or "defaults"
        self.experiment = (sweep.experiment if sweep else None) or experiment_name(self.cfg, self.names["task"])

    def journal(self, outcome: str, **info) -> None:
        """This job's line in the sweep's journal (nothing for a single run)."""
        if self.ctx:
            self.ctx.record(outcome, **info)


def names_of(cfg: DictConfig, choices: dict[str, str]) -> dict[str, str]:
    names = {
        g: choices.get(g) or str(cfg[g].get("_target_", g)).rsplit(".", 1)[-1]
        for g in ("task", "loss", "optimizer", "schedule")
        if isinstance(cfg.get(g), DictConfig)
    }
    names.setdefault("loss", "none")
    return names


def spec_from_hydra(cfg: DictConfig, hydra_cfg=None) -> Spec:
    """The Spec of a job Hydra composed (hydra_cfg: its hydra node; default: the current HydraConfig)."""
    from hydra.core.hydra_config import HydraConfig

    hc = hydra_cfg if hydra_cfg is not None else (HydraConfig.get() if HydraConfig.initialized() else None)
    choices, overrides = (dict(hc.runtime.choices), list(hc.overrides.task)) if hc is not None else ({}, [])
    return Spec(cfg, names_of(cfg, choices), overrides, job_context(hc))


def unswept_note(cfg: DictConfig, hc=None) -> str | None:
    """For a single run of an experiment whose sweep fixes knobs (one value each, e.g. sequence_losses_mnist's
    task.max_length=6): Hydra applies a sweep's values only under --multirun, so this run trains the config's own
    values instead. A line saying which, and how to train the study's (hc: the hydra node; default: HydraConfig)."""
    from hydra.core.hydra_config import HydraConfig
    from omegaconf import OmegaConf

    hc = hc if hc is not None else (HydraConfig.get() if HydraConfig.initialized() else None)
    if hc is None:
        return None
    given = {override_key(o) for o in hc.overrides.task}
    differ = []
    for key, value in (hc.sweeper.get("params") or {}).items():
        text = str(value)
        if key in given or "," in text or "(" in text:  # set here, or a grid / a search space: a single run picks one
            continue
        own = OmegaConf.select(cfg, key, default=None)
        if not same_value(own, text):
            differ.append((key, text, own))
    if not differ:
        return None
    return (
        "note: this experiment's sweep sets "
        + ", ".join(f"{k}={v}" for k, v, _ in differ)
        + "; a single run trains the config's "
        + ", ".join(f"{k}={own}" for k, _, own in differ)
        + " (give them as overrides to train the study's workload, or use --multirun)"
    )


def compose(*overrides: str) -> DictConfig:
    """The config `python -m harness OVERRIDES` hands to run(), with HydraConfig set as Hydra sets it
    (for in-process runs: tests, the benchmark)."""
    from hydra import compose as hydra_compose
    from hydra import initialize_config_dir
    from hydra.core.hydra_config import HydraConfig
    from omegaconf import open_dict

    from harness.config.schema import CONF_DIR

    with initialize_config_dir(version_base="1.3", config_dir=str(CONF_DIR)):
        cfg = hydra_compose("config", overrides=list(overrides), return_hydra_config=True)
    HydraConfig.instance().set_config(cfg)
    with open_dict(cfg):
        del cfg["hydra"]
    return cfg
