"""The stacked training loop: many runs of one model architecture on one data set, trained together.

It reads as ``train.py`` does, with one more axis. ``StackedModel`` holds the M members'
parameters as stacked tensors ``[M, ...]`` and evaluates all members in one call
(``torch.func.vmap`` over ``functional_call``): any model the tasks build works, MLP or CNN. Each
member keeps what makes it itself:
- its initial weights (built from its seed before stacking) and its shuffle order (its own generator);
- its loss (each member's loss is computed on its own slice of the output);
- its optimizer and schedule: torch's own classes, on views of the stacked tensors. Members whose
  optimizer and schedule configs are identical share one optimizer over their slice when the
  optimizer's traits say it updates each element on its own (``stacking: shared``: SGD, Adam,
  RMSprop, ...), which is the same arithmetic as one optimizer each; any other gets one optimizer per member;
- its divergence: a member whose loss turns NaN/inf is frozen (its loss leaves the sum, its
  record ends as diverged at that epoch) while the others go on; a member whose loss, optimizer
  step, schedule or metrics raise is frozen as failed, alone (with the members of its optimizer
  group, when the group's shared step raised).
Metrics stay on the device during an epoch and are read to the host once, at its end, for all members.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from dataclasses import dataclass, field

import torch
from torch import Tensor, nn

from harness.engine.stacked_model import StackedModel, batched_loss, members_index, stack, target_tensors
from harness.engine.train import DIVERGENCE_CHECK_STEPS, Result, metric_extras
from harness.tasks import Data, Task


@dataclass
class Member:
    """One run inside a bundle: its model, loss, targets, seed and optimizer recipe, and where its epochs go."""

    model: nn.Module
    loss: nn.Module
    targets: str  # "index", "onehot" or "real"
    seed: int
    on_epoch: Callable[[int, dict[str, float], list[float]], None]
    shared_optimizer: bool  # its optimizer's traits say stacking: shared (see optimizer_groups)
    make_optimizer: Callable  # list of parameters -> optimizer
    make_scheduler: Callable  # optimizer -> scheduler
    opt_key: str  # members with equal keys have equal optimizer and schedule configs
    loss_key: str = ""  # members with equal keys have equal loss configs
    per_sample_mean: bool = False  # its loss's traits say so (see batched_loss)
    data: int = 0  # which of the bundle's data sets it trains on
    done: str | None = None  # None while training; "diverged" or "failed" once frozen
    error: str | None = None
    history: list = field(default_factory=list)


@dataclass
class OptGroup:
    """One torch optimizer and its scheduler over members start..stop-1."""

    start: int
    stop: int
    optimizer: torch.optim.Optimizer
    scheduler: torch.optim.lr_scheduler.LRScheduler
    views: list[Tensor]


def optimizer_groups(model: StackedModel, members: list[Member]) -> list[OptGroup]:
    """Consecutive members with the same optimizer and schedule config share one optimizer when its
    traits say it updates each element on its own (``stacking: shared``); every other member gets its own."""
    groups, i = [], 0
    while i < len(members):
        j = i + 1
        if members[i].shared_optimizer:
            while j < len(members) and members[j].opt_key == members[i].opt_key:
                j += 1
        views = model.views(i, j)
        optimizer = members[i].make_optimizer(views)
        groups.append(OptGroup(i, j, optimizer, members[i].make_scheduler(optimizer), views))
        i = j
    return groups


def train_stacked(
    datasets: list[tuple[Task, Data]],
    members: list[Member],
    *,
    epochs: int,
    batch_size: int,
    eval_batch_size: int,
    on_bundle_epoch: Callable | None = None,
) -> list[Result]:
    """Train every member for ``epochs`` epochs on its data set (``member.data`` indexes
    ``datasets``, whose splits all have the same shapes); each member's ``on_epoch(epoch, metrics,
    lrs)`` gets its own metrics and LRs, as ``train.train`` gives them for its solo run.
    ``on_bundle_epoch(epoch, {member index: metrics}, seconds)`` sees the whole bundle's epoch."""
    return Bundle(datasets, members, batch_size, eval_batch_size, on_bundle_epoch).train(epochs)


