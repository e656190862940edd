"""The ranges of the component knobs (a loss's, an optimizer's, a schedule's), by name, whatever class the
knob goes to, and the walk over a config tree that finds a non-finite or float32-overflowing number.

Kept apart from ``checks`` (which also looks at tasks and classes) so that a task may check its own
nested component knobs with them (the GAN's per-player optimizers) without importing the checks.
"""

import math

from omegaconf import ListConfig

from harness import HarnessError
from harness.config.values import BOOL, FINITE, NON_NEGATIVE, POSITIVE, Rule, finite, positive_int

_finite = finite

UNIT_CLOSED = (lambda v: _finite(v) and 0 <= v <= 1, "a number in [0, 1]")
UNIT_OPEN_RIGHT = (lambda v: _finite(v) and 0 <= v < 1, "a number in [0, 1)")
UNIT_OPEN = (lambda v: _finite(v) and 0 < v < 1, "a number in (0, 1)")
UNIT_OPEN_LEFT = (lambda v: _finite(v) and 0 < v <= 1, "a number in (0, 1]")
REDUCTION = (lambda v: v in ("mean", "sum"), "'mean' or 'sum' (training needs one number per batch)")
BETAS = (
    lambda v: isinstance(v, (list, tuple, ListConfig)) and len(v) == 2 and all(_finite(b) and 0 <= b < 1 for b in v),
    "two numbers in [0, 1), e.g. [0.9, 0.999]",
)
POSITIVE_PAIR = (
    lambda v: isinstance(v, (list, tuple, ListConfig)) and len(v) == 2 and all(_finite(b) and b > 0 for b in v),
    "two finite numbers > 0",
)

RULES: dict[str, dict[str, Rule]] = {
    "loss": {
        "reduction": REDUCTION,
        "label_smoothing": UNIT_CLOSED,
        "delta": POSITIVE,
        "beta": NON_NEGATIVE,
        "gamma": NON_NEGATIVE,
        "margin": FINITE,
        "smoothing": UNIT_OPEN_RIGHT,
        "smooth": NON_NEGATIVE,
        "p": (lambda v: v in (1, 2) and not isinstance(v, bool), "1 or 2"),
        "ignore_index": (lambda v: isinstance(v, int) and not isinstance(v, bool), "an integer"),
    },
    "optimizer": {
        "lr": POSITIVE,
        "weight_decay": NON_NEGATIVE,
        "momentum": UNIT_OPEN_RIGHT,
        "dampening": UNIT_CLOSED,
        "nesterov": BOOL,
        "betas": BETAS,
        "eps": POSITIVE,
        "alpha": UNIT_OPEN_RIGHT,
        "centered": BOOL,
        "amsgrad": BOOL,
        "maximize": BOOL,
        "lr_decay": NON_NEGATIVE,
        "initial_accumulator_value": NON_NEGATIVE,
        "momentum_decay": NON_NEGATIVE,
        "rho": UNIT_CLOSED,
        "decoupled_weight_decay": BOOL,
        "etas": POSITIVE_PAIR,
        "step_sizes": POSITIVE_PAIR,
        "lambd": NON_NEGATIVE,
        "t0": NON_NEGATIVE,
        "max_iter": (positive_int, "a positive integer"),
        "history_size": (positive_int, "a positive integer"),
        "tolerance_grad": NON_NEGATIVE,
        "tolerance_change": NON_NEGATIVE,
        "line_search_fn": (lambda v: v is None or v == "strong_wolfe", "null or 'strong_wolfe'"),
        "d_coef": POSITIVE,
        "ns_steps": (positive_int, "a positive integer"),
    },
    "schedule": {
        "warmup_fraction": UNIT_CLOSED,
        "start_factor": UNIT_OPEN_LEFT,
        "min_lr": NON_NEGATIVE,
        "step_epochs": POSITIVE,
        "gamma": POSITIVE,
        "pct_start": UNIT_OPEN,
        "div_factor": POSITIVE,
        "max_lr_factor": POSITIVE,
        "warmup_epochs": (positive_int, "a positive integer"),
    },
}


def leaves(tree, path: str = ""):
    """(dotted path, value) of every leaf of a config tree: ``optimizer.betas[0]``."""
    if isinstance(tree, dict):
        for k, v in tree.items():
            yield from leaves(v, f"{path}.{k}" if path else str(k))
    elif isinstance(tree, list):
        for i, v in enumerate(tree):
            yield from leaves(v, f"{path}[{i}]")
    else:
        yield path, tree


def check_finite(tree, path: str = "") -> None:
    """No NaN or infinity anywhere: a NaN learning rate or noise level is never a real setting."""
    for where, v in leaves(tree, path):
        if isinstance(v, float) and not math.isfinite(v):
            raise HarnessError(f"{where} must be a finite number, got {v!r}")


FLOAT32_MAX = 3.4028234663852886e38  # parameters are float32: a larger knob overflows once torch uses it


def check_float32(tree, path: str) -> None:
    """A loss, optimizer or schedule number must fit float32 (``optimizer.lr=1e308`` ran, then
    overflowed at Adam's 8th step, when its bias correction brought the step size below infinity)."""
    for where, v in leaves(tree, path):
        if _finite(v) and abs(v) > FLOAT32_MAX:
            raise HarnessError(
                f"{where} must be at most 3.4e38 in size (the largest float32: the model trains in float32), got {v!r}"
            )
