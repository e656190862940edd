"""A task of your own: two interleaved spirals, a classification problem an MLP must bend around.

The harness needs four things from a task (see docs/own-task.md):
- ``load()`` -> ``Data(train, val, test)``: tensors, each split an ``Split(x, y)``; class indices
  ``y`` as a long tensor [N] for classification, float [N, 1] for regression;
- ``model()`` -> an ``nn.Module`` that maps a batch of ``x`` to outputs (logits here);
- ``metrics(output, y)`` -> a dict of scalar tensors (the base classes give the usual ones);
- class attributes: ``name``, ``targets`` (what it can feed a loss: "index"/"onehot" for classes,
  "real" for regression), ``primary_metric`` and ``mode`` ("max" or "min"), ``num_classes``.
Its constructor takes the keys of its YAML (conf/task/spirals.yaml); check them and raise
``HarnessError`` with one clear line for bad values. ``smoke=on`` (a study in seconds) sets
``task.n_train=400``: take an ``n_train`` cap if your studies should run with it.
"""

import math

import torch
from torch import nn

from harness import HarnessError
from harness.tasks import ClassificationTask, Data, Split, split_indices
from harness.tasks.models import mlp


class Spirals(ClassificationTask):
    name = "spirals"
    primary_metric = "test/accuracy"
    mode = "max"
    num_classes = 2

    def __init__(
        self,
        n_per_class: int = 500,
        turns: float = 1.0,
        noise: float = 0.1,
        hidden=(64, 64),
        data_seed: int = 0,
        n_train: int | None = None,
    ):
        if not isinstance(n_per_class, int) or n_per_class < 10:
            raise HarnessError(f"task.n_per_class must be an integer >= 10, got {n_per_class!r}")
        if not 0 <= noise < 1:
            raise HarnessError(f"task.noise must be in [0, 1), got {noise!r}")
        if n_train is not None and (not isinstance(n_train, int) or n_train < 1):
            raise HarnessError(f"task.n_train must be a positive integer or null, got {n_train!r}")
        self.n, self.turns, self.noise, self.hidden, self.data_seed = n_per_class, turns, noise, list(hidden), data_seed
        self.n_train = n_train

    def load(self) -> Data:
        g = torch.Generator().manual_seed(self.data_seed)
        t = torch.rand(self.n, generator=g) * self.turns * 2 * math.pi
        arm = torch.stack([t * torch.cos(t), t * torch.sin(t)], 1) / (self.turns * 2 * math.pi)
        x = torch.cat([arm, -arm]) + self.noise * torch.randn(2 * self.n, 2, generator=g)
        y = torch.cat([torch.zeros(self.n), torch.ones(self.n)]).long()
        n = len(y)
        tr, va, te = split_indices(n, [n - 2 * (n // 5), n // 5, n // 5], self.data_seed)
        tr = tr[: self.n_train]  # None: all of it
        return Data(Split(x[tr], y[tr]), Split(x[va], y[va]), Split(x[te], y[te]))

    def model(self) -> nn.Module:
        return mlp(2, self.num_classes, self.hidden, "relu")
