"""Value rules: a knob's rule is ``(test, what is allowed)``, and ``check_rule`` turns a failed test into one line.

The schema (``harness.config.schema``) gives every knob its rule from here; the component knobs' ranges are
in ``harness.config.rules``.
"""

import math
from collections.abc import Callable
from typing import Any, cast

from harness import HarnessError


def number(v) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool)


def finite(v) -> bool:
    return number(v) and math.isfinite(v)


def positive_int(v) -> bool:
    return isinstance(v, int) and not isinstance(v, bool) and v >= 1


Rule = tuple[Callable[[Any], bool], str]
POSITIVE_INT: Rule = (positive_int, "a positive integer")
POSITIVE: Rule = (lambda v: finite(v) and v > 0, "a finite number > 0")
NON_NEGATIVE: Rule = (lambda v: finite(v) and v >= 0, "a finite number >= 0")
FINITE: Rule = (finite, "a finite number")
BOOL: Rule = (lambda v: isinstance(v, bool), "true or false")
SEED_LIMIT = 2**32  # torch's CPU generator (mt19937) keeps 32 bits of a seed: 2**32 + 1 would alias 1
SEED: Rule = (
    lambda v: not isinstance(v, bool) and isinstance(v, int) and 0 <= v < SEED_LIMIT,
    "an integer in [0, 2**32 - 1]",
)
SEED_WHY = "(torch keeps 32 bits of a seed, so larger ones would repeat smaller ones)"
NULL_OR_SEED: Rule = (lambda v: v is None or SEED[0](v), "null or an integer in [0, 2**32 - 1]")
NULL_OR_POSITIVE_INT: Rule = (lambda v: v is None or positive_int(v), "null or a positive integer")
LR_SCALINGS = ("none", "linear", "sqrt")


def show(value) -> str:
    from omegaconf import DictConfig, ListConfig, OmegaConf

    if isinstance(value, (DictConfig, ListConfig)):
        value = OmegaConf.to_container(value)
    return repr(value)


def plain(node) -> dict[str, Any]:
    """A config mapping (a DictConfig) as a plain dict, interpolations resolved."""
    from omegaconf import OmegaConf

    tree = OmegaConf.to_container(node, resolve=True)
    if not isinstance(tree, dict):
        raise TypeError(f"expected a config mapping, got {type(tree).__name__}")
    return cast(dict[str, Any], tree)  # its keys are str in every config the harness composes


def check_rule(key: str, value, rule: Rule, why: str = "") -> None:
    test, allowed = rule
    if not test(value):
        raise HarnessError(f"{key} must be {allowed}, got {show(value)}" + (f" {why}" if why else ""))


def margin_ok(v) -> bool:
    """A study's margin: null, a number > 0, 'N%' with N > 0, or a mapping of metric names to those."""
    from omegaconf import DictConfig

    if v is None:
        return True
    if isinstance(v, (dict, DictConfig)):
        return len(v) > 0 and all(isinstance(k, str) and v[k] is not None and margin_ok(v[k]) for k in v)
    if isinstance(v, str) and v.endswith("%"):
        try:
            return 0 < float(v[:-1]) < 100
        except ValueError:
            return False
    return finite(v) and v > 0


def same_value(a, b) -> bool:
    """Two values of a knob as logged or given (text): both missing, equal as text, or equal as numbers (0 is 0.0)."""
    if a is None or b is None:
        return a is None and b is None
    if str(a) == str(b):
        return True
    try:
        return float(a) == float(b)
    except (TypeError, ValueError):
        return False


def has_setting(params: dict, setting: dict) -> bool:
    """Whether a run's params (as logged: key -> text) hold every knob of a setting at its value (None: not set)."""
    return all(same_value(params.get(k), v) for k, v in setting.items())


def check_seed(key: str, value) -> int:
    check_rule(key, value, SEED, SEED_WHY)
    return value
