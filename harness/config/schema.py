"""The config schema: every run, tracking and study knob declared once, with its default, its check and its role.

``Config`` is registered in Hydra's ConfigStore as ``harness_schema`` (``register``, called when Hydra
scans ``hydra_plugins``); ``conf/config.yaml`` lists it first in its defaults, so the knobs' defaults
come from here and the groups (task, loss, optimizer, schedule) and studies override them. The knobs
are typed ``Any`` for Hydra, so that a bad value reaches ``harness.config.checks`` and gets its one
line there (the check is the knob's ``rule``); the component groups stay open nodes, checked against
their class's signature.

A knob's ``Role`` says what it is, and every module that needs to know reads it here:
- ``hash``: it changes results, so it is part of the config hash that resume matches runs on;
- ``name``: set on the command line, it is shown in the run's name;
- ``param``: it is logged as an MLflow param (the rest stays in the run's config.yaml artifact);
- ``factor``: a report may compare runs by it (seeds, devices and bookkeeping are never factors);
- ``stacking``: in a stacked bundle, ``member`` keys may differ between members, ``bundle`` keys are
  shared by all of them, ``free`` keys do not matter to the bundle.
Keys inside the component nodes with a role of their own are in ``COMPONENT_KEYS``; a component's
declared traits (``TRAITS_KEY``) are no knob at all.
"""

import functools
from collections.abc import Iterator
from dataclasses import MISSING, dataclass, field, fields
from pathlib import Path
from typing import Any

from harness.config.values import (
    BOOL,
    LR_SCALINGS,
    NON_NEGATIVE,
    NULL_OR_POSITIVE_INT,
    NULL_OR_SEED,
    POSITIVE_INT,
    SEED,
    SEED_WHY,
    Rule,
    margin_ok,
    positive_int,
)

CONF_DIR = Path(__file__).resolve().parent.parent.parent / "conf"  # the shipped config groups

# ---------------------------------------------------------------- roles


@dataclass(frozen=True)
class Role:
    hash: bool = True
    name: bool = True
    param: bool = True
    factor: bool = True
    stacking: str = "bundle"  # member | bundle | free


RESULT = Role()  # changes results; a factor of a report; the same for all members of a bundle
MEMBER = Role(stacking="member")
BOOKKEEPING = Role(hash=False, name=False, param=False, factor=False)  # how a run is kept, not what it computes


def knob(
    default,
    rule: Rule | None,
    role: Role = RESULT,
    doc: str = "",
    why: str = "",
    null_is_seed: bool = False,
    null_keeps_hash: bool = False,
):
    """A schema field: its default, its check (None: checked elsewhere) and its role. ``null_is_seed``: a
    seed kind split off ``seed`` (null means ``seed``). ``null_keeps_hash`` (every seed kind, and a knob added
    later whose null default changes nothing): left out of the config hash while null, so that a config from
    before the knob keeps its hash and resume still finds its runs."""
    meta = {"rule": rule, "role": role, "doc": doc, "why": why, "null_is_seed": null_is_seed}
    meta["null_keeps_hash"] = null_keeps_hash or null_is_seed
    if isinstance(default, (dict, list)):
        return field(default_factory=lambda: type(default)(default), metadata=meta)
    return field(default=default, metadata=meta)


def group(role: Role, doc: str):
    """A component group: an open node (``_target_`` and the class's knobs), chosen by name."""
    return field(default=None, metadata={"rule": None, "role": role, "doc": doc, "group": True})


# ---------------------------------------------------------------- the schema


