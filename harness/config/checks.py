"""Every knob checked before anything is built or any MLflow run opened.

``check_config`` refuses, with one line naming the key and what is allowed:
- run knobs (epochs, batch size, seed, device, threads, ...) outside their range;
- a loss, optimizer or schedule knob outside its range (by name, whatever class the knob goes to:
  ``optimizer.lr`` must be a positive finite number for ``torch.optim.Adam`` and for a user's class);
- a number that is NaN or infinite anywhere in the config, or a loss, optimizer or schedule number
  beyond float32's range;
- a knob whose shipped default is a number or a bool and that is no longer one;
- a ``_target_`` that is not the kind of object its group needs (an optimizer class for
  ``optimizer``, a ``torch.nn.Module`` for ``loss``, a harness ``Task`` for ``task``, a harness
  schedule or a torch LR scheduler class for ``schedule``), checked *before* it is called, and a
  ``_target_`` nested inside a group, which ``instantiate`` would call too.
Task knobs (data sizes, model widths, ...) are checked by the task's constructor, which only
stores and checks them: data is loaded later.
"""

from __future__ import annotations

import functools
from typing import cast

from omegaconf import DictConfig, OmegaConf

from harness import HarnessError
from harness.config import schema, traits, values
from harness.config.rules import RULES, check_finite, check_float32
from harness.losses import TARGET_KINDS

CONF_DIR = schema.CONF_DIR
check_seed = values.check_seed
GROUPS = schema.GROUPS

TOP_LEVEL = schema.top_level()
TRACKING_KEYS = schema.section_keys("tracking")


_number, _show, check_rule = values.number, values.show, values.check_rule  # value rules: harness/config/values.py, rules.py

# ---------------------------------------------------------------- the checks


def check_run_knobs(cfg: DictConfig) -> None:
    unknown = sorted(set(cfg) - TOP_LEVEL - {"hydra"})
    if unknown:
        raise HarnessError(f"unknown key {unknown[0]!r}; the config's keys are {', '.join(sorted(TOP_LEVEL))}")
    rules = list(schema.rules())
    for key, rule, why in rules:
        if "." not in key:
            check_rule(key, cfg[key], rule, why)
    check_study(cfg)
    unknown = sorted(set(cfg.tracking) - TRACKING_KEYS)
    if unknown:
        raise HarnessError(f"unknown key tracking.{unknown[0]}; tracking's keys are {', '.join(sorted(TRACKING_KEYS))}")
    for key, rule, why in rules:
        if key.startswith("tracking."):
            check_rule(key, OmegaConf.select(cfg, key), rule, why)


def check_study(cfg: DictConfig) -> None:
    """study.compare and study.tune: lists of config groups or keys under the config's sections."""
    study = cfg.get("study")
    if study is None:
        return
    keys = schema.section_keys("study")
    unknown = sorted(set(study) - keys)
    if unknown:
        raise HarnessError(f"unknown key study.{unknown[0]}; study's keys are {', '.join(sorted(keys))}")
    for key, rule, why in schema.rules():
        if key.startswith("study."):
            check_rule(key, study.get(key[len("study.") :]), rule, why)
    sections = sorted(k for k in TOP_LEVEL if schema.is_factor(k))  # what a report can compare runs by
    for part in ("compare", "tune"):
        names = study[part]
        if names is None:
            continue
        if isinstance(names, str) or not all(isinstance(n, str) and n for n in names):
            raise HarnessError(
                f"study.{part} must be a list of config groups or keys, e.g. [optimizer] or [optimizer.lr], got {_show(names)}"
            )
        for name in names:
            if name.split(".")[0] not in sections:
                raise HarnessError(
                    f"study.{part} names {name!r}, which is not a config group or key; "
                    f"allowed: {', '.join(sections)} and their keys (optimizer.lr, task.model, ...)"
                )
    both = set(study.compare or []) & set(study.tune or [])
    if both:
        raise HarnessError(
            f"study names {sorted(both)[0]!r} both in compare and in tune; a knob is either the method or tuned per method"
        )


def check_group_knobs(cfg: DictConfig) -> None:
    for group, rules in RULES.items():
        node = cfg.get(group)
        if node is None:
            continue
        check_float32(OmegaConf.to_container(node, resolve=True), group)
        for key, rule in rules.items():
            if key in node and node[key] is not None:
                check_rule(f"{group}.{key}", node[key], rule)
    if cfg.loss.get("targets") not in TARGET_KINDS:
        raise HarnessError(f"loss.targets must be one of {', '.join(TARGET_KINDS)}, got {_show(cfg.loss.get('targets'))}")


