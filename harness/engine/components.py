"""A job's components from their config nodes: the loss (with class weights), the optimizer recipe (its LR
scaled with the batch size), the schedule, and one trial step of both, each failure one ``HarnessError`` line.

Objects come from ``hydra.utils.instantiate`` with the component's declared traits taken off
(``harness.config.traits``) after ``harness.config.checks`` has looked at every knob.
"""

from __future__ import annotations

import copy

import torch
from hydra.utils import instantiate
from omegaconf import DictConfig, OmegaConf

from harness import HarnessError, schedules
from harness.config import traits
from harness.config.schema import epochs_of
from harness.config.values import plain
from harness.tasks import Data, Task

LR_SCALINGS = {"none": lambda r: 1.0, "linear": lambda r: r, "sqrt": lambda r: r**0.5}


def build_object(spec, what: str):
    """hydra.utils.instantiate, with any failure turned into one HarnessError line."""
    from hydra.errors import InstantiationException

    try:
        return instantiate(traits.without(spec))
    except InstantiationException as e:
        if isinstance(e.__cause__, HarnessError):
            raise e.__cause__ from None
        cause = e.__cause__ or e
        raise HarnessError(f"cannot build the {what} {spec.get('_target_')}: {str(cause).splitlines()[0]}") from None
    except HarnessError:
        raise
    except Exception as e:
        raise HarnessError(f"cannot build the {what} {spec.get('_target_')}: {str(e).splitlines()[0]}") from None


def class_weights(spec, y: torch.Tensor, num_classes: int, what: str):
    """None, 'balanced' (n / (C * n_c), as scikit-learn), a number (binary focal alpha) or C weights."""
    if spec is None or isinstance(spec, (int, float)):
        return spec
    if spec == "balanced":
        counts = torch.bincount(y, minlength=num_classes).float()
        return len(y) / (num_classes * counts.clamp_min(1.0))
    if isinstance(spec, str):
        raise HarnessError(f"{what} must be null, 'balanced' or a list of {num_classes} numbers, got {spec!r}")
    weights = torch.tensor([float(w) for w in spec])
    if weights.shape != (num_classes,):
        raise HarnessError(f"{what} needs {num_classes} class weights, got {len(weights)}")
    if (weights < 0).any():
        raise HarnessError(f"{what} must be weights >= 0, got {list(spec)}")
    return weights


def build_loss(cfg: DictConfig, task: Task, data: Data, device: torch.device) -> torch.nn.Module:
    spec = plain(cfg.loss)
    if spec.pop("targets") == "embedding":
        dim = getattr(task, "dim", None)  # the embedding's width: the model's output is [embedding | head logits]
        if not isinstance(dim, int) or isinstance(dim, bool) or dim < 1:
            raise HarnessError(
                f"task {task.name} feeds embedding targets but has no width 'dim' (got {dim!r}); "
                "an embedding task sets dim to its embedding's size"
            )
        spec["dim"] = dim
    for key in ("weight", "alpha"):  # class weights: CrossEntropyLoss.weight, FocalLoss.alpha
        if key in spec:
            spec[key] = class_weights(spec[key], data.train.y, task.num_classes, f"loss.{key}")
    return build_object(spec, "loss").to(device)


def optimizer_factory(cfg: DictConfig, batch_size: int):
    """The optimizer partial, its LR scaled with the batch size when lr_scaling asks for it."""
    spec = cfg.optimizer
    if cfg.lr_scaling != "none" and "lr" in spec:  # e.g. the linear scaling rule: lr x batch / reference batch
        spec = OmegaConf.merge(spec, {"lr": spec.lr * LR_SCALINGS[cfg.lr_scaling](batch_size / cfg.lr_reference_batch)})
    return build_object(spec, "optimizer")


def build_optimizer(cfg: DictConfig, params, batch_size: int, factory=None) -> torch.optim.Optimizer:
    factory = factory or optimizer_factory(cfg, batch_size)
    try:
        return factory(params)
    except Exception as e:
        raise HarnessError(f"cannot build the optimizer {cfg.optimizer.get('_target_')}: {str(e).splitlines()[0]}") from None


def build_schedule(cfg: DictConfig, optimizer, epochs: int, steps_per_epoch: int):
    factory = build_object(cfg.schedule, "schedule")
    try:
        return schedules.build(factory, optimizer, epochs * steps_per_epoch, steps_per_epoch)
    except Exception as e:
        raise HarnessError(f"cannot build the schedule {cfg.schedule.get('_target_')}: {str(e).splitlines()[0]}") from None


def try_step(cfg: DictConfig, task: Task, model: torch.nn.Module, batch_size: int, steps_per_epoch: int, factory=None) -> None:
    """One optimizer and schedule step on a copy of the model with small made-up gradients, so that a
    setting torch refuses only once it steps (``optimizer.lr=1e308`` overflows float32) is one line
    before any run opens, not a crash mid-run (or a whole stacked bundle's)."""
    from harness.optimizers import needs_closure, set_mode

    if task.own_step and needs_closure(getattr(factory, "func", factory) or torch.optim.Optimizer):
        raise HarnessError(
            f"optimizer {cfg.optimizer.get('_target_')} needs a closure (it re-evaluates the loss), which "
            f"the task's own step ({type(task).__name__}: two players) does not give; choose another optimizer"
        )
    trial = copy.deepcopy(model)
    optimizer = build_optimizer(cfg, task.param_groups(trial), batch_size, factory)
    scheduler = build_schedule(cfg, optimizer, epochs_of(cfg, steps_per_epoch), steps_per_epoch)
    params = [p for p in trial.parameters() if p.requires_grad]

    def gradients() -> torch.Tensor:
        for p in params:
            p.grad = torch.full_like(p, 1e-3)
        return torch.zeros((), device=params[0].device if params else "cpu")

    try:
        set_mode(optimizer, "train")
        if needs_closure(optimizer):
            optimizer.step(gradients)
        else:
            gradients()
            optimizer.step()
        scheduler.step()
    except HarnessError:
        raise
    except Exception as e:
        knobs = ", ".join(f"{k}={v}" for k, v in plain(cfg.optimizer).items() if not k.startswith("_"))
        raise HarnessError(
            f"the optimizer {cfg.optimizer.get('_target_')} fails on its first step ({knobs}): "
            f"{type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''}"
        ) from None