@dataclass
class TrackingConfig:
    enabled: Any = knob(True, BOOL, doc="log the run to MLflow")
    uri: Any = knob(
        "${oc.env:MLFLOW_TRACKING_URI,sqlite:///mlflow.db}",
        (lambda v: isinstance(v, str) and bool(v.strip()), "a database URI (sqlite:///mlflow.db) or a server URL"),
        doc="a database URI or an MLflow server http://host:port",
    )
    experiment: Any = knob(
        None,
        (lambda v: v is None or (isinstance(v, str) and bool(v.strip())), "null or a non-empty name"),
        doc="null: the task's name (a study names its own)",
    )
    experiment_suffix: Any = knob("", None, doc='appended to the experiment name (smoke=on: "_smoke")')
    flush_seconds: Any = knob(5, NON_NEGATIVE, doc="buffered metrics are written at least this often (and at the end)")
    lock_timeout: Any = knob(
        60, NON_NEGATIVE, doc="seconds to wait for a store locked by another writer before giving up with one line"
    )


STAGES = ("select", "confirm")


@dataclass
class StudyConfig:
    compare: Any = knob([], None, doc="the methods (config groups or keys), e.g. [optimizer] or [loss]")
    tune: Any = knob([], None, doc="tuned per method, selected by the validation metric, e.g. [optimizer.lr]")
    margin: Any = knob(
        None,
        (margin_ok, "null, a number > 0 (in the metric's units), 'N%' (of the reference's mean) or a mapping metric -> either"),
        doc="the smallest difference that matters, declared before the runs: 0.005 (accuracy), '5%' (MSE)",
    )
    stage: Any = knob(
        "select",
        (lambda v: v in STAGES, f"one of {', '.join(STAGES)}"),
        doc="select: the grid, each method's setting chosen on validation; confirm: those settings rerun on fresh "
        "seeds, and the verdicts read only them",
    )
    rounds: Any = knob(
        1,
        POSITIVE_INT,
        doc="the most confirmation rounds (declared before the first): a round reruns, on new seeds, the pairs "
        "without a full verdict (better, worse, equivalent) and their reference; every look is tested at alpha / rounds",
    )


@dataclass
class Config:
    task: Any = group(RESULT, "the problem: data, model, metrics and natural loss")
    loss: Any = group(MEMBER, "null: the task's natural loss")
    optimizer: Any = group(MEMBER, "any torch.optim.Optimizer class")
    schedule: Any = group(MEMBER, "the learning-rate schedule")
    epochs: Any = knob(10, POSITIVE_INT)
    steps: Any = knob(
        None,
        NULL_OR_POSITIVE_INT,
        doc="a budget in optimizer steps instead of epochs: each run trains round(steps / its steps per epoch) epochs "
        "(at least 1), so every batch size takes about the same number of steps; null: epochs decides",
        null_keeps_hash=True,
    )
    batch_size: Any = knob(
        128,
        (lambda v: v == "full" or positive_int(v), "a positive integer or 'full'"),
        doc='a positive integer, or "full" for full-batch gradient descent',
    )
    lr_scaling: Any = knob(
        "none",
        (lambda v: v in LR_SCALINGS, f"one of {', '.join(LR_SCALINGS)}"),
        MEMBER,
        doc="none | linear | sqrt: scale optimizer.lr by (batch / lr_reference_batch) or its root",
    )
    lr_reference_batch: Any = knob(128, POSITIVE_INT, MEMBER)
    seed: Any = knob(
        0,
        SEED,
        Role(factor=False, stacking="member"),
        doc="the run's seed: its model's initialisation and its batches' order unless init_seed / order_seed say otherwise "
        "(task.data_seed fixes the data)",
        why=SEED_WHY,
    )
    init_seed: Any = knob(
        None,
        NULL_OR_SEED,
        Role(factor=False, stacking="member"),
        doc="the model's initialisation (and the run's other random draws); null: seed",
        why=SEED_WHY,
        null_is_seed=True,
    )
    order_seed: Any = knob(
        None,
        NULL_OR_SEED,
        Role(factor=False, stacking="member"),
        doc="the order of the training batches; null: seed",
        why=SEED_WHY,
        null_is_seed=True,
    )
    device: Any = knob("auto", None, Role(factor=False), doc="auto (CUDA when present) | cpu | cuda | cuda:N")
    threads: Any = knob(
        "auto",
        (lambda v: v == "auto" or positive_int(v), "'auto' or a positive integer"),
        BOOKKEEPING,
        doc="CPU threads for this run: auto never oversubscribes the cores, or a number",
    )
    data_dir: Any = knob(
        "${oc.env:HARNESS_DATA_DIR,data}",
        (lambda v: isinstance(v, str) and bool(v), "a folder path"),
        BOOKKEEPING,
        doc="holds MNIST/raw",
    )
    eval_batch_size: Any = knob(
        "auto",
        (lambda v: v == "auto" or positive_int(v), "'auto' or a positive integer"),
        Role(hash=False, param=False, factor=False),
        doc="evaluation chunk size (memory and speed, not results): auto is 256 for a solo run on one CPU thread (fewer for inputs wider than an MNIST image), else 4096",
    )
    progress: Any = knob(
        True, BOOL, Role(hash=False, name=False, param=False, factor=False, stacking="free"), doc="one line per epoch"
    )
    resume: Any = knob(
        True,
        BOOL,
        Role(hash=False, name=False, param=False, factor=False, stacking="free"),
        doc="in a --multirun, skip jobs whose config already has a FINISHED run in the experiment",
    )
    study: StudyConfig = field(
        default_factory=StudyConfig,
        metadata={"role": Role(hash=False, param=False, factor=False), "doc": "what a study compares and tunes"},
    )
    tracking: TrackingConfig = field(
        default_factory=TrackingConfig, metadata={"role": BOOKKEEPING, "doc": "where and how runs are logged"}
    )


