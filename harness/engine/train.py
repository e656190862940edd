"""The training loop. It knows nothing about MLflow: each epoch's metrics go to ``on_epoch``.

Data is already on the device as tensors; a batch is a slice of a shuffled index tensor. Metrics
stay on the device during an epoch and are read to the host once, at its end. ``epoch_seconds``
covers the training steps and the evaluation of the validation and test splits;
``samples_per_second`` the training steps alone.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from dataclasses import dataclass, field

import torch
from torch import Tensor, nn

from harness.optimizers import set_mode
from harness.tasks import Data, Split, Task

DIVERGENCE_CHECK_STEPS = 200  # how often (in steps) a NaN/inf training loss is looked for mid-epoch


@dataclass
class Result:
    outcome: str  # "finished" or "diverged"
    epochs: int  # epochs completed (a diverged epoch counts)
    diverged_epoch: int | None = None
    final: dict[str, float] = field(default_factory=dict)
    history: list[dict[str, float]] = field(default_factory=list)  # each epoch's metrics


def as_targets(y: Tensor, kind: str, num_classes: int) -> Tensor:
    """What a loss of this target kind compares the outputs with: one-hot rows for ``onehot``, the
    labels themselves for every other kind (index, real, embedding, ...). Both loops use it."""
    return nn.functional.one_hot(y, num_classes).float() if kind == "onehot" else y


@torch.no_grad()
def outputs_of(model: nn.Module, split: Split, batch_size: int) -> Tensor:
    model.eval()
    return torch.cat([model(split.x[i : i + batch_size]) for i in range(0, len(split), batch_size)])


def evaluate(
    model: nn.Module, task: Task, split: Split, loss_fn: nn.Module, targets: str, batch_size: int, **extra
) -> dict[str, Tensor]:
    """The split's loss (its targets of kind ``targets``) and the task's metrics (``extra``: what the
    task ``needs`` besides, see ``metric_extras``)."""
    out = outputs_of(model, split, batch_size)
    with torch.no_grad():
        return {"loss": loss_fn(out, as_targets(split.y, targets, task.num_classes)), **task.metrics(out, split.y, **extra)}


def metric_extras(
    task: Task, loss_fn: nn.Module, model: nn.Module | None = None, data: Data | None = None, batch_size: int | None = None
) -> dict:
    """What ``task.metrics`` takes beyond (output, y), as ``task.needs`` lists it: the loss's decoder;
    with a model, its data and the evaluation chunk, the training set's outputs and labels as the gallery of an evaluation."""
    extra: dict[str, object] = {}
    if "decode" in task.needs:
        extra["decode"] = loss_fn.decode
    if "gallery" in task.needs and model is not None:
        assert data is not None and batch_size is not None, "a gallery is the training set's outputs, in evaluation chunks"
        extra["gallery"] = (outputs_of(model, data.train, batch_size), data.train.y)
    return extra


def train(
    model: nn.Module,
    task: Task,
    data: Data,
    loss_fn: nn.Module,
    targets: str,
    optimizer: torch.optim.Optimizer,
    scheduler,
    *,
    epochs: int,
    batch_size: int,
    generator: torch.Generator,
    on_epoch: Callable[[int, dict[str, float], list[float]], None],
    eval_batch_size: int,
) -> Result:
    """Train for ``epochs`` epochs; ``on_epoch(epoch, metrics, lrs)`` gets the epoch's metrics and
    the LR used at every optimizer step of it. Stops early, as diverged, on a NaN/inf loss."""
    x, y = data.train.x, as_targets(data.train.y, targets, task.num_classes)
    n = len(y)
    step, history = 0, []
    for epoch in range(1, epochs + 1):
        t0 = time.perf_counter()
        model.train()
        set_mode(optimizer, "train")  # schedule-free optimizers train on one sequence of weights...
        order = torch.randperm(n, generator=generator).to(x.device)
        total, lrs, outputs, diverged = torch.zeros((), device=x.device), [], [], False
        for start in range(0, n, batch_size):
            idx = order[start : start + batch_size]
            lrs.append(optimizer.param_groups[0]["lr"])
            loss, out = task.step(model, loss_fn, x[idx], y[idx], optimizer)
            scheduler.step()
            total += loss.detach() * len(idx)
            outputs.append(out.detach())
            step += 1
            if step % DIVERGENCE_CHECK_STEPS == 0 and not torch.isfinite(total):
                diverged = True
                break
        if x.is_cuda:
            torch.cuda.synchronize()  # once an epoch, so that the time covers the queued GPU work
        train_seconds = time.perf_counter() - t0
        seen = min(n, start + batch_size)
        metrics: dict[str, Tensor] = {"train/loss": total / seen}
        set_mode(optimizer, "eval")  # ...and are evaluated (and left) on their average
        if not diverged:
            # train/* metrics come from the outputs of the epoch's own steps (running, as Keras reports
            # them): no second pass over the training set.
            running = task.metrics(torch.cat(outputs), data.train.y[order[:seen]], **metric_extras(task, loss_fn))
            metrics.update({f"train/{k}": v for k, v in running.items()})
            extra = metric_extras(task, loss_fn, model, data, eval_batch_size)
            for name, split in (("val", data.val), ("test", data.test)):
                for key, value in evaluate(model, task, split, loss_fn, targets, eval_batch_size, **extra).items():
                    metrics[f"{name}/{key}"] = value
        values = dict(zip(metrics, torch.stack([v.float() for v in metrics.values()]).tolist()))  # one host sync
        values.update({"lr": lrs[-1], "epoch_seconds": time.perf_counter() - t0, "samples_per_second": seen / train_seconds})
        history.append(values)
        on_epoch(epoch, values, lrs)
        if diverged or not all(math.isfinite(v) for k, v in values.items() if k.endswith("loss")):
            return Result("diverged", epoch, epoch, values, history)
    return Result("finished", epochs, None, values, history)
