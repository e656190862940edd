"""A component's traits: what the stacked engine must know about it, declared in its YAML beside its ``_target_``.

A component config may hold a ``traits:`` node (``conf/optimizer/adam.yaml``: ``stacking: shared``). The
traits are no knob: they are taken off before ``instantiate``, and kept out of the config hash, the
params and the report (``harness.config.schema``). What each group's traits may say:

- optimizer ``stacking``: ``shared`` - the update treats each element on its own (SGD, Adam, RMSprop,
  Lion, ...), so the members of a bundle with equal optimizer configs share one optimizer over their
  slices, which is the same arithmetic as one optimizer each; ``per_member`` - it stacks, with one
  optimizer per member (its statistics span a member's tensors: Prodigy); ``solo`` - it runs alone,
  ``why`` says why (Muon and SOAP follow each tensor's shape, which a bundle changes).
- loss ``per_sample_mean``: true when the loss's 'mean' is the mean of its per-sample values (a
  weighted cross-entropy's: their weighted mean), so that the members of a bundle sharing a loss config
  get their losses in one call; otherwise each member's loss is its own call. (A loss's ``targets``, the
  target kind it takes, is a key of its own: it was there before traits were.)

A component with no traits runs solo (an optimizer) or member by member (a loss): always correct, only
slower. A file's traits are about the file's class: a config whose ``_target_`` was changed from the
file's (``optimizer._target_=torch.optim.Adamax`` on adam.yaml) keeps them only where it declares its
own (``optimizer.traits.stacking=shared``). Closure optimizers and those with a train/eval mode run
alone whatever their traits say: that is read from the class.
"""

import functools
from dataclasses import dataclass, fields
from typing import Any

from omegaconf import DictConfig, OmegaConf

from harness import HarnessError
from harness.config.schema import CONF_DIR, TRAITS_KEY

STACKINGS = ("shared", "per_member", "solo")


@dataclass(frozen=True)
class OptimizerTraits:
    stacking: str = "solo"
    why: str = ""


@dataclass(frozen=True)
class LossTraits:
    per_sample_mean: bool = False


KINDS: dict[str, type] = {"optimizer": OptimizerTraits, "loss": LossTraits}
ALLOWED = {
    ("optimizer", "stacking"): (lambda v: v in STACKINGS, f"one of {', '.join(STACKINGS)}"),
    ("optimizer", "why"): (lambda v: isinstance(v, str), "a sentence"),
    ("loss", "per_sample_mean"): (lambda v: isinstance(v, bool), "true or false"),
}
NO_TRAITS = "declares no traits"


def check(cfg: DictConfig) -> None:
    """A ``traits`` node holds only the keys its group's traits have, each with an allowed value."""
    for group in ("task", "schedule"):
        node = cfg.get(group)
        if isinstance(node, DictConfig) and TRAITS_KEY in node:
            raise HarnessError(f"{group}.{TRAITS_KEY} is not read: only optimizer and loss configs declare traits")
    for group, kind in KINDS.items():
        node = cfg.get(group)
        traits = node.get(TRAITS_KEY) if isinstance(node, DictConfig) else None
        if traits is None:
            continue
        if not isinstance(traits, DictConfig):
            raise HarnessError(f"{group}.{TRAITS_KEY} must be a mapping of traits, got {traits!r}")
        names = sorted(f.name for f in fields(kind))
        for name, value in traits.items():
            key = str(name)
            if (group, key) not in ALLOWED:
                raise HarnessError(f"unknown trait {group}.{TRAITS_KEY}.{key}; {group}'s traits are {', '.join(names)}")
            test, allowed = ALLOWED[(group, key)]
            if not test(value):
                raise HarnessError(f"{group}.{TRAITS_KEY}.{key} must be {allowed}, got {value!r}")


def of(cfg: DictConfig, group: str, choice: str | None, overrides: list[str] | tuple = ()) -> Any:
    """The traits of the group's component as this config declares them (its group's defaults where it
    declares none, or where its class is not the one its file's traits are about and no override
    declares them)."""
    kind = KINDS[group]
    node = cfg.get(group)
    traits = node.get(TRAITS_KEY) if isinstance(node, DictConfig) else None
    if traits is None:
        return kind(why=NO_TRAITS) if kind is OptimizerTraits else kind()
    declared = OmegaConf.to_container(traits, resolve=True)
    shipped_target, shipped_traits = shipped(group, choice)
    own = any(o.lstrip("+~").startswith(f"{group}.{TRAITS_KEY}") for o in overrides)
    if shipped_target is not None and node.get("_target_") != shipped_target and declared == shipped_traits and not own:
        why = f"its class is not {group}={choice}'s ({shipped_target}), whose traits it has: declare its own as {group}.traits"
        return kind(why=why) if kind is OptimizerTraits else kind()
    return kind(**declared)  # type: ignore[arg-type]


@functools.cache
def shipped(group: str, choice: str | None) -> tuple[str | None, dict | None]:
    """The ``_target_`` and traits of conf/GROUP/CHOICE.yaml, through the files it inherits from
    ((None, None) for a choice that is not shipped: a user's config directory holds its own)."""
    path = CONF_DIR / group / f"{choice}.yaml"
    if not choice or not path.exists():
        return None, None
    spec = OmegaConf.to_container(OmegaConf.load(path))
    assert isinstance(spec, dict)
    bases = [d for d in spec.get("defaults", []) if d != "_self_"]
    target, traits = shipped(group, bases[0]) if bases else (None, None)
    return spec.get("_target_", target), spec.get(TRAITS_KEY, traits)


def without(spec: Any) -> Any:
    """A component's config without its traits, for ``instantiate``."""
    if isinstance(spec, DictConfig) and TRAITS_KEY in spec:
        tree = OmegaConf.to_container(spec, resolve=True)
        assert isinstance(tree, dict)
        spec = OmegaConf.create({k: v for k, v in tree.items() if k != TRAITS_KEY})
    elif isinstance(spec, dict) and TRAITS_KEY in spec:
        spec = {k: v for k, v in spec.items() if k != TRAITS_KEY}
    return spec