# keys inside the open component nodes that have a role of their own (a prefix: task.data_dir.x is task.data_dir's)
COMPONENT_KEYS: dict[str, Role] = {
    "task.data_dir": Role(param=False, factor=False),  # where the task reads its files (the top-level data_dir)
    "task.download": Role(param=False, factor=False),
    "loss.targets": Role(param=False, factor=False),  # the target kind the loss takes; the loss's name says it
}
TRAITS_KEY = "traits"  # a component's declared traits (harness.traits): taken off before instantiate, never a knob
CLASS_KEYS = ("_target_", "_partial_")  # a component's class: named by the group's choice
# task knobs that choose the model (a method, compared), not the problem (a condition the methods face)
MODEL_KEYS = ("model", "hidden", "activation", "channels", "normalize")
# overrides that choose what to compose, not a knob of the run: never in a run's name
COMPOSE_OVERRIDES = ("hydra", "experiment=", "smoke=", "optimizer.traits", "loss.traits", "+optimizer.traits", "+loss.traits")
GROUPS = ("task", "loss", "optimizer", "schedule")


# ---------------------------------------------------------------- reading the schema


def walk(cls: type | None = None, prefix: str = "") -> Iterator[tuple[str, Any]]:
    """(dotted key, dataclass field) of every knob and section, sections before their knobs."""
    for f in fields(cls or Config):
        key = prefix + f.name
        yield key, f
        if f.type in (StudyConfig, TrackingConfig):
            yield from walk(f.type, key + ".")


@functools.cache
def _roles() -> dict[str, Role]:
    """Each key's role; a section's knobs (tracking.uri) have their section's."""
    fields_ = dict(walk())
    return {k: fields_[k.split(".")[0]].metadata["role"] for k in fields_}


def role(key: str) -> Role:
    """The role of a dotted key: a schema knob's, its section's, a component key's, or a component
    knob's (its group's role: optimizer.lr is a member's, task.n_train the bundle's)."""
    known = _roles()
    parts = key.split(".")
    for i in range(len(parts), 0, -1):
        head = ".".join(parts[:i])
        if head in COMPONENT_KEYS:
            return COMPONENT_KEYS[head]
        if head in known:
            return known[head]
    raise KeyError(key)


def top_level() -> set[str]:
    return {f.name for f in fields(Config)}


def section_keys(section: str) -> set[str]:
    return {k.split(".", 1)[1] for k, _ in walk() if k.startswith(section + ".")}


