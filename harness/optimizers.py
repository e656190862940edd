"""Optimizers that torch.optim does not offer as one class, and the loop's hook for those with modes.

- ``MuonAdamW`` (``optimizer=muon``): torch.optim.Muon on the 2-D weight matrices, AdamW on every
  other parameter (biases, norms, conv kernels: Muon refuses anything but a matrix), as one
  optimizer that LR schedules drive like any other. Muon's update is scaled to AdamW's RMS
  (``adjust_lr_fn="match_rms_adamw"``), so one ``lr`` serves both halves and an LR grid means the
  same thing for it as for Adam.
- ``needs_closure(optimizer or class)``: whether ``step()`` must be given a closure that re-evaluates
  the loss (``torch.optim.LBFGS``); the training loop then gives one (``Task.step``).
- ``set_mode(optimizer, "train" | "eval")``: schedule-free optimizers keep two sequences of weights
  and must be switched to their averaged weights before evaluation (``optimizer.eval()``) and back
  before training (``optimizer.train()``); the training loop calls this for every optimizer, and
  it does nothing for those without modes.
"""

from __future__ import annotations

import functools
import inspect
from collections import OrderedDict
from collections.abc import Iterable
from typing import Any, cast

import torch
from torch.optim import Optimizer


def _groups(params: Iterable) -> list[dict[str, Any]]:
    params = list(params)
    if params and isinstance(params[0], dict):
        return [dict(g, params=list(g["params"])) for g in params]
    return [{"params": params}]


class MuonAdamW(Optimizer):
    """Muon for 2-D weights, AdamW for the rest; one set of hyperparameters, one ``lr``."""

    def __init__(
        self,
        params,
        lr: float = 1e-3,
        weight_decay: float = 0.01,
        momentum: float = 0.95,
        nesterov: bool = True,
        ns_steps: int = 5,
        betas: tuple[float, float] = (0.9, 0.999),
        eps: float = 1e-8,
    ):
        muon_groups, adamw_groups = [], []
        for g in _groups(params):
            extra = {k: v for k, v in g.items() if k != "params"}
            matrices = [p for p in g["params"] if p.ndim == 2]
            others = [p for p in g["params"] if p.ndim != 2]
            if matrices:
                muon_groups.append({**extra, "params": matrices})
            if others:
                adamw_groups.append({**extra, "params": others})
        if not muon_groups:
            raise ValueError("muon needs at least one 2-D weight matrix among the parameters")
        self.muon = torch.optim.Muon(
            muon_groups,
            lr=lr,
            weight_decay=weight_decay,
            momentum=momentum,
            nesterov=nesterov,
            ns_steps=ns_steps,
            adjust_lr_fn="match_rms_adamw",
        )
        self.adamw = (
            torch.optim.AdamW(
                adamw_groups, lr=lr, betas=cast(tuple[float, float], tuple(betas)), eps=eps, weight_decay=weight_decay
            )
            if adamw_groups
            else None
        )
        # the schedules and the loop see one optimizer: its param_groups are the halves' own dicts, so a
        # scheduler setting a group's lr sets it where the step reads it
        self.defaults = dict(self.muon.defaults)
        self.param_groups = self.muon.param_groups + (self.adamw.param_groups if self.adamw else [])
        self.state = self.muon.state  # read by nothing in the harness; the halves keep their own state
        self._optimizer_step_pre_hooks, self._optimizer_step_post_hooks = OrderedDict(), OrderedDict()
        self._optimizer_state_dict_pre_hooks, self._optimizer_state_dict_post_hooks = OrderedDict(), OrderedDict()
        self._optimizer_load_state_dict_pre_hooks = OrderedDict()
        self._optimizer_load_state_dict_post_hooks = OrderedDict()

    @property
    def halves(self) -> list[Optimizer]:
        return [o for o in (self.muon, self.adamw) if o is not None]

    @torch.no_grad()
    def step(self, closure=None):
        loss = None
        if closure is not None:
            with torch.enable_grad():
                loss = closure()
        for o in self.halves:
            o.step()
        return loss

    def zero_grad(self, set_to_none: bool = True) -> None:
        for o in self.halves:
            o.zero_grad(set_to_none=set_to_none)

    def state_dict(self) -> dict:
        return {"muon": self.muon.state_dict(), "adamw": self.adamw.state_dict() if self.adamw else None}

    def load_state_dict(self, state_dict: dict) -> None:
        self.muon.load_state_dict(state_dict["muon"])
        if self.adamw is not None:
            self.adamw.load_state_dict(state_dict["adamw"])


def set_mode(optimizer: Optimizer, mode: str) -> None:
    """``optimizer.train()`` / ``optimizer.eval()`` for optimizers that have them (schedule-free)."""
    switch = getattr(optimizer, mode, None)
    if callable(switch):
        switch()


def needs_closure(optimizer) -> bool:
    """Whether an optimizer (or its class) must be given a closure by ``step()`` (LBFGS re-evaluates
    the loss several times per step). Asked at every training step: the answer is kept per class."""
    return _needs_closure(optimizer if isinstance(optimizer, type) else type(optimizer))


@functools.cache
def _needs_closure(cls: type[Optimizer]) -> bool:
    closure = inspect.signature(cls.step).parameters.get("closure")
    return closure is not None and closure.default is inspect.Parameter.empty