@functools.cache
def shipped_defaults(group: str, name: str) -> dict:
    """conf/GROUP/NAME.yaml as written (unresolved: ${data_dir} stays text); {} for a choice not shipped."""
    path = CONF_DIR / group / f"{name}.yaml"
    return cast(dict, OmegaConf.to_container(OmegaConf.load(path))) if path.exists() else {}


def check_types(cfg: DictConfig, names: dict[str, str]) -> None:
    """A knob whose shipped default (conf/GROUP/NAME.yaml) is a number or a bool must still be one."""
    for group in GROUPS:
        if cfg.get(group) is None:
            continue
        for key, default in shipped_defaults(group, str(names.get(group))).items():
            if key.startswith("_") or key == "defaults" or key not in cfg[group]:
                continue
            value = cfg[group][key]
            if isinstance(default, bool):
                ok, kind = isinstance(value, bool), "true or false"
            elif isinstance(default, (int, float)):
                ok, kind = _number(value), "a number"
            else:
                continue
            if not ok:
                raise HarnessError(f"{group}.{key} must be {kind}, got {_show(value)}")


# ---------------------------------------------------------------- what a _target_ may name


def locate(path: str, key: str):
    from hydra._internal.utils import _locate

    if not isinstance(path, str) or not path:
        raise HarnessError(f"{key} must name a class, e.g. torch.optim.Adam, got {path!r}")
    try:
        return _locate(path)
    except Exception as e:
        raise HarnessError(f"{key}={path} cannot be imported: {str(e).splitlines()[0]}") from None


def is_schedule(obj) -> bool:
    from torch.optim import lr_scheduler

    from harness import schedules

    if isinstance(obj, type):
        return issubclass(obj, lr_scheduler.LRScheduler)
    return obj in schedules.FACTORIES


def target_kinds():
    import torch

    from harness.tasks import Task

    return {
        "task": (lambda o: isinstance(o, type) and issubclass(o, Task), "a harness Task class (harness.tasks.Task)"),
        "loss": (lambda o: isinstance(o, type) and issubclass(o, torch.nn.Module), "a loss class (a torch.nn.Module)"),
        "optimizer": (
            lambda o: isinstance(o, type) and issubclass(o, torch.optim.Optimizer),
            "an optimizer class (a torch.optim.Optimizer)",
        ),
        "schedule": (is_schedule, "a schedule from harness.schedules or a torch LR scheduler class"),
    }


def _nested_target(tree, path: str, root: bool = True) -> str | None:
    """The path of a ``_target_`` (or ``_args_``) below the group's root, which instantiate would call."""
    if isinstance(tree, dict):
        for k, v in tree.items():
            if (not root and k == "_target_") or k == "_args_":
                return f"{path}.{k}"
            found = _nested_target(v, f"{path}.{k}", root=False)
            if found:
                return found
    elif isinstance(tree, list):
        for i, v in enumerate(tree):
            found = _nested_target(v, f"{path}[{i}]", root=False)
            if found:
                return found
    return None


def check_targets(cfg: DictConfig) -> None:
    """Look at what each ``_target_`` names before anything calls it (a study file from someone
    else must not run code through the harness: ``loss._target_=os.makedirs`` is refused here)."""
    for group, (ok, kind) in target_kinds().items():
        node = cfg.get(group)
        if node is None:
            continue
        nested = _nested_target(OmegaConf.to_container(node), group)
        if nested:
            raise HarnessError(f"{nested} may not be set: only {group}._target_ is built, and nothing inside it")
        target = node.get("_target_")
        if target is None:
            raise HarnessError(f"{group}._target_ is missing: choose {group}=NAME (see python -m harness --help)")
        if not ok(locate(target, f"{group}._target_")):
            raise HarnessError(f"{group}._target_={target} is not {kind}")


def check_config(cfg: DictConfig, names: dict[str, str]) -> None:
    """Everything above, cheapest first. Raises HarnessError with one line."""
    if cfg.get("loss") is None or "_target_" not in cfg.loss:
        raise HarnessError("no loss chosen: pass loss=NAME (see python -m harness --help)")
    check_run_knobs(cfg)
    traits.check(cfg)
    check_finite(OmegaConf.to_container(cfg, resolve=True))
    check_types(cfg, names)
    check_group_knobs(cfg)
    check_targets(cfg)