class Bundle:
    def __init__(
        self,
        datasets: list[tuple[Task, Data]],
        members: list[Member],
        batch_size: int,
        eval_batch_size: int,
        on_bundle_epoch: Callable | None = None,
    ):
        self.tasks, self.datas = [t for t, _ in datasets], [d for _, d in datasets]
        self.members, self.on_bundle_epoch = members, on_bundle_epoch
        self.batch_size, self.eval_batch_size = batch_size, eval_batch_size
        self.model = StackedModel([m.model for m in members])
        self.groups = optimizer_groups(self.model, members)
        self.group_of = [i for i, g in enumerate(self.groups) for _ in range(g.start, g.stop)]
        self.generators = [torch.Generator().manual_seed(m.seed) for m in members]
        train = self.datas[0].train
        self.n, self.device = len(train), train.x.device
        self.data_of = torch.tensor([m.data for m in members], device=self.device).unsqueeze(1)
        self.x = stack([d.train.x for d in self.datas])  # [D, n, ...]: a member's batch is x[its data, its indices]
        kinds = {m.targets for m in members}
        per_data = [target_tensors(d.train.y, kinds, self.tasks[0].num_classes) for d in self.datas]
        self.ys = {kind: stack([t[kind] for t in per_data]) for kind in kinds}
        self.results: list[Result | None] = [None] * len(members)
        self.step = 0
        self.loss_groups: dict[str, list[int]] = {}
        for k, m in enumerate(members):
            self.loss_groups.setdefault(f"{m.targets}|{m.loss_key or k}", []).append(k)
        self.batched = {
            key: batched_loss(members[ks[0]].loss, members[ks[0]].per_sample_mean) if len(ks) > 1 else None
            for key, ks in self.loss_groups.items()
        }

    def train(self, epochs: int) -> list[Result]:
        for epoch in range(1, epochs + 1):
            self.epoch(epoch)
            if all(r is not None for r in self.results):
                break
        return [
            r if r is not None else Result("finished", epochs, None, m.history[-1], m.history)
            for r, m in zip(self.results, self.members)
        ]

    def epoch(self, epoch: int) -> None:
        members, model, n = self.members, self.model, self.n
        t0 = time.perf_counter()
        in_epoch = [k for k, r in enumerate(self.results) if r is None]
        orders = torch.stack([torch.randperm(n, generator=g) for g in self.generators]).to(self.device)
        totals = torch.zeros(len(members), device=self.device)
        lrs: list[list[float]] = [[] for _ in self.groups]
        outputs, seen, active = [], [n] * len(members), list(in_epoch)
        for start in range(0, n, self.batch_size):
            idx = orders[:, start : start + self.batch_size]
            out = model(self.x[self.data_of, idx])
            active, stacked = self.losses(out, idx, active)
            for k in in_epoch:
                if members[k].done == "failed" and seen[k] == n:
                    seen[k] = max(1, start)
            if not active:
                break
            model.zero_grad()
            stacked.sum().backward()
            for i, g in enumerate(self.groups):
                if any(g.start <= k < g.stop for k in active):
                    for view, p in zip(g.views, model.params.values()):
                        view.grad = p.grad[g.start : g.stop]
                    lrs[i].append(g.optimizer.param_groups[0]["lr"])
                    try:
                        g.optimizer.step()
                        g.scheduler.step()
                    except Exception as e:  # this group's members fail; the bundle's others train on
                        for k in range(g.start, g.stop):
                            if members[k].done is None:
                                members[k].done, members[k].error = "failed", f"{type(e).__name__}: {e}"
                                seen[k] = min(n, start + self.batch_size)
            totals[members_index(active)] += stacked.detach() * idx.shape[1]
            active = [k for k in active if members[k].done is None]
            outputs.append(out.detach())
            self.step += 1
            if not active:
                break
            if self.step % DIVERGENCE_CHECK_STEPS == 0:
                finite = torch.isfinite(totals).tolist()
                for k in [k for k in active if not finite[k]]:
                    members[k].done = "diverged"
                    seen[k] = min(n, start + self.batch_size)
                active = [k for k in active if members[k].done is None]
                if not active:
                    break
        if self.device.type == "cuda":
            torch.cuda.synchronize()  # once an epoch, so that the time covers the queued GPU work
        self.report(epoch, in_epoch, t0, time.perf_counter() - t0, orders, totals, lrs, outputs, seen)

    def losses(self, out: Tensor, idx: Tensor, active: list[int]) -> tuple[list[int], Tensor]:
        """Each active member's loss on its own batch, in one tensor, in the order of the returned
        members. Members with the same loss config are computed in one call where the loss allows it
        (``batched_loss``); a member whose loss raises fails alone."""
        members, live, parts = self.members, [], []
        active_set = set(active)
        for key, group in self.loss_groups.items():
            ks = [k for k in group if k in active_set]
            if not ks:
                continue
            at = members_index(ks)
            y = self.ys[members[ks[0]].targets][self.data_of[at], idx[at]]
            batched = self.batched[key]
            if batched is not None:
                try:
                    parts.append(batched(out[at], y))
                    live += ks
                    continue
                except Exception:  # one by one from now on, so that a failing member fails alone
                    self.batched[key] = None
            for i, k in enumerate(ks):
                try:
                    parts.append(members[k].loss(out[k], y[i]).reshape(1))
                    live.append(k)
                except Exception as e:
                    members[k].done, members[k].error = "failed", f"{type(e).__name__}: {e}"
        return live, (torch.cat(parts) if parts else out.new_zeros(0))

    @torch.no_grad()
    def evaluate(self, ks: list[int], split: str) -> dict[int, dict[str, Tensor]]:
        """Loss and metrics of members ks on a split, each on its own data set's split."""
        out: dict[int, dict[str, Tensor]] = {}
        for d, data in enumerate(self.datas):
            mine = [k for k in ks if self.members[k].data == d]
            if not mine:
                continue
            task, part = self.tasks[d], getattr(data, split)
            chunk = max(1, self.eval_batch_size // len(mine))  # stacked activations of a chunk as large as a solo run's
            at = members_index(mine) if len(mine) < self.model.size else None
            pred = torch.cat(
                [self.model(part.x[i : i + chunk], shared=True, members=at) for i in range(0, len(part), chunk)], dim=1
            )
            ys = target_tensors(part.y, {self.members[k].targets for k in mine}, task.num_classes)
            for j, k in enumerate(mine):
                m = self.members[k]
                try:
                    out[k] = {"loss": m.loss(pred[j], ys[m.targets]), **task.metrics(pred[j], part.y, **self.extras(k))}
                except Exception as e:  # this member fails alone
                    m.done, m.error = "failed", f"{type(e).__name__}: {e}"
        return out

    def extras(self, k: int) -> dict:
        """What member k's task metrics take beyond (output, y), as a solo run's (``metric_extras``):
        its own loss's decoder where the task needs one (a gallery is not given, see ``bundles.prepare``)."""
        m = self.members[k]
        return metric_extras(self.tasks[m.data], m.loss)

    def report(self, epoch, in_epoch, t0, train_seconds, orders, totals, lrs, outputs, seen) -> None:
        """The epoch's metrics for every member that trained in it (one host sync for all); ends the
        members that diverged or failed."""
        members = self.members
        metrics = {k: {"train/loss": totals[k] / seen[k]} for k in in_epoch}
        healthy = [k for k in in_epoch if members[k].done is None]
        if healthy:
            out = torch.cat(outputs, dim=1)
            evals = {split: self.evaluate(healthy, split) for split in ("val", "test")}
            for k in healthy:
                d = members[k].data
                try:
                    running = self.tasks[d].metrics(out[k], self.datas[d].train.y[orders[k]], **self.extras(k))
                except Exception as e:  # this member fails alone
                    members[k].done, members[k].error = "failed", f"{type(e).__name__}: {e}"
                if members[k].done is not None:
                    continue
                metrics[k].update({f"train/{key}": v for key, v in running.items()})
                for split in ("val", "test"):
                    metrics[k].update({f"{split}/{key}": v for key, v in evals[split][k].items()})
        keys = [(k, name) for k in in_epoch for name in metrics[k]]
        flat = torch.stack([metrics[k][name].float() for k, name in keys]).tolist()  # one host sync
        values: dict[int, dict[str, float]] = {k: {} for k in in_epoch}
        for (k, name), v in zip(keys, flat):
            values[k][name] = v
        elapsed = time.perf_counter() - t0
        for k in in_epoch:
            m = members[k]
            steps = -(-seen[k] // self.batch_size)  # the steps this member took (fewer if it stopped mid-epoch)
            member_lrs = lrs[self.group_of[k]][:steps]
            v = values[k]
            v.update(
                {
                    "lr": member_lrs[-1] if member_lrs else float("nan"),
                    "epoch_seconds": elapsed,
                    "samples_per_second": seen[k] / train_seconds,
                }
            )
            m.history.append(v)
            m.on_epoch(epoch, v, member_lrs)
            if m.done == "failed":
                self.results[k] = Result("failed", epoch, None, v, m.history)
            elif m.done == "diverged" or not all(math.isfinite(x) for key, x in v.items() if key.endswith("loss")):
                m.done = "diverged"
                self.results[k] = Result("diverged", epoch, epoch, v, m.history)
        if self.on_bundle_epoch:
            self.on_bundle_epoch(epoch, values, elapsed)