def _without(flag: str, where=None) -> tuple[str, ...]:
    return tuple(k for k, f in walk() if (where is None or where(k)) and not getattr(f.metadata["role"], flag))


def not_in_hash() -> tuple[str, ...]:
    """Top-level keys that do not change results: left out of the config hash."""
    return _without("hash", lambda k: "." not in k)


def not_in_run_name() -> tuple[str, ...]:
    """Override prefixes never shown in a run's name (a section's name ends in a dot)."""
    return COMPOSE_OVERRIDES + tuple(k + ("." if is_section(k) else "") for k in _without("name", lambda k: "." not in k))


def is_section(key: str) -> bool:
    return key in ("study", "tracking")


def _flagged_off(flag: str, key: str) -> bool:
    try:
        return not getattr(role(key), flag)
    except KeyError:
        return False


def is_param(key: str) -> bool:
    """Whether a flattened config key is logged as a param (class paths and traits never are)."""
    last = key.rsplit(".", 1)[-1]
    if last in CLASS_KEYS or is_trait(key):
        return False
    return not _flagged_off("param", key)


def is_factor(key: str) -> bool:
    """Whether a param may be a report's factor (for params of old runs too, which logged more keys)."""
    return key.split(".")[0] != "hydra" and not is_trait(key) and not _flagged_off("factor", key)


def is_trait(key: str) -> bool:
    parts = key.split(".")
    return len(parts) > 1 and parts[0] in GROUPS and parts[1] == TRAITS_KEY


def seed_kinds() -> tuple[str, ...]:
    """The seed kinds split off ``seed`` (init_seed, order_seed): null means ``seed``."""
    return tuple(k for k, f in walk() if f.metadata.get("null_is_seed"))


def unhashed_while_null() -> tuple[str, ...]:
    """The knobs left out of the config hash while null (``knob(null_keeps_hash=True)``)."""
    return tuple(k for k, f in walk() if f.metadata.get("null_keeps_hash"))


def epochs_of(cfg, steps_per_epoch: int) -> int:
    """The epochs a run trains: ``epochs``, or with a ``steps`` budget the whole epochs nearest to it (at least 1)."""
    steps = cfg.get("steps")
    return int(cfg.epochs) if steps is None else max(1, round(int(steps) / steps_per_epoch))


def seed_of(cfg, kind: str) -> int:
    """A run's init_seed or order_seed: its own value, or ``seed`` where it is null (and for old configs)."""
    value = cfg.get(kind)
    return int(cfg.seed if value is None else value)


def member_keys() -> tuple[str, ...]:
    """Top-level keys that may differ between the members of one stacked bundle."""
    return tuple(k for k, f in walk() if "." not in k and f.metadata["role"].stacking == "member")


def free_keys() -> tuple[str, ...]:
    """Top-level keys a bundle does not look at."""
    return tuple(k for k, f in walk() if "." not in k and f.metadata["role"].stacking == "free")


def not_knobs() -> tuple[str, ...]:
    """Last parts of component keys that are not knobs of the component (its class, targets, data paths, traits)."""
    return CLASS_KEYS + tuple(k.split(".", 1)[1] for k, r in COMPONENT_KEYS.items() if not r.param) + (TRAITS_KEY,)


def rules() -> Iterator[tuple[str, Rule, str]]:
    """(dotted key, rule, why) of every knob with a rule, in the schema's order."""
    for key, f in walk():
        if f.metadata.get("rule") is not None:
            yield key, f.metadata["rule"], f.metadata.get("why", "")


def default(cls: type, name: str):
    f = next(f for f in fields(cls) if f.name == name)
    return f.default_factory() if f.default is MISSING else f.default  # type: ignore[misc,operator]


def register() -> None:
    """Put ``Config`` in Hydra's ConfigStore as ``harness_schema`` (conf/config.yaml's first default)."""
    from hydra.core.config_store import ConfigStore

    ConfigStore.instance().store(name="harness_schema", node=Config, provider="harness")
