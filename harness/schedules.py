"""LR schedules, all stepped once per optimizer step.

Each factory takes the optimizer plus the run's length (``total_steps``, ``steps_per_epoch``) and
returns a torch scheduler, so a schedule's knobs are in epochs or fractions of the run, never in
optimizer steps that depend on the batch size. ``build`` also accepts any torch scheduler class
through ``_target_`` (e.g. ``torch.optim.lr_scheduler.StepLR`` with ``step_size`` in steps): it
passes only the run-length arguments that the callable accepts.
"""

from __future__ import annotations

import inspect
import math

from torch.optim import Optimizer
from torch.optim import lr_scheduler as S


def constant(optimizer: Optimizer, **_) -> S.LRScheduler:
    return S.LambdaLR(optimizer, lambda step: 1.0)


def step(optimizer: Optimizer, steps_per_epoch: int, step_epochs: float = 3, gamma: float = 0.1, **_) -> S.LRScheduler:
    return S.StepLR(optimizer, step_size=max(1, round(step_epochs * steps_per_epoch)), gamma=gamma)


def exponential(optimizer: Optimizer, steps_per_epoch: int, gamma: float = 0.8, **_) -> S.LRScheduler:
    """gamma per epoch, applied as gamma ** (1 / steps_per_epoch) per step."""
    return S.ExponentialLR(optimizer, gamma=gamma ** (1.0 / steps_per_epoch))


def cosine(optimizer: Optimizer, total_steps: int, min_lr: float = 0.0, **_) -> S.LRScheduler:
    return S.CosineAnnealingLR(optimizer, T_max=max(1, total_steps), eta_min=min_lr)


def warmup_cosine(
    optimizer: Optimizer, total_steps: int, warmup_fraction: float = 0.1, start_factor: float = 0.01, min_lr: float = 0.0, **_
) -> S.LRScheduler:
    warmup = max(1, math.ceil(warmup_fraction * total_steps))
    if warmup >= total_steps:
        return S.LinearLR(optimizer, start_factor=start_factor, total_iters=max(1, total_steps))
    return S.SequentialLR(
        optimizer,
        milestones=[warmup],
        schedulers=[
            S.LinearLR(optimizer, start_factor=start_factor, end_factor=1.0, total_iters=warmup),
            S.CosineAnnealingLR(optimizer, T_max=total_steps - warmup, eta_min=min_lr),
        ],
    )


def warmup_constant(optimizer: Optimizer, steps_per_epoch: int, warmup_epochs: int = 2, **_) -> S.LRScheduler:
    """The tutorials' warmup: lr (epoch + 1) / warmup_epochs during the first warmup_epochs epochs, then lr."""
    w = max(1, int(warmup_epochs))
    return S.LambdaLR(optimizer, lambda s: min(1.0, (s // steps_per_epoch + 1) / w))


def onecycle(
    optimizer: Optimizer, total_steps: int, max_lr_factor: float = 1.0, pct_start: float = 0.3, div_factor: float = 25.0, **_
) -> S.LRScheduler:
    max_lr = [g["lr"] * max_lr_factor for g in optimizer.param_groups]
    # cycle_momentum=False: cycling would silently turn plain SGD into momentum SGD.
    return S.OneCycleLR(
        optimizer,
        max_lr=max_lr,
        total_steps=max(2, total_steps),
        pct_start=pct_start,
        div_factor=div_factor,
        cycle_momentum=False,
    )


def build(factory, optimizer: Optimizer, total_steps: int, steps_per_epoch: int) -> S.LRScheduler:
    """Call a schedule partial with the run-length arguments it accepts."""
    run_length = {"total_steps": total_steps, "steps_per_epoch": steps_per_epoch}
    params = inspect.signature(factory).parameters
    takes_any = any(p.kind is p.VAR_KEYWORD for p in params.values())
    kwargs = {k: v for k, v in run_length.items() if takes_any or k in params}
    return factory(optimizer, **kwargs)


FACTORIES = (
    constant,
    step,
    exponential,
    cosine,
    warmup_cosine,
    warmup_constant,
    onecycle,
)  # what schedule._target_ may name besides torch's classes
